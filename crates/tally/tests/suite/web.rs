//! `tally web` in front of `tally serve` on a real Redis: the page, its forms without
//! JavaScript, escaping, the proxy, and what happens when the API is down.

use crate::support::redis::{free_port, RedisProcess, PASSWORD};
use crate::support::web::Web;
use crate::support::TestApp;

async fn stack() -> (RedisProcess, TestApp, Web) {
    let redis = RedisProcess::server("");
    let api = TestApp::on_redis(&redis.url(PASSWORD)).await;
    let web = Web::start(&api.base).await;
    (redis, api, web)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_posts_and_counts_without_javascript_and_escapes_everything() {
    let (redis, _api, web) = stack().await;
    let (status, html, headers) = web.page("/").await;
    assert_eq!(status, 200);
    assert!(html.contains("No messages yet"), "{html}");
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["referrer-policy"], "no-referrer");

    let r = web
        .form(
            "/web/messages",
            &[
                ("text", "<script>alert('x')</script> & hi"),
                ("idempotency_key", "form-1"),
            ],
        )
        .await;
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/");
    // The same form submitted twice (a double click, a reload) stores one message.
    web.form(
        "/web/messages",
        &[
            ("text", "<script>alert('x')</script> & hi"),
            ("idempotency_key", "form-1"),
        ],
    )
    .await;
    let (_, html, _) = web.page("/").await;
    assert!(
        html.contains("&lt;script&gt;alert('x')&lt;/script&gt; &amp; hi"),
        "{html}"
    );
    assert!(
        !html.contains("<script>alert"),
        "a posted script must never reach the page as markup"
    );
    assert_eq!(redis.cli(&["XLEN", "tally:messages"]).unwrap().trim(), "1");

    let r = web.form("/web/counter", &[("id", "clicks")]).await;
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/?counter=clicks");
    web.form("/web/counter", &[("id", "clicks")]).await;
    let (_, html, _) = web.page("/?counter=clicks").await;
    assert!(
        html.contains(r#"<output id="count" for="counter-id">2</output>"#),
        "{html}"
    );
    assert_eq!(redis.cli(&["GET", "count:clicks"]).unwrap().trim(), "2");

    // Refused input comes back on the page with the reason and the text kept.
    let r = web.form("/web/messages", &[("text", "   ")]).await;
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("text is empty"));
    let r = web.form("/web/counter", &[("id", "..")]).await;
    assert_eq!(r.status(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_serves_the_api_and_counters_from_one_address() {
    let (_redis, _api, web) = stack().await;
    let r = web
        .client
        .post(format!("{}/api/v1/messages", web.base))
        .header("content-type", "application/json")
        .header("x-request-id", "trace-me")
        .body(r#"{"text":"via proxy"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert!(r.headers()["location"]
        .to_str()
        .unwrap()
        .starts_with("/api/v1/messages/"));
    assert_eq!(r.headers()["x-request-id"], "trace-me");
    let (status, body, _) = web.page("/api/v1/messages?limit=1").await;
    assert_eq!(status, 200);
    assert!(body.contains("via proxy"));
    for n in 1..=3 {
        let (status, body, _) = web.page("/count/proxied").await;
        assert_eq!((status, body), (200, format!(r#"{{"count":{n}}}"#)));
    }
    let (status, body, _) = web.page("/%FF").await;
    assert_eq!(status, 400, "{body}");
    let r = web
        .client
        .head(format!("{}/proxied", web.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "GET");
    // The browser's favicon request is not a counter.
    assert_eq!(web.page("/favicon.ico").await.0, 308);
    let (status, css, headers) = web.page("/static/style.css").await;
    assert_eq!(status, 200);
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/css")
            && css.contains("body")
    );
    assert_eq!(web.admin_status("/readyz").await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_api_down_the_page_still_renders_with_503() {
    let dead_api = format!("http://127.0.0.1:{}", free_port());
    let web = Web::start(&dead_api).await;
    let (status, html, _) = web.page("/").await;
    assert_eq!(status, 503);
    assert!(html.contains("The API is unavailable right now"), "{html}");
    assert!(html.contains("<form"), "the page still renders");
    let r = web.form("/web/messages", &[("text", "hello")]).await;
    assert_eq!(r.status(), 503);
    let body = r.text().await.unwrap();
    assert!(
        body.contains("your message was not posted") && body.contains("hello"),
        "{body}"
    );
    let (status, body, _) = web.page("/api/v1/messages").await;
    assert_eq!(status, 503);
    assert!(body.contains("the API is unavailable"), "{body}");
    assert!(!body.to_lowercase().contains("internal"), "{body}");
    assert_eq!(web.admin_status("/readyz").await, 503);
    assert_eq!(web.admin_status("/healthz").await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_through_the_web_tier_loses_nothing() {
    let (_redis, _api, web) = stack().await;
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_tally"))
        .args([
            "check",
            "--target",
            &web.base,
            "-c",
            "64",
            "-d",
            "3s",
            "--min-availability",
            "100",
            "--json",
        ])
        .output()
        .await
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    assert!(
        out.status.success(),
        "{report:#} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(report["availability_pct"], 100.0);
    assert_eq!(report["lost"], 0);
    assert_eq!(report["duplicated"], 0);
    assert!(report["requests"].as_u64().unwrap() > 100, "{report:#}");
}

/// Sends `path` byte for byte to `base` (no client-side resolution of `..`) and returns the
/// status line's code.
async fn raw_status(base: &str, path: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(base.trim_start_matches("http://"))
        .await
        .unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer).await;
    answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_refuses_dot_segments_and_form_mistakes_are_json() {
    let (_redis, api, web) = stack().await;
    for path in [
        "/api/v1/../../metrics",
        "/api/v1/%2e%2e/%2E%2E/metrics",
        "/api/v1/counters/../../metrics",
        "/api/./v1/messages",
    ] {
        assert_eq!(raw_status(&web.base, path).await, 400, "{path}");
    }
    // Nothing reached the counter those paths would have resolved to.
    assert_eq!(api.json("/api/v1/counters/metrics").await.1["count"], 0);
    assert_eq!(raw_status(&web.base, "/api/v1/messages").await, 200);

    let r = web
        .client
        .post(format!("{}/web/messages", web.base))
        .header("content-type", "text/plain")
        .body("text=hi")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(body["error"].is_string(), "{body}");
    let r = web
        .client
        .get(format!("{}/web/messages", web.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert!(r.json::<serde_json::Value>().await.unwrap()["error"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_in_the_api_url_never_show() {
    let (_redis, api, _) = stack().await;
    let with_secret = api
        .base
        .replacen("http://", "http://tally:s3cret-in-url@", 1);
    let web = Web::start(&with_secret).await;
    // The page works through the URL's credentials (the API ignores them).
    assert_eq!(web.page("/").await.0, 200);
    let readyz = crate::support::get_text(&web.client, format!("{}/readyz", web.admin)).await;
    assert!(
        readyz.contains(api.base.trim_start_matches("http://")),
        "{readyz}"
    );
    assert!(!readyz.contains("s3cret"), "{readyz}");
}
