//! A real Redis Cluster on loopback: `cluster-enabled` redis-servers with a password, joined by
//! `redis-cli --cluster create`, each in its own temporary directory. Killed when dropped.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::redis::{password_auth, RedisProcess, PASSWORD};
use tally::config::{ClusterTarget, StoreConfig};

/// As the chart's cluster config: shards serve their slots while another shard is down
/// (require-full-coverage no: with the default, every node answers CLUSTERDOWN from the moment
/// a master is marked failed until its replica is promoted, about 1.5 s here), failures are
/// detected quickly, and a full sync starts at once.
const NODE_CONFIG: &str = "cluster-enabled yes\n\
     cluster-require-full-coverage no\n\
     cluster-config-file nodes.conf\n\
     cluster-node-timeout 1500\n\
     cluster-replica-validity-factor 0\n\
     repl-diskless-sync-delay 0\n\
     appendonly yes\n\
     appendfsync everysec";

pub struct ClusterSetup {
    pub nodes: Vec<RedisProcess>,
}

impl ClusterSetup {
    /// `masters` masters, each with `replicas` replicas; `extra` lines go into every node's
    /// config. Returns once every node reports `cluster_state:ok` and agrees on the slot map.
    pub fn start(masters: usize, replicas: usize, extra: &str) -> Self {
        let nodes: Vec<RedisProcess> = (0..masters * (1 + replicas))
            .map(|_| RedisProcess::server(&format!("{NODE_CONFIG}\n{extra}")))
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .env("REDISCLI_AUTH", PASSWORD)
            .stdin(Stdio::null())
            .output()
            .expect("run redis-cli --cluster create");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let setup = Self { nodes };
        setup.wait_for(
            Duration::from_secs(30),
            "every node sees the cluster ok",
            |s| s.healthy(masters, replicas),
        );
        setup
    }

    /// True when every running node says the cluster is ok, sees `masters` masters with their
    /// replicas linked, and every slot served.
    pub fn healthy(&self, masters: usize, replicas: usize) -> bool {
        self.nodes.iter().all(|n| {
            let info = n.cli(&["CLUSTER", "INFO"]).unwrap_or_default();
            let nodes = n.cli(&["CLUSTER", "NODES"]).unwrap_or_default();
            let live = |role: &str| {
                nodes
                    .lines()
                    .filter(|l| l.contains(role) && !l.contains("fail") && l.contains("connected"))
                    .count()
            };
            info.contains("cluster_state:ok")
                && info.contains("cluster_slots_ok:16384")
                && live("master") == masters
                && live("slave") == masters * replicas
        })
    }

    pub fn seeds(&self) -> Vec<(String, u16)> {
        self.nodes
            .iter()
            .map(|n| ("127.0.0.1".to_owned(), n.port))
            .collect()
    }

    pub fn store_config(&self) -> StoreConfig {
        StoreConfig::Cluster(ClusterTarget {
            nodes: self.seeds(),
            tls: None,
            auth: password_auth(),
            allow_eviction: false,
        })
    }

    /// TALLY_REDIS_CLUSTER's value for the binary.
    pub fn seed_list(&self) -> String {
        let seeds: Vec<String> = self
            .seeds()
            .iter()
            .map(|(h, p)| format!("{h}:{p}"))
            .collect();
        seeds.join(",")
    }

    /// The node at `port`.
    pub fn node(&mut self, port: u16) -> &mut RedisProcess {
        self.nodes
            .iter_mut()
            .find(|n| n.port == port)
            .expect("a node of this cluster")
    }

    /// The port of the master serving `key`, as the first node that answers says.
    pub fn master_of(&self, key: &str) -> u16 {
        for n in &self.nodes {
            let Some(slot) = n.cli(&["CLUSTER", "KEYSLOT", key]) else {
                continue;
            };
            let slot: u16 = slot.trim().parse().expect("a slot number");
            if let Some(port) = self.master_of_slot(n, slot) {
                return port;
            }
        }
        panic!("no node names the master of {key}");
    }

    fn master_of_slot(&self, asked: &RedisProcess, slot: u16) -> Option<u16> {
        let nodes = asked.cli(&["CLUSTER", "NODES"])?;
        nodes.lines().find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if !fields.get(2)?.contains("master") || fields.get(2)?.contains("fail") {
                return None;
            }
            let serves = fields.iter().skip(8).any(|range| {
                let (a, b) = range.split_once('-').unwrap_or((range, range));
                matches!((a.parse::<u16>(), b.parse::<u16>()), (Ok(a), Ok(b)) if a <= slot && slot <= b)
            });
            let port = fields.get(1)?.split([':', '@']).nth(1)?.parse().ok()?;
            serves.then_some(port)
        })
    }

    /// Masters' ports, as the first answering node lists them.
    pub fn master_ports(&self) -> Vec<u16> {
        let nodes = self
            .nodes
            .iter()
            .find_map(|n| n.cli(&["CLUSTER", "NODES"]))
            .unwrap_or_default();
        nodes
            .lines()
            .filter(|l| l.contains("master") && !l.contains("fail"))
            .filter_map(|l| {
                l.split_whitespace()
                    .nth(1)?
                    .split([':', '@'])
                    .nth(1)?
                    .parse()
                    .ok()
            })
            .collect()
    }

    pub fn wait_for(&self, limit: Duration, what: &str, ok: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if ok(self) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let logs: Vec<String> = self.nodes.iter().map(|n| n.log()).collect();
        panic!("timed out waiting for: {what}\n{}", logs.join("\n----\n"));
    }
}
