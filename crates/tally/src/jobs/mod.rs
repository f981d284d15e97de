//! Fibonacci jobs (the seed's multi-k8s calculator, made reliable): the API records a
//! submission in Postgres and enqueues a job on a Redis Stream; `tally worker` computes it and
//! stores the value. See docs/jobs.md.

pub mod fib;

/// Where the job system keeps its data in Redis.
pub mod keys {
    /// The job stream, consumed through a consumer group.
    pub const JOBS: &str = "tally:fib:jobs";
    pub const GROUP: &str = "workers";
    /// index → decimal value, for computed indexes.
    pub const VALUES: &str = "tally:fib:values";
    /// Computed indexes, scored by index, for paging through VALUES in order.
    pub const DONE: &str = "tally:fib:done";
    /// index → when it was first requested (ms); pending = requested and not in VALUES.
    pub const REQUESTED: &str = "tally:fib:requested";
    /// Jobs that failed too often, with their error.
    pub const DEAD: &str = "tally:fib:dead";
    /// Entries kept in the job stream. Trimming never removes a pending job in practice: the
    /// cap is far above what workers leave unacknowledged.
    pub const JOBS_CAP: u64 = 100_000;
}
