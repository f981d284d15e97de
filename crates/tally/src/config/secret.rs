//! A string that must never reach a log line, an error message or `Debug` output.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

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

/// A password given inline, or a file that is read again each time a connection is opened: the
/// kubelet rewrites a mounted Secret in place when it changes, and the next connection then uses
/// the new password, without a restart (docs/security.md, rotation).
#[derive(Clone)]
pub enum Credential {
    Inline(Secret),
    File(SecretFile),
}

/// A password file, and what it last held: a file caught empty or unreadable (rewritten in place,
/// or between a Secret's updates) is not a reason to send no password.
#[derive(Clone)]
pub struct SecretFile {
    path: PathBuf,
    last: Arc<Mutex<Option<Secret>>>,
}

impl Credential {
    /// A credential read from `path` on every use.
    pub fn file(path: impl Into<PathBuf>) -> Self {
        Self::File(SecretFile {
            path: path.into(),
            last: Arc::default(),
        })
    }

    /// The password as of now: the file's content when it is a file, else what it held last,
    /// with a warning (the file is named; its content never appears). An error only when the
    /// file was never read.
    pub fn current(&self) -> anyhow::Result<Secret> {
        let file = match self {
            Self::Inline(secret) => return Ok(secret.clone()),
            Self::File(file) => file,
        };
        let mut last = file.last.lock().unwrap_or_else(|p| p.into_inner());
        match Secret::from_file(&file.path) {
            Ok(secret) => {
                *last = Some(secret.clone());
                Ok(secret)
            }
            Err(e) => match &*last {
                Some(secret) => {
                    tracing::warn!(error = %e, "using the password read last");
                    Ok(secret.clone())
                }
                None => Err(e),
            },
        }
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Inline(_) => f.write_str("\"<redacted>\""),
            Self::File(file) => write!(f, "file {}", file.path.display()),
        }
    }
}

/// A credential from an inline value or a file, as `secret_from` (both set is an error); the
/// file must be readable now, so a mistake fails at start, and is read again on every connect.
pub fn credential_from(
    inline: Option<&str>,
    file: Option<&Path>,
    name: &str,
) -> anyhow::Result<Option<Credential>> {
    if let (None, Some(path)) = (inline, file) {
        let credential = Credential::file(path);
        credential.current()?;
        return Ok(Some(credential));
    }
    Ok(secret_from(inline, file, name)?.map(Credential::Inline))
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
    fn a_file_credential_is_read_again_on_every_use() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, "old\n").unwrap();
        let c = credential_from(None, Some(&path), "X").unwrap().unwrap();
        assert_eq!(c.current().unwrap().expose(), "old");
        std::fs::write(&path, "new").unwrap();
        assert_eq!(c.current().unwrap().expose(), "new");
        assert!(!format!("{c:?}").contains("new"));
        std::fs::write(&path, "").unwrap();
        assert_eq!(
            c.current().unwrap().expose(),
            "new",
            "an emptied file: the last one"
        );
        std::fs::remove_file(&path).unwrap();
        assert_eq!(
            c.current().unwrap().expose(),
            "new",
            "a missing file: the last one"
        );
        let missing = dir.path().join("missing");
        assert!(
            credential_from(None, Some(&missing), "X").is_err(),
            "checked at start"
        );
        let inline = credential_from(Some("pw"), None, "X").unwrap().unwrap();
        assert_eq!(inline.current().unwrap().expose(), "pw");
        assert_eq!(format!("{inline:?}"), "\"<redacted>\"");
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
