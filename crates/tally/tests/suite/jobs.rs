//! Fibonacci jobs end to end, on a real Redis and a real PostgreSQL, with `tally worker`
//! processes that get killed.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::postgres::Postgres;
use crate::support::redis::RedisProcess;
use crate::support::{wait_for_job_routes, TestApp};
use futures::stream::{self, StreamExt};
use num_bigint::BigUint;
use serde_json::{json, Value};

async fn submit(app: &TestApp, body: &str, key: Option<&str>) -> (u16, Value) {
    let mut request = app
        .client
        .post(format!("{}/api/v1/fib", app.base))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    let r = request.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Polls until the submission route answers something other than 503 (migrations done).
fn by_iteration(n: u32) -> String {
    let (mut a, mut b) = (BigUint::from(0u32), BigUint::from(1u32));
    for _ in 0..n {
        let next = &a + &b;
        a = std::mem::replace(&mut b, next);
    }
    a.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_jobs_complete_correctly_while_a_worker_is_killed() {
    let redis = RedisProcess::server("");
    let pg = Postgres::start();
    let app = TestApp::with_jobs(&redis, &pg).await;
    wait_for_job_routes(&app.base).await;

    // A consumer that takes jobs and dies without acknowledging them: its jobs must be
    // reclaimed by the real workers.
    for i in 0..5 {
        submit(&app, &format!(r#"{{"index":{}}}"#, 9_000 + i), None).await;
    }
    let ghost = redis
        .cli(&[
            "XREADGROUP",
            "GROUP",
            "workers",
            "ghost",
            "COUNT",
            "5",
            "STREAMS",
            "tally:fib:jobs",
            ">",
        ])
        .unwrap();
    assert!(ghost.contains("9000"), "{ghost}");

    let mut first = crate::support::worker(&redis, "worker-a");
    let first_pid = first.0.id().to_string();
    let mut second = crate::support::worker(&redis, "worker-b");
    // 1000 submissions over 200 distinct indexes, 20 at a time.
    let indexes: Vec<u32> = (0..1000).map(|n| (n * 37 % 200) as u32 * 50).collect();
    let statuses: Vec<u16> = stream::iter(indexes.iter().enumerate())
        .map(|(n, index)| {
            let (app, first_pid) = (&app, &first_pid);
            async move {
                if n == 400 {
                    // Mid-run: kill -9 one worker, jobs in hand or not.
                    let _ = Command::new("kill").args(["-KILL", first_pid]).status();
                }
                submit(app, &json!({ "index": index }).to_string(), None)
                    .await
                    .0
            }
        })
        .buffer_unordered(20)
        .collect()
        .await;
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 202),
        "{statuses:?}"
    );
    let _ = first.0.wait();

    let mut expected: Vec<u32> = indexes.clone();
    expected.extend(9_000..9_005);
    expected.sort_unstable();
    expected.dedup();
    let deadline = Instant::now() + Duration::from_secs(60);
    for index in &expected {
        loop {
            let (status, body) = app.json(&format!("/api/v1/fib/{index}")).await;
            if status == 200 {
                assert_eq!(body["status"], "done");
                assert_eq!(
                    body["value"].as_str().unwrap(),
                    by_iteration(*index),
                    "F({index})"
                );
                break;
            }
            assert_eq!(status, 202, "{body}");
            assert!(Instant::now() < deadline, "F({index}) still pending");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // Nothing left pending, nothing dead-lettered.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let pending = redis
            .cli(&["XPENDING", "tally:fib:jobs", "workers"])
            .unwrap();
        if pending.lines().next().map(str::trim) == Some("0") {
            break;
        }
        assert!(Instant::now() < deadline, "jobs left pending: {pending}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(redis.cli(&["XLEN", "tally:fib:dead"]).unwrap().trim(), "0");

    // The listings: every distinct index once in Postgres, every value in Redis.
    let (_, listed) = app.json("/api/v1/fib/indexes?limit=1000").await;
    assert_eq!(listed["indexes"].as_array().unwrap().len(), expected.len());
    let (_, values) = app.json("/api/v1/fib/values?limit=1000").await;
    let values = values["values"].as_array().unwrap();
    assert_eq!(values.len(), expected.len());
    assert_eq!(values[1], json!({ "index": 50, "value": by_iteration(50) }));
    let (status, again) = submit(&app, r#"{"index":50}"#, None).await;
    assert_eq!((status, &again["status"]), (200, &json!("done")));

    let _ = Command::new("kill")
        .args(["-TERM", &second.0.id().to_string()])
        .status();
    let code = second.0.wait().unwrap();
    assert!(code.success(), "a worker exits 0 on SIGTERM: {code:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_submissions_and_unknown_indexes() {
    let redis = RedisProcess::server("");
    let pg = Postgres::start();
    let app = TestApp::with_jobs(&redis, &pg).await;
    wait_for_job_routes(&app.base).await;
    for (body, status, why) in [
        (r#"{"index":10001}"#, 422, "from 0 to 10000"),
        (r#"{"index":-1}"#, 422, "from 0 to 10000"),
        (r#"{"index":"7"}"#, 400, "must be a number"),
        (r#"{"idx":7}"#, 400, "missing field: index"),
        ("{", 400, "malformed JSON"),
    ] {
        let (got, err) = submit(&app, body, None).await;
        assert_eq!(got, status, "{body}: {err}");
        assert!(
            err["error"].as_str().unwrap().contains(why),
            "{body}: {err}"
        );
    }
    let r = app
        .client
        .post(format!("{}/api/v1/fib", app.base))
        .body(r#"{"index":1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    assert_eq!(app.json("/api/v1/fib/123").await.0, 404);
    assert_eq!(app.json("/api/v1/fib/abc").await.0, 400);
    assert_eq!(app.json("/api/v1/fib/values?limit=0").await.0, 400);
    // Idempotent submission: recorded once.
    for _ in 0..3 {
        let (status, body) = submit(&app, r#"{"index":12}"#, Some("fib-key-1")).await;
        assert_eq!((status, body["status"].as_str()), (202, Some("pending")));
    }
    let (_, listed) = app.json("/api/v1/fib/indexes").await;
    assert_eq!(listed["indexes"][0]["submissions"], 1, "{listed}");
    assert_eq!(redis.cli(&["XLEN", "tally:fib:jobs"]).unwrap().trim(), "1");
    // A flood of submissions of a pending index queues nothing more, so it cannot push real
    // jobs out of the stream's cap.
    for _ in 0..50 {
        assert_eq!(submit(&app, r#"{"index":12}"#, None).await.0, 202);
    }
    assert_eq!(redis.cli(&["XLEN", "tally:fib:jobs"]).unwrap().trim(), "1");
    let (_, listed) = app.json("/api/v1/fib/indexes").await;
    assert_eq!(listed["indexes"][0]["submissions"], 51, "{listed}");
    let (status, _) = submit(&app, r#"{"index":13}"#, Some("fib-key-1")).await;
    assert_eq!(status, 422, "a key reused for another index");
    assert_eq!(app.json("/api/v1/fib/12").await.1["status"], "pending");

    // A malformed job goes to the dead-letter stream.
    redis
        .cli(&["XADD", "tally:fib:jobs", "*", "index", "not-a-number"])
        .unwrap();
    let _worker = crate::support::worker(&redis, "worker-c");
    let deadline = Instant::now() + Duration::from_secs(10);
    while redis.cli(&["XLEN", "tally:fib:dead"]).unwrap().trim() != "1" {
        assert!(
            Instant::now() < deadline,
            "the malformed job was not dead-lettered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_down_gives_503_on_job_routes_only_then_recovers() {
    let redis = RedisProcess::server("");
    let pg = Postgres::start();
    let app = TestApp::with_jobs(&redis, &pg).await;
    wait_for_job_routes(&app.base).await;
    assert_eq!(submit(&app, r#"{"index":5}"#, None).await.0, 202);
    pg.kill();
    let started = Instant::now();
    let (status, body) = submit(&app, r#"{"index":6}"#, None).await;
    assert_eq!(status, 503, "{body}");
    // The client learns which store is down, and no Postgres host or error leaks to it.
    assert_eq!(
        body["error"], "the job database is unavailable; retry later",
        "{body}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(app.json("/api/v1/fib/indexes").await.0, 503);
    // Nothing half-done: index 6 was not queued, so it is not pending either.
    assert_eq!(app.json("/api/v1/fib/6").await.0, 404);
    // Counters and messages do not need Postgres.
    assert_eq!(app.json("/still-counting").await.0, 200);
    assert_eq!(app.admin_status("/readyz").await, 200);
    pg.restart();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, body) = submit(&app, r#"{"index":6}"#, None).await;
        if status == 202 {
            break;
        }
        assert_eq!(status, 503, "{body}");
        assert!(
            Instant::now() < deadline,
            "no recovery after Postgres came back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(app.json("/api/v1/fib/6").await.0, 202);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_or_postgres_the_job_routes_say_what_is_missing() {
    let app = TestApp::memory().await;
    let (status, body) = submit(&app, r#"{"index":5}"#, None).await;
    assert_eq!(status, 503);
    assert!(
        body["error"].as_str().unwrap().contains("need Redis"),
        "{body}"
    );
    let redis = RedisProcess::server("");
    let app = TestApp::on_redis(&redis.url(crate::support::redis::PASSWORD)).await;
    let (status, body) = submit(&app, r#"{"index":5}"#, None).await;
    assert_eq!(status, 503);
    assert!(
        body["error"].as_str().unwrap().contains("need Postgres"),
        "{body}"
    );
}

/// The job system on a sharded store: every job key lives under one hash tag, so the scripts
/// that touch several of them run on one shard; the worker finds it through the slot map.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_complete_on_a_redis_cluster() {
    let cluster = crate::support::cluster::ClusterSetup::start(3, 0, "");
    let pg = Postgres::start();
    let app = TestApp::with_jobs_on(cluster.store_config(), &pg).await;
    wait_for_job_routes(&app.base).await;
    let store = [
        ("TALLY_REDIS_CLUSTER", cluster.seed_list()),
        (
            "TALLY_REDIS_PASSWORD",
            crate::support::redis::PASSWORD.to_owned(),
        ),
        ("TALLY_DURABILITY", "async".to_owned()),
    ];
    let _worker = crate::support::worker_on(&store, "cluster-worker");
    let indexes: Vec<u32> = (0..60).map(|n| n * 7).collect();
    for index in &indexes {
        let (status, body) = submit(&app, &json!({ "index": index }).to_string(), None).await;
        assert_eq!(status, 202, "{body}");
    }
    let (status, _) = submit(&app, r#"{"index":5}"#, Some("cluster-key")).await;
    assert_eq!(status, 202);
    assert_eq!(
        submit(&app, r#"{"index":6}"#, Some("cluster-key")).await.0,
        422
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    for index in indexes.iter().chain([&5]) {
        loop {
            let (status, body) = app.json(&format!("/api/v1/fib/{index}")).await;
            if body["status"] == "done" {
                assert_eq!(body["value"].as_str(), Some(by_iteration(*index).as_str()));
                break;
            }
            assert!(
                status < 500 && Instant::now() < deadline,
                "{index}: {status} {body}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // Every job key sits in one slot, on one master.
    let master = cluster.master_of("{tally:fib}:jobs");
    let keys = cluster.nodes.iter().find(|n| n.port == master).unwrap();
    let stored = keys.cli(&["KEYS", "{tally:fib}:*"]).unwrap();
    assert!(stored.lines().count() >= 4, "{stored}");
}
