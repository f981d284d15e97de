//! Running a public and an admin listener until a shutdown signal, then draining; shared by
//! `tally serve` and `tally web`.
//!
//! Shutdown order (what a Kubernetes rollout needs): on SIGTERM `/readyz` turns 503 at once;
//! requests are still served for `delay` while endpoints are removed from load balancers; then
//! the public listener closes and in-flight requests get `timeout` to finish.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::health::Health;
use crate::config::{Drain, ListenerLimits};
use crate::listener::{self, App, Role};

/// Binds the public and the admin listener (port 0 picks a free port).
pub async fn bind(
    public: SocketAddr,
    admin: SocketAddr,
) -> anyhow::Result<(TcpListener, TcpListener)> {
    let p = listener::bind(public).with_context(|| format!("cannot listen on {public}"))?;
    let a = listener::bind(admin).with_context(|| format!("cannot listen on {admin} (admin)"))?;
    Ok((p, a))
}

/// The address a bound listener listens on.
pub fn address(listener: &TcpListener) -> SocketAddr {
    listener
        .local_addr()
        .expect("a bound listener has an address")
}

pub struct Listeners {
    pub public: (TcpListener, Router),
    pub admin: (TcpListener, Router),
    pub limits: ListenerLimits,
    /// Public requests carry the peer address (`listener::Peer`): the rate limit and web's
    /// X-Forwarded-For need it.
    pub peer_address: bool,
}

pub async fn serve_until(
    listeners: Listeners,
    health: Health,
    drain: Drain,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let upkeep = spawn_metrics_upkeep(crate::metrics::handle());
    let (close_public, public_closed) = watch::channel(false);
    let (close_admin, admin_closed) = watch::channel(false);
    let Listeners {
        public: (public, public_app),
        admin: (admin, admin_app),
        limits,
        peer_address,
    } = listeners;
    let public_app = App {
        role: Role::Public,
        router: public_app,
        peer_address,
    };
    let public_task = listener::spawn(public, public_app, limits.public, public_closed);
    let admin_task = listener::spawn(admin, App::admin(admin_app), limits.admin, admin_closed);

    shutdown.await;
    health.start_draining();
    tracing::info!(delay = ?drain.delay, "shutting down: not ready, still serving during the delay");
    tokio::time::sleep(drain.delay).await;

    tracing::info!(timeout = ?drain.timeout, "closing the listener and idle connections; draining in-flight requests");
    let _ = close_public.send(true);
    match tokio::time::timeout(drain.timeout, public_task).await {
        Ok(joined) => joined.context("public server task failed")?,
        Err(_) => tracing::warn!("in-flight requests did not finish within the shutdown timeout"),
    }
    let _ = close_admin.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(1), admin_task).await;
    upkeep.abort();
    tracing::info!("shutdown complete");
    Ok(())
}

/// Histograms of the Prometheus recorder need periodic upkeep to bound their memory.
pub fn spawn_metrics_upkeep(
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
