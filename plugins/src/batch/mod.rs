//! `batch`: gathers items into one object per group (the daily NDJSON or CSV file, an
//! archive's index, a reconciliation's counts), written once the batch is full or the
//! input ends.
//!
//! ```yaml
//! daily:
//!   kind: batch
//!   input: kept
//!   store: internal
//!   key: "daily/{{ msg_date }}/{{ batch }}.ndjson"   # {{ batch }}: the batch's id
//!   format: ndjson                                     # or csv, or summary
//! ```
//!
//! Items whose key renders alike (`{{ batch }}` left out) are one group; each group has
//! one batch open at a time, written when it holds `max_items` items or `max_bytes`
//! bytes, when more than `max_open` batches are open (the fullest goes), and at the end of
//! the input. Until its batch object is durable an item is held ([`Held`]): its source
//! object is not done-marked, not deleted at its source, not acknowledged. Exactly-once
//! across runs and kills is in `manifest.rs`.
//!
//! Memory: a held item keeps its object's lineage and a few fields (about 300 bytes), and
//! the encoded rows spill to the spool past `spool_threshold_bytes`; so a node holds at
//! most `max_open` x `max_items` items, 8 x 50,000 x 300 B = 120 MB at the defaults, plus
//! `max_open` spool buffers.

mod manifest;
mod open;
mod write;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use dqpipe_engine::api::store::{Access, Store};
use dqpipe_engine::api::template::KeyTemplate;
use dqpipe_engine::api::{
    BuildContext, Built, ConfigError, Context, Emitter, Held, Item, ItemError, KindConfig, PortDecl, Problem,
    Processor, Role,
};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

use crate::retry::RetryPolicy;
use manifest::{member_id, Committed};
use open::Open;

/// Where the batch's id goes in a rendered key until the batch is written.
const ID_SLOT: &str = "\u{1}";

/// Settings of a `batch` node.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    /// The store to write batch objects to (a name under `stores`).
    pub store: String,
    /// The batch object's key, a template over the items' fields that must hold `{{ batch
    /// }}`, the batch's id (a digest of its members): items whose key renders alike
    /// without it are one group.
    pub key: String,
    /// `ndjson` (one JSON line per item, the default), `csv` (a header row, then one row
    /// per item), or `summary` (one JSON document: `count` and the `sum` of fields).
    #[serde(default)]
    pub format: Format,
    /// What a row is: the item's `document` (its body, as JSON: the default) or its
    /// `metadata` (its fields: `member`, `member_size`, what a `map` set).
    #[serde(default)]
    pub rows: Rows,
    /// The fields of a row, in order: CSV columns, or the fields taken from the metadata.
    /// For CSV of documents, empty means the first record's fields.
    #[serde(default)]
    pub columns: Vec<String>,
    /// `format: summary`: the numeric fields summed per batch.
    #[serde(default)]
    pub sum: Vec<String>,
    /// A batch is written once it holds this many items.
    #[serde(default = "default_max_items")]
    #[schemars(range(min = 1, max = 10000000))]
    pub max_items: usize,
    /// ... or this many bytes of rows (at most 5 GiB, an S3 PUT's limit).
    #[serde(default = "default_max_bytes")]
    #[schemars(range(min = 1, max = 5368709120u64))]
    pub max_bytes: u64,
    /// The most batches open at once (groups being gathered); past it, the fullest is written.
    #[serde(default = "default_max_open")]
    #[schemars(range(min = 1, max = 4096))]
    pub max_open: usize,
    /// Documents larger than this go to `failed` without being parsed (`rows: document`).
    #[serde(default = "crate::parse::default_max_bytes")]
    #[schemars(range(min = 1, max = 4294967296u64))]
    pub max_document_bytes: u64,
    /// Content type stored with the batch objects (by default that of the format).
    #[serde(default)]
    pub content_type: Option<String>,
    /// Retries of transient store failures.
    #[serde(default)]
    pub retry: RetryPolicy,
}

fn default_max_items() -> usize {
    50_000
}
fn default_max_bytes() -> u64 {
    64 << 20
}
fn default_max_open() -> usize {
    8
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    #[default]
    Ndjson,
    Csv,
    Summary,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Rows {
    #[default]
    Document,
    Metadata,
}

const PORTS: &[PortDecl] = &[
    PortDecl::out("out", "each item once the batch object that holds it is durable, with `batch_key`")
        .setting(&["batch_key", "batch_store"]),
    PortDecl::problem(
        "failed",
        &["reason"],
        "items that cannot be a row, with `reason`: not JSON, not an object for CSV, a field outside the \
         columns, a sum that is no number, a key without a value. Unrouted, their objects are refused: left at \
         the source, exit 3",
    )
    .optional(),
];

impl KindConfig for BatchConfig {
    const NAME: &'static str = "batch";
    const SUMMARY: &'static str =
        "Gathers items into one NDJSON, CSV or summary object per group; each item in exactly one, across reruns.";
    const ROLE: Role = Role::Processor;
    const PORTS: &'static [PortDecl] = PORTS;
    const EXAMPLE: &'static str = include_str!("../kind_examples/batch.yaml");
    fn build(self, ctx: &BuildContext) -> Result<Built, ConfigError> {
        let store = ctx.store_that_can("store", &self.store, Access::Write)?;
        let key = ctx.template_providing("key", &self.key, &["batch"])?;
        if !key.variables().iter().any(|v| v == "batch") {
            return Err(ConfigError::at(
                "key",
                format!(
                    "the key {:?} does not hold `{{{{ batch }}}}`: every batch of a group would be written to one key, \
                     and a later run's batch would replace the records of an earlier one; add it, e.g. \
                     \"daily/{{{{ msg_date }}}}/{{{{ batch }}}}.ndjson\"",
                    self.key
                ),
            ));
        }
        if self.rows == Rows::Metadata && self.columns.is_empty() && self.format != Format::Summary {
            return Err(ConfigError::at("columns", "`rows: metadata` needs `columns`: the fields each row takes"));
        }
        if self.format != Format::Summary && !self.sum.is_empty() {
            return Err(ConfigError::at("sum", "`sum` is for `format: summary`; set it, or remove `sum`"));
        }
        let prefix = format!("_dqpipe/batches/{}/{}", ctx.pipeline, ctx.node);
        Ok(Built::Processor(Arc::new(Batcher {
            name: ctx.node.to_string(),
            cfg: self,
            store,
            key,
            prefix,
            committed: tokio::sync::Mutex::default(),
            open: Mutex::default(),
            opened: AtomicU64::new(0),
            written: AtomicU64::new(0),
            already: AtomicU64::new(0),
        })))
    }
}

struct Batcher {
    name: String,
    cfg: BatchConfig,
    store: Arc<dyn Store>,
    key: KeyTemplate,
    /// Where the manifests are (`_dqpipe/batches/<pipeline>/<node>`).
    prefix: String,
    /// Per group: the members earlier runs committed, read at the group's first item.
    committed: tokio::sync::Mutex<HashMap<String, Arc<tokio::sync::OnceCell<Committed>>>>,
    /// The open batches, by group.
    open: Mutex<HashMap<String, Open>>,
    opened: AtomicU64,
    written: AtomicU64,
    already: AtomicU64,
}

impl Batcher {
    /// The group: the key rendered with the batch's id left out, or why it cannot be.
    fn pattern_for(&self, item: &Item) -> Result<String, String> {
        let mut meta = item.meta.clone();
        meta.insert("batch".into(), ID_SLOT.into());
        for var in self.key.variables() {
            if matches!(meta.get(&var), None | Some(Value::Null)) {
                return Err(format!("`{{{{ {var} }}}}` has no value for this item (nodes.{}.key)", self.name));
            }
        }
        let key = crate::put::normalize_key(&self.key.render(&meta).map_err(|e| e.0)?);
        if key == ID_SLOT {
            return Err(format!("the key template {:?} gave only the batch id", self.key.source()));
        }
        Ok(key)
    }

    /// What earlier runs committed for this group (read once per run and group).
    async fn committed(&self, pattern: &str, cx: &Context) -> Result<Committed, ItemError> {
        if cx.reprocess() {
            return Ok(Committed::default());
        }
        let cell = self.committed.lock().await.entry(pattern.to_string()).or_default().clone();
        let folder = manifest::group_folder(&self.prefix, pattern);
        cell.get_or_try_init(|| manifest::read_group(&*self.store, &folder, &self.cfg.retry, cx)).await.cloned()
    }

    /// The item's row: its document or the chosen fields of its metadata.
    async fn row(&self, item: &Item) -> Result<Result<Value, crate::invalid::Invalid>, ItemError> {
        if self.cfg.rows == Rows::Metadata {
            let pick = |c: &String| (c.clone(), item.meta.get(c).cloned().unwrap_or(Value::Null));
            let fields = if self.cfg.columns.is_empty() {
                item.meta.clone()
            } else {
                self.cfg.columns.iter().map(pick).collect()
            };
            return Ok(Ok(Value::Object(fields)));
        }
        crate::parse::parse_body(item, "batch", self.cfg.max_document_bytes, |bytes| {
            serde_json::from_slice(&bytes).map_err(|e| format!("not valid JSON: {e}"))
        })
        .await
    }

    /// Adds the item to its group's batch; returns the batches now due to be written.
    fn add(
        &self,
        pattern: String,
        row: &Value,
        (id, item): (String, Item),
        cx: &Context,
    ) -> Result<Vec<Open>, Box<(Item, String)>> {
        let Ok(mut open) = self.open.lock() else {
            return Err(Box::new((item, "internal error: a batch task panicked".into())));
        };
        let opened = &self.opened;
        let batch = open.entry(pattern.clone()).or_insert_with(|| {
            Open::new(pattern.clone(), &self.cfg, cx.spool(), opened.fetch_add(1, Ordering::Relaxed))
        });
        if let Err(reason) = batch.add(&self.cfg, row) {
            if batch.items() == 0 {
                open.remove(&pattern);
            }
            return Err(Box::new((item, reason.0)));
        }
        batch.hold(id, item.hold(&self.name));
        let mut due = Vec::new();
        if batch.items() >= self.cfg.max_items || batch.bytes() >= self.cfg.max_bytes {
            due.extend(open.remove(&pattern));
        }
        if open.len() > self.cfg.max_open {
            let fullest = open.iter().max_by_key(|(_, b)| (b.bytes(), u64::MAX - b.opened)).map(|(k, _)| k.clone());
            due.extend(fullest.and_then(|k| open.remove(&k)));
        }
        Ok(due)
    }
}

async fn refuse(mut item: Item, out: &Emitter, reason: String) -> Result<(), ItemError> {
    item.set_problem(Problem::Unparseable { reason });
    out.emit("failed", item).await.map_err(ItemError::from)
}

#[async_trait]
impl Processor for Batcher {
    async fn process(&self, mut item: Item, out: &Emitter, cx: &Context) -> Result<(), ItemError> {
        let pattern = match self.pattern_for(&item) {
            Ok(p) => p,
            Err(reason) => return refuse(item, out, format!("batch key: {reason}")).await,
        };
        let committed = self.committed(&pattern, cx).await?;
        // The member's id, once: to look up, and to hold it by.
        let id = member_id(&item);
        if let Some(key) = committed.get(&id) {
            // Written into a batch object by an earlier run that ended before its object
            // was done-marked: not written twice.
            self.already.fetch_add(1, Ordering::Relaxed);
            item.set("batch_key", key.clone());
            item.set("batch_store", self.cfg.store.clone());
            return out.emit("out", item).await.map_err(ItemError::from);
        }
        let row = match self.row(&item).await? {
            Ok(row) => row,
            Err(reason) => return refuse(item, out, reason.0).await,
        };
        match self.add(pattern, &row, (id, item), cx) {
            Ok(due) => {
                for batch in due {
                    self.write(batch, out, cx).await;
                }
                Ok(())
            }
            Err(refused) => refuse(refused.0, out, refused.1).await,
        }
    }

    /// Writes nothing: records where the item's batch would be written.
    async fn preview(&self, mut item: Item, out: &Emitter, _cx: &Context, _deep: bool) -> Result<(), ItemError> {
        let missing: Vec<String> =
            self.key.variables().into_iter().filter(|v| v != "batch" && !item.meta.contains_key(v.as_str())).collect();
        if missing.is_empty() {
            let pattern = self.pattern_for(&item).map_err(|e| ItemError::refused(format!("batch key: {e}")))?;
            let key = pattern.replace(ID_SLOT, "<batch>");
            item.plan_write(&self.name, &self.cfg.store, Ok(key.clone()));
            item.set("batch_key", key);
        } else {
            item.plan_write(&self.name, &self.cfg.store, Err(missing));
        }
        item.set("batch_store", self.cfg.store.clone());
        out.emit("out", item).await.map_err(ItemError::from)
    }

    async fn end_of_input(&self, out: &Emitter, cx: &Context) {
        let open: Vec<Open> = match self.open.lock() {
            Ok(mut open) => open.drain().map(|(_, b)| b).collect(),
            Err(_) => return,
        };
        let mut open = open;
        open.sort_by_key(|b| b.opened);
        for batch in open {
            self.write(batch, out, cx).await;
        }
    }

    fn abandon(&self) {
        if let Ok(mut open) = self.open.lock() {
            open.clear();
        }
    }

    fn counters(&self) -> Vec<(String, u64)> {
        vec![
            ("batches_written".into(), self.written.load(Ordering::Relaxed)),
            ("already_batched".into(), self.already.load(Ordering::Relaxed)),
        ]
    }
}

/// The held items, for `write.rs`.
type Members = Vec<(String, Held)>;
