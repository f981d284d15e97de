//! TLS to Redis and Sentinel against real TLS servers with a CA the test makes
//! (scripts/test-certs.sh): the private CA is trusted, another CA or a host name the certificate
//! does not carry is refused, a client certificate is offered when the server asks, and a
//! rotated CA and certificate reach new connections without a restart.

use std::time::{Duration, Instant};

use crate::support::redis::{RedisProcess, PASSWORD};
use crate::support::tls::{tls_sentinel_setup, tls_server, TestCa};
use crate::support::BinaryApp;

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

async fn count(app: &BinaryApp, id: &str) -> (u16, serde_json::Value) {
    let r = client()
        .get(format!("{}/{id}", app.base))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or_default())
}

/// Waits up to 5 s for `needle` in the app's output (lines arrive through a pipe).
async fn logged(app: &BinaryApp, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !app.output_text().contains(needle) {
        assert!(
            Instant::now() < deadline,
            "no {needle:?} in:\n{}",
            app.output_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn tls_env(url: String, ca: &std::path::Path) -> Vec<(&'static str, String)> {
    vec![
        ("TALLY_REDIS_URL", url),
        ("TALLY_REDIS_TLS_CA_FILE", ca.display().to_string()),
        ("TALLY_REQUEST_TIMEOUT", "1s".into()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_redis_over_tls_trusts_only_its_ca_and_its_host_names() {
    let ca = TestCa::new();
    let redis = tls_server(&ca, "redis", "");
    let url = |host: &str| format!("rediss://:{PASSWORD}@{host}:{}/0", redis.port);

    let app = BinaryApp::start(&tls_env(url("localhost"), &ca.ca()));
    assert_eq!(
        count(&app, "tls").await,
        (200, serde_json::json!({"count": 1}))
    );
    assert_eq!(redis.cli(&["GET", "count:tls"]).unwrap().trim(), "1");

    // Another CA: refused, 503, and the reason in the log.
    let other = TestCa::new();
    let stranger = BinaryApp::start(&tls_env(url("localhost"), &other.ca()));
    assert_eq!(count(&stranger, "tls").await.0, 503);
    logged(&stranger, "UnknownIssuer").await;
    // The right CA but an address the certificate does not name (it names localhost only).
    let by_ip = BinaryApp::start(&tls_env(url("127.0.0.1"), &ca.ca()));
    assert_eq!(count(&by_ip, "tls").await.0, 503);
    logged(&by_ip, "certificate not valid for name").await;
    // The public web roots (no CA file) do not know a private CA either.
    let no_ca = BinaryApp::start(&[("TALLY_REDIS_URL", url("localhost"))]);
    assert_eq!(count(&no_ca, "tls").await.0, 503);
    // A plain connection to the TLS port is no answer either.
    let plain = BinaryApp::start(&[(
        "TALLY_REDIS_URL",
        format!("redis://:{PASSWORD}@localhost:{}/0", redis.port),
    )]);
    assert_eq!(count(&plain, "tls").await.0, 503);
    assert_eq!(redis.cli(&["GET", "count:tls"]).unwrap().trim(), "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_is_offered_and_a_rotated_ca_needs_no_restart() {
    let ca = TestCa::new();
    let redis = tls_server(&ca, "redis", "tls-auth-clients yes");
    let (cert, key) = ca.issue("tally", &["tally"]);
    // tally reads its CA from a file it is told of, as from a mounted Secret.
    let mounted = tempfile::tempdir().unwrap();
    let ca_file = mounted.path().join("ca.crt");
    std::fs::copy(ca.ca(), &ca_file).unwrap();
    let mut env = tls_env(
        format!("rediss://:{PASSWORD}@localhost:{}/0", redis.port),
        &ca_file,
    );
    env.push(("TALLY_REDIS_TLS_CERT_FILE", cert.display().to_string()));
    env.push(("TALLY_REDIS_TLS_KEY_FILE", key.display().to_string()));
    let app = BinaryApp::start(&env);
    assert_eq!(count(&app, "mtls").await.0, 200);
    // Without the client certificate the server refuses the handshake.
    let anonymous = BinaryApp::start(&tls_env(
        format!("rediss://:{PASSWORD}@localhost:{}/0", redis.port),
        &ca_file,
    ));
    assert_eq!(count(&anonymous, "mtls").await.0, 503);

    // Rotation: a new CA signs new certificates for the server and for tally. The server takes
    // its new files (CONFIG SET reloads them), the mounted files are rewritten, and the next
    // connection tally opens uses them: no restart.
    let next = TestCa::new();
    let server = next.listener("redis-next");
    let (next_cert, next_key) = next.issue("tally-next", &["tally"]);
    // In one CONFIG SET: the server verifies clients against its CA file too.
    let (new_ca, new_cert, new_key) = (
        server.ca.display().to_string(),
        server.cert.display().to_string(),
        server.key.display().to_string(),
    );
    let answer = redis.cli(&[
        "CONFIG",
        "SET",
        "tls-ca-cert-file",
        &new_ca,
        "tls-cert-file",
        &new_cert,
        "tls-key-file",
        &new_key,
    ]);
    assert_eq!(answer.as_deref().map(str::trim), Some("OK"));
    std::fs::copy(next.ca(), &ca_file).unwrap();
    std::fs::copy(&next_cert, &cert).unwrap();
    std::fs::copy(&next_key, &key).unwrap();
    // The connection tally holds was made with the old certificates; it goes on working until
    // it is gone. Drop it, and the next request reconnects with what the files hold now.
    redis_with_ca(&redis, &next).kill_normal_clients();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut status = 0;
    while Instant::now() < deadline {
        status = count(&app, "mtls").await.0;
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, 200, "{}", app.output_text());
}

/// redis-cli needs the new CA once the server has changed its certificate.
fn redis_with_ca<'a>(redis: &'a RedisProcess, ca: &'a TestCa) -> CliWithCa<'a> {
    CliWithCa { redis, ca }
}

struct CliWithCa<'a> {
    redis: &'a RedisProcess,
    ca: &'a TestCa,
}

impl CliWithCa<'_> {
    fn kill_normal_clients(&self) {
        let (cert, key) = self.ca.issue("cli", &["cli"]);
        let out = std::process::Command::new("redis-cli")
            .args([
                "-h",
                "localhost",
                "-p",
                &self.redis.port.to_string(),
                "--tls",
            ])
            .arg("--cacert")
            .arg(self.ca.ca())
            .arg("--cert")
            .arg(cert)
            .arg("--key")
            .arg(key)
            .args(["CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"])
            .env("REDISCLI_AUTH", PASSWORD)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_mode_over_tls_follows_a_failover() {
    let ca = TestCa::new();
    let setup = tls_sentinel_setup(&ca);
    let sentinels: Vec<String> = setup
        .sentinels
        .iter()
        .map(|s| format!("localhost:{}", s.port))
        .collect();
    let app = BinaryApp::start(&[
        ("TALLY_REDIS_SENTINELS", sentinels.join(",")),
        ("TALLY_REDIS_PASSWORD", PASSWORD.into()),
        ("TALLY_SENTINEL_PASSWORD", PASSWORD.into()),
        ("TALLY_REDIS_TLS", "true".into()),
        ("TALLY_SENTINEL_TLS", "true".into()),
        ("TALLY_REDIS_TLS_CA_FILE", ca.ca().display().to_string()),
    ]);
    for n in 1..=5 {
        assert_eq!(
            count(&app, "s").await,
            (200, serde_json::json!({"count": n}))
        );
    }
    setup.wait_for(Duration::from_secs(10), "replicas have every write", |s| {
        s.replicas
            .iter()
            .all(|r| r.cli(&["GET", "count:s"]).is_some_and(|v| v.trim() == "5"))
    });
    setup.fail_over(0, setup.master.port, Duration::from_secs(40));
    // Increments go on, on the new master, over TLS: the sentinels name it `localhost`, which
    // its certificate carries.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut last = 5;
    while last < 10 && Instant::now() < deadline {
        let (status, body) = count(&app, "s").await;
        if status == 200 {
            let n = body["count"].as_i64().unwrap();
            assert_eq!(n, last + 1, "every answer is the next count");
            last = n;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(last, 10, "{}", app.output_text());
    let new_master = setup.node(setup.named_master_port().unwrap());
    assert_eq!(new_master.cli(&["GET", "count:s"]).unwrap().trim(), "10");
}
