//! Combined increments of a hot id: a group commit per counter.
//!
//! The first plain increment of a counter sends its command at once. Increments of the same
//! counter that arrive while it is in flight queue behind it; when it is answered, the first of
//! them sends one `INCRBY n` for all of them, and so on. The reply `v` of an `INCRBY n` hands
//! out `v-n+1 … v` in arrival order, so every answer stays distinct and exact, as if each had
//! sent its own `INCR`. A counter nobody else is incrementing pays two map operations and
//! nothing else: no waiting for a tick, no extra task. On a hot counter the batches grow with
//! the load, as group commit's do, and Redis and the client handle one command per batch.
//!
//! Exactly once: if the outcome of a batch's command is unknown (an error, or the request that
//! sent it cancelled), every request of the batch gets that error (a 503), never a partial
//! answer. Increments that never reached a command (still queued) are handed on, not failed.

use std::collections::hash_map::{Entry, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::oneshot;

use crate::store::{StoreError, Unavailable};

type Reply = Result<i64, StoreError>;
type Waiter = oneshot::Sender<Turn>;

enum Turn {
    /// The waiter's increment ran (or failed) in someone else's batch.
    Answer(Reply),
    /// The waiter sends the next batch: its own increment and the ones queued behind it.
    Lead(Batch),
}

/// Counters with a command in flight, each with the increments queued behind it.
/// Keys are counter keys as clients choose them: foldhash is seeded per process, so ids cannot be
/// chosen to collide in advance, and a collision would cost time, never a wrong count.
/// `Arc<str>`: the map and the batch in flight share one copy of the key, made only when a
/// batch starts; a request that joins one copies nothing.
type Queued = HashMap<Arc<str>, Vec<Waiter>, foldhash::fast::RandomState>;

#[derive(Default)]
pub struct Batches {
    queued: Mutex<Queued>,
}

impl Batches {
    /// Adds one to counter `key` through `send(n)`, which must add `n` and return the new value.
    /// `send` may be called more than once (see `Batch::run`), each time for increments that
    /// have not run.
    pub async fn incr<F, Fut>(self: &Arc<Self>, key: &str, send: F) -> Reply
    where
        F: Fn(i64) -> Fut,
        Fut: Future<Output = Reply>,
    {
        // The lock is released before any await (a guard held across one would make the
        // request's future !Send).
        let joined = {
            let mut queued = self.lock();
            match queued.get_mut(key) {
                Some(waiting) => {
                    let (tx, rx) = oneshot::channel();
                    waiting.push(tx);
                    Err(rx)
                }
                None => {
                    let key: Arc<str> = Arc::from(key);
                    queued.insert(key.clone(), Vec::new());
                    Ok(Batch::new(self.clone(), key))
                }
            }
        };
        let batch = match joined {
            Ok(batch) => batch,
            Err(rx) => match rx.await {
                Ok(Turn::Answer(reply)) => return reply,
                Ok(Turn::Lead(batch)) => batch,
                // Every waiter is answered or handed a batch (see `Batch`'s Drop); should that
                // fail, the increment may have run.
                Err(_) => return Err(unknown()),
            },
        };
        batch.run(&send).await
    }

    fn lock(&self) -> MutexGuard<'_, Queued> {
        self.queued.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The batch of `key` is done: the increments that never ran (`pending`, then those queued
    /// since) go to the first of them that still waits, who sends them as the next batch.
    fn hand_over(self: &Arc<Self>, key: Arc<str>, mut pending: Vec<Waiter>) {
        let mut queued = self.lock();
        let Entry::Occupied(mut waiting) = queued.entry(key) else {
            return;
        };
        pending.append(waiting.get_mut());
        // One lookup on the common path: nobody queued, the entry goes.
        while !pending.is_empty() {
            let next = pending.remove(0);
            let mut batch = Batch::new(self.clone(), waiting.key().clone());
            batch.followers = pending;
            match next.send(Turn::Lead(batch)) {
                // The entry stays: the new batch is about to be in flight.
                Ok(()) => return,
                // That request is gone (cancelled): the next one leads.
                Err(Turn::Lead(mut gone)) => {
                    gone.armed = false;
                    pending = std::mem::take(&mut gone.followers);
                }
                Err(Turn::Answer(_)) => unreachable!("a batch was sent"),
            }
        }
        waiting.remove();
    }
}

/// One increment and those combined with it, led by the request that sends the command.
struct Batch {
    batches: Arc<Batches>,
    key: Arc<str>,
    /// The requests combined with the leader's, in arrival order.
    followers: Vec<Waiter>,
    /// A command for the followers may have reached Redis.
    sent: bool,
    /// Hands over on drop; false once handed over or disarmed.
    armed: bool,
}

impl Batch {
    fn new(batches: Arc<Batches>, key: Arc<str>) -> Self {
        Self {
            batches,
            key,
            followers: Vec::new(),
            sent: false,
            armed: true,
        }
    }

    async fn run<F, Fut>(mut self, send: &F) -> Reply
    where
        F: Fn(i64) -> Fut,
        Fut: Future<Output = Reply>,
    {
        let n = 1 + self.followers.len() as i64;
        self.sent = true;
        let reply = send(n).await;
        if n > 1 {
            if let Err(StoreError::Overflow) = reply {
                // Refused before it ran, as a whole: some of the n may still fit one by one.
                return Box::pin(self.one_by_one(send)).await;
            }
            crate::metrics::combined_increments(n as u64 - 1);
        }
        let followers = std::mem::take(&mut self.followers);
        match &reply {
            Ok(v) => {
                for (i, f) in followers.into_iter().enumerate() {
                    let _ = f.send(Turn::Answer(Ok(v - n + 2 + i as i64)));
                }
            }
            Err(e) => {
                for f in followers {
                    let _ = f.send(Turn::Answer(Err(e.clone())));
                }
            }
        }
        reply.map(|v| v - n + 1)
    }

    async fn one_by_one<F, Fut>(mut self, send: &F) -> Reply
    where
        F: Fn(i64) -> Fut,
        Fut: Future<Output = Reply>,
    {
        let own = send(1).await;
        while !self.followers.is_empty() {
            // Taken out first: if this request is cancelled during the send, that follower's
            // increment may have run, and its dropped sender makes it answer 503.
            let next = self.followers.remove(0);
            let reply = send(1).await;
            let _ = next.send(Turn::Answer(reply));
        }
        own
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        self.armed = false;
        let followers = std::mem::take(&mut self.followers);
        let pending = if self.sent {
            // Cancelled while the command may be in flight: its outcome is unknown.
            for f in followers {
                let _ = f.send(Turn::Answer(Err(unknown())));
            }
            Vec::new()
        } else {
            followers
        };
        self.batches.hand_over(self.key.clone(), pending);
    }
}

fn unknown() -> StoreError {
    StoreError::unavailable(
        Unavailable::Io,
        "the request that sent this increment's batch was cancelled before Redis answered",
    )
}

#[cfg(test)]
mod tests {
    //! The combining logic alone, with an in-process counter behind `send`; the same race
    //! against a real Redis is in the integration suite (counters.rs).

    use super::*;
    use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
    use std::time::Duration;

    struct Store {
        value: AtomicI64,
        commands: AtomicUsize,
    }

    impl Store {
        async fn add(&self, n: i64) -> Reply {
            self.commands.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(2)).await;
            Ok(self.value.fetch_add(n, Ordering::Relaxed) + n)
        }
    }

    fn store() -> Arc<Store> {
        Arc::new(Store {
            value: AtomicI64::new(0),
            commands: AtomicUsize::new(0),
        })
    }

    #[tokio::test(flavor = "current_thread")]
    async fn concurrent_increments_of_one_key_get_each_answer_once() {
        let (batches, store) = (Arc::new(Batches::default()), store());
        let tasks: Vec<_> = (0..2000)
            .map(|_| {
                let (b, s) = (batches.clone(), store.clone());
                tokio::spawn(async move { b.incr("k", |n| s.add(n)).await.unwrap() })
            })
            .collect();
        let mut answers = Vec::new();
        for t in tasks {
            answers.push(t.await.unwrap());
        }
        answers.sort_unstable();
        assert_eq!(answers, (1..=2000).collect::<Vec<i64>>());
        let commands = store.commands.load(Ordering::Relaxed);
        assert!(commands < 100, "{commands} commands for 2000 increments");
        assert!(batches.lock().is_empty(), "nothing left queued");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_cancelled_leader_fails_its_batch_and_hands_on_the_queue() {
        let (batches, store) = (Arc::new(Batches::default()), store());
        let spawn = |b: &Arc<Batches>, s: &Arc<Store>| {
            let (b, s) = (b.clone(), s.clone());
            tokio::spawn(async move { b.incr("k", |n| s.add(n)).await })
        };
        let leader = spawn(&batches, &store);
        tokio::task::yield_now().await; // the leader's command is in flight
        let queued: Vec<_> = (0..5).map(|_| spawn(&batches, &store)).collect();
        tokio::task::yield_now().await;
        leader.abort();
        let mut answers = Vec::new();
        for t in queued {
            answers.push(t.await.unwrap().unwrap());
        }
        // The queued increments had not run: they form the next batch, not an error.
        answers.sort_unstable();
        assert_eq!(answers.len(), 5);
        assert!(answers.windows(2).all(|w| w[1] == w[0] + 1));
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(batches.lock().is_empty(), "nothing left queued");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_failed_batch_fails_every_request_in_it() {
        let batches = Arc::new(Batches::default());
        let fail = |_n: i64| async {
            tokio::time::sleep(Duration::from_millis(2)).await;
            Err::<i64, _>(StoreError::unavailable(Unavailable::Timeout, "no reply"))
        };
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let b = batches.clone();
                tokio::spawn(async move { b.incr("k", fail).await })
            })
            .collect();
        for t in tasks {
            assert!(matches!(
                t.await.unwrap(),
                Err(StoreError::Unavailable {
                    kind: Unavailable::Timeout,
                    ..
                })
            ));
        }
    }
}
