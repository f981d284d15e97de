//! Fibonacci jobs (the seed's multi-k8s calculator, made reliable): the API records a
//! submission in Postgres and enqueues a job on a Redis Stream; `tally worker` computes it and
//! stores the value. See docs/jobs.md.

pub mod math;
mod queue;
mod routes;
pub mod submissions;
pub mod worker;

use std::sync::Arc;
use std::time::Duration;

pub use self::queue::{FibStatus, Job};
pub use self::routes::{parse_index, routes};

use self::submissions::Submissions;
use crate::redis::RedisClient;

/// What the job routes need: the queue (Redis) and the submissions (Postgres). Either may be
/// missing; the routes then answer 503 and say which.
pub struct FibApi {
    pub queue: Option<RedisClient>,
    pub database: Option<Submissions>,
    pub request_timeout: Duration,
    pub idempotency_ttl: Duration,
    pub max_index: u32,
}

impl FibApi {
    pub fn shared(self) -> Arc<Self> {
        Arc::new(self)
    }
}

/// With Postgres configured: applies migrations and creates the job consumer group, retrying
/// until both succeed, so a database that is down at startup delays only the job routes.
pub fn spawn_setup(api: Arc<FibApi>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let Some(db) = api.database.clone() else {
            return;
        };
        tracing::info!(database = db.display(), "Fibonacci jobs enabled");
        let deadline = api.request_timeout.max(Duration::from_secs(5));
        let mut delay = Duration::from_millis(200);
        loop {
            let migrated = db.migrate(deadline).await;
            let grouped = match &api.queue {
                Some(redis) => redis.ensure_job_group(deadline).await,
                None => Ok(()),
            };
            match (migrated, grouped) {
                (Ok(()), Ok(())) => return,
                (m, g) => {
                    let error = m
                        .err()
                        .map(|e| e.to_string())
                        .or(g.err().map(|e| e.to_string()))
                        .unwrap_or_default();
                    tracing::warn!(error, "job setup failed; retrying");
                }
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    })
}
