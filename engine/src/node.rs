//! The contract between the engine and a node kind.
//!
//! A kind is registered once ([`NodeKind`]); for each node of that kind in a spec, the
//! engine hands it the node's settings and gets back something that runs: a [`Source`]
//! that produces items, or a [`Node`] that processes one item at a time and sends it on
//! through named output ports ([`Outputs::emit`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use indexmap::IndexMap;
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use crate::body::{Body, Spool};
use crate::spec::{Defaults, StoreSpec};
use crate::store::Store;
use crate::template::KeyTemplate;

/// An item's metadata: `key`, `name`, `size`, `etag`, ... plus what nodes add
/// (`msg_date`, `signature`, `reason`). Templates read it.
pub type Meta = serde_json::Map<String, serde_json::Value>;

/// One object travelling through the pipeline.
#[derive(Debug, Clone)]
pub struct Item {
    pub meta: Meta,
    pub body: Option<Body>,
    lineage: Arc<Lineage>,
}

impl Item {
    /// The source key this item came from.
    pub fn source_key(&self) -> &str {
        &self.lineage.source_key
    }
    pub fn get_str(&self, k: &str) -> Option<&str> {
        self.meta.get(k).and_then(|v| v.as_str())
    }
    pub fn key(&self) -> &str {
        self.get_str("key").unwrap_or(&self.lineage.source_key)
    }
    pub fn name(&self) -> &str {
        self.get_str("name").unwrap_or_else(|| self.key().rsplit('/').next().unwrap_or(""))
    }
    pub fn set(&mut self, k: &str, v: impl Into<serde_json::Value>) {
        self.meta.insert(k.to_string(), v.into());
    }

    /// In a plan: this item would be written by `node` to `store` at `key`, or, when the
    /// key needs values only the content gives, `Err(those variables)`.
    pub fn plan_write(&self, node: &str, store: &str, key: Result<String, Vec<String>>) {
        let (key, needs) = match key {
            Ok(k) => (Some(k), Vec::new()),
            Err(vars) => (None, vars),
        };
        if let Ok(mut t) = self.lineage.trail.lock() {
            t.writes.push(PlannedWrite { node: node.to_string(), store: store.to_string(), key, needs });
        }
    }

    /// In a plan: something worth knowing about this item's path ("not scanned in a plan").
    pub fn plan_note(&self, note: impl Into<String>) {
        if let Ok(mut t) = self.lineage.trail.lock() {
            let note = note.into();
            if !t.notes.contains(&note) {
                t.notes.push(note);
            }
        }
    }

    pub(crate) fn plan_visit(&self, node: &str) {
        if let Ok(mut t) = self.lineage.trail.lock() {
            t.route.push(node.to_string());
        }
    }
}

/// Where an object went (or, in a plan, would go): the nodes it passed, what it was (or
/// would be) written where, and notes.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Trail {
    pub route: Vec<String>,
    pub writes: Vec<PlannedWrite>,
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct PlannedWrite {
    pub node: String,
    pub store: String,
    /// The destination key; `None` when it needs the content (see `needs`).
    pub key: Option<String>,
    /// Template variables only the content gives (`msg_date`): `plan --deep` resolves them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub needs: Vec<String>,
}

/// Ties every copy of an item back to the source object it came from. When the last copy
/// is dropped, every output of the object is durable (sinks send an item on only once it
/// is written), so the object is finished: complete if no node failed it, and then
/// acknowledged to its source ([`Source::ack`]).
#[derive(Debug)]
struct Lineage {
    source_key: String,
    /// The source node (its index in the pipeline) and the metadata it listed the object with.
    source: usize,
    listed: Meta,
    failure: Mutex<Option<ItemFailure>>,
    trail: Mutex<Trail>,
    tracker: Arc<Tracker>,
    /// The object's share of `max_bytes_in_flight`, given back when the last copy goes.
    admitted: std::sync::OnceLock<OwnedSemaphorePermit>,
}

impl Drop for Lineage {
    fn drop(&mut self) {
        let failure = self.failure.lock().map(|mut f| f.take()).unwrap_or(None);
        let trail = self.trail.lock().map(|mut t| std::mem::take(&mut *t)).unwrap_or_default();
        self.tracker.finished(Finished {
            source: self.source,
            key: std::mem::take(&mut self.source_key),
            listed: std::mem::take(&mut self.listed),
            failure,
            trail,
            already_done: false,
        });
    }
}

/// A source object whose last copy is gone (or, in a plan, one skipped as done).
#[derive(Debug)]
pub(crate) struct Finished {
    pub source: usize,
    pub key: String,
    pub listed: Meta,
    pub failure: Option<ItemFailure>,
    pub trail: Trail,
    pub already_done: bool,
}

/// An item that did not get through: which object, where, and why.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ItemFailure {
    pub key: String,
    pub node: String,
    pub reason: String,
}

/// Counts source objects as they finish, and hands finished ones to the executor, which
/// acknowledges them to their source before counting them complete.
#[derive(Debug, Default)]
pub struct Tracker {
    pub started: AtomicU64,
    pub complete: AtomicU64,
    pub failed: AtomicU64,
    /// Objects the sources skipped because an earlier run finished them.
    pub skipped_done: AtomicU64,
    /// Set when the run gives up on the items still in flight (shutdown grace period over):
    /// an object finishing from then on is unprocessed, never acknowledged.
    pub(crate) abandoning: std::sync::atomic::AtomicBool,
    failures: Mutex<Vec<ItemFailure>>,
    pub(crate) finished_tx: Mutex<Option<mpsc::UnboundedSender<Finished>>>,
    /// Set in plans: objects skipped as done are reported one by one too.
    pub(crate) planning: std::sync::atomic::AtomicBool,
}

impl Tracker {
    fn finished(&self, mut f: Finished) {
        if f.failure.is_none() && self.abandoning.load(Ordering::SeqCst) {
            f.failure = Some(ItemFailure {
                key: f.key.clone(),
                node: String::new(),
                reason: "abandoned at shutdown (grace period over); a rerun processes it".into(),
            });
        }
        let tx = self.finished_tx.lock().ok().and_then(|t| t.clone());
        if self.planning.load(Ordering::Relaxed) {
            // Plans count nothing here: the planner sees every object, failed or not.
            if let Some(tx) = tx {
                let _ = tx.send(f);
            }
            return;
        }
        match (f.failure.take(), tx) {
            (Some(failure), _) => self.record_failure(failure),
            (None, Some(tx)) => {
                if let Err(mpsc::error::SendError(f)) = tx.send(f) {
                    self.record_failure(ItemFailure {
                        key: f.key,
                        node: String::new(),
                        reason: "finished after the run closed".into(),
                    });
                }
            }
            (None, None) => self.record_complete(),
        }
    }
    pub(crate) fn record_complete(&self) {
        self.complete.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn record_failure(&self, f: ItemFailure) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut v) = self.failures.lock() {
            v.push(f);
        }
    }
    pub fn failures(&self) -> Vec<ItemFailure> {
        self.failures.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

/// Why a node could not process an item. The item is then reported as unprocessed and
/// the run as incomplete; nothing is sent on, so nothing unchecked reaches a sink.
#[derive(Debug, Clone)]
pub struct ItemError {
    pub reason: String,
}

impl ItemError {
    pub fn new(reason: impl Into<String>) -> Self {
        Self { reason: reason.into() }
    }
}

impl std::fmt::Display for ItemError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)
    }
}

/// An output port as a kind declares it.
#[derive(Debug, Clone, Copy)]
pub struct PortDecl {
    pub name: &'static str,
    /// Items on this port may never be dropped silently: validation requires a consumer.
    pub must_route: bool,
    /// Items on this port are problems (infected, unparseable): a run that routed any
    /// ends with the "complete with problems" exit code.
    pub problem: bool,
    pub doc: &'static str,
}

/// Whether a kind produces items or processes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Source,
    Processor,
}

/// A node kind: its name, its ports, its settings' schema, and how to build a node.
pub trait NodeKind: Send + Sync {
    fn name(&self) -> &'static str;
    /// One line for `--help`, the schema and the README.
    fn summary(&self) -> &'static str;
    fn role(&self) -> Role;
    fn ports(&self) -> &'static [PortDecl];
    /// True for kinds whose work is CPU, not waiting (parsing, transforming): unless the
    /// spec sets the node's `concurrency`, it runs at most one item per CPU core, since
    /// more would only hold more items in memory.
    fn cpu_bound(&self) -> bool {
        false
    }
    /// The port a bare `input: node` refers to; none when the kind has several ports and
    /// the spec must name one (`scan.clean`).
    fn default_port(&self) -> Option<&'static str> {
        match self.ports() {
            [one] => Some(one.name),
            _ => None,
        }
    }
    /// JSON Schema of the kind's own settings (see [`crate::schema::config_schema`]).
    fn schema(&self) -> schemars::Schema;
    /// Checks the settings and builds a runnable node. Does no I/O: plans build too.
    fn build(&self, ctx: &BuildContext, config: serde_json::Value) -> Result<Built, ConfigError>;
}

/// What [`NodeKind::build`] returns.
#[derive(Clone)]
pub enum Built {
    Source(Arc<dyn Source>),
    Processor(Arc<dyn Node>),
}

/// Facts about the whole run, for nodes that act at its end (alerts).
#[derive(Debug, Clone, Default)]
pub struct RunFacts {
    pub pipeline: String,
    /// Objects the sources produced.
    pub source_items: u64,
    /// Objects the sources skipped because an earlier run finished them.
    pub skipped_done: u64,
    pub failed_items: u64,
    /// Items routed to problem ports (quarantine, dead letter).
    pub problem_items: u64,
}

#[async_trait]
pub trait Source: Send + Sync {
    /// Checks what the source needs (a store reachable, credentials accepted) before any
    /// item moves.
    async fn preflight(&self) -> Result<(), String> {
        Ok(())
    }
    /// Produces items with [`Outputs::new_item`] and [`Outputs::emit`] until exhausted or
    /// until `ctx.stop` is set, skipping objects outside `ctx.shard` and (unless
    /// `ctx.reprocess`) objects an earlier run finished.
    async fn run(&self, out: &Outputs, ctx: &SourceContext) -> Result<(), String>;
    /// Called once per object after every output of it is durable, before it is counted
    /// complete: record it as done, delete it at a source that deletes. An error leaves
    /// the object unprocessed (a rerun does it again). `listed` is the metadata the source
    /// gave the object.
    async fn ack(&self, _listed: &Meta) -> Result<(), String> {
        Ok(())
    }
    /// Whether `ack` deletes the object at the source (plans count the deletes).
    fn deletes_on_ack(&self) -> bool {
        false
    }
}

/// What a source is told about the run.
#[derive(Debug, Clone, Default)]
pub struct SourceContext {
    pub stop: Stop,
    /// This process's share of the objects: `(index, count)`.
    pub shard: Option<Shard>,
    /// Process objects even when an earlier run finished them.
    pub reprocess: bool,
    /// `run --plan`: only these objects, and only if unchanged since planning.
    pub only: Option<Arc<Planned>>,
}

/// The objects a saved plan names, by source node: key -> (size, etag) as listed when
/// planning.
#[derive(Debug, Default)]
pub struct Planned {
    pub objects: std::collections::HashMap<String, std::collections::HashMap<String, (u64, Option<String>)>>,
    /// (source, key) met by this run's listings, to report planned objects that are gone.
    pub seen: Mutex<std::collections::HashSet<(String, String)>>,
}

/// One of `count` disjoint shares of the objects, by a stable hash of the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl Shard {
    /// Whether `key` belongs to this shard: FNV-1a of the key's bytes, modulo the count.
    /// Stable across processes, versions and machines (unlike std's randomised hasher).
    pub fn owns(&self, key: &str) -> bool {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in key.as_bytes() {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h % u64::from(self.count.max(1)) == u64::from(self.index)
    }
}

impl std::str::FromStr for Shard {
    type Err = String;
    /// `INDEX/COUNT`, as `2/4`.
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("`{s}`: a shard is INDEX/COUNT with 0 <= INDEX < COUNT, as `0/4`");
        let (i, c) = s.split_once('/').ok_or_else(bad)?;
        let index: u32 = i.trim().parse().map_err(|_| bad())?;
        let count: u32 = c.trim().parse().map_err(|_| bad())?;
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

#[async_trait]
pub trait Node: Send + Sync {
    async fn preflight(&self) -> Result<(), String> {
        Ok(())
    }
    /// Processes one item and sends it (or what it became) on. Several calls run at once,
    /// up to the node's concurrency.
    async fn process(&self, item: Item, out: &Outputs) -> Result<(), ItemError>;
    /// What `process` would do, with no side effect: no write, no delete, no scan, no
    /// alert. Reads are allowed only when `deep` (`plan --deep`). Sinks record their
    /// destination with [`Item::plan_write`]; nodes that cannot know what they would decide
    /// say what they assume with [`Item::plan_note`].
    async fn preview(&self, item: Item, out: &Outputs, deep: bool) -> Result<(), ItemError>;
    /// Called once after every item has finished.
    async fn finish(&self, _facts: &RunFacts) {}
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

/// Counters of one output port.
#[derive(Debug, Default)]
pub struct PortStats {
    pub items: AtomicU64,
    pub bytes: AtomicU64,
}

/// A node's output ports and where each leads. Shared by the node's concurrent tasks;
/// the downstream channels close when the last copy is dropped.
pub struct Outputs {
    node: String,
    /// The node's index in the pipeline (sources stamp it on their items).
    index: usize,
    ports: IndexMap<&'static str, Route>,
    spool: Spool,
    tracker: Arc<Tracker>,
    retries: Arc<AtomicU64>,
    /// Sources only: `max_bytes_in_flight`, in KiB permits.
    budget: Option<ByteBudget>,
}

/// `defaults.max_bytes_in_flight` as a semaphore of KiB: a source's item takes its listed
/// size (at most the spool threshold, at most the whole budget) before it is sent on.
#[derive(Clone)]
pub(crate) struct ByteBudget {
    semaphore: Arc<Semaphore>,
    total_kib: u32,
    spool_threshold: u64,
}

impl ByteBudget {
    pub(crate) fn new(max_bytes: u64, spool_threshold: u64) -> Self {
        let total_kib = (max_bytes / 1024).clamp(1, u64::from(u32::MAX >> 4)) as u32;
        Self { semaphore: Arc::new(Semaphore::new(total_kib as usize)), total_kib, spool_threshold }
    }

    /// The KiB an item takes: its listed `size` (1 KiB when unknown or smaller).
    fn charge(&self, item: &Item) -> u32 {
        let size = item.meta.get("size").and_then(|v| v.as_u64()).unwrap_or(0).min(self.spool_threshold);
        (size.div_ceil(1024).max(1)).min(u64::from(self.total_kib)) as u32
    }
}

struct Route {
    consumers: Vec<mpsc::Sender<Item>>,
    stats: Arc<PortStats>,
}

/// Returned when the downstream nodes are gone (the run is being torn down).
#[derive(Debug)]
pub struct Closed;

/// Lets a node write `out.emit(port, item).await?`: an item that cannot be sent on is
/// left unprocessed.
impl From<Closed> for ItemError {
    fn from(_: Closed) -> Self {
        ItemError::new("run is shutting down")
    }
}

impl Outputs {
    pub(crate) fn new(
        node: String,
        index: usize,
        ports: IndexMap<&'static str, (Vec<mpsc::Sender<Item>>, Arc<PortStats>)>,
        spool: Spool,
        tracker: Arc<Tracker>,
        retries: Arc<AtomicU64>,
        budget: Option<ByteBudget>,
    ) -> Self {
        let ports = ports.into_iter().map(|(k, (consumers, stats))| (k, Route { consumers, stats })).collect();
        Self { node, index, ports, spool, tracker, retries, budget }
    }

    /// Whether this is a plan (sources must not delete anything then).
    pub fn planning(&self) -> bool {
        self.tracker.planning.load(Ordering::Relaxed)
    }

    /// Counts retries of transient failures, for the run report.
    pub fn retried(&self, n: usize) {
        self.retries.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Counts an object a source skipped because an earlier run finished it.
    pub fn skipped_done(&self, source_key: &str, listed: Meta) {
        self.tracker.skipped_done.fetch_add(1, Ordering::Relaxed);
        if self.tracker.planning.load(Ordering::Relaxed) {
            self.tracker.finished(Finished {
                source: self.index,
                key: source_key.to_string(),
                listed,
                failure: None,
                trail: Trail::default(),
                already_done: true,
            });
        }
    }

    /// Reports an object the source will not process, with the reason (it changed since
    /// the plan was made, it is gone): counted unprocessed.
    pub fn reject(&self, source_key: &str, listed: Meta, reason: &str) {
        let item = self.new_item(source_key, listed);
        mark_failed(&item, &self.node, reason);
    }

    /// Where bodies spool; nodes that read objects need it.
    pub fn spool(&self) -> &Spool {
        &self.spool
    }

    /// Starts a new item for a source object.
    pub fn new_item(&self, source_key: &str, meta: Meta) -> Item {
        self.tracker.started.fetch_add(1, Ordering::Relaxed);
        Item {
            meta: meta.clone(),
            body: None,
            lineage: Arc::new(Lineage {
                source_key: source_key.to_string(),
                source: self.index,
                listed: meta,
                failure: Mutex::new(None),
                trail: Mutex::new(Trail::default()),
                tracker: self.tracker.clone(),
                admitted: std::sync::OnceLock::new(),
            }),
        }
    }

    /// Sends an item out of `port`: to every consumer (a copy each), or nowhere if the
    /// port is not routed, which ends the item's path there. Waits while consumers are
    /// full (backpressure). A source's new item first waits for its share of
    /// `max_bytes_in_flight`.
    pub async fn emit(&self, port: &str, item: Item) -> Result<(), Closed> {
        if let Some(budget) = &self.budget {
            if item.lineage.admitted.get().is_none() {
                let permit =
                    budget.semaphore.clone().acquire_many_owned(budget.charge(&item)).await.map_err(|_| Closed)?;
                let _ = item.lineage.admitted.set(permit);
            }
        }
        let Some(route) = self.ports.get(port) else {
            // A kind emitting on a port it did not declare is a bug in the kind.
            mark_failed(&item, &self.node, &format!("internal error: undeclared port `{port}`"));
            return Ok(());
        };
        route.stats.items.fetch_add(1, Ordering::Relaxed);
        route.stats.bytes.fetch_add(item.body.as_ref().map(|b| b.len()).unwrap_or(0), Ordering::Relaxed);
        if let Some((last, rest)) = route.consumers.split_last() {
            for tx in rest {
                tx.send(item.clone()).await.map_err(|_| Closed)?;
            }
            last.send(item).await.map_err(|_| Closed)?;
        }
        Ok(())
    }
}

/// Records that `node` could not process `item`; the source object is reported as failed
/// when its last copy is dropped.
pub(crate) fn mark_failed(item: &Item, node: &str, reason: &str) {
    if let Ok(mut f) = item.lineage.failure.lock() {
        if f.is_none() {
            *f = Some(ItemFailure {
                key: item.lineage.source_key.clone(),
                node: node.to_string(),
                reason: reason.to_string(),
            });
        }
    }
}

/// A problem in a node's or store's settings, at a path relative to the node or store.
#[derive(Debug, Clone)]
pub struct ConfigError {
    /// Dotted path below the node (`key`, `retry.attempts`); empty for the node itself.
    pub path: String,
    pub message: String,
}

impl ConfigError {
    pub fn at(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self { path: path.into(), message: message.into() }
    }
}

/// Deserializes a kind's settings, keeping the path of the first bad value.
pub fn parse_config<T: DeserializeOwned>(config: serde_json::Value) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(config).map_err(|e| {
        let path = e.path().to_string();
        let message = e.inner().to_string();
        // For an unknown field, point at the field itself.
        let path = match (path.as_str(), unknown_field(&message)) {
            (".", Some(f)) => f,
            (p, Some(f)) if p == f || p.ends_with(&format!(".{f}")) => p.to_string(),
            (p, Some(f)) => format!("{p}.{f}"),
            (".", None) => String::new(),
            (p, None) => p.to_string(),
        };
        ConfigError { path, message }
    })
}

pub(crate) fn unknown_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    Some(rest.split('`').next()?.to_string())
}

/// What a kind may use while building a node.
pub struct BuildContext<'a> {
    /// The pipeline's `name`.
    pub pipeline: &'a str,
    pub node: &'a str,
    pub defaults: &'a Defaults,
    pub stores: &'a IndexMap<String, (StoreSpec, Arc<dyn Store>)>,
}

impl BuildContext<'_> {
    /// The store named `name`, or an error listing the ones that exist.
    pub fn store(&self, field: &str, name: &str) -> Result<Arc<dyn Store>, ConfigError> {
        self.stores.get(name).map(|(_, s)| s.clone()).ok_or_else(|| {
            let known: Vec<&str> = self.stores.keys().map(|s| s.as_str()).collect();
            ConfigError::at(
                field,
                format!(
                    "unknown store `{name}`; the spec's stores are: {}",
                    if known.is_empty() { "(none)".into() } else { known.join(", ") }
                ),
            )
        })
    }

    /// Compiles a key template, or says what is wrong with it.
    pub fn template(&self, field: &str, source: &str) -> Result<KeyTemplate, ConfigError> {
        KeyTemplate::new(source).map_err(|e| ConfigError::at(field, format!("bad template {source:?}: {e}")))
    }
}

/// Opens stores by URL scheme. Implemented by `dqpipe-plugins`.
pub trait StoreOpener: Send + Sync {
    /// Checks the store's settings and returns a handle. No I/O.
    fn open(&self, spec: &StoreSpec) -> Result<Arc<dyn Store>, ConfigError>;
    /// JSON Schema of a store entry.
    fn schema(&self) -> schemars::Schema;
}

/// Every kind and store scheme the binary knows.
pub struct Registry {
    pub kinds: Vec<Arc<dyn NodeKind>>,
    pub stores: Arc<dyn StoreOpener>,
}

impl Registry {
    pub fn kind(&self, name: &str) -> Option<&Arc<dyn NodeKind>> {
        self.kinds.iter().find(|k| k.name() == name)
    }
    pub fn kind_names(&self) -> Vec<&'static str> {
        self.kinds.iter().map(|k| k.name()).collect()
    }
}
