//! Invented methods and paths, the rate limit, and client mistakes.

use std::time::Duration;

use reqwest::Method;
use serde_json::Value;

use super::*;
use crate::support::redis::{RedisProcess, PASSWORD};
use crate::support::BinaryApp;

async fn invent(http: &reqwest::Client, base: &str, from: usize, count: usize) {
    use futures::stream::{self, StreamExt};
    stream::iter(from..from + count)
        .map(|i| {
            let method = Method::from_bytes(format!("M{i}").as_bytes()).unwrap();
            let path = if i % 2 == 0 {
                format!("/p{i}")
            } else {
                format!("/deep/{i}/x")
            };
            let url = format!("{base}{path}");
            async move { status_of(http, method, url).await }
        })
        .buffer_unordered(32)
        .for_each(|status| async move { assert_ne!(status, 0) })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_invented_methods_and_paths_add_no_series_in_either_tier() {
    let api = BinaryApp::start(&envs(&[("RUST_LOG", "warn")]));
    let web = BinaryApp::start_command(
        "web",
        &envs(&[("TALLY_API_URL", &api.base), ("RUST_LOG", "warn")]),
    );
    let http = client();
    for app in [&api, &web] {
        invent(&http, &app.base, 0, 2).await;
    }
    let (api_before, web_before) = (metrics(&http, &api).await, metrics(&http, &web).await);
    invent(&http, &api.base, 2, 10_000).await;
    invent(&http, &web.base, 2, 2_000).await;
    let (api_after, web_after) = (metrics(&http, &api).await, metrics(&http, &web).await);
    println!(
        "hostile-figures: 10,000 invented methods: API /metrics {} bytes before, {} after; \
         {} HTTP series before and after; web tier after 2,000: {} HTTP series before and after",
        api_before.len(),
        api_after.len(),
        http_series(&api_before),
        http_series(&web_before)
    );
    assert_eq!(
        http_series(&api_after),
        http_series(&api_before),
        "{api_after}"
    );
    assert_eq!(
        http_series(&web_after),
        http_series(&web_before),
        "{web_after}"
    );
    assert!(api_after.contains(r#"method="other""#), "{api_after}");
    assert!(api_after.len() < api_before.len() + 1024);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_answers_429_per_client_and_trusts_only_its_proxies() {
    let app = BinaryApp::start(&envs(&[
        ("TALLY_RATE_LIMIT", "1"),
        ("TALLY_RATE_LIMIT_BURST", "3"),
        ("TALLY_TRUSTED_PROXIES", "127.0.0.1/32"),
    ]));
    let http = client();
    let from = |client: &'static str| {
        let (http, base) = (&http, &app.base);
        async move {
            http.get(format!("{base}/limited"))
                .header("x-forwarded-for", client)
                .send()
                .await
                .unwrap()
        }
    };
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(from("203.0.113.1").await.status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429, 429]);
    let limited = from("203.0.113.1").await;
    let wait: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&wait), "{wait}");
    let body: Value = limited.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("too many requests"),
        "{body}"
    );
    assert_eq!(
        from("203.0.113.2").await.status(),
        200,
        "another client has its own budget"
    );
    tokio::time::sleep(Duration::from_secs(wait)).await;
    assert_eq!(
        from("203.0.113.1").await.status(),
        200,
        "the budget refills"
    );
    let text = metrics(&http, &app).await;
    assert_eq!(sample(&text, "tally_rate_limited_total", &[]), 4.0);
    assert!(sample(&text, "http_requests_total", &["status=\"429\""]) >= 4.0);

    // Without trusted proxies the header is the client's word: ignored, one budget for all.
    let untrusting = BinaryApp::start(&envs(&[
        ("TALLY_RATE_LIMIT", "1"),
        ("TALLY_RATE_LIMIT_BURST", "2"),
    ]));
    let mut statuses = Vec::new();
    for client in ["198.51.100.1", "198.51.100.2", "198.51.100.3"] {
        let r = http
            .get(format!("{}/limited", untrusting.base))
            .header("x-forwarded-for", client)
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 429]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_mistakes_are_4xx_with_json_and_not_store_errors() {
    let redis = RedisProcess::server("");
    let app = BinaryApp::start(&[("TALLY_REDIS_URL", redis.url(PASSWORD))]);
    let http = client();
    redis
        .cli(&["SET", "count:biggest", &i64::MAX.to_string()])
        .unwrap();
    let cases: &[(&str, &str, u16)] = &[
        ("GET", "/api/v1/messages?before=0-0", 400),
        ("GET", "/api/v1/messages?before=nope", 400),
        ("GET", "/api/v1/messages?limit=%FF", 400),
        ("GET", "/api/v1/messages/%FF%FE", 400),
        ("GET", "/api/v1/fib/%FF", 400),
        ("POST", "/api/v1/fib/values", 405),
        ("GET", "/biggest", 409),
        ("GET", "/%FF", 400),
    ];
    for (method, path, want) in cases {
        let r = http
            .request(
                Method::from_bytes(method.as_bytes()).unwrap(),
                format!("{}{path}", app.base),
            )
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let json = r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json");
        let body: Value = r.json().await.unwrap_or(Value::Null);
        assert_eq!(status, *want, "{method} {path}: {body}");
        assert!(json && body["error"].is_string(), "{method} {path}: {body}");
    }
    assert_eq!(
        redis.cli(&["GET", "count:biggest"]).unwrap().trim(),
        i64::MAX.to_string()
    );
    let text = metrics(&http, &app).await;
    assert_eq!(
        sample(&text, "tally_store_errors_total", &[]),
        0.0,
        "{text}"
    );
}
