//! The guestbook in this process only: for trying tally out and for tests of the HTTP layer.
//! Bounded like the counters: at most `MAX_ENTRIES` idempotency records.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use super::{Message, MessageId, Posted};
use crate::store::{Idempotency, StoreError, MAX_ENTRIES};

#[derive(Clone)]
pub struct MemoryMessages {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Default)]
struct Inner {
    /// Oldest first, at most `retention` long.
    messages: VecDeque<(MessageId, String)>,
    retention: usize,
    max_entries: usize,
    last_message: Option<MessageId>,
    /// Idempotency-Key of a post → (message id, expiry).
    posted: HashMap<String, (MessageId, Instant)>,
}

impl MemoryMessages {
    pub fn new(retention: u64) -> Self {
        Self::with_limits(retention, MAX_ENTRIES)
    }

    /// `max_entries` bounds the idempotency records.
    pub fn with_limits(retention: u64, max_entries: usize) -> Self {
        let inner = Inner {
            retention: retention.max(1) as usize,
            max_entries,
            ..Inner::default()
        };
        Self {
            inner: Arc::new(Mutex::new(inner)),
        }
    }

    pub fn post_message(
        &self,
        text: &str,
        idem: Option<Idempotency<'_>>,
    ) -> Result<Posted, StoreError> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if let Some(idem) = idem {
            inner.posted.retain(|_, (_, expires)| *expires > now);
            if let Some((id, _)) = inner.posted.get(idem.key) {
                let id = *id;
                let text = inner.text_of(id).unwrap_or(text).to_owned();
                return Ok(Posted {
                    message: Message::new(id, text),
                    replayed: true,
                });
            }
            if inner.posted.len() >= inner.max_entries {
                return Err(StoreError::Full);
            }
        }
        let id = inner.next_message_id();
        inner.messages.push_back((id, text.to_owned()));
        while inner.messages.len() > inner.retention {
            inner.messages.pop_front();
        }
        if let Some(idem) = idem {
            inner
                .posted
                .insert(idem.key.to_owned(), (id, now + idem.ttl));
        }
        Ok(Posted {
            message: Message::new(id, text),
            replayed: false,
        })
    }

    pub fn list_messages(&self, limit: usize, before: Option<MessageId>) -> Vec<Message> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let older = inner
            .messages
            .iter()
            .rev()
            .filter(|(id, _)| before.is_none_or(|b| *id < b));
        let newest = older.take(limit);
        newest
            .map(|(id, text)| Message::new(*id, text.clone()))
            .collect()
    }

    pub fn get_message(&self, id: MessageId) -> Option<Message> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.text_of(id).map(|text| Message::new(id, text))
    }
}

impl Inner {
    fn text_of(&self, id: MessageId) -> Option<&str> {
        let at = self.messages.binary_search_by_key(&id, |(i, _)| *i).ok()?;
        Some(&self.messages[at].1)
    }

    /// Like a Redis Stream id: wall-clock milliseconds, a sequence within one millisecond, and
    /// never going backwards even if the clock does.
    fn next_message_id(&mut self) -> MessageId {
        let millis = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let id = match self.last_message {
            Some(last) if last.millis >= millis => MessageId {
                millis: last.millis,
                seq: last.seq + 1,
            },
            _ => MessageId { millis, seq: 0 },
        };
        self.last_message = Some(id);
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::store::test_key as idem;

    #[test]
    fn messages_are_ordered_trimmed_and_idempotent() {
        let s = MemoryMessages::new(3);
        let ids: Vec<String> = (0..5)
            .map(|i| s.post_message(&format!("m{i}"), None).unwrap().message.id)
            .collect();
        let listed: Vec<String> = s
            .list_messages(10, None)
            .into_iter()
            .map(|m| m.text)
            .collect();
        assert_eq!(listed, ["m4", "m3", "m2"]);
        assert!(s.get_message(ids[0].parse().unwrap()).is_none());
        assert_eq!(s.get_message(ids[4].parse().unwrap()).unwrap().text, "m4");
        let first = s.post_message("once", idem("p1")).unwrap();
        let again = s.post_message("once", idem("p1")).unwrap();
        assert!(!first.replayed && again.replayed);
        assert_eq!(first.message, again.message);
        assert_eq!(s.list_messages(1, None)[0].text, "once");
        assert_eq!(s.list_messages(10, None).len(), 3);
        let newest = s.list_messages(1, None)[0].id.parse().unwrap();
        let older: Vec<String> = s
            .list_messages(10, Some(newest))
            .into_iter()
            .map(|m| m.text)
            .collect();
        assert_eq!(older, ["m4", "m3"]);
    }
}
