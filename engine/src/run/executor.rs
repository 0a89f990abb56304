//! Runs a pipeline: one task group per node, bounded channels between nodes, per-node
//! concurrency, items streamed from listing to sinks.
//!
//! Shape of a run:
//! - every processing node gets one bounded `mpsc` channel that all its inputs send into;
//!   a full channel makes the sender wait (backpressure), so memory depends on channel
//!   capacity and concurrency, never on the number of objects;
//! - a node's task takes an item only when one of its `concurrency` permits is free, and
//!   runs each item in its own tokio task (CPU-heavy transforms use both cores); the
//!   permits of nodes that wait on requests adapt to how their items fare (`adaptive.rs`);
//! - when a node's inputs have all closed and its in-flight items are done, it drops its
//!   senders, which closes its consumers' channels: the run drains from sources to sinks;
//! - each source object is tracked through all its copies; it is complete when every copy
//!   reached the end of its path, failed if any node could not process it.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use futures::FutureExt;
use tokio::sync::{mpsc, watch};
use tokio::task::{AbortHandle, JoinSet};
use tracing::Instrument;

use crate::api::body::Spool;
use crate::api::item::mark_failed;
use crate::api::{Built, Context, Emitter, Item, Processor, Source};
use crate::run::acks::start_acknowledgements;
use crate::run::adaptive::Limit;
use crate::run::end::{report, Ended};
use crate::run::halt::Halt;
pub use crate::run::options::{Mode, RunOptions, DEFAULT_GRACE};
use crate::run::outputs::{ByteBudget, Route, Selection};
use crate::run::preflight::preflight;
pub use crate::run::preflight::RunError;
use crate::run::report::{RunReport, SourceError};
use crate::run::stats::{LiveStats, NodeStats};
use crate::run::tracker::Tracker;
use crate::spec::load::Pipeline;
use crate::spec::Concurrency;

/// Runs the pipeline to the end and reports what happened: preflight, wiring, the nodes'
/// tasks, the drain (with the stop and its grace period), acknowledgements, the report.
pub async fn run(p: &Pipeline, opts: RunOptions) -> Result<RunReport, RunError> {
    let (started, started_at) = (Instant::now(), chrono::Utc::now());
    let planning = matches!(opts.mode, Mode::Plan { .. });
    let sources_only = matches!(opts.mode, Mode::Plan { preflight: false, .. });
    // Everything a node needs must answer before any item moves. A stop (SIGTERM) during
    // the checks ends the run at once, with a report and nothing processed.
    tokio::select! {
        r = preflight(p, sources_only) => if let Err(e) = r {
            if !planning {
                crate::run::end::did_not_start(p, &e).await;
            }
            return Err(e);
        },
        () = opts.stop.stopped() => {
            tracing::warn!("stopped during the preflight checks: nothing was processed");
            return Ok(RunReport::stopped_before_start(&p.name, opts.shard, started.elapsed().as_secs_f64()));
        }
    }
    let leases = match crate::run::lease::take_all(p, &opts).await {
        Ok(leases) => leases,
        Err(e) => {
            crate::run::end::did_not_start(p, &e).await;
            return Err(e);
        }
    };
    let stats = opts.stats.clone().unwrap_or_else(|| LiveStats::new(p));
    stats.started.send_replace(true);
    let tracker = stats.tracker.clone();
    tracker.planning.store(planning, Ordering::Relaxed);
    let acker = start_acknowledgements(p, &opts, &tracker);
    let concurrency = p.effective_concurrency(&opts);
    let halt = Arc::new(Halt::new(opts.stop.clone(), p.defaults.halt.clone(), tracker.clone(), stats.halted.clone()));
    let tasks = spawn_nodes(p, &opts, &stats, &concurrency, &halt);
    let source_errors = drain(tasks, &opts, &tracker).await;
    for (name, node) in p.nodes.iter().zip(&stats.nodes) {
        node.said.flush(&name.spec.name);
    }
    // Every item is gone; close the acknowledgements and wait for the last of them.
    if let Ok(mut t) = tracker.finished_tx.lock() {
        t.take();
    }
    let _ = acker.await;
    let ended = Ended { source_errors, halted: halt.reason(), started, started_at };
    let report = report(p, &opts, &stats, &concurrency, ended).await;
    for lease in leases {
        lease.release().await;
    }
    Ok(report)
}

/// `max_bytes_in_flight`. An object is held whole in memory by a node that parses it: then
/// it counts at its full size times what that node's output grows to; otherwise at most
/// what stays in memory before spooling.
fn byte_budget(p: &Pipeline) -> ByteBudget {
    let whole = p.nodes.iter().any(|n| n.kind.reads_whole_body());
    let (cap, growth) = match whole {
        true => (u64::MAX, p.nodes.iter().map(|n| n.kind.body_growth()).max().unwrap_or(1)),
        false => (p.defaults.spool_threshold_bytes, 1),
    };
    ByteBudget::new(p.defaults.max_bytes_in_flight, cap, growth)
}

/// Wires every node's output ports to its consumers' bounded channels (one per processing
/// node, shared by all its inputs) and starts one task per node.
fn spawn_nodes(
    p: &Pipeline,
    opts: &RunOptions,
    stats: &Arc<LiveStats>,
    concurrency: &[Concurrency],
    halt: &Arc<Halt>,
) -> Tasks {
    let spool =
        Spool { threshold: p.defaults.spool_threshold_bytes, dir: p.defaults.spool_dir.as_ref().map(Into::into) };
    let budget = byte_budget(p);
    let mut senders: HashMap<&str, mpsc::Sender<Item>> = HashMap::new();
    let mut receivers: HashMap<&str, mpsc::Receiver<Item>> = HashMap::new();
    for n in p.nodes.iter().filter(|n| matches!(n.built, Built::Processor(_))) {
        let (tx, rx) = mpsc::channel(p.defaults.channel_capacity);
        senders.insert(&n.spec.name, tx);
        receivers.insert(&n.spec.name, rx);
    }
    let mut tasks = Tasks { set: JoinSet::new(), sources: Vec::new(), abandon: watch::channel(false).0 };
    let run_id: Arc<str> = opts.run_id.as_str().into();
    for (i, n) in p.nodes.iter().enumerate() {
        let ports = n
            .ports
            .iter()
            .map(|decl| {
                let consumers =
                    p.dag.consumers(&n.spec.name, decl.name).filter_map(|to| senders.get(to).cloned()).collect();
                let (stats, tap) = (stats.ports[i][decl.name].clone(), opts.tap.clone());
                (decl.name, Route { consumers, stats, problem: decl.problem, drops: decl.drops, tap })
            })
            .collect();
        let cx = Context {
            node: n.spec.name.clone(),
            spool: spool.clone(),
            retries: stats.nodes[i].retries.clone(),
            planning: matches!(opts.mode, Mode::Plan { .. }),
            run_id: run_id.clone(),
            reprocess: opts.reprocess,
            stop: opts.stop.clone(),
            shard: opts.shard,
        };
        let out = Arc::new(Emitter::new(
            n.spec.name.clone(),
            i,
            ports,
            stats.tracker.clone(),
            matches!(n.built, Built::Source(_))
                .then(|| (budget.clone(), Selection { shard: opts.shard, only: opts.only.clone() })),
        ));
        match &n.built {
            Built::Source(source) => {
                let listed = stats.nodes[i].clone();
                let task = run_source(source.clone(), out, cx, listed).in_current_span();
                tasks.sources.push(tasks.set.spawn(task));
            }
            Built::Processor(node) => {
                let Some(rx) = receivers.remove(n.spec.name.as_str()) else { continue };
                let task = ProcessorTask {
                    cx: Arc::new(cx),
                    node: node.clone(),
                    out,
                    rx,
                    limit: Limit::new(concurrency[i], stats.nodes[i].clone()),
                    stats: stats.nodes[i].clone(),
                    halt: halt.clone(),
                    mode: opts.mode,
                    abandon: tasks.abandon.subscribe(),
                };
                tasks.set.spawn(task.run().in_current_span());
            }
        }
    }
    // Only the Emitter (held by the tasks) keep senders now: channels close as upstream
    // nodes finish, and the run drains from sources to sinks.
    tasks
}

/// The nodes' tasks: the sources' to abort when the grace period is over, and the signal
/// that tells processing nodes to abandon their items.
struct Tasks {
    set: JoinSet<Option<SourceError>>,
    sources: Vec<AbortHandle>,
    abandon: watch::Sender<bool>,
}

/// A source's task: lists and emits until done or stopped. A panic is a source error.
async fn run_source(
    source: Arc<dyn Source>,
    out: Arc<Emitter>,
    cx: Context,
    stats: Arc<NodeStats>,
) -> Option<SourceError> {
    let name = cx.node.clone();
    let ran = AssertUnwindSafe(source.run(&out, &cx)).catch_unwind().await;
    // Whatever the outcome, nothing more comes from it: the display now knows the total,
    // or, stopped, that it does not.
    stats.stopped_early.store(cx.is_stopped(), Ordering::SeqCst);
    stats.finished.store(true, Ordering::SeqCst);
    match ran {
        Ok(Ok(())) => {
            if !cx.is_stopped() {
                out.report_vanished();
            }
            None
        }
        Ok(Err(error)) => {
            tracing::error!(node = %name, %error, "source stopped early");
            Some(SourceError { node: name, error: error.message })
        }
        Err(_) => Some(SourceError { node: name, error: "the source panicked".into() }),
    }
}

/// A processing node's task.
struct ProcessorTask {
    cx: Arc<Context>,
    node: Arc<dyn Processor>,
    out: Arc<Emitter>,
    rx: mpsc::Receiver<Item>,
    /// The node's `concurrency` permits, fixed or adaptive.
    limit: Arc<Limit>,
    stats: Arc<NodeStats>,
    halt: Arc<Halt>,
    mode: Mode,
    /// Set when the grace period is over: the items in flight are abandoned.
    abandon: watch::Receiver<bool>,
}

impl ProcessorTask {
    /// Takes an item whenever one of the node's `concurrency` permits is free, and works
    /// on each in its own tokio task; ends once its inputs closed and its items are done,
    /// or once told to abandon them: then each item's task is aborted and awaited, so
    /// every abandoned object is recorded failed before the report is made.
    async fn run(mut self) -> Option<SourceError> {
        let mut running = JoinSet::new();
        let mut abandon = self.abandon.clone();
        let abandoned = {
            let work = async {
                self.take_items(&mut running).await;
                while running.join_next().await.is_some() {}
                let ended = AssertUnwindSafe(self.node.end_of_input(&self.out, &self.cx)).catch_unwind().await;
                if ended.is_err() {
                    tracing::error!(node = %self.cx.node(), "the node panicked at the end of its input");
                    self.node.abandon();
                }
            };
            tokio::select! {
                () = work => false,
                _ = abandon.wait_for(|a| *a) => true,
            }
        };
        if abandoned {
            self.node.abandon();
            running.abort_all();
            self.rx.close();
            while self.rx.try_recv().is_ok() {}
            while running.join_next().await.is_some() {}
        }
        None
    }

    async fn take_items(&mut self, running: &mut JoinSet<()>) {
        let mode = self.mode;
        loop {
            let Some(mut permit) = self.limit.acquire().await else { break };
            let Some(item) = self.rx.recv().await else { break };
            permit.start();
            self.stats.received.fetch_add(1, Ordering::Relaxed);
            let now = self.stats.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.stats.max_in_flight.fetch_max(now, Ordering::SeqCst);
            let (node, out, stats, cx) = (self.node.clone(), self.out.clone(), self.stats.clone(), self.cx.clone());
            let halt = self.halt.clone();
            running.spawn(
                async move {
                    let failure = process_one(node, &out, &cx, &stats, item, mode).await;
                    halt.record(cx.node(), &stats.failing_in_a_row, failure.as_deref());
                    stats.in_flight.fetch_sub(1, Ordering::SeqCst);
                    permit.done(failure.is_some());
                }
                .in_current_span(),
            );
            while running.try_join_next().is_some() {}
        }
    }
}

/// One item through one node. A failure or a panic is recorded against its source object,
/// which is then reported unprocessed: a panic fails closed. Returns the reason of a
/// transient failure (or a panic).
async fn process_one(
    node: Arc<dyn Processor>,
    out: &Emitter,
    cx: &Context,
    stats: &NodeStats,
    item: Item,
    mode: Mode,
) -> Option<String> {
    let name = cx.node();
    // Kept so that a failure can be recorded against the object; a clone shares the body.
    let guard = item.clone();
    // A node with no output ports (an alert) is the end of the item's path: its object was
    // delivered there, not dropped.
    if out.has_no_ports() {
        item.lineage.delivered.store(true, Ordering::Relaxed);
    }
    let r = match mode {
        Mode::Run => AssertUnwindSafe(node.process(item, out, cx)).catch_unwind().await,
        Mode::Plan { deep, .. } => {
            item.plan_visit(name);
            AssertUnwindSafe(node.preview(item, out, cx, deep)).catch_unwind().await
        }
    };
    let (reason, permanent) = match r {
        Ok(Ok(())) => return None,
        Ok(Err(e)) => (e.reason, e.permanent),
        Err(_) => ("internal error: the node panicked".to_string(), false),
    };
    stats.errors.fetch_add(1, Ordering::Relaxed);
    stats.said.note(name, guard.source_key(), &reason, permanent);
    mark_failed(&guard, name, &reason, permanent);
    (!permanent).then_some(reason)
}

/// Waits for every task to end. Once stopped, items in flight get the grace period; then
/// the rest is abandoned: sources are aborted, processing nodes abort their items' tasks
/// and wait for them, so each abandoned object is recorded failed (a rerun processes it)
/// before the report (writes are all-or-nothing, so nothing partial is left visible).
async fn drain(mut tasks: Tasks, opts: &RunOptions, tracker: &Tracker) -> Vec<SourceError> {
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
            r = tasks.set.join_next() => match r {
                None => break,
                Some(Ok(Some(e))) => source_errors.push(e),
                Some(_) => {}
            },
            () = &mut grace_over, if !abandoned => {
                tracing::warn!("grace period over: abandoning the items still in flight");
                tracker.abandoning.store(true, Ordering::SeqCst);
                tasks.sources.iter().for_each(AbortHandle::abort);
                let _ = tasks.abandon.send(true);
                abandoned = true;
            }
        }
    }
    source_errors
}
