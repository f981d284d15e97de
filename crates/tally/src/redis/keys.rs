//! Every key tally writes to Redis, in one place. Counters live under their prefix
//! (`TALLY_KEY_PREFIX`, `count:` by default, as the original service stored them); everything
//! else lives under the namespace (`TALLY_KEY_NAMESPACE`, `tally` by default), so two releases
//! that share one Redis and set different namespaces and prefixes never touch each other's data.
//! The defaults give the keys earlier versions wrote, so existing data stays readable.
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
        let mut key = String::with_capacity(self.counter_prefix.len() + id.len());
        key.push_str(&self.counter_prefix);
        key.push_str(id);
        key
    }

    /// Idempotency records live apart from counters and messages, one namespace per operation,
    /// so a key can never answer for another kind of request.
    pub fn idempotency(&self, operation: &str, key: &str) -> String {
        format!("{}:idem:{operation}:{key}", self.namespace)
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
        assert_eq!(keys.idempotency("counter", "k"), "tally:idem:counter:k");
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
        assert_eq!(keys.idempotency("message", "k"), "blue:idem:message:k");
        assert_eq!(keys.fib().jobs, "blue:fib:jobs");
        let explicit = KeySpace::default().with_messages(Some("guestbook".into()), 5);
        assert_eq!(explicit.messages(), "guestbook");
    }
}
