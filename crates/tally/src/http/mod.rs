//! The HTTP surface: the public router (counters, messages, Fibonacci jobs, service info) and
//! the admin router.

pub mod admin;
mod counters;
pub mod error;
mod fib;
mod messages;
mod meta;
pub mod middleware;

use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;

pub use self::admin::AdminState;
pub use self::counters::validate_id;
pub use self::error::ApiError;

use crate::db::Database;
use crate::health::Health;
use crate::store::Store;

/// What every handler can reach. Behind one `Arc`: axum clones the state for every request,
/// and one reference count is cheaper than cloning each field (bench/README.md).
#[derive(Clone)]
pub struct AppState(Arc<AppContext>);

impl AppState {
    pub fn new(context: AppContext) -> Self {
        Self(Arc::new(context))
    }
}

impl Deref for AppState {
    type Target = AppContext;

    fn deref(&self) -> &AppContext {
        &self.0
    }
}

pub struct AppContext {
    pub store: Store,
    pub health: Health,
    pub metrics: PrometheusHandle,
    pub request_timeout: Duration,
    pub idempotency_ttl: Duration,
    /// Postgres, for Fibonacci job submissions; None when not configured.
    pub database: Option<Database>,
    pub fib_max_index: u32,
}

/// The public listener's routes.
pub fn public_router(state: AppState) -> Router {
    Router::new()
        .merge(counters::routes())
        .merge(messages::routes())
        .merge(fib::routes())
        .merge(meta::routes())
        .layer(axum::middleware::from_fn(middleware::observe))
        .with_state(state)
}

/// The admin listener's routes.
pub fn admin_router(state: AppState) -> Router {
    admin::router(AdminState {
        health: state.health.clone(),
        metrics: state.metrics.clone(),
        dependency: ("store", state.store.kind().to_owned()),
    })
}
