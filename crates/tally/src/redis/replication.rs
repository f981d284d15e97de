//! Replicated durability: an increment is acknowledged only after `WAIT` confirms that enough
//! replicas have it, so a failover cannot discard it.
//!
//! Group commit: `WAIT` covers every write sent earlier on the same connection, so one `WAIT`
//! in flight per connection serves every increment that finished before it was sent. Under load
//! batches grow by themselves and the cost per increment falls.
//!
//! What this does not promise: Sentinel may promote a replica that had not yet received a write
//! another replica acknowledged. Waiting for all replicas closes that gap and costs availability
//! while any replica is down. See docs/ha.md.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use tokio::sync::{mpsc, oneshot};

use super::client::classify;
use crate::store::{StoreError, Unavailable};

type Ack = oneshot::Sender<Result<(), StoreError>>;

/// Handle to the group-commit task of one connection. Dropping it ends the task.
#[derive(Clone)]
pub struct Committer {
    queue: mpsc::UnboundedSender<Ack>,
}

impl Committer {
    /// Starts the task for `conn`. It must be the connection the increments were sent on.
    pub fn spawn(conn: MultiplexedConnection, replicas: u32, timeout: Duration) -> Self {
        let (queue, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(conn, rx, replicas, timeout));
        Self { queue }
    }

    /// Resolves once every write this connection sent before the call is on enough replicas.
    pub async fn replicated(&self) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        let gone = || {
            StoreError::unavailable(
                Unavailable::Io,
                "the connection closed before WAIT answered",
            )
        };
        self.queue.send(tx).map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }
}

async fn run(
    mut conn: MultiplexedConnection,
    mut rx: mpsc::UnboundedReceiver<Ack>,
    replicas: u32,
    timeout: Duration,
) {
    let mut batch = Vec::new();
    while rx.recv_many(&mut batch, usize::MAX).await > 0 {
        let size = batch.len();
        let millis = timeout.as_millis().max(1) as u64;
        let wait = redis::cmd("WAIT").arg(replicas).arg(millis).to_owned();
        // WAIT returns by itself after `timeout`; the extra second only guards a hung server.
        let outcome = match tokio::time::timeout(
            timeout + Duration::from_secs(1),
            wait.query_async::<i64>(&mut conn),
        )
        .await
        {
            Ok(Ok(acked)) if acked >= i64::from(replicas) => Ok(()),
            Ok(Ok(acked)) => {
                crate::metrics::wait_timeout();
                Err(StoreError::unavailable(
                    Unavailable::Unconfirmed,
                    format!("WAIT: {acked} of {replicas} replicas confirmed within {timeout:?}"),
                ))
            }
            Ok(Err(e)) => Err(classify(&e)),
            Err(_) => Err(StoreError::unavailable(
                Unavailable::Timeout,
                "WAIT did not return",
            )),
        };
        crate::metrics::group_commit(size);
        for ack in batch.drain(..) {
            let _ = ack.send(outcome.clone());
        }
    }
}
