//! A throwaway PostgreSQL from Debian's `postgresql` package: `initdb` and `pg_ctl` in a temp
//! directory on a free loopback port, with a password. Postgres refuses to run as root, so as
//! root it runs as the `postgres` user.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::redis::free_port;

pub const PG_PASSWORD: &str = "pg-Test-pass-9";

fn bin(name: &str) -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path().join("bin").join(name))
                .collect()
        })
        .unwrap_or_default();
    versions.sort();
    versions.pop().filter(|p| p.exists()).unwrap_or_else(|| {
        panic!("{name} is not installed: run ./scripts/test.sh, which installs postgresql")
    })
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0\n"))
        .unwrap_or(false)
}

/// Runs a Postgres tool as the unprivileged user it needs.
fn as_pg(program: PathBuf) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

pub struct Postgres {
    pub port: u16,
    dir: tempfile::TempDir,
    /// Server options beyond the listener's (TLS).
    options: String,
}

impl Postgres {
    pub fn start() -> Self {
        Self::start_with(|_| String::new())
    }

    /// A server that also speaks TLS, with a certificate for `localhost` from `ca`.
    pub fn start_tls(ca: &super::tls::TestCa) -> Self {
        Self::start_with(|dir| {
            let (cert, key) = ca.issue("postgres", &["localhost"]);
            let (cert_to, key_to) = (dir.join("server.crt"), dir.join("server.key"));
            std::fs::copy(cert, &cert_to).unwrap();
            std::fs::copy(key, &key_to).unwrap();
            if is_root() {
                Command::new("chown")
                    .args(["postgres"])
                    .args([&cert_to, &key_to])
                    .status()
                    .unwrap();
            }
            format!(
                "-c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
                cert_to.display(),
                key_to.display()
            )
        })
    }

    fn start_with(options: impl FnOnce(&std::path::Path) -> String) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("tally-pg")
            .tempdir()
            .unwrap();
        if is_root() {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(ok.success(), "chown for postgres");
        }
        let pwfile = dir.path().join("pw");
        std::fs::write(&pwfile, PG_PASSWORD).unwrap();
        if is_root() {
            Command::new("chown")
                .args(["postgres", pwfile.to_str().unwrap()])
                .status()
                .unwrap();
        }
        let data = dir.path().join("data");
        let out = as_pg(bin("initdb"))
            .args([
                "-D",
                data.to_str().unwrap(),
                "-U",
                "tally",
                "--auth=scram-sha-256",
            ])
            .arg(format!("--pwfile={}", pwfile.display()))
            .stdout(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let options = options(dir.path());
        let pg = Self {
            port: free_port(),
            dir,
            options,
        };
        pg.pg_ctl_start();
        pg
    }

    fn pg_ctl_start(&self) {
        let data = self.dir.path().join("data");
        let options = format!(
            "-c listen_addresses=127.0.0.1 -c port={} -c unix_socket_directories={} -c fsync=off {}",
            self.port,
            self.dir.path().display(),
            self.options
        );
        let out = as_pg(bin("pg_ctl"))
            .args(["-D", data.to_str().unwrap(), "-o", &options, "-l"])
            .arg(self.dir.path().join("log"))
            .args(["-w", "-t", "30", "start"])
            .stdout(Stdio::null())
            .output()
            .unwrap();
        let log = std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default();
        assert!(
            out.status.success(),
            "pg_ctl start: {}\n{log}",
            String::from_utf8_lossy(&out.stderr)
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "postgres did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `postgres://tally@127.0.0.1:PORT/postgres`; the password goes separately.
    pub fn url(&self) -> String {
        format!("postgres://tally@127.0.0.1:{}/postgres", self.port)
    }

    /// Runs one query as the `tally` superuser over the local socket; its single value.
    pub fn query(&self, sql: &str) -> String {
        let out = as_pg(bin("psql"))
            .args([
                "-h",
                self.dir.path().to_str().unwrap(),
                "-p",
                &self.port.to_string(),
            ])
            .args(["-U", "tally", "-d", "postgres", "-At", "-c", sql])
            .env("PGPASSWORD", PG_PASSWORD)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "psql: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// SIGKILL the postmaster: no shutdown checkpoint, connections cut.
    pub fn kill(&self) {
        let pid_file = self.dir.path().join("data/postmaster.pid");
        if let Ok(text) = std::fs::read_to_string(pid_file) {
            if let Some(pid) = text.lines().next() {
                let _ = Command::new("kill").args(["-KILL", pid]).status();
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
            assert!(Instant::now() < deadline, "postgres did not die");
            std::thread::sleep(Duration::from_millis(50));
        }
        // Children of a killed postmaster linger briefly and hold shared memory.
        std::thread::sleep(Duration::from_millis(500));
    }

    pub fn restart(&self) {
        // A killed postmaster leaves its pid file and socket lock behind.
        let _ = std::fs::remove_file(self.dir.path().join("data/postmaster.pid"));
        let _ = std::fs::remove_file(self.dir.path().join(format!(".s.PGSQL.{}.lock", self.port)));
        self.pg_ctl_start();
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let _ = as_pg(bin("pg_ctl"))
            .args(["-D", data.to_str().unwrap(), "-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
