//! `put`: writes each item's bytes to a store at a templated key. The main sink, the
//! quarantine and the dead letter are all `put` nodes.
//!
//! A write is complete when visible (local stores write a temporary file and rename it;
//! S3 puts are atomic). With `with_reason: true` the item's metadata, reason included, is
//! written first beside it as `<key>.error.json`, then the object itself.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use dqpipe_engine::api::{
    BuildContext, Built, ConfigError, Context, Emitter, Item, ItemError, KindConfig, PortDecl, Processor, Role,
};
use dqpipe_engine::body::Body;
use dqpipe_engine::store::{Access, PutOptions, Store, StoreErrorKind};
use dqpipe_engine::template::KeyTemplate;
use schemars::JsonSchema;
use serde::Deserialize;

use crate::retry::RetryPolicy;

/// Settings of a `put` node.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PutConfig {
    /// The store to write to (a name under `stores`).
    pub store: String,
    /// The key, a minijinja template over the item's metadata: `{{ name }}`, `{{ key }}`,
    /// `{{ msg_date }}`, ... Empty segments are dropped, so a key never starts with `/`
    /// even when a prefix variable is empty.
    pub key: String,
    /// Also write the item's metadata and reason as `<key>.error.json` (dead letter,
    /// quarantine).
    #[serde(default)]
    pub with_reason: bool,
    /// Content type stored with the object.
    #[serde(default)]
    pub content_type: Option<String>,
    /// Retries of transient write failures.
    #[serde(default)]
    pub retry: RetryPolicy,
}

const PORTS: &[PortDecl] = &[PortDecl {
    name: "out",
    must_route: false,
    problem: false,
    sets: &["dest_key", "dest_store"],
    doc: "the item once written, with `dest_key`",
}];

impl KindConfig for PutConfig {
    const NAME: &'static str = "put";
    const SUMMARY: &'static str = "Writes each item to a store at a templated key; nothing partial is ever visible.";
    const ROLE: Role = Role::Processor;
    const PORTS: &'static [PortDecl] = PORTS;
    fn build(self, ctx: &BuildContext) -> Result<Built, ConfigError> {
        let cfg = self;
        let store = ctx.store_that_can("store", &cfg.store, Access::Write)?;
        let key = ctx.template("key", &cfg.key)?;
        Ok(Built::Processor(Arc::new(Put { name: ctx.node.to_string(), cfg, store, key })))
    }
}

pub struct Put {
    name: String,
    cfg: PutConfig,
    store: Arc<dyn Store>,
    key: KeyTemplate,
}

impl Put {
    /// The destination key of an item, as `run` would write it. A variable without a
    /// value is named with the spec field. `name` is one segment of a key: a name that
    /// holds a path separator once decoded (`sub%2Fc.json`) is refused, as it would write
    /// below the folder the template names. (`key` and `run_date` are paths by design.)
    pub fn key_for(&self, item: &Item) -> Result<String, String> {
        for var in self.key.variables() {
            match item.meta.get(&var) {
                None | Some(serde_json::Value::Null) => {
                    return Err(format!("`{{{{ {var} }}}}` has no value for this item (nodes.{}.key)", self.name))
                }
                Some(serde_json::Value::String(v)) if var == "name" && (v.contains('/') || v.contains('\\')) => {
                    return Err(format!(
                        "`{var}` is {v:?}, which holds a path separator (nodes.{}.key): refused, it would write \
                         below the folder the template names",
                        self.name
                    ))
                }
                _ => {}
            }
        }
        self.key.render(&item.meta).map(|k| normalize_key(&k))
    }
}

/// Drops empty segments: `/a//b/` becomes `a/b`.
pub fn normalize_key(k: &str) -> String {
    k.split('/').filter(|s| !s.is_empty()).collect::<Vec<_>>().join("/")
}

#[async_trait]
impl Processor for Put {
    /// Asks the store about a key that is not there: wrong credentials or an unreachable
    /// endpoint stop the run before anything moves. (A HEAD, not a listing: write-only
    /// credentials are common for destinations.)
    async fn preflight(&self) -> Result<(), String> {
        self.cfg
            .retry
            .preflight(
                || self.store.head(".dqpipe-preflight-check"),
                |e| e.kind == StoreErrorKind::Transient,
                |e| format!("store `{}` ({}): {e}", self.cfg.store, self.store.display_url()),
            )
            .await
            .map(|_| ())
    }

    /// Writes nothing: records the destination key, or the variables it still needs.
    async fn preview(&self, mut item: Item, out: &Emitter, _cx: &Context, _deep: bool) -> Result<(), ItemError> {
        let missing: Vec<String> =
            self.key.variables().into_iter().filter(|v| !item.meta.contains_key(v.as_str())).collect();
        if missing.is_empty() {
            let key = self.key_for(&item).map_err(|e| ItemError::new(format!("destination key: {e}")))?;
            item.plan_write(&self.name, &self.cfg.store, Ok(key.clone()));
            item.set("dest_key", key);
        } else {
            item.plan_write(&self.name, &self.cfg.store, Err(missing));
        }
        item.set("dest_store", self.cfg.store.clone());
        out.emit("out", item).await.map_err(ItemError::from)
    }

    async fn process(&self, mut item: Item, out: &Emitter, cx: &Context) -> Result<(), ItemError> {
        let key = self.key_for(&item).map_err(|e| ItemError::new(format!("destination key: {e}")))?;
        if key.is_empty() {
            return Err(ItemError::new(format!("destination key template {:?} gave an empty key", self.key.source())));
        }
        let body = item
            .body
            .clone()
            .ok_or_else(|| ItemError::new("the item has no bytes: put needs a fetch (or transform) upstream"))?;
        let opts = PutOptions { content_type: self.cfg.content_type.clone(), metadata: Vec::new() };
        if self.cfg.with_reason {
            let mut meta = item.meta.clone();
            meta.insert("source_key".into(), item.source_key().into());
            let json =
                serde_json::to_vec_pretty(&meta).map_err(|e| ItemError::new(format!("encoding the reason: {e}")))?;
            self.write(&format!("{key}.error.json"), &Body::Memory(Bytes::from(json)), &opts, cx).await?;
        }
        self.write(&key, &body, &opts, cx).await?;
        item.set("dest_key", key);
        item.set("dest_store", self.cfg.store.clone());
        out.emit("out", item).await.map_err(ItemError::from)
    }
}

impl Put {
    async fn write(&self, key: &str, body: &Body, opts: &PutOptions, cx: &Context) -> Result<(), ItemError> {
        self.cfg
            .retry
            .run(
                || self.store.put(key, body, opts),
                |e| e.kind == StoreErrorKind::Transient,
                |e| format!("writing {key:?} to {}: {e}", self.store.display_url()),
                || cx.retried(1),
            )
            .await
            .map(|_| ())
            .map_err(ItemError::new)
    }
}
