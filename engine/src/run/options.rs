//! How to run a pipeline: the options `run` and `plan` take, and the concurrency each
//! node runs with once they are applied.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::api::{Built, Planned, Shard, Stop};
use crate::plan::PlannedObject;
use crate::run::stats::LiveStats;
use crate::spec::load::Pipeline;
use crate::spec::{Concurrency, NodeConcurrency};

/// How to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Replaces the spec's default concurrency, and fixes the adaptive one (nodes that set
    /// their own keep it): `--concurrency N`.
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
    /// Where the report goes (`--report`), for alerts to say.
    pub report_location: Option<String>,
    /// Recorded with every object the run writes, so that a second object of the same run
    /// that maps to the same key is refused even under `reprocess`. By default the start
    /// time and the process id: `20261128T132005Z-4242`.
    pub run_id: String,
    /// Run, or only show what a run would do.
    pub mode: Mode,
    /// `run --plan`: only the planned objects.
    pub only: Option<Arc<Planned>>,
    /// Where a plan sends each object as it is planned.
    pub plan_sink: Option<mpsc::UnboundedSender<PlannedObject>>,
    /// Told of every item every node sends, with the node and port: how `dqpipe test`
    /// sees which way each object went. None in runs.
    pub tap: Option<Tap>,
}

pub use crate::run::outputs::Tap;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Mode {
    #[default]
    Run,
    /// Lists for real; nodes preview (no write, delete, scan or alert); `deep` lets them
    /// read objects to resolve what depends on content. With `preflight`, every node's
    /// preflight check runs first, as a run's would (all are read-only: a listing's first
    /// page, a HEAD on each written store with its own credentials, the scanner's PING,
    /// VERSION and canary); without, only the sources'.
    Plan { deep: bool, preflight: bool },
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
            run_id: new_run_id(),
            report_location: None,
            mode: Mode::Run,
            only: None,
            plan_sink: None,
            tap: None,
        }
    }
}

/// The start time (UTC, to the second) and the process id: unique per process, and
/// readable in an object's metadata.
pub fn new_run_id() -> String {
    format!("{}-{}", chrono::Utc::now().format("%Y%m%dT%H%M%SZ"), std::process::id())
}

impl Pipeline {
    /// The concurrency each node runs with, after the options' overrides: a number set
    /// for the node (`--concurrency NODE=N`, then the spec's), else `--concurrency N` (a
    /// hand-set number for every node), else adaptive for the kinds that wait on requests
    /// (or a node set `adaptive`), else `defaults.concurrency` (at most one per core for
    /// CPU-bound kinds).
    pub fn effective_concurrency(&self, opts: &RunOptions) -> Vec<Concurrency> {
        let adaptive = Concurrency::Adaptive {
            start: self.defaults.concurrency.min(self.defaults.max_concurrency),
            max: self.defaults.max_concurrency,
        };
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        self.nodes
            .iter()
            .map(|n| {
                if matches!(n.built, Built::Source(_)) {
                    return Concurrency::Fixed(1);
                }
                if let Some(&set) = opts.node_concurrency.get(&n.spec.name) {
                    return Concurrency::Fixed(set.max(1));
                }
                let default = opts.default_concurrency.unwrap_or(self.defaults.concurrency).max(1);
                match (n.spec.concurrency, opts.default_concurrency) {
                    (Some(NodeConcurrency::Fixed(set)), _) => Concurrency::Fixed(set.max(1)),
                    (Some(NodeConcurrency::Adaptive), _) => adaptive,
                    (None, None) if n.kind.adaptive() => adaptive,
                    (None, _) if n.kind.cpu_bound() => Concurrency::Fixed(default.min(cores)),
                    (None, _) => Concurrency::Fixed(default),
                }
            })
            .collect()
    }
}
