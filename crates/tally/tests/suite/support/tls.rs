//! A test certificate authority (scripts/test-certs.sh, the one the harness uses too) and TLS
//! versions of the Redis and Sentinel processes: certificates name `localhost`, never an IP.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use super::redis::{RedisProcess, SentinelSetup, TlsListener, PASSWORD};

pub struct TestCa {
    pub dir: tempfile::TempDir,
}

impl TestCa {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        certs(&["ca", &dir.path().display().to_string()]);
        Self { dir }
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// A certificate named `name` for the host names `dns`, signed by this CA: (cert, key).
    pub fn issue(&self, name: &str, dns: &[&str]) -> (PathBuf, PathBuf) {
        let mut args = vec!["issue", self.dir.path().to_str().unwrap(), name];
        args.extend_from_slice(dns);
        certs(&args);
        (
            self.dir.path().join(format!("{name}.crt")),
            self.dir.path().join(format!("{name}.key")),
        )
    }

    /// A TLS listener for a server known as `localhost`.
    pub fn listener(&self, name: &str) -> TlsListener {
        let (cert, key) = self.issue(name, &["localhost"]);
        TlsListener {
            cert,
            key,
            ca: self.ca(),
            cli: self.issue(&format!("{name}-cli"), &["redis-cli"]),
        }
    }
}

fn certs(args: &[&str]) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/test-certs.sh");
    let out = Command::new("bash")
        .arg(script)
        .args(args)
        .output()
        .expect("run test-certs.sh");
    assert!(
        out.status.success(),
        "test-certs.sh {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// TLS on every link of the group: clients, replication (`tls-replication`), and the sentinels'
/// own port; nodes announce the name `localhost`, so the sentinels name the master by it.
const TLS_NODE: &str =
    "tls-auth-clients optional\ntls-replication yes\nreplica-announce-ip localhost\n\
                        repl-diskless-sync-delay 0";

pub fn tls_server(ca: &TestCa, name: &str, extra: &str) -> RedisProcess {
    let conf = format!(
        "requirepass {PASSWORD}\nmasterauth {PASSWORD}\nsave \"\"\nappendonly no\n{TLS_NODE}\n{extra}\n"
    );
    RedisProcess::start(conf, false, Some(ca.listener(name)))
}

fn tls_sentinel(ca: &TestCa, name: &str, master_port: u16) -> RedisProcess {
    let conf = format!(
        "requirepass {PASSWORD}\n\
         tls-auth-clients optional\ntls-replication yes\n\
         sentinel resolve-hostnames yes\nsentinel announce-hostnames yes\n\
         sentinel monitor mymaster localhost {master_port} 2\n\
         sentinel auth-pass mymaster {PASSWORD}\n\
         sentinel down-after-milliseconds mymaster 1000\n\
         sentinel failover-timeout mymaster 5000\n"
    );
    RedisProcess::start(conf, true, Some(ca.listener(name)))
}

/// The SentinelSetup topology over TLS.
pub fn tls_sentinel_setup(ca: &TestCa) -> SentinelSetup {
    let master = tls_server(ca, "redis-0", "");
    let replicas = (1..=2)
        .map(|i| {
            tls_server(
                ca,
                &format!("redis-{i}"),
                &format!("replicaof localhost {}", master.port),
            )
        })
        .collect();
    let sentinels = (0..3)
        .map(|i| tls_sentinel(ca, &format!("sentinel-{i}"), master.port))
        .collect();
    let setup = SentinelSetup {
        master,
        replicas,
        sentinels,
    };
    setup.wait_for(Duration::from_secs(30), "a replicated TLS group", |s| {
        s.replicas.iter().all(|r| {
            r.cli(&["INFO", "replication"])
                .is_some_and(|i| i.contains("master_link_status:up"))
        }) && s.named_master_port() == Some(s.master.port)
    });
    setup
}
