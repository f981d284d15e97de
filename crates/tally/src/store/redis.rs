//! Counters in Redis, standalone or behind Sentinel.
//!
//! All requests share one multiplexed connection, which pipelines concurrent commands (a
//! connection per request would cost a round trip and a socket each). The connection is
//! replaced, never repaired: any I/O error, timeout or READONLY drops it, and the next request
//! opens a fresh one (asking the sentinels again in Sentinel mode). A command whose outcome is
//! unknown is never re-sent; only a command that certainly did not run (READONLY) is retried.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{ErrorKind, RedisError, ServerErrorKind};
use tokio::time::{timeout_at, Instant};

use super::replication::{Committer, Durability};
use super::sentinel::SentinelResolver;
use super::{Idempotency, Incremented, KeySpace, StoreError, Unavailable};
use crate::config::{RedisAuth, RedisTarget, SentinelTarget};

/// After a failed connect, requests fail fast for this long instead of each one dialling.
const CONNECT_BACKOFF: Duration = Duration::from_millis(200);

/// Increment with an idempotency record, atomically. Returns {count, first_id, replayed}.
/// KEYS[1] counter, KEYS[2] reply record; ARGV[1] id, ARGV[2] window in seconds.
static INCR_IDEMPOTENT: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local rec = redis.call('GET', KEYS[2])
if rec then
  local sep = string.find(rec, ':', 1, true)
  return {tonumber(string.sub(rec, 1, sep - 1)), string.sub(rec, sep + 1), 1}
end
local n = redis.call('INCR', KEYS[1])
redis.call('SET', KEYS[2], n .. ':' .. ARGV[1], 'EX', ARGV[2])
return {n, ARGV[1], 0}
",
    )
});

#[derive(Clone)]
pub struct RedisStore {
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
    live: Mutex<Option<Live>>,
    /// Serialises connection attempts so a burst of requests opens one connection, not many.
    connecting: tokio::sync::Mutex<Option<(Instant, StoreError)>>,
    generation: AtomicU64,
}

struct Live {
    conn: MultiplexedConnection,
    generation: u64,
    committer: Option<Committer>,
}

/// What one attempt runs on: the connection, its generation, its group-commit task.
type Handle = (MultiplexedConnection, u64, Option<Committer>);

impl RedisStore {
    pub fn standalone(target: &RedisTarget, keys: KeySpace, durability: Durability) -> Self {
        let info = connection_info(&target.host, target.port, target.tls, &target.auth);
        Self::with_source(Source::Standalone(info), keys, durability)
    }

    /// Sentinel mode. Must be called inside a Tokio runtime: it starts one task per sentinel
    /// that listens for `+switch-master` and drops the connection to the old master at once.
    pub fn sentinel(target: &SentinelTarget, keys: KeySpace, durability: Durability) -> Self {
        let resolver = SentinelResolver::new(target);
        let store = Self::with_source(Source::Sentinel(resolver), keys, durability);
        let weak = Arc::downgrade(&store.inner);
        if let Source::Sentinel(resolver) = &store.inner.source {
            resolver.watch_switches(Arc::new(move || {
                if let Some(inner) = weak.upgrade() {
                    (RedisStore { inner }).invalidate_any("sentinels announced a new master");
                }
            }));
        }
        store
    }

    fn with_source(source: Source, keys: KeySpace, durability: Durability) -> Self {
        Self {
            inner: Arc::new(Inner {
                source,
                keys,
                durability,
                live: Mutex::new(None),
                connecting: tokio::sync::Mutex::new(None),
                generation: AtomicU64::new(0),
            }),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self.inner.source {
            Source::Standalone(_) => "redis",
            Source::Sentinel(_) => "sentinel",
        }
    }

    pub async fn incr(
        &self,
        id: &str,
        idem: Option<Idempotency<'_>>,
        deadline: Duration,
    ) -> Result<Incremented, StoreError> {
        let counter = self.inner.keys.counter(id);
        let Some(idem) = idem else {
            let cmd = redis::cmd("INCR").arg(&counter).to_owned();
            let count = self
                .run("incr", true, deadline, move |mut c| {
                    let cmd = cmd.clone();
                    async move { cmd.query_async::<i64>(&mut c).await }
                })
                .await?;
            return Ok(Incremented {
                count,
                replayed: false,
            });
        };
        let record = self.inner.keys.idempotency(idem.key);
        let (id_owned, ttl) = (id.to_owned(), idem.ttl.as_secs().max(1));
        let (count, first_id, replayed): (i64, String, i64) = self
            .run("incr_idempotent", true, deadline, move |mut c| {
                let (counter, record, id) = (counter.clone(), record.clone(), id_owned.clone());
                async move {
                    let mut call = INCR_IDEMPOTENT.key(counter);
                    call.key(record).arg(id).arg(ttl);
                    call.invoke_async(&mut c).await
                }
            })
            .await?;
        if first_id != id {
            return Err(StoreError::IdempotencyConflict);
        }
        Ok(Incremented {
            count,
            replayed: replayed == 1,
        })
    }

    pub async fn get(&self, id: &str, deadline: Duration) -> Result<i64, StoreError> {
        let cmd = redis::cmd("GET")
            .arg(self.inner.keys.counter(id))
            .to_owned();
        let value: Option<String> = self
            .run("get", false, deadline, move |mut c| {
                let cmd = cmd.clone();
                async move { cmd.query_async(&mut c).await }
            })
            .await?;
        match value {
            None => Ok(0),
            Some(v) => v.parse().map_err(|_| StoreError::NotACounter),
        }
    }

    pub async fn ping(&self, deadline: Duration) -> Result<(), StoreError> {
        self.run("ping", false, deadline, |mut c| async move {
            redis::cmd("PING").query_async::<()>(&mut c).await
        })
        .await
    }

    /// Runs one command on the current master within `deadline`, recording its latency and
    /// errors. `op` may be called twice, but only when the first call certainly did not execute.
    /// A `write` is acknowledged only once it is durable as configured.
    async fn run<T, F, Fut>(
        &self,
        name: &'static str,
        write: bool,
        deadline: Duration,
        op: F,
    ) -> Result<T, StoreError>
    where
        F: Fn(MultiplexedConnection) -> Fut,
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
            // READONLY: the server refused before executing, so a retry cannot double-apply.
            // The connection was dropped; the retry finds the new master.
            crate::metrics::store_retry(name);
            result = self.attempt(until, write, &op).await;
        }
        crate::metrics::store_command(name, started.elapsed(), result.as_ref().err());
        result
    }

    async fn attempt<T, F, Fut>(&self, until: Instant, write: bool, op: &F) -> Result<T, StoreError>
    where
        F: Fn(MultiplexedConnection) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let (conn, generation, committer) = self.connection(until).await?;
        let timed_out = |what: &str| {
            StoreError::unavailable(
                Unavailable::Timeout,
                format!("{what} within the request deadline"),
            )
        };
        let mut outcome = match timeout_at(until, op(conn)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(classify(&e)),
            Err(_) => Err(timed_out("no reply")),
        };
        if let (Ok(_), Some(committer), true) = (&outcome, committer, write) {
            if let Err(e) = timeout_at(until, committer.replicated())
                .await
                .unwrap_or_else(|_| Err(timed_out("replicas did not confirm")))
            {
                outcome = Err(e);
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
        if let Some(live) = self.current() {
            return Ok(live);
        }
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
        match &self.inner.source {
            Source::Standalone(info) => connect(info, budget).await,
            Source::Sentinel(resolver) => resolver.connect_master(budget).await,
        }
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
            Unavailable::Server => false,
            _ => true,
        }
    }
}

/// Opens and authenticates a connection within `budget`. Handshake failures other than bad
/// credentials count as connect failures: no command was sent yet.
pub(super) async fn connect(
    info: &redis::ConnectionInfo,
    budget: Duration,
) -> Result<MultiplexedConnection, StoreError> {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(budget))
        // Deadlines are ours (per request), not a per-command timeout of the client.
        .set_response_timeout(None);
    let client = redis::Client::open(info.clone())
        .map_err(|e| StoreError::unavailable(Unavailable::Connect, e.to_string()))?;
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(|e| match classify(&e) {
            err @ StoreError::Unavailable {
                kind: Unavailable::Auth,
                ..
            } => err,
            _ => StoreError::unavailable(Unavailable::Connect, e.to_string()),
        })
}

pub(super) fn connection_info(
    host: &str,
    port: u16,
    tls: bool,
    auth: &RedisAuth,
) -> redis::ConnectionInfo {
    let addr = if tls {
        redis::ConnectionAddr::TcpTls {
            host: host.to_owned(),
            port,
            insecure: false,
            tls_params: None,
        }
    } else {
        redis::ConnectionAddr::Tcp(host.to_owned(), port)
    };
    let mut settings = redis::RedisConnectionInfo::default().set_db(auth.db);
    if let Some(user) = &auth.username {
        settings = settings.set_username(user);
    }
    if let Some(password) = &auth.password {
        settings = settings.set_password(password.expose());
    }
    redis::IntoConnectionInfo::into_connection_info(addr)
        .expect("a TCP address is always valid connection info")
        .set_redis_settings(settings)
}

/// Maps a client error to what it means for the caller. Messages come from the server or the
/// socket and never contain credentials.
pub(super) fn classify(e: &RedisError) -> StoreError {
    let kind = if e.is_timeout() {
        Unavailable::Timeout
    } else {
        match (e.kind(), e.code()) {
            (ErrorKind::AuthenticationFailed, _) => Unavailable::Auth,
            (_, Some("WRONGPASS" | "NOAUTH" | "NOPERM")) => Unavailable::Auth,
            (ErrorKind::Server(ServerErrorKind::ReadOnly), _) | (_, Some("READONLY")) => {
                Unavailable::ReadOnly
            }
            (ErrorKind::Server(ServerErrorKind::BusyLoading), _) => Unavailable::Loading,
            (ErrorKind::Server(ServerErrorKind::MasterDown), _) => Unavailable::NoMaster,
            (_, Some("NOREPLICAS")) => Unavailable::NoReplicas,
            (ErrorKind::Server(ServerErrorKind::ResponseError), _)
                if e.detail()
                    .is_some_and(|d| d.contains("not an integer") || d.contains("WRONGTYPE")) =>
            {
                return StoreError::NotACounter;
            }
            (_, Some("WRONGTYPE")) => return StoreError::NotACounter,
            (ErrorKind::Io, _) if e.is_connection_refusal() => Unavailable::Connect,
            (ErrorKind::Io, _) => Unavailable::Io,
            _ if e.is_connection_dropped() => Unavailable::Io,
            _ => Unavailable::Server,
        }
    };
    StoreError::unavailable(kind, e.to_string())
}
