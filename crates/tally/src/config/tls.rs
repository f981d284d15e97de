//! TLS to Redis and to the sentinels: whether to use it, which certificate authority to trust,
//! and an optional client certificate (for servers that ask for one, `tls-auth-clients yes`).
//! The files are read again for every new connection, so a rotated certificate or CA (a
//! cert-manager renewal rewriting a mounted Secret) is picked up without a restart.

use std::path::{Path, PathBuf};

use clap::Args;

#[derive(Args, Debug, Clone, Default)]
pub struct RedisTlsArgs {
    /// Sentinel mode: connect to the Redis nodes with TLS (the sentinels name them; their
    /// certificates must carry those host names). Standalone mode uses a rediss:// URL.
    #[arg(long, env = "TALLY_REDIS_TLS")]
    pub redis_tls: bool,

    /// Connect to the sentinels with TLS.
    #[arg(long, env = "TALLY_SENTINEL_TLS")]
    pub sentinel_tls: bool,

    /// PEM file of the certificate authorities to trust for Redis and the sentinels, instead of
    /// the public web roots (a private CA, e.g. a mounted Secret's ca.crt).
    #[arg(long, env = "TALLY_REDIS_TLS_CA_FILE")]
    pub redis_tls_ca_file: Option<PathBuf>,

    /// PEM file of tally's client certificate, for servers that require one.
    #[arg(
        long,
        env = "TALLY_REDIS_TLS_CERT_FILE",
        requires = "redis_tls_key_file"
    )]
    pub redis_tls_cert_file: Option<PathBuf>,

    /// PEM file of the client certificate's private key.
    #[arg(
        long,
        env = "TALLY_REDIS_TLS_KEY_FILE",
        requires = "redis_tls_cert_file"
    )]
    pub redis_tls_key_file: Option<PathBuf>,
}

/// Where the TLS material of one kind of connection lives; each file is read on every connect.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// Trusted CAs; None: the public web roots.
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key.
    pub client: Option<(PathBuf, PathBuf)>,
}

/// The PEM contents of `TlsFiles`, as read for one connection.
pub struct TlsMaterial {
    pub ca: Option<Vec<u8>>,
    pub client: Option<(Vec<u8>, Vec<u8>)>,
}

impl TlsFiles {
    pub fn read(&self) -> anyhow::Result<TlsMaterial> {
        Ok(TlsMaterial {
            ca: self.ca_file.as_deref().map(read_pem).transpose()?,
            client: match &self.client {
                Some((cert, key)) => Some((read_pem(cert)?, read_pem(key)?)),
                None => None,
            },
        })
    }
}

/// A PEM file's bytes; the error names the file (a key's content never appears).
fn read_pem(path: &Path) -> anyhow::Result<Vec<u8>> {
    let bytes = std::fs::read(path)
        .map_err(|e| anyhow::anyhow!("cannot read TLS file {}: {e}", path.display()))?;
    if !bytes.windows(11).any(|w| w == b"-----BEGIN ") {
        anyhow::bail!("TLS file {} holds no PEM block", path.display());
    }
    Ok(bytes)
}

impl RedisTlsArgs {
    /// The files, when any TLS is on; checked readable now so that a mistake fails at start.
    /// Files given while TLS is off are an error: they would be silently ignored.
    pub fn files(&self, tls_wanted: bool) -> anyhow::Result<Option<TlsFiles>> {
        let files = TlsFiles {
            ca_file: self.redis_tls_ca_file.clone(),
            client: self
                .redis_tls_cert_file
                .clone()
                .zip(self.redis_tls_key_file.clone()),
        };
        if !tls_wanted {
            if files != TlsFiles::default() {
                anyhow::bail!(
                    "TALLY_REDIS_TLS_CA_FILE / _CERT_FILE / _KEY_FILE are set but TLS is off: \
                     use a rediss:// URL, TALLY_REDIS_TLS, TALLY_SENTINEL_TLS or TALLY_REDIS_CLUSTER_TLS"
                );
            }
            return Ok(None);
        }
        files.read()?;
        Ok(Some(files))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEM: &str = "-----BEGIN CERTIFICATE-----\nMA==\n-----END CERTIFICATE-----\n";

    #[test]
    fn files_are_checked_at_start_and_refused_without_tls() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.crt");
        std::fs::write(&ca, PEM).unwrap();
        let args = RedisTlsArgs {
            redis_tls_ca_file: Some(ca.clone()),
            ..Default::default()
        };
        let files = args.files(true).unwrap().unwrap();
        assert_eq!(files.read().unwrap().ca.as_deref(), Some(PEM.as_bytes()));
        assert!(files.read().unwrap().client.is_none());
        let err = args.files(false).unwrap_err().to_string();
        assert!(err.contains("TLS is off"), "{err}");
        assert!(RedisTlsArgs::default().files(false).unwrap().is_none());
        assert_eq!(
            RedisTlsArgs::default().files(true).unwrap(),
            Some(TlsFiles::default())
        );

        std::fs::write(&ca, "not a certificate").unwrap();
        let err = args.files(true).err().unwrap().to_string();
        assert!(err.contains("no PEM block"), "{err}");
        let missing = RedisTlsArgs {
            redis_tls_ca_file: Some(dir.path().join("nope")),
            ..Default::default()
        };
        assert!(missing.files(true).is_err());
    }
}
