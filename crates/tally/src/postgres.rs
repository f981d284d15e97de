//! Postgres: the record of submitted Fibonacci indexes ("indexes I have seen"). A pool of
//! connections, migrations embedded in the binary, every call bounded by a deadline.

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Transaction};
use tokio_postgres::NoTls;

use crate::config::Secret;
use crate::store::{StoreError, Unavailable};

/// Migrations, applied in order, each once. Several replicas may start together: an advisory
/// lock serialises them and the version table makes the second one a no-op.
const MIGRATIONS: &[(i32, &str)] = &[(
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
const MIGRATION_LOCK: i64 = 0x7a11_7001;

#[derive(Clone)]
pub struct Database {
    pool: Pool,
    display: String,
}

/// A submitted index as listed by `GET /api/v1/fib/indexes`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Submitted {
    pub index: i32,
    pub submissions: i64,
    pub last_submitted: String,
}

impl Database {
    /// Builds the pool; connects lazily. `url` is `postgres://user[:pass]@host:port/db`.
    pub fn new(
        url: &str,
        password: Option<&Secret>,
        connect_timeout: Duration,
    ) -> anyhow::Result<Self> {
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|_| anyhow::anyhow!("TALLY_DATABASE_URL is not a valid postgres:// URL"))?;
        if let Some(p) = password {
            config.password(p.expose());
        }
        config.connect_timeout(connect_timeout);
        config.application_name("tally");
        let hosts: Vec<String> = config
            .get_hosts()
            .iter()
            .map(|h| match h {
                tokio_postgres::config::Host::Tcp(h) => h.clone(),
                #[cfg(unix)]
                tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
            })
            .collect();
        let display = format!(
            "postgres://{}@{}/{}",
            config.get_user().unwrap_or(""),
            hosts.join(","),
            config.get_dbname().unwrap_or("")
        );
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(8)
            .wait_timeout(Some(connect_timeout))
            .create_timeout(Some(connect_timeout))
            .recycle_timeout(Some(connect_timeout))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()?;
        Ok(Self { pool, display })
    }

    /// The URL without its password, for logs.
    pub fn display(&self) -> &str {
        &self.display
    }

    pub async fn migrate(&self, deadline: Duration) -> Result<(), StoreError> {
        bounded(deadline, async {
            let mut client = self.pool.get().await.map_err(pool_error)?;
            let tx = client.transaction().await.map_err(pg_error)?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await.map_err(pg_error)?;
            tx.batch_execute("CREATE TABLE IF NOT EXISTS tally_schema (version integer PRIMARY KEY, applied timestamptz NOT NULL DEFAULT now())")
                .await
                .map_err(pg_error)?;
            for (version, sql) in MIGRATIONS {
                let done = tx
                    .query_opt("SELECT 1 FROM tally_schema WHERE version = $1", &[version])
                    .await
                    .map_err(pg_error)?;
                if done.is_none() {
                    tx.batch_execute(sql).await.map_err(pg_error)?;
                    tx.execute("INSERT INTO tally_schema (version) VALUES ($1)", &[version]).await.map_err(pg_error)?;
                    tracing::info!(version, "applied database migration");
                }
            }
            tx.commit().await.map_err(pg_error)
        })
        .await
    }

    pub async fn ping(&self, deadline: Duration) -> Result<(), StoreError> {
        bounded(deadline, async {
            let client = self.pool.get().await.map_err(pool_error)?;
            client
                .simple_query("SELECT 1")
                .await
                .map_err(pg_error)
                .map(|_| ())
        })
        .await
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
    ) -> Result<bool, StoreError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<(), StoreError>>,
    {
        let idx = index as i32;
        bounded(deadline, async {
            let mut client = self.pool.get().await.map_err(pool_error)?;
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
    ) -> Result<Vec<Submitted>, StoreError> {
        bounded(deadline, async {
            let client = self.pool.get().await.map_err(pool_error)?;
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
) -> Result<bool, StoreError> {
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
        Err(StoreError::IdempotencyConflict)
    }
}

async fn bounded<T>(
    deadline: Duration,
    work: impl std::future::Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    tokio::time::timeout(deadline, work)
        .await
        .unwrap_or_else(|_| {
            Err(StoreError::unavailable(
                Unavailable::Timeout,
                "postgres did not answer within the deadline",
            ))
        })
}

fn pool_error(e: deadpool_postgres::PoolError) -> StoreError {
    StoreError::unavailable(Unavailable::Connect, format!("postgres: {e}"))
}

fn pg_error(e: tokio_postgres::Error) -> StoreError {
    let kind = if e.is_closed() {
        Unavailable::Io
    } else {
        Unavailable::Server
    };
    StoreError::unavailable(kind, format!("postgres: {e}"))
}
