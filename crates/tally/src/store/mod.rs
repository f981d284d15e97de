//! Where counters and guestbook messages live. One interface, three backends: an in-process
//! map, a standalone Redis, and Redis behind Sentinel. Every backend writes atomically and never
//! applies one write twice: an ambiguous failure (the command may or may not have run) is
//! reported as unavailable, never retried blindly.

mod error;
mod memory;
mod message;
mod redis;
mod replication;
mod sentinel;

use std::time::Duration;

pub use self::error::{StoreError, Unavailable};
pub use self::memory::MemoryStore;
pub use self::message::{Message, MessageId, Posted};
pub use self::redis::{FibStatus, Job, RedisStore};
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

/// How data is laid out in Redis.
#[derive(Debug, Clone)]
pub struct KeySpace {
    counter_prefix: String,
    /// The stream holding guestbook messages.
    pub messages: String,
    /// Messages kept (approximately: trimming is `MAXLEN ~`, which keeps at least this many).
    pub message_retention: u64,
}

impl KeySpace {
    pub fn new(counter_prefix: impl Into<String>) -> Self {
        Self {
            counter_prefix: counter_prefix.into(),
            messages: "tally:messages".into(),
            message_retention: 10_000,
        }
    }

    pub fn with_messages(self, stream: String, retention: u64) -> Self {
        Self {
            messages: stream,
            message_retention: retention,
            ..self
        }
    }

    pub fn counter(&self, id: &str) -> String {
        let mut key = String::with_capacity(self.counter_prefix.len() + id.len());
        key.push_str(&self.counter_prefix);
        key.push_str(id);
        key
    }

    /// Idempotency records live apart from counters and messages, one namespace per operation,
    /// so a key can never answer for another kind of request.
    pub fn idempotency(&self, operation: &str, key: &str) -> String {
        format!("tally:idem:{operation}:{key}")
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
            StoreConfig::Memory => {
                Self::Memory(MemoryStore::with_retention(keys.message_retention))
            }
            StoreConfig::Redis(target) => {
                Self::Redis(RedisStore::standalone(target, keys, durability))
            }
            StoreConfig::Sentinel(target) => {
                Self::Redis(RedisStore::sentinel(target, keys, durability))
            }
        }
    }

    /// The Redis backend, for what only Redis offers (the job queue).
    pub fn redis(&self) -> Option<&RedisStore> {
        match self {
            Self::Memory(_) => None,
            Self::Redis(r) => Some(r),
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

/// Guestbook messages.
impl Store {
    /// Appends a message; the store assigns its id, so concurrent posts never collide.
    pub async fn post_message(
        &self,
        text: &str,
        idem: Option<Idempotency<'_>>,
        deadline: Duration,
    ) -> Result<Posted, StoreError> {
        match self {
            Self::Memory(m) => m.post_message(text, idem),
            Self::Redis(r) => r.post_message(text, idem, deadline).await,
        }
    }

    /// The newest `limit` messages older than `before` (all, without it), newest first.
    pub async fn list_messages(
        &self,
        limit: usize,
        before: Option<MessageId>,
        deadline: Duration,
    ) -> Result<Vec<Message>, StoreError> {
        match self {
            Self::Memory(m) => Ok(m.list_messages(limit, before)),
            Self::Redis(r) => r.list_messages(limit, before, deadline).await,
        }
    }

    pub async fn get_message(
        &self,
        id: MessageId,
        deadline: Duration,
    ) -> Result<Option<Message>, StoreError> {
        match self {
            Self::Memory(m) => Ok(m.get_message(id)),
            Self::Redis(r) => r.get_message(id, deadline).await,
        }
    }
}
