//! The report of a check run: a table for people, JSON for machines.

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use super::analysis::{error_kinds, judge, longest_gap, IdVerdict};
use super::load::Recorded;

#[derive(Debug, Serialize)]
pub struct Report {
    pub targets: Vec<String>,
    pub ids: usize,
    pub duration_s: f64,
    pub requests: u64,
    pub ok: u64,
    pub errors: Vec<(String, u64)>,
    pub availability_pct: f64,
    pub throughput_rps: f64,
    pub latency_ms: Latency,
    /// The longest stretch without any successful response, and when it began.
    pub longest_gap_ms: f64,
    pub longest_gap_start_s: f64,
    pub lost: u64,
    pub duplicated: u64,
    pub over_count: u64,
    /// Per-id findings, only for ids that have any.
    pub findings: Vec<Finding>,
    pub final_values_from: String,
    pub passed: bool,
    pub min_availability_pct: f64,
}

#[derive(Debug, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

#[derive(Debug, Serialize)]
pub struct Finding {
    pub id: String,
    pub initial: i64,
    #[serde(rename = "final")]
    pub last: i64,
    pub attempts: u64,
    pub acknowledged: usize,
    #[serde(flatten)]
    pub verdict: IdVerdict,
}

pub struct Inputs<'a> {
    pub targets: &'a [String],
    pub ids: &'a [String],
    pub initial: &'a [i64],
    pub last: &'a [i64],
    pub elapsed: Duration,
    pub final_values_from: String,
    pub min_availability_pct: f64,
}

impl Report {
    pub fn build(mut rec: Recorded, input: Inputs<'_>) -> Self {
        let requests: u64 = rec.per_id.iter().map(|h| h.attempts).sum();
        let ok = rec.successes.len() as u64;
        let (gap, gap_start) = longest_gap(&mut rec.successes, input.elapsed);
        let mut totals = IdVerdict::default();
        let mut findings = Vec::new();
        for (i, history) in rec.per_id.iter().enumerate() {
            let verdict = judge(input.initial[i], input.last[i], history);
            totals.lost += verdict.lost;
            totals.duplicated += verdict.duplicated;
            totals.over_count += verdict.over_count;
            if verdict != IdVerdict::default() {
                findings.push(Finding {
                    id: input.ids[i].clone(),
                    initial: input.initial[i],
                    last: input.last[i],
                    attempts: history.attempts,
                    acknowledged: history.acknowledged.len(),
                    verdict,
                });
            }
        }
        let availability_pct = if requests == 0 {
            0.0
        } else {
            ok as f64 * 100.0 / requests as f64
        };
        let ms = |us: u64| us as f64 / 1000.0;
        let h = &rec.latency;
        let clean = totals == IdVerdict::default();
        Self {
            targets: input.targets.to_vec(),
            ids: input.ids.len(),
            duration_s: input.elapsed.as_secs_f64(),
            requests,
            ok,
            errors: error_kinds(&rec.errors),
            availability_pct,
            throughput_rps: requests as f64 / input.elapsed.as_secs_f64().max(1e-9),
            latency_ms: Latency {
                p50: ms(h.value_at_quantile(0.50)),
                p90: ms(h.value_at_quantile(0.90)),
                p99: ms(h.value_at_quantile(0.99)),
                max: ms(h.max()),
            },
            longest_gap_ms: gap.as_secs_f64() * 1000.0,
            longest_gap_start_s: gap_start.as_secs_f64(),
            lost: totals.lost,
            duplicated: totals.duplicated,
            over_count: totals.over_count,
            findings,
            final_values_from: input.final_values_from,
            passed: clean && requests > 0 && availability_pct >= input.min_availability_pct,
            min_availability_pct: input.min_availability_pct,
        }
    }

    pub fn to_table(&self) -> String {
        let mut t = String::new();
        let errors = if self.errors.is_empty() {
            "none".to_owned()
        } else {
            let parts: Vec<String> = self
                .errors
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            parts.join(", ")
        };
        let verdict = |n: u64| {
            if n == 0 {
                "0  ok".to_owned()
            } else {
                format!("{n}  FAIL")
            }
        };
        let lines = [
            ("targets", self.targets.join(", ")),
            ("ids", self.ids.to_string()),
            ("duration", format!("{:.1} s", self.duration_s)),
            (
                "requests",
                format!("{}  ({:.0}/s)", self.requests, self.throughput_rps),
            ),
            ("ok", self.ok.to_string()),
            ("errors", errors),
            (
                "availability",
                format!(
                    "{:.3} %  (minimum {:.3} %)",
                    self.availability_pct, self.min_availability_pct
                ),
            ),
            (
                "latency ms",
                format!(
                    "p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}",
                    self.latency_ms.p50,
                    self.latency_ms.p90,
                    self.latency_ms.p99,
                    self.latency_ms.max
                ),
            ),
            (
                "longest gap",
                format!(
                    "{:.0} ms without a success, from {:.1} s",
                    self.longest_gap_ms, self.longest_gap_start_s
                ),
            ),
            ("final values", self.final_values_from.clone()),
            ("lost", verdict(self.lost)),
            ("duplicated", verdict(self.duplicated)),
            ("over-count", verdict(self.over_count)),
        ];
        for (k, v) in lines {
            let _ = writeln!(t, "{k:<14}{v}");
        }
        for f in self.findings.iter().take(20) {
            let _ = writeln!(
                t,
                "  id {:?}: initial {} final {} attempts {} acknowledged {} → lost {} duplicated {} over-count {}",
                f.id, f.initial, f.last, f.attempts, f.acknowledged, f.verdict.lost, f.verdict.duplicated, f.verdict.over_count
            );
        }
        let _ = writeln!(
            t,
            "{:<14}{}",
            "result",
            if self.passed { "PASS" } else { "FAIL" }
        );
        t
    }
}
