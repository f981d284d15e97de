//! What every store shares, whatever holds its data (Redis, Postgres or this process): its
//! failures, sorted by what the caller can do about them, and the Idempotency-Key of a write.
//! A leaf: it imports nothing from the crate.

use std::fmt;
use std::time::Duration;

/// Counters, and idempotency records of each kind, the memory stores hold at most (each
/// feature its own): about 30 MB of counters and 60 MB of records at the longest ids and keys,
/// far more than trying tally out needs. Like a Redis at `maxmemory`, past it new entries are
/// refused as `Full`.
pub const MAX_ENTRIES: usize = 100_000;

/// An Idempotency-Key: the same key within the window returns the first answer.
#[derive(Debug, Clone, Copy)]
pub struct Idempotency<'a> {
    pub key: &'a str,
    pub ttl: Duration,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The store could not answer (down, unreachable, no master, wrong credentials, too slow).
    /// The increment may or may not have been applied; the client may retry (ideally with an
    /// Idempotency-Key). Maps to 503.
    #[error("store unavailable ({kind}): {detail}")]
    Unavailable { kind: Unavailable, detail: String },

    /// The Idempotency-Key was first used for another id. Maps to 422.
    #[error("the Idempotency-Key was already used for another id")]
    IdempotencyConflict,

    /// The key holds something that is not a counter (e.g. a string written by another program
    /// when the key prefix is empty). Retrying will not help. Maps to 409.
    #[error("the key for this id holds a value that is not an integer counter")]
    NotACounter,

    /// The counter is at the largest value it can hold; the increment did not run. Maps to 409.
    #[error(
        "the counter is at its largest value ({}) and cannot count further",
        i64::MAX
    )]
    Overflow,

    /// The store refused new data because it is full (Redis `maxmemory` under `noeviction`, or
    /// the memory store's bound). The write did not run; retrying soon will not help.
    /// Maps to 507.
    #[error("the store is full")]
    Full,
}

/// An Idempotency-Key with a minute's window, for the stores' unit tests.
#[cfg(test)]
pub(crate) fn test_key(key: &str) -> Option<Idempotency<'_>> {
    Some(Idempotency {
        key,
        ttl: Duration::from_secs(60),
    })
}

/// Why the store is unavailable; also the `kind` label of `tally_store_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailable {
    /// Could not open a connection (refused, DNS, connect timeout). Nothing was sent.
    Connect,
    /// No reply within the deadline. The command may have run.
    Timeout,
    /// The server rejected our credentials.
    Auth,
    /// Sentinel mode: the sentinels name no master, or the one they name is not a master.
    NoMaster,
    /// The server we reached is a replica (after a failover). The command did not run.
    ReadOnly,
    /// The server is loading its dataset after a restart.
    Loading,
    /// The master refused the write: too few replicas in sync (`min-replicas-to-write`), or
    /// it fenced itself (a preStop handover, no majority of sentinels). The command did not run.
    NoReplicas,
    /// The write ran, but `WAIT` returned before enough replicas confirmed it.
    Unconfirmed,
    /// The connection broke while a command was in flight. The command may have run.
    Io,
    /// Any other error the server returned.
    Server,
    /// The server is configured so that tally cannot keep its promises (an evicting
    /// `maxmemory-policy`), or tally's own connection settings cannot be used (a password, CA or
    /// certificate file that cannot be read or parsed). Nothing was sent.
    Config,
    /// The server cannot write its disk (`MISCONF`: a failed snapshot or AOF write) and refuses
    /// writes until it can. The command did not run.
    Disk,
    /// Cluster mode: the slot has another master (MOVED), or is migrating (ASK) and a redirect
    /// was followed too often within the deadline. The command did not run.
    Redirect,
    /// Cluster mode: the cluster cannot serve the slot (CLUSTERDOWN), or the keys of a migrating
    /// slot are split (TRYAGAIN). The command did not run.
    ClusterDown,
}

impl Unavailable {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Timeout => "timeout",
            Self::Auth => "auth",
            Self::NoMaster => "no_master",
            Self::ReadOnly => "readonly",
            Self::Loading => "loading",
            Self::NoReplicas => "no_replicas",
            Self::Unconfirmed => "unconfirmed",
            Self::Io => "io",
            Self::Server => "server",
            Self::Config => "config",
            Self::Disk => "disk",
            Self::Redirect => "redirect",
            Self::ClusterDown => "cluster_down",
        }
    }
}

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl StoreError {
    pub fn unavailable(kind: Unavailable, detail: impl Into<String>) -> Self {
        Self::Unavailable {
            kind,
            detail: detail.into(),
        }
    }

    /// True when the store could not take the command and it certainly did not run, so sending
    /// it again (to another server, or once this one is reachable) cannot apply it twice.
    pub fn not_executed(&self) -> bool {
        matches!(
            self,
            Self::Unavailable {
                kind: Unavailable::Connect
                    | Unavailable::NoMaster
                    | Unavailable::ReadOnly
                    | Unavailable::NoReplicas
                    | Unavailable::Config
                    | Unavailable::Redirect
                    | Unavailable::ClusterDown,
                ..
            }
        )
    }

    /// A failure of the store itself, as counted by `tally_store_errors_total` and its alert;
    /// false for answers about the client's request (conflict, not a counter, overflow).
    pub fn is_store_failure(&self) -> bool {
        matches!(self, Self::Unavailable { .. } | Self::Full)
    }

    /// The `kind` label of `tally_store_errors_total` when this is a failure of the store
    /// itself; `None` for the client's mistakes.
    pub fn failure_kind(&self) -> Option<&'static str> {
        self.is_store_failure().then(|| self.metric_kind())
    }

    pub fn metric_kind(&self) -> &'static str {
        match self {
            Self::Unavailable { kind, .. } => kind.as_str(),
            Self::IdempotencyConflict => "idempotency_conflict",
            Self::NotACounter => "not_a_counter",
            Self::Overflow => "overflow",
            Self::Full => "full",
        }
    }
}
