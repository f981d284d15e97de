//! Opening one Postgres connection: the password file and the CA file are read for each new
//! connection (a rotated Secret or certificate needs no restart), and TLS follows libpq's
//! `sslmode`: prefer and require encrypt without checking the certificate, verify-ca checks its
//! chain against the trusted CAs, verify-full also that it names the host.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use deadpool_postgres::Connect;
use futures_util::future::BoxFuture;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio::task::JoinHandle;
use tokio_postgres::tls::NoTlsStream;
use tokio_postgres::{Client, Config, Connection, NoTls, Socket};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::config::{Credential, DatabaseConfig, Secret, SslMode};

/// deadpool's way to open a connection, with what was last read successfully kept: a file
/// caught mid-rewrite, or gone for a moment, does not fail connections (the error is logged).
pub(super) struct Connector {
    /// Keeps the last password read itself (`Credential::current`).
    password: Option<Credential>,
    ssl_mode: SslMode,
    root_cert: Option<PathBuf>,
    last_tls: Mutex<Option<Arc<ClientConfig>>>,
}

impl Connector {
    pub(super) fn new(config: &DatabaseConfig) -> anyhow::Result<Self> {
        let connector = Self {
            password: config.password.clone(),
            ssl_mode: config.ssl_mode,
            root_cert: config.root_cert.clone(),
            last_tls: Mutex::new(None),
        };
        // Read once now: a mistake fails at start, and there is a last good value from then on.
        if let Some(password) = &connector.password {
            password.current()?;
        }
        if connector.ssl_mode != SslMode::Disable {
            *lock(&connector.last_tls) = Some(connector.tls_config()?);
        }
        Ok(connector)
    }

    fn password(&self) -> Option<Secret> {
        self.password.as_ref()?.current().ok()
    }

    fn tls(&self) -> Option<Arc<ClientConfig>> {
        if self.ssl_mode == SslMode::Disable {
            return None;
        }
        let mut last = lock(&self.last_tls);
        match self.tls_config() {
            Ok(config) => *last = Some(config),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the Postgres CA file; using the last one read")
            }
        }
        last.clone()
    }

    fn tls_config(&self) -> anyhow::Result<Arc<ClientConfig>> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?;
        let verifier: Arc<dyn ServerCertVerifier> = if self.ssl_mode.verifies() {
            let roots = Arc::new(self.roots()?);
            let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider).build()?;
            if self.ssl_mode == SslMode::VerifyFull {
                webpki
            } else {
                Arc::new(ChainOnly(webpki))
            }
        } else {
            Arc::new(Unverified(provider))
        };
        let config = builder
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(Arc::new(config))
    }

    fn roots(&self) -> anyhow::Result<RootCertStore> {
        let mut roots = RootCertStore::empty();
        let Some(path) = &self.root_cert else {
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            return Ok(roots);
        };
        let pem = std::fs::read(path)
            .map_err(|e| anyhow::anyhow!("cannot read Postgres CA file {}: {e}", path.display()))?;
        use rustls::pki_types::pem::PemObject;
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert =
                cert.map_err(|e| anyhow::anyhow!("Postgres CA file {}: {e}", path.display()))?;
            roots.add(cert)?;
        }
        if roots.is_empty() {
            anyhow::bail!("Postgres CA file {} holds no certificate", path.display());
        }
        Ok(roots)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Connect for Connector {
    fn connect(
        &self,
        pg_config: &Config,
    ) -> BoxFuture<'_, Result<(Client, JoinHandle<()>), tokio_postgres::Error>> {
        let mut config = pg_config.clone();
        if let Some(password) = self.password() {
            config.password(password.expose());
        }
        config.ssl_mode(match self.ssl_mode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            _ => tokio_postgres::config::SslMode::Require,
        });
        let tls = self.tls();
        Box::pin(async move {
            match tls {
                None => {
                    let (client, connection) = config.connect(NoTls).await?;
                    Ok((client, drive::<NoTlsStream>(connection)))
                }
                Some(tls) => {
                    let (client, connection) = config
                        .connect(MakeRustlsConnect::new((*tls).clone()))
                        .await?;
                    Ok((client, drive(connection)))
                }
            }
        })
    }
}

/// The connection's task: it ends with the connection, logging why if it broke.
fn drive<T>(connection: Connection<Socket, T>) -> JoinHandle<()>
where
    T: tokio_postgres::tls::TlsStream + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "postgres connection ended");
        }
    })
}

/// verify-ca: the chain must lead to a trusted CA; the name is not checked.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // webpki checks the chain before the name: a name error means the chain was good.
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// prefer and require: encrypted, the certificate not checked (libpq's meaning of those modes;
/// verify-full is the one to use against an interceptor). The handshake's own signatures are
/// still verified, so the session key belongs to whoever holds the certificate's key.
#[derive(Debug)]
struct Unverified(Arc<CryptoProvider>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
