//! The seam between the features and the topology: every command a feature sends runs on a
//! `Connection`, whatever stands behind it. Today that is one multiplexed connection to the one
//! master (standalone, or found through Sentinel); Redis Cluster adds its variant here, and the
//! features' commands, which only need `ConnectionLike`, do not change.
//!
//! Delegation costs a match per command: each variant's future is returned as it is, with no
//! second boxing.

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{Cmd, Pipeline, RedisFuture, Value};

#[derive(Clone)]
pub enum Connection {
    /// One server that takes every key: a standalone Redis or the master Sentinel names.
    Single(MultiplexedConnection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(conn) => conn.get_db(),
        }
    }
}
