//! Stopping a run whose dependency is down, or that fails more than it tolerates
//! (`defaults.halt`). When a node has failed `in_a_row` items in a row (50), each for a
//! transient reason (clamd gone, a bucket unreachable: the node's own retries and breaker
//! have given up on each), or `failures` objects failed in all, or failed objects are over
//! `percent` of those finished, the run stops listing as it does on SIGTERM, once, with
//! one line saying why; the items in flight finish or are abandoned, and the rest is left
//! for the rerun, instead of each object of it failing in turn.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use std::sync::Arc;

use crate::api::Stop;
use crate::run::tracker::Tracker;
use crate::spec::HaltPolicy;

/// Finished objects before `percent` is judged.
const JUDGED_FROM: u64 = 100;

#[derive(Debug)]
pub(crate) struct Halt {
    stop: Stop,
    policy: HaltPolicy,
    tracker: Arc<Tracker>,
    /// Shared with the live counters, so that progress says the run halted and why.
    reason: Arc<OnceLock<String>>,
}

impl Halt {
    pub(crate) fn new(stop: Stop, policy: HaltPolicy, tracker: Arc<Tracker>, reason: Arc<OnceLock<String>>) -> Self {
        Self { stop, policy, tracker, reason }
    }

    /// Records how an item ended at `node` (`in_a_row` is the node's counter): a success
    /// or a permanent failure starts the count again; a transient one adds to it.
    pub(crate) fn record(&self, node: &str, in_a_row: &AtomicU64, transient_failure: Option<&str>) {
        let Some(reason) = transient_failure else {
            in_a_row.store(0, Ordering::Relaxed);
            return;
        };
        let n = self.policy.in_a_row;
        if in_a_row.fetch_add(1, Ordering::Relaxed) + 1 == n {
            return self.halt(node, format!("{n} objects in a row failed at `{node}`, the last one: {reason}"));
        }
        let t = &self.tracker;
        let failed = t.failed.load(Ordering::Relaxed);
        if let Some(max) = self.policy.failures.filter(|max| failed >= *max) {
            return self.halt(
                node,
                format!("{failed} objects failed (defaults.halt.failures: {max}), the last one at `{node}`: {reason}"),
            );
        }
        let finished = failed + t.complete.load(Ordering::Relaxed) + t.refused.load(Ordering::Relaxed);
        if let Some(p) = self.policy.percent {
            if finished >= JUDGED_FROM && failed as f64 * 100.0 > p * finished as f64 {
                let why = format!("{failed} of {finished} finished objects failed, over defaults.halt.percent ({p}%), the last one at `{node}`: {reason}");
                self.halt(node, why);
            }
        }
    }

    fn halt(&self, node: &str, why: String) {
        if self.reason.set(why.clone()).is_ok() {
            tracing::error!(node, reason = %why, "stopping the run: a rerun processes what is left");
            self.stop.stop();
        }
    }

    /// Why the run was stopped early, if it was.
    pub(crate) fn reason(&self) -> Option<String> {
        self.reason.get().cloned()
    }
}
