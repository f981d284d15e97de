//! What happens when Redis misbehaves, and how the process starts and stops: wrong password,
//! Redis killed and restarted, Sentinel failover, SIGTERM with requests in flight.

use std::time::{Duration, Instant};

use crate::support::redis::{password_auth, RedisProcess, SentinelSetup, PASSWORD};
use crate::support::{BinaryApp, TestApp};
use futures::stream::{self, StreamExt};
use tally::config::{Credential, Durability, Secret, SentinelTarget, ServeConfig, StoreConfig};

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_gives_503_within_the_deadline_and_never_logs_the_password() {
    let redis = RedisProcess::server("");
    let wrong = "Wr0ng-secret-value-xyz";
    let dir = tempfile::tempdir().unwrap();
    let pw_file = dir.path().join("pw");
    std::fs::write(&pw_file, format!("{wrong}\n")).unwrap();
    let app = BinaryApp::start(&[
        (
            "TALLY_REDIS_URL",
            format!("redis://127.0.0.1:{}/0", redis.port),
        ),
        ("TALLY_REDIS_PASSWORD_FILE", pw_file.display().to_string()),
        ("TALLY_REQUEST_TIMEOUT", "1s".into()),
    ]);
    let client = http();
    let started = Instant::now();
    let r = client
        .get(format!("{}/acct", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(r.headers()["retry-after"], "1");
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("unavailable"));
    let r = client
        .get(format!("{}/readyz", app.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(
        client
            .get(format!("{}/healthz", app.admin))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let metrics = client
        .get(format!("{}/metrics", app.admin))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("kind=\"auth\""), "{metrics}");
    // Nothing was written.
    assert_eq!(redis.cli(&["EXISTS", "count:acct"]).unwrap().trim(), "0");

    // The same with the password inline in the URL: it must not leak either.
    let app2 = BinaryApp::start(&[(
        "TALLY_REDIS_URL",
        format!("redis://:{wrong}@127.0.0.1:{}/0", redis.port),
    )]);
    assert_eq!(
        client
            .get(format!("{}/x", app2.base))
            .send()
            .await
            .unwrap()
            .status(),
        503
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    for a in [&app, &app2] {
        let out = a.output_text();
        assert!(out.contains("starting tally serve"), "{out}");
        assert!(out.contains("<redacted>"), "{out}");
        assert!(
            !out.contains(wrong),
            "the password leaked into the log:\n{out}"
        );
        assert!(!out.contains(PASSWORD));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_run_gives_503_then_recovers_by_itself() {
    let mut redis = RedisProcess::server("");
    let mut config = crate::support::test_config();
    config.store =
        StoreConfig::Redis(tally::config::RedisTarget::parse_url(&redis.url(PASSWORD)).unwrap());
    config.request_timeout = Duration::from_millis(800);
    let app = TestApp::spawn(config).await;
    for n in 1..=3 {
        assert_eq!(
            app.json("/k").await,
            (200, serde_json::json!({ "count": n }))
        );
    }
    redis.kill();
    for _ in 0..5 {
        let started = Instant::now();
        let r = app.get("/k").await;
        assert_eq!(r.status(), 503);
        assert!(started.elapsed() < Duration::from_millis(1200));
        let body: serde_json::Value = r.json().await.unwrap();
        assert!(
            body.get("count").is_none(),
            "a 503 never carries a count: {body}"
        );
    }
    app.wait_ready(503, Duration::from_secs(5)).await;
    redis.restart(); // no persistence configured: the counter starts again from 0
    app.wait_ready(200, Duration::from_secs(5)).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, body) = app.json("/k").await;
        if status == 200 {
            assert_eq!(body["count"], 1);
            break;
        }
        assert!(Instant::now() < deadline, "no recovery: {status} {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_redis_costs_at_most_the_deadline() {
    let redis = RedisProcess::server("");
    let mut config = crate::support::test_config();
    config.store =
        StoreConfig::Redis(tally::config::RedisTarget::parse_url(&redis.url(PASSWORD)).unwrap());
    config.request_timeout = Duration::from_millis(500);
    let app = TestApp::spawn(config).await;
    assert_eq!(app.json("/h").await.0, 200);
    // CLIENT PAUSE holds every client's commands: to tally, a hung server.
    redis.cli(&["CLIENT", "PAUSE", "2000", "ALL"]).unwrap();
    let started = Instant::now();
    assert_eq!(app.get("/h").await.status(), 503);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_millis(1000),
        "{took:?}"
    );
    tokio::time::sleep(Duration::from_millis(1800)).await;
    // After the pause the INCR that timed out has run (it was queued): the count may be 3,
    // which is why a timeout is a 503 and never retried by tally.
    let (status, body) = app.json("/h").await;
    assert_eq!(status, 200, "{body}");
    assert!(matches!(body["count"].as_i64(), Some(2 | 3)), "{body}");
}

/// The app in Sentinel mode on `setup`, with the passwords the test processes use.
fn sentinel_config(setup: &SentinelSetup) -> ServeConfig {
    let mut config = crate::support::test_config();
    config.store = StoreConfig::Sentinel(SentinelTarget {
        sentinels: setup
            .sentinels
            .iter()
            .map(|s| ("127.0.0.1".to_owned(), s.port))
            .collect(),
        master_name: "mymaster".into(),
        sentinel_username: None,
        sentinel_password: Some(Credential::Inline(Secret::new(PASSWORD))),
        sentinel_tls: None,
        tls: None,
        auth: password_auth(),
        allow_eviction: false,
    });
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_mode_finds_the_master_and_follows_a_failover() {
    let setup = SentinelSetup::start();
    let mut config = sentinel_config(&setup);
    // Sentinel mode's default: acknowledge only what a replica has.
    config.durability = Durability::Replicated {
        replicas: 1,
        timeout: Duration::from_millis(500),
    };
    let app = TestApp::spawn(config).await;
    for n in 1..=10 {
        assert_eq!(app.json("/s").await.1["count"], n);
    }
    assert_eq!(setup.master.cli(&["GET", "count:s"]).unwrap().trim(), "10");

    // Wait for the replicas to have every write, then switch over.
    setup.wait_for(Duration::from_secs(10), "replicas caught up", |s| {
        s.replicas
            .iter()
            .all(|r| r.cli(&["GET", "count:s"]).is_some_and(|v| v.trim() == "10"))
    });
    setup.fail_over(0, setup.master.port, Duration::from_secs(40));
    let new_master = setup.node(setup.named_master_port().unwrap());
    // Increments keep working and continue from the old value on the new master.
    let started = Instant::now();
    let mut last = 10;
    let mut failed = 0;
    while last < 20 && started.elapsed() < Duration::from_secs(15) {
        let (status, body) = app.json("/s").await;
        if status == 200 {
            let count = body["count"].as_i64().unwrap();
            assert!(count > last, "count went back: {count} after {last}");
            last = count;
        } else {
            assert_eq!(status, 503, "{body}");
            failed += 1;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "failover: last count {last}, {failed} requests failed, {:?}",
        started.elapsed()
    );
    assert!(
        last >= 20,
        "tally did not follow the failover (last count {last}, {failed} failures)\n{}",
        app.metrics_text().await
    );
    // Nothing acknowledged was lost: the new master has every count tally handed out.
    let on_new_master: i64 = new_master
        .cli(&["GET", "count:s"])
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        on_new_master >= last,
        "acknowledged {last} but the new master has {on_new_master}"
    );
    assert!(new_master.cli(&["ROLE"]).unwrap().starts_with("master"));

    // Every sentinel announces the switch (+switch-master) as it adopts it; tally counts one
    // master change, so the flapping alert's "more than 3 in an hour" means failovers.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(master_changes(&app).await, 1.0);

    // A second failover is followed too: each sentinel subscription lives as long as the store
    // (one that ended after its first announcement once left the second unseen).
    let on_new = new_master.cli(&["GET", "count:s"]).unwrap();
    setup.wait_for(Duration::from_secs(20), "the others caught up", |s| {
        s.replicas
            .iter()
            .chain([&s.master])
            .filter(|r| r.port != new_master.port)
            .all(|r| r.cli(&["GET", "count:s"]).is_some_and(|v| v == on_new))
    });
    setup.fail_over(1, new_master.port, Duration::from_secs(40));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(master_changes(&app).await, 2.0);
}

async fn master_changes(app: &TestApp) -> f64 {
    let text = app.metrics_text().await;
    text.lines()
        .find_map(|l| l.strip_prefix("tally_master_changes_total ")?.parse().ok())
        .unwrap_or_else(|| panic!("no tally_master_changes_total in {text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_sentinel_does_not_hold_up_discovery() {
    let setup = SentinelSetup::start();
    setup.sentinels[0].signal("-STOP");
    let mut config = sentinel_config(&setup);
    config.request_timeout = Duration::from_secs(2);
    let app = TestApp::spawn(config).await;
    let started = Instant::now();
    let (status, body) = app.json("/h").await;
    let took = started.elapsed();
    setup.sentinels[0].signal("-CONT");
    assert_eq!(status, 200, "{body}");
    // The two live sentinels agree at once; the hung one is not waited for.
    assert!(took < Duration::from_millis(1000), "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_and_exits_zero() {
    let redis = RedisProcess::server("");
    let mut app = BinaryApp::start(&[
        ("TALLY_REDIS_URL", redis.url(PASSWORD)),
        ("TALLY_SHUTDOWN_DELAY", "1s".into()),
        ("TALLY_REQUEST_TIMEOUT", "5s".into()),
    ]);
    let client = http();
    let ready = || async {
        client
            .get(format!("{}/readyz", app.admin))
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while ready().await != 200 {
        assert!(Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Hold Redis for 2.5 s so requests are in flight across the whole shutdown sequence.
    redis.cli(&["CLIENT", "PAUSE", "2500", "WRITE"]).unwrap();
    let in_flight: Vec<_> = (0..20)
        .map(|_| {
            let (client, url) = (client.clone(), format!("{}/drain", app.base));
            tokio::spawn(async move { client.get(url).send().await.map(|r| r.status().as_u16()) })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    app.signal("TERM");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(ready().await, 503, "readyz must flip at once");
    // During the delay new requests are still served (they queue behind the pause).
    let during_delay = client
        .get(format!("{}/drain", app.base))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(during_delay, 200);
    let statuses: Vec<u16> = stream::iter(in_flight)
        .then(|h| async { h.await.unwrap().unwrap() })
        .collect()
        .await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(
        app.wait_exit(Duration::from_secs(10)),
        Some(0),
        "{}",
        app.output_text()
    );
    assert_eq!(redis.cli(&["GET", "count:drain"]).unwrap().trim(), "21");
    app.output_line("received SIGTERM").await;
    app.output_line("shutdown complete").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_the_binary_warns_and_serves_from_memory() {
    let app = BinaryApp::start(&[]);
    let r = http().get(format!("{}/m", app.base)).send().await.unwrap();
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["count"], 1);
    app.output_line("in-process memory store").await;
    // JSON log lines, one per request, with the request id.
    let access = app.output_line("\"tally::access\"").await;
    let line: serde_json::Value = serde_json::from_str(&access).unwrap();
    assert_eq!(line["route"], "/{id}");
    assert_eq!(line["status"], 200);
    assert!(line["request_id"].as_str().unwrap().len() == 36);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_variables_and_empty_prefix_reach_raw_keys() {
    let redis = RedisProcess::server("");
    redis.cli(&["SET", "legacy-id", "41"]).unwrap();
    let app = BinaryApp::start(&[
        ("REDIS_HOST", "127.0.0.1".into()),
        ("REDIS_PORT", redis.port.to_string()),
        ("REDIS_PASSWORD", PASSWORD.into()),
        ("TALLY_KEY_PREFIX", String::new()),
    ]);
    let client = http();
    let body: serde_json::Value = client
        .get(format!("{}/count/legacy-id", app.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["count"], 42);
    // A key holding something that is not a counter is a 409, not a 500 or a wrong answer.
    redis.cli(&["SET", "text", "hello"]).unwrap();
    let r = client
        .get(format!("{}/text", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    assert_eq!(redis.cli(&["GET", "text"]).unwrap().trim(), "hello");
}
