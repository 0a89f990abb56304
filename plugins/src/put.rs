//! `put`: writes each item's bytes to a store at a templated key. The main sink, the
//! quarantine and the dead letter are all `put` nodes.
//!
//! A write is complete when visible (local stores write a temporary file and rename it;
//! S3 puts are atomic). With `with_reason: true` the item's metadata, reason included, is
//! written first beside it as `<key>.error.json`, then the object itself.
//!
//! Nothing is overwritten by another source object. Every write records the source key
//! and the run with the object ([`Origin`]); before writing, `put` waits for a key another
//! object of this run is writing, then refuses a key that holds an object written from
//! another source key (by this run, or by an earlier one unless `--reprocess`). Objects
//! without a record (written by something else, such as the job dqpipe replaces) are
//! replaced. A refused item goes out of `refused` with its reason; unrouted, its object is
//! left at the source and counted refused (exit 3).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use dqpipe_engine::api::body::Body;
use dqpipe_engine::api::store::{Access, Origin, PutOptions, Store, StoreErrorKind};
use dqpipe_engine::api::template::{KeyTemplate, TemplateError};
use dqpipe_engine::api::{
    BuildContext, Built, ConfigError, Context, Emitter, Item, ItemError, KindConfig, NodeError, PortDecl, Problem,
    Processor, Role,
};
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
    /// `head`: after each write, read the object's size back before the item counts as
    /// written; a write the store answered but does not hold (a broken proxy or gateway in
    /// front of an S3-compatible server) is retried, never marked done. One HEAD per
    /// write; `none` (the default) trusts the store's answer, as AWS S3 warrants.
    #[serde(default)]
    pub verify: Verify,
}

const PORTS: &[PortDecl] = &[
    PortDecl::out("out", "the item once written, with `dest_key`").setting(&["dest_key", "dest_store"]),
    PortDecl::problem(
        "refused",
        &["reason"],
        "items that cannot be written for good, with `reason`: a key the store refuses, a template without a \
         value, a destination written from another source object. Unrouted, their objects are left at the \
         source and the run ends with exit 3",
    )
    .optional(),
];

impl KindConfig for PutConfig {
    const NAME: &'static str = "put";
    const SUMMARY: &'static str = "Writes each item to a store at a templated key; nothing partial is ever visible.";
    const ROLE: Role = Role::Processor;
    const ADAPTIVE: bool = true;
    const PORTS: &'static [PortDecl] = PORTS;
    const EXAMPLE: &'static str = include_str!("kind_examples/put.yaml");
    fn build(self, ctx: &BuildContext) -> Result<Built, ConfigError> {
        let cfg = self;
        let store = ctx.store_that_can("store", &cfg.store, Access::Write)?;
        let key = ctx.template("key", &cfg.key)?;
        let (writing, released) = (Mutex::default(), tokio::sync::Notify::new());
        Ok(Built::Processor(Arc::new(Put { name: ctx.node.to_string(), cfg, store, key, writing, released })))
    }
}

pub struct Put {
    name: String,
    cfg: PutConfig,
    store: Arc<dyn Store>,
    key: KeyTemplate,
    /// The keys being written now, each with the source key writing it and how many
    /// copies of that object are at it. The store's record cannot tell of a write still in
    /// flight; once written, the record does. So this holds at most `concurrency` keys.
    writing: Mutex<HashMap<String, (String, usize)>>,
    /// Told when keys are released, to the items waiting for one of them.
    released: tokio::sync::Notify,
}

impl Put {
    /// The destination key of an item, as `run` would write it. A variable without a
    /// value is named with the spec field. `name` is one segment of a key: a name that
    /// holds a path separator once decoded (`sub%2Fc.json`) is refused, as it would write
    /// below the folder the template names. (`key` and `run_date` are paths by design.)
    pub fn key_for(&self, item: &Item) -> Result<String, TemplateError> {
        for var in self.key.variables() {
            match item.meta.get(&var) {
                None | Some(serde_json::Value::Null) => {
                    let e = format!("`{{{{ {var} }}}}` has no value for this item (nodes.{}.key)", self.name);
                    return Err(TemplateError(e));
                }
                // A backslash is no separator on S3 or Linux folders: `a\b.json` is a name
                // (the job dqpipe replaces wrote it), refused only by a store that cannot
                // hold it.
                Some(serde_json::Value::String(v)) if var == "name" && v.contains('/') => {
                    return Err(TemplateError(format!(
                        "`{var}` is {v:?}, which holds a path separator (nodes.{}.key): refused, it would write \
                         below the folder the template names",
                        self.name
                    )))
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
    async fn preflight(&self) -> Result<(), NodeError> {
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
            let key = self.key_for(&item).map_err(|e| ItemError::refused(format!("destination key: {e}")))?;
            item.plan_write(&self.name, &self.cfg.store, Ok(key.clone()));
            item.set("dest_key", key);
        } else {
            item.plan_write(&self.name, &self.cfg.store, Err(missing));
        }
        item.set("dest_store", self.cfg.store.clone());
        out.emit("out", item).await.map_err(ItemError::from)
    }

    /// Writes the item, or refuses it for good (out of `refused`); a transient failure
    /// leaves its object for a rerun.
    async fn process(&self, mut item: Item, out: &Emitter, cx: &Context) -> Result<(), ItemError> {
        match self.deliver(&item, cx).await {
            Ok(key) => {
                item.set("dest_key", key);
                item.set("dest_store", self.cfg.store.clone());
                out.emit("out", item).await.map_err(ItemError::from)
            }
            Err(e) if e.permanent => {
                item.set_problem(Problem::Refused { reason: format!("{}: {}", self.name, e.reason) });
                out.emit("refused", item).await.map_err(ItemError::from)
            }
            Err(e) => Err(e),
        }
    }
}

/// The verdict that let the item through or quarantined it (the `scan` field a `clamav`
/// node sets), as metadata written with the object in the same request: S3 user metadata
/// `x-amz-meta-dqpipe-scan-engine`, `-database`, `-database-built`, `-scanned-at`,
/// `-verdict`, `-signature`; extended attributes `user.dqpipe.scan-...` on a local file.
/// Metadata rather than S3 tags: it cannot exist without the object nor the object
/// without it (tags are a second request, which can fail after the PUT, and need
/// `s3:PutObjectTagging`); a rescan writes the object again with its new verdict.
/// Header values are ASCII: anything else (a signature name with control characters)
/// is percent-encoded.
pub(crate) fn scan_provenance(item: &Item) -> Vec<(String, String)> {
    let Some(scan) = item.meta.get("scan").and_then(|v| v.as_object()) else { return Vec::new() };
    const NOT_PRINTABLE: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS.add(b'%');
    scan.iter()
        .filter_map(|(k, v)| {
            let text = match v {
                serde_json::Value::Null => return None,
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let value = percent_encoding::utf8_percent_encode(&text, NOT_PRINTABLE).to_string();
            Some((format!("dqpipe-scan-{}", k.replace('_', "-")), value))
        })
        .collect()
}

/// Whether `put` reads each write back (`verify`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Verify {
    #[default]
    None,
    Head,
}

impl Put {
    /// Writes the item (and its reason) where the template says; returns the key.
    async fn deliver(&self, item: &Item, cx: &Context) -> Result<String, ItemError> {
        let key = self.key_for(item).map_err(|e| ItemError::refused(format!("destination key: {e}")))?;
        if key.is_empty() {
            let e = format!("destination key template {:?} gave an empty key", self.key.source());
            return Err(ItemError::refused(e));
        }
        let body = item
            .body
            .clone()
            .ok_or_else(|| ItemError::new("the item has no bytes: put needs a fetch (or transform) upstream"))?;
        // A member of an archive is its own source: two members that map to one key are
        // told apart as two objects are (`<archive key>!/<member>`).
        let member_source = item.get_str("member").map(|m| format!("{}!/{m}", item.source_key()));
        let source = member_source.as_deref().unwrap_or(item.source_key());
        let reason_key = format!("{key}.error.json");
        let keys: Vec<&str> = if self.cfg.with_reason { vec![&reason_key, &key] } else { vec![&key] };
        let _claim = self.claim(&keys, source).await?;
        let origin = Origin { source_key: source.to_string(), run: cx.run_id().to_string() };
        let opts = PutOptions {
            content_type: self.cfg.content_type.clone(),
            metadata: scan_provenance(item),
            origin: Some(origin),
        };
        // The common case, a key nobody wrote, costs one request: a write that happens only
        // if the key is free. Only a key that holds something is asked who wrote it.
        if !self.cfg.with_reason {
            if self.write_new(&key, &body, &opts, cx).await? {
                return Ok(key);
            }
            self.check_origin(&key, source, cx).await?;
            self.write(&key, &body, &opts, cx).await?;
            return Ok(key);
        }
        // With a reason file beside it, both keys are checked before either is written,
        // so that a refused item leaves nothing behind.
        for k in &keys {
            self.check_origin(k, source, cx).await?;
        }
        let mut meta = item.meta.clone();
        meta.insert("source_key".into(), source.into());
        let json = serde_json::to_vec_pretty(&meta).map_err(|e| ItemError::new(format!("encoding the reason: {e}")))?;
        self.write(&reason_key, &Body::Memory(Bytes::from(json)), &opts, cx).await?;
        self.write(&key, &body, &opts, cx).await?;
        Ok(key)
    }

    /// Marks `keys` as being written from `source`, until the returned claim is dropped.
    /// A key another source object of this run is writing is waited for: once that write
    /// is over, the store's record says whether it was written (and this one is refused)
    /// or not. All keys are taken at once or none, so two items never wait for each other.
    async fn claim<'a>(&'a self, keys: &[&str], source: &str) -> Result<Claim<'a>, ItemError> {
        loop {
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            {
                let mut writing =
                    self.writing.lock().map_err(|_| ItemError::new("internal error: a put task panicked"))?;
                if keys.iter().all(|k| writing.get(*k).is_none_or(|(other, _)| other == source)) {
                    for k in keys {
                        writing.entry(k.to_string()).or_insert_with(|| (source.to_string(), 0)).1 += 1;
                    }
                    return Ok(Claim { put: self, keys: keys.iter().map(|k| k.to_string()).collect() });
                }
            }
            released.await;
        }
    }

    /// Refuses a key that holds an object written from another source key: by this run
    /// always, by an earlier run unless `--reprocess`.
    async fn check_origin(&self, key: &str, source: &str, cx: &Context) -> Result<(), ItemError> {
        let found = self.retried("checking", key, cx, || self.store.origin(key)).await?;
        let Some(origin) = found.filter(|o| o.source_key != source) else { return Ok(()) };
        let other = &origin.source_key;
        if origin.run == cx.run_id() {
            Err(ItemError::refused(format!(
                "destination {key:?} was written from {other:?} earlier in this run; refused, not overwritten: two \
                 source objects map to one key"
            )))
        } else if !cx.reprocess() {
            Err(ItemError::refused(format!(
                "destination {key:?} holds the object written from {other:?} by run {}; refused, not overwritten: \
                 two source objects map to one key (`run --reprocess` replaces it)",
                origin.run
            )))
        } else {
            Ok(())
        }
    }

    /// Writes `key` if it holds nothing; `false` when it holds something.
    async fn write_new(&self, key: &str, body: &Body, opts: &PutOptions, cx: &Context) -> Result<bool, ItemError> {
        self.retried("writing", key, cx, || async {
            let made = self.store.put_new(key, body, opts).await?;
            if made {
                self.verified(key, body).await?;
            }
            Ok(made)
        })
        .await
    }

    async fn write(&self, key: &str, body: &Body, opts: &PutOptions, cx: &Context) -> Result<(), ItemError> {
        self.retried("writing", key, cx, || async {
            self.store.put(key, body, opts).await?;
            self.verified(key, body).await
        })
        .await
    }

    /// With `verify: head`, that the store holds what it said it wrote: a transient error
    /// when it does not (so the write is tried again).
    async fn verified(&self, key: &str, body: &Body) -> Result<(), dqpipe_engine::api::store::StoreError> {
        if self.cfg.verify == Verify::None {
            return Ok(());
        }
        let lost = |what: String| {
            dqpipe_engine::api::store::StoreError::new(
                StoreErrorKind::Transient,
                format!("the store answered the write of {key:?}, but {what} (verify: head)"),
            )
        };
        match self.store.head(key).await? {
            None => Err(lost("holds no such object: the write was lost on the way".into())),
            Some(o) if o.size != body.len() => {
                Err(lost(format!("holds {} bytes of the {} written", o.size, body.len())))
            }
            Some(_) => Ok(()),
        }
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

/// Keys a task is writing; given back when the write is over, whatever its outcome.
struct Claim<'a> {
    put: &'a Put,
    keys: Vec<String>,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        if let Ok(mut writing) = self.put.writing.lock() {
            for k in &self.keys {
                if let Some(entry) = writing.get_mut(k) {
                    entry.1 -= 1;
                    if entry.1 == 0 {
                        writing.remove(k);
                    }
                }
            }
        }
        self.put.released.notify_waiters();
    }
}
