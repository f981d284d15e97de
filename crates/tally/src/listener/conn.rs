//! One connection: hyper serves it, and a watchdog in the same task closes it when the client
//! stalls. The watchdog's rules, with H the header timeout and I the idle timeout:
//! - no request yet: the first request's head must be complete by accept + H (for HTTP/2 this
//!   also bounds the preface and settings exchange);
//! - between requests on HTTP/1: once a byte of the next head arrives, the head must be complete
//!   within H; with no byte, the connection is closed after I (keep-alive idle timeout);
//! - between requests on HTTP/2: closed after I with no stream open (pings do not count);
//! - a write that cannot proceed for H (the client stopped reading) closes it;
//! - while draining, a connection with no request in flight is closed at once.
//!
//! A request in flight is bounded by its own deadlines (the body's, then the store's).
//!
//! Cost on the hot path: the watchdog is a task of its own, so serving a request polls no timer,
//! and no timer is reset per request. It is never armed more than H ahead, so a head or a
//! stalled write that starts after it was armed ends no sooner than the armed deadline; when it
//! fires, it computes the real deadline and re-arms once. It closes a connection by aborting
//! the task that serves it, which drops the socket.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, OnceLock};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, Response, Version};
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use tower::Service as _;

use super::body::DeadlineBody;
use super::{Limits, OpenGuard, Role};

/// How often a draining connection with a request in flight looks whether it has finished.
const DRAIN_POLL: Duration = Duration::from_millis(50);

pub(super) struct Connection {
    pub stream: TcpStream,
    /// When the accept loop took it (`now()`), the start of its first head's time.
    pub accepted: u64,
    pub peer: SocketAddr,
    /// Put the peer address in every request's extensions (`listener::Peer`); off, no request
    /// pays for the extension map.
    pub peer_address: bool,
    pub app: Router,
    pub builder: Arc<Builder<TokioExecutor>>,
    pub limits: Limits,
    pub role: Role,
}

impl Connection {
    /// Serves the connection in one task and watches it from another: the watchdog wakes only
    /// at its deadlines, so serving requests pays nothing for it (no timer polled per wake).
    pub fn spawn(self, closing: watch::Receiver<bool>, open: OpenGuard) {
        let state = Arc::new(State::new(self.accepted));
        let io = TokioIo::new(Watched {
            inner: self.stream,
            state: state.clone(),
        });
        let service = Exchanges {
            app: self.app,
            state: state.clone(),
            peer: self.peer_address.then_some(self.peer),
            body_timeout: self.limits.body_timeout,
        };
        let role = self.role;
        let serving = tokio::spawn(drive(self.builder, io, service, state.clone(), open, role));
        let watchdog = tokio::spawn(watch(state.clone(), self.limits, role, closing, serving));
        let _ = state.watchdog.set(watchdog.abort_handle());
        // The connection may have ended before the handle was there to abort.
        if state.ended.load(Ordering::Acquire) {
            watchdog.abort();
        }
    }
}

/// Serves the connection until it ends (or the watchdog aborts this task).
async fn drive(
    builder: Arc<Builder<TokioExecutor>>,
    io: TokioIo<Watched>,
    service: Exchanges,
    state: Arc<State>,
    _open: OpenGuard,
    role: Role,
) {
    let conn = builder.serve_connection(io, service);
    let served = Draining {
        conn,
        state: &state,
        shutting_down: false,
    }
    .await;
    if let Err(e) = served {
        tracing::debug!(listener = role.as_str(), error = %e, "connection ended with an error");
    }
    state.ended.store(true, Ordering::Release);
    if let Some(watchdog) = state.watchdog.get() {
        watchdog.abort();
    }
}

/// Closes the connection when the client stalls or idles (see the module comment), and while
/// draining once no request is in flight.
async fn watch(
    state: Arc<State>,
    limits: Limits,
    role: Role,
    mut closing: watch::Receiver<bool>,
    serving: tokio::task::JoinHandle<()>,
) {
    let mut draining = false;
    let watchdog = tokio::time::sleep_until(at(state.accepted + millis(limits.header_timeout)));
    tokio::pin!(watchdog);
    loop {
        tokio::select! {
            () = watchdog.as_mut() => {}
            _ = closing.wait_for(|c| *c), if !draining => {
                draining = true;
                // Read by `Draining` at the connection's next wake: hyper then ends the
                // connection after the request in flight (HTTP/1 `Connection: close`, HTTP/2
                // GOAWAY). A quiet connection is closed below, at once.
                state.draining.store(true, Ordering::Release);
            }
        }
        if state.ended.load(Ordering::Acquire) {
            return;
        }
        match state.verdict(now(), &limits, draining) {
            Verdict::Close(reason) => {
                crate::metrics::connection_closed(role.as_str(), reason.as_str());
                serving.abort();
                return;
            }
            Verdict::Until(deadline) => watchdog.as_mut().reset(at(deadline)),
        }
    }
}

type HyperConnection<'a> =
    hyper_util::server::conn::auto::Connection<'a, TokioIo<Watched>, Exchanges, TokioExecutor>;

pin_project_lite::pin_project! {
    /// The hyper connection, shut down gracefully once `State::draining` is set.
    struct Draining<'a> {
        #[pin]
        conn: HyperConnection<'a>,
        state: &'a State,
        shutting_down: bool,
    }
}

impl Future for Draining<'_> {
    type Output = Result<(), Box<dyn std::error::Error + Send + Sync>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        // One relaxed load per wake; a busy connection is woken by its own I/O soon enough.
        if !*this.shutting_down && this.state.draining.load(Ordering::Relaxed) {
            *this.shutting_down = true;
            this.conn.as_mut().graceful_shutdown();
        }
        this.conn.poll(cx)
    }
}

/// Why the watchdog closed a connection: the `reason` label of `tally_connections_closed_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Reason {
    HeaderTimeout,
    IdleTimeout,
    WriteTimeout,
    Drain,
}

impl Reason {
    fn as_str(self) -> &'static str {
        match self {
            Self::HeaderTimeout => "header_timeout",
            Self::IdleTimeout => "idle_timeout",
            Self::WriteTimeout => "write_timeout",
            Self::Drain => "drain",
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Close(Reason),
    /// Look again at this time (milliseconds on `now()`'s clock).
    Until(u64),
}

/// What the watchdog reads, written by the IO wrapper, the service and the response bodies
/// (HTTP/2 streams run as tasks of their own, hence atomics). Times are `now()` milliseconds;
/// 0 means "not set" (the clock starts at 1).
struct State {
    accepted: u64,
    /// Requests from the service call until their response body is finished or dropped.
    exchanges: AtomicUsize,
    /// When `exchanges` last fell to 0; 0 while no request has been made.
    quiet_since: AtomicU64,
    /// The first byte read while no request was in flight.
    head_since: AtomicU64,
    /// The first write that could not proceed, since the last one that did.
    stalled_since: AtomicU64,
    http2: AtomicBool,
    /// Set by the watchdog when the listener drains.
    draining: AtomicBool,
    /// Set when the serving task ends, so the watchdog stops.
    ended: AtomicBool,
    watchdog: OnceLock<tokio::task::AbortHandle>,
}

impl State {
    fn new(accepted: u64) -> Self {
        Self {
            accepted,
            exchanges: AtomicUsize::new(0),
            quiet_since: AtomicU64::new(0),
            head_since: AtomicU64::new(0),
            stalled_since: AtomicU64::new(0),
            http2: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            ended: AtomicBool::new(false),
            watchdog: OnceLock::new(),
        }
    }

    fn verdict(&self, now: u64, limits: &Limits, draining: bool) -> Verdict {
        let header = millis(limits.header_timeout);
        let stalled = self.stalled_since.load(Ordering::Relaxed);
        let mut deadline = u64::MAX;
        if stalled != 0 {
            if now >= stalled + header {
                return Verdict::Close(Reason::WriteTimeout);
            }
            deadline = stalled + header;
        }
        if self.exchanges.load(Ordering::Acquire) == 0 {
            if draining {
                return Verdict::Close(Reason::Drain);
            }
            let quiet = self.quiet_since.load(Ordering::Acquire);
            let head = self.head_since.load(Ordering::Relaxed);
            let (end, reason) = if quiet == 0 {
                (self.accepted + header, Reason::HeaderTimeout)
            } else if head != 0 && !self.http2.load(Ordering::Relaxed) {
                (head + header, Reason::HeaderTimeout)
            } else {
                (quiet + millis(limits.idle_timeout), Reason::IdleTimeout)
            };
            if now >= end {
                return Verdict::Close(reason);
            }
            deadline = deadline.min(end);
        }
        let look_again = if draining { millis(DRAIN_POLL) } else { header };
        Verdict::Until(deadline.min(now + look_again))
    }

    fn begin(&self, version: Version) {
        if version == Version::HTTP_2 {
            self.http2.store(true, Ordering::Relaxed);
        }
        self.head_since.store(0, Ordering::Relaxed);
        self.exchanges.fetch_add(1, Ordering::AcqRel);
    }

    fn end(&self) {
        if self.exchanges.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.quiet_since.store(now(), Ordering::Release);
        }
    }

    fn read_some(&self) {
        if self.exchanges.load(Ordering::Relaxed) == 0
            && self.head_since.load(Ordering::Relaxed) == 0
        {
            self.head_since.store(now(), Ordering::Relaxed);
        }
    }

    fn write_blocked(&self, blocked: bool) {
        let since = self.stalled_since.load(Ordering::Relaxed);
        if blocked && since == 0 {
            self.stalled_since.store(now(), Ordering::Relaxed);
        } else if !blocked && since != 0 {
            self.stalled_since.store(0, Ordering::Relaxed);
        }
    }
}

/// The watchdog's clock: milliseconds since the first use, plus one so that 0 means "never".
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

pub(super) fn now() -> u64 {
    EPOCH.elapsed().as_millis() as u64 + 1
}

fn at(ms: u64) -> Instant {
    *EPOCH + Duration::from_millis(ms.saturating_sub(1))
}

fn millis(d: Duration) -> u64 {
    d.as_millis().min(u128::from(u64::MAX / 4)) as u64
}

pin_project_lite::pin_project! {
    /// The socket, noting for the watchdog when bytes arrive and when writes cannot proceed.
    struct Watched {
        #[pin]
        inner: TcpStream,
        state: Arc<State>,
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let result = ready!(this.inner.poll_read(cx, buf));
        if buf.filled().len() > before {
            this.state.read_some();
        }
        Poll::Ready(result)
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let result = this.inner.poll_write(cx, buf);
        this.state.write_blocked(result.is_pending());
        result
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let result = this.inner.poll_write_vectored(cx, bufs);
        this.state.write_blocked(result.is_pending());
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

/// The hyper service of one connection: marks each exchange for the watchdog, bounds request
/// bodies by the deadline, and passes the peer address to the router.
#[derive(Clone)]
struct Exchanges {
    app: Router,
    state: Arc<State>,
    peer: Option<SocketAddr>,
    body_timeout: Duration,
}

impl hyper::service::Service<Request<Incoming>> for Exchanges {
    type Response = Response<ExchangeBody>;
    type Error = Infallible;
    type Future = ExchangeFuture;

    fn call(&self, request: Request<Incoming>) -> ExchangeFuture {
        self.state.begin(request.version());
        let exchange = Exchange(self.state.clone());
        let limit = self.body_timeout;
        let mut request = request.map(|body| DeadlineBody::new(body, limit));
        if let Some(peer) = self.peer {
            request
                .extensions_mut()
                .insert(axum::extract::ConnectInfo(peer));
        }
        ExchangeFuture {
            inner: self.app.clone().call(request),
            exchange: Some(exchange),
        }
    }
}

/// An exchange in progress; it ends when dropped.
struct Exchange(Arc<State>);

impl Drop for Exchange {
    fn drop(&mut self) {
        self.0.end();
    }
}

pin_project_lite::pin_project! {
    struct ExchangeFuture {
        #[pin]
        inner: axum::routing::future::RouteFuture<Infallible>,
        exchange: Option<Exchange>,
    }
}

impl Future for ExchangeFuture {
    type Output = Result<Response<ExchangeBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Ok(response) = ready!(this.inner.poll(cx));
        let exchange = this.exchange.take();
        Poll::Ready(Ok(response.map(|body| ExchangeBody { body, exchange })))
    }
}

pin_project_lite::pin_project! {
    /// A response body; the exchange ends when hyper has taken all of it, or drops it.
    struct ExchangeBody {
        #[pin]
        body: Body,
        exchange: Option<Exchange>,
    }
}

impl http_body::Body for ExchangeBody {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = ready!(this.body.poll_frame(cx));
        if frame.is_none() {
            this.exchange.take();
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(600),
            max_connections: 10,
            body_timeout: Duration::from_secs(2),
        }
    }

    fn state_at(accepted: u64) -> State {
        State::new(accepted)
    }

    #[test]
    fn the_first_head_is_due_one_header_timeout_after_accept() {
        let s = state_at(1000);
        assert_eq!(s.verdict(1000, &limits(), false), Verdict::Until(11_000));
        assert_eq!(
            s.verdict(11_000, &limits(), false),
            Verdict::Close(Reason::HeaderTimeout)
        );
    }

    #[test]
    fn between_requests_idle_until_a_byte_then_the_header_rule() {
        let s = state_at(1000);
        s.begin(Version::HTTP_11);
        assert_eq!(s.verdict(5000, &limits(), false), Verdict::Until(15_000));
        s.quiet_since.store(20_000, Ordering::Relaxed);
        s.exchanges.store(0, Ordering::Relaxed);
        // Idle: never armed more than one header timeout ahead.
        assert_eq!(s.verdict(20_000, &limits(), false), Verdict::Until(30_000));
        assert_eq!(
            s.verdict(620_000, &limits(), false),
            Verdict::Close(Reason::IdleTimeout)
        );
        s.head_since.store(25_000, Ordering::Relaxed);
        assert_eq!(s.verdict(30_000, &limits(), false), Verdict::Until(35_000));
        assert_eq!(
            s.verdict(35_000, &limits(), false),
            Verdict::Close(Reason::HeaderTimeout)
        );
        // HTTP/2: bytes between streams are pings and settings, not a head.
        s.http2.store(true, Ordering::Relaxed);
        assert_eq!(s.verdict(35_000, &limits(), false), Verdict::Until(45_000));
    }

    #[test]
    fn a_stalled_write_closes_even_mid_request_and_draining_closes_only_quiet_ones() {
        let s = state_at(1000);
        s.begin(Version::HTTP_11);
        s.write_blocked(true);
        let since = s.stalled_since.load(Ordering::Relaxed);
        assert_eq!(
            s.verdict(since + 10_000, &limits(), false),
            Verdict::Close(Reason::WriteTimeout)
        );
        s.write_blocked(false);
        assert_eq!(
            s.verdict(since + 10_000, &limits(), true),
            Verdict::Until(since + 10_050)
        );
        s.end();
        assert_eq!(
            s.verdict(since + 10_000, &limits(), true),
            Verdict::Close(Reason::Drain)
        );
    }
}
