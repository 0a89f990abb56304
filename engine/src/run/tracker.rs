//! Counts source objects as they finish, and hands the finished ones over to be
//! acknowledged to their sources.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use tokio::sync::mpsc;

use crate::api::item::{Finished, ItemFailure, OnDone};

/// Counts source objects as they finish, and hands finished ones to the executor, which
/// acknowledges them to their source before counting them complete.
#[derive(Debug, Default)]
pub struct Tracker {
    pub started: AtomicU64,
    pub complete: AtomicU64,
    /// Objects a node failed for a transient reason: a rerun processes them.
    pub failed: AtomicU64,
    /// Objects refused for good with nowhere to route them: left at the source, not
    /// acknowledged; no rerun helps until someone acts (see `ItemFailure::permanent`).
    pub refused: AtomicU64,
    /// Objects the sources skipped because an earlier run finished them.
    pub skipped_done: AtomicU64,
    /// Complete objects a filter dropped (a copy left through an unrouted drop port).
    pub dropped: AtomicU64,
    /// Set when the run gives up on the items still in flight (shutdown grace period over):
    /// an object finishing from then on is unprocessed, never acknowledged.
    pub(crate) abandoning: std::sync::atomic::AtomicBool,
    failures: Mutex<Vec<ItemFailure>>,
    /// Objects sent to a routed problem port (quarantine, dead letter), with the reason.
    problems: Mutex<Vec<crate::api::item::ProblemObject>>,
    /// Expectations a source checked and found unmet (a feed with nothing new): node, reason.
    expectations: Mutex<Vec<crate::api::outcome::UnmetExpectation>>,
    /// Entries listings met that are not objects (links, sockets, names not UTF-8).
    not_listed: Mutex<Vec<crate::api::outcome::NotListed>>,
    pub(crate) finished_tx: Mutex<Option<mpsc::UnboundedSender<Finished>>>,
    /// Set in plans: objects skipped as done are reported one by one too.
    pub(crate) planning: std::sync::atomic::AtomicBool,
}

impl OnDone for Tracker {
    fn finished(&self, f: Finished) {
        self.finish(f)
    }
}

impl Tracker {
    pub(crate) fn finish(&self, mut f: Finished) {
        if f.failure.is_none() && self.abandoning.load(Ordering::SeqCst) {
            f.failure = Some(ItemFailure {
                key: f.listed.key.clone(),
                node: String::new(),
                reason: "abandoned at shutdown (grace period over); a rerun processes it".into(),
                permanent: false,
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
                        key: f.listed.key,
                        node: String::new(),
                        reason: "finished after the run closed".into(),
                        permanent: false,
                    });
                }
            }
            (None, None) => self.record_complete(f.dropped),
        }
    }
    pub(crate) fn record_complete(&self, dropped: bool) {
        self.complete.fetch_add(1, Ordering::Relaxed);
        if dropped {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
    pub(crate) fn record_failure(&self, f: ItemFailure) {
        let counter = if f.permanent { &self.refused } else { &self.failed };
        counter.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut v) = self.failures.lock() {
            v.push(f);
        }
    }
    pub(crate) fn record_problem(&self, p: crate::api::item::ProblemObject) {
        if let Ok(mut v) = self.problems.lock() {
            v.push(p);
        }
    }
    pub(crate) fn record_expectation(&self, e: crate::api::outcome::UnmetExpectation) {
        if let Ok(mut v) = self.expectations.lock() {
            v.push(e);
        }
    }
    pub(crate) fn record_not_listed(&self, e: crate::api::outcome::NotListed) {
        if let Ok(mut v) = self.not_listed.lock() {
            v.push(e);
        }
    }
    pub fn not_listed(&self) -> Vec<crate::api::outcome::NotListed> {
        self.not_listed.lock().map(|v| v.clone()).unwrap_or_default()
    }
    pub fn expectations(&self) -> Vec<crate::api::outcome::UnmetExpectation> {
        self.expectations.lock().map(|v| v.clone()).unwrap_or_default()
    }
    pub fn problems(&self) -> Vec<crate::api::item::ProblemObject> {
        self.problems.lock().map(|v| v.clone()).unwrap_or_default()
    }
    pub fn failures(&self) -> Vec<ItemFailure> {
        self.failures.lock().map(|v| v.clone()).unwrap_or_default()
    }
}
