//! A master that refuses writes with NOREPLICAS (`min-replicas-to-write` unmet: the chart's
//! preStop handover and its fence set it, and so does a master that lost its replicas): nothing
//! ran, so tally tries again until the deadline, and a write that finally runs counts once.

use std::time::{Duration, Instant};

use crate::support::redis::{RedisProcess, PASSWORD};
use crate::support::TestApp;
use tally::config::{RedisTarget, StoreConfig};

/// No replica ever connects, so `min-replicas-to-write 1` refuses every write until lifted.
fn fenced_redis() -> RedisProcess {
    RedisProcess::server("min-replicas-to-write 1\nmin-replicas-max-lag 10")
}

fn lift_fence(redis: &RedisProcess) {
    redis
        .cli(&["CONFIG", "SET", "min-replicas-to-write", "0"])
        .expect("CONFIG SET min-replicas-to-write 0");
}

async fn app_on(redis: &RedisProcess, deadline: Duration) -> TestApp {
    let mut config = crate::support::test_config();
    config.store = StoreConfig::Redis(RedisTarget::parse_url(&redis.url(PASSWORD)).unwrap());
    config.request_timeout = deadline;
    TestApp::spawn(config).await
}

/// `tally_store_retries_total`, summed over its `command` labels.
async fn retries(app: &TestApp) -> f64 {
    let text = app.metrics_text().await;
    text.lines()
        .filter(|l| l.starts_with("tally_store_retries_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_refused_with_noreplicas_is_retried_until_the_fence_lifts_and_counts_once() {
    let redis = fenced_redis();
    let app = app_on(&redis, Duration::from_secs(2)).await;
    let started = Instant::now();
    let ((status, body), ()) = tokio::join!(app.json("/k"), async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        lift_fence(&redis);
    });
    assert_eq!((status, &body), (200, &serde_json::json!({ "count": 1 })));
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "answered before the fence lifted: {:?}",
        started.elapsed()
    );
    assert!(retries(&app).await >= 1.0, "no retry counted");
    // The refused tries did not run: the next increment is the second.
    assert_eq!(
        app.json("/k").await,
        (200, serde_json::json!({ "count": 2 }))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fence_that_outlasts_the_deadline_gives_503_at_the_deadline_and_applies_nothing() {
    let redis = fenced_redis();
    let deadline = Duration::from_millis(800);
    let app = app_on(&redis, deadline).await;
    for _ in 0..3 {
        let started = Instant::now();
        let (status, body) = app.json("/k").await;
        assert_eq!(status, 503, "{body}");
        assert!(
            body.get("count").is_none(),
            "a 503 never carries a count: {body}"
        );
        // Retried until the deadline, not beyond it.
        assert!(
            started.elapsed() < deadline + Duration::from_millis(400),
            "{:?}",
            started.elapsed()
        );
    }
    assert!(retries(&app).await >= 3.0, "retries not counted");
    lift_fence(&redis);
    assert_eq!(
        app.json("/k").await,
        (200, serde_json::json!({ "count": 1 }))
    );
}

/// The other side of the rule: a write whose `WAIT` came back short ran, so it is answered 503
/// and never sent again. A Redis without replicas, with replicated durability: every `WAIT 1`
/// returns 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_its_replicas_did_not_confirm_gets_503_and_is_never_sent_again() {
    let redis = RedisProcess::server("");
    let mut config = crate::support::test_config();
    config.store = StoreConfig::Redis(RedisTarget::parse_url(&redis.url(PASSWORD)).unwrap());
    config.durability = tally::config::Durability::Replicated {
        replicas: 1,
        timeout: Duration::from_millis(200),
    };
    let app = TestApp::spawn(config).await;
    for n in 1..=2 {
        let (status, body) = app.json("/k").await;
        assert_eq!(status, 503, "{body}");
        assert!(
            body.get("count").is_none(),
            "a 503 never carries a count: {body}"
        );
        // It ran once: the read sees exactly n.
        assert_eq!(
            app.json("/api/v1/counters/k").await,
            (200, serde_json::json!({ "id": "k", "count": n }))
        );
    }
    assert_eq!(
        retries(&app).await,
        0.0,
        "an unconfirmed write was sent again"
    );
}
