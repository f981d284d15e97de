//! How writes are acknowledged: the flag (`TALLY_DURABILITY`) and what it resolves to.

use std::time::Duration;

use clap::ValueEnum;

use super::redis::{RedisArgs, StoreConfig};

/// The value of `TALLY_DURABILITY`; with the WAIT flags it resolves to a [`Durability`].
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum DurabilityFlag {
    Replicated,
    Async,
}

/// How increments are acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// At once, when the master has applied the increment. A failover can lose it.
    Async,
    /// After `replicas` replicas confirmed it, waiting at most `timeout`.
    Replicated { replicas: u32, timeout: Duration },
}

pub fn resolve_durability(
    args: &RedisArgs,
    store: &StoreConfig,
    request_timeout: Duration,
) -> anyhow::Result<Durability> {
    // Both fail over to a replica, which may not have an increment acknowledged at once.
    let sentinel = matches!(store, StoreConfig::Sentinel(_) | StoreConfig::Cluster(_));
    let mode = args.durability.unwrap_or(if sentinel {
        DurabilityFlag::Replicated
    } else {
        DurabilityFlag::Async
    });
    match mode {
        DurabilityFlag::Async => Ok(Durability::Async),
        DurabilityFlag::Replicated if matches!(store, StoreConfig::Memory) => {
            anyhow::bail!("TALLY_DURABILITY=replicated needs Redis (TALLY_REDIS_URL or TALLY_REDIS_SENTINELS)")
        }
        DurabilityFlag::Replicated => {
            if args.wait_timeout.is_zero() || args.wait_timeout >= request_timeout {
                anyhow::bail!(
                    "TALLY_WAIT_TIMEOUT must be above zero and below TALLY_REQUEST_TIMEOUT"
                );
            }
            Ok(Durability::Replicated {
                replicas: args.wait_replicas,
                timeout: args.wait_timeout,
            })
        }
    }
}
