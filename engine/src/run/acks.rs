//! Finished objects: in a run, acknowledged to their sources (a done marker, a delete)
//! before they count complete; in a plan, handed to the planner.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::FutureExt;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::api::item::Finished;
use crate::api::{Built, ItemFailure};
use crate::plan::{PlanStatus, PlannedObject};
use crate::run::options::{Mode, RunOptions};
use crate::run::tracker::Tracker;
use crate::spec::load::Pipeline;

/// Starts the task that takes finished objects: a plan hands them to the planner, a run
/// acknowledges them to their sources.
pub(crate) fn start_acknowledgements(
    p: &Pipeline,
    opts: &RunOptions,
    tracker: &Arc<Tracker>,
) -> tokio::task::JoinHandle<()> {
    let (finished_tx, finished_rx) = mpsc::unbounded_channel();
    if let Ok(mut t) = tracker.finished_tx.lock() {
        *t = Some(finished_tx);
    }
    let named: Vec<(String, Built)> = p.nodes.iter().map(|n| (n.spec.name.clone(), n.built.clone())).collect();
    match (&opts.mode, opts.plan_sink.clone()) {
        (Mode::Plan { .. }, Some(sink)) => tokio::spawn(send_to_plan(named, finished_rx, sink).in_current_span()),
        _ => tokio::spawn(acknowledge(named, finished_rx, tracker.clone()).in_current_span()),
    }
}

/// In a plan, hands each object to the planner as it finishes; nothing is acknowledged.
async fn send_to_plan(
    nodes: Vec<(String, Built)>,
    mut rx: mpsc::UnboundedReceiver<Finished>,
    sink: mpsc::UnboundedSender<PlannedObject>,
) {
    while let Some(f) = rx.recv().await {
        let (source, deletes) = match nodes.get(f.source) {
            Some((name, Built::Source(s))) => (name.clone(), s.deletes_on_ack()),
            Some((name, _)) => (name.clone(), false),
            None => (String::new(), false),
        };
        let status = match (&f.failure, f.already_done) {
            (_, true) => PlanStatus::Done,
            (Some(_), _) => PlanStatus::Error,
            (None, false) => PlanStatus::Process,
        };
        let _ = sink.send(PlannedObject {
            source,
            key: f.listed.key,
            size: f.listed.size,
            etag: f.listed.etag,
            status,
            delete_at_source: (deletes && f.delivered || !f.trail.deletes.is_empty()) && status != PlanStatus::Error,
            route: f.trail.route,
            writes: f.trail.writes,
            notes: f.trail.notes,
            error: f.failure.map(|x| format!("{}: {}", x.node, x.reason)),
        });
    }
}

/// Acknowledges finished objects to their sources (a done marker, a delete), and only then
/// counts them complete. Up to 1,024 at once: sources batch their acknowledgements (one
/// marker per few hundred objects), so most of these only wait for their batch.
async fn acknowledge(nodes: Vec<(String, Built)>, mut rx: mpsc::UnboundedReceiver<Finished>, tracker: Arc<Tracker>) {
    let limit = Arc::new(Semaphore::new(1024));
    let mut acks = JoinSet::new();
    while let Some(f) = rx.recv().await {
        let Some((name, Built::Source(source))) = nodes.get(f.source).cloned() else {
            tracker.record_complete(f.dropped);
            continue;
        };
        let Ok(permit) = limit.clone().acquire_owned().await else { break };
        let tracker = tracker.clone();
        acks.spawn(async move {
            match AssertUnwindSafe(source.ack(&f)).catch_unwind().await {
                Ok(Ok(())) => tracker.record_complete(f.dropped),
                Ok(Err(e)) => {
                    tracing::warn!(node = %name, key = %f.listed.key.escape_debug(), error = %e.message.escape_debug(), "outputs written but not acknowledged");
                    tracker.record_failure(ItemFailure {
                        key: f.listed.key,
                        node: name,
                        reason: format!("outputs are written, but recording the object as done failed: {e}"),
                        permanent: e.permanent,
                    });
                }
                Err(_) => tracker.record_failure(ItemFailure {
                    key: f.listed.key,
                    node: name,
                    reason: "internal error: acknowledging panicked".into(),
                    permanent: false,
                }),
            }
            drop(permit);
        }.in_current_span());
        while acks.try_join_next().is_some() {}
    }
    while acks.join_next().await.is_some() {}
}
