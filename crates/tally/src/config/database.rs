//! Postgres: where it is, its password (a file read again for every new connection), and TLS
//! with libpq's `sslmode` ladder up to `verify-full`.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use super::secret::{credential_from, Credential, Secret};

#[derive(Args, Debug, Clone, Default)]
pub struct DatabaseArgs {
    /// Postgres for Fibonacci job submissions: postgres://user@host:5432/db. Without it the
    /// job routes answer 503; counters and messages do not need it.
    #[arg(long, env = "TALLY_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// Postgres password (prefer the file). Overrides a password in the URL.
    #[arg(long, env = "TALLY_DATABASE_PASSWORD", hide_env_values = true)]
    pub database_password: Option<String>,

    /// File holding the Postgres password; read again for every new connection.
    #[arg(long, env = "TALLY_DATABASE_PASSWORD_FILE")]
    pub database_password_file: Option<PathBuf>,

    /// TLS to Postgres, as libpq's sslmode: disable; prefer (TLS when the server offers it, not
    /// verified); require (TLS, not verified); verify-ca (the server's certificate signed by a
    /// trusted CA); verify-full (verify-ca, and the certificate names the host). Default: an
    /// sslmode in the URL, else prefer, as libpq.
    #[arg(long, env = "TALLY_DATABASE_SSLMODE", value_enum)]
    pub database_sslmode: Option<SslMode>,

    /// PEM file of the CAs that verify-ca and verify-full trust (default: an sslrootcert in the
    /// URL, else the public web roots). Read again for every new connection.
    #[arg(long, env = "TALLY_DATABASE_SSLROOTCERT")]
    pub database_sslrootcert: Option<PathBuf>,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SslMode {
    Disable,
    #[default]
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(text: &str) -> anyhow::Result<Self> {
        <Self as ValueEnum>::from_str(text, false).map_err(|_| {
            anyhow::anyhow!(
                "sslmode must be disable, prefer, require, verify-ca or verify-full, not {text:?}"
            )
        })
    }

    /// Whether the server's certificate chain is checked against the trusted CAs.
    pub fn verifies(self) -> bool {
        matches!(self, Self::VerifyCa | Self::VerifyFull)
    }
}

#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    /// The connection URL (or key=value string) without sslmode and sslrootcert, which
    /// tally applies itself (the driver knows neither verify mode).
    pub url: Secret,
    pub password: Option<Credential>,
    pub ssl_mode: SslMode,
    /// CAs for verify-ca / verify-full; None: the public web roots.
    pub root_cert: Option<PathBuf>,
}

impl DatabaseArgs {
    pub fn resolve(&self) -> anyhow::Result<Option<DatabaseConfig>> {
        let Some(raw) = self.database_url.as_deref().filter(|u| !u.is_empty()) else {
            return Ok(None);
        };
        let (url, url_mode, url_root) = split_tls_params(raw)?;
        let ssl_mode = match (self.database_sslmode, url_mode) {
            (Some(mode), _) => mode,
            (None, Some(mode)) => SslMode::parse(&mode)?,
            (None, None) => SslMode::default(),
        };
        let root_cert = self
            .database_sslrootcert
            .clone()
            .or(url_root.map(PathBuf::from));
        if let Some(path) = &root_cert {
            if !ssl_mode.verifies() {
                anyhow::bail!(
                    "sslrootcert is set but sslmode is not verify-ca or verify-full: nothing would check the certificate"
                );
            }
            std::fs::read(path).map_err(|e| {
                anyhow::anyhow!(
                    "cannot read TALLY_DATABASE_SSLROOTCERT {}: {e}",
                    path.display()
                )
            })?;
        }
        Ok(Some(DatabaseConfig {
            url: Secret::new(url),
            password: credential_from(
                self.database_password.as_deref(),
                self.database_password_file.as_deref(),
                "TALLY_DATABASE_PASSWORD",
            )?,
            ssl_mode,
            root_cert,
        }))
    }
}

/// Takes `sslmode` and `sslrootcert` out of a postgres:// URL's query; a key=value string is
/// left whole. Errors never echo the URL, which may hold a password.
fn split_tls_params(raw: &str) -> anyhow::Result<(String, Option<String>, Option<String>)> {
    if !(raw.starts_with("postgres://") || raw.starts_with("postgresql://")) {
        return Ok((raw.to_owned(), None, None));
    }
    let mut url = url::Url::parse(raw)
        .map_err(|_| anyhow::anyhow!("TALLY_DATABASE_URL is not a valid postgres:// URL"))?;
    let (mut mode, mut root, mut rest) = (None, None, Vec::new());
    for (k, v) in url.query_pairs() {
        match k.as_ref() {
            "sslmode" => mode = Some(v.into_owned()),
            "sslrootcert" => root = Some(v.into_owned()),
            _ => rest.push((k.into_owned(), v.into_owned())),
        }
    }
    if rest.is_empty() {
        url.set_query(None);
    } else {
        url.query_pairs_mut().clear().extend_pairs(rest);
    }
    Ok((url.to_string(), mode, root))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(url: &str) -> DatabaseArgs {
        DatabaseArgs {
            database_url: Some(url.to_owned()),
            ..Default::default()
        }
    }

    #[test]
    fn sslmode_comes_from_the_flag_or_the_url_and_leaves_the_url() {
        let c = args("postgres://u@db:5432/app?sslmode=verify-full&application_name=x")
            .resolve()
            .unwrap()
            .unwrap();
        assert_eq!(c.ssl_mode, SslMode::VerifyFull);
        assert_eq!(
            c.url.expose(),
            "postgres://u@db:5432/app?application_name=x"
        );
        let plain = args("postgres://u@db/app").resolve().unwrap().unwrap();
        assert_eq!(plain.ssl_mode, SslMode::Prefer);
        let mut flag = args("postgres://u@db/app?sslmode=require");
        flag.database_sslmode = Some(SslMode::Disable);
        assert_eq!(flag.resolve().unwrap().unwrap().ssl_mode, SslMode::Disable);
        let kv = args("host=db user=u").resolve().unwrap().unwrap();
        assert_eq!(kv.url.expose(), "host=db user=u");
    }

    #[test]
    fn a_root_cert_needs_a_verifying_mode_and_a_readable_file() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.crt");
        std::fs::write(&ca, "-----BEGIN CERTIFICATE-----\n").unwrap();
        let url = format!(
            "postgres://u@db/app?sslmode=verify-ca&sslrootcert={}",
            ca.display()
        );
        let c = args(&url).resolve().unwrap().unwrap();
        assert_eq!(c.root_cert.as_deref(), Some(ca.as_path()));
        let mut unverified = args("postgres://u@db/app?sslmode=require");
        unverified.database_sslrootcert = Some(ca.clone());
        assert!(unverified.resolve().is_err());
        let mut missing = args("postgres://u@db/app?sslmode=verify-full");
        missing.database_sslrootcert = Some(dir.path().join("nope"));
        assert!(missing.resolve().is_err());
        let bad = args("postgres://u:secretpw@db/app?sslmode=sometimes").resolve();
        assert!(!bad.unwrap_err().to_string().contains("secretpw"));
    }
}
