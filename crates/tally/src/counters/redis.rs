//! Counters on Redis: `INCR` (or `INCRBY n` for increments combined by `combine.rs`), or a Lua
//! script when an Idempotency-Key comes along.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use tokio::time::Instant;

use super::combine::Batches;
use super::Incremented;
use crate::redis::RedisClient;
use crate::store::{Idempotency, StoreError};

/// The counters of one Redis client, with the batches of their hot ids.
#[derive(Clone)]
pub struct RedisCounters {
    redis: RedisClient,
    batches: Arc<Batches>,
}

impl RedisCounters {
    pub fn new(redis: RedisClient) -> Self {
        Self {
            redis,
            batches: Arc::default(),
        }
    }

    pub fn kind(&self) -> &'static str {
        self.redis.kind()
    }

    /// Plain increments of one id combine (see `combine.rs`); Idempotency-Keyed ones stay
    /// separate, each with its own record.
    pub async fn incr(
        &self,
        id: &str,
        idem: Option<Idempotency<'_>>,
        deadline: Duration,
    ) -> Result<Incremented, StoreError> {
        let counter = self.redis.keys().counter(id);
        let Some(idem) = idem else {
            let until = Instant::now() + deadline;
            let count = self
                .batches
                .incr(&counter, |n| self.redis.incr_by(&counter, n, until))
                .await?;
            return Ok(Incremented {
                count,
                replayed: false,
            });
        };
        // Boxed: the script's future is large and rare; inline, every INCR would move its space.
        Box::pin(self.redis.incr_idempotent(id, counter, idem, deadline)).await
    }

    pub async fn get(&self, id: &str, deadline: Duration) -> Result<i64, StoreError> {
        self.redis.get(id, deadline).await
    }

    pub async fn ping(&self, deadline: Duration) -> Result<(), StoreError> {
        self.redis.ping(deadline).await
    }
}

/// Increment with an idempotency record, atomically. Returns {count, first_id, replayed}.
/// KEYS[1] counter, KEYS[2] reply record; ARGV[1] id, ARGV[2] window in seconds.
static INCR_IDEMPOTENT: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local rec = redis.call('GET', KEYS[2])
if rec then
  local sep = string.find(rec, ':', 1, true)
  return {tonumber(string.sub(rec, 1, sep - 1)), string.sub(rec, sep + 1), 1}
end
local n = redis.call('INCR', KEYS[1])
redis.call('SET', KEYS[2], n .. ':' .. ARGV[1], 'EX', ARGV[2])
return {n, ARGV[1], 0}
",
    )
});

/// Increment of a counter that exists, allowed when Redis is at maxmemory. Returns the new
/// value, or nil (nothing done) for an id the store does not hold yet.
///
/// Under `noeviction` Redis refuses every command that may use memory once it is full, INCR of
/// an existing counter included, though that INCR needs no new memory (Redis changes an integer
/// in place). `allow-oom` (Redis 7+) lets this script run anyway; it never creates a key, so the
/// store grows by nothing while existing counters keep counting and new ids are refused.
/// KEYS[1] counter; ARGV[1] how much to add.
static INCR_EXISTING: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"#!lua flags=allow-oom
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
return redis.call('INCRBY', KEYS[1], ARGV[1])
",
    )
});

impl RedisClient {
    /// Adds `n` to `counter` by `until`: `INCR` for one, `INCRBY` for a combined batch.
    async fn incr_by(&self, counter: &str, n: i64, until: Instant) -> Result<i64, StoreError> {
        // Sized up front: growing its buffers cost ~300 instructions per increment (callgrind).
        let mut cmd = redis::Cmd::with_capacity(3, counter.len() + 32);
        cmd.arg(if n == 1 { "INCR" } else { "INCRBY" }).arg(counter);
        if n != 1 {
            cmd.arg(n);
        }
        match self.query("incr", counter, true, until, cmd).await {
            // Refused before it ran: only a new id needs room (see INCR_EXISTING).
            Err(StoreError::Full) => {
                let left = until.saturating_duration_since(Instant::now());
                Box::pin(self.incr_existing(counter.to_owned(), n, left)).await
            }
            other => other,
        }
    }

    async fn incr_idempotent(
        &self,
        id: &str,
        counter: String,
        idem: Idempotency<'_>,
        deadline: Duration,
    ) -> Result<Incremented, StoreError> {
        if let Some(claim) = self.keys().counter_claim(idem.key) {
            self.claim(claim, id, idem.ttl, deadline).await?;
        }
        let record = self.keys().counter_record(id, idem.key);
        let (id_owned, ttl) = (id.to_owned(), idem.ttl.as_secs().max(1));
        let route = counter.clone();
        let (count, first_id, replayed): (i64, String, i64) = self
            .run("incr_idempotent", &route, true, deadline, move |mut c| {
                let (counter, record, id) = (counter.clone(), record.clone(), id_owned.clone());
                async move {
                    let mut call = INCR_IDEMPOTENT.key(counter);
                    call.key(record).arg(id).arg(ttl);
                    call.invoke_async(&mut c).await
                }
            })
            .await?;
        if first_id != id {
            return Err(StoreError::IdempotencyConflict);
        }
        Ok(Incremented {
            count,
            replayed: replayed == 1,
        })
    }

    /// Cluster mode: ties the Idempotency-Key to `id` before the increment (`SET NX GET`), or
    /// finds it tied to another id: a conflict, refused before anything counts. Tying it again
    /// to the same id (a retry) changes nothing.
    async fn claim(
        &self,
        claim: String,
        id: &str,
        ttl: Duration,
        deadline: Duration,
    ) -> Result<(), StoreError> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(&claim)
            .arg(id)
            .arg("NX")
            .arg("EX")
            .arg(ttl.as_secs().max(1))
            .arg("GET");
        let owner: Option<String> = self
            .query("claim_idempotency", &claim, true, deadline, cmd)
            .await?;
        match owner {
            Some(owner) if owner != id => Err(StoreError::IdempotencyConflict),
            _ => Ok(()),
        }
    }

    async fn incr_existing(
        &self,
        counter: String,
        n: i64,
        deadline: Duration,
    ) -> Result<i64, StoreError> {
        let route = counter.clone();
        let count: Option<i64> = self
            .run("incr_existing", &route, true, deadline, move |mut c| {
                let counter = counter.clone();
                async move { INCR_EXISTING.key(counter).arg(n).invoke_async(&mut c).await }
            })
            .await?;
        count.ok_or(StoreError::Full)
    }

    async fn get(&self, id: &str, deadline: Duration) -> Result<i64, StoreError> {
        let mut cmd = redis::cmd("GET");
        let counter = self.keys().counter(id);
        cmd.arg(&counter);
        let value: Option<String> = self.query("get", &counter, false, deadline, cmd).await?;
        match value {
            None => Ok(0),
            Some(v) => v.parse().map_err(|_| StoreError::NotACounter),
        }
    }
}
