//! Configuration of `tally serve`: flags that mirror `TALLY_*` environment variables (12-factor),
//! the original Go service's variables as a fallback (drop-in replacement), secrets from files.

mod common;
mod database;
mod durability;
mod limits;
mod redis;
mod redis_url;
pub(crate) mod secret;
mod tls;

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;

pub use self::common::{positive_duration, CommonArgs, Drain, FibArgs, LogFormat, ServingArgs};
pub use self::database::{DatabaseArgs, DatabaseConfig, SslMode};
pub use self::durability::{resolve_durability, Durability, DurabilityFlag};
pub use self::limits::{Limits, ListenerArgs, ListenerLimits, RateLimit, RateLimitArgs};
pub use self::redis::{
    ClusterTarget, RedisArgs, RedisAuth, RedisTarget, SentinelTarget, StoreConfig,
};
pub use self::secret::{Credential, Secret};
pub use self::tls::{RedisTlsArgs, TlsFiles, TlsMaterial};

/// Every flag of `tally serve`; each one can also be set by the environment variable it names.
#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    #[command(flatten)]
    pub redis: RedisArgs,

    /// Address of the public listener (counters, API). Falls back to `PORT` (binds 0.0.0.0:$PORT).
    /// [default: 0.0.0.0:8080]
    #[arg(long, env = "TALLY_LISTEN")]
    pub listen: Option<SocketAddr>,

    /// Address of the admin listener: /healthz, /readyz, /metrics. Kept off the id space.
    #[arg(long, env = "TALLY_ADMIN_LISTEN", default_value = "0.0.0.0:8081")]
    pub admin_listen: SocketAddr,

    /// Prefix of counter keys in Redis. An empty prefix stores counters under the raw id, as the
    /// original service did: only for migrating its data, since any key becomes a counter.
    #[arg(long, env = "TALLY_KEY_PREFIX", default_value = "count:")]
    pub key_prefix: String,

    /// Redis Stream holding the guestbook messages. [default: <TALLY_KEY_NAMESPACE>:messages]
    #[arg(long, env = "TALLY_MESSAGES_KEY")]
    pub messages_key: Option<String>,

    /// Guestbook messages kept; older ones are trimmed (at least this many stay).
    #[arg(long, env = "TALLY_MESSAGE_RETENTION", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub message_retention: u64,

    /// Without Redis: how many counters (and idempotency records) the memory store holds before
    /// it refuses new ones with 507, as a Redis at maxmemory would. (The default is also
    /// `store::MAX_ENTRIES`, which config, a leaf module, may not import.)
    #[arg(long, env = "TALLY_MEMORY_MAX_ENTRIES", default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub memory_max_entries: u64,

    #[command(flatten)]
    pub database: DatabaseArgs,

    /// How long an Idempotency-Key is remembered.
    #[arg(long, env = "TALLY_IDEMPOTENCY_TTL", default_value = "10m", value_parser = humantime::parse_duration)]
    pub idempotency_ttl: Duration,

    #[command(flatten)]
    pub common: CommonArgs,

    #[command(flatten)]
    pub serving: ServingArgs,

    #[command(flatten)]
    pub fib: FibArgs,
}

/// The resolved configuration the server runs with.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub store: StoreConfig,
    pub durability: Durability,
    pub key_namespace: String,
    pub key_prefix: String,
    pub messages_key: Option<String>,
    pub message_retention: u64,
    pub memory_max_entries: usize,
    pub database: Option<DatabaseConfig>,
    pub fib_max_index: u32,
    pub request_timeout: Duration,
    pub idempotency_ttl: Duration,
    pub readiness_interval: Duration,
    pub drain: Drain,
    pub limits: ListenerLimits,
    pub rate_limit: Option<RateLimit>,
}

impl ServeConfig {
    /// Resolves flags, `TALLY_*` variables (already folded in by clap) and the legacy variables,
    /// read through `env` so tests need not touch the process environment.
    pub fn resolve(args: &ServeArgs, env: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let listen = match (args.listen, env("PORT")) {
            (Some(addr), _) => addr,
            (None, Some(port)) => {
                let port: u16 = port
                    .trim()
                    .parse()
                    .map_err(|_| anyhow::anyhow!("PORT must be a port number, got {port:?}"))?;
                SocketAddr::from(([0, 0, 0, 0], port))
            }
            (None, None) => SocketAddr::from(([0, 0, 0, 0], 8080)),
        };
        let admin_listen = args.admin_listen;
        if listen == admin_listen && listen.port() != 0 {
            anyhow::bail!("the listener and the admin listener cannot share {listen}");
        }
        if args.idempotency_ttl < Duration::from_secs(1) {
            anyhow::bail!("TALLY_IDEMPOTENCY_TTL must be at least 1s");
        }
        let store = StoreConfig::resolve(&args.redis, env)?;
        let request_timeout = args.common.request_timeout;
        let durability = resolve_durability(&args.redis, &store, request_timeout)?;
        if matches!(store, StoreConfig::Cluster(_)) && args.key_prefix.contains(['{', '}']) {
            // Counter keys carry the id as their hash tag; a brace in the prefix would move it.
            anyhow::bail!("TALLY_KEY_PREFIX must not contain braces in Cluster mode");
        }
        Ok(Self {
            listen,
            admin_listen,
            store,
            durability,
            key_namespace: args.redis.key_namespace.clone(),
            key_prefix: args.key_prefix.clone(),
            messages_key: args.messages_key.clone(),
            message_retention: args.message_retention,
            memory_max_entries: usize::try_from(args.memory_max_entries).unwrap_or(usize::MAX),
            database: args.database.resolve()?,
            fib_max_index: args.fib.fib_max_index,
            request_timeout,
            idempotency_ttl: args.idempotency_ttl,
            readiness_interval: args.serving.readiness_interval,
            drain: args.serving.drain,
            limits: args.common.listener.limits(request_timeout)?,
            rate_limit: args.serving.rate_limit.resolve()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn parse(flags: &[&str]) -> ServeArgs {
        let mut argv = vec!["tally"];
        argv.extend_from_slice(flags);
        Cli::try_parse_from(argv).unwrap().serve
    }

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn defaults_are_memory_store_on_8080_and_8081() {
        let cfg = ServeConfig::resolve(&parse(&[]), &env_of(&[])).unwrap();
        assert_eq!(cfg.listen, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(cfg.admin_listen, "0.0.0.0:8081".parse().unwrap());
        assert!(matches!(cfg.store, StoreConfig::Memory));
        assert_eq!(cfg.key_prefix, "count:");
        assert_eq!(cfg.request_timeout, Duration::from_secs(2));
    }

    #[test]
    fn legacy_port_is_used_only_without_tally_listen() {
        let cfg = ServeConfig::resolve(&parse(&[]), &env_of(&[("PORT", "9000")])).unwrap();
        assert_eq!(cfg.listen.port(), 9000);
        let cfg = ServeConfig::resolve(
            &parse(&["--listen", "127.0.0.1:7000"]),
            &env_of(&[("PORT", "9000")]),
        )
        .unwrap();
        assert_eq!(cfg.listen.port(), 7000);
        let err = ServeConfig::resolve(&parse(&[]), &env_of(&[("PORT", "http")])).unwrap_err();
        assert!(err.to_string().contains("PORT"), "{err}");
    }

    #[test]
    fn durations_parse_as_humantime() {
        let args = parse(&["--request-timeout", "250ms", "--shutdown-delay", "0s"]);
        let cfg = ServeConfig::resolve(&args, &env_of(&[])).unwrap();
        assert_eq!(cfg.request_timeout, Duration::from_millis(250));
        assert_eq!(cfg.drain.delay, Duration::ZERO);
        assert!(parse_err(&["--request-timeout", "0s"]));
    }

    #[test]
    fn durability_defaults_to_replicated_only_with_sentinels() {
        let none = &env_of(&[]);
        let cfg = ServeConfig::resolve(&parse(&["--redis-url", "redis://h"]), none).unwrap();
        assert_eq!(cfg.durability, Durability::Async);
        let cfg = ServeConfig::resolve(&parse(&["--redis-sentinels", "s:1"]), none).unwrap();
        assert_eq!(
            cfg.durability,
            Durability::Replicated {
                replicas: 1,
                timeout: Duration::from_secs(1)
            }
        );
        let explicit = parse(&["--redis-sentinels", "s:1", "--durability", "async"]);
        assert_eq!(
            ServeConfig::resolve(&explicit, none).unwrap().durability,
            Durability::Async
        );
        assert!(ServeConfig::resolve(&parse(&["--durability", "replicated"]), none).is_err());
        let slow = parse(&[
            "--redis-url",
            "redis://h",
            "--durability",
            "replicated",
            "--wait-timeout",
            "3s",
        ]);
        assert!(ServeConfig::resolve(&slow, none).is_err());
        assert!(parse_err(&["--wait-replicas", "0"]));
        // A cluster fails over to replicas too: replicated by default.
        let cfg = ServeConfig::resolve(&parse(&["--redis-cluster", "n:1"]), none).unwrap();
        assert!(matches!(cfg.durability, Durability::Replicated { .. }));
    }

    #[test]
    fn cluster_mode_refuses_a_counter_prefix_with_braces() {
        let none = &env_of(&[]);
        let braced = parse(&["--redis-cluster", "n:1", "--key-prefix", "c{x}:"]);
        let err = ServeConfig::resolve(&braced, none).unwrap_err();
        assert!(err.to_string().contains("braces"), "{err}");
        let plain = parse(&["--redis-cluster", "n:1", "--key-prefix", "c:"]);
        assert!(ServeConfig::resolve(&plain, none).is_ok());
        // Elsewhere a brace in the prefix changes nothing.
        let standalone = parse(&["--redis-url", "redis://h", "--key-prefix", "c{x}:"]);
        assert!(ServeConfig::resolve(&standalone, none).is_ok());
    }

    fn parse_err(flags: &[&str]) -> bool {
        let mut argv = vec!["tally"];
        argv.extend_from_slice(flags);
        Cli::try_parse_from(argv).is_err()
    }

    #[test]
    fn listeners_must_differ() {
        let args = parse(&["--listen", "0.0.0.0:9000", "--admin-listen", "0.0.0.0:9000"]);
        assert!(ServeConfig::resolve(&args, &env_of(&[])).is_err());
    }
}
