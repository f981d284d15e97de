//! The record of submitted Fibonacci indexes ("indexes I have seen", the seed's Postgres
//! table), with Idempotency-Keys, in Postgres.

use std::time::Duration;

use deadpool_postgres::Transaction;

use crate::postgres::{bounded, pg_error, Database, DatabaseError, Migration};
use crate::store::StoreError;

/// What a submission can fail on: Postgres, the queue (Redis) inside its transaction, or the
/// client's Idempotency-Key.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SubmitError {
    #[error(transparent)]
    Database(#[from] DatabaseError),
    #[error(transparent)]
    Queue(#[from] StoreError),
    #[error("the Idempotency-Key was already used for another index")]
    IdempotencyConflict,
}

/// The tables of the submissions.
pub const MIGRATIONS: &[Migration] = &[(
    1,
    "CREATE TABLE fib_indexes (
        idx integer PRIMARY KEY CHECK (idx >= 0),
        first_submitted timestamptz NOT NULL DEFAULT now(),
        last_submitted timestamptz NOT NULL DEFAULT now(),
        submissions bigint NOT NULL DEFAULT 1
     );
     CREATE INDEX fib_indexes_recent ON fib_indexes (last_submitted DESC, idx);
     CREATE TABLE fib_idempotency (
        key text PRIMARY KEY,
        idx integer NOT NULL,
        created timestamptz NOT NULL DEFAULT now()
     );",
)];

/// A submitted index as listed by `GET /api/v1/fib/indexes`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Submitted {
    pub index: i32,
    pub submissions: i64,
    pub last_submitted: String,
}

/// The submissions, on a Postgres pool.
#[derive(Clone)]
pub struct Submissions {
    db: Database,
}

impl Submissions {
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    /// The database URL without its password, for logs.
    pub fn display(&self) -> &str {
        self.db.display()
    }

    pub async fn migrate(&self, deadline: Duration) -> Result<(), DatabaseError> {
        self.db.migrate(MIGRATIONS, deadline).await
    }

    /// Records a submission of `index` and, in the same transaction, runs `enqueue`; commits only
    /// if it succeeds, so an index is never listed as submitted when its job was not queued.
    /// With an Idempotency-Key already seen, returns `Ok(false)` and does nothing.
    pub async fn submit<F, Fut>(
        &self,
        index: u32,
        idempotency: Option<(&str, Duration)>,
        deadline: Duration,
        enqueue: F,
    ) -> Result<bool, SubmitError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<(), StoreError>>,
    {
        let idx = index as i32;
        bounded(deadline, async {
            let mut client = self.db.client().await?;
            let tx = client.transaction().await.map_err(pg_error)?;
            if let Some((key, ttl)) = idempotency {
                if !first_use(&tx, key, idx, ttl).await? {
                    return Ok(false);
                }
            }
            tx.execute(
                "INSERT INTO fib_indexes (idx) VALUES ($1)
                 ON CONFLICT (idx) DO UPDATE SET last_submitted = now(), submissions = fib_indexes.submissions + 1",
                &[&idx],
            )
            .await
            .map_err(pg_error)?;
            enqueue().await?;
            tx.commit().await.map_err(pg_error)?;
            Ok(true)
        })
        .await
    }

    /// Distinct submitted indexes, most recently submitted first.
    pub async fn indexes(
        &self,
        limit: i64,
        offset: i64,
        deadline: Duration,
    ) -> Result<Vec<Submitted>, DatabaseError> {
        bounded(deadline, async {
            let client = self.db.client().await?;
            let rows = client
                .query(
                    "SELECT idx, submissions, to_char(last_submitted AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')
                     FROM fib_indexes ORDER BY last_submitted DESC, idx LIMIT $1 OFFSET $2",
                    &[&limit, &offset],
                )
                .await
                .map_err(pg_error)?;
            Ok(rows
                .iter()
                .map(|r| Submitted {
                    index: r.get(0),
                    submissions: r.get(1),
                    last_submitted: r.get(2),
                })
                .collect())
        })
        .await
    }
}

/// True when `key` was not used within `ttl`; then it is now recorded for `idx`.
/// A key first used for another index is a conflict.
async fn first_use(
    tx: &Transaction<'_>,
    key: &str,
    idx: i32,
    ttl: Duration,
) -> Result<bool, SubmitError> {
    let ttl_s = ttl.as_secs_f64();
    tx.execute(
        "DELETE FROM fib_idempotency WHERE created < now() - make_interval(secs => $1)",
        &[&ttl_s],
    )
    .await
    .map_err(pg_error)?;
    let inserted = tx
        .query_opt(
            "INSERT INTO fib_idempotency (key, idx) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING RETURNING idx",
            &[&key, &idx],
        )
        .await
        .map_err(pg_error)?;
    if inserted.is_some() {
        return Ok(true);
    }
    let first: i32 = tx
        .query_one("SELECT idx FROM fib_idempotency WHERE key = $1", &[&key])
        .await
        .map_err(pg_error)?
        .get(0);
    if first == idx {
        Ok(false)
    } else {
        Err(SubmitError::IdempotencyConflict)
    }
}
