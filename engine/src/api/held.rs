//! An item a node keeps past its `process` call: a `batch` holds each record until the
//! object it writes them into is durable. Its source object stays unfinished (never
//! acknowledged, never done-marked) while any copy is held.
//!
//! A held item fails closed: dropped without [`Held::release`] or [`Held::fail`] (a
//! node that panicked, a run abandoned at the end of its grace period), it is recorded
//! failed, so its object is left for a rerun and never taken for done.

use crate::api::item::{mark_failed, Item, ItemError, Meta};

/// An item held by a node, without its body (the node keeps the bytes it needs, on disk
/// or in its own buffer), and with only the fields that say which copy it is.
#[derive(Debug)]
pub struct Held {
    item: Option<Item>,
    node: String,
}

/// The fields a held item keeps: which object and which part of it (an archive's
/// member, a file's record) it is. Everything else is dropped, so that a node holding
/// many items holds little for each.
const KEPT: &[&str] = &["key", "name", "member", "archive_key", "record"];

impl Item {
    /// Holds the item at `node` past `process`: its body is dropped, and so is its
    /// object's share of `max_bytes_in_flight` (the node that holds it keeps the bytes
    /// it needs in its own spool, which its settings bound): a node holding items never
    /// stops its sources for want of budget.
    pub fn hold(mut self, node: &str) -> Held {
        self.body = None;
        self.meta = KEPT.iter().filter_map(|k| self.meta.get(*k).map(|v| (k.to_string(), v.clone()))).collect::<Meta>();
        if let Ok(mut admitted) = self.lineage.admitted.lock() {
            admitted.take();
        }
        Held { item: Some(self), node: node.to_string() }
    }
}

impl Held {
    /// The fields it kept (`key`, `name`, `member`, `record`).
    pub fn meta(&self) -> &Meta {
        static EMPTY: std::sync::OnceLock<Meta> = std::sync::OnceLock::new();
        self.item.as_ref().map(|i| &i.meta).unwrap_or_else(|| EMPTY.get_or_init(Meta::new))
    }
    /// The source object as it was listed.
    pub fn source(&self) -> Option<&crate::api::store::ObjectInfo> {
        self.item.as_ref().map(|i| i.listed())
    }
    /// Gives the item back, to send on once what the node wrote of it is durable.
    pub fn release(mut self) -> Item {
        self.item.take().expect("a held item is released once")
    }
    /// Records that the node could not do its part for this item: its object is
    /// reported failed (or refused, if `error` is permanent) and left at its source.
    pub fn fail(mut self, error: &ItemError) {
        if let Some(item) = self.item.take() {
            mark_failed(&item, &self.node, &error.reason, error.permanent);
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(item) = self.item.take() {
            let reason = format!("held by `{}` and dropped before it was written (a rerun processes it)", self.node);
            mark_failed(&item, &self.node, &reason, false);
        }
    }
}
