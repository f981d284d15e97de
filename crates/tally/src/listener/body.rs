//! Request bodies with a deadline: a client that sends its body slowly cannot hold a request
//! (and its connection) for longer than the request deadline.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

/// The error a request body yields when it did not arrive within the deadline. Handlers that
/// read bodies answer it with 408 (see `http::extract`).
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {0:?}")]
pub struct BodyTimedOut(pub Duration);

pin_project_lite::pin_project! {
    /// `Incoming`, failing with `BodyTimedOut` once `limit` has passed since the request's head
    /// arrived. A request without a body reads no clock and arms no timer.
    pub struct DeadlineBody {
        #[pin]
        inner: Incoming,
        limit: Duration,
        started: Option<Instant>,
        timer: Option<Pin<Box<Sleep>>>,
    }
}

impl DeadlineBody {
    pub fn new(inner: Incoming, limit: Duration) -> Self {
        let started = (!inner.is_end_stream()).then(Instant::now);
        Self {
            inner,
            limit,
            started,
            timer: None,
        }
    }
}

impl Body for DeadlineBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        if let Poll::Ready(frame) = this.inner.poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let Some(started) = *this.started else {
            return Poll::Pending;
        };
        let limit = *this.limit;
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(started + limit)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyTimedOut(limit))))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// True when `error` or one of its sources is a `BodyTimedOut`.
pub fn timed_out(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if e.is::<BodyTimedOut>() {
            return true;
        }
        current = e.source();
    }
    false
}
