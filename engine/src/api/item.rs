//! An item: one source object travelling through the pipeline, its metadata and bytes,
//! and the lineage that ties every copy of it back to that object. What a node may do
//! with an item, and how it says it could not.

use std::sync::{Arc, Mutex};

use tokio::sync::OwnedSemaphorePermit;

use crate::api::body::Body;
use crate::api::store::ObjectInfo;

/// An item's metadata: `key`, `name`, `size`, `etag`, ... plus what nodes add
/// (`msg_date`, `signature`, `reason`). Templates read it.
pub type Meta = serde_json::Map<String, serde_json::Value>;

/// One object travelling through the pipeline.
#[derive(Debug, Clone)]
pub struct Item {
    pub meta: Meta,
    pub body: Option<Body>,
    /// Set by the node that sent the item to a problem port: what alerts say and route on.
    pub problem: Option<Problem>,
    pub(crate) lineage: Arc<Lineage>,
}

/// Why an item went to a problem port (quarantine, dead letter). Alert nodes route on the
/// kind, not on the reason's text.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Problem {
    /// The scanner found a signature.
    Infected { signature: String },
    /// The scanner answered, but could not scan it (too large, ...): not scanned.
    Unscannable { reason: String },
    /// Its content is not what the pipeline reads (not JSON, no message date, ...).
    Unparseable { reason: String },
    /// A store or template refused it for good (a key that cannot be written, ...).
    Refused { reason: String },
}

impl Problem {
    /// The reason as the item's `reason` field and reports give it.
    pub fn reason(&self) -> String {
        match self {
            Problem::Infected { signature } => format!("infected: {signature}"),
            Problem::Unscannable { reason } => format!("not scanned: {reason}"),
            Problem::Unparseable { reason } | Problem::Refused { reason } => reason.clone(),
        }
    }
}

impl Item {
    /// Marks the item with its problem; templates and `.error.json` files read it as
    /// `reason` (and `signature` for an infected item).
    pub fn set_problem(&mut self, problem: Problem) {
        self.set("reason", problem.reason());
        if let Problem::Infected { signature } = &problem {
            self.set("signature", signature.clone());
        }
        self.problem = Some(problem);
    }

    /// The source object as it was listed: key, size, ETag.
    pub fn listed(&self) -> &ObjectInfo {
        &self.lineage.listed
    }
    /// The store the source object was listed in (a `list`'s store), where `fetch` reads
    /// it; `None` from a source that does not say.
    pub fn listed_in(&self) -> Option<&Arc<dyn crate::api::store::Store>> {
        self.lineage.store.as_ref()
    }
    pub fn source_key(&self) -> &str {
        &self.lineage.listed.key
    }
    pub fn get_str(&self, k: &str) -> Option<&str> {
        self.meta.get(k).and_then(|v| v.as_str())
    }
    pub fn key(&self) -> &str {
        self.get_str("key").unwrap_or(&self.lineage.listed.key)
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

    /// Records `value` under `name` about the source object, for its source's
    /// acknowledgement: a `list` with `resume` keeps it in the done marker (a scan's verdict:
    /// which scanner passed the object). Shared by every copy; the last value set wins.
    pub fn record_for_source(&self, name: &str, value: serde_json::Value) {
        if let Ok(mut r) = self.lineage.record.lock() {
            r.insert(name.to_string(), value);
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

    /// In a plan: this item's object would be deleted from `store` (a `delete` node).
    pub fn plan_delete(&self, store: &str) {
        if let Ok(mut t) = self.lineage.trail.lock() {
            t.deletes.push(store.to_string());
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
    /// The stores a `delete` node would delete the object from.
    pub deletes: Vec<String>,
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

/// An item that did not get through: which object, where, and why.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ItemFailure {
    pub key: String,
    pub node: String,
    pub reason: String,
    /// Refused for good (a key the store refuses, a destination another object wrote):
    /// a rerun cannot help until someone acts. Otherwise transient: a rerun processes it.
    pub permanent: bool,
}

/// An object sent to a problem port (quarantine, dead letter), and why: the report lists
/// them.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProblemObject {
    pub key: String,
    pub node: String,
    pub port: String,
    pub reason: String,
}

/// Why a node could not process an item; nothing is sent on, so nothing unchecked reaches
/// a sink, and the source object is not acknowledged (it stays for the next run).
#[derive(Debug, Clone)]
pub struct ItemError {
    pub reason: String,
    /// See [`ItemError::refused`].
    pub permanent: bool,
}

impl ItemError {
    /// A transient failure (a timeout, a 5xx, a scanner down): the run is incomplete
    /// (exit 4) and a rerun processes the object.
    pub fn new(reason: impl Into<String>) -> Self {
        Self { reason: reason.into(), permanent: false }
    }
    /// A permanent one (bad content, a key the store refuses, a template without a
    /// value): no rerun can help, so the run ends with problems (exit 3), not
    /// "incomplete". Kinds with a problem port send such items there instead.
    pub fn refused(reason: impl Into<String>) -> Self {
        Self { reason: reason.into(), permanent: true }
    }
}

impl std::fmt::Display for ItemError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)
    }
}

/// Why a node could not do its part of a run outside any one item: a preflight check that
/// failed, a listing that stopped, an acknowledgement that did not happen. The message is
/// what operators read, in the report, the alert and the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct NodeError {
    pub message: String,
    /// No rerun can help until someone acts (credentials refused, a key the store will
    /// not take): an acknowledgement that fails so leaves its object refused (exit 3),
    /// not failed (exit 4, retried).
    pub permanent: bool,
}

impl NodeError {
    /// A failure a rerun may not meet (the usual case: a store or scanner down).
    pub fn new(message: impl Into<String>) -> Self {
        Self { message: message.into(), permanent: false }
    }
    /// A failure no rerun can help with until someone acts.
    pub fn refused(message: impl Into<String>) -> Self {
        Self { message: message.into(), permanent: true }
    }
}

impl From<String> for NodeError {
    fn from(message: String) -> Self {
        Self::new(message)
    }
}

impl From<&str> for NodeError {
    fn from(message: &str) -> Self {
        Self::new(message)
    }
}

/// A store's failure: permanent when the store refuses the key or the credentials.
impl From<crate::api::store::StoreError> for NodeError {
    fn from(e: crate::api::store::StoreError) -> Self {
        use crate::api::store::StoreErrorKind::{AccessDenied, InvalidKey};
        Self { permanent: matches!(e.kind, AccessDenied | InvalidKey), message: e.message }
    }
}

/// Records that `node` could not process `item` (for good if `permanent`); the source
/// object is reported as failed, or refused, when its last copy is dropped. The first
/// failure recorded is the one reported.
pub(crate) fn mark_failed(item: &Item, node: &str, reason: &str, permanent: bool) {
    if let Ok(mut f) = item.lineage.failure.lock() {
        if f.is_none() {
            *f = Some(ItemFailure {
                key: item.lineage.listed.key.clone(),
                node: node.to_string(),
                reason: reason.to_string(),
                permanent,
            });
        }
    }
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

/// Told when an object's last copy is gone (the runtime's tracker).
pub(crate) trait OnDone: Send + Sync + std::fmt::Debug {
    fn finished(&self, f: Finished);
}

/// Ties every copy of an item back to the source object it came from. When the last copy
/// is dropped, every output of the object is durable (sinks send an item on only once it
/// is written), so the object is finished: complete if no node failed it, and then
/// acknowledged to its source ([`Source::ack`]).
#[derive(Debug)]
pub(crate) struct Lineage {
    /// The source node (its index in the pipeline) and the object as it listed it.
    pub(crate) source: usize,
    pub(crate) listed: ObjectInfo,
    /// The store the object was listed in, when its source says ([`Item::listed_in`]).
    pub(crate) store: Option<Arc<dyn crate::api::store::Store>>,
    pub(crate) failure: Mutex<Option<ItemFailure>>,
    pub(crate) trail: Mutex<Trail>,
    pub(crate) on_done: Arc<dyn OnDone>,
    /// The object's share of `max_bytes_in_flight`, given back when the last copy goes.
    pub(crate) admitted: Mutex<Option<OwnedSemaphorePermit>>,
    /// A copy left through an unrouted drop port (a filter's no).
    pub(crate) dropped: std::sync::atomic::AtomicBool,
    /// A copy reached the end of a path other than a drop or a problem: written, or
    /// passed on by a last node.
    pub(crate) delivered: std::sync::atomic::AtomicBool,
    /// What nodes recorded about the object for its source's acknowledgement
    /// ([`Item::record_for_source`]: a scan's verdict, kept in the done marker).
    pub(crate) record: Mutex<Meta>,
}

impl Drop for Lineage {
    fn drop(&mut self) {
        let failure = self.failure.lock().map(|mut f| f.take()).unwrap_or(None);
        let trail = self.trail.lock().map(|mut t| std::mem::take(&mut *t)).unwrap_or_default();
        self.on_done.finished(Finished {
            source: self.source,
            listed: std::mem::take(&mut self.listed),
            failure,
            trail,
            already_done: false,
            dropped: self.dropped.load(std::sync::atomic::Ordering::Relaxed),
            delivered: self.delivered.load(std::sync::atomic::Ordering::Relaxed),
            record: self.record.lock().map(|mut r| std::mem::take(&mut *r)).unwrap_or_default(),
        });
    }
}

/// A source object whose last copy is gone (or, in a plan, one skipped as done).
#[derive(Debug)]
pub struct Finished {
    pub source: usize,
    /// The object as its source listed it.
    pub listed: ObjectInfo,
    pub failure: Option<ItemFailure>,
    pub trail: Trail,
    pub already_done: bool,
    /// A copy of it was dropped by a filter (`PortDecl::dropped`).
    pub dropped: bool,
    /// A copy of it reached the end of a path that is not a drop: an object that was only
    /// dropped was delivered nowhere, and a source that deletes keeps it.
    pub delivered: bool,
    /// What nodes recorded about it for its source ([`Item::record_for_source`]).
    pub record: Meta,
}
