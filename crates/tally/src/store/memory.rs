//! The embedded store: counters in this process only. For trying tally out and for tests of
//! the HTTP layer; it is neither shared between replicas nor durable.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::{Idempotency, Incremented, StoreError};

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
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
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
        }
        let count = match inner.counters.get_mut(id) {
            Some(c) => {
                *c = c.checked_add(1).ok_or(StoreError::NotACounter)?;
                *c
            }
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
