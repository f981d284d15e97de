//! A full store and an evicting store.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::Value;

use super::*;
use crate::support::redis::{RedisProcess, PASSWORD};
use crate::support::BinaryApp;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_at_maxmemory_answers_507_while_existing_ids_keep_counting_exactly() {
    let redis = RedisProcess::server("maxmemory-policy noeviction");
    let app = BinaryApp::start(&[("TALLY_REDIS_URL", redis.url(PASSWORD))]);
    let http = client();
    for id in 0..10 {
        let url = format!("{}/existing-{id}", app.base);
        assert_eq!(status_of(&http, Method::GET, url).await, 200);
    }
    // Room for about a thousand more ids.
    let used: u64 = redis
        .cli(&["INFO", "memory"])
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap();
    let limit = (used + 512 * 1024).to_string();
    redis.cli(&["CONFIG", "SET", "maxmemory", &limit]).unwrap();
    let long = "n".repeat(200);
    let mut created = 0;
    let refusal = loop {
        let r = http
            .get(format!("{}/{long}-{created}", app.base))
            .send()
            .await
            .unwrap();
        if r.status() != 200 {
            break r;
        }
        created += 1;
        assert!(created < 100_000, "Redis never filled up");
    };
    assert_eq!(refusal.status(), 507);
    assert!(
        refusal.headers().get("retry-after").is_none(),
        "507 must not invite retries"
    );
    let body: Value = refusal.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("full"), "{body}");
    // Well past the limit, so that nothing below depends on a few freed bytes.
    let half = (used / 2).to_string();
    redis.cli(&["CONFIG", "SET", "maxmemory", &half]).unwrap();

    // Existing counters go on counting, concurrently and exactly; new ids stay refused.
    use futures::stream::{self, StreamExt};
    let answers: Vec<(usize, u16, i64)> = stream::iter(0..500)
        .map(|i| {
            let (http, base) = (&http, &app.base);
            async move {
                let r = http
                    .get(format!("{base}/existing-{}", i % 10))
                    .send()
                    .await
                    .unwrap();
                let status = r.status().as_u16();
                let count = r.json::<Value>().await.unwrap()["count"]
                    .as_i64()
                    .unwrap_or(-1);
                (i % 10, status, count)
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    for id in 0..10 {
        let mut counts: Vec<i64> = answers
            .iter()
            .filter(|(i, _, _)| *i == id)
            .map(|(_, status, count)| {
                assert_eq!(*status, 200);
                *count
            })
            .collect();
        counts.sort_unstable();
        assert_eq!(counts, (2..=51).collect::<Vec<i64>>(), "existing-{id}");
        let (status, read) = {
            let r = http
                .get(format!("{}/api/v1/counters/existing-{id}", app.base))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        };
        assert_eq!((status, read["count"].as_i64()), (200, Some(51)));
    }
    let new_id = format!("{}/brand-new", app.base);
    assert_eq!(status_of(&http, Method::GET, new_id.clone()).await, 507);
    let keyed = http
        .get(format!("{}/existing-0", app.base))
        .header("idempotency-key", "needs-a-record")
        .send()
        .await
        .unwrap();
    assert_eq!(keyed.status(), 507, "an idempotency record needs room too");
    let post = http
        .post(format!("{}/api/v1/messages", app.base))
        .header("content-type", "application/json")
        .body(r#"{"text":"hello"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 507);
    let text = metrics(&http, &app).await;
    assert!(
        sample(&text, "tally_store_errors_total", &["kind=\"full\""]) >= 3.0,
        "{text}"
    );
    assert_eq!(
        status_of(&http, Method::GET, format!("{}/readyz", app.admin)).await,
        200
    );
    println!("hostile-figures: Redis at maxmemory after {created} new ids: 507 for new ids, keyed increments and posts; 500 concurrent increments of 10 existing ids all exact");

    // Room again: new ids are taken without a restart.
    redis.cli(&["CONFIG", "SET", "maxmemory", "0"]).unwrap();
    assert_eq!(status_of(&http, Method::GET, new_id).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evicting_policy_is_refused_unless_the_user_insists() {
    let redis = RedisProcess::server("maxmemory 64mb\nmaxmemory-policy allkeys-lru");
    let app = BinaryApp::start(&[
        ("TALLY_REDIS_URL", redis.url(PASSWORD)),
        ("TALLY_READINESS_INTERVAL", "200ms".into()),
    ]);
    let http = client();
    let ready = || async { status_of(&http, Method::GET, format!("{}/readyz", app.admin)).await };
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(ready().await, 503);
    let r = http.get(format!("{}/x", app.base)).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let line = app.output_line("maxmemory-policy is allkeys-lru").await;
    assert!(!line.contains(PASSWORD), "{line}");

    let insisting = BinaryApp::start(&[
        ("TALLY_REDIS_URL", redis.url(PASSWORD)),
        ("TALLY_ALLOW_EVICTION", "true".into()),
    ]);
    insisting
        .output_line("running anyway (TALLY_ALLOW_EVICTION)")
        .await;
    assert_eq!(
        status_of(&http, Method::GET, format!("{}/x", insisting.base)).await,
        200
    );

    // Fixed on the server: the refusing instance turns ready by itself.
    redis
        .cli(&["CONFIG", "SET", "maxmemory-policy", "noeviction"])
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while ready().await != 200 {
        assert!(
            Instant::now() < deadline,
            "never ready after the policy was fixed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        status_of(&http, Method::GET, format!("{}/x", app.base)).await,
        200
    );
}
