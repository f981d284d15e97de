//! Password rotation without a restart, against a real Redis with an ACL user: while the user
//! carries both passwords the mounted file changes, and tally's next connection uses the new
//! one; no request fails during the rotation.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::redis::RedisProcess;
use crate::support::BinaryApp;

/// As the kubelet updates a mounted Secret: the new content appears at once, by a rename.
fn write_atomically(path: &Path, content: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, content).unwrap();
    std::fs::rename(tmp, path).unwrap();
}

fn acl(redis: &RedisProcess, args: &[&str]) {
    let mut full = vec!["ACL", "SETUSER", "rotated"];
    full.extend_from_slice(args);
    assert_eq!(
        redis.cli(&full).as_deref().map(str::trim),
        Some("OK"),
        "{args:?}"
    );
}

async fn status(url: String) -> u16 {
    reqwest::Client::new()
        .get(url)
        .timeout(Duration::from_secs(3))
        .send()
        .await
        .map_or(0, |r| r.status().as_u16())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_password_file_reaches_new_connections_and_no_request_fails() {
    let redis = RedisProcess::server("");
    acl(&redis, &["on", ">old-Pa55", "~*", "+@all"]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("redis-password");
    write_atomically(&file, "old-Pa55\n");
    let app = BinaryApp::start(&[
        (
            "TALLY_REDIS_URL",
            format!("redis://localhost:{}/0", redis.port),
        ),
        ("TALLY_REDIS_USERNAME", "rotated".into()),
        ("TALLY_REDIS_PASSWORD_FILE", file.display().to_string()),
    ]);
    let url = format!("{}/rotation", app.base);
    let get = move || status(url.clone());
    assert_eq!(get().await, 200);

    // Load through the whole rotation: four clients, every answer checked.
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let stop = Instant::now() + Duration::from_secs(3);
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (ok, failed, get) = (ok.clone(), failed.clone(), get.clone());
            tokio::spawn(async move {
                while Instant::now() < stop {
                    match get().await {
                        200 => ok.fetch_add(1, Ordering::Relaxed),
                        _ => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    // The rotation runbook (docs/security.md): add the new password, roll the Secret out,
    // then remove the old password.
    tokio::time::sleep(Duration::from_millis(500)).await;
    acl(&redis, &[">new-Pa55"]);
    write_atomically(&file, "new-Pa55\n");
    tokio::time::sleep(Duration::from_millis(500)).await;
    acl(&redis, &["<old-Pa55"]);
    for task in load {
        task.await.unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!("rotation under load: {ok} ok, {failed} failed");
    assert!(ok > 100, "too little load to judge: {ok}");
    assert_eq!(failed, 0, "requests failed during the rotation");

    // The connection opened before the rotation still works (Redis keeps it authenticated).
    // Dropped, it is replaced by one that can only have used the new password.
    redis.cli(&["CLIENT", "KILL", "USER", "rotated"]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while get().await != 200 {
        assert!(Instant::now() < deadline, "{}", app.output_text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let clients = redis.cli(&["CLIENT", "LIST"]).unwrap();
    assert!(clients.contains("user=rotated"), "{clients}");

    // A file caught empty (rewritten in place) is not an empty password: the last one read is
    // used, with a warning; and the password never appears in the log.
    write_atomically(&file, "");
    redis.cli(&["CLIENT", "KILL", "USER", "rotated"]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while get().await != 200 {
        assert!(Instant::now() < deadline, "{}", app.output_text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while !app.output_text().contains("using the password read last") {
        assert!(Instant::now() < deadline, "{}", app.output_text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = app.output_text();
    assert!(!log.contains("Pa55"), "a password in the log:\n{log}");
}
