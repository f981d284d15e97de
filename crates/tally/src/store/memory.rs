//! The embedded store: counters in this process only. For trying tally out and for tests of
//! the HTTP layer; it is neither shared between replicas nor durable. Bounded like a Redis with
//! `maxmemory`: past `MAX_ENTRIES` counters (or idempotency records) new ones are refused as
//! `Full` while existing counters keep counting.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use super::{Idempotency, Incremented, Message, MessageId, Posted, StoreError};

/// Counters, and idempotency records of each kind, the store holds at most: about 30 MB of
/// counters and 60 MB of records at the longest ids and keys, far more than trying tally out
/// needs.
pub const MAX_ENTRIES: usize = 100_000;

#[derive(Clone, Default)]
pub struct MemoryStore {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Default)]
struct Inner {
    counters: HashMap<String, i64>,
    /// Idempotency-Key → (id, first answer, expiry).
    replies: HashMap<String, (String, i64, Instant)>,
    /// When expired replies were last swept, so the sweep costs O(1) amortised per request.
    next_sweep: Option<Instant>,
    /// Oldest first, at most `retention` long.
    messages: VecDeque<(MessageId, String)>,
    retention: usize,
    max_entries: usize,
    last_message: Option<MessageId>,
    /// Idempotency-Key of a post → (message id, expiry).
    posted: HashMap<String, (MessageId, Instant)>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::with_retention(10_000)
    }

    pub fn with_retention(retention: u64) -> Self {
        Self::with_limits(retention, MAX_ENTRIES)
    }

    /// `max_entries` bounds the counters and each kind of idempotency record.
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

    pub fn incr(&self, id: &str, idem: Option<Idempotency<'_>>) -> Result<Incremented, StoreError> {
        // One lock around the counter and its reply record keeps the pair atomic.
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if let Some(idem) = idem {
            inner.sweep(now, idem.ttl);
            if let Some((first_id, count, expires)) = inner.replies.get(idem.key) {
                if *expires > now {
                    if first_id != id {
                        return Err(StoreError::IdempotencyConflict);
                    }
                    return Ok(Incremented {
                        count: *count,
                        replayed: true,
                    });
                }
            }
            if inner.replies.len() >= inner.max_entries {
                return Err(StoreError::Full);
            }
        }
        let counters_full = inner.counters.len() >= inner.max_entries;
        let count = match inner.counters.get_mut(id) {
            Some(c) => {
                *c = c.checked_add(1).ok_or(StoreError::Overflow)?;
                *c
            }
            None if counters_full => return Err(StoreError::Full),
            None => {
                inner.counters.insert(id.to_owned(), 1);
                1
            }
        };
        if let Some(idem) = idem {
            inner
                .replies
                .insert(idem.key.to_owned(), (id.to_owned(), count, now + idem.ttl));
        }
        Ok(Incremented {
            count,
            replayed: false,
        })
    }

    pub fn get(&self, id: &str) -> i64 {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.counters.get(id).copied().unwrap_or(0)
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
    fn sweep(&mut self, now: Instant, ttl: std::time::Duration) {
        if self.next_sweep.is_some_and(|t| t > now) {
            return;
        }
        self.replies.retain(|_, (_, _, expires)| *expires > now);
        // Sweeping every tenth of the window bounds stale entries to ~110% of the window.
        self.next_sweep = Some(now + ttl / 10);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn idem(key: &str) -> Option<Idempotency<'_>> {
        Some(Idempotency {
            key,
            ttl: Duration::from_secs(60),
        })
    }

    #[test]
    fn counts_up_per_id() {
        let s = MemoryStore::new();
        assert_eq!(s.incr("a", None).unwrap().count, 1);
        assert_eq!(s.incr("a", None).unwrap().count, 2);
        assert_eq!(s.incr("b", None).unwrap().count, 1);
        assert_eq!(s.get("a"), 2);
        assert_eq!(s.get("zzz"), 0);
    }

    #[test]
    fn idempotency_key_replays_and_rejects_other_ids() {
        let s = MemoryStore::new();
        let first = s.incr("a", idem("k1")).unwrap();
        let again = s.incr("a", idem("k1")).unwrap();
        assert_eq!((first.count, first.replayed), (1, false));
        assert_eq!((again.count, again.replayed), (1, true));
        assert_eq!(s.get("a"), 1);
        assert!(matches!(
            s.incr("b", idem("k1")),
            Err(StoreError::IdempotencyConflict)
        ));
    }

    #[test]
    fn messages_are_ordered_trimmed_and_idempotent() {
        let s = MemoryStore::with_retention(3);
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

    #[test]
    fn full_refuses_new_ids_and_keys_but_existing_counters_count_and_overflow_is_its_own_error() {
        let s = MemoryStore::with_limits(10, 2);
        s.incr("a", None).unwrap();
        s.incr("b", idem("k1")).unwrap();
        assert!(matches!(s.incr("c", None), Err(StoreError::Full)));
        assert_eq!(s.incr("a", None).unwrap().count, 2);
        s.incr("a", idem("k2")).unwrap();
        assert!(matches!(s.incr("a", idem("k3")), Err(StoreError::Full)));
        assert_eq!(s.get("a"), 3);
        s.inner
            .lock()
            .unwrap()
            .counters
            .insert("max".into(), i64::MAX);
        s.inner.lock().unwrap().counters.remove("b");
        assert!(matches!(s.incr("max", None), Err(StoreError::Overflow)));
        assert_eq!(s.get("max"), i64::MAX);
    }

    #[test]
    fn expired_keys_increment_again() {
        let s = MemoryStore::new();
        let short = Some(Idempotency {
            key: "k",
            ttl: Duration::from_millis(20),
        });
        s.incr("a", short).unwrap();
        std::thread::sleep(Duration::from_millis(40));
        let again = s.incr("a", short).unwrap();
        assert_eq!((again.count, again.replayed), (2, false));
    }
}
