//! Hostile clients against the real binary (and a real Redis where a store matters): slow and
//! idle connections, floods past the connection cap, invented methods, a full store, an
//! evicting store, rate limits, slow bodies, clients that stop reading, and client mistakes.
//! Timeouts are shortened by environment; no assertion is finer than a configured bound.
//! Lines starting with "hostile-figures:" are the measurements quoted in docs/security.md
//! (`cargo nextest run -E 'test(/^hostile::/)' --no-capture`).

use std::time::{Duration, Instant};

use crate::support::redis::{RedisProcess, PASSWORD};
use crate::support::BinaryApp;
use reqwest::Method;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn addr(base: &str) -> String {
    base.trim_start_matches("http://").to_owned()
}

fn envs<'a>(pairs: &[(&'a str, &str)]) -> Vec<(&'a str, String)> {
    pairs.iter().map(|(k, v)| (*k, v.to_string())).collect()
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// One slowloris connection: a request head sent one header line per `every`, never
/// finished. Returns how long the server kept it open, or None if it still was after `limit`.
async fn slowloris(addr: String, every: Duration, limit: Duration) -> Option<Duration> {
    let Ok(mut stream) = TcpStream::connect(&addr).await else {
        return Some(Duration::ZERO);
    };
    // From the connect: a SYN retried for a full accept queue must not count.
    let started = Instant::now();
    let _ = stream
        .write_all(b"GET /slow HTTP/1.1\r\nHost: hostile\r\n")
        .await;
    let mut buf = [0u8; 512];
    let mut ticker = tokio::time::interval(every);
    ticker.tick().await;
    let mut line = 0u64;
    loop {
        tokio::select! {
            read = stream.read(&mut buf) => match read {
                Ok(0) | Err(_) => return Some(started.elapsed()),
                Ok(_) => {}
            },
            _ = ticker.tick() => {
                if started.elapsed() > limit {
                    return None;
                }
                line += 1;
                let header = format!("X-Slow-{line}: {line}\r\n");
                if stream.write_all(header.as_bytes()).await.is_err() {
                    return Some(started.elapsed());
                }
            }
        }
    }
}

/// Runs `count` slowloris connections at once; returns how long each stayed open.
async fn slowloris_many(addr: &str, count: usize, limit: Duration) -> Vec<Option<Duration>> {
    let tasks: Vec<_> = (0..count)
        .map(|_| {
            tokio::spawn(slowloris(
                addr.to_owned(),
                Duration::from_millis(500),
                limit,
            ))
        })
        .collect();
    let mut held = Vec::with_capacity(count);
    for task in tasks {
        held.push(task.await.unwrap());
    }
    held
}

/// Reads one HTTP/1.1 response (head and a Content-Length body) from `stream`.
async fn read_response(stream: &mut TcpStream) -> Option<(u16, String)> {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&data[..end]).to_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if data.len() >= end + 4 + length {
                let status = head.split(' ').nth(1)?.parse().ok()?;
                let body = String::from_utf8_lossy(&data[end + 4..end + 4 + length]).into_owned();
                return Some((status, body));
            }
        }
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => data.extend_from_slice(&buf[..n]),
        }
    }
}

/// Waits until the server closes `stream`; returns how long that took, None after `limit`.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 512];
    loop {
        match tokio::time::timeout_at(
            tokio::time::Instant::from_std(started + limit),
            stream.read(&mut buf),
        )
        .await
        {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

async fn metrics(client: &reqwest::Client, app: &BinaryApp) -> String {
    crate::support::get_text(client, format!("{}/metrics", app.admin)).await
}

/// The sum of a metric's samples whose line contains every one of `labels`.
fn sample(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && labels.iter().all(|x| l.contains(x)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Series of the HTTP metrics: what client-chosen methods, paths and statuses could grow.
fn http_series(text: &str) -> usize {
    text.lines().filter(|l| l.starts_with("http_")).count()
}

/// Sends `path` with `method` and returns the status (0 when the request failed).
async fn status_of(client: &reqwest::Client, method: Method, url: String) -> u16 {
    client
        .request(method, url)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_on_both_ports_is_cut_at_the_header_timeout_while_others_are_served() {
    let header = Duration::from_secs(2);
    let app = BinaryApp::start(&envs(&[("TALLY_HEADER_TIMEOUT", "2s")]));
    let limit = header + Duration::from_secs(5);
    let public = tokio::spawn({
        let a = addr(&app.base);
        async move { slowloris_many(&a, 200, limit).await }
    });
    let admin = tokio::spawn({
        let a = addr(&app.admin);
        async move { slowloris_many(&a, 40, limit).await }
    });
    // Meanwhile, ordinary requests and probes are answered.
    let http = client();
    let until = Instant::now() + header + Duration::from_secs(1);
    let mut served = 0;
    while Instant::now() < until {
        assert_eq!(
            status_of(&http, Method::GET, format!("{}/ok", app.base)).await,
            200
        );
        for probe in ["/healthz", "/readyz", "/metrics"] {
            let url = format!("{}{probe}", app.admin);
            assert_eq!(status_of(&http, Method::GET, url).await, 200, "{probe}");
        }
        served += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (port, held) in [
        ("public", public.await.unwrap()),
        ("admin", admin.await.unwrap()),
    ] {
        let closed: Vec<Duration> = held.iter().flatten().copied().collect();
        let longest = closed.iter().max().copied().unwrap_or_default();
        println!(
            "hostile-figures: slowloris on the {port} port: {} connections held, {} closed by the \
             server, the longest open {longest:?} (header timeout {header:?})",
            held.len(),
            closed.len()
        );
        assert_eq!(closed.len(), held.len(), "{port}: some were never closed");
        assert!(
            longest <= header + Duration::from_secs(1),
            "{port}: {longest:?}"
        );
    }
    assert!(served > 5);
    let text = metrics(&http, &app).await;
    let cut = sample(
        &text,
        "tally_connections_closed_total",
        &["reason=\"header_timeout\""],
    );
    assert!(cut >= 240.0, "{cut}\n{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_slowloris_connections_cost_bounded_memory_and_are_all_closed() {
    rlimit::increase_nofile_limit(u64::MAX).unwrap();
    let header = Duration::from_secs(3);
    let app = BinaryApp::start(&envs(&[
        ("TALLY_HEADER_TIMEOUT", "3s"),
        ("TALLY_MAX_CONNECTIONS", "6000"),
        ("RUST_LOG", "info"),
    ]));
    let http = client();
    assert_eq!(
        status_of(&http, Method::GET, format!("{}/warm", app.base)).await,
        200
    );
    let before = app.rss_bytes();
    let flood = tokio::spawn({
        let a = addr(&app.base);
        async move { slowloris_many(&a, 5000, header + Duration::from_secs(6)).await }
    });
    let mut peak = before;
    let mut open_seen = 0.0f64;
    let until = Instant::now() + header;
    while Instant::now() < until {
        peak = peak.max(app.rss_bytes());
        let text = metrics(&http, &app).await;
        open_seen = open_seen.max(sample(
            &text,
            "tally_connections_open",
            &["listener=\"public\""],
        ));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let held = flood.await.unwrap();
    let closed: Vec<Duration> = held.iter().flatten().copied().collect();
    let longest = closed.iter().max().copied().unwrap_or_default();
    let after = app.rss_bytes();
    let per_connection = peak.saturating_sub(before) / 5000;
    println!(
        "hostile-figures: 5000-connection slowloris: RSS {:.1} MB before, {:.1} MB at the peak \
         ({} connections open at once, {:.1} kB each), {:.1} MB after; {} of 5000 closed by the \
         server, the longest open {longest:?} (header timeout {header:?})",
        before as f64 / 1e6,
        peak as f64 / 1e6,
        open_seen,
        per_connection as f64 / 1e3,
        after as f64 / 1e6,
        closed.len()
    );
    assert_eq!(closed.len(), 5000);
    assert!(longest <= header + Duration::from_secs(1), "{longest:?}");
    assert!(
        open_seen > 4000.0,
        "the flood never held 4000 at once: {open_seen}"
    );
    assert!(
        per_connection < 64_000,
        "{per_connection} bytes per held connection"
    );
    assert_eq!(
        status_of(&http, Method::GET, format!("{}/after", app.base)).await,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_are_closed_after_the_idle_timeout_not_the_header_one() {
    let idle = Duration::from_secs(3);
    let app = BinaryApp::start(&envs(&[
        ("TALLY_HEADER_TIMEOUT", "1s"),
        ("TALLY_IDLE_TIMEOUT", "3s"),
    ]));
    let mut stream = TcpStream::connect(addr(&app.base)).await.unwrap();
    let request = b"GET /idle HTTP/1.1\r\nHost: hostile\r\n\r\n";
    stream.write_all(request).await.unwrap();
    assert_eq!(read_response(&mut stream).await.unwrap().0, 200);
    // Idle for longer than the header timeout: still open, since no head was begun.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stream.write_all(request).await.unwrap();
    let (status, body) = read_response(&mut stream).await.unwrap();
    assert_eq!((status, body.as_str()), (200, r#"{"count":2}"#));
    let open = closed_within(&mut stream, idle + Duration::from_secs(1))
        .await
        .expect("the idle connection was never closed");
    println!("hostile-figures: an idle keep-alive connection was closed after {open:?} (idle timeout {idle:?})");
    assert!(
        open + Duration::from_millis(500) >= idle,
        "closed early: {open:?}"
    );
    let text = metrics(&client(), &app).await;
    assert_eq!(
        sample(
            &text,
            "tally_connections_closed_total",
            &["reason=\"idle_timeout\""]
        ),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_flood_past_the_cap_is_refused_fast_and_the_admin_port_still_answers() {
    let app = BinaryApp::start(&envs(&[
        ("TALLY_MAX_CONNECTIONS", "40"),
        ("TALLY_HEADER_TIMEOUT", "30s"),
    ]));
    let mut held = Vec::new();
    for _ in 0..40 {
        held.push(TcpStream::connect(addr(&app.base)).await.unwrap());
    }
    let http = client();
    // The accept loop has seen all 40 when the gauge says so.
    let deadline = Instant::now() + Duration::from_secs(5);
    while sample(
        &metrics(&http, &app).await,
        "tally_connections_open",
        &["listener=\"public\""],
    ) < 40.0
    {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        let started = Instant::now();
        let mut extra = TcpStream::connect(addr(&app.base)).await.unwrap();
        let answer = tokio::time::timeout(Duration::from_secs(1), read_response(&mut extra))
            .await
            .expect("a refused connection must be answered at once, never queued");
        let (status, body) = answer.expect("a 503 before the close");
        assert_eq!(status, 503);
        assert!(body.contains("too many connections"), "{body}");
        slowest = slowest.max(started.elapsed());
        assert_eq!(
            status_of(&http, Method::GET, format!("{}/readyz", app.admin)).await,
            200
        );
    }
    let text = metrics(&http, &app).await;
    assert_eq!(
        sample(
            &text,
            "tally_connections_refused_total",
            &["listener=\"public\""]
        ),
        20.0
    );
    println!("hostile-figures: 20 connections past a cap of 40: all answered 503, the slowest in {slowest:?}; the admin port answered throughout");
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if status_of(&http, Method::GET, format!("{}/recovered", app.base)).await == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "no recovery after the flood");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends `count` requests with invented methods and paths, `concurrency` at a time.
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
async fn a_slow_body_gets_408_within_the_request_deadline() {
    let app = BinaryApp::start(&envs(&[("TALLY_REQUEST_TIMEOUT", "1s")]));
    let mut stream = TcpStream::connect(addr(&app.base)).await.unwrap();
    let started = Instant::now();
    stream
        .write_all(
            b"POST /api/v1/messages HTTP/1.1\r\nHost: hostile\r\ncontent-type: application/json\r\n\
              content-length: 100\r\n\r\n{\"text\":",
        )
        .await
        .unwrap();
    let (status, body) = tokio::time::timeout(Duration::from_secs(3), read_response(&mut stream))
        .await
        .expect("no answer to a slow body")
        .expect("an answer");
    let took = started.elapsed();
    assert_eq!(status, 408, "{body}");
    assert!(body.contains("request deadline"), "{body}");
    assert!(took <= Duration::from_secs(2), "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_cut_at_the_header_timeout() {
    let app = BinaryApp::start(&envs(&[
        ("TALLY_HEADER_TIMEOUT", "1s"),
        ("RUST_LOG", "warn"),
    ]));
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket
        .connect(addr(&app.admin).parse().unwrap())
        .await
        .unwrap();
    // Pipelined scrapes, never read: the answers (~600 bytes each, 18 MB in all) pile up in
    // the server's send buffer (4 MB at most here) until it cannot write.
    let request = b"GET /metrics HTTP/1.1\r\nHost: hostile\r\n\r\n".repeat(30_000);
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.write_all(&request)).await;
    let http = client();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = metrics(&http, &app).await;
        if sample(
            &text,
            "tally_connections_closed_total",
            &["reason=\"write_timeout\""],
        ) == 1.0
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the stalled reader was never cut:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_idle_and_half_sent_connections_at_once() {
    let mut app = BinaryApp::start(&envs(&[
        ("TALLY_SHUTDOWN_DELAY", "0s"),
        ("TALLY_SHUTDOWN_TIMEOUT", "20s"),
    ]));
    let mut idle = Vec::new();
    for _ in 0..10 {
        let mut s = TcpStream::connect(addr(&app.base)).await.unwrap();
        s.write_all(b"GET /drain HTTP/1.1\r\nHost: hostile\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(read_response(&mut s).await.unwrap().0, 200);
        idle.push(s);
    }
    for _ in 0..10 {
        let mut s = TcpStream::connect(addr(&app.base)).await.unwrap();
        s.write_all(b"GET /half HTTP/1.1\r\nHost: hos")
            .await
            .unwrap();
        idle.push(s);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    app.signal("TERM");
    assert_eq!(app.wait_exit(Duration::from_secs(5)), Some(0));
    let took = started.elapsed();
    for mut s in idle {
        assert!(closed_within(&mut s, Duration::from_secs(1))
            .await
            .is_some());
    }
    println!("hostile-figures: shutdown with 20 idle or half-sent connections took {took:?} (shutdown timeout 20s)");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_file_descriptors_the_listener_pauses_counts_and_recovers() {
    use std::os::unix::process::CommandExt;
    // 64 files in all: past them accept() fails with EMFILE, well before the connection cap.
    let app = BinaryApp::start_with("serve", &envs(&[("RUST_LOG", "warn")]), |cmd| unsafe {
        cmd.pre_exec(|| rlimit::setrlimit(rlimit::Resource::NOFILE, 64, 64));
    });
    let http = client();
    // The scrapes below reuse this keep-alive connection: the admin port cannot accept either.
    metrics(&http, &app).await;
    let mut held = Vec::new();
    for _ in 0..100 {
        if let Ok(s) = TcpStream::connect(addr(&app.base)).await {
            held.push(s);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = metrics(&http, &app).await;
        if sample(&text, "tally_accept_errors_total", &["listener=\"public\""]) > 0.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no accept error counted:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.output_line("accept failed; pausing the listener").await;
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(15);
    while status_of(&http, Method::GET, format!("{}/after-emfile", app.base)).await != 200 {
        assert!(
            Instant::now() < deadline,
            "no recovery after the descriptors came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
