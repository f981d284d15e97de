//! Counters: `GET /{id}` increments and returns a per-id count, exactly once per request, on the
//! memory store or on Redis (standalone or behind Sentinel). An ambiguous failure (the command
//! may or may not have run) is reported as unavailable, never retried blindly.

mod combine;
mod id;
mod memory;
mod redis;
mod routes;

use std::sync::Arc;
use std::time::Duration;

pub use self::id::{CounterId, InvalidId, MAX_ID_BYTES};
pub use self::memory::MemoryCounters;
pub use self::redis::RedisCounters;
pub use self::routes::routes;

use crate::store::{Idempotency, StoreError};

/// Result of an increment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Incremented {
    /// The counter's value after this increment.
    pub count: i64,
    /// True when an earlier request with the same Idempotency-Key already did the increment
    /// and this is its answer.
    pub replayed: bool,
}

/// Where the counters live.
#[derive(Clone)]
pub enum Counters {
    Memory(MemoryCounters),
    Redis(RedisCounters),
}

impl Counters {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Memory(_) => "memory",
            Self::Redis(r) => r.kind(),
        }
    }

    /// Atomically adds one to the counter `id` and returns the new value, all within `deadline`.
    pub async fn incr(
        &self,
        id: &CounterId,
        idem: Option<Idempotency<'_>>,
        deadline: Duration,
    ) -> Result<Incremented, StoreError> {
        match self {
            Self::Memory(m) => m.incr(id.as_str(), idem),
            Self::Redis(r) => r.incr(id.as_str(), idem, deadline).await,
        }
    }

    /// The counter's current value; 0 when it was never incremented.
    pub async fn get(&self, id: &CounterId, deadline: Duration) -> Result<i64, StoreError> {
        match self {
            Self::Memory(m) => Ok(m.get(id.as_str())),
            Self::Redis(r) => r.get(id.as_str(), deadline).await,
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

/// What the counter routes need. Behind one `Arc`: axum clones the state for every request,
/// and one reference count is cheaper than cloning each field (bench/README.md).
pub struct CountersApi {
    pub store: Counters,
    pub request_timeout: Duration,
    pub idempotency_ttl: Duration,
}

impl CountersApi {
    pub fn shared(self) -> Arc<Self> {
        Arc::new(self)
    }
}
