//! Where counters live. One interface, three backends: an in-process map, a standalone Redis,
//! and Redis behind Sentinel. Every backend increments atomically and never applies one
//! increment twice: an ambiguous failure (the command may or may not have run) is reported as
//! unavailable, never retried blindly.

mod error;
mod memory;
mod redis;
mod replication;
mod sentinel;

use std::time::Duration;

pub use self::error::{StoreError, Unavailable};
pub use self::memory::MemoryStore;
pub use self::redis::RedisStore;
pub use self::replication::Durability;

use crate::config::StoreConfig;

/// Result of an increment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Incremented {
    /// The counter's value after this increment.
    pub count: i64,
    /// True when an earlier request with the same Idempotency-Key already did the increment
    /// and this is its answer.
    pub replayed: bool,
}

/// An Idempotency-Key: the same key within the window returns the first answer.
#[derive(Debug, Clone, Copy)]
pub struct Idempotency<'a> {
    pub key: &'a str,
    pub ttl: Duration,
}

/// How keys are named in Redis.
#[derive(Debug, Clone)]
pub struct KeySpace {
    counter_prefix: String,
}

impl KeySpace {
    pub fn new(counter_prefix: impl Into<String>) -> Self {
        Self {
            counter_prefix: counter_prefix.into(),
        }
    }

    pub fn counter(&self, id: &str) -> String {
        format!("{}{id}", self.counter_prefix)
    }

    /// Idempotency records live apart from counters so they never collide with an id.
    pub fn idempotency(&self, key: &str) -> String {
        format!("tally:idem:{key}")
    }
}

#[derive(Clone)]
pub enum Store {
    Memory(MemoryStore),
    Redis(RedisStore),
}

impl Store {
    /// Builds the store named by the configuration. Connecting is lazy: a Redis that is down
    /// at startup makes requests answer 503 until it is back, rather than the process exit.
    /// Must be called inside a Tokio runtime (Sentinel mode starts background tasks).
    pub fn from_config(config: &StoreConfig, keys: KeySpace, durability: Durability) -> Self {
        match config {
            StoreConfig::Memory => Self::Memory(MemoryStore::new()),
            StoreConfig::Redis(target) => {
                Self::Redis(RedisStore::standalone(target, keys, durability))
            }
            StoreConfig::Sentinel(target) => {
                Self::Redis(RedisStore::sentinel(target, keys, durability))
            }
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Self::Memory(_) => "memory",
            Self::Redis(r) => r.kind(),
        }
    }

    /// Atomically adds one to the counter `id` and returns the new value, all within `deadline`.
    pub async fn incr(
        &self,
        id: &str,
        idem: Option<Idempotency<'_>>,
        deadline: Duration,
    ) -> Result<Incremented, StoreError> {
        match self {
            Self::Memory(m) => m.incr(id, idem),
            Self::Redis(r) => r.incr(id, idem, deadline).await,
        }
    }

    /// The counter's current value; 0 when it was never incremented.
    pub async fn get(&self, id: &str, deadline: Duration) -> Result<i64, StoreError> {
        match self {
            Self::Memory(m) => Ok(m.get(id)),
            Self::Redis(r) => r.get(id, deadline).await,
        }
    }

    /// A cheap round trip used by readiness.
    pub async fn ping(&self, deadline: Duration) -> Result<(), StoreError> {
        match self {
            Self::Memory(_) => Ok(()),
            Self::Redis(r) => r.ping(deadline).await,
        }
    }
}
