//! The optional per-client rate limit (`TALLY_RATE_LIMIT`): one GCRA bucket per client, from
//! `governor`. The client is the peer address, or, when the peer is a trusted proxy, the
//! nearest X-Forwarded-For hop that no trusted proxy appended (walking the header from the
//! right, so a client cannot pick its own key by sending the header). IPv6 clients are keyed by
//! their /64, which one host usually holds whole.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use ipnet::IpNet;

use super::error::ApiError;
use crate::config::RateLimit;
use crate::listener::Peer;

/// How often buckets that have refilled (clients gone quiet) are forgotten. The state then
/// holds only clients seen within about burst ÷ rate seconds plus this.
const PURGE_EVERY: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct ClientLimiter {
    buckets: Arc<DefaultKeyedRateLimiter<IpAddr>>,
    trusted: Arc<[IpNet]>,
}

impl ClientLimiter {
    /// Must be called inside a Tokio runtime: it starts the task that forgets quiet clients.
    pub fn new(config: &RateLimit) -> Self {
        let period = Duration::from_secs_f64(1.0 / config.per_second).max(Duration::from_nanos(1));
        let burst = NonZeroU32::new(config.burst).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(period)
            .expect("the period is not zero")
            .allow_burst(burst);
        let buckets = Arc::new(RateLimiter::keyed(quota));
        let weak = Arc::downgrade(&buckets);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(PURGE_EVERY);
            loop {
                ticker.tick().await;
                let Some(buckets) = weak.upgrade() else {
                    return;
                };
                buckets.retain_recent();
                buckets.shrink_to_fit();
            }
        });
        Self {
            buckets,
            trusted: config.trusted_proxies.clone().into(),
        }
    }

    /// Ok, or how long until this client may send again.
    fn check(&self, client: IpAddr) -> Result<(), Duration> {
        self.buckets
            .check_key(&client)
            .map_err(|until| until.wait_time_from(self.buckets.clock().now()))
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|net| net.contains(&ip))
    }

    /// The bucket key of a request's client.
    fn client(&self, peer: Option<SocketAddr>, headers: &HeaderMap) -> IpAddr {
        let Some(peer) = peer.map(|p| p.ip().to_canonical()) else {
            return IpAddr::V6(Ipv6Addr::UNSPECIFIED);
        };
        let mut client = peer;
        if self.trusts(peer) {
            'hops: for value in headers.get_all("x-forwarded-for").iter().rev() {
                let Ok(text) = value.to_str() else { break };
                for hop in text.rsplit(',') {
                    // A hop we cannot read: the proxy that appended it is the best we know.
                    let Some(ip) = parse_hop(hop) else {
                        break 'hops;
                    };
                    client = ip;
                    if !self.trusts(ip) {
                        break 'hops;
                    }
                }
            }
        }
        bucket_of(client)
    }
}

/// One X-Forwarded-For entry: an address, optionally with a port (`[::1]:80`, `192.0.2.1:80`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    hop.parse::<IpAddr>()
        .or_else(|_| hop.parse::<SocketAddr>().map(|s| s.ip()))
        .ok()
        .map(|ip| ip.to_canonical())
}

/// IPv4 as it is; IPv6 by its /64.
fn bucket_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let mut segments = v6.segments();
            segments[4..].fill(0);
            IpAddr::V6(Ipv6Addr::from(segments))
        }
    }
}

/// The middleware: 429 with Retry-After past the client's rate.
pub async fn limit(State(limiter): State<ClientLimiter>, request: Request, next: Next) -> Response {
    let peer = request.extensions().get::<Peer>().map(|p| p.0);
    let client = limiter.client(peer, request.headers());
    match limiter.check(client) {
        Ok(()) => next.run(request).await,
        Err(wait) => {
            crate::metrics::rate_limited();
            ApiError::rate_limited(wait).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn limiter(trusted: &[&str]) -> ClientLimiter {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _guard = rt.enter();
        ClientLimiter::new(&RateLimit {
            per_second: 1.0,
            burst: 2,
            trusted_proxies: trusted.iter().map(|t| t.parse().unwrap()).collect(),
        })
    }

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in xff {
            h.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn forwarded_for_counts_only_from_trusted_proxies() {
        let l = limiter(&["10.0.0.0/8"]);
        let peer = |s: &str| Some(SocketAddr::new(ip(s), 1234));
        // Not from a proxy: the header is the client's word and is ignored.
        assert_eq!(
            l.client(peer("198.51.100.1"), &headers(&["203.0.113.9"])),
            ip("198.51.100.1")
        );
        // From a proxy: the nearest hop it did not append itself.
        assert_eq!(
            l.client(
                peer("10.1.1.1"),
                &headers(&["1.1.1.1, 203.0.113.9", "10.2.2.2"])
            ),
            ip("203.0.113.9")
        );
        // A client that forges a trusted address still lands on its real one.
        assert_eq!(
            l.client(peer("10.1.1.1"), &headers(&["10.9.9.9, 203.0.113.9"])),
            ip("203.0.113.9")
        );
        // Unreadable hop: keyed by the proxy in front of it.
        assert_eq!(
            l.client(peer("10.1.1.1"), &headers(&["garbage, 10.3.3.3"])),
            ip("10.3.3.3")
        );
        assert_eq!(
            l.client(peer("10.1.1.1"), &headers(&["[2001:db8::1]:443"])),
            ip("2001:db8::")
        );
        // IPv4-mapped IPv6 is IPv4; IPv6 by its /64.
        assert_eq!(
            l.client(peer("::ffff:192.0.2.1"), &headers(&[])),
            ip("192.0.2.1")
        );
        assert_eq!(
            l.client(peer("2001:db8:1:2:3:4:5:6"), &headers(&[])),
            ip("2001:db8:1:2::")
        );
    }

    #[test]
    fn the_burst_then_the_rate() {
        let l = limiter(&[]);
        let a = ip("192.0.2.1");
        assert!(l.check(a).is_ok());
        assert!(l.check(a).is_ok());
        let wait = l.check(a).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        assert!(
            l.check(ip("192.0.2.2")).is_ok(),
            "another client has its own bucket"
        );
    }
}
