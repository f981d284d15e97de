//! The binary as the chart runs it: one worker thread (tally sizes its runtime by the pod's CPU
//! limit, 1 by default), which switches to Tokio's single-threaded scheduler. Counting must stay
//! exact under concurrency, and every request must leave one whole JSON access line.

use std::collections::HashMap;
use std::time::Duration;

use crate::support::redis::{RedisProcess, PASSWORD};
use crate::support::{BinaryApp, KillOnDrop};
use futures::stream::{self, StreamExt};

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
    for _ in 0..500 {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_stdout_never_holds_up_requests() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let (port, admin) = (
        crate::support::redis::free_port(),
        crate::support::redis::free_port(),
    );
    // Nobody reads stdout until the end: the pipe fills after a few hundred lines.
    let child = Command::new(env!("CARGO_BIN_EXE_tally"))
        .arg("serve")
        .env_clear()
        .env("TALLY_LISTEN", format!("127.0.0.1:{port}"))
        .env("TALLY_ADMIN_LISTEN", format!("127.0.0.1:{admin}"))
        .env("TALLY_LOG_FORMAT", "json")
        .env("TALLY_WORKER_THREADS", "1")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let mut up = false;
    for _ in 0..250 {
        if client.get(format!("{base}/warm")).send().await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(up, "tally did not start");
    // ~50,000 lines of ~220 bytes: more than the 8 MB the sink keeps, far more than a pipe holds.
    // A request that waited for stdout would wait forever and fail on the client's timeout.
    let answered = stream::iter(0..50_000)
        .map(|_| {
            let (client, base) = (client.clone(), base.clone());
            async move {
                client
                    .get(format!("{base}/stall"))
                    .send()
                    .await
                    .unwrap()
                    .status()
            }
        })
        .buffer_unordered(64)
        .filter(|s| std::future::ready(s.is_success()))
        .count()
        .await;
    assert_eq!(answered, 50_000);
    // Once stdout moves again, the lines that did not fit are reported.
    let stdout = child.0.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find(|l| l.contains("log lines were dropped"))
    });
    let report = tokio::task::spawn_blocking(move || reader.join().unwrap());
    let report = tokio::time::timeout(Duration::from_secs(10), report)
        .await
        .expect("a report of the dropped lines")
        .unwrap()
        .expect("a report of the dropped lines");
    let line: serde_json::Value = serde_json::from_str(&report).unwrap();
    assert!(line["dropped"].as_u64().unwrap() > 0, "{report}");
}
