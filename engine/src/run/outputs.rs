//! A node's output ports ([`Emitter`]): the channels to its consumers, the counters of
//! each port, and, for sources, the byte budget their new items wait for and the
//! selection of the objects this run takes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use indexmap::IndexMap;
use tokio::sync::{mpsc, Semaphore};

use crate::api::item::{mark_failed, Closed, Finished, Item, Lineage, Meta, ProblemObject, Trail};
use crate::api::selection::{Planned, Shard};
use crate::api::store::{ObjectInfo, Store};
use crate::run::tracker::Tracker;

/// Counters of one output port.
#[derive(Debug, Default)]
pub struct PortStats {
    pub items: AtomicU64,
    pub bytes: AtomicU64,
}

/// A node's output ports and where each leads. Shared by the node's concurrent tasks;
/// the downstream channels close when the last copy is dropped.
pub struct Emitter {
    node: String,
    /// The node's index in the pipeline (sources stamp it on their items).
    index: usize,
    ports: IndexMap<&'static str, Route>,
    tracker: Arc<Tracker>,
    /// Sources only: `max_bytes_in_flight`, in KiB permits.
    budget: Option<ByteBudget>,
    /// Sources only: which listed objects this run takes (shard, saved plan).
    selection: Selection,
}

/// The objects a source's run takes, whatever the source: this process's shard, and with
/// `run --plan` only the planned objects, unchanged since planning.
#[derive(Debug, Clone, Default)]
pub(crate) struct Selection {
    pub(crate) shard: Option<Shard>,
    pub(crate) only: Option<Arc<Planned>>,
}

/// `defaults.max_bytes_in_flight` as a semaphore of KiB: a source's item takes its listed
/// size (at most the cap, at most the whole budget) before it is sent on.
#[derive(Clone)]
pub(crate) struct ByteBudget {
    semaphore: Arc<Semaphore>,
    total_kib: u32,
    /// The most one object counts: the spool threshold, or no limit when a node reads
    /// whole bodies into memory.
    cap: u64,
    /// Bytes held per byte of the object (`NodeKind::body_growth`).
    growth: u32,
}

impl ByteBudget {
    pub(crate) fn new(max_bytes: u64, cap: u64, growth: u32) -> Self {
        let total_kib = (max_bytes / 1024).clamp(1, u64::from(u32::MAX >> 4)) as u32;
        Self { semaphore: Arc::new(Semaphore::new(total_kib as usize)), total_kib, cap, growth: growth.max(1) }
    }

    /// The KiB an item takes: its listed size up to the cap, times the growth (1 KiB when
    /// unknown or smaller; the whole budget at most: a larger object goes through alone).
    fn charge(&self, item: &Item) -> u32 {
        let size = item.listed().size.min(self.cap).saturating_mul(u64::from(self.growth));
        (size.div_ceil(1024).max(1)).min(u64::from(self.total_kib)) as u32
    }
}

/// Told of every item a node sends (`RunOptions::tap`, for `dqpipe test`): called with (node, port, item).
#[derive(Clone)]
pub struct Tap(pub Arc<TapFn>);

/// The function of a [`Tap`]: (node, port, item).
pub type TapFn = dyn Fn(&str, &str, &Item) + Send + Sync;

impl std::fmt::Debug for Tap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tap")
    }
}

/// One output port: where it leads, its counters, and whether it is a problem port.
pub(crate) struct Route {
    pub(crate) consumers: Vec<mpsc::Sender<Item>>,
    pub(crate) stats: Arc<PortStats>,
    /// A problem port (quarantine, dead letter): what goes out of it is listed in the report.
    pub(crate) problem: bool,
    /// A drop port (`PortDecl::dropped`): unrouted, its items' objects count `dropped`.
    pub(crate) drops: bool,
    /// Told of every item sent out of the port (`dqpipe test`).
    pub(crate) tap: Option<Tap>,
}

impl Emitter {
    pub(crate) fn new(
        node: String,
        index: usize,
        ports: IndexMap<&'static str, Route>,
        tracker: Arc<Tracker>,
        source: Option<(ByteBudget, Selection)>,
    ) -> Self {
        let (budget, selection) = match source {
            Some((b, s)) => (Some(b), s),
            None => (None, Selection::default()),
        };
        Self { node, index, ports, tracker, budget, selection }
    }

    /// Sources call this for every object they list (after their own filters): whether
    /// this run takes it. Another shard's object is not; with `run --plan`, neither is an
    /// object the plan does not name, and one that changed since planning is reported
    /// unprocessed with the reason.
    pub fn offer(&self, listed: &ObjectInfo) -> bool {
        if self.selection.shard.is_some_and(|s| !s.owns(&listed.key)) {
            return false;
        }
        self.offer_in_share(listed)
    }

    /// As [`Emitter::offer`], for a source that took this process's share itself
    /// (`Context::shard`: an inventory's data files split between
    /// shards): the object is in this shard's share; the rest is checked as `offer` does.
    pub fn offer_in_share(&self, listed: &ObjectInfo) -> bool {
        let Some(only) = &self.selection.only else { return true };
        let Some((size, etag)) = only.objects.get(&self.node).and_then(|m| m.get(&listed.key)) else {
            return false;
        };
        if let Ok(mut seen) = only.seen.lock() {
            seen.insert((self.node.clone(), listed.key.clone()));
        }
        if *size != listed.size || (etag.is_some() && *etag != listed.etag) {
            let reason = format!(
                "changed since the plan was made (size {size} -> {}, etag {} -> {}); not processed: plan again",
                listed.size,
                etag.as_deref().unwrap_or("-"),
                listed.etag.as_deref().unwrap_or("-")
            );
            self.reject(listed, &reason);
            return false;
        }
        true
    }

    /// After a source's listing ended: the planned objects it did not list are reported
    /// unprocessed (deleted or moved since planning).
    pub(crate) fn report_vanished(&self) {
        let Some(only) = &self.selection.only else { return };
        let seen = only.seen.lock().map(|s| s.clone()).unwrap_or_default();
        for (key, (size, etag)) in only.objects.get(&self.node).into_iter().flatten() {
            if !seen.contains(&(self.node.clone(), key.clone())) {
                let gone = ObjectInfo { key: key.clone(), size: *size, etag: etag.clone(), last_modified: None };
                self.reject(&gone, "planned, but no longer listed (deleted or moved since the plan was made)");
            }
        }
    }

    /// True for a node with no output ports: items end there.
    pub(crate) fn has_no_ports(&self) -> bool {
        self.ports.is_empty()
    }

    /// Reports that the listing did not meet what the spec expects of it (a feed with
    /// nothing new for too long): the run ends with problems (exit 3), with `reason` among
    /// its causes, which the end-of-run alerts carry.
    pub fn expectation_failed(&self, reason: &str) {
        self.tracker.record_expectation(crate::api::outcome::UnmetExpectation {
            node: self.node.clone(),
            reason: reason.to_string(),
        });
    }

    /// Reports entries the listing met that are not objects (see [`Store::take_not_listed`]):
    /// named in the summary and the report; they change no outcome.
    ///
    /// [`Store::take_not_listed`]: crate::api::store::Store::take_not_listed
    pub fn not_listed(&self, entries: Vec<(String, String)>) {
        for (path, why) in entries {
            self.tracker.record_not_listed(crate::api::outcome::NotListed { node: self.node.clone(), path, why });
        }
    }

    /// Counts an object a source skipped because an earlier run finished it.
    pub fn skipped_done(&self, listed: &ObjectInfo) {
        self.tracker.skipped_done.fetch_add(1, Ordering::Relaxed);
        if self.tracker.planning.load(Ordering::Relaxed) {
            self.tracker.finish(Finished {
                source: self.index,
                listed: listed.clone(),
                failure: None,
                trail: Trail::default(),
                already_done: true,
                dropped: false,
                delivered: true,
                record: Meta::new(),
            });
        }
    }

    /// Reports an object the source will not process, with the reason (it changed since
    /// the plan was made, it is gone): counted unprocessed.
    pub fn reject(&self, listed: &ObjectInfo, reason: &str) {
        let item = self.new_item(listed, Meta::new());
        mark_failed(&item, &self.node, reason, false);
    }

    /// Starts a new item for a source object, with the metadata templates will read.
    pub fn new_item(&self, listed: &ObjectInfo, meta: Meta) -> Item {
        self.new_item_in(None, listed, meta)
    }

    /// As [`Emitter::new_item`], for an object listed in `store`: `fetch` reads it there
    /// ([`Item::listed_in`]).
    pub fn new_item_in(&self, store: Option<Arc<dyn Store>>, listed: &ObjectInfo, meta: Meta) -> Item {
        self.tracker.started.fetch_add(1, Ordering::Relaxed);
        Item {
            meta,
            body: None,
            problem: None,
            lineage: Arc::new(Lineage {
                source: self.index,
                listed: listed.clone(),
                store,
                failure: Mutex::new(None),
                trail: Mutex::new(Trail::default()),
                on_done: self.tracker.clone(),
                admitted: Mutex::new(None),
                dropped: Default::default(),
                delivered: Default::default(),
                record: Default::default(),
            }),
        }
    }

    /// Sends an item out of `port`: to every consumer (a copy each), or nowhere if the
    /// port is not routed, which ends the item's path there. Waits while consumers are
    /// full (backpressure). A source's new item first waits for its share of
    /// `max_bytes_in_flight`.
    pub async fn emit(&self, port: &str, item: Item) -> Result<(), Closed> {
        if let Some(budget) = &self.budget {
            let admitted = item.lineage.admitted.lock().map(|a| a.is_some()).unwrap_or(true);
            if !admitted {
                let permit =
                    budget.semaphore.clone().acquire_many_owned(budget.charge(&item)).await.map_err(|_| Closed)?;
                if let Ok(mut a) = item.lineage.admitted.lock() {
                    *a = Some(permit);
                }
            }
        }
        let Some(route) = self.ports.get(port) else {
            // A kind emitting on a port it did not declare is a bug in the kind.
            mark_failed(&item, &self.node, &format!("internal error: undeclared port `{port}`"), false);
            return Ok(());
        };
        if let Some(tap) = &route.tap {
            (tap.0)(&self.node, port, &item);
        }
        route.stats.items.fetch_add(1, Ordering::Relaxed);
        route.stats.bytes.fetch_add(item.body.as_ref().map(|b| b.len()).unwrap_or(0), Ordering::Relaxed);
        if route.problem && !route.consumers.is_empty() {
            if let Some(problem) = &item.problem {
                self.tracker.record_problem(ProblemObject {
                    key: item.source_key().to_string(),
                    node: self.node.clone(),
                    port: port.to_string(),
                    reason: problem.reason(),
                });
            }
        }
        // Out of an unrouted problem port (a `refused` port nothing reads), a problem has
        // nowhere to go: the object is refused, left at its source, never acknowledged as
        // done. Out of any other unrouted port the item has reached the end of its path,
        // whatever the kind of the last node and whatever problem it carries (a quarantined
        // file out of its quarantine `put`): its object is complete.
        if route.consumers.is_empty() && route.drops {
            item.lineage.dropped.store(true, Ordering::Relaxed);
        }
        if route.consumers.is_empty() && !route.drops && !route.problem {
            item.lineage.delivered.store(true, Ordering::Relaxed);
        }
        if route.consumers.is_empty() && route.problem {
            let reason = match &item.problem {
                Some(problem) => problem.reason(),
                None => format!("sent out of `{}.{port}`, which leads nowhere", self.node),
            };
            mark_failed(&item, &self.node, &reason, true);
        }
        if let Some((last, rest)) = route.consumers.split_last() {
            for tx in rest {
                tx.send(item.clone()).await.map_err(|_| Closed)?;
            }
            last.send(item).await.map_err(|_| Closed)?;
        }
        Ok(())
    }
}
