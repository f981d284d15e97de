//! A guestbook message and its id.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

/// A message id in Redis Stream form, `<milliseconds>-<sequence>`: unique, ordered by arrival,
/// assigned by the store. The milliseconds are the store's clock at the time of writing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MessageId {
    pub millis: u64,
    pub seq: u64,
}

impl MessageId {
    pub fn created_at(self) -> String {
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(self.millis);
        humantime::format_rfc3339_millis(at).to_string()
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.millis, self.seq)
    }
}

impl FromStr for MessageId {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        let (ms, seq) = s.split_once('-').ok_or(())?;
        let digits =
            |p: &str| !p.is_empty() && p.len() <= 20 && p.bytes().all(|b| b.is_ascii_digit());
        if !digits(ms) || !digits(seq) {
            return Err(());
        }
        Ok(Self {
            millis: ms.parse().map_err(|_| ())?,
            seq: seq.parse().map_err(|_| ())?,
        })
    }
}

/// A stored message (the JSON is `wire::MessageJson`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub id: String,
    pub text: String,
    pub created_at: String,
}

impl Message {
    pub fn new(id: MessageId, text: impl Into<String>) -> Self {
        Self {
            id: id.to_string(),
            text: text.into(),
            created_at: id.created_at(),
        }
    }
}

/// Result of a post.
#[derive(Debug, Clone)]
pub struct Posted {
    pub message: Message,
    /// True when an earlier post with the same Idempotency-Key stored this message.
    pub replayed: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_reject_junk() {
        let id: MessageId = "1700000000123-7".parse().unwrap();
        assert_eq!(
            id,
            MessageId {
                millis: 1_700_000_000_123,
                seq: 7
            }
        );
        assert_eq!(id.to_string(), "1700000000123-7");
        assert_eq!(id.created_at(), "2023-11-14T22:13:20.123Z");
        for bad in [
            "",
            "1",
            "-1",
            "1-",
            "a-1",
            "1-2-3",
            "+1-2",
            "99999999999999999999999-1",
        ] {
            assert!(bad.parse::<MessageId>().is_err(), "{bad}");
        }
    }
}
