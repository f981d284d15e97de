//! The seam between the features and the topology: every command a feature sends runs on a
//! `Connection`, whatever stands behind it: one multiplexed connection to the one master
//! (standalone, or found through Sentinel), or in Cluster mode to the master of the command's
//! slot. The features' commands only need `ConnectionLike` and do not change with the topology.
//!
//! Delegation costs a match per command: each variant's future is returned as it is, with no
//! second boxing.

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{Cmd, Pipeline, RedisFuture, Value};

#[derive(Clone)]
pub enum Connection {
    /// The server that takes the command's keys: a standalone Redis, the master Sentinel
    /// names, or the master of the slot in Cluster mode.
    Single(MultiplexedConnection),
    /// Cluster mode, after an ASK redirect: the node importing the slot, which takes a command
    /// for it only right after `ASKING`. Each command is sent in one pipeline behind its own
    /// `ASKING`, so no other request's command can come between them on the shared connection.
    Asking(MultiplexedConnection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(conn) => conn.req_packed_command(cmd),
            Self::Asking(conn) => Box::pin(async move {
                let mut pipe = redis::pipe();
                pipe.cmd("ASKING").add_command(cmd.clone());
                let mut replies = conn.req_packed_commands(&pipe, 1, 1).await?;
                Ok(replies.pop().unwrap_or(Value::Nil))
            }),
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
            // ASKING admits the one command after it, so each command gets its own; the
            // replies wanted are every second one.
            Self::Asking(conn) => Box::pin(async move {
                let mut pipe = redis::pipe();
                for cmd in pipeline.cmd_iter() {
                    pipe.cmd("ASKING").add_command(cmd.clone());
                }
                let total = pipe.len();
                let replies = conn.req_packed_commands(&pipe, 0, total).await?;
                let wanted = replies.into_iter().skip(1).step_by(2);
                Ok(wanted.skip(offset).take(count).collect())
            }),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(conn) | Self::Asking(conn) => conn.get_db(),
        }
    }
}
