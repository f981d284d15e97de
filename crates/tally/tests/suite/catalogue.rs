//! The metric catalogue (`tally::metrics::CATALOGUE`) against the code that records metrics and
//! against docs/metrics.md: a metric recorded but not described, or described but not
//! documented (or documented with another type), fails here instead of drifting.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tally::metrics::CATALOGUE;

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
