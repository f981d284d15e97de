//! What every HTTP surface shares, below the features: one JSON error type, the extractors
//! (JSON rejections, the Idempotency-Key), the access-log and metrics middleware, and the rate
//! limit.

pub mod error;
pub mod extract;
pub mod middleware;
mod ratelimit;

use axum::Router;

pub use self::error::ApiError;

use crate::config::RateLimit;

/// What every public listener puts in front of its routes: the rate limit when configured
/// (off, it costs nothing), inside `ObserveLayer`, so refused requests are logged and counted.
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
    routes.layer(middleware::ObserveLayer)
}
