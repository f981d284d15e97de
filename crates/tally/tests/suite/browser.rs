//! A real browser: Debian's Chromium driven over WebDriver (chromedriver) loads the page that
//! `tally web` serves in front of `tally serve` on a real Redis, posts a message, clicks the
//! counter, and saves a screenshot (target/browser/). Once with JavaScript, once without.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::postgres::Postgres;
use crate::support::redis::{free_port, RedisProcess};
use crate::support::web::Web;
use crate::support::TestApp;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;

struct Driver {
    child: Child,
    url: String,
    _profile: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn chromedriver() -> Driver {
    let binary = ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("chromedriver is not installed: run ./scripts/test.sh, which installs chromium and chromium-driver");
    let port = free_port();
    let child = Command::new(binary)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Driver {
        child,
        url,
        _profile: tempfile::tempdir().unwrap(),
    }
}

async fn browser(driver: &Driver, javascript: bool) -> Client {
    let profile = driver
        ._profile
        .path()
        .join(if javascript { "js" } else { "nojs" });
    let mut args = vec![
        "--headless".to_owned(),
        "--no-sandbox".into(),
        "--disable-gpu".into(),
        "--disable-background-networking".into(),
        "--disable-component-update".into(),
        "--no-first-run".into(),
        "--disable-sync".into(),
        "--disable-dev-shm-usage".into(),
        "--window-size=1100,900".into(),
        format!("--user-data-dir={}", profile.display()),
    ];
    if !javascript {
        args.push("--blink-settings=scriptEnabled=false".into());
    }
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({ "args": args, "binary": "/usr/bin/chromium" }),
    );
    ClientBuilder::new(HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a Chromium session")
}

/// Polls `what` until it returns Some, for at most 10 s.
async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn text_of(client: &Client, css: &str) -> Option<String> {
    client.find(Locator::Css(css)).await.ok()?.text().await.ok()
}

fn screenshot_path(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/browser");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_posts_a_message_and_counts_in_chromium() {
    let redis = RedisProcess::server("");
    let pg = Postgres::start();
    let api = TestApp::with_jobs(&redis, &pg).await;
    let web = Web::start(&api.base).await;
    let _worker = crate::support::worker(&redis, "browser-worker");
    let driver = chromedriver();

    for javascript in [true, false] {
        let client = browser(&driver, javascript).await;
        client.goto(&format!("{}/", web.base)).await.unwrap();
        let title = client.title().await.unwrap();
        assert!(title.contains("tally"), "{title}");

        let text = if javascript {
            "Hello from Chromium <b>not bold</b>"
        } else {
            "Hello without JavaScript"
        };
        client
            .find(Locator::Css("#message-text"))
            .await
            .unwrap()
            .send_keys(text)
            .await
            .unwrap();
        client
            .find(Locator::Css("#message-form button"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        let shown = eventually("the message in the list", || async {
            text_of(&client, "#messages li .text")
                .await
                .filter(|t| t == text)
        })
        .await;
        assert_eq!(shown, text, "shown as text, not markup");

        let before: i64 = text_of(&client, "#count")
            .await
            .unwrap()
            .parse()
            .unwrap_or(0);
        client
            .find(Locator::Css("#counter-form button"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        let after = eventually("the count to go up", || async {
            text_of(&client, "#count")
                .await
                .and_then(|t| t.parse::<i64>().ok())
                .filter(|n| *n == before + 1)
        })
        .await;
        assert_eq!(after, before + 1);

        // The calculator: submit an index, see it pending or done, and its value filled in
        // (by the page's script with JavaScript, by reloading without).
        let index = if javascript { "100" } else { "90" };
        let expected = if javascript {
            "354224848179261915075"
        } else {
            "2880067194370816120"
        };
        client
            .find(Locator::Css("#fib-index"))
            .await
            .unwrap()
            .send_keys(index)
            .await
            .unwrap();
        client
            .find(Locator::Css("#fib-form button"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        let selector = format!("#fib-values li[data-index='{index}']");
        eventually("the computed value", || async {
            if !javascript {
                client.refresh().await.ok()?;
            }
            text_of(&client, &selector)
                .await
                .filter(|t| t.contains(expected))
        })
        .await;
        let seen = text_of(&client, "#fib-seen").await.unwrap();
        assert!(seen.contains(index), "{seen}");

        let png = client.screenshot().await.unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
        let name = if javascript {
            "tally-web.png"
        } else {
            "tally-web-nojs.png"
        };
        std::fs::write(screenshot_path(name), &png).unwrap();
        client.close().await.unwrap();
    }
    assert_eq!(redis.cli(&["XLEN", "tally:messages"]).unwrap().trim(), "2");
    assert_eq!(redis.cli(&["GET", "count:demo"]).unwrap().trim(), "2");
}
