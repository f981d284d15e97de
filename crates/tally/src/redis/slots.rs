//! Redis Cluster's key slots: which of the 16384 slots a key hashes to, and which master serves
//! each slot, as `CLUSTER SLOTS` reports it.

use redis::Value;

pub const SLOTS: u16 = 16384;

/// The slot of `key`: CRC16 (XMODEM) of its hash tag, the text between the first `{` and the
/// next `}`, when that text is not empty; of the whole key otherwise.
pub fn slot(key: &[u8]) -> u16 {
    crc16::State::<crc16::XMODEM>::calculate(hash_tag(key).unwrap_or(key)) % SLOTS
}

/// The part of `key` that decides its slot, if it has one.
pub fn hash_tag(key: &[u8]) -> Option<&[u8]> {
    let open = key.iter().position(|&b| b == b'{')?;
    let len = key[open + 1..].iter().position(|&b| b == b'}')?;
    (len > 0).then(|| &key[open + 1..open + 1 + len])
}

/// A master's address, as the cluster announces it (a host name or an IP).
pub type Node = (String, u16);

/// Slot ranges and the master serving each, sorted by first slot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlotMap {
    ranges: Vec<(u16, u16, Node)>,
}

impl SlotMap {
    /// Reads a `CLUSTER SLOTS` reply. A master announced with an empty or `?` endpoint (the
    /// node does not know its own) is reachable where we asked: `asked`.
    pub fn from_reply(reply: &Value, asked: &Node) -> Result<Self, String> {
        let Value::Array(entries) = reply else {
            return Err("CLUSTER SLOTS did not return an array".into());
        };
        let mut ranges = Vec::with_capacity(entries.len());
        for entry in entries {
            let Value::Array(fields) = entry else {
                return Err("a CLUSTER SLOTS entry is not an array".into());
            };
            let (Some(start), Some(end), Some(Value::Array(master))) =
                (fields.first(), fields.get(1), fields.get(2))
            else {
                return Err("a CLUSTER SLOTS entry has no slot range and master".into());
            };
            let (start, end) = (int(start)?, int(end)?);
            if start > end || end >= i64::from(SLOTS) || start < 0 {
                return Err(format!("CLUSTER SLOTS named slots {start}-{end}"));
            }
            let host = match master.first() {
                Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
                Some(Value::SimpleString(s)) => s.clone(),
                _ => return Err("a CLUSTER SLOTS master has no endpoint".into()),
            };
            let port = master.get(1).map(int).transpose()?.unwrap_or(0);
            let port = u16::try_from(port).map_err(|_| format!("port {port} in CLUSTER SLOTS"))?;
            let host = if host.is_empty() || host == "?" {
                asked.0.clone()
            } else {
                host
            };
            ranges.push((start as u16, end as u16, (host, port)));
        }
        ranges.sort_by_key(|r| r.0);
        Ok(Self { ranges })
    }

    /// The master serving `slot`, if any does.
    pub fn master(&self, slot: u16) -> Option<&Node> {
        let i = self.ranges.partition_point(|r| r.0 <= slot);
        let (start, end, node) = self.ranges.get(i.checked_sub(1)?)?;
        (*start <= slot && slot <= *end).then_some(node)
    }

    /// Every master, once each.
    pub fn masters(&self) -> Vec<Node> {
        let mut masters: Vec<Node> = self.ranges.iter().map(|r| r.2.clone()).collect();
        masters.sort();
        masters.dedup();
        masters
    }

    /// True when every slot has a master (else some ids cannot be served at all).
    pub fn covers_every_slot(&self) -> bool {
        let mut next = 0u32;
        for (start, end, _) in &self.ranges {
            if u32::from(*start) > next {
                return false;
            }
            next = next.max(u32::from(*end) + 1);
        }
        next == u32::from(SLOTS)
    }

    /// Moves one slot to `node`, as a MOVED reply says, until the next full refresh.
    pub fn reassign(&mut self, slot: u16, node: Node) {
        if self.master(slot) == Some(&node) {
            return;
        }
        let mut ranges = Vec::with_capacity(self.ranges.len() + 2);
        for (start, end, owner) in self.ranges.drain(..) {
            if start <= slot && slot <= end {
                if start < slot {
                    ranges.push((start, slot - 1, owner.clone()));
                }
                if slot < end {
                    ranges.push((slot + 1, end, owner));
                }
            } else {
                ranges.push((start, end, owner));
            }
        }
        ranges.push((slot, slot, node));
        ranges.sort_by_key(|r| r.0);
        self.ranges = ranges;
    }

    /// The label of the shard that serves `slot`: its first slot, which survives failovers (the
    /// master's address does not) and is bounded by the number of shards.
    pub fn shard_label(&self, slot: u16) -> u16 {
        let i = self.ranges.partition_point(|r| r.0 <= slot);
        i.checked_sub(1)
            .and_then(|i| self.ranges.get(i))
            .map_or(0, |r| {
                // Ranges of one master that follow each other make one shard.
                let owner = &r.2;
                self.ranges
                    .iter()
                    .filter(|o| &o.2 == owner)
                    .map(|o| o.0)
                    .min()
                    .unwrap_or(r.0)
            })
    }
}

fn int(v: &Value) -> Result<i64, String> {
    match v {
        Value::Int(i) => Ok(*i),
        other => Err(format!(
            "expected an integer in CLUSTER SLOTS, got {other:?}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(host: &str, port: i64) -> Value {
        Value::Array(vec![
            Value::BulkString(host.as_bytes().to_vec()),
            Value::Int(port),
            Value::BulkString(b"id".to_vec()),
        ])
    }

    fn range(start: i64, end: i64, master: Value) -> Value {
        Value::Array(vec![Value::Int(start), Value::Int(end), master])
    }

    #[test]
    fn slots_of_keys_match_redis_and_follow_hash_tags() {
        // Figures from CLUSTER KEYSLOT on redis-server 7.0.
        let from_redis: [(&[u8], u16); 7] = [
            (b"foo", 12182),
            (b"count:a", 9931),
            (b"count:{a}", 15495),
            (b"tally:idem:counter:{a}:k", 15495),
            (b"{user1000}.following", 3443),
            (b"foo{}{bar}", 8363),
            (b"foo{{bar}}zap", 4015),
        ];
        for (key, expected) in from_redis {
            assert_eq!(slot(key), expected, "{}", String::from_utf8_lossy(key));
        }
        assert_eq!(hash_tag(b"foo{{bar}}zap"), Some(&b"{bar"[..]));
        assert_eq!(hash_tag(b"foo{}{bar}"), None);
        assert_eq!(hash_tag(b"plain"), None);
    }

    #[test]
    fn a_slot_map_finds_each_slots_master_and_takes_moves() {
        let reply = Value::Array(vec![
            range(5461, 10922, node("b", 2)),
            range(0, 5460, node("a", 1)),
            range(10923, 16383, node("", 3)),
        ]);
        let asked = ("seed".to_owned(), 9);
        let mut map = SlotMap::from_reply(&reply, &asked).unwrap();
        assert!(map.covers_every_slot());
        assert_eq!(map.master(0), Some(&("a".to_owned(), 1)));
        assert_eq!(map.master(5461), Some(&("b".to_owned(), 2)));
        assert_eq!(map.master(16383), Some(&("seed".to_owned(), 3)));
        assert_eq!(map.masters().len(), 3);
        map.reassign(100, ("b".to_owned(), 2));
        assert_eq!(map.master(100), Some(&("b".to_owned(), 2)));
        assert_eq!(map.master(99), Some(&("a".to_owned(), 1)));
        assert_eq!(map.master(101), Some(&("a".to_owned(), 1)));
        assert!(map.covers_every_slot());
        assert_eq!(map.shard_label(101), 0);
        // b now serves 100 and 5461-10922: its label is its lowest slot.
        assert_eq!(map.shard_label(100), 100);
        assert_eq!(map.shard_label(6000), 100);

        let gap = Value::Array(vec![range(0, 100, node("a", 1))]);
        assert!(!SlotMap::from_reply(&gap, &asked)
            .unwrap()
            .covers_every_slot());
        assert!(SlotMap::from_reply(&Value::Int(1), &asked).is_err());
    }
}
