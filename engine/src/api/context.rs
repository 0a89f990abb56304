//! What a node may use while it works, beside the item and where to send it: where large
//! bodies spool, a counter of retries for the report, whether this is a plan, which run
//! this is, and for sources whether to stop listing and which share of the objects is
//! this process's.

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
    /// Set to stop listing (SIGTERM, a halt): sources read it.
    pub(crate) stop: Stop,
    /// This process's share (`--shard`).
    pub(crate) shard: Option<crate::api::selection::Shard>,
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
    /// Whether the run asked its sources to stop listing (SIGTERM, a halt): a source
    /// checks it between objects and ends its listing.
    pub fn is_stopped(&self) -> bool {
        self.stop.is_stopped()
    }
    /// This process's share of the objects (`--shard`), for a source that splits its work
    /// itself (an inventory's data files) and offers with
    /// [`crate::api::Emitter::offer_in_share`].
    pub fn shard(&self) -> Option<crate::api::selection::Shard> {
        self.shard
    }
}

/// Asks sources to stop listing (SIGTERM, fatal error). A cancellation token, so that
/// whoever waits (preflight, the drain) wakes at once instead of polling.
#[derive(Debug, Clone, Default)]
pub struct Stop(tokio_util::sync::CancellationToken);

impl Stop {
    pub fn stop(&self) {
        self.0.cancel();
    }
    pub fn is_stopped(&self) -> bool {
        self.0.is_cancelled()
    }
    /// Completes once [`Stop::stop`] was called.
    pub async fn stopped(&self) {
        self.0.cancelled().await
    }
}
