//! The load: `concurrency` workers sending `GET /{id}` round-robin over targets and ids, each
//! recording its own outcomes (merged at the end, so workers share only a few atomics).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::time::Instant;

use super::analysis::IdHistory;

/// What one worker saw.
pub struct Recorded {
    pub per_id: Vec<IdHistory>,
    /// Latency of every answered request (any status), in microseconds.
    pub latency: Histogram<u64>,
    pub errors: HashMap<String, u64>,
    /// Offsets from the start of the run at which a request succeeded.
    pub successes: Vec<Duration>,
}

impl Recorded {
    fn new(ids: usize) -> Self {
        Self {
            per_id: vec![IdHistory::default(); ids],
            latency: Histogram::new_with_bounds(1, 3_600_000_000, 3)
                .expect("valid histogram bounds"),
            errors: HashMap::new(),
            successes: Vec::new(),
        }
    }

    pub fn merge(&mut self, other: Recorded) {
        for (mine, theirs) in self.per_id.iter_mut().zip(other.per_id) {
            mine.attempts += theirs.attempts;
            mine.acknowledged.extend(theirs.acknowledged);
        }
        self.latency
            .add(&other.latency)
            .expect("same histogram bounds");
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
        self.successes.extend(other.successes);
    }
}

/// Live totals for the progress line.
#[derive(Default)]
pub struct Progress {
    pub sent: AtomicU64,
    pub ok: AtomicU64,
}

pub struct Plan {
    pub targets: Vec<String>,
    pub ids: Vec<String>,
    pub concurrency: usize,
    pub duration: Option<Duration>,
    pub requests: Option<u64>,
    pub rate: Option<f64>,
    pub client: reqwest::Client,
}

/// Runs the load and returns the merged record and the run's length.
pub async fn run(plan: Arc<Plan>, progress: Arc<Progress>) -> (Recorded, Duration) {
    let start = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..plan.concurrency)
        .map(|_| tokio::spawn(worker(plan.clone(), progress.clone(), next.clone(), start)))
        .collect();
    let mut total = Recorded::new(plan.ids.len());
    for w in workers {
        total.merge(w.await.expect("a check worker panicked"));
    }
    (total, start.elapsed())
}

async fn worker(
    plan: Arc<Plan>,
    progress: Arc<Progress>,
    next: Arc<AtomicU64>,
    start: Instant,
) -> Recorded {
    let mut rec = Recorded::new(plan.ids.len());
    loop {
        let n = next.fetch_add(1, Ordering::Relaxed);
        if plan.requests.is_some_and(|limit| n >= limit) {
            break;
        }
        if let Some(rate) = plan.rate {
            // Request n leaves at start + n/rate: an open-loop schedule, not a per-worker pace.
            tokio::time::sleep_until(start + Duration::from_secs_f64(n as f64 / rate)).await;
        }
        if plan.duration.is_some_and(|d| start.elapsed() >= d) {
            break;
        }
        let targets = plan.targets.len() as u64;
        let target = &plan.targets[(n % targets) as usize];
        let id_index = (n / targets % plan.ids.len() as u64) as usize;
        let url = format!("{target}/{}", plan.ids[id_index]);
        rec.per_id[id_index].attempts += 1;
        progress.sent.fetch_add(1, Ordering::Relaxed);
        let sent_at = Instant::now();
        let outcome = send(&plan.client, &url).await;
        let _ = rec
            .latency
            .record(sent_at.elapsed().as_micros().max(1) as u64);
        match outcome {
            Ok(count) => {
                progress.ok.fetch_add(1, Ordering::Relaxed);
                rec.per_id[id_index].acknowledged.push(count);
                rec.successes.push(start.elapsed());
            }
            Err(kind) => *rec.errors.entry(kind).or_default() += 1,
        }
    }
    rec
}

/// One increment. Ok carries the returned count; Err the error kind for the report.
async fn send(client: &reqwest::Client, url: &str) -> Result<i64, String> {
    let response = client.get(url).send().await.map_err(|e| classify(&e))?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("http_{}", status.as_u16()));
    }
    let body: serde_json::Value = response.json().await.map_err(|e| classify(&e))?;
    body.get("count")
        .and_then(|c| c.as_i64())
        .ok_or_else(|| "bad_body".to_owned())
}

fn classify(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else if e.is_decode() {
        "bad_body"
    } else {
        "connection"
    }
    .to_owned()
}
