//! The binary as the chart runs it: one worker thread (tally sizes its runtime by the pod's CPU
//! limit, 1 by default), which switches to Tokio's single-threaded scheduler. Counting must stay
//! exact under concurrency, and every request must leave one whole JSON access line.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use futures::stream::{self, StreamExt};
use support::redis::{RedisProcess, PASSWORD};
use support::BinaryApp;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_worker_thread_counts_exactly_and_logs_every_request() {
    let redis = RedisProcess::server("");
    let app = BinaryApp::start(&[
        (
            "TALLY_REDIS_URL",
            format!("redis://:{PASSWORD}@127.0.0.1:{}/0", redis.port),
        ),
        ("TALLY_WORKER_THREADS", "1".into()),
        ("RUST_LOG", "info".into()),
    ]);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let (ids, per_id) = (10, 100);
    let answers: Vec<(usize, i64)> = stream::iter((0..ids * per_id).map(|i| i % ids))
        .map(|id| {
            let (client, base) = (client.clone(), app.base.clone());
            async move {
                let r = client.get(format!("{base}/rt-{id}")).send().await.unwrap();
                assert_eq!(r.status(), 200);
                let body: serde_json::Value = r.json().await.unwrap();
                (id, body["count"].as_i64().unwrap())
            }
        })
        .buffer_unordered(100)
        .collect()
        .await;
    let mut seen: HashMap<usize, Vec<i64>> = HashMap::new();
    for (id, count) in answers {
        seen.entry(id).or_default().push(count);
    }
    for (id, mut counts) in seen {
        counts.sort_unstable();
        assert_eq!(
            counts,
            (1..=per_id as i64).collect::<Vec<_>>(),
            "id rt-{id}"
        );
        let stored = redis.cli(&["GET", &format!("count:rt-{id}")]).unwrap();
        assert_eq!(stored.trim(), per_id.to_string());
    }

    // Log lines are buffered for a few milliseconds, never lost or torn.
    let mut access = Vec::new();
    for _ in 0..100 {
        access = app
            .output
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains("\"tally::access\""))
            .cloned()
            .collect();
        if access.len() >= ids * per_id {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(access.len(), ids * per_id);
    for line in &access {
        let line: serde_json::Value = serde_json::from_str(line).expect("a JSON access line");
        assert_eq!(line["status"], 200);
        assert_eq!(line["route"], "/{id}");
    }
    let out = app.output_text();
    assert!(out.contains("\"worker_threads\":1"), "{out}");
}
