//! tally's integration suite: one test binary, so the support code (real redis-server,
//! redis-sentinel, postgres and chromium processes started per test) is compiled once. Each
//! module is one area of the contract; `cargo nextest run -E 'test(/^hostile::/)'` runs one.

#[macro_use]
mod support;

mod acl;
mod browser;
mod catalogue;
mod check;
mod cluster;
mod counters;
mod credentials;
mod database_tls;
mod failures;
mod fencing;
mod hostile;
mod jobs;
mod messages;
mod runtime;
mod tls;
mod trace_context;
mod trace_export;
mod web;
