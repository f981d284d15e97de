//! Every key tally writes to Redis, in one place. Counters live under their prefix
//! (`TALLY_KEY_PREFIX`, `count:` by default, as the original service stored them); everything
//! else lives under the namespace (`TALLY_KEY_NAMESPACE`, `tally` by default), so two releases
//! that share one Redis and set different namespaces and prefixes never touch each other's data.
//! The defaults give the keys earlier versions wrote, so existing data stays readable.
//!
//! In Cluster mode (`clustered`) every key that one command touches carries the same hash tag,
//! so the command's keys share a slot and CROSSSLOT cannot happen: a counter and its
//! idempotency records are tagged with the id, the guestbook's stream and its records with the
//! stream's name, and every job key with `<namespace>:fib`. Cluster keys therefore differ from
//! the standalone ones (`count:{a}` for `count:a`); a new cluster starts empty.
//!
//! Outside this file: the start scripts' election clock, `tally:redis:clock` in database 15,
//! which is the Redis group's own and never in the application's database.

/// How tally's data is laid out in Redis.
#[derive(Debug, Clone)]
pub struct KeySpace {
    namespace: String,
    counter_prefix: String,
    messages: String,
    message_retention: u64,
    fib: FibKeys,
    /// Hash-tagged layout for Redis Cluster.
    cluster: bool,
}

/// The job system's keys, built once (they are used on every job command).
#[derive(Debug, Clone)]
pub struct FibKeys {
    /// The job stream, consumed through the consumer group `GROUP`.
    pub jobs: String,
    /// index → decimal value, for computed indexes.
    pub values: String,
    /// Computed indexes, scored by index, for paging through `values` in order.
    pub done: String,
    /// index → when it was first requested (ms); pending = requested and not in `values`.
    pub requested: String,
    /// Jobs that failed too often, with their error.
    pub dead: String,
}

impl FibKeys {
    /// The consumer group of the job stream (a name inside the stream, not a key).
    pub const GROUP: &'static str = "workers";
    /// Entries kept in the job stream. Trimming never removes a pending job in practice: the
    /// cap is far above what workers leave unacknowledged.
    pub const JOBS_CAP: u64 = 100_000;
}

pub const DEFAULT_NAMESPACE: &str = "tally";
pub const DEFAULT_COUNTER_PREFIX: &str = "count:";

impl KeySpace {
    pub fn new(namespace: &str, counter_prefix: impl Into<String>) -> Self {
        Self {
            namespace: namespace.to_owned(),
            counter_prefix: counter_prefix.into(),
            messages: format!("{namespace}:messages"),
            message_retention: 10_000,
            fib: FibKeys {
                jobs: format!("{namespace}:fib:jobs"),
                values: format!("{namespace}:fib:values"),
                done: format!("{namespace}:fib:done"),
                requested: format!("{namespace}:fib:requested"),
                dead: format!("{namespace}:fib:dead"),
            },
            cluster: false,
        }
    }

    /// The Redis Cluster layout (see the module's text). Namespaces cannot hold braces (their
    /// parser refuses them) and neither can the counter prefix in Cluster mode, so the first
    /// brace of every key is ours.
    pub fn clustered(self) -> Self {
        let ns = &self.namespace;
        let tag = format!("{{{ns}:fib}}");
        let messages = match hash_tag(&self.messages) {
            Some(_) => self.messages.clone(),
            None => format!("{{{}}}", self.messages),
        };
        Self {
            messages,
            fib: FibKeys {
                jobs: format!("{tag}:jobs"),
                values: format!("{tag}:values"),
                done: format!("{tag}:done"),
                requested: format!("{tag}:requested"),
                dead: format!("{tag}:dead"),
            },
            cluster: true,
            ..self
        }
    }

    /// The guestbook's stream (`TALLY_MESSAGES_KEY`, else `<namespace>:messages`) and how many
    /// messages it keeps.
    pub fn with_messages(self, stream: Option<String>, retention: u64) -> Self {
        Self {
            messages: stream.unwrap_or(self.messages),
            message_retention: retention,
            ..self
        }
    }

    pub fn counter(&self, id: &str) -> String {
        let mut key = String::with_capacity(self.counter_prefix.len() + id.len() + 2);
        key.push_str(&self.counter_prefix);
        if self.cluster {
            key.push('{');
            push_tag(&mut key, id);
            key.push('}');
        } else {
            key.push_str(id);
        }
        key
    }

    /// The idempotency record of an increment of `id`. Records live apart from counters and
    /// messages, one namespace per operation, so a key can never answer for another kind of
    /// request. In Cluster mode the record shares the counter's slot, so it is per id too (and
    /// `counter_claim` finds a key reused for another id).
    pub fn counter_record(&self, id: &str, key: &str) -> String {
        if self.cluster {
            let mut tag = String::with_capacity(id.len());
            push_tag(&mut tag, id);
            format!("{}:idem:counter:{{{tag}}}:{key}", self.namespace)
        } else {
            format!("{}:idem:counter:{key}", self.namespace)
        }
    }

    /// Cluster mode: which id an Idempotency-Key was first used for. The record itself lives in
    /// the counter's slot, so this claim (its own slot, written first) is what finds a key
    /// reused for another id. None in standalone and Sentinel mode, where the record does that.
    pub fn counter_claim(&self, key: &str) -> Option<String> {
        self.cluster
            .then(|| format!("{}:idem:counter-id:{key}", self.namespace))
    }

    /// The idempotency record of a post, in the stream's slot in Cluster mode.
    pub fn message_record(&self, key: &str) -> String {
        match hash_tag(&self.messages).filter(|_| self.cluster) {
            Some(tag) => format!("{}:idem:message:{{{tag}}}:{key}", self.namespace),
            None => format!("{}:idem:message:{key}", self.namespace),
        }
    }

    /// The stream holding guestbook messages.
    pub fn messages(&self) -> &str {
        &self.messages
    }

    /// Messages kept (approximately: trimming is `MAXLEN ~`, which keeps at least this many).
    pub fn message_retention(&self) -> u64 {
        self.message_retention
    }

    pub fn fib(&self) -> &FibKeys {
        &self.fib
    }
}

/// Appends `id` so that it can stand between braces as a hash tag: `}` (which would end the tag
/// early) and `%` (so the escape stays unambiguous) are percent-encoded; ids are never empty.
fn push_tag(key: &mut String, id: &str) {
    for c in id.chars() {
        match c {
            '}' => key.push_str("%7D"),
            '%' => key.push_str("%25"),
            c => key.push(c),
        }
    }
}

fn hash_tag(key: &str) -> Option<&str> {
    super::slots::hash_tag(key.as_bytes()).and_then(|t| std::str::from_utf8(t).ok())
}

impl Default for KeySpace {
    fn default() -> Self {
        Self::new(DEFAULT_NAMESPACE, DEFAULT_COUNTER_PREFIX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_the_keys_earlier_versions_wrote() {
        let keys = KeySpace::default();
        assert_eq!(keys.counter("a"), "count:a");
        assert_eq!(keys.messages(), "tally:messages");
        assert_eq!(keys.counter_record("a", "k"), "tally:idem:counter:k");
        assert_eq!(keys.message_record("k"), "tally:idem:message:k");
        let fib = keys.fib();
        let all = [&fib.jobs, &fib.values, &fib.done, &fib.requested, &fib.dead];
        assert_eq!(
            all.map(String::as_str),
            [
                "tally:fib:jobs",
                "tally:fib:values",
                "tally:fib:done",
                "tally:fib:requested",
                "tally:fib:dead"
            ]
        );
    }

    #[test]
    fn a_namespace_moves_every_key_but_counters_which_follow_their_prefix() {
        let keys = KeySpace::new("blue", "blue:count:").with_messages(None, 5);
        assert_eq!(keys.counter("a"), "blue:count:a");
        assert_eq!(keys.messages(), "blue:messages");
        assert_eq!(keys.message_record("k"), "blue:idem:message:k");
        assert_eq!(keys.fib().jobs, "blue:fib:jobs");
        let explicit = KeySpace::default().with_messages(Some("guestbook".into()), 5);
        assert_eq!(explicit.messages(), "guestbook");
    }

    /// Every key one command touches shares a slot, whatever the id or the client's key: the
    /// property that makes CROSSSLOT impossible by construction.
    #[test]
    fn in_cluster_mode_each_commands_keys_share_one_slot() {
        use crate::redis::slots::slot;
        let same = |keys: &[&str]| {
            let slots: Vec<u16> = keys.iter().map(|k| slot(k.as_bytes())).collect();
            assert!(
                slots.windows(2).all(|w| w[0] == w[1]),
                "{keys:?} -> {slots:?}"
            );
        };
        for messages in [
            None,
            Some("guestbook".to_owned()),
            Some("x{tag}y".to_owned()),
        ] {
            let keys = KeySpace::new("ns", "count:")
                .with_messages(messages, 5)
                .clustered();
            for id in [
                "a",
                "}",
                "}x{",
                "{",
                "%7D",
                "a}b",
                "ünï",
                "{a}",
                "x".repeat(256).as_str(),
            ] {
                for client_key in ["k", "{other}", "}", ""] {
                    same(&[&keys.counter(id), &keys.counter_record(id, client_key)]);
                }
            }
            for client_key in ["k", "{other}"] {
                same(&[keys.messages(), &keys.message_record(client_key)]);
            }
            let fib = keys.fib();
            same(&[&fib.jobs, &fib.values, &fib.done, &fib.requested, &fib.dead]);
        }
        // Distinct ids keep distinct keys, escapes included.
        let keys = KeySpace::default().clustered();
        assert_eq!(keys.counter("a"), "count:{a}");
        assert_ne!(keys.counter("}"), keys.counter("%7D"));
        assert_eq!(keys.fib().jobs, "{tally:fib}:jobs");
        assert_eq!(keys.messages(), "{tally:messages}");
        // Ids spread over the slots.
        let slots: std::collections::HashSet<u16> = (0..1000)
            .map(|i| slot(keys.counter(&i.to_string()).as_bytes()))
            .collect();
        assert!(slots.len() > 900, "{}", slots.len());
    }
}
