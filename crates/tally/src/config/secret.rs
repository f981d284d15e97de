//! A string that must never reach a log line, an error message or `Debug` output.

use std::fmt;
use std::path::Path;

#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// Reads a secret mounted as a file (Kubernetes Secret volumes, Docker secrets).
    /// Trailing newlines are dropped because `echo pass > file` is the common way to write one.
    /// The error names the file, never its content.
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let raw = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read secret file {}: {e}", path.display()))?;
        let value = raw.trim_end_matches(['\n', '\r']);
        if value.is_empty() {
            anyhow::bail!("secret file {} is empty", path.display());
        }
        Ok(Self(value.to_owned()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Picks a secret from an inline value or a file; setting both is a configuration error
/// because silently preferring one hides a mistake.
pub fn secret_from(
    inline: Option<&str>,
    file: Option<&Path>,
    name: &str,
) -> anyhow::Result<Option<Secret>> {
    match (inline, file) {
        (Some(_), Some(_)) => {
            anyhow::bail!("set either {name} or {name}_FILE, not both")
        }
        (Some(v), None) if !v.is_empty() => Ok(Some(Secret::new(v))),
        (Some(_), None) => Ok(None),
        (None, Some(path)) => Secret::from_file(path).map(Some),
        (None, None) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_hide_the_value() {
        let s = Secret::new("hunter2");
        assert!(!format!("{s:?}").contains("hunter2"));
        assert!(!format!("{s}").contains("hunter2"));
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn file_secret_drops_trailing_newline_and_errors_name_no_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, "s3cret\n").unwrap();
        assert_eq!(Secret::from_file(&path).unwrap().expose(), "s3cret");
        std::fs::write(&path, "\n").unwrap();
        let err = Secret::from_file(&path).unwrap_err().to_string();
        assert!(err.contains("is empty"), "{err}");
        let missing = dir.path().join("nope");
        assert!(Secret::from_file(&missing).is_err());
    }

    #[test]
    fn inline_and_file_together_is_an_error() {
        let err = secret_from(Some("a"), Some(Path::new("/x")), "TALLY_REDIS_PASSWORD")
            .unwrap_err()
            .to_string();
        assert!(err.contains("not both"), "{err}");
        assert!(secret_from(Some(""), None, "X").unwrap().is_none());
    }
}
