//! `filter`: keeps the items a jq predicate holds for, and drops the rest.
//!
//! ```yaml
//! only_2022:
//!   kind: filter
//!   input: records
//!   predicate: '.date >= "2022-01-01"'
//! csv_only:
//!   kind: filter
//!   input: list
//!   reads: metadata                 # `.` is the item's metadata: no fetch needed
//!   predicate: '.name | endswith(".csv")'
//! ```
//!
//! A dropped item is not a failure: its object is complete, done-marked, counted
//! `dropped` in the summary, report and metrics, never a problem and never an alert. The
//! predicate holds as jq's `any` reads it: for a value that is neither `false` nor `null`;
//! `empty` drops. A predicate that fails on an item (`error(...)`, a type error), or a
//! document that is not JSON, sends the item to `failed` with the reason; `failed` may be
//! left unrouted, and its objects are then refused (left at the source, exit 3), never
//! dropped in silence. Predicates
//! compile when the spec loads: `validate` places a syntax error at its line and column.

use std::sync::Arc;

use async_trait::async_trait;
use dqpipe_engine::api::{
    BuildContext, Built, ConfigError, Context, Emitter, Item, ItemError, KindConfig, PortDecl, Problem, Processor, Role,
};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

use crate::invalid::Invalid;
use crate::map::{compile, jq::Program};
use crate::parse::{parse_body_within, run_bounded, Limits};

/// What a `filter`'s predicate reads as `.`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Reads {
    /// The item's body, parsed as JSON (`$meta` is the metadata).
    #[default]
    Document,
    /// The item's metadata (`key`, `name`, `size`, `last_modified`, fields set upstream):
    /// no body needed, so a filter can come straight after a `list`.
    Metadata,
}

/// Settings of a `filter` node.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    /// The jq predicate: items for which it gives a value that is neither `false` nor
    /// `null` are kept (`out`); the rest are dropped (`dropped`).
    pub predicate: String,
    /// What `.` is: the parsed `document` (the default) or the item's `metadata`.
    #[serde(default)]
    pub reads: Reads,
    /// Documents larger than this go to `failed` without being parsed (`reads: document`).
    #[serde(default = "crate::parse::default_max_bytes")]
    #[schemars(range(min = 1, max = 4294967296u64))]
    pub max_bytes: u64,
    /// The longest a predicate may run on one item; past it the item goes to `failed`.
    #[serde(default = "crate::parse::default_time_limit")]
    #[schemars(range(min = 1, max = 86400))]
    pub time_limit_secs: u64,
    /// The most a predicate may allocate on one item, in MiB; past it the item goes to
    /// `failed`. A node holds at most its concurrency times this.
    #[serde(default = "crate::parse::default_memory_limit")]
    #[schemars(range(min = 1, max = 1048576))]
    pub memory_limit_mb: u64,
}

const PORTS: &[PortDecl] = &[
    PortDecl::out("out", "items the predicate holds for, unchanged"),
    PortDecl::dropped(
        "dropped",
        "items it does not hold for: unrouted, their objects are complete and counted dropped",
    ),
    PortDecl::problem(
        "failed",
        &["reason"],
        "the predicate failed, or the document is not JSON, with `reason`. Unrouted, their objects are refused: left \
         at the source, exit 3",
    )
    .optional(),
];

impl KindConfig for FilterConfig {
    const NAME: &'static str = "filter";
    const SUMMARY: &'static str = "Keeps the items a jq predicate holds for; the others are dropped, not failed.";
    const ROLE: Role = Role::Processor;
    const PORTS: &'static [PortDecl] = PORTS;
    const EXAMPLE: &'static str = include_str!("kind_examples/filter.yaml");
    const CPU_BOUND: bool = true;
    const READS_WHOLE_BODY: bool = true;
    fn build(self, _ctx: &BuildContext) -> Result<Built, ConfigError> {
        let predicate = Arc::new(compile("predicate", &self.predicate)?);
        Ok(Built::Processor(Arc::new(Filter { predicate, cfg: self })))
    }
}

struct Filter {
    predicate: Arc<Program>,
    cfg: FilterConfig,
}

/// What `filter` and `route` decide with: `decide(.`, `$meta)` on a blocking thread within
/// `limits`, `.` being the parsed document or the metadata (`reads`); the port it names,
/// or why there is none.
pub(crate) async fn decide(
    item: &Item,
    reads: Reads,
    kind: &str,
    max_bytes: u64,
    limits: Limits,
    decide: impl FnOnce(&Value, &Value) -> Result<&'static str, String> + Send + 'static,
) -> Result<Result<&'static str, Invalid>, ItemError> {
    let meta = Value::Object(item.meta.clone());
    Ok(match reads {
        Reads::Metadata => run_bounded(limits, move || decide(&meta, &meta)).await,
        Reads::Document => {
            parse_body_within(item, kind, max_bytes, limits, move |bytes| {
                let doc: Value = serde_json::from_slice(&bytes).map_err(|e| format!("not valid JSON: {e}"))?;
                decide(&doc, &meta)
            })
            .await?
        }
    })
}

/// Sends `item` out of the port decided, or to `failed` with the reason.
pub(crate) async fn send(mut item: Item, out: &Emitter, port: Result<&'static str, Invalid>) -> Result<(), ItemError> {
    match port {
        Ok(port) => out.emit(port, item).await,
        Err(reason) => {
            item.set_problem(Problem::Unparseable { reason: reason.0 });
            out.emit("failed", item).await
        }
    }
    .map_err(ItemError::from)
}

#[async_trait]
impl Processor for Filter {
    async fn process(&self, item: Item, out: &Emitter, _cx: &Context) -> Result<(), ItemError> {
        let predicate = self.predicate.clone();
        let (reads, max) = (self.cfg.reads, self.cfg.max_bytes);
        let limit = Limits::new(self.cfg.time_limit_secs, self.cfg.memory_limit_mb);
        let port = decide(&item, reads, "filter", max, limit, move |doc, meta| {
            predicate.holds(doc, meta).map(|kept| if kept { "out" } else { "dropped" }).map_err(String::from)
        })
        .await?;
        send(item, out, port).await
    }

    /// Decides on the metadata in a plan (`reads: metadata`), or in `--deep` plans on the
    /// bytes read; otherwise assumes the item is kept, and says so.
    async fn preview(&self, item: Item, out: &Emitter, cx: &Context, deep: bool) -> Result<(), ItemError> {
        if self.cfg.reads == Reads::Metadata || (deep && item.body.is_some()) {
            return self.process(item, out, cx).await;
        }
        item.plan_note("the filter reads the content: assumed kept (plan --deep decides)");
        out.emit("out", item).await.map_err(ItemError::from)
    }
}
