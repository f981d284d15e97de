//! `tally check` against a real tally on a real Redis: a clean run passes, and a run during
//! which acknowledged increments are destroyed is caught.

use std::time::Duration;

use crate::support::redis::{RedisProcess, PASSWORD};
use crate::support::TestApp;

async fn check(args: &[&str]) -> (i32, serde_json::Value, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_tally"))
        .arg("check")
        .args(args)
        .arg("--json")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let report = serde_json::from_str(&stdout).unwrap_or(serde_json::Value::Null);
    (out.status.code().unwrap_or(-1), report, stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_run_passes_with_exact_accounting() {
    let redis = RedisProcess::server("");
    let app = TestApp::on_redis(&redis.url(PASSWORD)).await;
    let (code, report, stderr) = check(&[
        "--target", &app.base, "-n", "1000", "-c", "20", "--ids", "7",
    ])
    .await;
    assert_eq!(code, 0, "{report:#} {stderr}");
    assert_eq!(report["requests"], 1000);
    assert_eq!(report["ok"], 1000);
    assert_eq!(report["availability_pct"], 100.0);
    assert_eq!(report["lost"], 0);
    assert_eq!(report["duplicated"], 0);
    assert_eq!(report["over_count"], 0);
    assert_eq!(report["passed"], true);
    // The ids were fresh and the counts add up in Redis too.
    let keys = redis.cli(&["KEYS", "count:check-*"]).unwrap();
    assert_eq!(keys.lines().count(), 7);
    let total: i64 = keys
        .lines()
        .map(|k| {
            redis
                .cli(&["GET", k])
                .unwrap()
                .trim()
                .parse::<i64>()
                .unwrap()
        })
        .sum();
    assert_eq!(total, 1000);

    // Final values read straight from Redis agree.
    let url = redis.url(PASSWORD);
    let (code, report, _) = check(&["--target", &app.base, "-n", "200", "--redis-url", &url]).await;
    assert_eq!(code, 0, "{report:#}");
    assert!(report["final_values_from"]
        .as_str()
        .unwrap()
        .starts_with("redis"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destroyed_increments_are_reported_as_lost_and_fail_the_run() {
    let redis = RedisProcess::server("");
    let app = TestApp::on_redis(&redis.url(PASSWORD)).await;
    let target = app.base.clone();
    let run = tokio::spawn(async move {
        check(&[
            "--target",
            &target,
            "-d",
            "2s",
            "-c",
            "4",
            "--ids",
            "3",
            "--id-prefix",
            "victim-",
            "--rate",
            "400",
        ])
        .await
    });
    // Mid-run, wipe the counters: every increment acknowledged so far is gone.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    redis.cli(&["FLUSHALL"]).unwrap();
    let (code, report, stderr) = run.await.unwrap();
    assert_eq!(code, 1, "{report:#} {stderr}");
    assert!(report["lost"].as_u64().unwrap() > 0, "{report:#}");
    // After the wipe the counters restart at 1: counts handed out twice.
    assert!(report["duplicated"].as_u64().unwrap() > 0, "{report:#}");
    assert_eq!(report["passed"], false);
    assert_eq!(report["findings"].as_array().unwrap().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unavailability_lowers_availability_and_min_availability_fails() {
    let mut redis = RedisProcess::server("");
    let app = TestApp::on_redis(&redis.url(PASSWORD)).await;
    let target = app.base.clone();
    let run = tokio::spawn(async move {
        check(&[
            "--target",
            &target,
            "-d",
            "3s",
            "-c",
            "4",
            "--rate",
            "200",
            "--min-availability",
            "99",
        ])
        .await
    });
    tokio::time::sleep(Duration::from_millis(800)).await;
    redis.kill();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    redis.restart();
    let (code, report, stderr) = run.await.unwrap();
    // The restart lost the data (no persistence): that is loss, and availability fell.
    assert_eq!(code, 1, "{report:#} {stderr}");
    let availability = report["availability_pct"].as_f64().unwrap();
    assert!(availability < 99.0 && availability > 20.0, "{report:#}");
    assert!(
        report["longest_gap_ms"].as_f64().unwrap() >= 800.0,
        "{report:#}"
    );
    let errors = report["errors"].as_array().unwrap();
    assert!(errors.iter().any(|e| e[0] == "http_503"), "{report:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_arguments_exit_2_with_a_message() {
    let (code, _, stderr) = check(&["--target", "ftp://x", "-n", "1"]).await;
    assert_eq!(code, 2);
    assert!(stderr.contains("http or https"), "{stderr}");
    let (code, _, stderr) = check(&[
        "--target",
        "http://127.0.0.1:1",
        "-n",
        "1",
        "--settle-timeout",
        "300ms",
    ])
    .await;
    assert_eq!(code, 2);
    assert!(stderr.contains("initial values"), "{stderr}");
}
