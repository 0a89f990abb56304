//! Before any item moves, every node checks what it needs (a bucket, credentials, clamd).

use std::collections::HashMap;

use tokio::task::JoinSet;
use tracing::Instrument;

use crate::api::Built;
use crate::spec::load::Pipeline;

/// The run could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("preflight checks failed:\n{}", .0.iter().map(|(n, e)| format!("  {n}: {e}")).collect::<Vec<_>>().join("\n"))]
    Preflight(Vec<(String, String)>),
    /// Another run of the pipeline and shard holds the lease (`run/lease.rs`): exit 5.
    #[error("{0}")]
    Busy(String),
    /// The lease could not be taken (its store did not answer).
    #[error("{0}")]
    Lease(String),
}

/// Runs every node's preflight check at once (with `sources_only`, the sources' listings
/// only: `plan --no-preflight`). A check that panics has failed (fail closed), never
/// passed.
pub(crate) async fn preflight(p: &Pipeline, sources_only: bool) -> Result<(), RunError> {
    let mut checks = JoinSet::new();
    let mut names = HashMap::new();
    for n in &p.nodes {
        let name = n.spec.name.clone();
        let id = match &n.built {
            Built::Source(s) => {
                let s = s.clone();
                checks.spawn(async move { s.preflight().await }.in_current_span()).id()
            }
            Built::Processor(_) if sources_only => continue,
            Built::Processor(x) => {
                let x = x.clone();
                checks.spawn(async move { x.preflight().await }.in_current_span()).id()
            }
        };
        names.insert(id, name);
    }
    let mut failed = Vec::new();
    while let Some(r) = checks.join_next_with_id().await {
        let (id, error) = match r {
            Ok((_, Ok(()))) => continue,
            Ok((id, Err(e))) => (id, e.message),
            Err(e) => (e.id(), "internal error: the check panicked".to_string()),
        };
        failed.push((names.get(&id).cloned().unwrap_or_default(), error));
    }
    if failed.is_empty() {
        return Ok(());
    }
    failed.sort();
    Err(RunError::Preflight(failed))
}
