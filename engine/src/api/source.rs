//! A source: produces one item per object it lists, and is told when each object is
//! finished ([`Source::ack`]).

use async_trait::async_trait;

use super::Emitter;
use crate::api::context::Context;
use crate::api::item::Finished;
use crate::api::item::NodeError;

#[async_trait]
pub trait Source: Send + Sync {
    /// Checks what the source needs (a store reachable, credentials accepted) before any
    /// item moves.
    async fn preflight(&self) -> Result<(), NodeError> {
        Ok(())
    }
    /// Lists objects, and for each one that [`Emitter::offer`] takes (this shard's, the
    /// plan's), produces an item with [`Emitter::new_item`] and [`Emitter::emit`], until
    /// exhausted or until [`Context::is_stopped`]; unless [`Context::reprocess`], objects
    /// an earlier run finished are counted with [`Emitter::skipped_done`] instead.
    async fn run(&self, out: &Emitter, cx: &Context) -> Result<(), NodeError>;
    /// Called once per object after every output of it is durable, before it is counted
    /// complete: record it as done, delete it at a source that deletes. An error leaves
    /// the object unprocessed (a rerun does it again). `done.listed` is the object as
    /// listed; `done.delivered` is false when every copy of it was dropped (a filter's no,
    /// a name no pattern matched): it went nowhere, so a source that deletes must keep it;
    /// `done.record` is what nodes recorded about it (a scan's verdict).
    async fn ack(&self, _done: &Finished) -> Result<(), NodeError> {
        Ok(())
    }
    /// Where the source keeps what it remembers across runs (done markers): the run takes
    /// its lease there, so that two runs of one pipeline and shard never work at once
    /// (`run/lease.rs`). None for a source that remembers nothing.
    fn lease_store(&self) -> Option<std::sync::Arc<dyn crate::api::store::Store>> {
        None
    }
    /// Whether `ack` deletes the object at the source (plans count the deletes).
    fn deletes_on_ack(&self) -> bool {
        false
    }
}
