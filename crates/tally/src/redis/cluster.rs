//! Redis Cluster: each command goes to the master of its key's slot, on that master's own
//! link (connection, generation, group-commit task), so the exactly-once rules and replicated
//! durability hold per shard as they hold for the one master of Sentinel mode.
//!
//! Why not redis-rs's `ClusterConnection`: it retries every error kind from one budget, and a
//! dropped connection is among them (`RetryMethod::Reconnect` re-sends the request after
//! reconnecting, cluster_handling/async_connection/request.rs in redis 1.8), so an INCR whose
//! reply was lost could count twice; and its reconnects are invisible, so a WAIT could reach a
//! fresh connection that sent nothing and confirm writes it never carried. Here only an answer
//! that proves the command did not run is followed: MOVED (the slot has another master), ASK
//! (the slot is migrating and the key is already on the importing node), TRYAGAIN and
//! CLUSTERDOWN. A timeout or a broken connection is a 503, and the command is not sent again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use futures_util::future::join_all;
use futures_util::stream::{FuturesUnordered, StreamExt};
use redis::aio::MultiplexedConnection;
use redis::{ErrorKind, RedisError, ServerErrorKind};
use tokio::time::{timeout_at, Instant};

use super::client::{classify, Dialer};
use super::link::Link;
use super::slots::{slot, Node, SlotMap};
use super::{is_readonly, Connection, RedisClient};
use crate::config::{ClusterTarget, RedisAuth};
use crate::store::{StoreError, Unavailable};

/// Between tries after TRYAGAIN, CLUSTERDOWN or READONLY: a migration step or a failover is
/// under way and ends within moments.
const RETRY_PAUSE: Duration = Duration::from_millis(50);
/// Refreshes of the slot map are at least this far apart, however many requests ask for one.
const REFRESH_INTERVAL: Duration = Duration::from_millis(100);
/// The slot map is read again this often even when nothing failed (a scale-out adds masters).
const MAP_MAX_AGE: Duration = Duration::from_secs(10);
/// Redirects followed for one request: a slot moves at most a few times within a deadline.
const MAX_REDIRECTS: u32 = 16;
/// A background read of the slot map gives up after this long.
const MAP_READ_BUDGET: Duration = Duration::from_secs(1);

/// What a cluster answer that refused a command points to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redirect {
    /// The slot is served by another master now.
    Moved(u16, Node),
    /// The slot is migrating; this key is on the importing node already (or is new).
    Ask(Node),
    /// TRYAGAIN (keys of a migrating slot are split) or CLUSTERDOWN: wait, then try again.
    Later,
}

impl Redirect {
    fn metric_kind(&self) -> &'static str {
        match self {
            Self::Moved(..) => "moved",
            Self::Ask(_) => "ask",
            Self::Later => "later",
        }
    }

    pub fn from_error(e: &RedisError) -> Option<Self> {
        let node = || {
            let (addr, slot) = e.redirect_node()?;
            let (host, port) = addr.rsplit_once(':')?;
            Some((slot, (host.to_owned(), port.parse().ok()?)))
        };
        match e.kind() {
            ErrorKind::Server(ServerErrorKind::Moved) => {
                node().map(|(slot, to)| Self::Moved(slot, to))
            }
            ErrorKind::Server(ServerErrorKind::Ask) => node().map(|(_, to)| Self::Ask(to)),
            ErrorKind::Server(ServerErrorKind::TryAgain | ServerErrorKind::ClusterDown) => {
                Some(Self::Later)
            }
            _ => None,
        }
    }
}

pub struct Cluster {
    topology: Arc<Topology>,
    /// One link per master address ever used; a handful, bounded by the shards and failovers.
    links: Mutex<HashMap<Node, Arc<Link>>>,
}

/// The slot map and how to read it again; shared with the background refresh.
struct Topology {
    seeds: Vec<Node>,
    /// Credentials and TLS of every node (database 0).
    dialer: Dialer,
    map: RwLock<Arc<SlotMap>>,
    /// When the map was last read (or tried), and whether something since says it is stale.
    freshness: Mutex<(Option<Instant>, bool)>,
    /// A background refresh is on its way.
    scheduled: AtomicBool,
    /// Serialises refreshes: a burst of failures reads the map once.
    refreshing: tokio::sync::Mutex<()>,
}

impl Cluster {
    pub fn new(target: &ClusterTarget) -> Self {
        Self {
            topology: Arc::new(Topology {
                seeds: target.nodes.clone(),
                dialer: Dialer {
                    auth: RedisAuth {
                        db: 0,
                        ..target.auth.clone()
                    },
                    tls: target.tls.clone(),
                },
                map: RwLock::new(Arc::new(SlotMap::default())),
                freshness: Mutex::new((None, true)),
                scheduled: AtomicBool::new(false),
                refreshing: tokio::sync::Mutex::new(()),
            }),
            links: Mutex::new(HashMap::new()),
        }
    }

    /// Runs `op` on the master of `route`'s slot, following redirects (see the module's text).
    pub(super) async fn run<T, F, Fut>(
        &self,
        client: &RedisClient,
        name: &'static str,
        route: &str,
        until: Instant,
        write: bool,
        op: &F,
    ) -> Result<T, StoreError>
    where
        F: Fn(Connection) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let slot = slot(route.as_bytes());
        let mut ask = None;
        let mut tries = 0;
        loop {
            let asking = ask.is_some();
            let node = match ask.take() {
                Some(node) => node,
                None => self.master(slot, until).await?,
            };
            let link = self.link(&node);
            let mut redirect = None;
            let open = |budget| self.open(client, node.clone(), budget);
            let result = client
                .attempt(&link, open, until, write, op, Some((&mut redirect, asking)))
                .await;
            if redirect.is_none() {
                let shard = self.topology.current().shard_label(slot);
                let failed = result.as_ref().is_err_and(StoreError::is_store_failure);
                crate::metrics::cluster_shard_command(shard, !failed);
            }
            let Err(err) = &result else {
                return result;
            };
            if let Some(kind) = redirect.as_ref().map(Redirect::metric_kind) {
                crate::metrics::cluster_redirect(kind);
            }
            match redirect {
                Some(Redirect::Moved(moved, to)) => self.topology.moved(moved, to),
                Some(Redirect::Ask(to)) => ask = Some(to),
                Some(Redirect::Later) => tokio::time::sleep(RETRY_PAUSE).await,
                None if is_readonly(&result) => {
                    // A master demoted under us: the map is stale; nothing ran.
                    link.invalidate_opened_before(Instant::now());
                    self.topology.mark_stale();
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                None => {
                    if err.is_store_failure() {
                        // A shard that cannot be reached may have failed over.
                        self.topology.mark_stale();
                    }
                    return result;
                }
            }
            tries += 1;
            if tries > MAX_REDIRECTS || Instant::now() + RETRY_PAUSE >= until {
                return result;
            }
            crate::metrics::store_retry(name);
        }
    }

    /// Ready when any master answers PING: a shard that is down fails only its own ids, and
    /// every tally pod sees the same cluster, so taking pods out of the Service for it would
    /// fail every id instead (docs/cluster.md).
    pub(super) async fn ping(
        &self,
        client: &RedisClient,
        deadline: Duration,
    ) -> Result<(), StoreError> {
        let until = Instant::now() + deadline;
        if self.topology.current().masters().is_empty() {
            self.topology.refresh(until).await?;
        }
        let masters = self.topology.current().masters();
        let pings = masters.iter().map(|node| async move {
            let link = self.link(node);
            let open = |budget| self.open(client, node.clone(), budget);
            let op = |mut c: Connection| async move {
                redis::cmd("PING").query_async::<()>(&mut c).await
            };
            let result = client.attempt(&link, open, until, false, &op, None).await;
            if result.is_err() {
                self.topology.mark_stale();
            }
            result
        });
        let results = join_all(pings).await;
        let up = results.iter().filter(|r| r.is_ok()).count();
        crate::metrics::cluster_shards(masters.len(), up);
        match results.into_iter().find(Result::is_ok) {
            Some(ok) => ok,
            None => Err(StoreError::unavailable(
                Unavailable::Connect,
                "no master of the cluster answered",
            )),
        }
    }

    /// The master serving `slot`, reading the map first when it is missing or stale.
    async fn master(&self, slot: u16, until: Instant) -> Result<Node, StoreError> {
        if let Some(node) = self.topology.current().master(slot).cloned() {
            if self.topology.due() {
                self.topology.refresh_soon();
            }
            return Ok(node);
        }
        self.topology.refresh(until).await?;
        self.topology
            .current()
            .master(slot)
            .cloned()
            .ok_or_else(|| {
                StoreError::unavailable(
                    Unavailable::NoMaster,
                    format!("no master serves slot {slot}"),
                )
            })
    }

    fn link(&self, node: &Node) -> Arc<Link> {
        let mut links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        links
            .entry(node.clone())
            .or_insert_with(|| Arc::new(Link::new(format!("cluster {}:{}", node.0, node.1))))
            .clone()
    }

    async fn open(
        &self,
        client: &RedisClient,
        node: Node,
        budget: Duration,
    ) -> Result<MultiplexedConnection, StoreError> {
        let conn = self
            .topology
            .dialer
            .connect(&node.0, node.1, budget)
            .await?;
        client.checked(conn).await
    }
}

impl Topology {
    fn current(&self) -> Arc<SlotMap> {
        self.map.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn freshness(&self) -> std::sync::MutexGuard<'_, (Option<Instant>, bool)> {
        self.freshness.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn mark_stale(&self) {
        self.freshness().1 = true;
    }

    /// Takes a MOVED answer into the map at once (the next request for the slot goes to the
    /// right master) and reads the whole map again soon: a MOVED often means a failover or a
    /// migration that moved more than one slot.
    fn moved(&self, slot: u16, to: Node) {
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        Arc::make_mut(&mut map).reassign(slot, to);
        drop(map);
        self.mark_stale();
    }

    /// True when the map should be read again: marked stale, or older than MAP_MAX_AGE.
    fn due(&self) -> bool {
        let (read, stale) = *self.freshness();
        read.is_none_or(|at| {
            (stale && at.elapsed() >= REFRESH_INTERVAL) || at.elapsed() >= MAP_MAX_AGE
        })
    }

    /// Reads the map in the background; requests go on with the map they have meanwhile.
    fn refresh_soon(self: &Arc<Self>) {
        if self.scheduled.swap(true, Ordering::AcqRel) {
            return;
        }
        let topology = self.clone();
        tokio::spawn(async move {
            let _ = topology.refresh(Instant::now() + MAP_READ_BUDGET).await;
            topology.scheduled.store(false, Ordering::Release);
        });
    }

    /// Reads `CLUSTER SLOTS` from every known master and seed at once and takes the first
    /// answer: a hung node costs nothing, and a stale answer is corrected by the next MOVED.
    async fn refresh(&self, until: Instant) -> Result<(), StoreError> {
        let timed_out =
            || StoreError::unavailable(Unavailable::Timeout, "no cluster slot map in time");
        let _one = timeout_at(until, self.refreshing.lock())
            .await
            .map_err(|_| timed_out())?;
        if self
            .freshness()
            .0
            .is_some_and(|at| at.elapsed() < REFRESH_INTERVAL)
        {
            return Ok(());
        }
        let mut candidates = self.current().masters();
        for seed in &self.seeds {
            if !candidates.contains(seed) {
                candidates.push(seed.clone());
            }
        }
        let budget = until.saturating_duration_since(Instant::now());
        let mut reads: FuturesUnordered<_> = candidates
            .into_iter()
            .map(|node| self.read(node, budget))
            .collect();
        let mut last = timed_out();
        let found = timeout_at(until, async {
            while let Some(read) = reads.next().await {
                match read {
                    Ok(map) => return Some(map),
                    Err(e) => last = e,
                }
            }
            None
        })
        .await
        .ok()
        .flatten();
        let mut freshness = self.freshness();
        freshness.0 = Some(Instant::now());
        match found {
            Some(map) => {
                freshness.1 = false;
                drop(freshness);
                *self.map.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(map);
                Ok(())
            }
            None => {
                tracing::warn!(error = %last, "cannot read the cluster's slot map");
                Err(last)
            }
        }
    }

    async fn read(&self, node: Node, budget: Duration) -> Result<SlotMap, StoreError> {
        let mut conn = self.dialer.connect(&node.0, node.1, budget).await?;
        let reply: redis::Value = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query_async(&mut conn)
            .await
            .map_err(|e| classify(&e))?;
        let map = SlotMap::from_reply(&reply, &node)
            .map_err(|e| StoreError::unavailable(Unavailable::Server, e))?;
        if map.masters().is_empty() {
            return Err(StoreError::unavailable(
                Unavailable::ClusterDown,
                format!("{}:{} serves no slots", node.0, node.1),
            ));
        }
        Ok(map)
    }
}
