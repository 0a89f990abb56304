//! A processor: takes one item at a time (several at once, up to its concurrency) and
//! sends it, or what it became, on through its output ports.

use async_trait::async_trait;

use super::Emitter;
use crate::api::context::Context;
use crate::api::item::{Item, ItemError, NodeError};

#[async_trait]
pub trait Processor: Send + Sync {
    async fn preflight(&self) -> Result<(), NodeError> {
        Ok(())
    }
    /// Processes one item and sends it (or what it became) on. Several calls run at once,
    /// up to the node's concurrency.
    async fn process(&self, item: Item, out: &Emitter, cx: &Context) -> Result<(), ItemError>;
    /// What `process` would do, with no side effect: no write, no delete, no scan, no
    /// alert. Reads are allowed only when `deep` (`plan --deep`). Sinks record their
    /// destination with [`Item::plan_write`]; nodes that cannot know what they would decide
    /// say what they assume with [`Item::plan_note`].
    async fn preview(&self, item: Item, out: &Emitter, cx: &Context, deep: bool) -> Result<(), ItemError>;
    /// Called once the node's inputs are closed and every `process` call has returned: a
    /// node that holds items ([`Item::hold`]: a batch) writes what it holds and sends the
    /// items on. Nodes downstream wait for it, as for any item in flight.
    async fn end_of_input(&self, _out: &Emitter, _cx: &Context) {}
    /// The run abandons its items (its grace period is over, or `end_of_input`
    /// panicked): a node that holds items drops them now, and each is recorded failed as
    /// it drops.
    fn abandon(&self) {}
    /// Called once after every item has finished.
    async fn finish(&self, _facts: &RunFacts) {}
    /// The node's own figures for the report and the summary, read after [`Self::finish`]
    /// (an alert node: `delivered`, `not_delivered`, `suppressed`, its end-of-run alerts
    /// included; a scanner: items per database version). Most nodes have none.
    fn counters(&self) -> Vec<(String, u64)> {
        Vec::new()
    }
}

/// Facts about the whole run, for nodes that act at its end (alerts).
#[derive(Debug, Clone, Default)]
pub struct RunFacts {
    pub pipeline: String,
    /// Objects the sources produced.
    pub source_items: u64,
    /// Objects the sources skipped because an earlier run finished them.
    pub skipped_done: u64,
    /// Objects not processed for a transient reason (a rerun processes them).
    pub failed_items: u64,
    /// Objects refused for good and left at their source (see `ItemCounts::refused`).
    pub refused_items: u64,
    /// Items routed to problem ports (quarantine, dead letter).
    pub problem_items: u64,
    /// How the run ended; `None` when it could not start (a preflight check failed).
    pub outcome: Option<super::Outcome>,
    /// The exit code of the run (1 when it could not start).
    pub exit_code: i32,
    /// Items per routed problem port (`scan.infected`), those that had any.
    pub problem_routes: Vec<(String, u64)>,
    /// Why objects were not done, grouped, most frequent first (and why the run stopped
    /// early or could not start).
    pub causes: Vec<super::Cause>,
    /// Where the run's report is written, when it is.
    pub report: Option<String>,
}
