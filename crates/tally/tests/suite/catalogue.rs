//! The metric catalogue (`tally::metrics::CATALOGUE`) against the code that records metrics and
//! against docs/metrics.md: a metric recorded but not described, or described but not
//! documented (or documented with another type), fails here instead of drifting.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tally::metrics::CATALOGUE;

use crate::support::{get_text, BinaryApp};

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The string literal right after each `marker` in `text`.
fn names_after<'a>(text: &'a str, marker: &str) -> Vec<&'a str> {
    text.match_indices(marker)
        .filter_map(|(at, _)| {
            let rest = &text[at + marker.len()..];
            rest.split('"').next()
        })
        .collect()
}

/// Metric names recorded anywhere in the crate, with the kind of macro that records them.
fn recorded() -> BTreeMap<String, &'static str> {
    let mut files = Vec::new();
    sources(&crate_dir().join("src"), &mut files);
    let mut found = BTreeMap::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for (marker, kind) in [
            ("counter!(\"", "counter"),
            ("gauge!(\"", "gauge"),
            ("histogram!(\"", "histogram"),
        ] {
            for name in names_after(&text, marker) {
                found.insert(name.to_owned(), kind);
            }
        }
        // Readiness gauges are named by their Health (`Health::new("store", "tally_store_up")`).
        for (at, _) in text.match_indices("Health::new(\"") {
            let gauge = text[at..].split('"').nth(3).unwrap();
            found.insert(gauge.to_owned(), "gauge");
        }
    }
    found
}

/// The rows of docs/metrics.md's table: name → type.
fn documented() -> BTreeMap<String, String> {
    let doc = std::fs::read_to_string(crate_dir().join("../../docs/metrics.md")).unwrap();
    doc.lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let name = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
            Some((name.to_owned(), cells.get(2)?.to_string()))
        })
        .collect()
}

#[test]
fn every_recorded_metric_is_described_and_documented_with_its_type() {
    let described: BTreeMap<&str, &str> = CATALOGUE
        .iter()
        .map(|(name, kind, _)| (*name, kind.as_str()))
        .collect();
    let recorded = recorded();
    assert!(
        recorded.len() >= 20,
        "the scan found too little: {recorded:?}"
    );
    for (name, kind) in &recorded {
        assert_eq!(
            described.get(name.as_str()),
            Some(kind),
            "{name} is recorded as a {kind} but CATALOGUE does not describe it so"
        );
    }
    for name in described.keys() {
        assert!(
            recorded.contains_key(*name),
            "{name} is described but nothing records it"
        );
    }
    let documented = documented();
    for (name, kind) in &described {
        assert_eq!(
            documented.get(*name).map(String::as_str),
            Some(*kind),
            "{name} ({kind}) is missing from docs/metrics.md's table, or has another type there"
        );
    }
    for name in documented.keys() {
        assert!(
            described.contains_key(name.as_str()),
            "docs/metrics.md documents {name}, which tally does not record"
        );
    }
}

/// The value of the series written exactly as `series` (name and labels in the exporter's
/// order) in a `/metrics` text, if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// A fresh process shows its tier's event counters at 0 before any event, so a dashboard shows
/// 0 and `increase()` sees the first failover or dead letter (issue 21).
#[tokio::test]
async fn a_fresh_process_shows_its_event_counters_at_zero() {
    let client = reqwest::Client::new();
    let serve = BinaryApp::start(&[]);
    let text = get_text(&client, format!("{}/metrics", serve.admin)).await;
    for series in [
        "tally_master_changes_total",
        "tally_wait_timeouts_total",
        "tally_combined_increments_total",
        r#"tally_cluster_redirects_total{kind="moved"}"#,
        r#"tally_connections_closed_total{listener="public",reason="header_timeout"}"#,
        r#"http_requests_total{route="/{id}",method="GET",status="503"}"#,
    ] {
        assert_eq!(sample(&text, series), Some(0.0), "{series} in:\n{text}");
    }
    let web = BinaryApp::start_command("web", &[("TALLY_API_URL", serve.base.clone())]);
    let text = get_text(&client, format!("{}/metrics", web.admin)).await;
    for series in [
        r#"http_requests_total{route="/web/counter",method="POST",status="503"}"#,
        "tally_rate_limited_total",
    ] {
        assert_eq!(sample(&text, series), Some(0.0), "{series} in:\n{text}");
    }
    assert_eq!(
        sample(&text, "tally_master_changes_total"),
        None,
        "web registers only its own series"
    );
}
