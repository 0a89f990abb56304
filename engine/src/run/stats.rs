//! Live counters of a run, per node and per port, that anyone may read while it runs: the
//! CLI's progress display reads [`LiveStats::snapshot`]; the engine itself never prints.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use indexmap::IndexMap;

use crate::api::{Built, PortStats};
use crate::run::report::{AdaptiveReport, NodeReport, PortReport};
use crate::run::tracker::Tracker;
use crate::spec::load::Pipeline;
use crate::spec::Concurrency;

/// Counters of one node.
#[derive(Debug, Default)]
pub struct NodeStats {
    pub received: AtomicU64,
    pub in_flight: AtomicU64,
    pub max_in_flight: AtomicU64,
    /// How many items the node may work on at once now, and the lowest and highest that
    /// was during the run (they differ when its concurrency adapts).
    pub limit: AtomicU64,
    pub limit_lowest: AtomicU64,
    pub limit_highest: AtomicU64,
    /// The node's concurrency adapts (the limit moves).
    pub adaptive: AtomicBool,
    pub errors: AtomicU64,
    pub retries: Arc<AtomicU64>,
    /// Items that failed for a transient reason since the node's last success.
    pub failing_in_a_row: AtomicU64,
    /// A source: its listing has ended (nothing more will come from it).
    pub finished: AtomicBool,
    /// A source whose listing ended because the run was stopped (SIGTERM, a halt):
    /// what it had not listed yet is not counted anywhere.
    pub stopped_early: AtomicBool,
    /// The failures logged so far, by cause (one line per cause, then counts).
    pub(crate) said: crate::run::said::FailuresSaid,
}

/// The counters of a whole run, in the pipeline's node order.
#[derive(Debug)]
pub struct LiveStats {
    pub(crate) names: Vec<String>,
    pub(crate) sources: Vec<bool>,
    pub(crate) nodes: Vec<Arc<NodeStats>>,
    pub(crate) ports: Vec<IndexMap<&'static str, Arc<PortStats>>>,
    pub(crate) tracker: Arc<Tracker>,
    /// Why the run halted itself (`defaults.halt`), once it has.
    pub(crate) halted: Arc<std::sync::OnceLock<String>>,
    /// The preflight checks passed and the lease is held: items may move. A display
    /// draws nothing before, so a run that cannot start shows only why.
    pub(crate) started: tokio::sync::watch::Sender<bool>,
}

/// What the counters said at one moment.
#[derive(Debug, Clone, Default)]
pub struct StatsSnapshot {
    pub nodes: Vec<NodeSnapshot>,
    /// Source objects finished: complete, and not processed (failed for a transient
    /// reason, refused for good).
    pub complete: u64,
    pub failed: u64,
    pub refused: u64,
    /// Why the run halted itself, once it has.
    pub halted: Option<String>,
}

impl StatsSnapshot {
    /// A source's listing was stopped before its end: [`Self::listed`] is not the total.
    pub fn listing_cut(&self) -> bool {
        self.nodes.iter().any(|n| n.source && n.stopped_early)
    }
    /// Objects the sources sent into the run so far.
    pub fn listed(&self) -> u64 {
        self.nodes.iter().filter(|n| n.source).map(|n| n.items).sum()
    }
    /// Every source's listing has ended: [`Self::listed`] is the run's total.
    pub fn listing_done(&self) -> bool {
        self.nodes.iter().filter(|n| n.source).all(|n| n.finished)
    }
    /// Objects done with, whatever the outcome.
    pub fn finished(&self) -> u64 {
        self.complete + self.failed + self.refused
    }
}

#[derive(Debug, Clone, Default)]
pub struct NodeSnapshot {
    pub name: String,
    pub source: bool,
    /// Items the node received (a source: items it sent).
    pub items: u64,
    /// Bytes the node sent on, all ports together.
    pub bytes: u64,
    pub in_flight: u64,
    /// How many items it may work on at once now, and whether that adapts.
    pub limit: u64,
    pub adaptive: bool,
    pub ports: Vec<(String, u64)>,
    /// A source whose listing has ended.
    pub finished: bool,
    /// A source whose listing was stopped before its end.
    pub stopped_early: bool,
    /// Items the node could not process, and retries of transient failures.
    pub errors: u64,
    pub retries: u64,
}

impl LiveStats {
    /// Zeroed counters for every node and port of `p`.
    pub fn new(p: &Pipeline) -> Arc<Self> {
        Arc::new(Self {
            names: p.nodes.iter().map(|n| n.spec.name.clone()).collect(),
            sources: p.nodes.iter().map(|n| matches!(n.built, Built::Source(_))).collect(),
            nodes: p.nodes.iter().map(|_| Arc::default()).collect(),
            ports: p.nodes.iter().map(|n| n.ports.iter().map(|d| (d.name, Arc::default())).collect()).collect(),
            tracker: Arc::default(),
            halted: Arc::default(),
            started: tokio::sync::watch::channel(false).0,
        })
    }

    /// Each node's part of the run report, and the items sent to problem ports.
    pub(crate) fn node_reports(&self, p: &Pipeline, concurrency: &[Concurrency]) -> (Vec<NodeReport>, u64) {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut problems = 0;
        let mut nodes = Vec::new();
        for (i, n) in p.nodes.iter().enumerate() {
            let mut ports = IndexMap::new();
            for decl in &n.ports {
                let s = &self.ports[i][decl.name];
                let routed_to: Vec<String> = p.dag.consumers(&n.spec.name, decl.name).map(String::from).collect();
                // An unrouted problem port's items are counted as refused objects instead.
                problems += if decl.problem && !routed_to.is_empty() { load(&s.items) } else { 0 };
                let port =
                    PortReport { items: load(&s.items), bytes: load(&s.bytes), routed_to, problem: decl.problem };
                ports.insert(decl.name.to_string(), port);
            }
            let st = &self.nodes[i];
            nodes.push(NodeReport {
                name: n.spec.name.clone(),
                kind: n.spec.kind.clone(),
                source: self.sources[i],
                concurrency: concurrency[i].start(),
                adaptive: match concurrency[i] {
                    Concurrency::Fixed(_) => None,
                    Concurrency::Adaptive { max, .. } => Some(AdaptiveReport {
                        max,
                        lowest: load(&st.limit_lowest),
                        highest: load(&st.limit_highest),
                        last: load(&st.limit),
                    }),
                },
                received: load(&st.received),
                errors: load(&st.errors),
                max_in_flight: load(&st.max_in_flight),
                retries: load(&st.retries),
                ports,
                counters: IndexMap::new(),
            });
        }
        (nodes, problems)
    }

    /// Completes once the run has started moving items (its checks passed); never for a
    /// run that could not start.
    pub async fn started(&self) {
        let mut rx = self.started.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let nodes = (0..self.names.len())
            .map(|i| {
                let ports: Vec<(String, u64)> =
                    self.ports[i].iter().map(|(k, s)| (k.to_string(), load(&s.items))).collect();
                let sent: u64 = ports.iter().map(|(_, n)| n).sum();
                NodeSnapshot {
                    name: self.names[i].clone(),
                    source: self.sources[i],
                    items: if self.sources[i] { sent } else { load(&self.nodes[i].received) },
                    bytes: self.ports[i].values().map(|s| load(&s.bytes)).sum(),
                    in_flight: load(&self.nodes[i].in_flight),
                    limit: load(&self.nodes[i].limit),
                    adaptive: self.nodes[i].adaptive.load(Ordering::Relaxed),
                    ports,
                    finished: self.nodes[i].finished.load(Ordering::SeqCst),
                    stopped_early: self.nodes[i].stopped_early.load(Ordering::SeqCst),
                    errors: load(&self.nodes[i].errors),
                    retries: load(&self.nodes[i].retries),
                }
            })
            .collect();
        StatsSnapshot {
            nodes,
            complete: load(&self.tracker.complete),
            failed: load(&self.tracker.failed),
            refused: load(&self.tracker.refused),
            halted: self.halted.get().cloned(),
        }
    }
}
