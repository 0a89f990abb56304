//! How a run works: the executor's phases (`executor.rs`) with the run's options
//! (`options.rs`), each node's concurrency, fixed or adaptive (`adaptive.rs`), the preflight checks (`preflight.rs`), the output ports and byte budget
//! (`outputs.rs`), the tracker that counts objects as they finish (`tracker.rs`), their
//! acknowledgement (`acks.rs`), the halt on a failing dependency (`halt.rs`), the lease that keeps two runs of a pipeline apart (`lease.rs`), the run's
//! end (`end.rs`), counters (`stats.rs`), failures logged by cause (`said.rs`) and the
//! report (`report.rs`).

pub mod acks;
pub(crate) mod adaptive;
pub mod end;
pub mod executor;
pub mod halt;
pub(crate) mod lease;
pub mod options;
pub mod outputs;
pub mod preflight;
pub mod report;
pub(crate) mod said;
pub mod stats;
pub mod tracker;
