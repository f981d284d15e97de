//! The guestbook API, on the memory store and on a real Redis.

use std::collections::HashMap;

use crate::support::{fixture, Backend, TestApp};
use futures::stream::{self, StreamExt};
use serde_json::{json, Value};

on_every_store!(
    post_then_read_back,
    listing_is_newest_first_with_limits_and_cursor,
    bad_posts_say_what_is_wrong,
    idempotent_posts_store_once,
    concurrent_posts_are_all_listed_once_in_acknowledgement_order,
);

async fn post(app: &TestApp, body: &str) -> reqwest::Response {
    app.client
        .post(format!("{}/api/v1/messages", app.base))
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
}

async fn post_text(app: &TestApp, text: &str) -> Value {
    let r = post(app, &json!({ "text": text }).to_string()).await;
    assert_eq!(r.status(), 201);
    r.json().await.unwrap()
}

/// Every message, newest first, following the `next` cursor.
async fn all_messages(app: &TestApp) -> Vec<Value> {
    let mut all = Vec::new();
    let mut path = "/api/v1/messages?limit=100".to_owned();
    loop {
        let (status, page) = app.json(&path).await;
        assert_eq!(status, 200, "{page}");
        all.extend(page["messages"].as_array().unwrap().iter().cloned());
        match page["next"].as_str() {
            Some(next) => path = format!("/api/v1/messages?limit=100&before={next}"),
            None => return all,
        }
    }
}

async fn post_then_read_back(backend: Backend) {
    let f = fixture(backend).await;
    let r = post(&f.app, r#"{"text":"  hello <b>world</b>\r\nline two  "}"#).await;
    assert_eq!(r.status(), 201);
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["text"], "hello <b>world</b>\nline two");
    assert_eq!(
        location,
        format!("/api/v1/messages/{}", body["id"].as_str().unwrap())
    );
    assert!(body["created_at"].as_str().unwrap().ends_with('Z'));
    let (status, fetched) = f.app.json(&location).await;
    assert_eq!(status, 200);
    assert_eq!(fetched, body);
    assert_eq!(f.app.json("/api/v1/messages/1-0").await.0, 404);
    let (status, err) = f.app.json("/api/v1/messages/nope").await;
    assert_eq!(status, 400, "{err}");
}

async fn listing_is_newest_first_with_limits_and_cursor(backend: Backend) {
    let f = fixture(backend).await;
    let (_, empty) = f.app.json("/api/v1/messages").await;
    assert_eq!(empty, json!({ "messages": [], "next": null }));
    for i in 0..15 {
        post_text(&f.app, &format!("m{i}")).await;
    }
    let (status, page) = f.app.json("/api/v1/messages").await;
    assert_eq!(status, 200);
    let texts: Vec<&str> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        texts,
        ["m14", "m13", "m12", "m11", "m10", "m9", "m8", "m7", "m6", "m5"]
    );
    let (_, page) = f.app.json("/api/v1/messages?limit=3").await;
    assert_eq!(page["messages"].as_array().unwrap().len(), 3);
    let next = page["next"].as_str().unwrap();
    let (_, older) = f
        .app
        .json(&format!("/api/v1/messages?limit=3&before={next}"))
        .await;
    assert_eq!(older["messages"][0]["text"], "m11");
    assert_eq!(all_messages(&f.app).await.len(), 15);
    for bad in ["0", "101", "-1", "ten", ""] {
        let (status, body) = f.app.json(&format!("/api/v1/messages?limit={bad}")).await;
        assert_eq!(status, 400, "limit={bad}");
        assert!(body["error"].as_str().unwrap().contains("limit"));
    }
    assert_eq!(f.app.json("/api/v1/messages?before=x").await.0, 400);
}

async fn bad_posts_say_what_is_wrong(backend: Backend) {
    let f = fixture(backend).await;
    let long = json!({ "text": "x".repeat(501) }).to_string();
    for (body, status, why) in [
        ("{", 400, "malformed JSON"),
        ("{}", 400, "missing field: text"),
        (r#"{"text":""}"#, 400, "empty"),
        (r#"{"text":"   "}"#, 400, "empty"),
        (&long as &str, 400, "limit is 500"),
        (r#"{"text":"a\u0000b"}"#, 400, "control"),
    ] {
        let r = post(&f.app, body).await;
        assert_eq!(r.status(), status, "{body}");
        let err: Value = r.json().await.unwrap();
        assert!(
            err["error"].as_str().unwrap().contains(why),
            "{body}: {err}"
        );
    }
    let huge = json!({ "text": "x".repeat(20_000) }).to_string();
    assert_eq!(post(&f.app, &huge).await.status(), 413);
    let r = f
        .app
        .client
        .post(format!("{}/api/v1/messages", f.app.base))
        .body("text=hi")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    let form = f
        .app
        .client
        .post(format!("{}/api/v1/messages", f.app.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("text=hi")
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), 415);
    let r = f
        .app
        .client
        .delete(format!("{}/api/v1/messages", f.app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert!(
        all_messages(&f.app).await.is_empty(),
        "nothing bad was stored"
    );
}

async fn idempotent_posts_store_once(backend: Backend) {
    let f = fixture(backend).await;
    let send = || async {
        f.app
            .client
            .post(format!("{}/api/v1/messages", f.app.base))
            .header("content-type", "application/json")
            .header("idempotency-key", "post-1")
            .body(r#"{"text":"once"}"#)
            .send()
            .await
            .unwrap()
    };
    let first = send().await;
    assert_eq!(first.status(), 201);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first: Value = first.json().await.unwrap();
    let replays: Vec<(bool, Value)> = stream::iter(0..10)
        .map(|_| async {
            let r = send().await;
            (
                r.headers().contains_key("idempotent-replayed"),
                r.json().await.unwrap(),
            )
        })
        .buffer_unordered(10)
        .collect()
        .await;
    assert!(
        replays
            .iter()
            .all(|(replayed, body)| *replayed && *body == first),
        "{replays:?}"
    );
    assert_eq!(all_messages(&f.app).await.len(), 1);
}

async fn concurrent_posts_are_all_listed_once_in_acknowledgement_order(backend: Backend) {
    let f = fixture(backend).await;
    // 50 tasks, each posting 10 messages one after another: 500 posts, 50 in flight.
    let acked: Vec<Vec<String>> = stream::iter(0..50)
        .map(|task| {
            let app = &f.app;
            async move {
                let mut ids = Vec::new();
                for n in 0..10 {
                    let body = post_text(app, &format!("t{task}-n{n}")).await;
                    ids.push(body["id"].as_str().unwrap().to_owned());
                }
                ids
            }
        })
        .buffer_unordered(50)
        .collect()
        .await;
    let listed = all_messages(&f.app).await;
    assert_eq!(listed.len(), 500);
    let position: HashMap<&str, usize> = listed
        .iter()
        .enumerate()
        .map(|(i, m)| (m["id"].as_str().unwrap(), i))
        .collect();
    assert_eq!(position.len(), 500, "every message listed exactly once");
    for ids in &acked {
        // Newest first: a later acknowledgement of the same task is listed earlier.
        let places: Vec<usize> = ids.iter().map(|id| position[id.as_str()]).collect();
        assert!(
            places.windows(2).all(|w| w[0] > w[1]),
            "out of acknowledgement order: {places:?}"
        );
    }
}

/// Two releases on one Redis with different namespaces and prefixes share no data: not the
/// guestbook, not counters, not idempotency records. The default namespace writes the keys
/// earlier versions wrote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_namespaces_keep_two_releases_on_one_redis_apart() {
    use crate::support::redis::{RedisProcess, PASSWORD};
    use tally::config::{RedisTarget, StoreConfig};

    let redis = RedisProcess::server("");
    let url = redis.url(PASSWORD);
    let green = TestApp::on_redis(&url).await;
    let mut config = crate::support::test_config();
    config.store = StoreConfig::Redis(RedisTarget::parse_url(&url).unwrap());
    config.key_namespace = "blue".into();
    config.key_prefix = "blue:count:".into();
    let blue = TestApp::spawn(config).await;

    post_text(&green, "from green").await;
    let keyed = |app: &TestApp, key: &'static str| {
        app.client
            .get(format!("{}/shared-id", app.base))
            .header("idempotency-key", key)
            .send()
    };
    let first: Value = keyed(&green, "k1").await.unwrap().json().await.unwrap();
    let other: Value = keyed(&blue, "k1").await.unwrap().json().await.unwrap();
    // The same Idempotency-Key in the other release is a new request, on its own counter.
    assert_eq!(
        (first["count"].as_i64(), other["count"].as_i64()),
        (Some(1), Some(1))
    );
    assert!(all_messages(&blue).await.is_empty());
    assert_eq!(all_messages(&green).await.len(), 1);

    let mut keys: Vec<String> = redis
        .cli(&["--scan"])
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "blue:count:shared-id",
            "blue:idem:counter:k1",
            "count:shared-id",
            "tally:idem:counter:k1",
            "tally:messages",
        ]
    );
}
