//! Redis Cluster under faults, on a real loopback cluster: a shard master SIGKILLed and a slot
//! range migrated, each under `tally check` load. Nothing acknowledged may be lost or counted
//! twice, and ids on the shards that did not fail must keep being served.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::cluster::ClusterSetup;
use crate::support::TestApp;
use tally::config::{Durability, ServeConfig};

/// `tally check` against `base` for `duration` over `ids` ids, as a child process.
fn check(base: &str, ids: u32, duration: &str) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_tally"))
        .args([
            "check",
            "--target",
            base,
            "--ids",
            &ids.to_string(),
            "-c",
            "16",
        ])
        .args(["--duration", duration, "--json"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start tally check")
}

async fn report(child: tokio::process::Child) -> serde_json::Value {
    let out = child.wait_with_output().await.unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!("no report: {}", String::from_utf8_lossy(&out.stdout));
    })
}

fn assert_exact(report: &serde_json::Value) {
    eprintln!("{report:#}");
    assert_eq!(report["lost"], 0, "{report:#}");
    assert_eq!(report["duplicated"], 0, "{report:#}");
    assert_eq!(report["over_count"], 0, "{report:#}");
    assert_eq!(report["passed"], true, "{report:#}");
}

/// Increments `id` in a loop until `stop`; returns the successes and each failure (when, what).
fn probe(
    app: &TestApp,
    id: String,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(u64, Vec<(Duration, String)>)> {
    let (client, base) = (app.client.clone(), app.base.clone());
    tokio::spawn(async move {
        let started = Instant::now();
        let (mut ok, mut failed) = (0, Vec::new());
        while !stop.load(Ordering::Relaxed) {
            match client.get(format!("{base}/{id}")).send().await {
                Ok(r) if r.status() == 200 => ok += 1,
                Ok(r) => failed.push((started.elapsed(), r.text().await.unwrap_or_default())),
                Err(e) => failed.push((started.elapsed(), e.to_string())),
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        (ok, failed)
    })
}

/// An id whose counter lives on another master than `port`.
fn id_elsewhere(cluster: &ClusterSetup, port: u16) -> String {
    (0..)
        .map(|i| format!("probe-{i}"))
        .find(|id| cluster.master_of(&format!("count:{{{id}}}")) != port)
        .unwrap()
}

fn replicated(cluster: &ClusterSetup) -> ServeConfig {
    ServeConfig {
        store: cluster.store_config(),
        durability: Durability::Replicated {
            replicas: 1,
            timeout: Duration::from_millis(500),
        },
        ..crate::support::test_config()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_shard_master_loses_nothing_and_other_shards_keep_serving() {
    // min-replicas-to-write: a master cut off from its replica refuses writes instead of
    // taking ones a failover would discard (the cluster config the chart ships).
    let mut cluster = ClusterSetup::start(3, 1, "min-replicas-to-write 1\nmin-replicas-max-lag 5");
    let app = TestApp::spawn(replicated(&cluster)).await;
    let victim = cluster.master_of("count:{victim}");
    let stop = Arc::new(AtomicBool::new(false));
    let elsewhere = probe(&app, id_elsewhere(&cluster, victim), stop.clone());
    let load = check(&app.base, 60, "14s");

    tokio::time::sleep(Duration::from_secs(3)).await;
    let killed_at = Instant::now();
    cluster.node(victim).kill();
    cluster.wait_for(
        Duration::from_secs(20),
        "a replica takes over the killed master's slots",
        |c| c.master_ports().len() == 3 && !c.master_ports().contains(&victim),
    );
    let promoted = killed_at.elapsed();
    // Back as a replica of the new master, so that shard takes writes again.
    cluster.node(victim).restart();
    let recovered = Instant::now();
    let mut victim_ok = None;
    while recovered.elapsed() < Duration::from_secs(15) {
        if app.get("/victim").await.status() == 200 {
            victim_ok = Some(killed_at.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let report = report(load).await;
    stop.store(true, Ordering::Relaxed);
    let (ok, failures) = elsewhere.await.unwrap();
    let failed = failures.len() as u64;
    eprintln!(
        "shard master killed: replica promoted after {promoted:?}, its ids served again after \
         {victim_ok:?}; an id on another shard: {ok} ok, {failed} failed {failures:?}"
    );
    let errors: Vec<String> = app
        .metrics_text()
        .await
        .lines()
        .filter(|l| l.starts_with("tally_store_errors_total"))
        .map(str::to_owned)
        .collect();
    eprintln!("{errors:#?}");
    if report["passed"] != true {
        // What each node did around the kill: elections, epochs, syncs.
        for node in &cluster.nodes {
            eprintln!("--- node {} log:\n{}", node.port, node.log());
        }
    }
    assert_exact(&report);
    assert!(
        victim_ok.is_some(),
        "the killed shard's ids never came back"
    );
    assert_eq!(
        failed,
        0,
        "an id on a healthy shard failed {failed} times of {}",
        ok + failed
    );
    assert!(ok > 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_range_migrated_under_load_loses_nothing() {
    let cluster = ClusterSetup::start(3, 0, "");
    let app = TestApp::spawn(ServeConfig {
        store: cluster.store_config(),
        ..crate::support::test_config()
    })
    .await;
    let ids = |port: u16| {
        let nodes = cluster.nodes[0].cli(&["CLUSTER", "NODES"]).unwrap();
        nodes
            .lines()
            .find(|l| l.contains(&format!(":{port}@")))
            .and_then(|l| l.split_whitespace().next().map(str::to_owned))
            .unwrap()
    };
    let masters = cluster.master_ports();
    let (from, to) = (ids(masters[0]), ids(masters[1]));
    let load = check(&app.base, 400, "12s");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let started = Instant::now();
    // One key per MIGRATE, so the slots stay half-moved for a while: requests meet ASK.
    let out = tokio::process::Command::new("redis-cli")
        .args(["--cluster", "reshard", &format!("127.0.0.1:{}", masters[0])])
        .args([
            "--cluster-from",
            &from,
            "--cluster-to",
            &to,
            "--cluster-slots",
            "3000",
        ])
        .args(["--cluster-yes", "--cluster-pipeline", "1"])
        .env("REDISCLI_AUTH", crate::support::redis::PASSWORD)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let migrated = started.elapsed();
    let report = report(load).await;
    let metrics = app.metrics_text().await;
    let redirects: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("tally_cluster_redirects_total"))
        .collect();
    eprintln!("3000 slots migrated in {migrated:?}; {redirects:?}");
    assert_exact(&report);
    assert!(
        redirects.iter().any(|l| l.contains("kind=\"moved\"")),
        "no MOVED followed: {redirects:?}"
    );
}
