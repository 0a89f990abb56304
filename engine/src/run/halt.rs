//! Stopping a run whose dependency is down. When a node has failed [`HALT_AFTER`] items in
//! a row, each for a transient reason (clamd gone, a bucket unreachable: the node's own
//! retries and breaker have given up on each), the run stops listing as it does on
//! SIGTERM, once, with one line saying why; the items in flight finish or are abandoned,
//! and the rest of the archive is left for the rerun, instead of each object of it
//! failing in turn.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use crate::api::Stop;

/// Transient failures in a row at one node that stop the run.
pub const HALT_AFTER: u64 = 50;

#[derive(Debug)]
pub(crate) struct Halt {
    stop: Stop,
    reason: OnceLock<String>,
}

impl Halt {
    pub(crate) fn new(stop: Stop) -> Self {
        Self { stop, reason: OnceLock::new() }
    }

    /// Records how an item ended at `node` (`in_a_row` is the node's counter): a success
    /// or a permanent failure starts the count again; a transient one adds to it.
    pub(crate) fn record(&self, node: &str, in_a_row: &AtomicU64, transient_failure: Option<&str>) {
        let Some(reason) = transient_failure else {
            in_a_row.store(0, Ordering::Relaxed);
            return;
        };
        if in_a_row.fetch_add(1, Ordering::Relaxed) + 1 == HALT_AFTER {
            let why = format!("{HALT_AFTER} objects in a row failed at `{node}`, the last one: {reason}");
            if self.reason.set(why.clone()).is_ok() {
                tracing::error!(node, reason = %why, "stopping the run: a rerun processes what is left");
                self.stop.stop();
            }
        }
    }

    /// Why the run was stopped early, if it was.
    pub(crate) fn reason(&self) -> Option<String> {
        self.reason.get().cloned()
    }
}
