//! Which store to use and how to reach it: memory, standalone Redis, or Redis behind Sentinel.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::durability::DurabilityFlag;
use super::secret::{credential_from, Credential, Secret};
use super::tls::{RedisTlsArgs, TlsFiles};

/// How to reach Redis and how durable writes must be; shared by `serve` and `worker`.
#[derive(Args, Debug, Clone)]
pub struct RedisArgs {
    /// Standalone Redis: redis://[user:pass@]host:port/db, or rediss:// for TLS.
    /// Falls back to REDIS_HOST / REDIS_PORT / REDIS_DB. With neither this nor sentinels set,
    /// tally uses an in-process memory store (not shared, not durable).
    #[arg(long, env = "TALLY_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,

    /// Sentinel mode: comma-separated host:port list of Redis Sentinels.
    #[arg(long, env = "TALLY_REDIS_SENTINELS", value_delimiter = ',')]
    pub redis_sentinels: Vec<String>,

    /// Redis Cluster mode: comma-separated host:port list of seed nodes (any nodes of the
    /// cluster; tally reads the slot map from them and follows it).
    #[arg(long, env = "TALLY_REDIS_CLUSTER", value_delimiter = ',')]
    pub redis_cluster: Vec<String>,

    /// Cluster mode: connect to the nodes with TLS (as TALLY_REDIS_TLS does).
    #[arg(long, env = "TALLY_REDIS_CLUSTER_TLS")]
    pub redis_cluster_tls: bool,

    #[command(flatten)]
    pub tls: RedisTlsArgs,

    /// The master name the sentinels monitor.
    #[arg(long, env = "TALLY_REDIS_MASTER_NAME", default_value = "mymaster")]
    pub redis_master_name: String,

    /// Redis database number in Sentinel mode (standalone takes it from the URL path).
    #[arg(long, env = "TALLY_REDIS_DB")]
    pub redis_db: Option<i64>,

    /// Redis ACL user name (Redis 6+). Overrides a user name in the URL.
    #[arg(long, env = "TALLY_REDIS_USERNAME")]
    pub redis_username: Option<String>,

    /// Redis password. Prefer --redis-password-file. Overrides a password in the URL;
    /// falls back to REDIS_PASSWORD.
    #[arg(long, env = "TALLY_REDIS_PASSWORD", hide_env_values = true)]
    pub redis_password: Option<String>,

    /// File holding the Redis password (a mounted Kubernetes Secret); read again for every new
    /// connection, so a rotated password needs no restart.
    #[arg(long, env = "TALLY_REDIS_PASSWORD_FILE")]
    pub redis_password_file: Option<PathBuf>,

    /// ACL user name for the sentinels, when they require one.
    #[arg(long, env = "TALLY_SENTINEL_USERNAME")]
    pub sentinel_username: Option<String>,

    /// Password of the sentinels (their `requirepass`).
    #[arg(long, env = "TALLY_SENTINEL_PASSWORD", hide_env_values = true)]
    pub sentinel_password: Option<String>,

    /// File holding the sentinels' password; read again for every new connection.
    #[arg(long, env = "TALLY_SENTINEL_PASSWORD_FILE")]
    pub sentinel_password_file: Option<PathBuf>,

    /// When an increment is acknowledged: `replicated` waits (WAIT) until --wait-replicas
    /// replicas have it, so a failover cannot discard it; `async` answers at once.
    /// [default: replicated in Sentinel and Cluster mode, async otherwise]
    #[arg(long, env = "TALLY_DURABILITY")]
    pub durability: Option<DurabilityFlag>,

    /// Namespace of every Redis key but counters (messages, jobs, idempotency records): two
    /// releases sharing one Redis set different namespaces (and counter prefixes).
    #[arg(long, env = "TALLY_KEY_NAMESPACE", default_value = "tally", value_parser = key_namespace)]
    pub key_namespace: String,

    /// Replicas that must confirm an increment under `replicated` durability.
    #[arg(long, env = "TALLY_WAIT_REPLICAS", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub wait_replicas: u32,

    /// How long WAIT may take before the increment is answered with 503.
    #[arg(long, env = "TALLY_WAIT_TIMEOUT", default_value = "1s", value_parser = humantime::parse_duration)]
    pub wait_timeout: Duration,

    /// Run even when Redis's maxmemory-policy can evict keys (allkeys-*), which loses counts
    /// silently. Without it tally refuses such a store: 503, and /readyz not ready.
    #[arg(long, env = "TALLY_ALLOW_EVICTION")]
    pub allow_eviction: bool,
}

#[derive(Debug, Clone)]
pub enum StoreConfig {
    /// In-process counters: not shared between replicas, lost on restart.
    Memory,
    Redis(RedisTarget),
    Sentinel(SentinelTarget),
    Cluster(ClusterTarget),
}

/// Credentials and database shared by the standalone and Sentinel modes.
#[derive(Debug, Clone, Default)]
pub struct RedisAuth {
    pub username: Option<String>,
    pub password: Option<Credential>,
    pub db: i64,
}

/// A standalone Redis server, parsed from `redis://` or `rediss://`.
#[derive(Debug, Clone)]
pub struct RedisTarget {
    pub host: String,
    pub port: u16,
    /// TLS (rediss://), with the CA and client certificate files.
    pub tls: Option<TlsFiles>,
    pub auth: RedisAuth,
    /// Accept a server whose maxmemory-policy can evict counters.
    pub allow_eviction: bool,
}

#[derive(Debug, Clone)]
pub struct SentinelTarget {
    pub sentinels: Vec<(String, u16)>,
    pub master_name: String,
    pub sentinel_username: Option<String>,
    pub sentinel_password: Option<Credential>,
    /// TLS to the sentinels.
    pub sentinel_tls: Option<TlsFiles>,
    /// TLS to the Redis nodes the sentinels name.
    pub tls: Option<TlsFiles>,
    pub auth: RedisAuth,
    /// Accept a master whose maxmemory-policy can evict counters.
    pub allow_eviction: bool,
}

/// A Redis Cluster, found through its seed nodes.
#[derive(Debug, Clone)]
pub struct ClusterTarget {
    pub nodes: Vec<(String, u16)>,
    pub tls: Option<TlsFiles>,
    /// Credentials; a cluster has database 0 only.
    pub auth: RedisAuth,
    /// Accept masters whose maxmemory-policy can evict counters.
    pub allow_eviction: bool,
}

impl StoreConfig {
    pub fn resolve(args: &RedisArgs, env: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let password = credential_from(
            args.redis_password.as_deref(),
            args.redis_password_file.as_deref(),
            "TALLY_REDIS_PASSWORD",
        )?
        .or_else(|| {
            env("REDIS_PASSWORD")
                .filter(|p| !p.is_empty())
                .map(|p| Credential::Inline(Secret::new(p)))
        });
        let username = args.redis_username.clone().filter(|u| !u.is_empty());

        if !args.redis_cluster.is_empty() {
            if args.redis_url.is_some() || !args.redis_sentinels.is_empty() {
                anyhow::bail!(
                    "set one of TALLY_REDIS_URL, TALLY_REDIS_SENTINELS and TALLY_REDIS_CLUSTER"
                );
            }
            if args.redis_db.is_some_and(|db| db != 0) {
                anyhow::bail!("Redis Cluster has database 0 only; unset TALLY_REDIS_DB");
            }
            let nodes = args
                .redis_cluster
                .iter()
                .map(|s| parse_host_port(s, 6379))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let tls = args.redis_cluster_tls || args.tls.redis_tls;
            if args.tls.sentinel_tls {
                anyhow::bail!("TALLY_SENTINEL_TLS is for Sentinel mode, not Cluster mode");
            }
            return Ok(Self::Cluster(ClusterTarget {
                nodes,
                tls: args.tls.files(tls)?,
                auth: RedisAuth {
                    username,
                    password,
                    db: 0,
                },
                allow_eviction: args.allow_eviction,
            }));
        }

        if !args.redis_sentinels.is_empty() {
            if args.redis_url.is_some() {
                anyhow::bail!("set either TALLY_REDIS_URL or TALLY_REDIS_SENTINELS, not both");
            }
            let sentinels = args
                .redis_sentinels
                .iter()
                .map(|s| parse_host_port(s, 26379))
                .collect::<anyhow::Result<Vec<_>>>()?;
            if args.redis_master_name.trim().is_empty() {
                anyhow::bail!("TALLY_REDIS_MASTER_NAME must not be empty");
            }
            return Ok(Self::Sentinel(SentinelTarget {
                sentinels,
                master_name: args.redis_master_name.clone(),
                sentinel_username: args.sentinel_username.clone().filter(|u| !u.is_empty()),
                sentinel_password: credential_from(
                    args.sentinel_password.as_deref(),
                    args.sentinel_password_file.as_deref(),
                    "TALLY_SENTINEL_PASSWORD",
                )?,
                sentinel_tls: args.tls.files(args.tls.sentinel_tls)?,
                tls: args.tls.files(args.tls.redis_tls)?,
                auth: RedisAuth {
                    username,
                    password,
                    db: db_or_legacy(args.redis_db, env)?,
                },
                allow_eviction: args.allow_eviction,
            }));
        }

        if args.redis_cluster_tls || args.tls.sentinel_tls {
            anyhow::bail!(
                "TALLY_REDIS_CLUSTER_TLS and TALLY_SENTINEL_TLS need Cluster or Sentinel mode"
            );
        }
        if let Some(url) = &args.redis_url {
            let mut target = RedisTarget::parse_url(url)?;
            if args.tls.redis_tls && target.tls.is_none() {
                anyhow::bail!("TALLY_REDIS_TLS with a redis:// URL: use rediss:// for TLS");
            }
            target.tls = args.tls.files(target.tls.is_some())?;
            if username.is_some() {
                target.auth.username = username;
            }
            if password.is_some() {
                target.auth.password = password;
            }
            target.allow_eviction = args.allow_eviction;
            return Ok(Self::Redis(target));
        }

        // The original service's variables, so tally replaces it without new configuration.
        if let Some(host) = env("REDIS_HOST").filter(|h| !h.is_empty()) {
            let port = match env("REDIS_PORT") {
                Some(p) => p
                    .trim()
                    .parse()
                    .map_err(|_| anyhow::anyhow!("REDIS_PORT must be a port number, got {p:?}"))?,
                None => 6379,
            };
            return Ok(Self::Redis(RedisTarget {
                host,
                port,
                tls: args.tls.files(args.tls.redis_tls)?,
                auth: RedisAuth {
                    username,
                    password,
                    db: db_or_legacy(args.redis_db, env)?,
                },
                allow_eviction: args.allow_eviction,
            }));
        }
        Ok(Self::Memory)
    }
}

fn db_or_legacy(flag: Option<i64>, env: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<i64> {
    let db = match (flag, env("REDIS_DB")) {
        (Some(db), _) => db,
        (None, Some(db)) => db
            .trim()
            .parse()
            .map_err(|_| anyhow::anyhow!("REDIS_DB must be a number, got {db:?}"))?,
        (None, None) => 0,
    };
    if db < 0 {
        anyhow::bail!("the Redis database number must not be negative");
    }
    Ok(db)
}

fn parse_host_port(s: &str, default_port: u16) -> anyhow::Result<(String, u16)> {
    let s = s.trim();
    // Bracketed IPv6 literal: [::1]:26379
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (host, tail) = rest
            .split_once(']')
            .ok_or_else(|| anyhow::anyhow!("bad sentinel address {s:?}"))?;
        (host, tail.strip_prefix(':'))
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    if host.is_empty() {
        anyhow::bail!("bad sentinel address {s:?}: empty host");
    }
    let port = match port {
        Some(p) => p
            .parse()
            .map_err(|_| anyhow::anyhow!("bad sentinel address {s:?}: port must be a number"))?,
        None => default_port,
    };
    Ok((host.to_owned(), port))
}

/// A namespace is part of every key: non-empty, and no braces, so it can never form a Redis
/// Cluster hash tag by accident.
fn key_namespace(text: &str) -> Result<String, String> {
    let valid = !text.is_empty()
        && text.len() <= 64
        && text
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'{' && b != b'}');
    if valid {
        Ok(text.to_owned())
    } else {
        Err("must be 1-64 visible ASCII characters without braces".into())
    }
}

#[cfg(test)]
#[path = "redis_tests.rs"]
mod tests;
