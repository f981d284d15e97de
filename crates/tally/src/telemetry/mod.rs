//! Logging: JSON lines for machines (the default when stdout is not a terminal), text for people.
//! Levels come from RUST_LOG (default `info`). Lines are buffered and written by a thread of
//! their own (`sink`); the per-request access line has a fast path (`access`).

mod access;
mod sink;

use std::io::IsTerminal;
use std::sync::{Arc, OnceLock};

use tracing_subscriber::{fmt, EnvFilter};

pub use self::access::{enabled as access_enabled, log as access, AccessEntry};
use crate::config::LogFormat;

use self::sink::{Sink, SinkWriter};

/// The format and sink of the installed subscriber; unset when none is (in-process tests).
static INSTALLED: OnceLock<(LogFormat, Arc<Sink>)> = OnceLock::new();

fn format() -> Option<LogFormat> {
    INSTALLED.get().map(|(f, _)| *f)
}

fn sink() -> Option<&'static Arc<Sink>> {
    INSTALLED.get().map(|(_, s)| s)
}

/// Writes out the buffered log lines when dropped: keep it until the process ends.
#[must_use = "dropping the guard writes out the buffered lines; keep it until the end"]
pub struct LogGuard(());

impl Drop for LogGuard {
    fn drop(&mut self) {
        flush();
    }
}

/// Writes out the buffered log lines now (the last thing before the process exits).
pub fn flush() {
    if let Some(sink) = sink() {
        sink.flush();
    }
}

pub fn init(format: Option<LogFormat>) -> LogGuard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let terminal = std::io::stdout().is_terminal();
    let format = format.unwrap_or(if terminal {
        LogFormat::Text
    } else {
        LogFormat::Json
    });
    let sink = Sink::start(format == LogFormat::Json);
    let writer = {
        let sink = sink.clone();
        move || SinkWriter(sink.clone())
    };
    let builder = fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(terminal);
    let result = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
    // A second init (tests) keeps the first subscriber, and with it the first sink.
    if result.is_ok() {
        let _ = INSTALLED.set((format, sink));
    }
    LogGuard(())
}
