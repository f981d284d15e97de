//! The process shell of every long-running subcommand: binding and draining listeners
//! (`lifecycle`), readiness (`health`), the admin router, and the bootstraps of `tally serve`
//! and `tally worker`, which wire the features to the shared infrastructure.

pub mod admin;
pub mod health;
pub mod lifecycle;
mod meta;
pub mod router;
pub mod serve;
pub mod worker;
