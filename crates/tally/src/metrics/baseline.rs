//! Series registered at 0 when a process starts, so that dashboards show 0 rather than
//! "No data", and so that `increase()` and `rate()` see the first event: a counter whose series
//! first appears at 1 shows no increase at all, which is how a failover alert once failed to
//! fire (issue 21). Only label sets from fixed lists are registered here; series labelled by
//! store command or error kind still appear at their first event.

use metrics::counter;

/// Which process is starting; each registers the series it can record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    Serve,
    Web,
    Worker,
}

/// The `listener` label of the connection counters (`listener::Role::as_str`).
pub const LISTENERS: &[&str] = &["public", "admin"];
/// The `reason` label of `tally_connections_closed_total` (`listener::watchdog::Reason`).
pub const CLOSE_REASONS: &[&str] = &["header_timeout", "idle_timeout", "write_timeout", "drain"];
/// The `outcome` label of `tally_jobs_total`.
pub const JOB_OUTCOMES: &[&str] = &["done", "failed", "reclaimed", "dead_lettered"];
/// The `kind` label of `tally_cluster_redirects_total`.
pub const REDIRECT_KINDS: &[&str] = &["moved", "ask", "later"];

/// The routes whose success and failure panels and alerts read, by tier: the counter route of
/// serve; the page's counter button (303 to the page on success) and the proxied counter of web.
/// 503 is what either answers when its dependency is down.
const SERVE_ROUTES: &[(&str, &str, &[&str])] = &[("/{id}", "GET", &["200", "503"])];
const WEB_ROUTES: &[(&str, &str, &[&str])] = &[
    ("/web/counter", "POST", &["303", "503"]),
    ("/{id}", "GET", &["200", "503"]),
];

/// Registers the tier's series at 0. Safe to call more than once: adding 0 changes nothing.
pub fn register(tier: Tier) {
    let listeners: &[&str] = match tier {
        Tier::Serve | Tier::Web => LISTENERS,
        Tier::Worker => &["admin"],
    };
    for &listener in listeners {
        counter!("tally_connections_refused_total", "listener" => listener).increment(0);
        counter!("tally_accept_errors_total", "listener" => listener).increment(0);
        for &reason in CLOSE_REASONS {
            counter!("tally_connections_closed_total", "listener" => listener, "reason" => reason)
                .increment(0);
        }
    }
    match tier {
        Tier::Serve => {
            routes(SERVE_ROUTES);
            for name in [
                "tally_store_connections_total",
                "tally_master_changes_total",
                "tally_wait_timeouts_total",
                "tally_idempotent_replays_total",
                "tally_combined_increments_total",
                "tally_rate_limited_total",
            ] {
                counter!(name).increment(0);
            }
            for &kind in REDIRECT_KINDS {
                counter!("tally_cluster_redirects_total", "kind" => kind).increment(0);
            }
        }
        Tier::Web => {
            routes(WEB_ROUTES);
            counter!("tally_rate_limited_total").increment(0);
        }
        Tier::Worker => {
            counter!("tally_store_connections_total").increment(0);
            for &outcome in JOB_OUTCOMES {
                counter!("tally_jobs_total", "outcome" => outcome).increment(0);
            }
        }
    }
}

fn routes(list: &[(&'static str, &'static str, &[&'static str])]) {
    for &(route, method, statuses) in list {
        for &status in statuses {
            counter!("http_requests_total", "route" => route, "method" => method, "status" => status)
                .increment(0);
        }
    }
}
