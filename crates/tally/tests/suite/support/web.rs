//! `tally web` in-process on random loopback ports, in front of a given API.

use std::time::Duration;

use tally::web::{WebArgs, WebServer};
use tokio::sync::oneshot;

/// The web tier on random loopback ports in front of `api_url`.
pub struct Web {
    pub base: String,
    pub admin: String,
    pub client: reqwest::Client,
    _stop: oneshot::Sender<()>,
}

impl Web {
    pub async fn start(api_url: &str) -> Self {
        let args = WebArgs {
            listen: "127.0.0.1:0".parse().unwrap(),
            admin_listen: "127.0.0.1:0".parse().unwrap(),
            api_url: Some(api_url.to_owned()),
            common: tally::config::CommonArgs {
                request_timeout: Duration::from_millis(800),
                log_format: None,
                listener: tally::config::ListenerArgs {
                    header_timeout: Duration::from_secs(10),
                    idle_timeout: Duration::from_secs(620),
                    max_connections: 4096,
                    admin_max_connections: 64,
                },
                otlp_endpoint: None,
            },
            serving: tally::config::ServingArgs {
                readiness_interval: Duration::from_millis(100),
                drain: tally::config::Drain {
                    delay: Duration::ZERO,
                    timeout: Duration::from_secs(5),
                },
                rate_limit: Default::default(),
            },
        };
        let server = WebServer::bind(args, api_url).await.unwrap();
        let (base, admin) = (
            format!("http://{}", server.public_addr()),
            format!("http://{}", server.admin_addr()),
        );
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        Self {
            base,
            admin,
            client,
            _stop: stop,
        }
    }

    pub async fn page(&self, path: &str) -> (u16, String, reqwest::header::HeaderMap) {
        let r = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        let (status, headers) = (r.status().as_u16(), r.headers().clone());
        (status, r.text().await.unwrap(), headers)
    }

    /// The status of a GET on the admin listener; 0 when it does not answer.
    pub async fn admin_status(&self, path: &str) -> u16 {
        super::status(&self.client, format!("{}{path}", self.admin)).await
    }

    pub async fn form(&self, path: &str, fields: &[(&str, &str)]) -> reqwest::Response {
        self.client
            .post(format!("{}{path}", self.base))
            .form(fields)
            .send()
            .await
            .unwrap()
    }
}
