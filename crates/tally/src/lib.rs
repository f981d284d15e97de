//! tally: a per-id counter service on Redis, and the tools that prove it correct under failure.
//!
//! Layers, each importing only those below it (scripts/check-layers.py enforces it):
//! - leaves: `config`, `metrics`, `store` (the failure vocabulary), `telemetry`, `trace` (W3C
//!   Trace Context);
//! - infrastructure: `listener`, `redis` (the one Redis client and key space), `postgres`, `http`;
//! - features: `counters`, `guestbook`, `fib`;
//! - the process shell: `app` (serve, worker, lifecycle, health), `web`, `check`, `cli`.

pub mod app;
pub mod check;
pub mod cli;
pub mod config;
pub mod counters;
pub mod fib;
pub mod guestbook;
pub mod http;
pub mod listener;
pub mod metrics;
pub mod postgres;
pub mod redis;
pub mod store;
pub mod telemetry;
pub mod trace;
pub mod web;
