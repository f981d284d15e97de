//! Postgres over TLS, against a real server with a certificate from a CA the test makes: each
//! sslmode does what libpq's does, and the server confirms which connections are encrypted.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::support::postgres::{Postgres, PG_PASSWORD};
use crate::support::redis::{password_auth, RedisProcess};
use crate::support::tls::TestCa;
use crate::support::TestApp;
use tally::config::{Credential, DatabaseConfig, RedisTarget, Secret, SslMode, StoreConfig};

async fn app(
    redis: &RedisProcess,
    pg: &Postgres,
    host: &str,
    mode: SslMode,
    ca: Option<PathBuf>,
) -> TestApp {
    let mut config = crate::support::test_config();
    config.store = StoreConfig::Redis(RedisTarget {
        host: "127.0.0.1".into(),
        port: redis.port,
        tls: None,
        auth: password_auth(),
        allow_eviction: false,
    });
    config.database = Some(DatabaseConfig {
        url: Secret::new(format!(
            "postgres://tally@{host}:{}/postgres?application_name=tally-{mode:?}",
            pg.port
        )),
        password: Some(Credential::Inline(Secret::new(PG_PASSWORD))),
        ssl_mode: mode,
        root_cert: ca,
    });
    TestApp::spawn(config).await
}

/// Whether the job routes reach Postgres within a few seconds (migrations first).
async fn reaches_postgres(app: &TestApp) -> bool {
    let deadline = Instant::now() + Duration::from_secs(4);
    while Instant::now() < deadline {
        if app.json("/api/v1/fib/indexes").await.0 == 200 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Whether the server holds an encrypted connection of the app named `tally-<mode>`.
fn encrypted(pg: &Postgres, mode: SslMode) -> bool {
    pg.query(&format!(
        "SELECT coalesce(bool_or(s.ssl), false) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
         WHERE a.application_name = 'tally-{mode:?}'"
    )) == "t"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_sslmode_encrypts_and_verifies_as_libpq_does() {
    let ca = TestCa::new();
    let pg = Postgres::start_tls(&ca);
    let redis = RedisProcess::server("");
    let trusted = Some(ca.ca());

    // verify-full: the CA and the host name (the certificate names localhost).
    let full = app(
        &redis,
        &pg,
        "localhost",
        SslMode::VerifyFull,
        trusted.clone(),
    )
    .await;
    assert!(
        reaches_postgres(&full).await,
        "verify-full with the right CA and name"
    );
    assert!(encrypted(&pg, SslMode::VerifyFull));

    // Another CA, or an address the certificate does not name: refused.
    let other = TestCa::new();
    let stranger = app(
        &redis,
        &pg,
        "localhost",
        SslMode::VerifyFull,
        Some(other.ca()),
    )
    .await;
    assert!(
        !reaches_postgres(&stranger).await,
        "verify-full trusted another CA"
    );
    let by_ip = app(
        &redis,
        &pg,
        "127.0.0.1",
        SslMode::VerifyFull,
        trusted.clone(),
    )
    .await;
    assert!(
        !reaches_postgres(&by_ip).await,
        "verify-full accepted a name the cert lacks"
    );

    // verify-ca: the chain, not the name; still not another CA's certificate.
    let ca_only = app(&redis, &pg, "127.0.0.1", SslMode::VerifyCa, trusted.clone()).await;
    assert!(reaches_postgres(&ca_only).await, "verify-ca checks no name");
    assert!(encrypted(&pg, SslMode::VerifyCa));
    let ca_other = app(
        &redis,
        &pg,
        "127.0.0.1",
        SslMode::VerifyCa,
        Some(other.ca()),
    )
    .await;
    assert!(
        !reaches_postgres(&ca_other).await,
        "verify-ca trusted another CA"
    );

    // require and prefer: encrypted, nothing verified; disable: in the clear.
    let require = app(&redis, &pg, "127.0.0.1", SslMode::Require, None).await;
    assert!(reaches_postgres(&require).await);
    assert!(encrypted(&pg, SslMode::Require));
    let prefer = app(&redis, &pg, "127.0.0.1", SslMode::Prefer, None).await;
    assert!(reaches_postgres(&prefer).await);
    assert!(encrypted(&pg, SslMode::Prefer));
    let disable = app(&redis, &pg, "127.0.0.1", SslMode::Disable, None).await;
    assert!(reaches_postgres(&disable).await);
    assert!(!encrypted(&pg, SslMode::Disable));
}
