//! `tally serve`: binds both listeners, runs until a shutdown signal, then drains.

use std::future::Future;
use std::net::SocketAddr;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::config::ServeConfig;
use crate::health::Health;
use crate::http::{admin_router, public_router, AppState};
use crate::lifecycle::{serve_until, Drain, Listeners};
use crate::store::{KeySpace, Store};

pub struct Server {
    config: ServeConfig,
    state: AppState,
    public: TcpListener,
    admin: TcpListener,
}

impl Server {
    /// Binds both listeners (port 0 picks a free port) and builds the store; does not serve yet.
    pub async fn bind(config: ServeConfig) -> anyhow::Result<Self> {
        let public = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let admin = TcpListener::bind(config.admin_listen)
            .await
            .with_context(|| format!("cannot listen on {} (admin)", config.admin_listen))?;
        let store = Store::from_config(
            &config.store,
            KeySpace::new(config.key_prefix.clone())
                .with_messages(config.messages_key.clone(), config.message_retention),
            config.durability,
        );
        let state = AppState {
            store,
            health: Health::new("store", "tally_store_up"),
            metrics: crate::metrics::handle(),
            request_timeout: config.request_timeout,
            idempotency_ttl: config.idempotency_ttl,
        };
        Ok(Self {
            config,
            state,
            public,
            admin,
        })
    }

    pub fn public_addr(&self) -> SocketAddr {
        self.public
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves until `shutdown` completes, then drains (see `lifecycle`).
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Self {
            config,
            state,
            public,
            admin,
        } = self;
        if matches!(state.store, Store::Memory(_)) {
            tracing::warn!(
                "no Redis configured: using the in-process memory store; counts are not shared \
                 between instances and are lost on restart (set TALLY_REDIS_URL or TALLY_REDIS_SENTINELS)"
            );
        }
        let watcher = state.health.spawn_store_watch(
            state.store.clone(),
            config.readiness_interval,
            config.request_timeout,
        );
        let listeners = Listeners {
            public: (public, public_router(state.clone())),
            admin: (admin, admin_router(state.clone())),
        };
        let drain = Drain {
            delay: config.shutdown_delay,
            timeout: config.shutdown_timeout,
        };
        let result = serve_until(listeners, state.health.clone(), drain, shutdown).await;
        watcher.abort();
        result
    }
}
