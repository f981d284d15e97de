//! The Redis side of Fibonacci jobs: a stream consumed through a consumer group (at-least-once:
//! a job leaves the group's pending list only when its value is stored), a hash of values, and
//! a dead-letter stream. The same connection management as counters, so Sentinel failover
//! behaves the same.

use std::sync::LazyLock;
use std::time::Duration;

use crate::redis::{FibKeys, RedisClient};
use crate::store::{StoreError, Unavailable};

/// Enqueue: mark the index requested and add the job, atomically; an index already requested
/// (pending) gets no second job, so a flood of submissions adds nothing to the stream.
/// Returns the entry id, or nil when the index was pending already. The job carries the
/// submitting request's `traceparent`, so the worker's span joins its trace.
/// KEYS[1] requested hash, KEYS[2] job stream; ARGV[1] index, ARGV[2] now (ms), ARGV[3] cap,
/// ARGV[4] traceparent.
static ENQUEUE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then return false end
return redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'index', ARGV[1], 'traceparent', ARGV[4])
",
    )
});

/// Complete: store the value and acknowledge the job in one step, so a job is never
/// acknowledged without its value. KEYS: values, done, jobs; ARGV: index, value, group, entry id.
static COMPLETE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[1], ARGV[1])
return redis.call('XACK', KEYS[3], ARGV[3], ARGV[4])
",
    )
});

/// Dead-letter: record the job and its error, acknowledge it, and forget that its index was
/// requested, so that submitting it again enqueues a new job.
/// KEYS: dead stream, jobs, requested hash; ARGV: entry id, index, error, group, cap.
static BURY: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[5], '*', 'job', ARGV[1], 'index', ARGV[2], 'error', ARGV[3])
redis.call('HDEL', KEYS[3], ARGV[2])
return redis.call('XACK', KEYS[2], ARGV[4], ARGV[1])
",
    )
});

/// A job as read from the stream: entry id, its `index` field (None if malformed) and the
/// `traceparent` of the request that submitted it (absent in jobs from before 0.1's tracing).
#[derive(Debug, Clone)]
pub struct Job {
    pub entry: String,
    pub index: Option<String>,
    pub traceparent: Option<String>,
}

/// What `GET /api/v1/fib/{index}` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FibStatus {
    Done(String),
    Pending,
    Unknown,
}

type Entry = (String, Vec<String>);

impl RedisClient {
    /// Creates the consumer group (from the start of the stream, so jobs enqueued before any
    /// worker existed are delivered). Safe to call from every replica, every start.
    pub async fn ensure_job_group(&self, deadline: Duration) -> Result<(), StoreError> {
        let keys = self.keys().fib();
        let cmd = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&keys.jobs)
            .arg(FibKeys::GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .to_owned();
        match self
            .query::<()>(
                "xgroup_create",
                &self.keys().fib().jobs,
                true,
                deadline,
                cmd,
            )
            .await
        {
            Err(StoreError::Unavailable { detail, .. }) if detail.contains("BUSYGROUP") => Ok(()),
            other => other,
        }
    }

    /// Enqueues a job for `index`; None when one is pending already.
    pub async fn enqueue_fib(
        &self,
        index: u32,
        deadline: Duration,
    ) -> Result<Option<String>, StoreError> {
        let keys = self.keys().fib();
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let traceparent = crate::trace::current_traceparent().unwrap_or_default();
        self.run(
            "enqueue_fib",
            &self.keys().fib().jobs,
            true,
            deadline,
            move |mut c| {
                let mut call = ENQUEUE.key(&keys.requested);
                call.key(&keys.jobs)
                    .arg(index)
                    .arg(now_ms)
                    .arg(FibKeys::JOBS_CAP)
                    .arg(&traceparent);
                async move { call.invoke_async(&mut c).await }
            },
        )
        .await
    }

    pub async fn fib_status(
        &self,
        index: u32,
        deadline: Duration,
    ) -> Result<FibStatus, StoreError> {
        let keys = self.keys().fib();
        let mut pipe = redis::pipe();
        pipe.hget(&keys.values, index)
            .hexists(&keys.requested, index);
        let (value, requested): (Option<String>, bool) = self
            .run(
                "fib_status",
                &self.keys().fib().jobs,
                false,
                deadline,
                move |mut c| {
                    let pipe = pipe.clone();
                    async move { pipe.query_async(&mut c).await }
                },
            )
            .await?;
        Ok(match (value, requested) {
            (Some(v), _) => FibStatus::Done(v),
            (None, true) => FibStatus::Pending,
            (None, false) => FibStatus::Unknown,
        })
    }

    /// Computed values in index order, from `offset`, at most `limit`.
    pub async fn fib_values(
        &self,
        offset: usize,
        limit: usize,
        deadline: Duration,
    ) -> Result<Vec<(u32, String)>, StoreError> {
        let keys = self.keys().fib();
        let cmd = redis::cmd("ZRANGE")
            .arg(&keys.done)
            .arg(offset)
            .arg(offset + limit.max(1) - 1)
            .to_owned();
        let indexes: Vec<u32> = self
            .query("fib_done", &self.keys().fib().jobs, false, deadline, cmd)
            .await?;
        if indexes.is_empty() {
            return Ok(Vec::new());
        }
        let cmd = redis::cmd("HMGET")
            .arg(&keys.values)
            .arg(&indexes)
            .to_owned();
        let values: Vec<Option<String>> = self
            .query("fib_values", &self.keys().fib().jobs, false, deadline, cmd)
            .await?;
        Ok(indexes
            .into_iter()
            .zip(values)
            .filter_map(|(i, v)| v.map(|v| (i, v)))
            .collect())
    }

    /// New jobs for `consumer`, waiting up to `block` for one to arrive.
    pub async fn read_jobs(
        &self,
        consumer: &str,
        count: usize,
        block: Duration,
        deadline: Duration,
    ) -> Result<Vec<Job>, StoreError> {
        let keys = self.keys().fib();
        let cmd = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(FibKeys::GROUP)
            .arg(consumer)
            .arg("COUNT")
            .arg(count)
            .arg("BLOCK")
            .arg(block.as_millis() as u64)
            .arg("STREAMS")
            .arg(&keys.jobs)
            .arg(">")
            .to_owned();
        // XREADGROUP moves entries into the pending list, but WAIT is not needed for it: a job
        // lost from that list in a failover is still in the stream and is reclaimed.
        let reply: Option<Vec<(String, Vec<Entry>)>> = self
            .query("xreadgroup", &keys.jobs, false, deadline + block, cmd)
            .await?;
        Ok(reply
            .unwrap_or_default()
            .into_iter()
            .flat_map(|(_, entries)| entries)
            .map(to_job)
            .collect())
    }

    /// Takes over jobs that another consumer left pending for longer than `min_idle` (it died
    /// or hung), with how often each was delivered before.
    pub async fn reclaim_jobs(
        &self,
        consumer: &str,
        min_idle: Duration,
        count: usize,
        deadline: Duration,
    ) -> Result<Vec<(Job, u64)>, StoreError> {
        let keys = self.keys().fib();
        let cmd = redis::cmd("XAUTOCLAIM")
            .arg(&keys.jobs)
            .arg(FibKeys::GROUP)
            .arg(consumer)
            .arg(min_idle.as_millis() as u64)
            .arg("0-0")
            .arg("COUNT")
            .arg(count)
            .to_owned();
        let (_, entries, _deleted): (String, Vec<Entry>, Vec<String>) = self
            .query("xautoclaim", &self.keys().fib().jobs, false, deadline, cmd)
            .await?;
        let mut jobs = Vec::with_capacity(entries.len());
        for entry in entries {
            let job = to_job(entry);
            let deliveries = self.deliveries(&job.entry, deadline).await?;
            jobs.push((job, deliveries));
        }
        Ok(jobs)
    }

    async fn deliveries(&self, entry: &str, deadline: Duration) -> Result<u64, StoreError> {
        let cmd = redis::cmd("XPENDING")
            .arg(&self.keys().fib().jobs)
            .arg(FibKeys::GROUP)
            .arg(entry)
            .arg(entry)
            .arg(1)
            .to_owned();
        let rows: Vec<(String, String, u64, u64)> = self
            .query("xpending", &self.keys().fib().jobs, false, deadline, cmd)
            .await?;
        Ok(rows.first().map_or(0, |r| r.3))
    }

    pub async fn complete_job(
        &self,
        job: &Job,
        index: u32,
        value: String,
        deadline: Duration,
    ) -> Result<(), StoreError> {
        let keys = self.keys().fib();
        let entry = job.entry.clone();
        self.run(
            "complete_job",
            &self.keys().fib().jobs,
            true,
            deadline,
            move |mut c| {
                let (entry, value) = (entry.clone(), value.clone());
                async move {
                    let mut call = COMPLETE.key(&keys.values);
                    call.key(&keys.done)
                        .key(&keys.jobs)
                        .arg(index)
                        .arg(value)
                        .arg(FibKeys::GROUP)
                        .arg(entry);
                    call.invoke_async::<i64>(&mut c).await.map(|_| ())
                }
            },
        )
        .await
    }

    pub async fn bury_job(
        &self,
        job: &Job,
        error: &str,
        deadline: Duration,
    ) -> Result<(), StoreError> {
        let keys = self.keys().fib();
        let (entry, index, error) = (
            job.entry.clone(),
            job.index.clone().unwrap_or_default(),
            error.to_owned(),
        );
        self.run(
            "bury_job",
            &self.keys().fib().jobs,
            true,
            deadline,
            move |mut c| {
                let (entry, index, error) = (entry.clone(), index.clone(), error.clone());
                async move {
                    let mut call = BURY.key(&keys.dead);
                    call.key(&keys.jobs)
                        .key(&keys.requested)
                        .arg(entry)
                        .arg(index)
                        .arg(error)
                        .arg(FibKeys::GROUP)
                        .arg(FibKeys::JOBS_CAP);
                    call.invoke_async::<i64>(&mut c).await.map(|_| ())
                }
            },
        )
        .await
    }

    /// (pending in the group, lag: entries not yet delivered), from XINFO GROUPS.
    pub async fn job_backlog(&self, deadline: Duration) -> Result<(u64, u64), StoreError> {
        let keys = self.keys().fib();
        let cmd = redis::cmd("XINFO").arg("GROUPS").arg(&keys.jobs).to_owned();
        let groups: Vec<std::collections::HashMap<String, redis::Value>> = self
            .query("xinfo", &self.keys().fib().jobs, false, deadline, cmd)
            .await?;
        let group = groups
            .iter()
            .find(|g| matches!(g.get("name"), Some(redis::Value::BulkString(n)) if n == FibKeys::GROUP.as_bytes()))
            .ok_or_else(|| StoreError::unavailable(Unavailable::Server, "the job group does not exist yet"))?;
        let number = |k: &str| match group.get(k) {
            Some(redis::Value::Int(n)) => (*n).max(0) as u64,
            _ => 0,
        };
        Ok((number("pending"), number("lag")))
    }
}

fn to_job((entry, fields): Entry) -> Job {
    let field = |name: &str| {
        fields
            .chunks(2)
            .find(|p| p[0] == name)
            .and_then(|p| p.get(1))
            .cloned()
    };
    Job {
        index: field("index"),
        traceparent: field("traceparent").filter(|t| !t.is_empty()),
        entry,
    }
}
