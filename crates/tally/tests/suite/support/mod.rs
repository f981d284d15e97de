//! Test support: real Redis processes and the app, in-process on random ports or as the real
//! binary. No mocks: every store test talks to a real `redis-server`.

pub mod cluster;
pub mod postgres;
pub mod redis;
pub mod tls;
pub mod web;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use std::net::SocketAddr;
use tally::app::serve::Server;
use tally::config::{
    Drain, Durability, Limits, ListenerLimits, RedisTarget, ServeConfig, StoreConfig,
};
use tokio::sync::oneshot;

/// The body of a GET of `url` as text (panics on a transport error).
pub async fn get_text(client: &reqwest::Client, url: String) -> String {
    client.get(url).send().await.unwrap().text().await.unwrap()
}

/// The store a behavioural test runs against.
#[derive(Clone, Copy)]
pub enum Backend {
    Memory,
    Redis,
    /// Three masters without replicas: the contract on a sharded store.
    Cluster,
}

/// The app on the chosen store; the Redis process lives as long as the fixture.
pub struct Fixture {
    pub app: TestApp,
    /// Held only to keep the Redis process alive for the fixture's lifetime.
    pub _redis: Option<redis::RedisProcess>,
    pub _cluster: Option<cluster::ClusterSetup>,
}

pub async fn fixture(backend: Backend) -> Fixture {
    match backend {
        Backend::Memory => Fixture {
            app: TestApp::memory().await,
            _redis: None,
            _cluster: None,
        },
        Backend::Cluster => {
            let cluster = cluster::ClusterSetup::start(3, 0, "");
            let app = TestApp::spawn(ServeConfig {
                store: cluster.store_config(),
                ..test_config()
            })
            .await;
            Fixture {
                app,
                _redis: None,
                _cluster: Some(cluster),
            }
        }
        Backend::Redis => {
            let redis = redis::RedisProcess::server("");
            let app = TestApp::on_redis(&redis.url(redis::PASSWORD)).await;
            Fixture {
                app,
                _redis: Some(redis),
                _cluster: None,
            }
        }
    }
}

/// The configuration tests start from: loopback listeners on free ports, the memory store, and
/// the defaults of `tally serve` otherwise.
pub fn test_config() -> ServeConfig {
    ServeConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        admin_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        store: StoreConfig::Memory,
        durability: Durability::Async,
        key_namespace: "tally".into(),
        key_prefix: "count:".into(),
        messages_key: None,
        message_retention: 10_000,
        memory_max_entries: 100_000,
        database: None,
        fib_max_index: 10_000,
        request_timeout: Duration::from_secs(2),
        idempotency_ttl: Duration::from_secs(600),
        readiness_interval: Duration::from_millis(200),
        drain: Drain {
            delay: Duration::ZERO,
            timeout: Duration::from_secs(10),
        },
        limits: ListenerLimits {
            public: Limits {
                header_timeout: Duration::from_secs(10),
                idle_timeout: Duration::from_secs(620),
                max_connections: 4096,
                body_timeout: Duration::from_secs(2),
            },
            admin: Limits {
                header_timeout: Duration::from_secs(10),
                idle_timeout: Duration::from_secs(620),
                max_connections: 64,
                body_timeout: Duration::from_secs(2),
            },
        },
        rate_limit: None,
    }
}

/// The status of a GET of `url`; 0 when nothing answers.
pub async fn status(client: &reqwest::Client, url: String) -> u16 {
    client
        .get(url)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// Runs each named `async fn(Backend)` as three tests: on the memory store, on Redis, and on a
/// Redis Cluster.
#[macro_export]
macro_rules! on_every_store {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::Backend::Memory).await })*
        }
        mod redis {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::Backend::Redis).await })*
        }
        mod cluster {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::Backend::Cluster).await })*
        }
    };
}

/// The app running in this process on random loopback ports.
pub struct TestApp {
    pub base: String,
    pub admin: String,
    pub client: reqwest::Client,
    /// Held, never sent: dropping it is what tells the server to stop.
    _shutdown: oneshot::Sender<()>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl TestApp {
    pub async fn spawn(config: ServeConfig) -> Self {
        // TEST_LOG=1 shows the app's logs when debugging a test.
        if std::env::var_os("TEST_LOG").is_some() {
            // The first subscriber stays for the whole test process, and so must its writer.
            std::mem::forget(tally::telemetry::init(Some(tally::config::LogFormat::Text)));
        }
        let server = Server::bind(config).await.expect("bind");
        let base = format!("http://{}", server.public_addr());
        let admin = format!("http://{}", server.admin_addr());
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async {
            let _ = rx.await;
        }));
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(256)
            .build()
            .unwrap();
        Self {
            base,
            admin,
            client,
            _shutdown: tx,
            task: Some(task),
        }
    }

    pub async fn memory() -> Self {
        Self::spawn(test_config()).await
    }

    pub async fn on_redis(url: &str) -> Self {
        let mut config = test_config();
        config.store = StoreConfig::Redis(RedisTarget::parse_url(url).unwrap());
        Self::spawn(config).await
    }

    /// The API on Redis with Postgres: the Fibonacci job routes work.
    pub async fn with_jobs(redis: &redis::RedisProcess, pg: &postgres::Postgres) -> Self {
        let store =
            StoreConfig::Redis(RedisTarget::parse_url(&redis.url(redis::PASSWORD)).unwrap());
        Self::with_jobs_on(store, pg).await
    }

    pub async fn with_jobs_on(store: StoreConfig, pg: &postgres::Postgres) -> Self {
        let mut config = test_config();
        config.store = store;
        config.database = Some(tally::config::DatabaseConfig {
            url: tally::config::Secret::new(pg.url()),
            password: Some(tally::config::Credential::Inline(
                tally::config::Secret::new(postgres::PG_PASSWORD),
            )),
            ssl_mode: tally::config::SslMode::Disable,
            root_cert: None,
        });
        Self::spawn(config).await
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("request")
    }

    pub async fn get_with_header(&self, path: &str, name: &str, value: &str) -> reqwest::Response {
        let url = format!("{}{path}", self.base);
        self.client
            .get(url)
            .header(name, value)
            .send()
            .await
            .expect("request")
    }

    pub async fn json(&self, path: &str) -> (u16, serde_json::Value) {
        let r = self.get(path).await;
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(serde_json::Value::Null))
    }

    /// Sends `path` byte for byte (no client-side normalisation of `..` or percent escapes)
    /// and returns the status and the JSON body.
    pub async fn raw_get(&self, path: &str, extra_headers: &str) -> (u16, serde_json::Value) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = self.base.trim_start_matches("http://");
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: test\r\n{extra_headers}Connection: close\r\n\r\n"
        );
        if stream.write_all(request.as_bytes()).await.is_err() {
            return (0, serde_json::Value::Null); // the server closed on an oversized request
        }
        let mut response = Vec::new();
        let _ = stream.read_to_end(&mut response).await;
        let text = String::from_utf8_lossy(&response);
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
        (
            status,
            serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
        )
    }

    pub async fn metrics_text(&self) -> String {
        get_text(&self.client, format!("{}/metrics", self.admin)).await
    }

    pub async fn admin_status(&self, path: &str) -> u16 {
        status(&self.client, format!("{}{path}", self.admin)).await
    }

    /// Polls `/readyz` until it answers `want`.
    pub async fn wait_ready(&self, want: u16, limit: Duration) {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.admin_status("/readyz").await == want {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("/readyz never answered {want} within {limit:?}");
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// The real `tally` binary as a child process, its stdout and stderr captured line by line.
pub struct BinaryApp {
    pub child: Child,
    pub base: String,
    pub admin: String,
    pub output: Arc<Mutex<Vec<String>>>,
}

impl BinaryApp {
    /// `tally serve` with `envs` on free loopback ports.
    pub fn start(envs: &[(&str, String)]) -> Self {
        Self::start_command("serve", envs)
    }

    /// Polls the API's job routes until they answer 200 (see `wait_for_job_routes`).
    pub async fn wait_for_job_routes(&self) {
        wait_for_job_routes(&self.base).await;
    }

    /// `tally <subcommand>` (serve or web) with `envs` on free loopback ports.
    pub fn start_command(subcommand: &str, envs: &[(&str, String)]) -> Self {
        Self::start_with(subcommand, envs, |_| {})
    }

    /// As `start_command`, with `configure` applied to the command last (limits, say).
    pub fn start_with(
        subcommand: &str,
        envs: &[(&str, String)],
        configure: impl FnOnce(&mut Command),
    ) -> Self {
        let (port, admin_port) = (redis::free_port(), redis::free_port());
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tally"));
        cmd.arg(subcommand)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("TALLY_LISTEN", format!("127.0.0.1:{port}"))
            .env("TALLY_ADMIN_LISTEN", format!("127.0.0.1:{admin_port}"))
            .env("TALLY_LOG_FORMAT", "json")
            .env("RUST_LOG", "debug")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        configure(&mut cmd);
        let mut child = cmd.spawn().expect("start tally");
        let output = Arc::new(Mutex::new(Vec::new()));
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let output = output.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    output.lock().unwrap().push(line);
                }
            });
        }
        let app = Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            admin: format!("http://127.0.0.1:{admin_port}"),
            output,
        };
        app.wait_listening();
        app
    }

    fn wait_listening(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(self.admin.trim_start_matches("http://")).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("tally did not start; output:\n{}", self.output_text());
    }

    /// The process's resident memory in bytes (VmRSS).
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("read /proc/<pid>/status");
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/<pid>/status");
        kb * 1024
    }

    pub fn output_text(&self) -> String {
        self.output.lock().unwrap().join("\n")
    }

    /// The first output line containing `needle`, waiting for it: tally writes its log lines
    /// in batches every 20 ms.
    pub async fn output_line(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let found = self
                .output
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains(needle))
                .cloned();
            match found {
                Some(line) => return line,
                None if Instant::now() > deadline => {
                    panic!("no line with {needle:?} in:\n{}", self.output_text())
                }
                None => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    pub fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{name} failed");
    }

    /// Waits for the process to exit and returns its exit code.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "tally did not exit within {limit:?}; output:\n{}",
            self.output_text()
        );
    }
}

impl Drop for BinaryApp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `tally worker` child process, killed when dropped (also when a test fails).
/// A child process that ends with the test, also when an assertion fails.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `tally worker` as a child process on `redis`, reclaiming after 2 s.
pub fn worker(redis: &redis::RedisProcess, name: &str) -> KillOnDrop {
    worker_on(&[("TALLY_REDIS_URL", redis.url(redis::PASSWORD))], name)
}

/// `tally worker` on the store that `store` (environment variables) names.
pub fn worker_on(store: &[(&str, String)], name: &str) -> KillOnDrop {
    let child = Command::new(env!("CARGO_BIN_EXE_tally"))
        .arg("worker")
        .env_clear()
        .envs(store.iter().map(|(k, v)| (k, v)))
        .env(
            "TALLY_ADMIN_LISTEN",
            format!("127.0.0.1:{}", redis::free_port()),
        )
        .env("TALLY_WORKER_NAME", name)
        .env("TALLY_RECLAIM_IDLE", "2s")
        // As the chart runs workers (limits.cpu 1): one thread, the single-threaded scheduler.
        .env("TALLY_WORKER_THREADS", "1")
        .env("TALLY_LOG_FORMAT", "json")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    KillOnDrop(child)
}

/// Waits until the job routes at `base` answer 200: the API answers 503 there until its
/// Postgres migrations have run, which takes seconds on a loaded machine.
pub async fn wait_for_job_routes(base: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = match reqwest::get(format!("{base}/api/v1/fib/indexes")).await {
            Ok(r) => r.status().as_u16(),
            Err(_) => 0,
        };
        if status == 200 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "job routes never became ready: {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
