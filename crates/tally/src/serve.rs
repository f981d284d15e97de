//! `tally serve`: binds both listeners, runs until a shutdown signal, then drains.

use std::future::Future;
use std::net::SocketAddr;

use tokio::net::TcpListener;

use crate::config::ServeConfig;
use crate::db::Database;
use crate::health::Health;
use crate::http::{admin_router, public_router, AppContext, AppState};
use crate::lifecycle::{serve_until, Listeners};
use crate::store::{KeySpace, Store};

pub struct Server {
    config: ServeConfig,
    state: AppState,
    public: TcpListener,
    admin: TcpListener,
}

impl Server {
    /// Binds both listeners (port 0 picks a free port) and builds the store; does not serve yet.
    pub async fn bind(config: ServeConfig) -> anyhow::Result<Self> {
        let (public, admin) = crate::lifecycle::bind(config.listen, config.admin_listen).await?;
        let store = Store::from_config(
            &config.store,
            KeySpace::new(config.key_prefix.clone())
                .with_messages(config.messages_key.clone(), config.message_retention),
            config.durability,
        );
        let database = match &config.database {
            Some(db) => Some(Database::new(
                db.url.expose(),
                db.password.as_ref(),
                config.request_timeout,
            )?),
            None => None,
        };
        let state = AppState::new(AppContext {
            store,
            health: Health::new("store", "tally_store_up"),
            metrics: crate::metrics::handle(),
            request_timeout: config.request_timeout,
            idempotency_ttl: config.idempotency_ttl,
            database,
            fib_max_index: config.fib_max_index,
        });
        Ok(Self {
            config,
            state,
            public,
            admin,
        })
    }

    pub fn public_addr(&self) -> SocketAddr {
        crate::lifecycle::address(&self.public)
    }

    pub fn admin_addr(&self) -> SocketAddr {
        crate::lifecycle::address(&self.admin)
    }

    /// Serves until `shutdown` completes, then drains (see `lifecycle`).
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Self {
            config,
            state,
            public,
            admin,
        } = self;
        if matches!(state.store, Store::Memory(_)) {
            tracing::warn!(
                "no Redis configured: using the in-process memory store; counts are not shared \
                 between instances and are lost on restart (set TALLY_REDIS_URL or TALLY_REDIS_SENTINELS)"
            );
        }
        let watcher = state.health.spawn_store_watch(
            state.store.clone(),
            config.readiness_interval,
            config.request_timeout,
        );
        let setup = spawn_job_setup(state.clone());
        let listeners = Listeners {
            public: (
                public,
                public_router(state.clone(), config.rate_limit.as_ref()),
            ),
            admin: (admin, admin_router(state.clone())),
            limits: config.limits,
            peer_address: config.rate_limit.is_some(),
        };
        let drain = config.drain;
        let result = serve_until(listeners, state.health.clone(), drain, shutdown).await;
        watcher.abort();
        setup.abort();
        result
    }
}

/// With Postgres configured: applies migrations and creates the job consumer group, retrying
/// until both succeed, so a database that is down at startup delays only the job routes.
fn spawn_job_setup(state: AppState) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let Some(db) = state.database.clone() else {
            return;
        };
        tracing::info!(database = db.display(), "Fibonacci jobs enabled");
        let deadline = state.request_timeout.max(std::time::Duration::from_secs(5));
        let mut delay = std::time::Duration::from_millis(200);
        loop {
            let migrated = db.migrate(deadline).await;
            let grouped = match state.store.redis() {
                Some(redis) => redis.ensure_job_group(deadline).await,
                None => Ok(()),
            };
            match (migrated, grouped) {
                (Ok(()), Ok(())) => return,
                (m, g) => {
                    let error = m
                        .err()
                        .or(g.err())
                        .map(|e| e.to_string())
                        .unwrap_or_default();
                    tracing::warn!(error, "job setup failed; retrying");
                }
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(std::time::Duration::from_secs(5));
        }
    })
}
