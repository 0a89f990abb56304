//! `list`: the source. Lists objects under a prefix in a store and starts one item per
//! object, streaming: processing begins with the first page, not after the last.
//!
//! With `resume`, each object whose outputs are all durable is recorded as done in a store
//! (normally the destination), and later runs skip it unless it changed: see `resume.rs`.

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;
use dqpipe_engine::api::body::Spool;
use dqpipe_engine::api::store::{Access, ObjectInfo, Store, StoreErrorKind};
use dqpipe_engine::api::{
    BuildContext, Built, ConfigError, Context, Emitter, KindConfig, Meta, NodeError, PortDecl, Role, Source,
    SourceContext,
};
use futures::stream::BoxStream;
use futures::StreamExt;
use schemars::JsonSchema;
use serde::Deserialize;

use crate::inventory::Manifest;
use crate::resume::{done_id, DoneLog};
use crate::retry::{resumable_listing, RetryPolicy};

/// Settings of a `list` node.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListConfig {
    /// The store to list (a name under `stores`).
    pub store: String,
    /// Only keys starting with this.
    #[serde(default)]
    pub prefix: String,
    /// Only keys ending with this, e.g. `.json`.
    #[serde(default)]
    pub suffix: Option<String>,
    /// Only objects whose name (the last segment of the key) matches this regular
    /// expression.
    #[serde(default)]
    pub regex: Option<String>,
    /// Start after this key (keys are listed in order).
    #[serde(default)]
    pub start_after: Option<String>,
    /// At most this many objects per run. A number, or a string holding one (so that
    /// `limit: "${MAX_BATCH_SIZE:-500}"` works).
    #[serde(default, deserialize_with = "number_or_text")]
    #[schemars(with = "Option<u64>", range(min = 0, max = 9007199254740991u64))]
    pub limit: Option<u64>,
    /// Record finished objects and skip them on later runs.
    #[serde(default)]
    pub resume: Option<ResumeConfig>,
    /// Retries of transient listing failures; the listing goes on after the last key seen.
    #[serde(default)]
    pub retry: RetryPolicy,
    /// `key` (default: as the store lists, streaming) or `modified` (oldest first; the
    /// whole listing is read before the first item goes out).
    #[serde(default)]
    pub order: Order,
    /// Delete each object from the source once every output of it is durable (and it is
    /// recorded as done, with `resume`). An object an earlier run already delivered is only
    /// deleted.
    #[serde(default)]
    pub delete_after_success: bool,
    /// Read the objects from an S3 Inventory report instead of listing the store (see
    /// `inventory.rs`): each shard reads only its share of the report's data files.
    #[serde(default)]
    pub inventory: Option<crate::inventory::InventoryConfig>,
    /// Listings in flight at once: the prefix is split by the character that follows it
    /// (one listing per printable ASCII character, and the keys beyond), listed up to this
    /// many at a time; objects then come in no particular order. The prefix is first
    /// extended to what every key under it shares (found from the first key and a few
    /// probes: NATS archive keys share everything up to `MTCU_`, then differ by a hex
    /// digit). For stores that list in key order (S3); 1 (the default) lists in one
    /// sequence.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 256))]
    pub parallel_listings: usize,
}

fn one() -> usize {
    1
}

fn number_or_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum N {
        Number(u64),
        Text(String),
    }
    match Option::<N>::deserialize(d)? {
        None => Ok(None),
        Some(N::Number(n)) => Ok(Some(n)),
        Some(N::Text(t)) if t.trim().is_empty() => Ok(None),
        Some(N::Text(t)) => t
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| serde::de::Error::custom(format!("invalid value: string {t:?}, expected a whole number"))),
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Order {
    #[default]
    Key,
    Modified,
}

/// Where done markers are kept.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResumeConfig {
    /// The store holding the markers (a name under `stores`), normally the destination.
    pub store: String,
    /// Key prefix of the markers. Default `_dqpipe/done/<pipeline name>` (a leading `_`
    /// keeps them out of Hive/Athena-style table scans).
    #[serde(default)]
    pub prefix: Option<String>,
}

const PORTS: &[PortDecl] = &[PortDecl::out("out", "one item per listed object").setting(LISTED_FIELDS)];

impl KindConfig for ListConfig {
    const NAME: &'static str = "list";
    const SUMMARY: &'static str =
        "Lists objects under a prefix in a store; one item per object (key, name, size, etag).";
    const ROLE: Role = Role::Source;
    const PORTS: &'static [PortDecl] = PORTS;
    fn build(self, ctx: &BuildContext) -> Result<Built, ConfigError> {
        let cfg = self;
        let store = match cfg.delete_after_success {
            true => ctx.store_that_can("store", &cfg.store, Access::Delete)?,
            false => ctx.store("store", &cfg.store)?,
        };
        let resume = match &cfg.resume {
            Some(r) => Some(DoneLog::new(
                ctx.store_that_can("resume.store", &r.store, Access::Write)?,
                r.prefix
                    .clone()
                    .unwrap_or_else(|| format!("_dqpipe/done/{}", ctx.pipeline))
                    .trim_matches('/')
                    .to_string(),
                cfg.retry.clone(),
            )),
            None => None,
        };
        let regex = match &cfg.regex {
            Some(r) => Some(
                regex::Regex::new(r)
                    .map_err(|e| ConfigError::at("regex", format!("invalid regular expression: {e}")))?,
            ),
            None => None,
        };
        if cfg.parallel_listings > 1 && cfg.start_after.is_some() {
            return Err(ConfigError::at(
                "start_after",
                "parallel listings split the keys by their first character: `start_after` does not apply",
            ));
        }
        let inventory = match &cfg.inventory {
            Some(_) if cfg.start_after.is_some() => {
                return Err(ConfigError::at("start_after", "an inventory is read whole: `start_after` does not apply"))
            }
            Some(inv) => Some(ctx.store("inventory.store", &inv.store)?),
            None => None,
        };
        Ok(Built::Source(Arc::new(List { cfg, store, regex, resume, inventory, split: Default::default() })))
    }
}

pub struct List {
    cfg: ListConfig,
    store: Arc<dyn Store>,
    regex: Option<regex::Regex>,
    resume: Option<DoneLog>,
    /// The store holding the inventory reports, with `inventory`.
    inventory: Option<Arc<dyn Store>>,
    /// With `parallel_listings`: the prefix every key shares, after which the keys are
    /// split into ranges (`parallel_listing.rs`), and the ranges' prefixes; found once.
    split: tokio::sync::OnceCell<(String, Vec<String>)>,
}

/// What a listing does with one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// Filtered out (suffix, regex): not this run's business.
    Ignored,
    /// An earlier run finished it.
    Done,
    Take,
}

impl List {
    /// Whether this run takes the object, by the node's own filters and the markers an
    /// earlier run left (`done`). The engine decides the rest ([`Emitter::offer`]: the
    /// shard, a saved plan).
    pub fn select(&self, o: &ObjectInfo, ctx: &SourceContext, done: &HashSet<String>) -> Selection {
        if self.cfg.suffix.as_deref().is_some_and(|s| !o.key.ends_with(s)) {
            return Selection::Ignored;
        }
        if self.regex.as_ref().is_some_and(|r| !r.is_match(&name_of(&o.key))) {
            return Selection::Ignored;
        }
        if !ctx.reprocess && done.contains(&done_id(o)) {
            return Selection::Done;
        }
        Selection::Take
    }

    /// The objects earlier runs finished (empty without `resume`).
    pub async fn done_markers(&self) -> Result<HashSet<String>, String> {
        match &self.resume {
            Some(log) => log.read().await,
            None => Ok(HashSet::new()),
        }
    }

    /// The inventory's manifest, read (with retries) from its store.
    async fn manifest(&self, store: &Arc<dyn Store>) -> Result<Manifest, String> {
        let key = self.cfg.inventory.as_ref().map(|i| i.manifest.as_str()).unwrap_or_default();
        let spool = Spool { threshold: 64 << 20, dir: None };
        let read = || async { store.get(key, &spool).await };
        let body = self
            .cfg
            .retry
            .preflight(read, |e| e.kind == StoreErrorKind::Transient, |e| format!("inventory manifest {key:?}: {e}"))
            .await
            .map_err(|e| e.to_string())?;
        let bytes = body.to_bytes(64 << 20).await.map_err(|e| format!("inventory manifest {key:?}: {e}"))?;
        Manifest::parse(&bytes).map_err(|e| format!("inventory manifest {key:?}: {e}"))
    }

    /// The objects to consider: the store's listing, or this shard's share of the
    /// inventory's data files.
    async fn objects<'a>(
        &'a self,
        cx: &'a Context,
        ctx: &SourceContext,
    ) -> Result<BoxStream<'a, Result<ObjectInfo, String>>, String> {
        let Some(store) = &self.inventory else { return Ok(self.walk(cx)) };
        let manifest = self.manifest(store).await?;
        let files = manifest.share(ctx.shard);
        tracing::info!(files = files.len(), of = manifest.files.len(), "inventory data files to read");
        Ok(crate::inventory::objects(store.clone(), Arc::new(manifest), files, &self.cfg.prefix, cx.spool().clone()))
    }

    /// The listing, with transient failures retried from the last key seen.
    pub fn walk<'a>(&'a self, cx: &'a Context) -> BoxStream<'a, Result<ObjectInfo, String>> {
        let url = self.store.display_url();
        let all = if self.cfg.parallel_listings > 1 && self.store.lists_in_key_order() {
            self.fanned_out(cx)
        } else {
            self.listing(cx, &self.cfg.prefix, self.cfg.start_after.clone())
        };
        all.map(move |r| r.map_err(|e| format!("listing {url}: {e}"))).boxed()
    }

    fn listing<'a>(&'a self, cx: &'a Context, prefix: &'a str, after: Option<String>) -> Listing<'a> {
        resumable_listing(&*self.store, prefix, after, &self.cfg.retry, || cx.retried(1))
    }

    /// The prefix's keys in ranges listed at once, `parallel_listings` at a time: the
    /// prefix is extended to what every key shares, then split by the next character: one
    /// listing per printable ASCII character, one for the shared prefix itself and keys
    /// whose next character sorts before the space (it stops at the space: the store lists
    /// in key order), one for keys whose next character sorts after `~`. Each range is
    /// retried from its own last key; together they list every key once.
    fn fanned_out<'a>(&'a self, cx: &'a Context) -> Listing<'a> {
        let split = async move {
            self.split
                .get_or_init(|| async {
                    let p = &self.cfg.prefix;
                    let base = match crate::parallel_listing::shared_prefix(&*self.store, p).await {
                        Ok(base) => {
                            tracing::info!(prefix = %base, "parallel listings: the keys split after their shared prefix");
                            base
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "parallel listings: the shared prefix was not found; splitting after `prefix`");
                            p.clone()
                        }
                    };
                    let fan = crate::parallel_listing::fan(&base);
                    (base, fan)
                })
                .await
        };
        futures::stream::once(split)
            .flat_map(move |(base, fan): &'a (String, Vec<String>)| {
                let space = format!("{base} ");
                let low = self.listing(cx, base, None).take_while(move |r| {
                    futures::future::ready(r.as_ref().map_or(true, |o| o.key.as_str() < space.as_str()))
                });
                let tilde = format!("{base}~");
                let high = self.listing(cx, base, Some(tilde.clone())).filter(move |r| {
                    futures::future::ready(r.as_ref().map_or(true, |o| !o.key.starts_with(tilde.as_str())))
                });
                let ranges =
                    [low.boxed(), high.boxed()].into_iter().chain(fan.iter().map(move |q| self.listing(cx, q, None)));
                futures::stream::iter(ranges).flatten_unordered(self.cfg.parallel_listings)
            })
            .boxed()
    }
}

type Listing<'a> = BoxStream<'a, Result<ObjectInfo, dqpipe_engine::api::store::StoreError>>;

/// The item's name: the URL-decoded last segment of its key, as the original job named
/// its local copies.
pub fn name_of(key: &str) -> String {
    let last = key.rsplit('/').next().unwrap_or(key);
    percent_encoding::percent_decode_str(last).decode_utf8_lossy().into_owned()
}

/// The fields every listed item starts with (see [`object_meta`]).
pub const LISTED_FIELDS: &[&str] = &["store", "key", "name", "size", "etag", "last_modified", "run_date"];

/// The metadata every listed item starts with.
pub fn object_meta(store: &str, o: &ObjectInfo) -> Meta {
    let mut m = Meta::new();
    m.insert("store".into(), store.into());
    m.insert("key".into(), o.key.clone().into());
    m.insert("name".into(), name_of(&o.key).into());
    m.insert("size".into(), o.size.into());
    if let Some(e) = &o.etag {
        m.insert("etag".into(), e.clone().into());
    }
    if let Some(t) = &o.last_modified {
        m.insert("last_modified".into(), t.clone().into());
    }
    m.insert("run_date".into(), RUN_DATE.clone().into());
    m
}

/// The day the run started (UTC), `YYYY/MM/DD`, for date-partitioned keys (`run_date`).
static RUN_DATE: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| chrono::Utc::now().format("%Y/%m/%d").to_string());

#[async_trait]
impl Source for List {
    /// Reads the first entry of the listing, so that wrong credentials, a missing bucket or
    /// an unreachable endpoint stop the run before anything moves.
    async fn preflight(&self) -> Result<(), NodeError> {
        if let Some(store) = &self.inventory {
            return self.manifest(store).await.map(|_| ()).map_err(NodeError::from);
        }
        let first =
            || async { self.store.list(&self.cfg.prefix, self.cfg.start_after.clone()).next().await.transpose() };
        self.cfg
            .retry
            .preflight(
                first,
                |e| e.kind == StoreErrorKind::Transient,
                |e| format!("listing {}: {e}", self.store.display_url()),
            )
            .await
            .map(|_| ())
    }

    async fn run(&self, out: &Emitter, cx: &Context, ctx: &SourceContext) -> Result<(), NodeError> {
        if self.cfg.limit == Some(0) {
            // Zero means zero: nothing is taken, nothing deleted.
            tracing::warn!(store = %self.store.display_url(), "limit is 0: no object is taken in this run");
            return Ok(());
        }
        let done = self.done_markers().await?;
        if self.resume.is_some() {
            tracing::info!(markers = done.len(), reprocess = ctx.reprocess, "done markers read");
        }
        // The listing runs ahead of the items (up to two pages): the next page is being
        // fetched while the items of this one wait for room downstream.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<ObjectInfo, String>>(2_000);
        let listing = self.objects(cx, ctx).await?;
        let produce = async {
            let mut listing = listing;
            if self.cfg.order == Order::Modified {
                let mut all = Vec::new();
                while let Some(o) = listing.next().await {
                    match o {
                        Ok(o) => all.push(o),
                        Err(e) => {
                            let _ = tx.send(Err(e)).await;
                            return;
                        }
                    }
                }
                all.sort_by(|a, b| a.last_modified.cmp(&b.last_modified).then_with(|| a.key.cmp(&b.key)));
                for o in all {
                    if tx.send(Ok(o)).await.is_err() {
                        break;
                    }
                }
                return;
            }
            while let Some(o) = listing.next().await {
                if tx.send(o).await.is_err() {
                    break;
                }
            }
            drop(tx);
        };
        let mut count = 0u64;
        let consume = async {
            while let Some(o) = rx.recv().await {
                if ctx.stop.is_stopped() {
                    tracing::info!(store = %self.cfg.store, listed = count, "listing stopped");
                    break;
                }
                let o = o?;
                let selection = self.select(&o, ctx, &done);
                // With an inventory, this shard read only its own data files.
                let offered = if self.inventory.is_some() { out.offer_in_share(&o) } else { out.offer(&o) };
                if selection == Selection::Ignored || !offered {
                    continue;
                }
                match selection {
                    Selection::Ignored => {}
                    Selection::Done => {
                        out.skipped_done(&o);
                        // Delivered by an earlier run but not deleted then: only the delete.
                        if self.cfg.delete_after_success && !cx.planning() {
                            if let Err(e) = self.store.delete_listed(&o).await {
                                tracing::warn!(key = %o.key.escape_debug(), error = %e, "already delivered, but deleting it failed");
                            }
                        }
                    }
                    Selection::Take => {
                        let item = out.new_item(&o, object_meta(&self.cfg.store, &o));
                        if out.emit("out", item).await.is_err() {
                            break;
                        }
                        count += 1;
                        if self.cfg.limit.is_some_and(|l| count >= l) {
                            break;
                        }
                    }
                }
            }
            // Stop the producer: dropping the receiver ends its sends.
            drop(rx);
            Ok::<(), String>(())
        };
        let ((), consumed) = tokio::join!(produce, consume);
        consumed?;
        if count == 0 {
            tracing::warn!(store = %self.store.display_url(), prefix = %self.cfg.prefix, "listed zero objects to process");
        } else {
            tracing::info!(store = %self.store.display_url(), listed = count, "listing done");
        }
        Ok(())
    }

    /// Records the object as done (with `resume`), then deletes it at the source (with
    /// `delete_after_success`). Called only once every output of it is durable.
    async fn ack(&self, info: &ObjectInfo) -> Result<(), NodeError> {
        if let Some(log) = &self.resume {
            log.record(info).await?;
        }
        if self.cfg.delete_after_success {
            self.store.delete_listed(info).await.map_err(|e| format!("outputs are durable, but {e}"))?;
        }
        Ok(())
    }

    fn deletes_on_ack(&self) -> bool {
        self.cfg.delete_after_success
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_are_url_decoded_last_segments() {
        assert_eq!(super::name_of("a/b/%5B-PRMD%3DEG%5D.json"), "[-PRMD=EG].json");
        assert_eq!(super::name_of("plain.json"), "plain.json");
    }
}
