//! Liveness and readiness state. Readiness follows one dependency (the store for `serve`, the
//! API for `web`), checked by a background probe on an interval, so Kubernetes probes are cheap
//! and a flood of probes never becomes a flood of store commands.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::store::StoreError;

#[derive(Clone)]
pub struct Health {
    inner: Arc<State>,
}

struct State {
    /// What readiness depends on, for logs ("store", "api").
    dependency: &'static str,
    /// The gauge that mirrors `up` (`tally_store_up`, `tally_api_up`).
    gauge: &'static str,
    up: AtomicBool,
    draining: AtomicBool,
}

impl Health {
    pub fn new(dependency: &'static str, gauge: &'static str) -> Self {
        Self {
            inner: Arc::new(State {
                dependency,
                gauge,
                up: AtomicBool::new(false),
                draining: AtomicBool::new(false),
            }),
        }
    }

    /// Ready: the dependency answered its last probe and the process is not shutting down.
    pub fn is_ready(&self) -> bool {
        self.dependency_up() && !self.is_draining()
    }

    pub fn dependency_up(&self) -> bool {
        self.inner.up.load(Ordering::Relaxed)
    }

    pub fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::Relaxed)
    }

    pub fn start_draining(&self) {
        self.inner.draining.store(true, Ordering::Relaxed);
    }

    fn set_up(&self, up: bool) {
        let was = self.inner.up.swap(up, Ordering::Relaxed);
        crate::metrics::dependency_up(self.inner.gauge, up);
        if was != up {
            let dependency = self.inner.dependency;
            if up {
                tracing::info!(dependency, "dependency is reachable: ready");
            } else {
                tracing::warn!(dependency, "dependency is unreachable: not ready");
            }
        }
    }

    /// Runs `probe` every `interval` until the task is aborted. The first probe runs at once
    /// so a healthy process turns ready without waiting a full interval.
    pub fn spawn_watch<F, Fut>(&self, interval: Duration, probe: F) -> tokio::task::JoinHandle<()>
    where
        F: Fn() -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), String>> + Send,
    {
        let health = self.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                let result = probe().await;
                if let Err(e) = &result {
                    tracing::debug!(dependency = health.inner.dependency, error = %e, "readiness probe failed");
                }
                health.set_up(result.is_ok());
            }
        })
    }

    /// Readiness that follows a store: `ping` (a PING, say) with a budget bounded by the
    /// interval (at least 500 ms).
    pub fn spawn_store_watch<F, Fut>(
        &self,
        interval: Duration,
        deadline: Duration,
        ping: F,
    ) -> tokio::task::JoinHandle<()>
    where
        F: Fn(Duration) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), StoreError>> + Send + 'static,
    {
        let budget = deadline.min(interval.max(Duration::from_millis(500)));
        self.spawn_watch(interval, move || {
            let pinged = ping(budget);
            async move { pinged.await.map_err(|e| e.to_string()) }
        })
    }
}
