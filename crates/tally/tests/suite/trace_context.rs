//! W3C Trace Context across the tiers, with real processes: a `traceparent` sent to the web tier
//! reaches the API (through the proxy and through the page's own calls) and the worker (through
//! the job's stream entry), and every access line carries the trace id.

use std::time::Duration;

use crate::support::postgres::{Postgres, PG_PASSWORD};
use crate::support::redis::{RedisProcess, PASSWORD};
use crate::support::BinaryApp;

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

fn traceparent(trace: &str) -> String {
    format!("00-{trace}-00f067aa0ba902b7-01")
}

/// The first JSON line of `app` whose fields include all of `wanted`, waiting up to 10 s.
async fn line_with(app: &BinaryApp, wanted: &[(&str, &str)]) -> serde_json::Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let found = app.output.lock().unwrap().iter().find_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            wanted
                .iter()
                .all(|(k, want)| v[*k].as_str() == Some(want))
                .then_some(v)
        });
        if let Some(v) = found {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no line with {wanted:?} in:\n{}",
            app.output_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trace_runs_from_the_web_tier_through_the_api_to_the_worker() {
    let redis = RedisProcess::server("");
    let pg = Postgres::start();
    let store = ("TALLY_REDIS_URL", redis.url(PASSWORD));
    let api = BinaryApp::start(&[
        store.clone(),
        ("TALLY_DATABASE_URL", pg.url()),
        ("TALLY_DATABASE_PASSWORD", PG_PASSWORD.into()),
    ]);
    api.wait_for_job_routes().await;
    let worker = BinaryApp::start_command("worker", &[store, ("TALLY_WORKER_NAME", "w".into())]);
    let web = BinaryApp::start_command("web", &[("TALLY_API_URL", api.base.clone())]);
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    // The form posts to the web tier, which calls the API, which enqueues the job.
    let r = client
        .post(format!("{}/web/fib", web.base))
        .header("traceparent", traceparent(TRACE))
        .form(&[("index", "30")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let at_web = line_with(&web, &[("route", "/web/fib"), ("trace_id", TRACE)]).await;
    let at_api = line_with(&api, &[("route", "/api/v1/fib"), ("trace_id", TRACE)]).await;
    assert_ne!(
        at_web["span_id"], at_api["span_id"],
        "each tier has a span of its own"
    );
    assert_ne!(at_web["span_id"], "00f067aa0ba902b7");
    let job = line_with(&worker, &[("message", "job done"), ("trace_id", TRACE)]).await;
    assert_eq!(job["index"], 30, "{job}");

    // The proxy passes the trace on too; an invalid traceparent starts a new trace.
    let proxied = "0af7651916cd43dd8448eb211c80319c";
    let r = client
        .get(format!("{}/traced", web.base))
        .header("traceparent", traceparent(proxied))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    line_with(&api, &[("route", "/{id}"), ("trace_id", proxied)]).await;
    client
        .get(format!("{}/untraced", api.base))
        .header("traceparent", "00-zz-00f067aa0ba902b7-01")
        .send()
        .await
        .unwrap();
    // The access line is written after the answer: wait for it.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let lines = api.output.lock().unwrap().clone();
    let mut access = 0;
    for line in lines
        .iter()
        .filter(|l| l.contains(r#""target":"tally::access""#))
    {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let trace = v["trace_id"].as_str().unwrap_or_default();
        assert!(
            trace.len() == 32
                && trace.bytes().all(|b| b.is_ascii_hexdigit())
                && trace != "0".repeat(32),
            "{line}"
        );
        access += 1;
    }
    assert!(access >= 3, "{lines:?}");
}
