//! The access log: one line per request, target `tally::access`, level INFO.
//!
//! In JSON mode the line is written by hand into a reused buffer: through tracing-subscriber's
//! JSON formatter it cost ~17,000 instructions per request, a third of everything else the
//! request did (bench/README.md). The fields and their order are the formatter's (`latency_ms`
//! with microsecond precision), so log pipelines see the same lines. RUST_LOG still decides
//! whether the line is written.

use std::cell::RefCell;
use std::io::Write;
use std::time::{Duration, SystemTime};

use super::{sink, LogFormat};

pub struct AccessEntry<'a> {
    pub method: &'a str,
    pub route: &'a str,
    pub status: u16,
    pub latency: Duration,
    pub request_id: &'a str,
    /// 32 lowercase hex digits (`trace::TraceContext::trace_id_hex`).
    pub trace_id: &'a str,
    pub span_id: &'a str,
}

/// Whether RUST_LOG lets access lines through: callers skip building an entry when not.
pub fn enabled() -> bool {
    tracing::enabled!(target: "tally::access", tracing::Level::INFO)
}

pub fn log(entry: &AccessEntry<'_>) {
    if !enabled() {
        return;
    }
    match (super::format(), sink()) {
        (Some(LogFormat::Json), Some(sink)) => LINE.with_borrow_mut(|line| {
            line.clear();
            write_json(line, entry, SystemTime::now());
            sink.append(line);
        }),
        _ => tracing::info!(
            target: "tally::access",
            method = %entry.method,
            route = %entry.route,
            status = entry.status,
            latency_ms = entry.latency.as_secs_f64() * 1000.0,
            request_id = entry.request_id,
            trace_id = entry.trace_id,
            span_id = entry.span_id,
            "request"
        ),
    }
}

thread_local! {
    static LINE: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(256));
}

fn write_json(out: &mut Vec<u8>, e: &AccessEntry<'_>, now: SystemTime) {
    out.extend_from_slice(b"{\"timestamp\":\"");
    // Writing to a Vec cannot fail.
    let _ = write!(out, "{}", humantime::format_rfc3339_micros(now));
    out.extend_from_slice(b"\",\"level\":\"INFO\",\"message\":\"request\",\"method\":");
    string(out, e.method);
    out.extend_from_slice(b",\"route\":");
    string(out, e.route);
    out.extend_from_slice(b",\"status\":");
    out.extend_from_slice(itoa::Buffer::new().format(e.status).as_bytes());
    // Milliseconds with microsecond precision, without float formatting.
    let micros = e.latency.as_micros();
    out.extend_from_slice(b",\"latency_ms\":");
    out.extend_from_slice(itoa::Buffer::new().format(micros / 1000).as_bytes());
    let frac = (micros % 1000) as u16;
    out.extend_from_slice(&[
        b'.',
        b'0' + (frac / 100) as u8,
        b'0' + (frac / 10 % 10) as u8,
        b'0' + (frac % 10) as u8,
    ]);
    out.extend_from_slice(b",\"request_id\":");
    string(out, e.request_id);
    // Hex digits: nothing to escape.
    out.extend_from_slice(b",\"trace_id\":\"");
    out.extend_from_slice(e.trace_id.as_bytes());
    out.extend_from_slice(b"\",\"span_id\":\"");
    out.extend_from_slice(e.span_id.as_bytes());
    out.extend_from_slice(b"\",\"target\":\"tally::access\"}\n");
}

/// A JSON string. Escapes everything JSON requires, although the inputs (a method token, a route
/// template, a printable request id) can only contain `"` and `\` of it.
fn string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    for &b in s.as_bytes() {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0..=0x1f => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.extend_from_slice(&[HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]]);
            }
            _ => out.push(b),
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_is_json_with_the_formatter_fields() {
        let mut out = Vec::new();
        let entry = AccessEntry {
            method: "GET",
            route: "/{id}",
            status: 200,
            latency: Duration::from_micros(1_042),
            request_id: r#"a"b\c"#,
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736",
            span_id: "00f067aa0ba902b7",
        };
        write_json(&mut out, &entry, SystemTime::UNIX_EPOCH);
        assert_eq!(out.last(), Some(&b'\n'));
        let line: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(line["timestamp"], "1970-01-01T00:00:00.000000Z");
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["target"], "tally::access");
        assert_eq!(line["message"], "request");
        assert_eq!(line["method"], "GET");
        assert_eq!(line["route"], "/{id}");
        assert_eq!(line["status"], 200);
        assert_eq!(line["latency_ms"], 1.042);
        assert_eq!(line["request_id"], r#"a"b\c"#);
        assert_eq!(line["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(line["span_id"], "00f067aa0ba902b7");
    }

    #[test]
    fn control_characters_are_escaped() {
        let mut out = Vec::new();
        string(&mut out, "a\u{1}\n");
        assert_eq!(out, br#""a\u0001\u000a""#);
    }
}
