//! The guestbook (the seed's 3-tier message board): messages posted and listed newest first, in
//! a Redis Stream or in this process.

mod memory;
mod message;
mod redis;
mod routes;
pub mod wire;

use std::sync::Arc;
use std::time::Duration;

pub use self::memory::MemoryMessages;
pub use self::message::{Message, MessageId, Posted};
pub use self::routes::{parse_text, routes, MAX_BODY_BYTES, MAX_TEXT_CHARS};

use crate::redis::RedisClient;
use crate::store::{Idempotency, StoreError};

/// Where the messages live.
#[derive(Clone)]
pub enum Guestbook {
    Memory(MemoryMessages),
    Redis(RedisClient),
}

impl Guestbook {
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

/// What the guestbook routes need.
pub struct GuestbookApi {
    pub store: Guestbook,
    pub request_timeout: Duration,
    pub idempotency_ttl: Duration,
}

impl GuestbookApi {
    pub fn shared(self) -> Arc<Self> {
        Arc::new(self)
    }
}
