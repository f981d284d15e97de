//! Limits of every listener (timeouts, connection caps) and the optional per-client rate limit:
//! what stands between an internet client and the process's memory. docs/security.md explains
//! each default.

use std::net::IpAddr;
use std::time::Duration;

use clap::Args;
use ipnet::IpNet;

/// Connection limits, shared by `serve`, `web` and `worker` (whose only listener is the admin one).
#[derive(Args, Debug, Clone)]
pub struct ListenerArgs {
    /// A request head must be complete this long after the connection was accepted (its first
    /// request) or after its first byte arrived (later requests); else the connection is closed.
    #[arg(long, env = "TALLY_HEADER_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub header_timeout: Duration,

    /// A keep-alive connection with no request in progress is closed after this long. Keep it
    /// above the idle timeout of the load balancer in front (AWS ALB 60 s, GCP 600 s): a backend
    /// that closes first races the balancer's next request, which then fails with a 502.
    #[arg(long, env = "TALLY_IDLE_TIMEOUT", default_value = "620s", value_parser = humantime::parse_duration)]
    pub idle_timeout: Duration,

    /// Open connections the public listener keeps; past it a new connection is answered 503 and
    /// closed at once, never queued. Each held connection costs about 20 kB.
    #[arg(long, env = "TALLY_MAX_CONNECTIONS", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,

    /// Open connections the admin listener keeps (probes, scrapes), apart from the public
    /// budget, so /healthz, /readyz and /metrics answer during a flood of the public port.
    #[arg(long, env = "TALLY_ADMIN_MAX_CONNECTIONS", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    pub admin_max_connections: u32,
}

/// What one listener enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    /// A request body must have arrived this long after its head; else 408.
    pub body_timeout: Duration,
}

/// The limits of a process's two listeners.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerLimits {
    pub public: Limits,
    pub admin: Limits,
}

impl ListenerArgs {
    /// Checks the flags; `body_timeout` is the request deadline of the process.
    pub fn limits(&self, body_timeout: Duration) -> anyhow::Result<ListenerLimits> {
        anyhow::ensure!(
            !self.header_timeout.is_zero(),
            "TALLY_HEADER_TIMEOUT must be greater than zero"
        );
        anyhow::ensure!(
            !self.idle_timeout.is_zero(),
            "TALLY_IDLE_TIMEOUT must be greater than zero"
        );
        anyhow::ensure!(
            !body_timeout.is_zero(),
            "TALLY_REQUEST_TIMEOUT must be greater than zero"
        );
        let public = Limits {
            header_timeout: self.header_timeout,
            idle_timeout: self.idle_timeout,
            max_connections: self.max_connections as usize,
            body_timeout,
        };
        let admin = Limits {
            max_connections: self.admin_max_connections as usize,
            ..public
        };
        Ok(ListenerLimits { public, admin })
    }
}

/// The optional per-client rate limit of the public listener; off by default.
#[derive(Args, Debug, Clone, Default)]
pub struct RateLimitArgs {
    /// Requests per second each client may send to the public listener (fractions allowed);
    /// past it, 429 with Retry-After. Off when unset or 0.
    #[arg(long, env = "TALLY_RATE_LIMIT", value_name = "PER_SECOND")]
    pub rate_limit: Option<f64>,

    /// Requests a client may send at once before the rate applies. [default: one second's
    /// worth of the rate, at least 1]
    #[arg(long, env = "TALLY_RATE_LIMIT_BURST", value_parser = clap::value_parser!(u32).range(1..))]
    pub rate_limit_burst: Option<u32>,

    /// Proxies (comma-separated CIDRs) whose X-Forwarded-For names the client. Only the hops
    /// they appended count; the header from anyone else is ignored.
    #[arg(long, env = "TALLY_TRUSTED_PROXIES", value_delimiter = ',', value_parser = parse_net)]
    pub trusted_proxies: Vec<IpNet>,
}

/// A resolved rate limit.
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: u32,
    pub trusted_proxies: Vec<IpNet>,
}

impl RateLimitArgs {
    /// None when the limit is off.
    pub fn resolve(&self) -> anyhow::Result<Option<RateLimit>> {
        let per_second = match self.rate_limit {
            None => return Ok(None),
            Some(0.0) => return Ok(None),
            Some(r) if r.is_finite() && r > 0.0 && r <= 1e9 => r,
            Some(r) => anyhow::bail!("TALLY_RATE_LIMIT must be a positive number, got {r}"),
        };
        let burst = self
            .rate_limit_burst
            .unwrap_or_else(|| per_second.ceil().clamp(1.0, f64::from(u32::MAX)) as u32);
        Ok(Some(RateLimit {
            per_second,
            burst,
            trusted_proxies: self.trusted_proxies.clone(),
        }))
    }
}

/// A CIDR, or a bare address meaning just that host.
fn parse_net(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{text:?} is not a CIDR (10.0.0.0/8) or an address"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        listener: ListenerArgs,
        #[command(flatten)]
        rate: RateLimitArgs,
    }

    fn parse(flags: &[&str]) -> Cli {
        let mut argv = vec!["tally"];
        argv.extend_from_slice(flags);
        Cli::try_parse_from(argv).unwrap()
    }

    #[test]
    fn defaults_and_the_admin_budget() {
        let limits = parse(&[]).listener.limits(Duration::from_secs(2)).unwrap();
        assert_eq!(limits.public.header_timeout, Duration::from_secs(10));
        assert_eq!(limits.public.idle_timeout, Duration::from_secs(620));
        assert_eq!(limits.public.max_connections, 4096);
        assert_eq!(limits.admin.max_connections, 64);
        assert_eq!(limits.admin.header_timeout, Duration::from_secs(10));
        let zero = parse(&["--header-timeout", "0s"]).listener;
        assert!(zero.limits(Duration::from_secs(2)).is_err());
        assert!(Cli::try_parse_from(["tally", "--max-connections", "0"]).is_err());
    }

    #[test]
    fn rate_limit_is_off_by_default_and_burst_follows_the_rate() {
        assert_eq!(parse(&[]).rate.resolve().unwrap(), None);
        assert_eq!(parse(&["--rate-limit", "0"]).rate.resolve().unwrap(), None);
        let on = parse(&[
            "--rate-limit",
            "2.5",
            "--trusted-proxies",
            "10.0.0.0/8,192.0.2.7",
        ])
        .rate
        .resolve()
        .unwrap()
        .unwrap();
        assert_eq!(on.burst, 3);
        assert_eq!(
            on.trusted_proxies,
            vec![
                "10.0.0.0/8".parse::<IpNet>().unwrap(),
                "192.0.2.7/32".parse().unwrap()
            ]
        );
        assert!(parse(&["--rate-limit=-1"]).rate.resolve().is_err());
        assert!(Cli::try_parse_from(["tally", "--trusted-proxies", "nope"]).is_err());
    }
}
