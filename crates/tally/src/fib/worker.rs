//! `tally worker`: computes Fibonacci jobs from the Redis Stream, at least once.
//!
//! A job is read through the consumer group, computed, and its value stored and the job
//! acknowledged in one atomic step. A worker that dies leaves its job pending; after
//! `reclaim_idle` another worker (or itself, restarted) takes it over with XAUTOCLAIM. A job
//! delivered more than `max_attempts` times goes to the dead-letter stream. On SIGTERM the
//! worker takes no new job, finishes the one in hand, and exits 0.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::math::fib;
use super::Job;
use crate::redis::RedisClient;
use crate::trace::TraceContext;

/// How long one XREADGROUP waits for a job; also how often the loop looks at the shutdown flag.
const BLOCK: Duration = Duration::from_secs(1);

/// How a worker treats its jobs.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Deadline of each Redis command.
    pub request_timeout: Duration,
    /// A job pending this long with a silent consumer is taken over.
    pub reclaim_idle: Duration,
    /// Deliveries after which a job goes to the dead-letter stream.
    pub max_attempts: u64,
    /// Larger indexes are dead-lettered.
    pub max_index: u32,
}

/// One consumer of the job group.
pub struct Worker {
    /// Blocking reads only: they would hold up every other command on a shared connection.
    reader: RedisClient,
    writer: RedisClient,
    name: String,
    settings: Settings,
}

impl Worker {
    pub fn new(reader: RedisClient, writer: RedisClient, name: String, settings: Settings) -> Self {
        Self {
            reader,
            writer,
            name,
            settings,
        }
    }

    /// Takes jobs until `stop` is set; the job in hand is finished first.
    pub async fn work(&self, stop: &AtomicBool) {
        let deadline = self.settings.request_timeout;
        while !stop.load(Ordering::Relaxed) {
            match self.writer.ensure_job_group(deadline).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot create the job group yet");
                    tokio::time::sleep(BLOCK).await;
                }
            }
        }
        let reclaim_every = (self.settings.reclaim_idle / 2).max(Duration::from_secs(1));
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
        let deadline = self.settings.request_timeout;
        let claimed = match self
            .writer
            .reclaim_jobs(&self.name, self.settings.reclaim_idle, 10, deadline)
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
            if deliveries > self.settings.max_attempts {
                let error = format!("delivered {deliveries} times without completing");
                self.bury(&job, &error).await;
            } else if !stop.load(Ordering::Relaxed) {
                self.process(&job).await;
            }
        }
    }

    async fn process(&self, job: &Job) {
        // The job's span is a child of the request that submitted it.
        let span = TraceContext::continue_from(job.traceparent.as_deref().map(str::as_bytes), None);
        let outcome = self.compute(job, &span).await;
        if crate::trace::export::enabled() {
            self.export_span(job, &span, outcome);
        }
    }

    /// Computes and stores the job's value, or dead-letters it; returns what became of it.
    async fn compute(&self, job: &Job, span: &TraceContext) -> &'static str {
        let trace_id = span.trace_id_hex();
        let trace_id = trace_id.as_str();
        let deadline = self.settings.request_timeout;
        let max = self.settings.max_index;
        let index = match job.index.as_deref().and_then(|i| i.parse::<u32>().ok()) {
            Some(i) if i <= max => i,
            _ => {
                let error = format!("not an index from 0 to {max}: {:?}", job.index);
                self.bury(job, &error).await;
                return "dead_lettered";
            }
        };
        let started = Instant::now();
        let value = match tokio::task::spawn_blocking(move || fib(index).to_string()).await {
            Ok(v) => v,
            Err(e) => {
                crate::metrics::job("failed");
                tracing::error!(job = %job.entry, index, trace_id, error = %e, "computation failed; the job stays pending");
                return "failed";
            }
        };
        match self.writer.complete_job(job, index, value, deadline).await {
            Ok(()) => {
                crate::metrics::job("done");
                crate::metrics::job_duration(started.elapsed());
                tracing::info!(job = %job.entry, index, trace_id, ms = started.elapsed().as_millis() as u64, "job done");
                "done"
            }
            Err(e) => {
                // Not acknowledged: it stays pending and is reclaimed after reclaim_idle.
                crate::metrics::job("failed");
                tracing::warn!(job = %job.entry, index, trace_id, error = %e, "could not store the value; the job stays pending");
                "failed"
            }
        }
    }

    /// The job's consumer span, named and described as the OpenTelemetry messaging conventions
    /// ask: `process <stream>`.
    fn export_span(&self, job: &Job, span: &TraceContext, outcome: &'static str) {
        use opentelemetry::KeyValue;
        let stream = self.writer.keys().fib().jobs.clone();
        let mut attributes = vec![
            KeyValue::new("messaging.operation.type", "process"),
            KeyValue::new("messaging.destination.name", stream.clone()),
            KeyValue::new(
                "messaging.consumer.group.name",
                crate::redis::FibKeys::GROUP,
            ),
            KeyValue::new("messaging.message.id", job.entry.clone()),
            KeyValue::new("tally.job.outcome", outcome),
        ];
        if let Some(index) = &job.index {
            attributes.push(KeyValue::new("tally.fib.index", index.clone()));
        }
        let kind = opentelemetry::trace::SpanKind::Consumer;
        let error = outcome != "done";
        crate::trace::export::span(span, format!("process {stream}"), kind, attributes, error);
    }

    async fn bury(&self, job: &Job, error: &str) {
        match self
            .writer
            .bury_job(job, error, self.settings.request_timeout)
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
