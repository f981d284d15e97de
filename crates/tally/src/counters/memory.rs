//! Counters in this process only: for trying tally out and for tests of the HTTP layer; neither
//! shared between replicas nor durable. Bounded like a Redis with `maxmemory`: past
//! `MAX_ENTRIES` counters (or idempotency records) new ones are refused as `Full` while existing
//! counters keep counting.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::Incremented;
use crate::store::{Idempotency, StoreError, MAX_ENTRIES};

#[derive(Clone)]
pub struct MemoryCounters {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Default)]
struct Inner {
    counters: HashMap<String, i64>,
    /// Idempotency-Key → (id, first answer, expiry).
    replies: HashMap<String, (String, i64, Instant)>,
    /// When expired replies were last swept, so the sweep costs O(1) amortised per request.
    next_sweep: Option<Instant>,
    max_entries: usize,
}

impl Default for MemoryCounters {
    fn default() -> Self {
        Self::with_limit(MAX_ENTRIES)
    }
}

impl MemoryCounters {
    pub fn new() -> Self {
        Self::default()
    }

    /// `max_entries` bounds the counters and the idempotency records.
    pub fn with_limit(max_entries: usize) -> Self {
        let inner = Inner {
            max_entries,
            ..Inner::default()
        };
        Self {
            inner: Arc::new(Mutex::new(inner)),
        }
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

    use crate::store::test_key as idem;

    #[test]
    fn counts_up_per_id() {
        let s = MemoryCounters::new();
        assert_eq!(s.incr("a", None).unwrap().count, 1);
        assert_eq!(s.incr("a", None).unwrap().count, 2);
        assert_eq!(s.incr("b", None).unwrap().count, 1);
        assert_eq!(s.get("a"), 2);
        assert_eq!(s.get("zzz"), 0);
    }

    #[test]
    fn idempotency_key_replays_and_rejects_other_ids() {
        let s = MemoryCounters::new();
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
    fn full_refuses_new_ids_and_keys_but_existing_counters_count_and_overflow_is_its_own_error() {
        let s = MemoryCounters::with_limit(2);
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
        let s = MemoryCounters::new();
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
