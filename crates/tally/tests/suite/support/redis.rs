//! Real `redis-server` and `redis-sentinel` processes on free loopback ports, each in its own
//! temporary directory, with a password. Killed when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const PASSWORD: &str = "test-Pa55word-do-not-log";

/// The default user with the test password: how tally signs in to every server started here.
pub fn password_auth() -> tally::config::RedisAuth {
    tally::config::RedisAuth {
        username: None,
        password: Some(tally::config::Credential::Inline(
            tally::config::Secret::new(PASSWORD),
        )),
        db: 0,
    }
}

pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().unwrap().port()
}

fn binary(name: &str) -> PathBuf {
    for dir in std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .chain(["/usr/bin", "/usr/sbin"])
    {
        let candidate = Path::new(dir).join(name);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!("{name} is not installed: run ./scripts/test.sh, which installs it (apt-get install redis-server redis-sentinel)");
}

/// One Redis process (server or sentinel). Restartable on the same port and directory.
pub struct RedisProcess {
    pub port: u16,
    dir: tempfile::TempDir,
    conf: PathBuf,
    sentinel: bool,
    /// TLS only: the CA file redis-cli trusts, and its client certificate and key.
    cli_tls: Option<(PathBuf, (PathBuf, PathBuf))>,
    child: Option<Child>,
}

/// A TLS listener instead of a plain one: the server's certificate and key, and the CA (which
/// also verifies client certificates, when the config asks for them).
pub struct TlsListener {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
    /// The certificate and key redis-cli shows, for servers that require one.
    pub cli: (PathBuf, PathBuf),
}

impl RedisProcess {
    /// A password-protected server; `extra` lines are appended to its config.
    pub fn server(extra: &str) -> Self {
        let conf = format!(
            "requirepass {PASSWORD}\nmasterauth {PASSWORD}\nsave \"\"\nappendonly no\n{extra}\n"
        );
        Self::start(conf, false, None)
    }

    /// A sentinel watching `master_port` as `mymaster`, itself password-protected.
    pub fn sentinel(master_port: u16, quorum: u32) -> Self {
        let conf = format!(
            "requirepass {PASSWORD}\n\
             sentinel monitor mymaster 127.0.0.1 {master_port} {quorum}\n\
             sentinel auth-pass mymaster {PASSWORD}\n\
             sentinel down-after-milliseconds mymaster 1000\n\
             sentinel failover-timeout mymaster 5000\n\
             sentinel parallel-syncs mymaster 1\n"
        );
        Self::start(conf, true, None)
    }

    /// A server or sentinel with config `body`, on a plain port or, with `tls`, a TLS port only.
    pub fn start(body: String, sentinel: bool, tls: Option<TlsListener>) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let conf = dir.path().join(if sentinel {
            "sentinel.conf"
        } else {
            "redis.conf"
        });
        let listen = match &tls {
            None => format!("port {port}"),
            Some(t) => format!(
                "port 0\ntls-port {port}\ntls-cert-file {}\ntls-key-file {}\ntls-ca-cert-file {}",
                t.cert.display(),
                t.key.display(),
                t.ca.display()
            ),
        };
        let full = format!(
            "{listen}\nbind 127.0.0.1\nprotected-mode no\ndaemonize no\ndir {}\nlogfile {}\n{body}",
            dir.path().display(),
            dir.path().join("log").display()
        );
        std::fs::write(&conf, full).expect("write config");
        let mut process = Self {
            port,
            dir,
            conf,
            sentinel,
            cli_tls: tls.map(|t| (t.ca, t.cli)),
            child: None,
        };
        process.spawn();
        process
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new(binary(if self.sentinel {
            "redis-sentinel"
        } else {
            "redis-server"
        }));
        cmd.arg(&self.conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        self.child = Some(cmd.spawn().expect("start redis"));
        self.wait_until_up();
    }

    fn wait_until_up(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self
                .cli(&["PING"])
                .map(|o| o.trim() == "PONG")
                .unwrap_or(false)
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "redis on port {} did not come up; log:\n{}",
            self.port,
            self.log()
        );
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    /// Runs redis-cli against this process (password passed through the environment).
    pub fn cli(&self, args: &[&str]) -> Option<String> {
        let mut cmd = Command::new(binary("redis-cli"));
        cmd.args(["-h", "127.0.0.1", "-p", &self.port.to_string()]);
        if let Some((ca, (cert, key))) = &self.cli_tls {
            cmd.arg("--tls").arg("--cacert").arg(ca);
            cmd.arg("--cert").arg(cert).arg("--key").arg(key);
        }
        let out = cmd
            .args(args)
            .env("REDISCLI_AUTH", PASSWORD)
            .stderr(Stdio::null())
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// SIGKILL: no shutdown, no save.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGSTOP / SIGCONT: a hung process that still holds its port (the kernel accepts
    /// connections, nothing answers).
    pub fn signal(&self, name: &str) {
        if let Some(child) = &self.child {
            let pid = child.id().to_string();
            assert!(Command::new("kill")
                .args([name, &pid])
                .status()
                .unwrap()
                .success());
        }
    }

    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    pub fn url(&self, password: &str) -> String {
        format!("redis://:{password}@127.0.0.1:{}/0", self.port)
    }
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A master, two replicas and three sentinels (quorum 2), all on loopback: the topology of
/// the Helm chart, so that a failover leaves the new master with a replica.
pub struct SentinelSetup {
    pub master: RedisProcess,
    pub replicas: Vec<RedisProcess>,
    pub sentinels: Vec<RedisProcess>,
}

impl SentinelSetup {
    pub fn start() -> Self {
        // As the chart's redis.conf: a replica that needs a full sync after a failover gets it
        // at once, not after Redis's default 5 s wait for more replicas to join the transfer.
        const REPLICATION: &str = "repl-diskless-sync-delay 0";
        let master = RedisProcess::server(REPLICATION);
        let replicas = (0..2)
            .map(|_| {
                RedisProcess::server(&format!(
                    "{REPLICATION}\nreplicaof 127.0.0.1 {}",
                    master.port
                ))
            })
            .collect();
        let sentinels = (0..3)
            .map(|_| RedisProcess::sentinel(master.port, 2))
            .collect();
        let setup = Self {
            master,
            replicas,
            sentinels,
        };
        setup.wait_for(
            Duration::from_secs(20),
            "replicas in sync, acknowledging, and known to every sentinel",
            |s| {
                // After a diskless full sync the master streams writes to a replica only once
                // that replica's first REPLCONF ACK arrives (they come once a second): until then
                // the master lists it with offset=0, and a WAIT on it times out.
                let info = s.master.cli(&["INFO", "replication"]).unwrap_or_default();
                let acknowledging = info
                    .lines()
                    .filter(|l| l.starts_with("slave") && l.contains("state=online"))
                    .filter(|l| !l.contains(",offset=0,"))
                    .count();
                acknowledging == s.replicas.len()
                    && s.replicas.iter().all(|r| {
                        r.cli(&["INFO", "replication"])
                            .is_some_and(|i| i.contains("master_link_status:up"))
                            && s.sentinels.iter().all(|x| {
                                x.cli(&["SENTINEL", "replicas", "mymaster"])
                                    .is_some_and(|list| list.contains(&r.port.to_string()))
                            })
                    })
            },
        );
        setup
    }

    /// The process listening on `port`.
    pub fn node(&self, port: u16) -> &RedisProcess {
        std::iter::once(&self.master)
            .chain(&self.replicas)
            .find(|n| n.port == port)
            .expect("a node of this setup")
    }

    /// The master port a majority of sentinels names.
    pub fn named_master_port(&self) -> Option<u16> {
        let ports: Vec<u16> = self
            .sentinels
            .iter()
            .filter_map(|s| s.cli(&["SENTINEL", "get-master-addr-by-name", "mymaster"]))
            .filter_map(|a| a.lines().nth(1).and_then(|p| p.trim().parse().ok()))
            .collect();
        let first = *ports.first()?;
        (ports.iter().filter(|p| **p == first).count() >= 2).then_some(first)
    }

    /// Makes sentinel `via` fail the group over away from the master on `from`, and waits until
    /// every sentinel names another one. A forced failover that Sentinel aborts (a promotion not
    /// seen within failover-timeout, as happens on a loaded machine) leaves `via` naming `from`
    /// with no failover in progress: only then is it asked again, so a test sees exactly one
    /// master change (the other sentinels adopt a finished one from `via`'s hello messages).
    pub fn fail_over(&self, via: usize, from: u16, limit: Duration) {
        let names_from = |x: &RedisProcess| {
            x.cli(&["SENTINEL", "get-master-addr-by-name", "mymaster"])
                .and_then(|a| a.lines().nth(1).map(|p| p.trim().to_string()))
                .is_none_or(|p| p == from.to_string())
        };
        let sentinel = &self.sentinels[via];
        let deadline = Instant::now() + limit;
        let mut asked: Option<Instant> = None;
        while Instant::now() < deadline {
            if !self.sentinels.iter().any(names_from) {
                return;
            }
            let in_progress = sentinel
                .cli(&["SENTINEL", "MASTER", "mymaster"])
                .is_none_or(|m| m.contains("failover_in_progress"));
            let settled = asked.is_none_or(|t| t.elapsed() > Duration::from_secs(2));
            if names_from(sentinel) && !in_progress && settled {
                let answer = sentinel.cli(&["SENTINEL", "FAILOVER", "mymaster"]);
                eprintln!("SENTINEL FAILOVER via sentinel {via}: {answer:?}");
                asked = Some(Instant::now());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let logs: Vec<String> = self.sentinels.iter().map(|s| s.log()).collect();
        panic!(
            "timed out waiting for every sentinel to leave the master on port {from}; sentinel logs:\n{}",
            logs.join("\n----\n")
        );
    }

    pub fn wait_for(&self, limit: Duration, what: &str, ok: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if ok(self) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("timed out waiting for: {what}");
    }
}
