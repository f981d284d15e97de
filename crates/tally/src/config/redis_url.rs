//! How a Redis target is written: parsed from a `redis://` / `rediss://` URL, and shown in the
//! startup log without its password.

use std::fmt;

use super::redis::{RedisAuth, RedisTarget, StoreConfig};
use super::secret::{Credential, Secret};
use super::tls::TlsFiles;

impl RedisTarget {
    pub fn parse_url(raw: &str) -> anyhow::Result<Self> {
        // The URL may hold a password: errors describe the problem, never echo the input.
        let url = url::Url::parse(raw)
            .map_err(|e| anyhow::anyhow!("TALLY_REDIS_URL is not a valid URL: {e}"))?;
        let tls = match url.scheme() {
            "redis" => None,
            "rediss" => Some(TlsFiles::default()),
            other => anyhow::bail!("TALLY_REDIS_URL scheme must be redis or rediss, not {other}"),
        };
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| anyhow::anyhow!("TALLY_REDIS_URL has no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .map(|c| c.into_owned())
                .map_err(|_| anyhow::anyhow!("TALLY_REDIS_URL credentials are not valid UTF-8"))
        };
        let username = Some(decode(url.username())?).filter(|u| !u.is_empty());
        let password = match url.password() {
            Some(p) => Some(Secret::new(decode(p)?))
                .filter(|p| !p.expose().is_empty())
                .map(Credential::Inline),
            None => None,
        };
        let db =
            match url.path().trim_start_matches('/') {
                "" => 0,
                n => n.parse::<i64>().ok().filter(|d| *d >= 0).ok_or_else(|| {
                    anyhow::anyhow!("TALLY_REDIS_URL path must be a database number")
                })?,
            };
        Ok(Self {
            host,
            port: url.port().unwrap_or(6379),
            tls,
            auth: RedisAuth {
                username,
                password,
                db,
            },
            allow_eviction: false,
        })
    }
}

/// The form printed in the startup log: the URL without its password.
impl fmt::Display for RedisTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        write!(f, "{scheme}://")?;
        match (&self.auth.username, &self.auth.password) {
            (Some(u), Some(_)) => write!(f, "{u}:<redacted>@")?,
            (Some(u), None) => write!(f, "{u}@")?,
            (None, Some(_)) => write!(f, ":<redacted>@")?,
            (None, None) => {}
        }
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        write!(f, "{host}:{}/{}", self.port, self.auth.db)
    }
}

impl fmt::Display for StoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Memory => f.write_str("memory"),
            Self::Redis(t) => write!(f, "redis {t}"),
            Self::Sentinel(t) => {
                let list: Vec<String> = t
                    .sentinels
                    .iter()
                    .map(|(h, p)| format!("{h}:{p}"))
                    .collect();
                write!(
                    f,
                    "sentinel master={} sentinels={} tls={} sentinel_tls={} db={} password={} sentinel_password={}",
                    t.master_name,
                    list.join(","),
                    t.tls.is_some(),
                    t.sentinel_tls.is_some(),
                    t.auth.db,
                    if t.auth.password.is_some() {
                        "<redacted>"
                    } else {
                        "none"
                    },
                    if t.sentinel_password.is_some() {
                        "<redacted>"
                    } else {
                        "none"
                    },
                )
            }
            Self::Cluster(t) => {
                let list: Vec<String> = t.nodes.iter().map(|(h, p)| format!("{h}:{p}")).collect();
                write!(
                    f,
                    "cluster nodes={} tls={} password={}",
                    list.join(","),
                    t.tls.is_some(),
                    if t.auth.password.is_some() {
                        "<redacted>"
                    } else {
                        "none"
                    },
                )
            }
        }
    }
}
