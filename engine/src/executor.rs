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
    mark_failed, Built, ByteBudget, Finished, Item, ItemFailure, Node, Outputs, Planned, RunFacts, Shard, Source,
    SourceContext, Stop, Tracker,
};
use crate::plan::{PlanStatus, PlannedObject};
use crate::report::{ItemCounts, NodeReport, Outcome, PortReport, RunReport, SourceError};
use crate::stats::{LiveStats, NodeStats};

/// How to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Replaces the spec's default concurrency (nodes that set their own keep it).
    pub default_concurrency: Option<usize>,
    /// Per-node concurrency, over everything else.
    pub node_concurrency: HashMap<String, usize>,
    /// Counters to update as the run goes (a progress display reads them); the run makes
    /// its own when none are given.
    pub stats: Option<Arc<LiveStats>>,
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
            stats: None,
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

/// The run could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("preflight checks failed:\n{}", .0.iter().map(|(n, e)| format!("  {n}: {e}")).collect::<Vec<_>>().join("\n"))]
    Preflight(Vec<(String, String)>),
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

/// Runs the pipeline to the end and reports what happened: preflight, wiring, the nodes'
/// tasks, the drain (with the stop and its grace period), acknowledgements, the report.
pub async fn run(p: &Pipeline, opts: RunOptions) -> Result<RunReport, RunError> {
    let started = Instant::now();
    let planning = matches!(opts.mode, Mode::Plan { .. });
    // Everything a node needs must answer before any item moves. A stop (SIGTERM) during
    // the checks ends the run at once, with a report and nothing processed.
    tokio::select! {
        r = preflight(p, planning) => r?,
        () = opts.stop.stopped() => {
            tracing::warn!("stopped during the preflight checks: nothing was processed");
            return Ok(RunReport::stopped_before_start(p, &opts, started.elapsed().as_secs_f64()));
        }
    }
    let stats = opts.stats.clone().unwrap_or_else(|| LiveStats::new(p));
    let tracker = stats.tracker.clone();
    tracker.planning.store(planning, Ordering::Relaxed);
    let acker = start_acknowledgements(p, &opts, &tracker);
    let concurrency = p.effective_concurrency(&opts);
    let tasks = spawn_nodes(p, &opts, &stats, &concurrency);
    let source_errors = drain(tasks, &opts, &tracker).await;
    // Every item is gone; close the acknowledgements and wait for the last of them.
    if let Ok(mut t) = tracker.finished_tx.lock() {
        t.take();
    }
    let _ = acker.await;
    Ok(report(p, &opts, &stats, &concurrency, source_errors, started).await)
}

/// Starts the task that takes finished objects: a plan hands them to the planner, a run
/// acknowledges them to their sources.
fn start_acknowledgements(p: &Pipeline, opts: &RunOptions, tracker: &Arc<Tracker>) -> tokio::task::JoinHandle<()> {
    let (finished_tx, finished_rx) = mpsc::unbounded_channel();
    if let Ok(mut t) = tracker.finished_tx.lock() {
        *t = Some(finished_tx);
    }
    let named: Vec<(String, Built)> = p.nodes.iter().map(|n| (n.spec.name.clone(), n.built.clone())).collect();
    match (&opts.mode, opts.plan_sink.clone()) {
        (Mode::Plan { .. }, Some(sink)) => tokio::spawn(send_to_plan(named, finished_rx, sink)),
        _ => tokio::spawn(acknowledge(named, finished_rx, tracker.clone())),
    }
}

/// Wires every node's output ports to its consumers' bounded channels (one per processing
/// node, shared by all its inputs) and starts one task per node.
fn spawn_nodes(
    p: &Pipeline,
    opts: &RunOptions,
    stats: &Arc<LiveStats>,
    concurrency: &[usize],
) -> JoinSet<Option<SourceError>> {
    let spool =
        Spool { threshold: p.defaults.spool_threshold_bytes, dir: p.defaults.spool_dir.as_ref().map(Into::into) };
    let budget = ByteBudget::new(p.defaults.max_bytes_in_flight, p.defaults.spool_threshold_bytes);
    let mut senders: HashMap<&str, mpsc::Sender<Item>> = HashMap::new();
    let mut receivers: HashMap<&str, mpsc::Receiver<Item>> = HashMap::new();
    for n in p.nodes.iter().filter(|n| matches!(n.built, Built::Processor(_))) {
        let (tx, rx) = mpsc::channel(p.defaults.channel_capacity);
        senders.insert(&n.spec.name, tx);
        receivers.insert(&n.spec.name, rx);
    }
    let mut tasks = JoinSet::new();
    for (i, n) in p.nodes.iter().enumerate() {
        let ports = n
            .kind
            .ports()
            .iter()
            .map(|decl| {
                let consumers =
                    p.dag.consumers(&n.spec.name, decl.name).filter_map(|to| senders.get(to).cloned()).collect();
                (decl.name, (consumers, stats.ports[i][decl.name].clone()))
            })
            .collect();
        let out = Arc::new(Outputs::new(
            n.spec.name.clone(),
            i,
            ports,
            spool.clone(),
            stats.tracker.clone(),
            stats.nodes[i].retries.clone(),
            matches!(n.built, Built::Source(_)).then(|| budget.clone()),
        ));
        match &n.built {
            Built::Source(source) => {
                let ctx = SourceContext {
                    stop: opts.stop.clone(),
                    shard: opts.shard,
                    reprocess: opts.reprocess,
                    only: opts.only.clone(),
                };
                tasks.spawn(run_source(n.spec.name.clone(), source.clone(), out, ctx));
            }
            Built::Processor(node) => {
                let Some(rx) = receivers.remove(n.spec.name.as_str()) else { continue };
                let task = ProcessorTask {
                    name: n.spec.name.clone(),
                    node: node.clone(),
                    out,
                    rx,
                    limit: Arc::new(Semaphore::new(concurrency[i])),
                    stats: stats.nodes[i].clone(),
                    mode: opts.mode,
                };
                tasks.spawn(task.run());
            }
        }
    }
    // Only the Outputs (held by the tasks) keep senders now: channels close as upstream
    // nodes finish, and the run drains from sources to sinks.
    tasks
}

/// A source's task: lists and emits until done or stopped. A panic is a source error.
async fn run_source(
    name: String,
    source: Arc<dyn Source>,
    out: Arc<Outputs>,
    ctx: SourceContext,
) -> Option<SourceError> {
    match AssertUnwindSafe(source.run(&out, &ctx)).catch_unwind().await {
        Ok(Ok(())) => None,
        Ok(Err(error)) => {
            tracing::error!(node = %name, %error, "source stopped early");
            Some(SourceError { node: name, error })
        }
        Err(_) => Some(SourceError { node: name, error: "the source panicked".into() }),
    }
}

/// A processing node's task.
struct ProcessorTask {
    name: String,
    node: Arc<dyn Node>,
    out: Arc<Outputs>,
    rx: mpsc::Receiver<Item>,
    /// The node's `concurrency` permits.
    limit: Arc<Semaphore>,
    stats: Arc<NodeStats>,
    mode: Mode,
}

impl ProcessorTask {
    /// Takes an item whenever one of the node's `concurrency` permits is free, and works
    /// on each in its own tokio task; ends once its inputs closed and its items are done.
    async fn run(mut self) -> Option<SourceError> {
        let mode = self.mode;
        let mut running = JoinSet::new();
        loop {
            let Ok(permit) = self.limit.clone().acquire_owned().await else { break };
            let Some(item) = self.rx.recv().await else { break };
            self.stats.received.fetch_add(1, Ordering::Relaxed);
            let now = self.stats.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.stats.max_in_flight.fetch_max(now, Ordering::SeqCst);
            let (node, out, stats, name) = (self.node.clone(), self.out.clone(), self.stats.clone(), self.name.clone());
            running.spawn(async move {
                process_one(&name, node, &out, &stats, item, mode).await;
                stats.in_flight.fetch_sub(1, Ordering::SeqCst);
                drop(permit);
            });
            while running.try_join_next().is_some() {}
        }
        while running.join_next().await.is_some() {}
        None
    }
}

/// One item through one node. A failure or a panic is recorded against its source object,
/// which is then reported unprocessed: a panic fails closed.
async fn process_one(name: &str, node: Arc<dyn Node>, out: &Outputs, stats: &NodeStats, item: Item, mode: Mode) {
    // Kept so that a failure can be recorded against the object; a clone shares the body.
    let guard = item.clone();
    let r = match mode {
        Mode::Run => AssertUnwindSafe(node.process(item, out)).catch_unwind().await,
        Mode::Plan { deep } => {
            item.plan_visit(name);
            AssertUnwindSafe(node.preview(item, out, deep)).catch_unwind().await
        }
    };
    let reason = match r {
        Ok(Ok(())) => return,
        Ok(Err(e)) => e.reason,
        Err(_) => "internal error: the node panicked".to_string(),
    };
    stats.errors.fetch_add(1, Ordering::Relaxed);
    tracing::warn!(node = %name, key = ?guard.source_key(), reason = ?reason, "item not processed");
    mark_failed(&guard, name, &reason);
}

/// Waits for every task to end. Once stopped, items in flight get the grace period; then
/// the rest is abandoned: tasks are aborted and their items dropped unacknowledged (writes
/// are all-or-nothing, so nothing partial is left visible).
async fn drain(mut tasks: JoinSet<Option<SourceError>>, opts: &RunOptions, tracker: &Tracker) -> Vec<SourceError> {
    let mut source_errors = Vec::new();
    let mut grace_over = std::pin::pin!(async {
        opts.stop.stopped().await;
        tracing::warn!(
            grace_secs = opts.grace.as_secs_f64(),
            "stopping: listing ended, in-flight items have the grace period to finish"
        );
        tokio::time::sleep(opts.grace).await;
    });
    let mut abandoned = false;
    loop {
        tokio::select! {
            r = tasks.join_next() => match r {
                None => break,
                Some(Ok(Some(e))) => source_errors.push(e),
                Some(_) => {}
            },
            () = &mut grace_over, if !abandoned => {
                tracing::warn!("grace period over: abandoning the items still in flight");
                tracker.abandoning.store(true, Ordering::SeqCst);
                tasks.abort_all();
                abandoned = true;
            }
        }
    }
    source_errors
}

/// The run's report, after the end-of-run hooks (alerts; runs only, not plans).
async fn report(
    p: &Pipeline,
    opts: &RunOptions,
    stats: &LiveStats,
    concurrency: &[usize],
    source_errors: Vec<SourceError>,
    started: Instant,
) -> RunReport {
    let tracker = &stats.tracker;
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let mut nodes = Vec::new();
    let mut problems = 0;
    for (i, n) in p.nodes.iter().enumerate() {
        let mut ports = IndexMap::new();
        for decl in n.kind.ports() {
            let s = &stats.ports[i][decl.name];
            problems += if decl.problem { load(&s.items) } else { 0 };
            let routed_to = p.dag.consumers(&n.spec.name, decl.name).map(String::from).collect();
            let port = PortReport { items: load(&s.items), bytes: load(&s.bytes), routed_to, problem: decl.problem };
            ports.insert(decl.name.to_string(), port);
        }
        let st = &stats.nodes[i];
        nodes.push(NodeReport {
            name: n.spec.name.clone(),
            kind: n.spec.kind.clone(),
            source: matches!(n.built, Built::Source(_)),
            concurrency: concurrency[i],
            received: load(&st.received),
            errors: load(&st.errors),
            max_in_flight: load(&st.max_in_flight),
            retries: load(&st.retries),
            ports,
        });
    }
    let items = ItemCounts {
        from_sources: load(&tracker.started),
        complete: load(&tracker.complete),
        failed: load(&tracker.failed),
        problems,
        skipped_done: load(&tracker.skipped_done),
    };
    if !matches!(opts.mode, Mode::Plan { .. }) {
        let facts = RunFacts {
            pipeline: p.name.clone(),
            source_items: items.from_sources,
            skipped_done: items.skipped_done,
            failed_items: items.failed,
            problem_items: problems,
        };
        for n in &p.nodes {
            if let Built::Processor(x) = &n.built {
                x.finish(&facts).await;
            }
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
    RunReport {
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
    }
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
