//! One master's connection, as every request shares it: opened on demand by one request while
//! the others wait, replaced (never repaired) after a failure, and paired with its group-commit
//! task under replicated durability. Standalone and Sentinel mode hold one link; Cluster mode
//! holds one per shard master.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use tokio::time::{timeout_at, Instant};

use super::replication::Committer;
use crate::config::Durability;
use crate::store::{StoreError, Unavailable};

/// After a failed connect, requests fail fast for this long instead of each one dialling.
const CONNECT_BACKOFF: Duration = Duration::from_millis(200);

/// What one attempt runs on: the connection, its generation, its group-commit task.
pub(crate) type Handle = (MultiplexedConnection, u64, Option<Committer>);

pub(crate) struct Link {
    /// What the logs call this link: the store kind, or a shard's address.
    name: String,
    live: Mutex<Option<Live>>,
    /// Serialises connection attempts so a burst of requests opens one connection, not many.
    connecting: tokio::sync::Mutex<Option<(Instant, StoreError)>>,
    generation: AtomicU64,
}

struct Live {
    conn: MultiplexedConnection,
    generation: u64,
    opened: Instant,
    committer: Option<Committer>,
}

impl Link {
    pub(crate) fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            live: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(None),
            generation: AtomicU64::new(0),
        }
    }

    /// The live connection, or a new one from `open(budget)`, within `until`.
    pub(crate) async fn handle<F, Fut>(
        &self,
        until: Instant,
        durability: Durability,
        open: F,
    ) -> Result<Handle, StoreError>
    where
        F: FnOnce(Duration) -> Fut,
        Fut: Future<Output = Result<MultiplexedConnection, StoreError>>,
    {
        match self.current() {
            Some(live) => Ok(live),
            // Boxed: connecting is rare and its future is large; inline, every request's
            // future would carry (and move) its space.
            None => Box::pin(self.reconnect(until, durability, open)).await,
        }
    }

    async fn reconnect<F, Fut>(
        &self,
        until: Instant,
        durability: Durability,
        open: F,
    ) -> Result<Handle, StoreError>
    where
        F: FnOnce(Duration) -> Fut,
        Fut: Future<Output = Result<MultiplexedConnection, StoreError>>,
    {
        let timed_out = || {
            StoreError::unavailable(
                Unavailable::Timeout,
                "no connection within the request deadline",
            )
        };
        let mut last_failure = timeout_at(until, self.connecting.lock())
            .await
            .map_err(|_| timed_out())?;
        if let Some(live) = self.current() {
            return Ok(live);
        }
        if let Some((at, err)) = last_failure.as_ref() {
            if at.elapsed() < CONNECT_BACKOFF {
                return Err(err.clone());
            }
        }
        let budget = until.saturating_duration_since(Instant::now());
        let opened = match timeout_at(until, open(budget)).await {
            Ok(r) => r,
            Err(_) => Err(timed_out()),
        };
        match opened {
            Ok(conn) => {
                *last_failure = None;
                let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
                let committer = match durability {
                    Durability::Async => None,
                    Durability::Replicated { replicas, timeout } => {
                        Some(Committer::spawn(conn.clone(), replicas, timeout))
                    }
                };
                *self.lock() = Some(Live {
                    conn: conn.clone(),
                    generation,
                    opened: Instant::now(),
                    committer: committer.clone(),
                });
                crate::metrics::store_connected();
                tracing::info!(store = %self.name, generation, "connected to redis");
                Ok((conn, generation, committer))
            }
            Err(err) => {
                tracing::warn!(store = %self.name, error = %err, "cannot connect to redis");
                // Only a dial that failed with time to spare tells of the server (refused,
                // unresolvable, bad credentials). One cut short by this request's own deadline
                // does not, and cached it would fail the next requests, with their whole
                // deadlines, for the backoff: 47 requests in 200 ms in the TLS harness's rolling
                // restart under load, where the handover took 2.1 s.
                if until.saturating_duration_since(Instant::now()) > CONNECT_BACKOFF {
                    *last_failure = Some((Instant::now(), err.clone()));
                }
                Err(err)
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Live>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn current(&self) -> Option<Handle> {
        self.lock()
            .as_ref()
            .map(|l| (l.conn.clone(), l.generation, l.committer.clone()))
    }

    /// Drops the connection if it is still the one that failed (a newer one may exist already).
    pub(crate) fn invalidate(&self, generation: u64) {
        let mut live = self.lock();
        if live.as_ref().is_some_and(|l| l.generation == generation) {
            *live = None;
            tracing::info!(store = %self.name, generation, "dropped redis connection");
        }
    }

    /// Drops the current connection if it was opened before `at`.
    pub(crate) fn invalidate_opened_before(&self, at: Instant) {
        if let Some(l) = self.lock().take_if(|l| l.opened < at) {
            tracing::info!(
                store = %self.name,
                generation = l.generation,
                "dropped redis connection opened before a demotion was seen"
            );
        }
    }

    /// Drops whatever connection is current, e.g. when the sentinels announce a new master.
    pub(crate) fn invalidate_any(&self, why: &str) {
        if let Some(l) = self.lock().take() {
            tracing::info!(
                store = %self.name,
                generation = l.generation,
                why,
                "dropped redis connection"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use super::*;

    fn refused() -> StoreError {
        StoreError::unavailable(Unavailable::Connect, "Connection refused")
    }

    /// Dials through `link` within `deadline` with a dial that fails after `fails_after`;
    /// returns whether the dial ran.
    async fn dial(link: &Link, deadline: Duration, fails_after: Duration) -> bool {
        let dialled = AtomicBool::new(false);
        let until = Instant::now() + deadline;
        let result = link
            .handle(until, Durability::Async, |_budget| async {
                dialled.store(true, Ordering::Relaxed);
                tokio::time::sleep(fails_after).await;
                Err::<MultiplexedConnection, _>(refused())
            })
            .await;
        assert!(result.is_err());
        dialled.load(Ordering::Relaxed)
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_dial_fails_the_next_requests_fast_for_the_backoff() {
        let link = Link::new("test");
        assert!(dial(&link, Duration::from_secs(2), Duration::ZERO).await);
        assert!(!dial(&link, Duration::from_secs(2), Duration::ZERO).await);
        tokio::time::sleep(CONNECT_BACKOFF).await;
        assert!(dial(&link, Duration::from_secs(2), Duration::ZERO).await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_dial_cut_short_by_its_own_deadline_does_not_fail_the_next_request() {
        let link = Link::new("test");
        // The first request had 100 ms left; its dial ran out of them.
        assert!(dial(&link, Duration::from_millis(100), Duration::from_secs(1)).await);
        // The next, with its whole deadline, dials for itself.
        assert!(dial(&link, Duration::from_secs(2), Duration::ZERO).await);
    }
}
