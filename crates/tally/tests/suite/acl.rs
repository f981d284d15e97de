//! tally as the least-privilege ACL user `tally`, with the rules the chart's scripts write
//! (deploy/helm/tally/files/auth-lib.sh, one source): every feature works against a real Redis
//! with no command or key refused (Redis's ACL LOG stays empty), and the user is refused what
//! tally never needs.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::postgres::{Postgres, PG_PASSWORD};
use crate::support::redis::RedisProcess;
use crate::support::BinaryApp;

const TALLY_PASSWORD: &str = "tally-Acl-pass-7";

/// `user tally ...` as the chart's scripts write it into the ACL file, for a password file in
/// `auth` and the Redis installed here (the rules depend on its version).
fn tally_acl_line(auth: &std::path::Path) -> String {
    let files = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/helm/tally/files");
    let out = Command::new("sh")
        .arg("-c")
        .arg(r#". "$FILES_DIR/redis-lib.sh"; printf 'user tally %s\n' "$(acl_line redis tally)""#)
        .env("FILES_DIR", files)
        .env("REDIS_AUTH_DIR", auth)
        .output()
        .expect("run the chart's auth-lib.sh");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(
        line.starts_with("user tally on ") && line.contains('#'),
        "{line}"
    );
    line
}

/// redis-cli as the tally user: the reply, or the error text.
fn as_tally(redis: &RedisProcess, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &redis.port.to_string(),
            "--user",
            "tally",
        ])
        .args(args)
        .env("REDISCLI_AUTH", TALLY_PASSWORD)
        .output()
        .unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

async fn send(
    method: reqwest::Method,
    url: String,
    body: Option<Value>,
    key: Option<&str>,
) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .request(method, url)
        .timeout(Duration::from_secs(5));
    if let Some(body) = body {
        request = request.json(&body);
    }
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    let r = request.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_feature_works_as_the_acl_user_tally_and_nothing_else_does() {
    let auth = tempfile::tempdir().unwrap();
    std::fs::write(auth.path().join("tally-password"), TALLY_PASSWORD).unwrap();
    // DEBUG enabled, so that its refusal below is the ACL's and not the server's own setting.
    let redis = RedisProcess::server(&format!(
        "enable-debug-command yes\n{}",
        tally_acl_line(auth.path())
    ));
    let pg = Postgres::start();
    let as_user = [
        (
            "TALLY_REDIS_URL",
            format!("redis://localhost:{}/0", redis.port),
        ),
        ("TALLY_REDIS_USERNAME", "tally".to_owned()),
        (
            "TALLY_REDIS_PASSWORD_FILE",
            auth.path().join("tally-password").display().to_string(),
        ),
    ];
    let api = BinaryApp::start(
        &[
            &as_user[..],
            &[
                ("TALLY_DATABASE_URL", pg.url()),
                ("TALLY_DATABASE_PASSWORD", PG_PASSWORD.into()),
            ],
        ]
        .concat(),
    );
    let _worker = BinaryApp::start_command(
        "worker",
        &[&as_user[..], &[("TALLY_WORKER_NAME", "w".into())]].concat(),
    );
    let url = |path: &str| format!("{}{path}", api.base);
    use reqwest::Method;

    // Counters: INCR, the idempotent script, the read route.
    assert_eq!(
        send(Method::GET, url("/acl"), None, None).await,
        (200, json!({"count": 1}))
    );
    let keyed = send(Method::GET, url("/acl"), None, Some("k-1")).await;
    assert_eq!(keyed, (200, json!({"count": 2})));
    assert_eq!(
        send(Method::GET, url("/acl"), None, Some("k-1")).await,
        keyed,
        "a replay"
    );
    assert_eq!(
        send(Method::GET, url("/api/v1/counters/acl"), None, None)
            .await
            .1["count"],
        2
    );
    // Guestbook: XADD (plain and idempotent), XREVRANGE, XRANGE.
    let (status, posted) = send(
        Method::POST,
        url("/api/v1/messages"),
        Some(json!({"text": "hi"})),
        None,
    )
    .await;
    assert_eq!(status, 201, "{posted}");
    let (status, _) = send(
        Method::POST,
        url("/api/v1/messages"),
        Some(json!({"text": "again"})),
        Some("m-1"),
    )
    .await;
    assert_eq!(status, 201);
    let (status, list) = send(Method::GET, url("/api/v1/messages?limit=1"), None, None).await;
    assert_eq!(
        (status, list["messages"].as_array().map(Vec::len)),
        (200, Some(1))
    );
    let id = posted["id"].as_str().unwrap();
    assert_eq!(
        send(
            Method::GET,
            url(&format!("/api/v1/messages/{id}")),
            None,
            None
        )
        .await
        .0,
        200
    );
    // Jobs: the enqueue script, then the worker's group, reads, acks and stored value.
    api.wait_for_job_routes().await;
    let (status, body) = send(
        Method::POST,
        url("/api/v1/fib"),
        Some(json!({"index": 20})),
        None,
    )
    .await;
    assert!(
        status == 202 || status == 200 || status == 201,
        "{status} {body}"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = send(Method::GET, url("/api/v1/fib/20"), None, None).await;
        if status == 200 && body["value"] == "6765" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the job was not done: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        send(Method::GET, url("/api/v1/fib/indexes"), None, None)
            .await
            .0,
        200
    );

    // Nothing tally did was refused: Redis logs every ACL denial.
    let log = redis.cli(&["ACL", "LOG"]).unwrap();
    assert!(log.trim().is_empty(), "ACL denials:\n{log}");
    assert!(
        !api.output_text().contains("NOPERM"),
        "{}",
        api.output_text()
    );

    // And the user cannot do what tally never does.
    for refused in [
        &["FLUSHALL"][..],
        &["FLUSHDB"],
        &["CONFIG", "GET", "maxmemory"],
        &["KEYS", "*"],
        &["DEBUG", "SLEEP", "0"],
        &["SCRIPT", "FLUSH"],
        &["SHUTDOWN", "NOSAVE"],
        &["ACL", "LIST"],
        &["EVAL", "return 1", "0"],
        &["SELECT", "15"],
        &["GET", "not-tallys-key"],
    ] {
        let answer = as_tally(&redis, refused);
        assert!(
            answer.contains("NOPERM"),
            "{refused:?} was not refused: {answer}"
        );
    }
    assert_eq!(as_tally(&redis, &["GET", "count:acl"]).trim(), "2");
}
