//! `tally serve`: binds both listeners, runs until a shutdown signal, then drains.
//!
//! Shutdown order (what a Kubernetes rollout needs): on SIGTERM `/readyz` turns 503 at once;
//! requests are still served for `shutdown_delay` while endpoints are removed from load
//! balancers; then the listener closes and in-flight requests get `shutdown_timeout` to finish.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::ServeConfig;
use crate::health::Health;
use crate::http::{admin_router, public_router, AppState};
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
            health: Health::default(),
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

    /// Serves until `shutdown` completes, then drains as described above.
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
        let upkeep = spawn_metrics_upkeep(state.metrics.clone());

        let (close_public, public_closed) = watch::channel(false);
        let (close_admin, admin_closed) = watch::channel(false);
        let public_app = public_router(state.clone());
        let public_task = tokio::spawn(async move {
            axum::serve(public, public_app)
                .with_graceful_shutdown(wait_for(public_closed))
                .await
        });
        let admin_app = admin_router(state.clone());
        let admin_task = tokio::spawn(async move {
            axum::serve(admin, admin_app)
                .with_graceful_shutdown(wait_for(admin_closed))
                .await
        });

        shutdown.await;
        state.health.start_draining();
        tracing::info!(delay = ?config.shutdown_delay, "shutting down: not ready, still serving during the delay");
        tokio::time::sleep(config.shutdown_delay).await;

        tracing::info!(timeout = ?config.shutdown_timeout, "closing the listener; draining in-flight requests");
        let _ = close_public.send(true);
        match tokio::time::timeout(config.shutdown_timeout, public_task).await {
            Ok(joined) => joined
                .context("public server task failed")?
                .context("public server failed")?,
            Err(_) => {
                tracing::warn!("in-flight requests did not finish within the shutdown timeout")
            }
        }
        let _ = close_admin.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(1), admin_task).await;
        watcher.abort();
        upkeep.abort();
        tracing::info!("shutdown complete");
        Ok(())
    }
}

async fn wait_for(mut closed: watch::Receiver<bool>) {
    let _ = closed.wait_for(|c| *c).await;
}

/// Histograms of the Prometheus recorder need periodic upkeep to bound their memory.
fn spawn_metrics_upkeep(
    handle: metrics_exporter_prometheus::PrometheusHandle,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(Duration::from_secs(5));
        loop {
            ticker.tick().await;
            handle.run_upkeep();
        }
    })
}

/// Completes on SIGTERM (Kubernetes, Docker) or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("received SIGINT"),
        _ = term => tracing::info!("received SIGTERM"),
    }
}
