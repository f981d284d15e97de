//! `tally serve`: builds every feature on the configured stores, binds both listeners, runs
//! until a shutdown signal, then drains.

use std::future::Future;
use std::net::SocketAddr;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;

use super::health::Health;
use super::lifecycle::{serve_until, Listeners};
use super::router::{admin_router, public_router, Features};
use crate::config::ServeConfig;
use crate::counters::{Counters, CountersApi, MemoryCounters, RedisCounters};
use crate::fib::submissions::Submissions;
use crate::fib::FibApi;
use crate::guestbook::{Guestbook, GuestbookApi, MemoryMessages};
use crate::postgres::Database;
use crate::redis::{KeySpace, RedisClient};

pub struct Server {
    config: ServeConfig,
    features: Features,
    health: Health,
    /// Installed in `bind`, before anything records a metric (the first readiness probe).
    metrics: PrometheusHandle,
    public: TcpListener,
    admin: TcpListener,
}

impl Server {
    /// Binds both listeners (port 0 picks a free port) and builds the stores; does not serve yet.
    /// Connecting is lazy: a Redis that is down at startup makes requests answer 503 until it
    /// is back, rather than the process exit.
    pub async fn bind(config: ServeConfig) -> anyhow::Result<Self> {
        let (public, admin) = super::lifecycle::bind(config.listen, config.admin_listen).await?;
        let keys = KeySpace::new(&config.key_namespace, config.key_prefix.clone())
            .with_messages(config.messages_key.clone(), config.message_retention);
        // One client, so counters, messages and jobs share one connection (and one WAIT).
        let redis = RedisClient::from_config(&config.store, keys, config.durability);
        let (counters, guestbook) = match &redis {
            Some(r) => (
                Counters::Redis(RedisCounters::new(r.clone())),
                Guestbook::Redis(r.clone()),
            ),
            None => (
                Counters::Memory(MemoryCounters::with_limit(config.memory_max_entries)),
                Guestbook::Memory(MemoryMessages::with_limits(
                    config.message_retention,
                    config.memory_max_entries,
                )),
            ),
        };
        let database = match &config.database {
            Some(db) => Some(Submissions::new(Database::new(db, config.request_timeout)?)),
            None => None,
        };
        let (request_timeout, idempotency_ttl) = (config.request_timeout, config.idempotency_ttl);
        let features = Features {
            counters: CountersApi {
                store: counters,
                request_timeout,
                idempotency_ttl,
            }
            .shared(),
            guestbook: GuestbookApi {
                store: guestbook,
                request_timeout,
                idempotency_ttl,
            }
            .shared(),
            fib: FibApi {
                queue: redis,
                database,
                request_timeout,
                idempotency_ttl,
                max_index: config.fib_max_index,
            }
            .shared(),
        };
        Ok(Self {
            config,
            features,
            health: Health::new("store", "tally_store_up"),
            metrics: crate::metrics::handle_for(crate::metrics::Tier::Serve),
            public,
            admin,
        })
    }

    pub fn public_addr(&self) -> SocketAddr {
        super::lifecycle::address(&self.public)
    }

    pub fn admin_addr(&self) -> SocketAddr {
        super::lifecycle::address(&self.admin)
    }

    /// Serves until `shutdown` completes, then drains (see `lifecycle`).
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Self {
            config,
            features,
            health,
            metrics,
            public,
            admin,
        } = self;
        let store = features.counters.store.clone();
        if matches!(store, Counters::Memory(_)) {
            tracing::warn!(
                "no Redis configured: using the in-process memory store; counts are not shared \
                 between instances and are lost on restart (set TALLY_REDIS_URL or TALLY_REDIS_SENTINELS)"
            );
        }
        let kind = store.kind();
        let watcher = health.spawn_store_watch(
            config.readiness_interval,
            config.request_timeout,
            move |budget| {
                let store = store.clone();
                async move { store.ping(budget).await }
            },
        );
        let setup = crate::fib::spawn_setup(features.fib.clone());
        let listeners = Listeners {
            public: (public, public_router(&features, config.rate_limit.as_ref())),
            admin: (admin, admin_router(health.clone(), metrics, kind)),
            limits: config.limits,
            peer_address: config.rate_limit.is_some(),
        };
        let result = serve_until(listeners, health, config.drain, shutdown).await;
        watcher.abort();
        setup.abort();
        result
    }
}
