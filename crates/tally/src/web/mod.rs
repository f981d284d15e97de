//! `tally web`: the front-end tier. One server-rendered page (guestbook and counter demo) with
//! its assets compiled in, talking to the API tier (`tally serve`) over HTTP only, and proxying
//! `/api/…` and the counter routes there, so one external address serves the whole app.

mod api;
mod page;
mod routes;

use std::future::Future;
use std::net::SocketAddr;

use anyhow::Context;
use clap::Args;
use tokio::net::TcpListener;

use crate::app::admin::{self, AdminState};
use crate::app::health::Health;
use crate::app::lifecycle::{serve_until, Listeners};
use crate::config::{CommonArgs, ListenerLimits, RateLimit, ServingArgs};

pub use self::api::{redact, ApiClient};

#[derive(Args, Debug, Clone)]
pub struct WebArgs {
    /// Address of the page and proxy listener.
    #[arg(long, env = "TALLY_LISTEN", default_value = "0.0.0.0:3000")]
    pub listen: SocketAddr,

    /// Address of the admin listener: /healthz, /readyz (ready when the API answers), /metrics.
    #[arg(long, env = "TALLY_ADMIN_LISTEN", default_value = "0.0.0.0:3001")]
    pub admin_listen: SocketAddr,

    /// Base URL of the API tier (`tally serve`). Falls back to API_HOST / API_PORT.
    /// [default: http://127.0.0.1:8080]
    #[arg(long, env = "TALLY_API_URL")]
    pub api_url: Option<String>,

    #[command(flatten)]
    pub common: CommonArgs,

    #[command(flatten)]
    pub serving: ServingArgs,
}

impl WebArgs {
    /// The API's base URL: the flag or TALLY_API_URL, else the original frontend's
    /// API_HOST / API_PORT, else the API on this machine.
    pub fn resolve_api_url(&self, env: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<String> {
        let url = match (&self.api_url, env("API_HOST").filter(|h| !h.is_empty())) {
            (Some(url), _) => url.clone(),
            (None, Some(host)) => format!(
                "http://{host}:{}",
                env("API_PORT").unwrap_or_else(|| "8080".into())
            ),
            (None, None) => "http://127.0.0.1:8080".into(),
        };
        // Never echo the URL: it may carry credentials.
        let parsed = reqwest::Url::parse(&url).context("TALLY_API_URL is not a URL")?;
        anyhow::ensure!(
            matches!(parsed.scheme(), "http" | "https"),
            "TALLY_API_URL must be http or https"
        );
        Ok(url.trim_end_matches('/').to_owned())
    }
}

/// The bound web tier, ready to run.
pub struct WebServer {
    public: TcpListener,
    admin: TcpListener,
    api: ApiClient,
    args: WebArgs,
    limits: ListenerLimits,
    rate_limit: Option<RateLimit>,
}

impl WebServer {
    pub async fn bind(args: WebArgs, api_url: &str) -> anyhow::Result<Self> {
        let limits = args.common.listener.limits(args.common.request_timeout)?;
        let rate_limit = args.serving.rate_limit.resolve()?;
        let (public, admin) = crate::app::lifecycle::bind(args.listen, args.admin_listen).await?;
        let api = ApiClient::new(api_url, args.common.request_timeout)?;
        Ok(Self {
            public,
            admin,
            api,
            args,
            limits,
            rate_limit,
        })
    }

    pub fn public_addr(&self) -> SocketAddr {
        crate::app::lifecycle::address(&self.public)
    }

    pub fn admin_addr(&self) -> SocketAddr {
        crate::app::lifecycle::address(&self.admin)
    }

    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let health = Health::new("api", "tally_api_up");
        let probe_api = self.api.clone();
        let watcher = health.spawn_watch(self.args.serving.readiness_interval, move || {
            let api = probe_api.clone();
            async move { api.ping().await }
        });
        let admin_state = AdminState {
            health: health.clone(),
            metrics: crate::metrics::handle_for(crate::metrics::Tier::Web),
            dependency: ("api", self.api.display().to_owned()),
        };
        let public_app = routes::public_router(self.api.clone(), self.rate_limit.as_ref());
        let listeners = Listeners {
            public: (self.public, public_app),
            admin: (self.admin, admin::router(admin_state)),
            limits: self.limits,
            // The proxy appends the visitor's address to X-Forwarded-For.
            peer_address: true,
        };
        let drain = self.args.serving.drain;
        let result = serve_until(listeners, health, drain, shutdown).await;
        watcher.abort();
        result
    }
}
