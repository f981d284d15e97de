//! Opening connections and reading errors.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{ErrorKind, RedisError, ServerErrorKind};

use crate::config::{RedisAuth, TlsFiles};
use crate::store::{StoreError, Unavailable};

/// Commands that may queue for the connection's writer task. The client's default, 50, is
/// below the concurrency of one busy replica: every request past it waits for a slot and is
/// woken again, after the writer has drained the queue. Each request keeps its own deadline,
/// so a longer queue holds none past it. Measured at c=256 on a million ids (bench/README.md,
/// "Pipeline buffer"): Redis socket reads per request 0.022 -> 0.012, Redis CPU -20 %.
const PIPELINE_BUFFER: usize = 1024;

/// How to open connections to one kind of server (the Redis nodes, or the sentinels): the
/// credentials and the TLS material, both read when a connection is opened, so that a rotated
/// password or certificate reaches the next connection without a restart.
#[derive(Debug, Clone)]
pub(crate) struct Dialer {
    pub(crate) auth: RedisAuth,
    pub(crate) tls: Option<TlsFiles>,
}

impl Dialer {
    /// A client for `host:port` with the credentials and certificates as of now. The TLS server
    /// name is `host`: certificates must carry the names the sentinels or the slot map give.
    pub(crate) fn client(&self, host: &str, port: u16) -> Result<redis::Client, StoreError> {
        let unreadable =
            |e: anyhow::Error| StoreError::unavailable(Unavailable::Config, e.to_string());
        let mut settings = redis::RedisConnectionInfo::default().set_db(self.auth.db);
        if let Some(user) = &self.auth.username {
            settings = settings.set_username(user);
        }
        if let Some(password) = &self.auth.password {
            settings = settings.set_password(password.current().map_err(unreadable)?.expose());
        }
        let addr = match &self.tls {
            None => redis::ConnectionAddr::Tcp(host.to_owned(), port),
            Some(_) => redis::ConnectionAddr::TcpTls {
                host: host.to_owned(),
                port,
                insecure: false,
                tls_params: None,
            },
        };
        let info = redis::IntoConnectionInfo::into_connection_info(addr)
            .expect("a TCP address is always valid connection info")
            .set_redis_settings(settings);
        let client = match &self.tls {
            None => redis::Client::open(info),
            Some(files) => {
                let material = files.read().map_err(unreadable)?;
                let certificates = redis::TlsCertificates {
                    client_tls: material.client.map(|(client_cert, client_key)| {
                        redis::ClientTlsConfig {
                            client_cert,
                            client_key,
                        }
                    }),
                    root_cert: material.ca,
                };
                redis::Client::build_with_tls(info, certificates)
            }
        };
        client.map_err(|e| StoreError::unavailable(Unavailable::Config, e.to_string()))
    }

    /// Opens and authenticates a connection within `budget`. Handshake failures other than bad
    /// credentials count as connect failures: no command was sent yet.
    pub(crate) async fn connect(
        &self,
        host: &str,
        port: u16,
        budget: Duration,
    ) -> Result<MultiplexedConnection, StoreError> {
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(budget))
            .set_pipeline_buffer_size(PIPELINE_BUFFER)
            // Deadlines are ours (per request), not a per-command timeout of the client.
            .set_response_timeout(None);
        self.client(host, port)?
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
}

/// Maps a client error to what it means for the caller. Messages come from the server or the
/// socket and never contain credentials.
pub(crate) fn classify(e: &RedisError) -> StoreError {
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
            (ErrorKind::Server(ServerErrorKind::Moved | ServerErrorKind::Ask), _) => {
                Unavailable::Redirect
            }
            (ErrorKind::Server(ServerErrorKind::ClusterDown | ServerErrorKind::TryAgain), _) => {
                Unavailable::ClusterDown
            }
            (_, Some("NOREPLICAS")) => Unavailable::NoReplicas,
            // maxmemory reached under noeviction: refused before it ran.
            (_, Some("OOM")) => return StoreError::Full,
            (_, Some("MISCONF")) => Unavailable::Disk,
            (ErrorKind::Server(ServerErrorKind::ResponseError), _)
                if e.detail().is_some_and(|d| d.contains("would overflow")) =>
            {
                return StoreError::Overflow;
            }
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

/// What the server's `maxmemory-policy` means for tally's promises.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EvictionPolicy {
    /// `noeviction`: a full store refuses writes; nothing is ever dropped.
    Safe,
    /// `volatile-*`: only keys with a TTL can go, which counters and messages never have; but
    /// idempotency records do, so a retried request may count again before its window ends.
    Volatile(String),
    /// `allkeys-*`: counters themselves can be evicted, losing counts silently.
    Evicting(String),
    /// The server did not say (INFO refused or without the field).
    Unknown,
}

impl EvictionPolicy {
    /// Reads the policy from the `INFO memory` text.
    pub(crate) fn from_info(info: &str) -> Self {
        let Some(policy) = info
            .lines()
            .find_map(|l| l.strip_prefix("maxmemory_policy:"))
            .map(|p| p.trim().to_owned())
        else {
            return Self::Unknown;
        };
        if policy == "noeviction" {
            Self::Safe
        } else if policy.starts_with("volatile-") {
            Self::Volatile(policy)
        } else {
            Self::Evicting(policy)
        }
    }
}

/// Checks on a new connection that the server cannot evict counters; an evicting policy fails
/// the connection (so tally answers 503 and is not ready) unless `allow` is set.
pub(crate) async fn check_eviction_policy(
    conn: &mut MultiplexedConnection,
    allow: bool,
) -> Result<(), StoreError> {
    let info: redis::RedisResult<String> = redis::cmd("INFO").arg("memory").query_async(conn).await;
    let policy = match info {
        Ok(text) => EvictionPolicy::from_info(&text),
        Err(e) => {
            let err = classify(&e);
            if !matches!(
                err,
                StoreError::Unavailable {
                    kind: Unavailable::Auth,
                    ..
                }
            ) {
                return Err(err);
            }
            // An ACL user without INFO: say so, and go on.
            EvictionPolicy::Unknown
        }
    };
    match policy {
        EvictionPolicy::Safe => Ok(()),
        EvictionPolicy::Unknown => {
            tracing::warn!("cannot read the store's maxmemory-policy (INFO memory); make sure it is noeviction");
            Ok(())
        }
        EvictionPolicy::Volatile(policy) => {
            tracing::warn!(policy, "the store's maxmemory-policy may evict idempotency records before their window ends; noeviction is safe");
            Ok(())
        }
        EvictionPolicy::Evicting(policy) if allow => {
            tracing::warn!(policy, "the store's maxmemory-policy can evict counters and lose counts; running anyway (TALLY_ALLOW_EVICTION)");
            Ok(())
        }
        EvictionPolicy::Evicting(policy) => Err(StoreError::unavailable(
            Unavailable::Config,
            format!(
                "the store's maxmemory-policy is {policy}: it can evict counters and lose counts \
                 silently. Set maxmemory-policy noeviction, or TALLY_ALLOW_EVICTION=true to run anyway"
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eviction_policies_from_info() {
        let info = |p: &str| format!("# Memory\r\nused_memory:1000\r\nmaxmemory_policy:{p}\r\n");
        assert_eq!(
            EvictionPolicy::from_info(&info("noeviction")),
            EvictionPolicy::Safe
        );
        assert_eq!(
            EvictionPolicy::from_info(&info("volatile-lru")),
            EvictionPolicy::Volatile("volatile-lru".into())
        );
        assert_eq!(
            EvictionPolicy::from_info(&info("allkeys-lfu")),
            EvictionPolicy::Evicting("allkeys-lfu".into())
        );
        assert_eq!(
            EvictionPolicy::from_info("# Memory\r\n"),
            EvictionPolicy::Unknown
        );
    }
}
