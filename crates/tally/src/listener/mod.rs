//! Serving a router on a TCP listener with every limit on: a cap on open connections, header,
//! idle and write timeouts per connection (see `conn`), request bodies bounded by the request
//! deadline, and an accept loop that backs off on errors such as EMFILE instead of spinning.
//!
//! Why not `axum::serve`: it sets no hyper timer, so hyper's header read timeout never runs,
//! and it has no connection cap and no idle timeout. hyper's own header read timeout (with a
//! timer) starts when hyper begins waiting for a head, which for keep-alive connections is the
//! end of the previous response: it cannot tell an idle keep-alive connection from a slow head,
//! so one timeout would have to serve both. The watchdog in `conn` keeps them apart.

mod body;
mod conn;
mod watchdog;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};

pub use self::body::{timed_out as body_timed_out, BodyTimedOut};
pub use crate::config::Limits;

/// Which listener, for metrics and logs: a fixed set, so labels stay bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Public,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Public => "public",
            Self::Admin => "admin",
        }
    }
}

/// Headers larger than this are refused by hyper itself; below it, `http::middleware` refuses
/// more than 32 KiB of headers with a JSON 431. Also bounds each connection's read buffer.
const MAX_BUF_BYTES: usize = 64 * 1024;
/// HTTP/2 streams one connection may have open at once.
const MAX_CONCURRENT_STREAMS: u32 = 100;
/// The answer to a connection past the cap: written without waiting, then the socket is closed.
const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: application/json\r\ncache-control: no-store\r\nretry-after: 1\r\n\
connection: close\r\ncontent-length: 45\r\n\r\n\
{\"error\":\"too many connections; retry later\"}";
/// Backoff after an accept error (EMFILE, ENFILE, ENOMEM...), doubled while errors go on.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Connections the kernel completes before the accept loop takes them. Tokio's default (1024)
/// overflows in a burst of connections: the kernel then drops the handshake's last ACK, and the
/// client, which believes it is connected, waits a second for the retransmission. The kernel
/// caps this at net.core.somaxconn (4096 on current kernels).
const BACKLOG: u32 = 4096;

/// Binds a listener with `BACKLOG` (port 0 picks a free port).
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // As std's bind does: a restarted process can listen again at once.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// Serves `app` on `listener` until `closing` turns true; then stops accepting, closes every
/// connection without a request in flight, lets the others finish their request, and returns
/// once all are closed (the caller bounds that wait).
pub fn spawn(
    listener: TcpListener,
    app: App,
    limits: Limits,
    closing: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(accept_loop(listener, app, limits, closing))
}

/// What a listener serves.
pub struct App {
    pub role: Role,
    pub router: Router,
    /// Give every request the peer address (`Peer`), for the rate limit and web's
    /// X-Forwarded-For. It costs an extension map per request, so only where needed.
    pub peer_address: bool,
}

impl App {
    /// An admin listener's: probes and scrapes need no peer address.
    pub fn admin(router: Router) -> Self {
        Self {
            role: Role::Admin,
            router,
            peer_address: false,
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    app: App,
    limits: Limits,
    mut closing: watch::Receiver<bool>,
) {
    let App {
        role,
        router: app,
        peer_address,
    } = app;
    let builder = Arc::new(builder(&limits));
    let open = Arc::new(Open::new(role));
    let mut backoff = ACCEPT_BACKOFF_MIN;
    loop {
        let accepted = tokio::select! {
            biased;
            _ = closing.wait_for(|c| *c) => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = ACCEPT_BACKOFF_MIN;
                let Some(guard) = open.enter(limits.max_connections) else {
                    refuse(&stream, role);
                    continue;
                };
                let task = conn::Connection {
                    stream,
                    accepted: conn::now(),
                    peer,
                    peer_address,
                    app: app.clone(),
                    builder: builder.clone(),
                    limits,
                    role,
                };
                task.spawn(closing.clone(), guard);
            }
            // The peer gave up before we accepted: nothing to do.
            Err(e) if is_connection_error(&e) => {}
            Err(e) => {
                crate::metrics::accept_error(role.as_str());
                tracing::error!(listener = role.as_str(), error = %e, pause = ?backoff, "accept failed; pausing the listener");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
            }
        }
    }
    drop(listener);
    open.all_closed().await;
}

fn builder(limits: &Limits) -> Builder<TokioExecutor> {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        // Our watchdog enforces header and idle timeouts (see the module comment); hyper's own
        // would also close idle keep-alive connections at the header timeout.
        .header_read_timeout(None)
        .max_buf_size(MAX_BUF_BYTES)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        // A peer that stops answering pings is gone: close instead of holding its streams.
        .keep_alive_interval(Some(limits.header_timeout))
        .keep_alive_timeout(limits.header_timeout)
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .max_header_list_size(MAX_BUF_BYTES as u32);
    builder
}

/// Past the cap: a 503 if the socket takes it at once, then close. Never queued.
fn refuse(stream: &TcpStream, role: Role) {
    crate::metrics::connection_refused(role.as_str());
    let _ = stream.try_write(REFUSAL);
}

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// The open connections of one listener.
struct Open {
    count: AtomicUsize,
    gauge: metrics::Gauge,
    none_left: Notify,
}

impl Open {
    fn new(role: Role) -> Self {
        Self {
            count: AtomicUsize::new(0),
            gauge: crate::metrics::connections_open(role.as_str()),
            none_left: Notify::new(),
        }
    }

    /// Counts a new connection, or None when `max` are open already.
    fn enter(self: &Arc<Self>, max: usize) -> Option<OpenGuard> {
        self.count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        self.gauge.increment(1.0);
        Some(OpenGuard(self.clone()))
    }

    async fn all_closed(&self) {
        loop {
            let notified = self.none_left.notified();
            if self.count.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// One open connection; dropping it frees its place.
pub(crate) struct OpenGuard(Arc<Open>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.gauge.decrement(1.0);
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.none_left.notify_waiters();
        }
    }
}

/// The peer address of a connection, in every request's extensions (axum's `ConnectInfo`).
pub type Peer = axum::extract::ConnectInfo<SocketAddr>;

/// Raises this process's soft limit of open files to its hard limit, as Go's runtime does:
/// every connection is a file, and the soft default (often 1024) is below the connection cap.
/// Returns the limit in force.
pub fn raise_open_file_limit() -> Option<u64> {
    rlimit::increase_nofile_limit(u64::MAX).ok()
}
