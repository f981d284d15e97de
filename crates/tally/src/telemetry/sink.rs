//! Where log lines go: an in-memory buffer that a thread of its own writes to stdout every few
//! milliseconds. At the default level every request logs a line, and a `write(2)` per line on
//! the request path (or a wake-up of a writer thread per line) cost a third of the service's
//! throughput (bench/README.md). Requests never wait for stdout: if it stalls and the buffer is
//! full, lines are dropped and counted, and the count is logged once stdout moves again.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// How long a line may wait in the buffer.
const FLUSH_EVERY: Duration = Duration::from_millis(20);
/// Lines beyond this many buffered bytes are dropped (stdout is not keeping up).
const MAX_BUFFERED: usize = 8 * 1024 * 1024;

pub struct Sink {
    buffer: Mutex<Vec<u8>>,
    dropped: AtomicU64,
    /// False when the log thread could not be started: lines are then written at once.
    threaded: AtomicBool,
    /// The format of the line that reports dropped lines.
    json: bool,
}

impl Sink {
    /// Starts the thread that writes the buffer to stdout.
    pub fn start(json: bool) -> Arc<Self> {
        let sink = Arc::new(Self {
            buffer: Mutex::new(Vec::with_capacity(64 * 1024)),
            dropped: AtomicU64::new(0),
            threaded: AtomicBool::new(true),
            json,
        });
        let weak = Arc::downgrade(&sink);
        let spawned = std::thread::Builder::new()
            .name("tally-log".into())
            .spawn(move || {
                while let Some(sink) = weak.upgrade() {
                    sink.flush();
                    drop(sink);
                    std::thread::sleep(FLUSH_EVERY);
                }
            });
        if let Err(e) = spawned {
            sink.threaded.store(false, Ordering::Relaxed);
            eprintln!("tally: cannot start the log thread ({e}); log lines are written at once");
        }
        sink
    }

    /// Appends one whole line (or several); never blocks on stdout.
    pub fn append(&self, line: &[u8]) {
        if !self.threaded.load(Ordering::Relaxed) {
            let _ = std::io::stdout().lock().write_all(line);
            return;
        }
        let mut buffer = self.lock();
        if buffer.len() + line.len() > MAX_BUFFERED {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        buffer.extend_from_slice(line);
    }

    /// Writes out what is buffered. Called by the log thread and when logging ends.
    pub fn flush(&self) {
        // Stdout first: flushes run one at a time and in order, and the last one at exit waits
        // for a batch the log thread is still writing.
        let mut out = std::io::stdout().lock();
        let pending = {
            let mut buffer = self.lock();
            if buffer.is_empty() {
                Vec::new()
            } else {
                std::mem::replace(&mut *buffer, Vec::with_capacity(64 * 1024))
            }
        };
        // Nowhere to report a failed write to stdout; the next flush tries again with new lines.
        if !pending.is_empty() {
            let _ = out.write_all(&pending).and_then(|()| out.flush());
        }
        let dropped = self.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            let now = humantime::format_rfc3339_micros(std::time::SystemTime::now());
            let what = "stdout did not keep up; log lines were dropped";
            let _ = if self.json {
                writeln!(
                    out,
                    r#"{{"timestamp":"{now}","level":"WARN","message":"{what}","dropped":{dropped},"target":"tally::telemetry"}}"#
                )
            } else {
                writeln!(
                    out,
                    "{now}  WARN tally::telemetry: {what} dropped={dropped}"
                )
            };
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<u8>> {
        self.buffer.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The writer tracing-subscriber formats each event into (one `write_all` per event).
pub struct SinkWriter(pub Arc<Sink>);

impl Write for SinkWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.append(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_beyond_the_limit_are_dropped_and_counted() {
        let sink = Sink {
            buffer: Mutex::new(Vec::new()),
            dropped: AtomicU64::new(0),
            threaded: AtomicBool::new(true),
            json: true,
        };
        sink.append(b"first\n");
        sink.append(&vec![b'x'; MAX_BUFFERED]);
        assert_eq!(sink.lock().as_slice(), b"first\n");
        assert_eq!(sink.dropped.load(Ordering::Relaxed), 1);
    }
}
