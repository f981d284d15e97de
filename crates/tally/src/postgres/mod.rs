//! Postgres: a pool of connections, migrations applied once under an advisory lock, every call
//! bounded by a deadline, and failures of its own (`DatabaseError`), so that a Postgres outage
//! is never reported as one of the counter store. What is stored is the features' business
//! (the Fibonacci submissions: `fib::submissions`).

use std::time::Duration;

mod connect;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};

use crate::config::DatabaseConfig;

/// Why Postgres could not do what was asked. Whether a transaction committed is unknown only
/// when its COMMIT failed; every caller treats this as "retry later" (503).
#[derive(Debug, Clone, thiserror::Error)]
#[error("postgres unavailable: {0}")]
pub struct DatabaseError(String);

/// A database migration: its version and its SQL, applied in version order, each once.
pub type Migration = (i32, &'static str);

const MIGRATION_LOCK: i64 = 0x7a11_7001;

#[derive(Clone)]
pub struct Database {
    pool: Pool,
    display: String,
}

impl Database {
    /// Builds the pool; connects lazily (each new connection reads the password and CA files
    /// again: `connect`).
    pub fn new(database: &DatabaseConfig, connect_timeout: Duration) -> anyhow::Result<Self> {
        let mut config: tokio_postgres::Config =
            database.url.expose().parse().map_err(|_| {
                anyhow::anyhow!("TALLY_DATABASE_URL is not a valid postgres:// URL")
            })?;
        config.connect_timeout(connect_timeout);
        // The URL's application_name wins: several deployments on one server tell apart.
        if config.get_application_name().is_none() {
            config.application_name("tally");
        }
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
            "postgres://{}@{}/{} sslmode={:?}",
            config.get_user().unwrap_or(""),
            hosts.join(","),
            config.get_dbname().unwrap_or(""),
            database.ssl_mode
        );
        let manager = Manager::from_connect(
            config,
            connect::Connector::new(database)?,
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

    /// Applies the `migrations` not applied yet. Several replicas may start together: an
    /// advisory lock serialises them and the version table makes the second one a no-op.
    pub async fn migrate(
        &self,
        migrations: &[Migration],
        deadline: Duration,
    ) -> Result<(), DatabaseError> {
        bounded(deadline, async {
            let mut client = self.pool.get().await.map_err(pool_error)?;
            let tx = client.transaction().await.map_err(pg_error)?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await.map_err(pg_error)?;
            tx.batch_execute("CREATE TABLE IF NOT EXISTS tally_schema (version integer PRIMARY KEY, applied timestamptz NOT NULL DEFAULT now())")
                .await
                .map_err(pg_error)?;
            for (version, sql) in migrations {
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

    pub async fn ping(&self, deadline: Duration) -> Result<(), DatabaseError> {
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

    /// A connection from the pool, within the caller's deadline (see `bounded`).
    pub async fn client(&self) -> Result<deadpool_postgres::Object, DatabaseError> {
        self.pool.get().await.map_err(pool_error)
    }
}

/// Runs `work` within `deadline`; past it, `E` says Postgres did not answer.
pub async fn bounded<T, E: From<DatabaseError>>(
    deadline: Duration,
    work: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, E> {
    tokio::time::timeout(deadline, work)
        .await
        .unwrap_or_else(|_| {
            Err(DatabaseError("postgres did not answer within the deadline".into()).into())
        })
}

fn pool_error(e: deadpool_postgres::PoolError) -> DatabaseError {
    DatabaseError(format!("no connection: {e}"))
}

pub fn pg_error(e: tokio_postgres::Error) -> DatabaseError {
    let what = if e.is_closed() {
        "connection lost"
    } else {
        "server error"
    };
    DatabaseError(format!("{what}: {e}"))
}
