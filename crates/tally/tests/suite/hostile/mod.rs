//! Hostile clients against the real binary (and a real Redis where a store matters): slow and
//! idle connections, floods past the connection cap, invented methods, a full store, an
//! evicting store, rate limits, slow bodies, clients that stop reading, and client mistakes.
//! Timeouts are shortened by environment; no assertion is finer than a configured bound.
//! Lines starting with "hostile-figures:" are the measurements quoted in docs/security.md
//! (`cargo nextest run -E 'test(/^hostile::/)' --no-capture`).

mod connections;
mod requests;
mod store;

use std::time::{Duration, Instant};

use crate::support::BinaryApp;
use reqwest::Method;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub(super) fn addr(base: &str) -> String {
    base.trim_start_matches("http://").to_owned()
}

pub(super) fn envs<'a>(pairs: &[(&'a str, &str)]) -> Vec<(&'a str, String)> {
    pairs.iter().map(|(k, v)| (*k, v.to_string())).collect()
}

pub(super) fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// One slowloris connection: a request head sent one header line per `every`, never
/// finished. Returns how long the server kept it open, or None if it still was after `limit`.
pub(super) async fn slowloris(addr: String, every: Duration, limit: Duration) -> Option<Duration> {
    let Ok(mut stream) = TcpStream::connect(&addr).await else {
        return Some(Duration::ZERO);
    };
    // From the connect: a SYN retried for a full accept queue must not count.
    let started = Instant::now();
    let _ = stream
        .write_all(b"GET /slow HTTP/1.1\r\nHost: hostile\r\n")
        .await;
    let mut buf = [0u8; 512];
    let mut ticker = tokio::time::interval(every);
    ticker.tick().await;
    let mut line = 0u64;
    loop {
        tokio::select! {
            read = stream.read(&mut buf) => match read {
                Ok(0) | Err(_) => return Some(started.elapsed()),
                Ok(_) => {}
            },
            _ = ticker.tick() => {
                if started.elapsed() > limit {
                    return None;
                }
                line += 1;
                let header = format!("X-Slow-{line}: {line}\r\n");
                if stream.write_all(header.as_bytes()).await.is_err() {
                    return Some(started.elapsed());
                }
            }
        }
    }
}

/// Runs `count` slowloris connections at once; returns how long each stayed open.
pub(super) async fn slowloris_many(
    addr: &str,
    count: usize,
    limit: Duration,
) -> Vec<Option<Duration>> {
    let tasks: Vec<_> = (0..count)
        .map(|_| {
            tokio::spawn(slowloris(
                addr.to_owned(),
                Duration::from_millis(500),
                limit,
            ))
        })
        .collect();
    let mut held = Vec::with_capacity(count);
    for task in tasks {
        held.push(task.await.unwrap());
    }
    held
}

/// Reads one HTTP/1.1 response (head and a Content-Length body) from `stream`.
pub(super) async fn read_response(stream: &mut TcpStream) -> Option<(u16, String)> {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&data[..end]).to_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if data.len() >= end + 4 + length {
                let status = head.split(' ').nth(1)?.parse().ok()?;
                let body = String::from_utf8_lossy(&data[end + 4..end + 4 + length]).into_owned();
                return Some((status, body));
            }
        }
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => data.extend_from_slice(&buf[..n]),
        }
    }
}

/// Waits until the server closes `stream`; returns how long that took, None after `limit`.
pub(super) async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 512];
    loop {
        match tokio::time::timeout_at(
            tokio::time::Instant::from_std(started + limit),
            stream.read(&mut buf),
        )
        .await
        {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

pub(super) async fn metrics(client: &reqwest::Client, app: &BinaryApp) -> String {
    crate::support::get_text(client, format!("{}/metrics", app.admin)).await
}

/// The sum of a metric's samples whose line contains every one of `labels`.
pub(super) fn sample(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && labels.iter().all(|x| l.contains(x)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Series of the HTTP metrics: what client-chosen methods, paths and statuses could grow.
pub(super) fn http_series(text: &str) -> usize {
    text.lines().filter(|l| l.starts_with("http_")).count()
}

/// Sends `path` with `method` and returns the status (0 when the request failed).
pub(super) async fn status_of(client: &reqwest::Client, method: Method, url: String) -> u16 {
    client
        .request(method, url)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}
