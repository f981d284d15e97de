//! The behavioural suite of the HTTP contract. Every test runs twice: against the memory store
//! and against a real password-protected redis-server.

use std::collections::{HashMap, HashSet};

use crate::support::{fixture, Backend};
use futures::stream::{self, StreamExt};

on_every_store!(
    sequential_counts,
    concurrent_increments_are_exact_and_distinct,
    racing_increments_of_one_id_answer_exactly_one_to_n,
    both_routes_share_one_counter,
    read_endpoint_does_not_increment,
    bad_ids_get_400_with_json,
    wrong_methods_get_405_with_allow,
    unknown_paths_get_404_json,
    idempotency_key_replays_the_first_answer,
    service_info_and_admin_endpoints,
    request_id_is_echoed_or_generated,
);

async fn sequential_counts(backend: Backend) {
    let f = fixture(backend).await;
    for expected in 1..=5 {
        let r = f.app.get("/seq").await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "application/json");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body, serde_json::json!({ "count": expected }));
    }
}

async fn concurrent_increments_are_exact_and_distinct(backend: Backend) {
    let f = fixture(backend).await;
    let ids: Vec<String> = (0..20).map(|i| format!("c{i}")).collect();
    let results: Vec<(String, i64)> = stream::iter((0..2000).map(|n| ids[n % 20].clone()))
        .map(|id| {
            let app = &f.app;
            async move {
                let (status, body) = app.json(&format!("/{id}")).await;
                assert_eq!(status, 200, "{body}");
                (id, body["count"].as_i64().unwrap())
            }
        })
        .buffer_unordered(200)
        .collect()
        .await;
    let mut seen: HashMap<String, HashSet<i64>> = HashMap::new();
    for (id, count) in results {
        assert!(
            seen.entry(id.clone()).or_default().insert(count),
            "count {count} returned twice for {id}"
        );
    }
    for id in &ids {
        let counts = &seen[id];
        assert_eq!(counts.len(), 100);
        assert_eq!(counts.iter().copied().max(), Some(100), "{id}");
        let (_, body) = f.app.json(&format!("/api/v1/counters/{id}")).await;
        assert_eq!(body["count"], 100, "{id}");
    }
}

/// Thousands of increments of one id at once: on Redis they combine into `INCRBY n` batches
/// (counters/combine.rs), and still every answer is distinct and the answers are exactly 1…N.
/// Every tenth carries its own Idempotency-Key and so runs on its own, between the batches.
async fn racing_increments_of_one_id_answer_exactly_one_to_n(backend: Backend) {
    const N: i64 = 4000;
    let f = fixture(backend).await;
    let mut answers: Vec<i64> = stream::iter(0..N)
        .map(|n| {
            let app = &f.app;
            async move {
                let response = if n % 10 == 0 {
                    app.get_with_header("/hot", "idempotency-key", &format!("race-{n}"))
                        .await
                } else {
                    app.get("/hot").await
                };
                assert_eq!(response.status(), 200);
                let body: serde_json::Value = response.json().await.unwrap();
                body["count"].as_i64().unwrap()
            }
        })
        .buffer_unordered(256)
        .collect()
        .await;
    answers.sort_unstable();
    assert_eq!(answers, (1..=N).collect::<Vec<_>>());
    assert_eq!(f.app.json("/api/v1/counters/hot").await.1["count"], N);
    if !matches!(backend, Backend::Memory) {
        let metrics = f.app.metrics_text().await;
        let combined: f64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix("tally_combined_increments_total "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0);
        assert!(combined > 0.0, "no increments were combined:\n{metrics}");
    }
}

async fn both_routes_share_one_counter(backend: Backend) {
    let f = fixture(backend).await;
    assert_eq!(f.app.json("/shared").await.1["count"], 1);
    assert_eq!(f.app.json("/count/shared").await.1["count"], 2);
    assert_eq!(f.app.json("/shared").await.1["count"], 3);
    // Percent-encoded ids are decoded: these are the same id.
    assert_eq!(f.app.json("/a%20b").await.1["count"], 1);
    assert_eq!(f.app.json("/count/a%20b").await.1["count"], 2);
    assert_eq!(f.app.json("/%C3%BC").await.1["count"], 1);
    assert_eq!(f.app.json("/api/v1/counters/%C3%BC").await.1["id"], "ü");
}

async fn read_endpoint_does_not_increment(backend: Backend) {
    let f = fixture(backend).await;
    assert_eq!(
        f.app.json("/api/v1/counters/never").await,
        (200, serde_json::json!({"id": "never", "count": 0}))
    );
    f.app.get("/r").await;
    f.app.get("/r").await;
    for _ in 0..3 {
        assert_eq!(
            f.app.json("/api/v1/counters/r").await.1,
            serde_json::json!({"id": "r", "count": 2})
        );
    }
}

async fn bad_ids_get_400_with_json(backend: Backend) {
    let f = fixture(backend).await;
    let long = "x".repeat(257);
    let cases = [
        ("/%FF", "UTF-8"),
        ("/count/%C3", "UTF-8"),
        ("/%0A", "control"),
        ("/%2E%2E", "'..'"),
        ("/%2E", "'.'"),
        (&format!("/{long}") as &str, "limit is 256"),
        ("/api/v1/counters/%00", "control"),
    ];
    for (path, why) in cases {
        let (status, body) = f.app.raw_get(path, "").await;
        assert_eq!(status, 400, "{path}");
        assert!(
            body["error"].as_str().unwrap().contains(why),
            "{path}: {body}"
        );
    }
    let ok = "y".repeat(256);
    assert_eq!(f.app.json(&format!("/{ok}")).await.0, 200);
    // Raw dot-segments and a huge header: answered, never a crash.
    assert_eq!(f.app.raw_get("/..", "").await.0, 400);
    assert_eq!(f.app.raw_get("/count/..", "").await.0, 400);
    let huge = format!("X-Big: {}\r\n", "h".repeat(200_000));
    let (status, _) = f.app.raw_get("/big", &huge).await;
    assert_eq!(status, 431);
    let larger = format!("X-Big: {}\r\n", "h".repeat(1_000_000));
    let (status, _) = f.app.raw_get("/big", &larger).await;
    assert!(status == 431 || status == 0, "{status}"); // hyper may just close the connection
    assert_eq!(f.app.json("/api/v1/counters/big").await.1["count"], 0);
    let r = f
        .app
        .get_with_header("/k", "idempotency-key", "bad key")
        .await;
    assert_eq!(r.status(), 400);
}

async fn wrong_methods_get_405_with_allow(backend: Backend) {
    let f = fixture(backend).await;
    for (method, path, allow) in [
        ("HEAD", "/m", "GET"),
        ("POST", "/m", "GET"),
        ("DELETE", "/count/m", "GET"),
        ("PUT", "/api/v1/counters/m", "GET, HEAD"),
        ("POST", "/", "GET, HEAD"),
    ] {
        let r = f
            .app
            .client
            .request(method.parse().unwrap(), format!("{}{path}", f.app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 405, "{method} {path}");
        assert_eq!(r.headers()["allow"], allow, "{method} {path}");
        if method != "HEAD" {
            let body: serde_json::Value = r.json().await.unwrap();
            assert!(body["error"].as_str().unwrap().contains("not allowed"));
        }
    }
    // None of that touched the counter.
    assert_eq!(f.app.json("/api/v1/counters/m").await.1["count"], 0);
}

async fn unknown_paths_get_404_json(backend: Backend) {
    let f = fixture(backend).await;
    for path in [
        "/a/b",
        "/count/a/b",
        "/api/v1/counters",
        "/api/v1/counters/a/b",
    ] {
        let (status, body) = f.app.json(path).await;
        assert_eq!(status, 404, "{path}");
        assert_eq!(body["error"], "no such route");
    }
}

async fn idempotency_key_replays_the_first_answer(backend: Backend) {
    let f = fixture(backend).await;
    f.app.get("/idem").await; // count 1 without a key
    let first = f
        .app
        .get_with_header("/idem", "idempotency-key", "req-1")
        .await;
    assert_eq!(first.headers().get("idempotent-replayed"), None);
    assert_eq!(first.json::<serde_json::Value>().await.unwrap()["count"], 2);
    for _ in 0..3 {
        let again = f
            .app
            .get_with_header("/idem", "idempotency-key", "req-1")
            .await;
        assert_eq!(again.headers()["idempotent-replayed"], "true");
        assert_eq!(again.json::<serde_json::Value>().await.unwrap()["count"], 2);
    }
    let other = f
        .app
        .get_with_header("/idem", "idempotency-key", "req-2")
        .await;
    assert_eq!(other.json::<serde_json::Value>().await.unwrap()["count"], 3);
    // Concurrent retries of one key increment once.
    let answers: Vec<i64> = stream::iter(0..50)
        .map(|_| async {
            let r = f
                .app
                .get_with_header("/idem", "idempotency-key", "req-3")
                .await;
            r.json::<serde_json::Value>().await.unwrap()["count"]
                .as_i64()
                .unwrap()
        })
        .buffer_unordered(50)
        .collect()
        .await;
    assert!(answers.iter().all(|c| *c == 4), "{answers:?}");
    assert_eq!(f.app.json("/api/v1/counters/idem").await.1["count"], 4);
    // The same key for another id is a client error, not a silent answer for the wrong id.
    let conflict = f
        .app
        .get_with_header("/other", "idempotency-key", "req-1")
        .await;
    assert_eq!(conflict.status(), 422);
    assert_eq!(f.app.json("/api/v1/counters/other").await.1["count"], 0);
}

async fn service_info_and_admin_endpoints(backend: Backend) {
    let f = fixture(backend).await;
    let (status, body) = f.app.json("/").await;
    assert_eq!(status, 200);
    assert_eq!(body["service"], "tally");
    assert_eq!(f.app.admin_status("/healthz").await, 200);
    f.app
        .wait_ready(200, std::time::Duration::from_secs(5))
        .await;
    f.app.get("/metered").await;
    let metrics = f
        .app
        .client
        .get(format!("{}/metrics", f.app.admin))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "http_requests_total{route=\"/{id}\",method=\"GET\",status=\"200\"}",
        "http_request_duration_seconds_bucket{route=\"/{id}\",method=\"GET\"",
        "tally_build_info{version=",
        "tally_store_up 1",
    ] {
        assert!(metrics.contains(name), "missing {name} in\n{metrics}");
    }
    assert!(
        !metrics.contains("metered"),
        "raw ids must not be metric labels"
    );
    if matches!(backend, Backend::Redis) {
        assert!(metrics.contains("tally_store_command_duration_seconds_bucket{command=\"incr\""));
    }
    // The admin port does not serve counters, and the public port does not serve probes.
    assert_eq!(f.app.admin_status("/some-id").await, 404);
}

async fn request_id_is_echoed_or_generated(backend: Backend) {
    let f = fixture(backend).await;
    let r = f
        .app
        .get_with_header("/rid", "x-request-id", "abc-123")
        .await;
    assert_eq!(r.headers()["x-request-id"], "abc-123");
    let r = f.app.get("/rid").await;
    assert_eq!(r.headers()["x-request-id"].len(), 36);
}
