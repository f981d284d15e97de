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
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, Response};
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tower::Service as _;

use super::body::DeadlineBody;
pub(super) use super::watchdog::now;
use super::watchdog::{at, millis, State, Verdict};
use super::{Limits, OpenGuard, Role};

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
