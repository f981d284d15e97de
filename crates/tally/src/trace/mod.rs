//! W3C Trace Context: each request continues the caller's trace (its `traceparent` header) or
//! starts one, gets a span id of its own, and passes `traceparent` on to what it calls: the web
//! tier to the API, the API to the worker through the job's stream entry. The trace id is in
//! every access line and job line, so one search in the logs follows a click to its job.
//!
//! The ids are ours, not a tracing span's: with export off (the default) a request costs one
//! random number and no span; with OTLP export on (`otlp`), the exported span carries the same ids
//! as the log lines.

pub mod export;

use std::fmt;
use std::time::SystemTime;

use axum::http::{HeaderName, HeaderValue};

// Header names as values, not strings: a lookup by `&str` parses and lowercases the name each
// time (~170 instructions per lookup in callgrind).
pub static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
/// The spec lets vendors' state grow to 512 bytes; more is dropped, not forwarded.
const MAX_TRACESTATE_BYTES: usize = 512;

/// One span's place in a trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: u128,
    pub span_id: u64,
    /// The caller's span, when the trace came from a valid `traceparent`.
    pub parent_id: Option<u64>,
    /// The caller's sampled flag (bit 0 of trace-flags); new traces are sampled.
    pub sampled: bool,
    /// The caller's `tracestate`, passed on unchanged when it is sane.
    pub state: Option<HeaderValue>,
    /// When the span started, for export.
    pub started: SystemTime,
}

impl TraceContext {
    /// A span continuing `traceparent` when it parses, else the root of a new trace (an invalid
    /// header is ignored, as the spec asks, rather than refused).
    pub fn continue_from(traceparent: Option<&[u8]>, tracestate: Option<&HeaderValue>) -> Self {
        let Some((trace_id, parent_id, flags)) = traceparent.and_then(parse) else {
            return Self::root();
        };
        Self {
            trace_id,
            span_id: random_span_id(),
            parent_id: Some(parent_id),
            sampled: flags & 1 == 1,
            state: tracestate
                .filter(|s| s.len() <= MAX_TRACESTATE_BYTES && s.to_str().is_ok())
                .cloned(),
            started: SystemTime::now(),
        }
    }

    pub fn root() -> Self {
        Self {
            trace_id: uuid::Uuid::new_v4().as_u128(),
            span_id: random_span_id(),
            parent_id: None,
            sampled: true,
            state: None,
            started: SystemTime::now(),
        }
    }

    /// The `traceparent` that makes this span the parent of the callee's.
    pub fn traceparent(&self) -> String {
        self.traceparent_text().as_str().to_owned()
    }

    pub fn traceparent_header(&self) -> HeaderValue {
        HeaderValue::from_str(self.traceparent_text().as_str()).expect("hex digits and dashes")
    }

    /// `00-{trace id}-{span id}-{flags}`, written into a fixed buffer: `format!` with `{:032x}`
    /// cost ~1,900 instructions a call (callgrind).
    fn traceparent_text(&self) -> Hex<55> {
        let mut out = [b'-'; 55];
        out[0..2].copy_from_slice(b"00");
        out[3..35].copy_from_slice(&self.trace_id_hex().0);
        out[36..52].copy_from_slice(&self.span_id_hex().0);
        out[53..55].copy_from_slice(if self.sampled { b"01" } else { b"00" });
        Hex(out)
    }

    /// The trace id as 32 lowercase hex digits, the form log lines and trace UIs show.
    pub fn trace_id_hex(&self) -> Hex<32> {
        Hex::new(self.trace_id)
    }

    pub fn span_id_hex(&self) -> Hex<16> {
        Hex::new(u128::from(self.span_id))
    }
}

/// A span id from the v4 UUID generator (already used for request ids). Its low 64 bits hold the
/// variant bits `10`, so the id is never zero, which the spec forbids.
fn random_span_id() -> u64 {
    uuid::Uuid::new_v4().as_u128() as u64
}

/// Parses `version-traceid-parentid-flags`. Version 00 must be exactly 55 bytes; a later version
/// may append fields after a dash, which are ignored. All-zero ids and version ff are invalid.
fn parse(header: &[u8]) -> Option<(u128, u64, u8)> {
    if header.len() < 55 || (header.len() > 55 && header[55] != b'-') {
        return None;
    }
    let version = hex(&header[0..2])? as u8;
    if version == 0xff || (version == 0 && header.len() != 55) {
        return None;
    }
    if header[2] != b'-' || header[35] != b'-' || header[52] != b'-' {
        return None;
    }
    let trace_id = hex(&header[3..35])?;
    let parent_id = hex(&header[36..52])? as u64;
    let flags = hex(&header[53..55])? as u8;
    (trace_id != 0 && parent_id != 0).then_some((trace_id, parent_id, flags))
}

/// Lowercase hex only: the spec's form, and uppercase must be treated as invalid.
fn hex(digits: &[u8]) -> Option<u128> {
    digits.iter().try_fold(0u128, |acc, &d| {
        let v = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            _ => return None,
        };
        Some(acc << 4 | u128::from(v))
    })
}

/// An id formatted as lowercase hex into a fixed buffer, without allocating (ASCII only).
pub struct Hex<const N: usize>([u8; N]);

impl<const N: usize> Hex<N> {
    fn new(value: u128) -> Self {
        let mut out = [b'0'; N];
        for (i, slot) in out.iter_mut().enumerate() {
            let shift = 4 * (N - 1 - i);
            *slot = b"0123456789abcdef"[((value >> shift) & 0xf) as usize];
        }
        Self(out)
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("hex digits and dashes are ASCII")
    }
}

impl<const N: usize> fmt::Display for Hex<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

tokio::task_local! {
    /// The span of the request this task is serving, for the calls it makes.
    static CURRENT: TraceContext;
}

/// Runs `work` with `context` as the current span of this task (a future that can be named, for
/// a hand-written service's future).
pub fn scoped<F: std::future::Future>(
    context: TraceContext,
    work: F,
) -> tokio::task::futures::TaskLocalFuture<TraceContext, F> {
    CURRENT.scope(context, work)
}

/// Runs `work` within `context` when there is one (for tasks spawned by a request).
pub async fn within<F: std::future::Future>(context: Option<TraceContext>, work: F) -> F::Output {
    match context {
        Some(context) => CURRENT.scope(context, work).await,
        None => work.await,
    }
}

/// The span of the request this task serves.
pub fn current() -> Option<TraceContext> {
    CURRENT.try_with(Clone::clone).ok()
}

/// The `traceparent` (and `tracestate`) for a call made on behalf of the current request.
pub fn outgoing() -> Option<(HeaderValue, Option<HeaderValue>)> {
    CURRENT
        .try_with(|c| (c.traceparent_header(), c.state.clone()))
        .ok()
}

/// The current request's `traceparent`, as a job carries it.
pub fn current_traceparent() -> Option<String> {
    CURRENT.try_with(TraceContext::traceparent).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC_EXAMPLE: &[u8] = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_traceparent_is_continued_with_a_new_span() {
        let c = TraceContext::continue_from(Some(SPEC_EXAMPLE), None);
        assert_eq!(
            c.trace_id_hex().as_str(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(c.parent_id, Some(0x00f067aa0ba902b7));
        assert_ne!(c.span_id, 0x00f067aa0ba902b7);
        assert!(c.sampled);
        let next = c.traceparent();
        assert!(
            next.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
            "{next}"
        );
        assert!(next.ends_with("-01"));
        assert_eq!(parse(next.as_bytes()).map(|p| p.1), Some(c.span_id));
    }

    #[test]
    fn invalid_traceparents_start_a_new_trace() {
        let bad: &[&[u8]] = &[
            b"",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
            b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            b"00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            b"00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ];
        for header in bad {
            let c = TraceContext::continue_from(Some(header), None);
            assert_eq!(c.parent_id, None, "{:?}", String::from_utf8_lossy(header));
            assert_ne!(c.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
        }
        // A later version may add fields; its first four are read.
        let future = b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-more";
        let c = TraceContext::continue_from(Some(future), None);
        assert_eq!(c.parent_id, Some(0x00f067aa0ba902b7));
        assert!(!c.sampled);
    }

    #[test]
    fn ids_print_as_fixed_width_lowercase_hex() {
        let mut c = TraceContext::root();
        c.trace_id = 0xab;
        c.span_id = 1;
        assert_eq!(c.trace_id_hex().as_str(), format!("{:032x}", 0xab));
        assert_eq!(c.span_id_hex().as_str(), "0000000000000001");
        assert_ne!(TraceContext::root().trace_id, TraceContext::root().trace_id);
    }

    #[test]
    fn traceparent_is_the_spec_form() {
        for sampled in [true, false] {
            let mut c = TraceContext::root();
            c.sampled = sampled;
            let expected = format!(
                "00-{:032x}-{:016x}-{:02x}",
                c.trace_id,
                c.span_id,
                u8::from(sampled)
            );
            assert_eq!(c.traceparent(), expected);
            assert_eq!(c.traceparent_header(), expected.as_str());
            let parsed = parse(expected.as_bytes()).unwrap();
            assert_eq!(parsed, (c.trace_id, c.span_id, u8::from(sampled)));
        }
    }

    #[test]
    fn oversized_tracestate_is_dropped() {
        let big = HeaderValue::from_str(&"a".repeat(600)).unwrap();
        let c = TraceContext::continue_from(Some(SPEC_EXAMPLE), Some(&big));
        assert!(c.state.is_none());
        let ok = HeaderValue::from_static("vendor=1");
        let c = TraceContext::continue_from(Some(SPEC_EXAMPLE), Some(&ok));
        assert_eq!(c.state, Some(ok));
    }
}
