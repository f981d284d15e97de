//! The public and admin routers of `tally serve`: each feature's routes with its own state,
//! merged behind the shared edge layers.

use std::sync::Arc;

use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;

use super::admin::{self, AdminState};
use super::health::Health;
use super::meta;
use crate::config::RateLimit;
use crate::counters::CountersApi;
use crate::fib::FibApi;
use crate::guestbook::GuestbookApi;

/// Every feature's state, built once at startup.
#[derive(Clone)]
pub struct Features {
    pub counters: Arc<CountersApi>,
    pub guestbook: Arc<GuestbookApi>,
    pub fib: Arc<FibApi>,
}

/// The public listener's routes.
pub fn public_router(features: &Features, rate_limit: Option<&RateLimit>) -> Router {
    let routes = Router::new()
        .merge(crate::counters::routes(features.counters.clone()))
        .merge(crate::guestbook::routes(features.guestbook.clone()))
        .merge(crate::fib::routes(features.fib.clone()))
        .merge(meta::routes());
    crate::http::with_edge_layers(routes, rate_limit)
}

/// The admin listener's routes.
pub fn admin_router(health: Health, metrics: PrometheusHandle, store_kind: &str) -> Router {
    admin::router(AdminState {
        health,
        metrics,
        dependency: ("store", store_kind.to_owned()),
    })
}
