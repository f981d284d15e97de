//! A counter id, parsed once at the edge: only a `CounterId` reaches the store.

use std::fmt;

pub const MAX_ID_BYTES: usize = 256;

/// One path segment: 1–256 bytes of UTF-8 without control characters, and not a dot-segment
/// (`.` or `..`), which URL normalisation would silently rewrite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterId(String);

/// Why a string is not a counter id; its text is the 400 answer's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidId(String);

impl fmt::Display for InvalidId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InvalidId {}

impl CounterId {
    pub fn parse(raw: &str) -> Result<Self, InvalidId> {
        if raw.is_empty() {
            return Err(InvalidId("id must not be empty".into()));
        }
        if raw.len() > MAX_ID_BYTES {
            return Err(InvalidId(format!(
                "id is {} bytes; the limit is {MAX_ID_BYTES}",
                raw.len()
            )));
        }
        if raw.chars().any(char::is_control) {
            return Err(InvalidId("id must not contain control characters".into()));
        }
        if raw == "." || raw == ".." {
            return Err(InvalidId("id must not be '.' or '..'".into()));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_ids() {
        for id in [
            "a",
            "user-42",
            "ünïcødé",
            "a/b",
            "a b",
            "%",
            &"x".repeat(256),
        ] {
            assert_eq!(CounterId::parse(id).unwrap().as_str(), id);
        }
    }

    #[test]
    fn invalid_ids_say_why() {
        let cases = [
            ("", "empty"),
            (&"x".repeat(257) as &str, "limit is 256"),
            ("a\nb", "control"),
            ("\u{7f}", "control"),
            (".", "'.'"),
            ("..", "'..'"),
        ];
        for (id, why) in cases {
            let err = CounterId::parse(id).unwrap_err().to_string();
            assert!(err.contains(why), "{id:?}: {err}");
        }
    }
}
