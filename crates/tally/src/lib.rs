//! tally: a per-id counter service on Redis, and the tools that prove it correct under failure.

pub mod check;
pub mod cli;
pub mod config;
pub mod db;
pub mod health;
pub mod http;
pub mod jobs;
pub mod lifecycle;
pub mod listener;
pub mod metrics;
pub mod serve;
pub mod store;
pub mod telemetry;
pub mod web;
pub mod worker;
