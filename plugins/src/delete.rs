//! `delete`: deletes each item's object from the store it was listed in: housekeeping,
//! with a `list` and its age filters choosing what expires.
//!
//! ```yaml
//! old: { kind: list, store: landing, min_age: 30d }
//! expire: { kind: delete, input: old, store: landing, limit: 10000 }
//! ```
//!
//! An object is deleted only if it is still the object listed (its size, and its ETag
//! where the store gives one): one replaced since is left, and the next run takes it
//! again. A store marked `trusted` is refused by `validate` unless the node says
//! `allow_trusted: true`: the internal store is where data lives, not where it expires.
//! `limit` caps the deletes of one run, as rclone's `--max-delete` does: a listing that
//! matches far more than expected (an age filter mistyped, a prefix too short) stops at
//! the cap, the rest left in place and reported unprocessed (exit 4), rather than emptying
//! a store. `plan` lists each delete and counts them; the report lists each one the
//! `deleted` port carries when a `put` records them, and counts them per port.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use dqpipe_engine::api::store::{Access, Store};
use dqpipe_engine::api::{
    BuildContext, Built, ConfigError, Context, Emitter, Item, ItemError, KindConfig, PortDecl, Problem, Processor, Role,
};
use schemars::JsonSchema;
use serde::Deserialize;

use crate::retry::RetryPolicy;

/// Settings of a `delete` node.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeleteConfig {
    /// The store to delete from: the one the items were listed in (a name under `stores`).
    pub store: String,
    /// The most objects one run deletes; past it, items are left in place and reported
    /// unprocessed (exit 4), so a filter that matches too much cannot empty a store.
    /// Unset: no cap.
    #[serde(default)]
    #[schemars(range(min = 1, max = 9007199254740991u64))]
    pub limit: Option<u64>,
    /// Delete from a store marked `trusted`. Off by default: `validate` refuses it.
    #[serde(default)]
    pub allow_trusted: bool,
    /// Retries of transient failures.
    #[serde(default)]
    pub retry: RetryPolicy,
}

const PORTS: &[PortDecl] = &[
    PortDecl::out("deleted", "the items whose objects were deleted (or were gone already)"),
    PortDecl::problem(
        "refused",
        &["reason"],
        "items whose objects cannot be deleted for good (access denied, a key the store refuses, an item \
         listed in another store), with `reason`. Unrouted, they are counted refused (exit 3).",
    )
    .optional(),
];

impl KindConfig for DeleteConfig {
    const NAME: &'static str = "delete";
    const SUMMARY: &'static str =
        "Deletes each item's object from the store it was listed in, if unchanged since the listing (housekeeping).";
    const ROLE: Role = Role::Processor;
    const ADAPTIVE: bool = true;
    const PORTS: &'static [PortDecl] = PORTS;
    const EXAMPLE: &'static str = include_str!("kind_examples/delete.yaml");
    fn build(self, ctx: &BuildContext) -> Result<Built, ConfigError> {
        let store = ctx.store_that_can("store", &self.store, Access::Delete)?;
        ctx.acts_where_listed("store", &self.store);
        let trusted = ctx.stores.get(&self.store).is_some_and(|(spec, _)| spec.trusted);
        if trusted && !self.allow_trusted {
            return Err(ConfigError::at(
                "store",
                format!(
                    "store `{}` is marked trusted: a `delete` node deletes there only with `allow_trusted: true` \
                     (say so in the node if expiring the internal store is meant)",
                    self.store
                ),
            ));
        }
        Ok(Built::Processor(Arc::new(Delete { cfg: self, store, deleted: AtomicU64::new(0) })))
    }
}

/// The item's object must have been listed in `store` (named `name` in the spec), the
/// node's (a `delete` deletes from it, a `stamp` writes back into it): `Err` (for good)
/// when it was listed elsewhere. The store itself is compared, not a field that any node
/// could have set.
pub(crate) fn listed_in(item: &Item, store: &Arc<dyn Store>, name: &str, does: &str) -> Result<(), ItemError> {
    match item.listed_in() {
        Some(s) if Arc::ptr_eq(s, store) => Ok(()),
        other => Err(ItemError::refused(format!(
            "the item was listed in {}; this node {does} `{name}` ({})",
            other.map(|s| s.display_url()).unwrap_or_else(|| "no store".into()),
            store.display_url()
        ))),
    }
}

pub struct Delete {
    cfg: DeleteConfig,
    store: Arc<dyn Store>,
    /// Deletes claimed in this run, for `limit`.
    deleted: AtomicU64,
}

impl Delete {
    /// Takes one of the run's `limit` deletes, or says the cap is reached.
    fn claim(&self) -> Result<(), ItemError> {
        let Some(limit) = self.cfg.limit else { return Ok(()) };
        let n = self.deleted.fetch_add(1, Ordering::Relaxed);
        if n >= limit {
            return Err(ItemError::new(format!(
                "not deleted: the node's limit of {limit} deletes in one run is reached (the next run goes on)"
            )));
        }
        Ok(())
    }
}

#[async_trait]
impl Processor for Delete {
    /// Deletes nothing: records the delete.
    async fn preview(&self, item: Item, out: &Emitter, _cx: &Context, _deep: bool) -> Result<(), ItemError> {
        listed_in(&item, &self.store, &self.cfg.store, "deletes from")?;
        item.plan_delete(&self.cfg.store);
        out.emit("deleted", item).await.map_err(ItemError::from)
    }

    async fn process(&self, mut item: Item, out: &Emitter, cx: &Context) -> Result<(), ItemError> {
        match self.delete(&item, cx).await {
            Ok(()) => {
                // The log is the audit trail of what housekeeping removed.
                tracing::info!(store = %self.cfg.store, key = %item.source_key().escape_debug(), "deleted");
                out.emit("deleted", item).await.map_err(ItemError::from)
            }
            Err(e) if e.permanent => {
                item.set_problem(Problem::Refused { reason: format!("delete: {}", e.reason) });
                out.emit("refused", item).await.map_err(ItemError::from)
            }
            Err(e) => Err(e),
        }
    }
}

impl Delete {
    /// Deletes the item's object if it is in this node's store, within the run's limit,
    /// with retries of transient failures.
    async fn delete(&self, item: &Item, cx: &Context) -> Result<(), ItemError> {
        listed_in(item, &self.store, &self.cfg.store, "deletes from")?;
        self.claim()?;
        let listed = item.listed();
        self.cfg.retry.on_store(&*self.store, "deleting", &listed.key, cx, || self.store.delete_listed(listed)).await
    }
}
