//! Liveness and readiness state. Readiness is computed by a background ping on an interval, so
//! probes are cheap and a flood of probes never becomes a flood of store commands.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::store::Store;

#[derive(Clone, Default)]
pub struct Health {
    inner: Arc<State>,
}

#[derive(Default)]
struct State {
    store_up: AtomicBool,
    draining: AtomicBool,
}

impl Health {
    /// Ready: the store answered its last ping and the process is not shutting down.
    pub fn is_ready(&self) -> bool {
        self.store_up() && !self.is_draining()
    }

    pub fn store_up(&self) -> bool {
        self.inner.store_up.load(Ordering::Relaxed)
    }

    pub fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::Relaxed)
    }

    pub fn start_draining(&self) {
        self.inner.draining.store(true, Ordering::Relaxed);
    }

    fn set_store_up(&self, up: bool) {
        let was = self.inner.store_up.swap(up, Ordering::Relaxed);
        crate::metrics::store_up(up);
        if was != up {
            if up {
                tracing::info!("store is reachable: ready");
            } else {
                tracing::warn!("store is unreachable: not ready");
            }
        }
    }

    /// Pings the store every `interval` until the task is aborted. The first ping runs at once
    /// so a healthy process turns ready without waiting a full interval.
    pub fn spawn_store_watch(
        &self,
        store: Store,
        interval: Duration,
        deadline: Duration,
    ) -> tokio::task::JoinHandle<()> {
        let health = self.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                let result = store
                    .ping(deadline.min(interval.max(Duration::from_millis(500))))
                    .await;
                if let Err(e) = &result {
                    tracing::debug!(error = %e, "readiness ping failed");
                }
                health.set_store_up(result.is_ok());
            }
        })
    }
}
