//! `stamp`: writes each item's object back where it was listed, with the scan verdict it
//! now carries: a rescan records the new provenance on the objects it found clean.
//!
//! ```yaml
//! restamp: { kind: stamp, input: scan.clean, store: internal }
//! ```
//!
//! S3 user metadata cannot change without writing the object again (tags could, but they
//! are a second request that can fail after the first, and need their own permission), so
//! the object is written again, whole, with its bytes as fetched: the same content, the
//! verdict's `dqpipe-scan-*` metadata, and the origin it was written with (so the pipeline
//! that wrote it still recognises it as its own). Only an object still as listed is
//! written (a HEAD first; one replaced since is left, and its item refused): the window
//! between that check and the write is the one a store without conditional writes leaves.

use std::sync::Arc;

use async_trait::async_trait;
use dqpipe_engine::api::store::{check_read, PutOptions, Store};
use dqpipe_engine::api::{
    BuildContext, Built, ConfigError, Context, Emitter, Item, ItemError, KindConfig, PortDecl, Problem, Processor, Role,
};
use schemars::JsonSchema;
use serde::Deserialize;

use crate::retry::RetryPolicy;

/// Settings of a `stamp` node.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StampConfig {
    /// The store the items were listed in (a name under `stores`); each object is
    /// written back there, at its own key.
    pub store: String,
    /// Content type stored with the object written back.
    #[serde(default)]
    pub content_type: Option<String>,
    /// Retries of transient failures.
    #[serde(default)]
    pub retry: RetryPolicy,
}

const PORTS: &[PortDecl] = &[
    PortDecl::out("out", "the items whose objects now record their scan, with `dest_key`")
        .setting(&["dest_key", "dest_store"]),
    PortDecl::problem(
        "refused",
        &["reason"],
        "items whose objects cannot be written back for good (replaced since the listing, listed in another \
         store, access denied), with `reason`. Unrouted, they are counted refused (exit 3).",
    )
    .optional(),
];

impl KindConfig for StampConfig {
    const NAME: &'static str = "stamp";
    const SUMMARY: &'static str =
        "Writes each object back where it was listed, with the scan verdict its item carries (rescans).";
    const ROLE: Role = Role::Processor;
    const ADAPTIVE: bool = true;
    const PORTS: &'static [PortDecl] = PORTS;
    const EXAMPLE: &'static str = include_str!("kind_examples/stamp.yaml");
    fn build(self, ctx: &BuildContext) -> Result<Built, ConfigError> {
        let store = ctx.store_to_rewrite("store", &self.store)?;
        Ok(Built::Processor(Arc::new(Stamp { cfg: self, store })))
    }
}

pub struct Stamp {
    cfg: StampConfig,
    store: Arc<dyn Store>,
}

#[async_trait]
impl Processor for Stamp {
    /// Writes nothing: records the write back.
    async fn preview(&self, mut item: Item, out: &Emitter, _cx: &Context, _deep: bool) -> Result<(), ItemError> {
        let key = item.listed().key.clone();
        item.plan_write("stamp", &self.cfg.store, Ok(key));
        item.set("dest_key", item.listed().key.clone());
        item.set("dest_store", self.cfg.store.clone());
        out.emit("out", item).await.map_err(ItemError::from)
    }

    async fn process(&self, mut item: Item, out: &Emitter, cx: &Context) -> Result<(), ItemError> {
        match self.stamp(&item, cx).await {
            Ok(()) => {
                item.set("dest_key", item.listed().key.clone());
                item.set("dest_store", self.cfg.store.clone());
                out.emit("out", item).await.map_err(ItemError::from)
            }
            Err(e) if e.permanent => {
                item.set_problem(Problem::Refused { reason: format!("stamp: {}", e.reason) });
                out.emit("refused", item).await.map_err(ItemError::from)
            }
            Err(e) => Err(e),
        }
    }
}

impl Stamp {
    async fn stamp(&self, item: &Item, cx: &Context) -> Result<(), ItemError> {
        crate::delete::listed_in(item, &self.store, &self.cfg.store, "writes back into")?;
        let body =
            item.body.clone().ok_or_else(|| ItemError::new("the item has no bytes: stamp needs a fetch upstream"))?;
        let listed = item.listed();
        let key = listed.key.as_str();
        let now = self.retried("checking", key, cx, || self.store.head(key)).await?;
        let unchanged = now.as_ref().map(|o| check_read(listed, o.size, o.etag.as_deref()));
        if !matches!(unchanged, Some(Ok(()))) {
            return Err(ItemError::refused(format!("{key:?} changed or went since it was listed: not written back")));
        }
        let origin = self.retried("checking", key, cx, || self.store.origin(key)).await?;
        let opts = PutOptions {
            content_type: self.cfg.content_type.clone(),
            metadata: crate::put::scan_provenance(item),
            origin,
        };
        self.retried("writing back", key, cx, || self.store.put(key, &body, &opts)).await?;
        tracing::info!(store = %self.cfg.store, key = %key.escape_debug(), "scan recorded on the object");
        Ok(())
    }

    /// One store operation on `key` with the node's retries; its failure as the item's.
    async fn retried<T, Fut>(
        &self,
        what: &str,
        key: &str,
        cx: &Context,
        op: impl FnMut() -> Fut,
    ) -> Result<T, ItemError>
    where
        Fut: std::future::Future<Output = Result<T, dqpipe_engine::api::store::StoreError>>,
    {
        self.cfg.retry.on_store(&*self.store, what, key, cx, op).await
    }
}
