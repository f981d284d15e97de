//! The HTTP surface: the public router (counters, messages, Fibonacci jobs, service info) and
//! the admin router.

pub mod admin;
mod counters;
pub mod error;
pub mod extract;
mod fib;
mod messages;
mod meta;
pub mod middleware;
mod ratelimit;

use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;

pub use self::admin::AdminState;
pub use self::counters::validate_id;
pub use self::error::ApiError;

use crate::config::RateLimit;
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
pub fn public_router(state: AppState, rate_limit: Option<&RateLimit>) -> Router {
    let routes = Router::new()
        .merge(counters::routes())
        .merge(messages::routes())
        .merge(fib::routes())
        .merge(meta::routes());
    with_edge_layers(routes, rate_limit).with_state(state)
}

/// What every public listener puts in front of its routes: the rate limit when configured
/// (off, it costs nothing), inside `observe`, so refused requests are logged and counted.
pub fn with_edge_layers<S: Clone + Send + Sync + 'static>(
    routes: Router<S>,
    rate_limit: Option<&RateLimit>,
) -> Router<S> {
    let routes = match rate_limit {
        Some(config) => routes.layer(axum::middleware::from_fn_with_state(
            ratelimit::ClientLimiter::new(config),
            ratelimit::limit,
        )),
        None => routes,
    };
    routes.layer(axum::middleware::from_fn(middleware::observe))
}

/// The admin listener's routes.
pub fn admin_router(state: AppState) -> Router {
    admin::router(AdminState {
        health: state.health.clone(),
        metrics: state.metrics.clone(),
        dependency: ("store", state.store.kind().to_owned()),
    })
}
