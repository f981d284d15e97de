//! Opening connections and reading errors.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{ErrorKind, RedisError, ServerErrorKind};

use crate::config::RedisAuth;
use crate::store::{StoreError, Unavailable};

/// Opens and authenticates a connection within `budget`. Handshake failures other than bad
/// credentials count as connect failures: no command was sent yet.
pub(crate) async fn connect(
    info: &redis::ConnectionInfo,
    budget: Duration,
) -> Result<MultiplexedConnection, StoreError> {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(budget))
        // Deadlines are ours (per request), not a per-command timeout of the client.
        .set_response_timeout(None);
    let client = redis::Client::open(info.clone())
        .map_err(|e| StoreError::unavailable(Unavailable::Connect, e.to_string()))?;
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(|e| match classify(&e) {
            err @ StoreError::Unavailable {
                kind: Unavailable::Auth,
                ..
            } => err,
            _ => StoreError::unavailable(Unavailable::Connect, e.to_string()),
        })
}

pub(crate) fn connection_info(
    host: &str,
    port: u16,
    tls: bool,
    auth: &RedisAuth,
) -> redis::ConnectionInfo {
    let addr = if tls {
        redis::ConnectionAddr::TcpTls {
            host: host.to_owned(),
            port,
            insecure: false,
            tls_params: None,
        }
    } else {
        redis::ConnectionAddr::Tcp(host.to_owned(), port)
    };
    let mut settings = redis::RedisConnectionInfo::default().set_db(auth.db);
    if let Some(user) = &auth.username {
        settings = settings.set_username(user);
    }
    if let Some(password) = &auth.password {
        settings = settings.set_password(password.expose());
    }
    redis::IntoConnectionInfo::into_connection_info(addr)
        .expect("a TCP address is always valid connection info")
        .set_redis_settings(settings)
}

/// Maps a client error to what it means for the caller. Messages come from the server or the
/// socket and never contain credentials.
pub(crate) fn classify(e: &RedisError) -> StoreError {
    let kind = if e.is_timeout() {
        Unavailable::Timeout
    } else {
        match (e.kind(), e.code()) {
            (ErrorKind::AuthenticationFailed, _) => Unavailable::Auth,
            (_, Some("WRONGPASS" | "NOAUTH" | "NOPERM")) => Unavailable::Auth,
            (ErrorKind::Server(ServerErrorKind::ReadOnly), _) | (_, Some("READONLY")) => {
                Unavailable::ReadOnly
            }
            (ErrorKind::Server(ServerErrorKind::BusyLoading), _) => Unavailable::Loading,
            (ErrorKind::Server(ServerErrorKind::MasterDown), _) => Unavailable::NoMaster,
            (_, Some("NOREPLICAS")) => Unavailable::NoReplicas,
            (ErrorKind::Server(ServerErrorKind::ResponseError), _)
                if e.detail()
                    .is_some_and(|d| d.contains("not an integer") || d.contains("WRONGTYPE")) =>
            {
                return StoreError::NotACounter;
            }
            (_, Some("WRONGTYPE")) => return StoreError::NotACounter,
            (ErrorKind::Io, _) if e.is_connection_refusal() => Unavailable::Connect,
            (ErrorKind::Io, _) => Unavailable::Io,
            _ if e.is_connection_dropped() => Unavailable::Io,
            _ => Unavailable::Server,
        }
    };
    StoreError::unavailable(kind, e.to_string())
}
