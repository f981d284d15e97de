//! `tally check`: a load generator that also checks correctness, Jepsen-style.
//!
//! It sends `GET /{id}` to one or more tally instances (round-robin), records every outcome,
//! then reads each id's final value and reports lost, duplicated and over-counted increments,
//! availability, latency and the longest window without a success. Fresh ids (a random prefix
//! per run) keep runs independent of each other and of real data.

mod analysis;
mod load;
mod report;

use std::io::IsTerminal;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

pub use self::analysis::{judge, longest_gap, IdHistory, IdVerdict};
pub use self::report::Report;

#[derive(Args, Debug, Clone)]
pub struct CheckArgs {
    /// Base URL of a tally instance; repeat for several (requests go round-robin).
    #[arg(
        long = "target",
        env = "TALLY_CHECK_TARGETS",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:8080"
    )]
    pub targets: Vec<String>,

    /// How many distinct ids to increment.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub ids: u32,

    /// Prefix of the ids. [default: check-<random>-, fresh for every run]
    #[arg(long)]
    pub id_prefix: Option<String>,

    /// Requests in flight at once.
    #[arg(long, short = 'c', default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub concurrency: u32,

    /// How long to send requests. [default: 10s unless --requests is given]
    #[arg(long, short = 'd', value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,

    /// Stop after this many requests.
    #[arg(long, short = 'n')]
    pub requests: Option<u64>,

    /// Overall request rate limit, per second.
    #[arg(long)]
    pub rate: Option<f64>,

    /// Per-request timeout.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,

    /// Read the final values straight from Redis (redis://:pass@host:port/db) instead of
    /// through `GET /api/v1/counters/{id}` of the first target.
    #[arg(long, env = "TALLY_CHECK_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,

    /// Key prefix of counters, with --redis-url.
    #[arg(long, default_value = "count:")]
    pub key_prefix: String,

    /// How long to keep trying to read the final values (the service may be recovering).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub settle_timeout: Duration,

    /// Fail when availability (ok / requests, in %) is below this.
    #[arg(long, default_value_t = 0.0)]
    pub min_availability: f64,

    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs the check. Ok(true) when it passed; Err when it could not be carried out.
pub async fn run(args: CheckArgs) -> anyhow::Result<bool> {
    let targets: Vec<String> = args
        .targets
        .iter()
        .map(|t| t.trim_end_matches('/').to_owned())
        .collect();
    for t in &targets {
        let url = reqwest::Url::parse(t).with_context(|| format!("--target {t:?} is not a URL"))?;
        anyhow::ensure!(
            matches!(url.scheme(), "http" | "https"),
            "--target {t:?} must be http or https"
        );
    }
    if let Some(rate) = args.rate {
        anyhow::ensure!(
            rate > 0.0 && rate.is_finite(),
            "--rate must be a positive number"
        );
    }
    let duration = match (args.duration, args.requests) {
        (None, None) => Some(Duration::from_secs(10)),
        (d, _) => d,
    };
    let prefix = args
        .id_prefix
        .clone()
        .unwrap_or_else(|| format!("check-{}-", &uuid::Uuid::new_v4().simple().to_string()[..8]));
    let ids: Vec<String> = (0..args.ids).map(|i| format!("{prefix}{i}")).collect();
    let client = reqwest::Client::builder()
        .timeout(args.timeout)
        .connect_timeout(args.timeout.min(Duration::from_secs(2)))
        .pool_max_idle_per_host(args.concurrency as usize)
        .build()?;
    let finals = FinalValues::new(&args, &targets[0], client.clone()).await?;

    let initial = finals
        .read_all(&ids, args.settle_timeout)
        .await
        .context("reading the initial values")?;
    let plan = Arc::new(load::Plan {
        targets: targets.clone(),
        ids: ids.clone(),
        concurrency: args.concurrency as usize,
        duration,
        requests: args.requests,
        rate: args.rate,
        client,
    });
    let progress = Arc::new(load::Progress::default());
    let ticker = std::io::stderr()
        .is_terminal()
        .then(|| spawn_progress(progress.clone()));
    let (recorded, elapsed) = load::run(plan, progress).await;
    if let Some(t) = ticker {
        t.abort();
        eprintln!();
    }
    let last = finals
        .read_all(&ids, args.settle_timeout)
        .await
        .context("reading the final values")?;
    let report = Report::build(
        recorded,
        report::Inputs {
            targets: &targets,
            ids: &ids,
            initial: &initial,
            last: &last,
            elapsed,
            final_values_from: finals.describe(),
            min_availability_pct: args.min_availability,
        },
    );
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.to_table());
    }
    Ok(report.passed)
}

fn spawn_progress(progress: Arc<load::Progress>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let start = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let (sent, ok) = (
                progress.sent.load(Ordering::Relaxed),
                progress.ok.load(Ordering::Relaxed),
            );
            let pct = if sent == 0 {
                0.0
            } else {
                ok as f64 * 100.0 / sent as f64
            };
            eprint!(
                "\r{:>6.1}s  requests {sent:>9}  ok {pct:>7.3} %  errors {:>7}",
                start.elapsed().as_secs_f64(),
                sent - ok
            );
        }
    })
}

/// Where the values before and after the run come from.
enum FinalValues {
    Http {
        base: String,
        client: reqwest::Client,
    },
    Redis {
        conn: redis::aio::MultiplexedConnection,
        prefix: String,
    },
}

impl FinalValues {
    async fn new(
        args: &CheckArgs,
        first_target: &str,
        client: reqwest::Client,
    ) -> anyhow::Result<Self> {
        match &args.redis_url {
            None => Ok(Self::Http {
                base: first_target.to_owned(),
                client,
            }),
            Some(url) => {
                // The URL may carry a password: errors must not echo it.
                let client = redis::Client::open(url.as_str())
                    .map_err(|_| anyhow::anyhow!("--redis-url is not a valid Redis URL"))?;
                let conn = tokio::time::timeout(
                    Duration::from_secs(5),
                    client.get_multiplexed_async_connection(),
                )
                .await
                .map_err(|_| anyhow::anyhow!("--redis-url: no connection within 5 s"))?
                .map_err(|e| anyhow::anyhow!("--redis-url: cannot connect: {:?}", e.kind()))?;
                Ok(Self::Redis {
                    conn,
                    prefix: args.key_prefix.clone(),
                })
            }
        }
    }

    fn describe(&self) -> String {
        match self {
            Self::Http { base, .. } => format!("{base}/api/v1/counters/{{id}}"),
            Self::Redis { prefix, .. } => format!("redis GET {prefix}{{id}}"),
        }
    }

    /// Reads every id, retrying each until it answers or `patience` runs out.
    async fn read_all(&self, ids: &[String], patience: Duration) -> anyhow::Result<Vec<i64>> {
        let deadline = tokio::time::Instant::now() + patience;
        let mut values = Vec::with_capacity(ids.len());
        for id in ids {
            loop {
                match self.read(id).await {
                    Ok(v) => break values.push(v),
                    Err(e) if tokio::time::Instant::now() >= deadline => {
                        return Err(
                            e.context(format!("id {id:?} could not be read within {patience:?}"))
                        );
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        }
        Ok(values)
    }

    async fn read(&self, id: &str) -> anyhow::Result<i64> {
        match self {
            Self::Http { base, client } => {
                let r = client
                    .get(format!("{base}/api/v1/counters/{id}"))
                    .send()
                    .await?;
                anyhow::ensure!(r.status().is_success(), "status {}", r.status());
                let body: serde_json::Value = r.json().await?;
                body["count"].as_i64().context("no count in the answer")
            }
            Self::Redis { conn, prefix } => {
                let mut conn = conn.clone();
                let value: Option<i64> = redis::cmd("GET")
                    .arg(format!("{prefix}{id}"))
                    .query_async(&mut conn)
                    .await?;
                Ok(value.unwrap_or(0))
            }
        }
    }
}
