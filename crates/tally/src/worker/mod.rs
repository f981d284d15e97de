//! `tally worker`: computes Fibonacci jobs from the Redis Stream, at least once.
//!
//! A job is read through the consumer group, computed, and its value stored and the job
//! acknowledged in one atomic step. A worker that dies leaves its job pending; after
//! `reclaim_idle` another worker (or itself, restarted) takes it over with XAUTOCLAIM. A job
//! delivered more than `max_attempts` times goes to the dead-letter stream. On SIGTERM the
//! worker takes no new job, finishes the one in hand, and exits 0.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;

use crate::config::{resolve_durability, CommonArgs, FibArgs, RedisArgs, StoreConfig};
use crate::health::Health;
use crate::http::admin::{self, AdminState};
use crate::jobs::fib::fib;
use crate::listener::{self, App};
use crate::store::{Job, KeySpace, RedisStore, Store};

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

/// How long one XREADGROUP waits for a job; also how often the loop looks at the shutdown flag.
const BLOCK: Duration = Duration::from_secs(1);

pub async fn run(args: WorkerArgs) -> anyhow::Result<()> {
    let store_config = StoreConfig::resolve(&args.redis, &|name| std::env::var(name).ok())?;
    anyhow::ensure!(
        !matches!(store_config, StoreConfig::Memory),
        "tally worker needs Redis: set TALLY_REDIS_URL or TALLY_REDIS_SENTINELS"
    );
    let durability = resolve_durability(&args.redis, &store_config, args.common.request_timeout)?;
    let limits = args
        .common
        .listener
        .limits(args.common.request_timeout)?
        .admin;
    let name = args.name.clone().unwrap_or_else(default_name);
    tracing::info!(consumer = %name, store = %store_config, durability = ?durability, "starting tally worker");
    // Two connections: blocking reads would hold up every other command on a shared one.
    let (Store::Redis(reader), Store::Redis(writer)) = (
        Store::from_config(&store_config, KeySpace::new(""), durability),
        Store::from_config(&store_config, KeySpace::new(""), durability),
    ) else {
        unreachable!("a Redis configuration builds a Redis store")
    };

    let health = Health::new("store", "tally_store_up");
    let watcher = health.spawn_store_watch(
        Store::Redis(writer.clone()),
        Duration::from_secs(1),
        args.common.request_timeout,
    );
    let admin = listener::bind(args.admin_listen)
        .with_context(|| format!("cannot listen on {} (admin)", args.admin_listen))?;
    let admin_app = admin::router(AdminState {
        health: health.clone(),
        metrics: crate::metrics::handle(),
        dependency: ("store", writer.kind().to_owned()),
    });
    let (close_admin, admin_closed) = tokio::sync::watch::channel(false);
    let admin_task = listener::spawn(admin, App::admin(admin_app), limits, admin_closed);
    let upkeep = crate::lifecycle::spawn_metrics_upkeep(crate::metrics::handle());
    let stop = Arc::new(AtomicBool::new(false));
    let signal_stop = stop.clone();
    let signal_health = health.clone();
    tokio::spawn(async move {
        crate::lifecycle::shutdown_signal().await;
        signal_health.start_draining();
        signal_stop.store(true, Ordering::Relaxed);
    });

    let worker = Worker {
        reader,
        writer,
        name,
        args,
    };
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

struct Worker {
    reader: RedisStore,
    writer: RedisStore,
    name: String,
    args: WorkerArgs,
}

impl Worker {
    async fn work(&self, stop: &AtomicBool) {
        let deadline = self.args.common.request_timeout;
        while !stop.load(Ordering::Relaxed) {
            match self.writer.ensure_job_group(deadline).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot create the job group yet");
                    tokio::time::sleep(BLOCK).await;
                }
            }
        }
        let reclaim_every = (self.args.reclaim_idle / 2).max(Duration::from_secs(1));
        let mut last_reclaim = Instant::now() - reclaim_every;
        let mut last_backlog = Instant::now() - Duration::from_secs(5);
        while !stop.load(Ordering::Relaxed) {
            if last_backlog.elapsed() >= Duration::from_secs(5) {
                last_backlog = Instant::now();
                if let Ok((pending, lag)) = self.writer.job_backlog(deadline).await {
                    crate::metrics::job_backlog(pending, lag);
                }
            }
            if last_reclaim.elapsed() >= reclaim_every {
                last_reclaim = Instant::now();
                self.reclaim(stop).await;
            }
            if stop.load(Ordering::Relaxed) {
                break;
            }
            match self.reader.read_jobs(&self.name, 1, BLOCK, deadline).await {
                Ok(jobs) => {
                    for job in jobs {
                        self.process(&job).await;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read jobs");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }

    /// Takes over jobs another consumer left behind; buries those delivered too often.
    async fn reclaim(&self, stop: &AtomicBool) {
        let deadline = self.args.common.request_timeout;
        let claimed = match self
            .writer
            .reclaim_jobs(&self.name, self.args.reclaim_idle, 10, deadline)
            .await
        {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "cannot reclaim jobs");
                return;
            }
        };
        for (job, deliveries) in claimed {
            crate::metrics::job("reclaimed");
            tracing::info!(job = %job.entry, deliveries, "reclaimed a job left pending");
            if deliveries > self.args.max_attempts {
                let error = format!("delivered {deliveries} times without completing");
                self.bury(&job, &error).await;
            } else if !stop.load(Ordering::Relaxed) {
                self.process(&job).await;
            }
        }
    }

    async fn process(&self, job: &Job) {
        let deadline = self.args.common.request_timeout;
        let max = self.args.fib.fib_max_index;
        let index = match job.index.as_deref().and_then(|i| i.parse::<u32>().ok()) {
            Some(i) if i <= max => i,
            _ => {
                return self
                    .bury(
                        job,
                        &format!("not an index from 0 to {max}: {:?}", job.index),
                    )
                    .await
            }
        };
        let started = Instant::now();
        let value = match tokio::task::spawn_blocking(move || fib(index).to_string()).await {
            Ok(v) => v,
            Err(e) => {
                crate::metrics::job("failed");
                tracing::error!(job = %job.entry, index, error = %e, "computation failed; the job stays pending");
                return;
            }
        };
        match self.writer.complete_job(job, index, value, deadline).await {
            Ok(()) => {
                crate::metrics::job("done");
                crate::metrics::job_duration(started.elapsed());
                tracing::info!(job = %job.entry, index, ms = started.elapsed().as_millis() as u64, "job done");
            }
            Err(e) => {
                // Not acknowledged: it stays pending and is reclaimed after reclaim_idle.
                crate::metrics::job("failed");
                tracing::warn!(job = %job.entry, index, error = %e, "could not store the value; the job stays pending");
            }
        }
    }

    async fn bury(&self, job: &Job, error: &str) {
        match self
            .writer
            .bury_job(job, error, self.args.common.request_timeout)
            .await
        {
            Ok(()) => {
                crate::metrics::job("dead_lettered");
                tracing::warn!(job = %job.entry, error, "job moved to the dead-letter stream");
            }
            Err(e) => tracing::warn!(job = %job.entry, error = %e, "could not dead-letter the job"),
        }
    }
}
