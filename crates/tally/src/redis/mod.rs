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
//! unknown is never re-sent; only a command that certainly did not run (READONLY, NOREPLICAS) is
//! retried.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use tokio::time::{timeout_at, Instant};

mod client;
mod cluster;
mod connection;
mod keys;
mod link;
mod replication;
mod sentinel;
pub mod slots;

pub use self::connection::Connection;
pub use self::keys::{FibKeys, KeySpace, DEFAULT_COUNTER_PREFIX, DEFAULT_NAMESPACE};

use self::client::check_eviction_policy;
pub(crate) use self::client::{classify, Dialer};

use self::cluster::{Cluster, Redirect};
use self::link::Link;
use self::sentinel::SentinelResolver;
use crate::config::{ClusterTarget, Durability, RedisTarget, SentinelTarget, StoreConfig};
use crate::store::{StoreError, Unavailable};

/// Between tries to reach the new master after READONLY: sentinels name it within a moment.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// When a command must be done by: a time allowed from now, or an instant a caller computed
/// already (the increment path reads the clock once for all its steps; it read it five times,
/// ~70 instructions each by callgrind).
pub(crate) trait Deadline {
    fn until(self) -> Instant;
}

impl Deadline for Duration {
    fn until(self) -> Instant {
        Instant::now() + self
    }
}

impl Deadline for Instant {
    fn until(self) -> Instant {
        self
    }
}

#[derive(Clone)]
pub struct RedisClient {
    inner: Arc<Inner>,
}

enum Source {
    Standalone {
        dialer: Dialer,
        host: String,
        port: u16,
    },
    Sentinel(SentinelResolver),
    Cluster(Cluster),
}

struct Inner {
    source: Source,
    keys: KeySpace,
    durability: Durability,
    /// Accept a server whose maxmemory-policy can evict counters (checked on every connection).
    allow_eviction: bool,
    /// The one master's connection (standalone and Sentinel; Cluster keeps one per shard).
    link: Link,
}

impl RedisClient {
    pub fn standalone(target: &RedisTarget, keys: KeySpace, durability: Durability) -> Self {
        let source = Source::Standalone {
            dialer: Dialer {
                auth: target.auth.clone(),
                tls: target.tls.clone(),
            },
            host: target.host.clone(),
            port: target.port,
        };
        Self::with_source(source, keys, durability, target.allow_eviction)
    }

    /// Sentinel mode. Must be called inside a Tokio runtime: it starts one task per sentinel
    /// that listens for `+switch-master` and drops the connection to the old master at once.
    pub fn sentinel(target: &SentinelTarget, keys: KeySpace, durability: Durability) -> Self {
        let resolver = SentinelResolver::new(target);
        let source = Source::Sentinel(resolver);
        let store = Self::with_source(source, keys, durability, target.allow_eviction);
        if let Source::Sentinel(resolver) = &store.inner.source {
            resolver.watch_switches(Arc::downgrade(&store.inner), |inner: &Inner| {
                inner
                    .link
                    .invalidate_any("sentinels announced a new master");
            });
        }
        store
    }

    /// Redis Cluster mode: keys are laid out with hash tags (`KeySpace::clustered`), so every
    /// command's keys share one slot.
    pub fn cluster(target: &ClusterTarget, keys: KeySpace, durability: Durability) -> Self {
        let source = Source::Cluster(Cluster::new(target));
        Self::with_source(source, keys.clustered(), durability, target.allow_eviction)
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
            StoreConfig::Cluster(target) => Some(Self::cluster(target, keys, durability)),
        }
    }

    fn with_source(
        source: Source,
        keys: KeySpace,
        durability: Durability,
        allow_eviction: bool,
    ) -> Self {
        let kind = source.kind();
        Self {
            inner: Arc::new(Inner {
                source,
                keys,
                durability,
                allow_eviction,
                link: Link::new(kind),
            }),
        }
    }

    /// Where every key of this client's data lives.
    pub fn keys(&self) -> &KeySpace {
        &self.inner.keys
    }

    pub fn kind(&self) -> &'static str {
        self.inner.source.kind()
    }

    /// Readiness: the store answers. In Cluster mode, any master answering is enough (see
    /// `Cluster::ping`).
    pub async fn ping(&self, deadline: Duration) -> Result<(), StoreError> {
        if let Source::Cluster(cluster) = &self.inner.source {
            return cluster.ping(self, deadline).await;
        }
        self.query("ping", "", false, deadline, redis::cmd("PING"))
            .await
    }

    /// Runs a plain command (see `run`).
    pub(crate) async fn query<T: redis::FromRedisValue>(
        &self,
        name: &'static str,
        route: &str,
        write: bool,
        deadline: impl Deadline,
        cmd: redis::Cmd,
    ) -> Result<T, StoreError> {
        let cmd = &cmd;
        self.run(name, route, write, deadline, move |mut c| async move {
            cmd.query_async(&mut c).await
        })
        .await
    }

    /// Runs one command on the master that holds `route` (a key of the command; in Cluster mode
    /// every key of it shares that key's slot) within `deadline`, recording its latency and
    /// errors. `op` may be called again, but only when the call before certainly did not
    /// execute. A `write` is acknowledged only once it is durable as configured.
    pub(crate) async fn run<T, F, Fut>(
        &self,
        name: &'static str,
        route: &str,
        write: bool,
        deadline: impl Deadline,
        op: F,
    ) -> Result<T, StoreError>
    where
        F: Fn(Connection) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let until = deadline.until();
        let started = Instant::now();
        let result = match &self.inner.source {
            // Boxed: rare next to the single-master path, whose future stays small.
            Source::Cluster(cluster) => {
                Box::pin(cluster.run(self, name, route, until, write, &op)).await
            }
            _ => self.run_on_master(name, until, write, &op).await,
        };
        // Only failures of the store count: a conflict or an overflow is the client's.
        let failure = result.as_ref().err().and_then(StoreError::failure_kind);
        crate::metrics::store_command(name, started.elapsed(), failure);
        result
    }

    async fn run_on_master<T, F, Fut>(
        &self,
        name: &'static str,
        until: Instant,
        write: bool,
        op: &F,
    ) -> Result<T, StoreError>
    where
        F: Fn(Connection) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let link = &self.inner.link;
        let open = || |budget| self.open_master(budget);
        let mut result = self.attempt(link, open(), until, write, op, None).await;
        let refused = match &result {
            Err(StoreError::Unavailable { kind, .. }) => Some(*kind),
            _ => None,
        };
        if matches!(
            refused,
            Some(Unavailable::ReadOnly | Unavailable::NoReplicas)
        ) {
            if refused == Some(Unavailable::ReadOnly) {
                // READONLY: the server was demoted. Any connection opened before now may lead
                // to it (another request may have reconnected to it just before the
                // demotion), so drop it too.
                link.invalidate_opened_before(Instant::now());
            } else if Instant::now() + RETRY_PAUSE < until {
                // NOREPLICAS: the master refuses writes. A preStop handover fences it until
                // the sentinels name the new master (a second or two); a master cut off from its
                // replicas or sentinels fences itself until a failover. The attempt dropped the
                // connection in Sentinel mode, so the next try asks the sentinels again.
                tokio::time::sleep(RETRY_PAUSE).await;
            } else {
                return result;
            }
            // Both refused before executing: try again until the write is taken, while
            // nothing has run and the deadline allows.
            loop {
                crate::metrics::store_retry(name);
                result = self.attempt(link, open(), until, write, op, None).await;
                match &result {
                    Err(e) if e.not_executed() && Instant::now() + RETRY_PAUSE < until => {
                        tokio::time::sleep(RETRY_PAUSE).await;
                    }
                    _ => break,
                }
            }
        }
        result
    }

    /// One try on `link`'s connection. `redirect`, when given (Cluster mode), receives where a
    /// MOVED, ASK, TRYAGAIN or CLUSTERDOWN answer points; the command did not run then.
    async fn attempt<T, F, Fut, O, OFut>(
        &self,
        link: &Link,
        open: O,
        until: Instant,
        write: bool,
        op: &F,
        redirect: Option<(&mut Option<Redirect>, bool)>,
    ) -> Result<T, StoreError>
    where
        F: Fn(Connection) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
        O: FnOnce(Duration) -> OFut,
        OFut: Future<Output = Result<MultiplexedConnection, StoreError>>,
    {
        let (conn, generation, committer) = link.handle(until, self.inner.durability, open).await?;
        let timed_out = |what: &str| {
            StoreError::unavailable(
                Unavailable::Timeout,
                format!("{what} within the request deadline"),
            )
        };
        let (conn, redirect) = match redirect {
            Some((out, true)) => (Connection::Asking(conn), Some(out)),
            Some((out, false)) => (Connection::Single(conn), Some(out)),
            None => (Connection::Single(conn), None),
        };
        let mut outcome = match timeout_at(until, op(conn)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                if let (Some(out), Some(to)) = (redirect, Redirect::from_error(&e)) {
                    *out = Some(to);
                }
                Err(classify(&e))
            }
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
                link.invalidate(generation);
            }
        }
        outcome
    }

    async fn open_master(&self, budget: Duration) -> Result<MultiplexedConnection, StoreError> {
        let conn = match &self.inner.source {
            Source::Standalone { dialer, host, port } => {
                dialer.connect(host, *port, budget).await?
            }
            Source::Sentinel(resolver) => resolver.connect_master(budget).await?,
            Source::Cluster(_) => {
                unreachable!("Cluster mode opens shard links, not the master link")
            }
        };
        self.checked(conn).await
    }

    /// Checked on every new connection, so a store replaced behind the same name is checked too.
    async fn checked(
        &self,
        mut conn: MultiplexedConnection,
    ) -> Result<MultiplexedConnection, StoreError> {
        check_eviction_policy(&mut conn, self.inner.allow_eviction).await?;
        Ok(conn)
    }

    /// Errors after which this connection must not serve another request.
    fn drops_connection(&self, err: &StoreError) -> bool {
        let StoreError::Unavailable { kind, .. } = err else {
            return false;
        };
        match kind {
            // Too few replicas behind this master: it may have been cut off and replaced, so
            // look for the master again. Standalone has nowhere else to go.
            Unavailable::NoReplicas | Unavailable::Unconfirmed => {
                !matches!(self.inner.source, Source::Standalone { .. })
            }
            // The connection is fine; in Sentinel mode the sentinels fail over away from a
            // master whose disk fails (it answers PING with MISCONF too). A redirect names
            // another node, and this one still serves its other slots.
            Unavailable::Server
            | Unavailable::Disk
            | Unavailable::Redirect
            | Unavailable::ClusterDown => false,
            _ => true,
        }
    }
}

impl Source {
    fn kind(&self) -> &'static str {
        match self {
            Self::Standalone { .. } => "redis",
            Self::Sentinel(_) => "sentinel",
            Self::Cluster(_) => "cluster",
        }
    }
}

fn is_readonly<T>(result: &Result<T, StoreError>) -> bool {
    matches!(
        result,
        Err(StoreError::Unavailable {
            kind: Unavailable::ReadOnly,
            ..
        })
    )
}
