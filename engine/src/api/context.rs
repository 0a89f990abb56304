//! What a node may use while it works, beside the item and where to send it: where large
//! bodies spool, a counter of retries for the report, whether this is a plan, which run
//! this is.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::api::body::Spool;

/// One node's context, shared by its concurrent tasks.
#[derive(Debug, Clone)]
pub struct Context {
    pub(crate) node: String,
    pub(crate) spool: Spool,
    pub(crate) retries: Arc<AtomicU64>,
    pub(crate) planning: bool,
    pub(crate) run_id: Arc<str>,
    pub(crate) reprocess: bool,
}

impl Context {
    /// The node's name in the spec.
    pub fn node(&self) -> &str {
        &self.node
    }
    /// Where bodies spool; nodes that read objects need it.
    pub fn spool(&self) -> &Spool {
        &self.spool
    }
    /// Counts retries of transient failures, for the run report.
    pub fn retried(&self, n: usize) {
        self.retries.fetch_add(n as u64, Ordering::Relaxed);
    }
    /// Whether this is a plan: no write, delete, scan or alert then.
    pub fn planning(&self) -> bool {
        self.planning
    }
    /// This run's identity (`RunOptions::run_id`), recorded with what
    /// it writes.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }
    /// `--reprocess`: objects earlier runs finished are processed, and replace what they
    /// wrote, again.
    pub fn reprocess(&self) -> bool {
        self.reprocess
    }
}
