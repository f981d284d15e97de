//! The watchdog's state of one connection and its rules (see `conn` for what they are and why):
//! written by the IO wrapper, the service and the response bodies, read by the watchdog task.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{LazyLock, OnceLock};
use std::time::Duration;

use axum::http::Version;
use tokio::time::Instant;

use super::Limits;

/// How often a draining connection with a request in flight looks whether it has finished.
pub(super) const DRAIN_POLL: Duration = Duration::from_millis(50);

/// Why the watchdog closed a connection: the `reason` label of `tally_connections_closed_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Reason {
    HeaderTimeout,
    IdleTimeout,
    WriteTimeout,
    Drain,
}

impl Reason {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Self::HeaderTimeout => "header_timeout",
            Self::IdleTimeout => "idle_timeout",
            Self::WriteTimeout => "write_timeout",
            Self::Drain => "drain",
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    Close(Reason),
    /// Look again at this time (milliseconds on `now()`'s clock).
    Until(u64),
}

/// What the watchdog reads, written by the IO wrapper, the service and the response bodies
/// (HTTP/2 streams run as tasks of their own, hence atomics). Times are `now()` milliseconds;
/// 0 means "not set" (the clock starts at 1).
pub(super) struct State {
    pub(super) accepted: u64,
    /// Requests from the service call until their response body is finished or dropped.
    pub(super) exchanges: AtomicUsize,
    /// When `exchanges` last fell to 0; 0 while no request has been made.
    pub(super) quiet_since: AtomicU64,
    /// The first byte read while no request was in flight.
    pub(super) head_since: AtomicU64,
    /// The first write that could not proceed, since the last one that did.
    pub(super) stalled_since: AtomicU64,
    pub(super) http2: AtomicBool,
    /// Set by the watchdog when the listener drains.
    pub(super) draining: AtomicBool,
    /// Set when the serving task ends, so the watchdog stops.
    pub(super) ended: AtomicBool,
    pub(super) watchdog: OnceLock<tokio::task::AbortHandle>,
}

impl State {
    pub(super) fn new(accepted: u64) -> Self {
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

    pub(super) fn verdict(&self, now: u64, limits: &Limits, draining: bool) -> Verdict {
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

    pub(super) fn begin(&self, version: Version) {
        if version == Version::HTTP_2 {
            self.http2.store(true, Ordering::Relaxed);
        }
        self.head_since.store(0, Ordering::Relaxed);
        self.exchanges.fetch_add(1, Ordering::AcqRel);
    }

    pub(super) fn end(&self) {
        if self.exchanges.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.quiet_since.store(now(), Ordering::Release);
        }
    }

    pub(super) fn read_some(&self) {
        if self.exchanges.load(Ordering::Relaxed) == 0
            && self.head_since.load(Ordering::Relaxed) == 0
        {
            self.head_since.store(now(), Ordering::Relaxed);
        }
    }

    pub(super) fn write_blocked(&self, blocked: bool) {
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

pub(super) fn at(ms: u64) -> Instant {
    *EPOCH + Duration::from_millis(ms.saturating_sub(1))
}

pub(super) fn millis(d: Duration) -> u64 {
    d.as_millis().min(u128::from(u64::MAX / 4)) as u64
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
