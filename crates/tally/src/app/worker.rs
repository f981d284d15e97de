//! `tally worker`: the process around the Fibonacci job loop (`fib::worker`): its flags, the
//! Redis connections, the admin listener, readiness and the shutdown signal.
//!
//! What the loop does: computes Fibonacci jobs from the Redis Stream, at least once.
//!
//! A job is read through the consumer group, computed, and its value stored and the job
//! acknowledged in one atomic step. A worker that dies leaves its job pending; after
//! `reclaim_idle` another worker (or itself, restarted) takes it over with XAUTOCLAIM. A job
//! delivered more than `max_attempts` times goes to the dead-letter stream. On SIGTERM the
//! worker takes no new job, finishes the one in hand, and exits 0.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use super::admin::{self, AdminState};
use super::health::Health;
use crate::config::{resolve_durability, CommonArgs, FibArgs, RedisArgs, StoreConfig};
use crate::fib::worker::{Settings, Worker};
use crate::listener::{self, App};
use crate::redis::{KeySpace, RedisClient, DEFAULT_COUNTER_PREFIX};

#[derive(Args, Debug, Clone)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub redis: RedisArgs,

    /// Address of the admin listener: /healthz, /readyz, /metrics.
    #[arg(long, env = "TALLY_ADMIN_LISTEN", default_value = "0.0.0.0:8082")]
    pub admin_listen: SocketAddr,

    /// Consumer name in the group. [default: the host (pod) name]
    #[arg(long, env = "TALLY_WORKER_NAME")]
    pub name: Option<String>,

    /// A job pending this long with a silent consumer is taken over.
    #[arg(long, env = "TALLY_RECLAIM_IDLE", default_value = "30s", value_parser = humantime::parse_duration)]
    pub reclaim_idle: Duration,

    /// Deliveries after which a job goes to the dead-letter stream.
    #[arg(long, env = "TALLY_MAX_ATTEMPTS", default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_attempts: u64,

    #[command(flatten)]
    pub common: CommonArgs,

    /// Larger jobs are dead-lettered.
    #[command(flatten)]
    pub fib: FibArgs,
}

pub async fn run(args: WorkerArgs) -> anyhow::Result<()> {
    let store_config = StoreConfig::resolve(&args.redis, &|name| std::env::var(name).ok())?;
    let durability = resolve_durability(&args.redis, &store_config, args.common.request_timeout)?;
    let limits = args
        .common
        .listener
        .limits(args.common.request_timeout)?
        .admin;
    let name = args.name.clone().unwrap_or_else(default_name);
    // Two connections: blocking reads would hold up every other command on a shared one.
    let keys = KeySpace::new(&args.redis.key_namespace, DEFAULT_COUNTER_PREFIX);
    let connect = || RedisClient::from_config(&store_config, keys.clone(), durability);
    let (Some(reader), Some(writer)) = (connect(), connect()) else {
        anyhow::bail!("tally worker needs Redis: set TALLY_REDIS_URL or TALLY_REDIS_SENTINELS");
    };
    tracing::info!(consumer = %name, store = %store_config, durability = ?durability, "starting tally worker");

    let health = Health::new("store", "tally_store_up");
    let pinged = writer.clone();
    let watcher = health.spawn_store_watch(
        Duration::from_secs(1),
        args.common.request_timeout,
        move |budget| {
            let redis = pinged.clone();
            async move { redis.ping(budget).await }
        },
    );
    let admin = listener::bind(args.admin_listen)
        .with_context(|| format!("cannot listen on {} (admin)", args.admin_listen))?;
    let admin_app = admin::router(AdminState {
        health: health.clone(),
        metrics: crate::metrics::handle_for(crate::metrics::Tier::Worker),
        dependency: ("store", writer.kind().to_owned()),
    });
    let (close_admin, admin_closed) = tokio::sync::watch::channel(false);
    let admin_task = listener::spawn(admin, App::admin(admin_app), limits, admin_closed);
    let upkeep = super::lifecycle::spawn_metrics_upkeep(crate::metrics::handle());
    let stop = Arc::new(AtomicBool::new(false));
    let signal_stop = stop.clone();
    let signal_health = health.clone();
    tokio::spawn(async move {
        super::lifecycle::shutdown_signal().await;
        signal_health.start_draining();
        signal_stop.store(true, Ordering::Relaxed);
    });

    let settings = Settings {
        request_timeout: args.common.request_timeout,
        reclaim_idle: args.reclaim_idle,
        max_attempts: args.max_attempts,
        max_index: args.fib.fib_max_index,
    };
    let worker = Worker::new(reader, writer, name, settings);
    worker.work(&stop).await;
    stop.store(true, Ordering::Relaxed);
    let _ = close_admin.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(2), admin_task).await;
    watcher.abort();
    upkeep.abort();
    tracing::info!("worker stopped");
    Ok(())
}

fn default_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| format!("worker-{}", uuid::Uuid::new_v4().simple()))
}
