//! The one Redis client every feature uses: a connection source (standalone or behind Sentinel),
//! error classification, replicated durability (WAIT), and the key space. Features add their
//! commands in their own folders (`counters/redis.rs`, `guestbook/redis.rs`, `fib/queue.rs`) on
//! top of `RedisClient::run`, which owns the exactly-once rules below and hands each command a
//! `Connection` (the topology seam, `connection.rs`).
//!
//! All requests share one multiplexed connection, which pipelines concurrent commands (a
//! connection per request would cost a round trip and a socket each). The connection is
//! replaced, never repaired: any I/O error, timeout or READONLY drops it, and the next request
//! opens a fresh one (asking the sentinels again in Sentinel mode). A command whose outcome is
//! unknown is never re-sent; only a command that certainly did not run (READONLY) is retried.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use tokio::time::{timeout_at, Instant};

mod client;
mod connection;
mod keys;
mod replication;
mod sentinel;

pub use self::connection::Connection;
pub use self::keys::{FibKeys, KeySpace, DEFAULT_COUNTER_PREFIX, DEFAULT_NAMESPACE};

use self::client::check_eviction_policy;
pub(crate) use self::client::{classify, connect, connection_info};

use self::replication::Committer;
use self::sentinel::SentinelResolver;
use crate::config::{Durability, RedisTarget, SentinelTarget, StoreConfig};
use crate::store::{StoreError, Unavailable};

/// After a failed connect, requests fail fast for this long instead of each one dialling.
const CONNECT_BACKOFF: Duration = Duration::from_millis(200);
/// Between tries to reach the new master after READONLY: sentinels name it within a moment.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

#[derive(Clone)]
pub struct RedisClient {
    inner: Arc<Inner>,
}

enum Source {
    Standalone(redis::ConnectionInfo),
    Sentinel(SentinelResolver),
}

struct Inner {
    source: Source,
    keys: KeySpace,
    durability: Durability,
    /// Accept a server whose maxmemory-policy can evict counters (checked on every connection).
    allow_eviction: bool,
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

/// What one attempt runs on: the connection, its generation, its group-commit task.
type Handle = (MultiplexedConnection, u64, Option<Committer>);

impl RedisClient {
    pub fn standalone(target: &RedisTarget, keys: KeySpace, durability: Durability) -> Self {
        let info = connection_info(&target.host, target.port, target.tls, &target.auth);
        let source = Source::Standalone(info);
        Self::with_source(source, keys, durability, target.allow_eviction)
    }

    /// Sentinel mode. Must be called inside a Tokio runtime: it starts one task per sentinel
    /// that listens for `+switch-master` and drops the connection to the old master at once.
    pub fn sentinel(target: &SentinelTarget, keys: KeySpace, durability: Durability) -> Self {
        let resolver = SentinelResolver::new(target);
        let source = Source::Sentinel(resolver);
        let store = Self::with_source(source, keys, durability, target.allow_eviction);
        let weak = Arc::downgrade(&store.inner);
        if let Source::Sentinel(resolver) = &store.inner.source {
            resolver.watch_switches(Arc::new(move || {
                if let Some(inner) = weak.upgrade() {
                    (RedisClient { inner }).invalidate_any("sentinels announced a new master");
                }
            }));
        }
        store
    }

    /// The client for a Redis configuration; None for the memory store. Must be called inside
    /// a Tokio runtime (Sentinel mode starts background tasks).
    pub fn from_config(
        config: &StoreConfig,
        keys: KeySpace,
        durability: Durability,
    ) -> Option<Self> {
        match config {
            StoreConfig::Memory => None,
            StoreConfig::Redis(target) => Some(Self::standalone(target, keys, durability)),
            StoreConfig::Sentinel(target) => Some(Self::sentinel(target, keys, durability)),
        }
    }

    fn with_source(
        source: Source,
        keys: KeySpace,
        durability: Durability,
        allow_eviction: bool,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                source,
                keys,
                durability,
                allow_eviction,
                live: Mutex::new(None),
                connecting: tokio::sync::Mutex::new(None),
                generation: AtomicU64::new(0),
            }),
        }
    }

    /// Where every key of this client's data lives.
    pub fn keys(&self) -> &KeySpace {
        &self.inner.keys
    }

    pub fn kind(&self) -> &'static str {
        match self.inner.source {
            Source::Standalone(_) => "redis",
            Source::Sentinel(_) => "sentinel",
        }
    }

    pub async fn ping(&self, deadline: Duration) -> Result<(), StoreError> {
        self.query("ping", false, deadline, redis::cmd("PING"))
            .await
    }

    /// Runs a plain command (see `run`).
    pub(crate) async fn query<T: redis::FromRedisValue>(
        &self,
        name: &'static str,
        write: bool,
        deadline: Duration,
        cmd: redis::Cmd,
    ) -> Result<T, StoreError> {
        let cmd = &cmd;
        self.run(name, write, deadline, move |mut c| async move {
            cmd.query_async(&mut c).await
        })
        .await
    }

    /// Runs one command on the current master within `deadline`, recording its latency and
    /// errors. `op` may be called twice, but only when the first call certainly did not execute.
    /// A `write` is acknowledged only once it is durable as configured.
    pub(crate) async fn run<T, F, Fut>(
        &self,
        name: &'static str,
        write: bool,
        deadline: Duration,
        op: F,
    ) -> Result<T, StoreError>
    where
        F: Fn(Connection) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let started = std::time::Instant::now();
        let until = Instant::now() + deadline;
        let mut result = self.attempt(until, write, &op).await;
        if matches!(
            &result,
            Err(StoreError::Unavailable {
                kind: Unavailable::ReadOnly,
                ..
            })
        ) {
            // READONLY: the server was demoted and refused before executing. Any connection
            // opened before now may lead to it (another request may have reconnected to it just
            // before the demotion), so drop it too; then try again until a connection reaches
            // the new master, while nothing has run and the deadline allows.
            self.invalidate_opened_before(Instant::now());
            loop {
                crate::metrics::store_retry(name);
                result = self.attempt(until, write, &op).await;
                match &result {
                    Err(e) if e.not_executed() && Instant::now() + RETRY_PAUSE < until => {
                        tokio::time::sleep(RETRY_PAUSE).await;
                    }
                    _ => break,
                }
            }
        }
        // Only failures of the store count: a conflict or an overflow is the client's.
        let failure = result.as_ref().err().and_then(StoreError::failure_kind);
        crate::metrics::store_command(name, started.elapsed(), failure);
        result
    }

    async fn attempt<T, F, Fut>(&self, until: Instant, write: bool, op: &F) -> Result<T, StoreError>
    where
        F: Fn(Connection) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let (conn, generation, committer) = self.connection(until).await?;
        let timed_out = |what: &str| {
            StoreError::unavailable(
                Unavailable::Timeout,
                format!("{what} within the request deadline"),
            )
        };
        let mut outcome = match timeout_at(until, op(Connection::Single(conn))).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(classify(&e)),
            Err(_) => Err(timed_out("no reply")),
        };
        if let (Ok(_), Some(committer), true) = (&outcome, committer, write) {
            if let Err(e) = timeout_at(until, committer.replicated())
                .await
                .unwrap_or_else(|_| Err(timed_out("replicas did not confirm")))
            {
                // The write ran: whatever WAIT answered, it must not read as "did not run".
                outcome = Err(if e.not_executed() {
                    StoreError::unavailable(Unavailable::Io, e.to_string())
                } else {
                    e
                });
            }
        }
        if let Err(err) = &outcome {
            if self.drops_connection(err) {
                // Gone, hung, demoted or cut off from its replicas: the next request starts afresh.
                self.invalidate(generation);
            }
        }
        outcome
    }

    async fn connection(&self, until: Instant) -> Result<Handle, StoreError> {
        match self.current() {
            Some(live) => Ok(live),
            // Boxed: connecting is rare and its future is large; inline, every request's
            // future would carry (and move) its space.
            None => Box::pin(self.reconnect(until)).await,
        }
    }

    async fn reconnect(&self, until: Instant) -> Result<Handle, StoreError> {
        let timed_out = || {
            StoreError::unavailable(
                Unavailable::Timeout,
                "no connection within the request deadline",
            )
        };
        let mut last_failure = timeout_at(until, self.inner.connecting.lock())
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
        let opened = match timeout_at(until, self.open(budget)).await {
            Ok(r) => r,
            Err(_) => Err(timed_out()),
        };
        match opened {
            Ok(conn) => {
                *last_failure = None;
                let generation = self.inner.generation.fetch_add(1, Ordering::Relaxed) + 1;
                let committer = match self.inner.durability {
                    Durability::Async => None,
                    Durability::Replicated { replicas, timeout } => {
                        Some(Committer::spawn(conn.clone(), replicas, timeout))
                    }
                };
                let mut live = self.inner.live.lock().unwrap_or_else(|p| p.into_inner());
                *live = Some(Live {
                    conn: conn.clone(),
                    generation,
                    opened: Instant::now(),
                    committer: committer.clone(),
                });
                crate::metrics::store_connected();
                tracing::info!(store = self.kind(), generation, "connected to redis");
                Ok((conn, generation, committer))
            }
            Err(err) => {
                tracing::warn!(store = self.kind(), error = %err, "cannot connect to redis");
                *last_failure = Some((Instant::now(), err.clone()));
                Err(err)
            }
        }
    }

    async fn open(&self, budget: Duration) -> Result<MultiplexedConnection, StoreError> {
        let mut conn = match &self.inner.source {
            Source::Standalone(info) => connect(info, budget).await?,
            Source::Sentinel(resolver) => resolver.connect_master(budget).await?,
        };
        // On every new connection, so a store replaced behind the same name is checked too.
        check_eviction_policy(&mut conn, self.inner.allow_eviction).await?;
        Ok(conn)
    }

    fn current(&self) -> Option<Handle> {
        let live = self.inner.live.lock().unwrap_or_else(|p| p.into_inner());
        live.as_ref()
            .map(|l| (l.conn.clone(), l.generation, l.committer.clone()))
    }

    /// Drops the connection if it is still the one that failed (a newer one may exist already).
    fn invalidate(&self, generation: u64) {
        let mut live = self.inner.live.lock().unwrap_or_else(|p| p.into_inner());
        if live.as_ref().is_some_and(|l| l.generation == generation) {
            *live = None;
            tracing::info!(store = self.kind(), generation, "dropped redis connection");
        }
    }

    /// Drops the current connection if it was opened before `at`.
    fn invalidate_opened_before(&self, at: Instant) {
        let mut live = self.inner.live.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(l) = live.take_if(|l| l.opened < at) {
            tracing::info!(
                store = self.kind(),
                generation = l.generation,
                "dropped redis connection opened before a demotion was seen"
            );
        }
    }

    /// Drops whatever connection is current, e.g. when the sentinels announce a new master.
    fn invalidate_any(&self, why: &str) {
        let mut live = self.inner.live.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(l) = live.take() {
            tracing::info!(
                store = self.kind(),
                generation = l.generation,
                why,
                "dropped redis connection"
            );
        }
    }

    /// Errors after which this connection must not serve another request.
    fn drops_connection(&self, err: &StoreError) -> bool {
        let StoreError::Unavailable { kind, .. } = err else {
            return false;
        };
        match kind {
            // Too few replicas behind this master: in Sentinel mode it may have been cut off
            // and replaced, so ask the sentinels again. Standalone has nowhere else to go.
            Unavailable::NoReplicas => matches!(self.inner.source, Source::Sentinel(_)),
            // The connection is fine; in Sentinel mode the sentinels fail over away from a
            // master whose disk fails (it answers PING with MISCONF too).
            Unavailable::Server | Unavailable::Disk => false,
            _ => true,
        }
    }
}
