//! Runs a pipeline: one task group per node, bounded channels between nodes, per-node
//! concurrency, items streamed from listing to sinks.
//!
//! Shape of a run:
//! - every processing node gets one bounded `mpsc` channel that all its inputs send into;
//!   a full channel makes the sender wait (backpressure), so memory depends on channel
//!   capacity and concurrency, never on the number of objects;
//! - a node's task takes an item only when one of its `concurrency` permits is free, and
//!   runs each item in its own tokio task (CPU-heavy transforms use both cores);
//! - when a node's inputs have all closed and its in-flight items are done, it drops its
//!   senders, which closes its consumers' channels: the run drains from sources to sinks;
//! - each source object is tracked through all its copies; it is complete when every copy
//!   reached the end of its path, failed if any node could not process it.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use indexmap::IndexMap;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;

use crate::body::Spool;
use crate::load::Pipeline;
use crate::node::{
    mark_failed, Built, ByteBudget, Finished, Item, ItemFailure, Outputs, Planned, PortStats, RunFacts, Shard,
    SourceContext, Stop, Tracker,
};
use crate::plan::{PlanStatus, PlannedObject};
use crate::report::{ItemCounts, NodeReport, Outcome, PortReport, RunReport, SourceError};

/// How to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Replaces the spec's default concurrency (nodes that set their own keep it).
    pub default_concurrency: Option<usize>,
    /// Per-node concurrency, over everything else.
    pub node_concurrency: HashMap<String, usize>,
    /// Progress bars (a terminal) or periodic log lines.
    pub progress: Progress,
    /// Set to stop listing early; in-flight items finish within `grace`.
    pub stop: Stop,
    /// After a stop, how long in-flight items may take before they are abandoned
    /// (unprocessed, no partial output, picked up by a rerun).
    pub grace: Duration,
    /// This process's share of the objects (`--shard INDEX/COUNT`).
    pub shard: Option<Shard>,
    /// Process objects even when an earlier run finished them.
    pub reprocess: bool,
    /// Run, or only show what a run would do.
    pub mode: Mode,
    /// `run --plan`: only the planned objects.
    pub only: Option<Arc<Planned>>,
    /// Where a plan sends each object as it is planned.
    pub plan_sink: Option<mpsc::UnboundedSender<PlannedObject>>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Mode {
    #[default]
    Run,
    /// Lists for real; nodes preview (no write, delete, scan or alert); `deep` lets them
    /// read objects to resolve what depends on content.
    Plan { deep: bool },
}

/// Under Kubernetes' default 30 s between SIGTERM and SIGKILL, with time left to write
/// the report.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(20);

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            default_concurrency: None,
            node_concurrency: HashMap::new(),
            progress: Progress::default(),
            stop: Stop::default(),
            grace: DEFAULT_GRACE,
            shard: None,
            reprocess: false,
            mode: Mode::Run,
            only: None,
            plan_sink: None,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Progress {
    /// Bars when stderr is a terminal, log lines otherwise.
    #[default]
    Auto,
    Bars,
    Log,
    Off,
}

/// The run could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("preflight checks failed:\n{}", .0.iter().map(|(n, e)| format!("  {n}: {e}")).collect::<Vec<_>>().join("\n"))]
    Preflight(Vec<(String, String)>),
}

/// Counters of one node, shared with the progress display.
#[derive(Debug, Default)]
struct NodeStats {
    received: AtomicU64,
    in_flight: AtomicU64,
    max_in_flight: AtomicU64,
    errors: AtomicU64,
}

impl Pipeline {
    /// The concurrency each node runs with, after the options' overrides.
    pub fn effective_concurrency(&self, opts: &RunOptions) -> Vec<usize> {
        self.nodes
            .iter()
            .map(|n| match n.built {
                Built::Source(_) => 1,
                Built::Processor(_) => {
                    let default = opts.default_concurrency.unwrap_or(self.defaults.concurrency);
                    let default = match n.kind.cpu_bound() {
                        true => default.min(std::thread::available_parallelism().map_or(1, |n| n.get())),
                        false => default,
                    };
                    opts.node_concurrency.get(&n.spec.name).copied().or(n.spec.concurrency).unwrap_or(default).max(1)
                }
            })
            .collect()
    }
}

/// Runs the pipeline to the end and reports what happened.
pub async fn run(p: &Pipeline, opts: RunOptions) -> Result<RunReport, RunError> {
    let started = Instant::now();

    let planning = matches!(opts.mode, Mode::Plan { .. });
    // Everything a node needs must answer before any item moves. A stop (SIGTERM) during
    // the checks ends the run at once, with a report and nothing processed.
    let checked = tokio::select! {
        r = preflight(p, planning) => Some(r),
        () = opts.stop.stopped() => None,
    };
    match checked {
        None => {
            tracing::warn!("stopped during the preflight checks: nothing was processed");
            return Ok(RunReport::stopped_before_start(p, &opts, started.elapsed().as_secs_f64()));
        }
        Some(Err(e)) => return Err(e),
        Some(Ok(())) => {}
    }

    let concurrency = p.effective_concurrency(&opts);
    let spool =
        Spool { threshold: p.defaults.spool_threshold_bytes, dir: p.defaults.spool_dir.as_ref().map(Into::into) };
    let budget = ByteBudget::new(p.defaults.max_bytes_in_flight, p.defaults.spool_threshold_bytes);
    let tracker = Arc::new(Tracker::default());
    let (finished_tx, finished_rx) = mpsc::unbounded_channel();
    if let Ok(mut t) = tracker.finished_tx.lock() {
        *t = Some(finished_tx);
    }
    tracker.planning.store(planning, Ordering::Relaxed);
    let named: Vec<(String, Built)> = p.nodes.iter().map(|n| (n.spec.name.clone(), n.built.clone())).collect();
    let acker = match (&opts.mode, opts.plan_sink.clone()) {
        (Mode::Plan { .. }, Some(sink)) => tokio::spawn(send_to_plan(named, finished_rx, sink)),
        _ => tokio::spawn(acknowledge(named, finished_rx, tracker.clone())),
    };

    // One bounded channel per processing node.
    let mut senders: HashMap<String, mpsc::Sender<Item>> = HashMap::new();
    let mut receivers: HashMap<String, mpsc::Receiver<Item>> = HashMap::new();
    for n in &p.nodes {
        if let Built::Processor(_) = n.built {
            let (tx, rx) = mpsc::channel(p.defaults.channel_capacity);
            senders.insert(n.spec.name.clone(), tx);
            receivers.insert(n.spec.name.clone(), rx);
        }
    }

    // Each node's output ports, wired to its consumers' channels.
    let mut node_stats = Vec::new();
    let mut port_stats: Vec<IndexMap<&'static str, Arc<PortStats>>> = Vec::new();
    let mut outputs = Vec::new();
    let mut retries = Vec::new();
    for (index, n) in p.nodes.iter().enumerate() {
        let mut ports = IndexMap::new();
        let mut stats = IndexMap::new();
        for decl in n.kind.ports() {
            let consumers: Vec<mpsc::Sender<Item>> =
                p.dag.consumers(&n.spec.name, decl.name).filter_map(|to| senders.get(to).cloned()).collect();
            let s = Arc::new(PortStats::default());
            stats.insert(decl.name, s.clone());
            ports.insert(decl.name, (consumers, s));
        }
        let r = Arc::new(AtomicU64::new(0));
        outputs.push(Arc::new(Outputs::new(
            n.spec.name.clone(),
            index,
            ports,
            spool.clone(),
            tracker.clone(),
            r.clone(),
            matches!(n.built, Built::Source(_)).then(|| budget.clone()),
        )));
        retries.push(r);
        node_stats.push(Arc::new(NodeStats::default()));
        port_stats.push(stats);
    }
    // Only the Outputs hold senders now: channels close as upstream nodes finish.
    drop(senders);

    let progress = start_progress(p, &opts, &node_stats, &port_stats, &tracker);

    let mut tasks: JoinSet<Option<SourceError>> = JoinSet::new();
    for (i, n) in p.nodes.iter().enumerate() {
        let out = outputs[i].clone();
        let name = n.spec.name.clone();
        match &n.built {
            Built::Source(source) => {
                let source = source.clone();
                let ctx = SourceContext {
                    stop: opts.stop.clone(),
                    shard: opts.shard,
                    reprocess: opts.reprocess,
                    only: opts.only.clone(),
                };
                tasks.spawn(async move {
                    let r = AssertUnwindSafe(source.run(&out, &ctx)).catch_unwind().await;
                    match r {
                        Ok(Ok(())) => None,
                        Ok(Err(error)) => {
                            tracing::error!(node = %name, %error, "source stopped early");
                            Some(SourceError { node: name, error })
                        }
                        Err(_) => Some(SourceError { node: name, error: "the source panicked".into() }),
                    }
                });
            }
            Built::Processor(node) => {
                let node = node.clone();
                let Some(mut rx) = receivers.remove(&name) else { continue };
                let stats = node_stats[i].clone();
                let limit = Arc::new(Semaphore::new(concurrency[i]));
                let mode = opts.mode;
                tasks.spawn(async move {
                    let mut running = JoinSet::new();
                    loop {
                        let Ok(permit) = limit.clone().acquire_owned().await else { break };
                        let Some(item) = rx.recv().await else { break };
                        stats.received.fetch_add(1, Ordering::Relaxed);
                        let now = stats.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                        stats.max_in_flight.fetch_max(now, Ordering::SeqCst);
                        let (node, out, stats, name) = (node.clone(), out.clone(), stats.clone(), name.clone());
                        running.spawn(async move {
                            // Kept so that a failure (or a panic) can be recorded against
                            // the object; a clone shares the body, it copies nothing.
                            let guard = item.clone();
                            let r = match mode {
                                Mode::Run => AssertUnwindSafe(node.process(item, &out)).catch_unwind().await,
                                Mode::Plan { deep } => {
                                    item.plan_visit(&name);
                                    AssertUnwindSafe(node.preview(item, &out, deep)).catch_unwind().await
                                }
                            };
                            let reason = match r {
                                Ok(Ok(())) => None,
                                Ok(Err(e)) => Some(e.reason),
                                Err(_) => Some("internal error: the node panicked".to_string()),
                            };
                            if let Some(reason) = reason {
                                stats.errors.fetch_add(1, Ordering::Relaxed);
                                tracing::warn!(node = %name, key = ?guard.source_key(), reason = ?reason, "item not processed");
                                mark_failed(&guard, &name, &reason);
                            }
                            drop(guard);
                            stats.in_flight.fetch_sub(1, Ordering::SeqCst);
                            drop(permit);
                        });
                        while running.try_join_next().is_some() {}
                    }
                    while running.join_next().await.is_some() {}
                    None
                });
            }
        }
    }
    // The tasks hold the only references to the outputs from here.
    drop(outputs);

    // Wait for the run to drain. Once stopped, in-flight items get `grace` to finish; then
    // the rest is abandoned: tasks are aborted, their items dropped unacknowledged (writes
    // are all-or-nothing, so nothing partial is left visible).
    let mut source_errors = Vec::new();
    let mut stopped_at: Option<Instant> = None;
    loop {
        tokio::select! {
            r = tasks.join_next() => match r {
                None => break,
                Some(Ok(Some(e))) => source_errors.push(e),
                Some(_) => {}
            },
            _ = tokio::time::sleep(Duration::from_millis(100)) => {
                if !opts.stop.is_stopped() {
                    continue;
                }
                let since = *stopped_at.get_or_insert_with(|| {
                    tracing::warn!(grace_secs = opts.grace.as_secs_f64(), "stopping: listing ended, in-flight items have the grace period to finish");
                    Instant::now()
                });
                if since.elapsed() >= opts.grace && !tracker.abandoning.load(Ordering::SeqCst) {
                    tracing::warn!("grace period over: abandoning the items still in flight");
                    tracker.abandoning.store(true, Ordering::SeqCst);
                    tasks.abort_all();
                }
            }
        }
    }
    // Every item is gone; close the acknowledgements and wait for the last of them.
    if let Ok(mut t) = tracker.finished_tx.lock() {
        t.take();
    }
    let _ = acker.await;
    if let Some(p) = progress {
        p.finish().await;
    }

    // Items are all finished; gather the facts.
    let mut nodes = Vec::new();
    let mut problems = 0;
    for (i, n) in p.nodes.iter().enumerate() {
        let mut ports = IndexMap::new();
        for decl in n.kind.ports() {
            let s = &port_stats[i][decl.name];
            let items = s.items.load(Ordering::Relaxed);
            if decl.problem {
                problems += items;
            }
            ports.insert(
                decl.name.to_string(),
                PortReport {
                    items,
                    bytes: s.bytes.load(Ordering::Relaxed),
                    routed_to: p.dag.consumers(&n.spec.name, decl.name).map(String::from).collect(),
                    problem: decl.problem,
                },
            );
        }
        let st = &node_stats[i];
        nodes.push(NodeReport {
            name: n.spec.name.clone(),
            kind: n.spec.kind.clone(),
            source: matches!(n.built, Built::Source(_)),
            concurrency: concurrency[i],
            received: st.received.load(Ordering::Relaxed),
            errors: st.errors.load(Ordering::Relaxed),
            max_in_flight: st.max_in_flight.load(Ordering::Relaxed),
            retries: retries[i].load(Ordering::Relaxed),
            ports,
        });
    }
    let items = ItemCounts {
        from_sources: tracker.started.load(Ordering::Relaxed),
        complete: tracker.complete.load(Ordering::Relaxed),
        failed: tracker.failed.load(Ordering::Relaxed),
        problems,
        skipped_done: tracker.skipped_done.load(Ordering::Relaxed),
    };

    let facts = RunFacts {
        pipeline: p.name.clone(),
        source_items: items.from_sources,
        skipped_done: items.skipped_done,
        failed_items: items.failed,
        problem_items: problems,
    };
    // End-of-run hooks (alerts) belong to runs, not plans.
    for n in p.nodes.iter().filter(|_| !planning) {
        if let Built::Processor(x) = &n.built {
            x.finish(&facts).await;
        }
    }

    let interrupted = opts.stop.is_stopped();
    let outcome = if items.failed > 0
        || !source_errors.is_empty()
        || interrupted
        || items.complete + items.failed != items.from_sources
    {
        Outcome::Incomplete
    } else if problems > 0 {
        Outcome::CompleteWithProblems
    } else {
        Outcome::Complete
    };
    let mut failures = tracker.failures();
    failures.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(RunReport {
        pipeline: p.name.clone(),
        outcome,
        exit_code: outcome.exit_code(),
        duration_seconds: started.elapsed().as_secs_f64(),
        items,
        nodes,
        failures,
        source_errors,
        interrupted,
        shard: opts.shard,
        peak_rss_bytes: crate::report::peak_rss_bytes(),
    })
}

/// Runs every node's preflight check at once. A plan checks only what it uses: the
/// sources' listings. A check that panics has failed (fail closed), never passed.
async fn preflight(p: &Pipeline, planning: bool) -> Result<(), RunError> {
    let mut checks = JoinSet::new();
    let mut names = HashMap::new();
    for n in &p.nodes {
        let name = n.spec.name.clone();
        let id = match &n.built {
            Built::Source(s) => {
                let s = s.clone();
                checks.spawn(async move { s.preflight().await }).id()
            }
            Built::Processor(_) if planning => continue,
            Built::Processor(x) => {
                let x = x.clone();
                checks.spawn(async move { x.preflight().await }).id()
            }
        };
        names.insert(id, name);
    }
    let mut failed = Vec::new();
    while let Some(r) = checks.join_next_with_id().await {
        let (id, error) = match r {
            Ok((_, Ok(()))) => continue,
            Ok((id, Err(e))) => (id, e),
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
            key: f.key,
            size: f.listed.get("size").and_then(|v| v.as_u64()).unwrap_or(0),
            etag: f.listed.get("etag").and_then(|v| v.as_str()).map(String::from),
            status,
            delete_at_source: deletes && status != PlanStatus::Error,
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
            tracker.record_complete();
            continue;
        };
        let Ok(permit) = limit.clone().acquire_owned().await else { break };
        let tracker = tracker.clone();
        acks.spawn(async move {
            match AssertUnwindSafe(source.ack(&f.listed)).catch_unwind().await {
                Ok(Ok(())) => tracker.record_complete(),
                Ok(Err(e)) => {
                    tracing::warn!(node = %name, key = ?f.key, error = ?e, "outputs written but not acknowledged");
                    tracker.record_failure(ItemFailure {
                        key: f.key,
                        node: name,
                        reason: format!("outputs are written, but recording the object as done failed: {e}"),
                    });
                }
                Err(_) => tracker.record_failure(ItemFailure {
                    key: f.key,
                    node: name,
                    reason: "internal error: acknowledging panicked".into(),
                }),
            }
            drop(permit);
        });
        while acks.try_join_next().is_some() {}
    }
    while acks.join_next().await.is_some() {}
}

/// A running progress display; `finish` stops it.
struct ProgressTask {
    done: tokio::sync::oneshot::Sender<()>,
    handle: tokio::task::JoinHandle<()>,
}

impl ProgressTask {
    async fn finish(self) {
        let _ = self.done.send(());
        let _ = self.handle.await;
    }
}

fn start_progress(
    p: &Pipeline,
    opts: &RunOptions,
    node_stats: &[Arc<NodeStats>],
    port_stats: &[IndexMap<&'static str, Arc<PortStats>>],
    tracker: &Arc<Tracker>,
) -> Option<ProgressTask> {
    let mode = match opts.progress {
        Progress::Auto if std::io::stderr().is_terminal() => Progress::Bars,
        Progress::Auto => Progress::Log,
        m => m,
    };
    if mode == Progress::Off {
        return None;
    }
    let names: Vec<String> = p.nodes.iter().map(|n| n.spec.name.clone()).collect();
    let sources: Vec<bool> = p.nodes.iter().map(|n| matches!(n.built, Built::Source(_))).collect();
    let node_stats = node_stats.to_vec();
    let port_stats = port_stats.to_vec();
    let tracker = tracker.clone();
    let (done, mut done_rx) = tokio::sync::oneshot::channel();

    let line = move |i: usize| -> (u64, String) {
        let st = &node_stats[i];
        let ports: Vec<String> =
            port_stats[i].iter().map(|(k, v)| format!("{k}={}", v.items.load(Ordering::Relaxed))).collect();
        let count = if sources[i] {
            port_stats[i].values().map(|v| v.items.load(Ordering::Relaxed)).sum()
        } else {
            st.received.load(Ordering::Relaxed)
        };
        (count, format!("in flight {}  {}", st.in_flight.load(Ordering::Relaxed), ports.join(" ")))
    };

    let handle = if mode == Progress::Bars {
        let multi = indicatif::MultiProgress::new();
        let style =
            indicatif::ProgressStyle::with_template("{prefix:>16} {spinner} {pos:>9} items  {per_sec:>12}  {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner());
        let bars: Vec<indicatif::ProgressBar> = names
            .iter()
            .map(|n| {
                let b = multi.add(indicatif::ProgressBar::new_spinner());
                b.set_style(style.clone());
                b.set_prefix(n.clone());
                b
            })
            .collect();
        tokio::spawn(async move {
            loop {
                for (i, b) in bars.iter().enumerate() {
                    let (count, msg) = line(i);
                    b.set_position(count);
                    b.set_message(msg);
                    b.tick();
                }
                tokio::select! {
                    _ = &mut done_rx => break,
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
            }
            for b in &bars {
                b.finish();
            }
        })
    } else {
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = &mut done_rx => break,
                    _ = tokio::time::sleep(Duration::from_secs(10)) => {}
                }
                for (i, n) in names.iter().enumerate() {
                    let (count, msg) = line(i);
                    tracing::info!(node = %n, items = count, "progress: {msg}");
                }
                tracing::info!(
                    complete = tracker.complete.load(Ordering::Relaxed),
                    failed = tracker.failed.load(Ordering::Relaxed),
                    "progress: objects finished"
                );
            }
        })
    };
    Some(ProgressTask { done, handle })
}
