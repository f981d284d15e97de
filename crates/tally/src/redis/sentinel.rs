//! Finding the master through Redis Sentinel.
//!
//! Every configured sentinel is asked, and only an address named by a majority of them is
//! followed: a sentinel cut off on the old master's side of a partition keeps naming the old
//! master, and following it would acknowledge writes that the new master never sees. The
//! address is then confirmed with `ROLE`, because sentinels can lag a failover by seconds.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::MultiplexedConnection;
use tokio::task::JoinSet;

use super::client::{classify, Dialer};
use crate::config::{RedisAuth, SentinelTarget};
use crate::store::{StoreError, Unavailable};

pub struct SentinelResolver {
    sentinels: Arc<[(String, u16)]>,
    /// How to reach the sentinels, and how to reach the Redis nodes they name.
    sentinel_dialer: Dialer,
    master_dialer: Dialer,
    master_name: String,
}

impl SentinelResolver {
    pub fn new(target: &SentinelTarget) -> Self {
        Self {
            sentinels: target.sentinels.clone().into(),
            sentinel_dialer: Dialer {
                auth: RedisAuth {
                    username: target.sentinel_username.clone(),
                    password: target.sentinel_password.clone(),
                    db: 0,
                },
                tls: target.sentinel_tls.clone(),
            },
            master_dialer: Dialer {
                auth: target.auth.clone(),
                tls: target.tls.clone(),
            },
            master_name: target.master_name.clone(),
        }
    }

    /// Calls `on_switch(owner)` whenever a sentinel publishes `+switch-master` for our master,
    /// so the connection to a demoted master is dropped within a round trip of the announcement
    /// instead of at its next failed command. One task per sentinel, resubscribing after errors;
    /// each ends within a second of `owner` (the store) being dropped. Every sentinel announces
    /// the same switch: one failover is acted on once per store (an announcement of the master
    /// this store was told of last is skipped), and counted once per process.
    pub fn watch_switches<T: Send + Sync + 'static>(&self, owner: Weak<T>, on_switch: fn(&T)) {
        let last_announced = Arc::new(Mutex::new(String::new()));
        for (host, port) in self.sentinels.iter() {
            let (sentinel, dialer, name, owner, last) = (
                (host.clone(), *port),
                self.sentinel_dialer.clone(),
                self.master_name.clone(),
                owner.clone(),
                last_announced.clone(),
            );
            tokio::spawn(async move {
                while owner.strong_count() > 0 {
                    let watch = Watch {
                        master_name: &name,
                        owner: &owner,
                        on_switch,
                        last_announced: &last,
                    };
                    if let Err(e) = watch.listen(&dialer, &sentinel).await {
                        tracing::debug!(error = %e, "sentinel subscription lost; resubscribing");
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            });
        }
    }

    /// Opens a connection to the master that a majority of sentinels name, confirmed by ROLE.
    pub async fn connect_master(
        &self,
        budget: Duration,
    ) -> Result<MultiplexedConnection, StoreError> {
        let started = tokio::time::Instant::now();
        let (host, port) = self.majority_master(budget).await?;
        let remaining = budget.saturating_sub(started.elapsed());
        let mut conn = self.master_dialer.connect(&host, port, remaining).await?;
        let role: Vec<redis::Value> = redis::cmd("ROLE")
            .query_async(&mut conn)
            .await
            .map_err(|e| classify(&e))?;
        match role.first() {
            Some(redis::Value::BulkString(r)) if r.as_slice() == b"master" => {
                tracing::info!(master = %format!("{host}:{port}"), "sentinels' master confirmed by ROLE");
                Ok(conn)
            }
            _ => Err(StoreError::unavailable(
                Unavailable::NoMaster,
                format!("{host}:{port} is named master by the sentinels but is not one (yet)"),
            )),
        }
    }

    /// Asks every sentinel at once and returns as soon as a majority names the same address:
    /// a hung sentinel (paused, or on the far side of a partition) must not hold discovery up
    /// for the whole deadline when the others already agree. The unanswered asks are dropped.
    async fn majority_master(&self, budget: Duration) -> Result<(String, u16), StoreError> {
        let mut asks = JoinSet::new();
        for (host, port) in self.sentinels.iter() {
            let (dialer, host, port, name) = (
                self.sentinel_dialer.clone(),
                host.clone(),
                *port,
                self.master_name.clone(),
            );
            asks.spawn(async move { ask_sentinel(&dialer, &host, port, name, budget).await });
        }
        let needed = self.sentinels.len() / 2 + 1;
        let mut votes: HashMap<(String, u16), usize> = HashMap::new();
        let mut failures = Vec::new();
        while let Some(answer) = asks.join_next().await {
            match answer {
                Ok(Ok(Some(addr))) => {
                    let count = votes.entry(addr.clone()).or_default();
                    *count += 1;
                    if *count >= needed {
                        return Ok(addr);
                    }
                }
                Ok(Ok(None)) => failures.push("a sentinel does not know the master".to_owned()),
                Ok(Err(e)) => failures.push(e.to_string()),
                Err(e) => failures.push(e.to_string()),
            }
        }
        let named: Vec<String> = votes
            .iter()
            .map(|((h, p), n)| format!("{h}:{p}×{n}"))
            .collect();
        Err(StoreError::unavailable(
            Unavailable::NoMaster,
            format!(
                "no master named by a majority ({needed} of {}) of sentinels for {:?}; named: [{}]; failures: [{}]",
                self.sentinels.len(),
                self.master_name,
                named.join(", "),
                failures.join("; ")
            ),
        ))
    }
}

async fn ask_sentinel(
    dialer: &Dialer,
    host: &str,
    port: u16,
    master_name: String,
    budget: Duration,
) -> Result<Option<(String, u16)>, StoreError> {
    let ask = async {
        let mut conn = dialer.connect(host, port, budget).await?;
        let addr: Option<(String, String)> = redis::cmd("SENTINEL")
            .arg("get-master-addr-by-name")
            .arg(&master_name)
            .query_async(&mut conn)
            .await
            .map_err(|e| classify(&e))?;
        Ok(addr.and_then(|(h, p)| p.parse().ok().map(|p| (h, p))))
    };
    tokio::time::timeout(budget, ask).await.unwrap_or_else(|_| {
        Err(StoreError::unavailable(
            Unavailable::Timeout,
            "sentinel did not answer in time",
        ))
    })
}

/// One sentinel subscription's view of the store it serves.
struct Watch<'a, T> {
    master_name: &'a str,
    owner: &'a Weak<T>,
    on_switch: fn(&T),
    /// The master this store was last told of, shared by its subscriptions.
    last_announced: &'a Mutex<String>,
}

/// The master last counted in `tally_master_changes_total`: a process with several stores (the
/// worker's reader and writer) counts a failover once, as the metric's description promises.
static LAST_COUNTED: Mutex<String> = Mutex::new(String::new());

impl<T> Watch<'_, T> {
    /// Follows one sentinel's `+switch-master` channel until the subscription breaks (an error)
    /// or the store is gone (Ok).
    async fn listen(&self, dialer: &Dialer, (host, port): &(String, u16)) -> anyhow::Result<()> {
        let client = dialer.client(host, *port)?;
        let connect = tokio::time::timeout(Duration::from_secs(5), client.get_async_pubsub());
        let mut pubsub = connect.await.map_err(|_| {
            redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut))
        })??;
        pubsub.subscribe("+switch-master").await?;
        let mut messages = pubsub.on_message();
        let mut liveness = tokio::time::interval(Duration::from_secs(1));
        loop {
            let msg = tokio::select! {
                msg = messages.next() => msg,
                _ = liveness.tick() => {
                    if self.owner.strong_count() == 0 {
                        return Ok(());
                    }
                    continue;
                }
            };
            let Some(msg) = msg else {
                return Err(std::io::Error::from(std::io::ErrorKind::ConnectionReset).into());
            };
            // Payload: "<master-name> <old-ip> <old-port> <new-ip> <new-port>"
            let payload: String = msg.get_payload().unwrap_or_default();
            let Some(new_master) = switched_to(&payload, self.master_name) else {
                continue;
            };
            let announced = format!("{} {new_master}", self.master_name);
            if !replace_if_new(self.last_announced, &announced) {
                continue;
            }
            tracing::info!(switch = %payload, "sentinel announced +switch-master");
            if replace_if_new(&LAST_COUNTED, &announced) {
                crate::metrics::master_change();
            }
            match self.owner.upgrade() {
                Some(store) => (self.on_switch)(&store),
                None => return Ok(()),
            }
        }
    }
}

/// Stores `value` in `last` unless it is there already; true when it was new.
fn replace_if_new(last: &Mutex<String>, value: &str) -> bool {
    let mut last = last.lock().unwrap_or_else(|e| e.into_inner());
    if *last == value {
        return false;
    }
    value.clone_into(&mut last);
    true
}

/// The new master's "ip port" of a `+switch-master` payload for `master_name`, else None.
fn switched_to<'a>(payload: &'a str, master_name: &str) -> Option<&'a str> {
    let (name, rest) = payload.split_once(' ')?;
    if name != master_name {
        return None;
    }
    // "<old-ip> <old-port> <new-ip> <new-port>": the last two fields.
    let (old, _) = rest.match_indices(' ').nth(1)?;
    Some(&rest[old + 1..])
}

#[cfg(test)]
mod tests {
    use super::switched_to;

    #[test]
    fn a_switch_names_the_new_master_of_our_group_only() {
        let payload = "mymaster 10.0.0.1 6379 10.0.0.2 6380";
        assert_eq!(switched_to(payload, "mymaster"), Some("10.0.0.2 6380"));
        assert_eq!(switched_to(payload, "other"), None);
        assert_eq!(switched_to("mymaster 10.0.0.1", "mymaster"), None);
        assert_eq!(switched_to("", "mymaster"), None);
    }
}
