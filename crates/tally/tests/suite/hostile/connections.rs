//! Slow, idle, flooding and non-reading clients, and running out of file descriptors.

use std::time::{Duration, Instant};

use reqwest::Method;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::*;
use crate::support::BinaryApp;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_on_both_ports_is_cut_at_the_header_timeout_while_others_are_served() {
    let header = Duration::from_secs(2);
    let app = BinaryApp::start(&envs(&[("TALLY_HEADER_TIMEOUT", "2s")]));
    let limit = header + Duration::from_secs(5);
    let public = tokio::spawn({
        let a = addr(&app.base);
        async move { slowloris_many(&a, 200, limit).await }
    });
    let admin = tokio::spawn({
        let a = addr(&app.admin);
        async move { slowloris_many(&a, 40, limit).await }
    });
    // Meanwhile, ordinary requests and probes are answered.
    let http = client();
    let until = Instant::now() + header + Duration::from_secs(1);
    let mut served = 0;
    while Instant::now() < until {
        assert_eq!(
            status_of(&http, Method::GET, format!("{}/ok", app.base)).await,
            200
        );
        for probe in ["/healthz", "/readyz", "/metrics"] {
            let url = format!("{}{probe}", app.admin);
            assert_eq!(status_of(&http, Method::GET, url).await, 200, "{probe}");
        }
        served += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (port, held) in [
        ("public", public.await.unwrap()),
        ("admin", admin.await.unwrap()),
    ] {
        let closed: Vec<Duration> = held.iter().flatten().copied().collect();
        let longest = closed.iter().max().copied().unwrap_or_default();
        println!(
            "hostile-figures: slowloris on the {port} port: {} connections held, {} closed by the \
             server, the longest open {longest:?} (header timeout {header:?})",
            held.len(),
            closed.len()
        );
        assert_eq!(closed.len(), held.len(), "{port}: some were never closed");
        assert!(
            longest <= header + Duration::from_secs(1),
            "{port}: {longest:?}"
        );
    }
    assert!(served > 5);
    let text = metrics(&http, &app).await;
    let cut = sample(
        &text,
        "tally_connections_closed_total",
        &["reason=\"header_timeout\""],
    );
    assert!(cut >= 240.0, "{cut}\n{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_slowloris_connections_cost_bounded_memory_and_are_all_closed() {
    rlimit::increase_nofile_limit(u64::MAX).unwrap();
    let header = Duration::from_secs(3);
    let app = BinaryApp::start(&envs(&[
        ("TALLY_HEADER_TIMEOUT", "3s"),
        ("TALLY_MAX_CONNECTIONS", "6000"),
        ("RUST_LOG", "info"),
    ]));
    let http = client();
    assert_eq!(
        status_of(&http, Method::GET, format!("{}/warm", app.base)).await,
        200
    );
    let before = app.rss_bytes();
    let flood = tokio::spawn({
        let a = addr(&app.base);
        async move { slowloris_many(&a, 5000, header + Duration::from_secs(6)).await }
    });
    let mut peak = before;
    let mut open_seen = 0.0f64;
    let until = Instant::now() + header;
    while Instant::now() < until {
        peak = peak.max(app.rss_bytes());
        let text = metrics(&http, &app).await;
        open_seen = open_seen.max(sample(
            &text,
            "tally_connections_open",
            &["listener=\"public\""],
        ));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let held = flood.await.unwrap();
    let closed: Vec<Duration> = held.iter().flatten().copied().collect();
    let longest = closed.iter().max().copied().unwrap_or_default();
    let after = app.rss_bytes();
    let per_connection = peak.saturating_sub(before) / 5000;
    println!(
        "hostile-figures: 5000-connection slowloris: RSS {:.1} MB before, {:.1} MB at the peak \
         ({} connections open at once, {:.1} kB each), {:.1} MB after; {} of 5000 closed by the \
         server, the longest open {longest:?} (header timeout {header:?})",
        before as f64 / 1e6,
        peak as f64 / 1e6,
        open_seen,
        per_connection as f64 / 1e3,
        after as f64 / 1e6,
        closed.len()
    );
    assert_eq!(closed.len(), 5000);
    assert!(longest <= header + Duration::from_secs(1), "{longest:?}");
    assert!(
        open_seen > 4000.0,
        "the flood never held 4000 at once: {open_seen}"
    );
    assert!(
        per_connection < 64_000,
        "{per_connection} bytes per held connection"
    );
    assert_eq!(
        status_of(&http, Method::GET, format!("{}/after", app.base)).await,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_are_closed_after_the_idle_timeout_not_the_header_one() {
    let idle = Duration::from_secs(3);
    let app = BinaryApp::start(&envs(&[
        ("TALLY_HEADER_TIMEOUT", "1s"),
        ("TALLY_IDLE_TIMEOUT", "3s"),
    ]));
    let mut stream = TcpStream::connect(addr(&app.base)).await.unwrap();
    let request = b"GET /idle HTTP/1.1\r\nHost: hostile\r\n\r\n";
    stream.write_all(request).await.unwrap();
    assert_eq!(read_response(&mut stream).await.unwrap().0, 200);
    // Idle for longer than the header timeout: still open, since no head was begun.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stream.write_all(request).await.unwrap();
    let (status, body) = read_response(&mut stream).await.unwrap();
    assert_eq!((status, body.as_str()), (200, r#"{"count":2}"#));
    let open = closed_within(&mut stream, idle + Duration::from_secs(1))
        .await
        .expect("the idle connection was never closed");
    println!("hostile-figures: an idle keep-alive connection was closed after {open:?} (idle timeout {idle:?})");
    assert!(
        open + Duration::from_millis(500) >= idle,
        "closed early: {open:?}"
    );
    let text = metrics(&client(), &app).await;
    assert_eq!(
        sample(
            &text,
            "tally_connections_closed_total",
            &["reason=\"idle_timeout\""]
        ),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_flood_past_the_cap_is_refused_fast_and_the_admin_port_still_answers() {
    let app = BinaryApp::start(&envs(&[
        ("TALLY_MAX_CONNECTIONS", "40"),
        ("TALLY_HEADER_TIMEOUT", "30s"),
    ]));
    let mut held = Vec::new();
    for _ in 0..40 {
        held.push(TcpStream::connect(addr(&app.base)).await.unwrap());
    }
    let http = client();
    // The accept loop has seen all 40 when the gauge says so.
    let deadline = Instant::now() + Duration::from_secs(5);
    while sample(
        &metrics(&http, &app).await,
        "tally_connections_open",
        &["listener=\"public\""],
    ) < 40.0
    {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        let started = Instant::now();
        let mut extra = TcpStream::connect(addr(&app.base)).await.unwrap();
        let answer = tokio::time::timeout(Duration::from_secs(1), read_response(&mut extra))
            .await
            .expect("a refused connection must be answered at once, never queued");
        let (status, body) = answer.expect("a 503 before the close");
        assert_eq!(status, 503);
        assert!(body.contains("too many connections"), "{body}");
        slowest = slowest.max(started.elapsed());
        assert_eq!(
            status_of(&http, Method::GET, format!("{}/readyz", app.admin)).await,
            200
        );
    }
    let text = metrics(&http, &app).await;
    assert_eq!(
        sample(
            &text,
            "tally_connections_refused_total",
            &["listener=\"public\""]
        ),
        20.0
    );
    println!("hostile-figures: 20 connections past a cap of 40: all answered 503, the slowest in {slowest:?}; the admin port answered throughout");
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if status_of(&http, Method::GET, format!("{}/recovered", app.base)).await == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "no recovery after the flood");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends `count` requests with invented methods and paths, `concurrency` at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_body_gets_408_within_the_request_deadline() {
    let app = BinaryApp::start(&envs(&[("TALLY_REQUEST_TIMEOUT", "1s")]));
    let mut stream = TcpStream::connect(addr(&app.base)).await.unwrap();
    let started = Instant::now();
    stream
        .write_all(
            b"POST /api/v1/messages HTTP/1.1\r\nHost: hostile\r\ncontent-type: application/json\r\n\
              content-length: 100\r\n\r\n{\"text\":",
        )
        .await
        .unwrap();
    let (status, body) = tokio::time::timeout(Duration::from_secs(3), read_response(&mut stream))
        .await
        .expect("no answer to a slow body")
        .expect("an answer");
    let took = started.elapsed();
    assert_eq!(status, 408, "{body}");
    assert!(body.contains("request deadline"), "{body}");
    assert!(took <= Duration::from_secs(2), "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_cut_at_the_header_timeout() {
    let app = BinaryApp::start(&envs(&[
        ("TALLY_HEADER_TIMEOUT", "1s"),
        ("RUST_LOG", "warn"),
    ]));
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket
        .connect(addr(&app.admin).parse().unwrap())
        .await
        .unwrap();
    // Pipelined scrapes, never read: the answers (~600 bytes each, 18 MB in all) pile up in
    // the server's send buffer (4 MB at most here) until it cannot write.
    let request = b"GET /metrics HTTP/1.1\r\nHost: hostile\r\n\r\n".repeat(30_000);
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.write_all(&request)).await;
    let http = client();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = metrics(&http, &app).await;
        if sample(
            &text,
            "tally_connections_closed_total",
            &["reason=\"write_timeout\""],
        ) == 1.0
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the stalled reader was never cut:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_idle_and_half_sent_connections_at_once() {
    let mut app = BinaryApp::start(&envs(&[
        ("TALLY_SHUTDOWN_DELAY", "0s"),
        ("TALLY_SHUTDOWN_TIMEOUT", "20s"),
    ]));
    let mut idle = Vec::new();
    for _ in 0..10 {
        let mut s = TcpStream::connect(addr(&app.base)).await.unwrap();
        s.write_all(b"GET /drain HTTP/1.1\r\nHost: hostile\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(read_response(&mut s).await.unwrap().0, 200);
        idle.push(s);
    }
    for _ in 0..10 {
        let mut s = TcpStream::connect(addr(&app.base)).await.unwrap();
        s.write_all(b"GET /half HTTP/1.1\r\nHost: hos")
            .await
            .unwrap();
        idle.push(s);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    app.signal("TERM");
    assert_eq!(app.wait_exit(Duration::from_secs(5)), Some(0));
    let took = started.elapsed();
    for mut s in idle {
        assert!(closed_within(&mut s, Duration::from_secs(1))
            .await
            .is_some());
    }
    println!("hostile-figures: shutdown with 20 idle or half-sent connections took {took:?} (shutdown timeout 20s)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_file_descriptors_the_listener_pauses_counts_and_recovers() {
    use std::os::unix::process::CommandExt;
    // 64 files in all: past them accept() fails with EMFILE, well before the connection cap.
    let app = BinaryApp::start_with("serve", &envs(&[("RUST_LOG", "warn")]), |cmd| unsafe {
        cmd.pre_exec(|| rlimit::setrlimit(rlimit::Resource::NOFILE, 64, 64));
    });
    let http = client();
    // The scrapes below reuse this keep-alive connection: the admin port cannot accept either.
    metrics(&http, &app).await;
    let mut held = Vec::new();
    for _ in 0..100 {
        if let Ok(s) = TcpStream::connect(addr(&app.base)).await {
            held.push(s);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = metrics(&http, &app).await;
        if sample(&text, "tally_accept_errors_total", &["listener=\"public\""]) > 0.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no accept error counted:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.output_line("accept failed; pausing the listener").await;
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(15);
    while status_of(&http, Method::GET, format!("{}/after-emfile", app.base)).await != 200 {
        assert!(
            Instant::now() < deadline,
            "no recovery after the descriptors came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
