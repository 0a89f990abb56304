//! `route`: sends each item to the first of its named routes whose jq predicate holds,
//! or to `else`.
//!
//! ```yaml
//! classify:
//!   kind: route
//!   input: fetch
//!   routes:                         # in order: the first that holds takes the item
//!     api: 'has("APIData")'
//!     ga: '.carrier | startswith("G")'
//!   drop: [else]                    # what no route takes is dropped, on purpose
//! api_out: { kind: put, input: classify.api, ... }
//! ga_out: { kind: put, input: classify.ga, ... }
//! ```
//!
//! Every route, and `else`, is a port that must be routed, unless `drop` names it: its
//! items are then dropped as a `filter` drops them (complete, counted `dropped`). The
//! predicates read the document, or with `reads: metadata` the item's metadata, and hold
//! as a `filter`'s do; a predicate that fails sends the item to `failed` (unrouted: its
//! object is refused, left at the source). Predicates compile when the spec loads, their
//! errors placed at their line and column.

use std::sync::Arc;

use async_trait::async_trait;
use dqpipe_engine::api::{
    BuildContext, Built, ConfigError, Context, Emitter, Item, ItemError, KindConfig, PortDecl, Processor, Role,
};
use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

use crate::filter::{decide, send, Reads};
use crate::map::{compile, jq::Program};

/// Settings of a `route` node.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Route name -> jq predicate, in order: an item goes to the first route whose
    /// predicate holds (a value neither `false` nor `null`), else to `else`. Each name is a
    /// port (`input: node.name`).
    pub routes: IndexMap<String, String>,
    /// Routes (or `else`) whose items are dropped on purpose rather than sent on: those
    /// ports need no consumer.
    #[serde(default)]
    pub drop: Vec<String>,
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
    PortDecl::out("else", "items no route's predicate held for").required(),
    PortDecl::problem(
        "failed",
        &["reason"],
        "a predicate failed, or the document is not JSON, with `reason`. Unrouted, their objects are refused: left at \
         the source, exit 3",
    )
    .optional(),
];

/// The names `routes` may not take: the kind's own ports.
const RESERVED: &[&str] = &["else", "failed"];

/// A route's name as a port name, for the lifetime of the process. Port names are
/// `&'static str` throughout the engine (declared by kinds as constants); a route's are
/// read from the spec, a handful per spec loaded, so they are leaked rather than carried
/// as owned strings through every port table.
fn port_name(name: &str) -> &'static str {
    Box::leak(name.to_string().into_boxed_str())
}

impl KindConfig for RouteConfig {
    const NAME: &'static str = "route";
    const SUMMARY: &'static str =
        "Sends each item to the first named route whose jq predicate holds, or to `else`; each route is a port.";
    const ROLE: Role = Role::Processor;
    const PORTS: &'static [PortDecl] = PORTS;
    const EXAMPLE: &'static str = include_str!("kind_examples/route.yaml");
    const CPU_BOUND: bool = true;
    const READS_WHOLE_BODY: bool = true;

    fn ports_named(config: &serde_json::Map<String, Value>) -> Vec<PortDecl> {
        let dropped: Vec<&str> =
            config.get("drop").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
        let routes = config.get("routes").and_then(Value::as_object).into_iter().flatten();
        let mut ports: Vec<PortDecl> = routes
            .filter(|(name, _)| !RESERVED.contains(&name.as_str()))
            .map(|(name, _)| {
                let port = port_name(name);
                match dropped.contains(&name.as_str()) {
                    true => PortDecl::dropped(port, "a route whose items are dropped (`drop`)"),
                    false => PortDecl::out(port, "items this route's predicate held for").required(),
                }
            })
            .collect();
        // `else` in `drop` replaces the kind's `else`.
        if dropped.contains(&"else") {
            ports.push(PortDecl::dropped("else", "items no route's predicate held for, dropped (`drop`)"));
        }
        ports
    }

    fn build(self, _ctx: &BuildContext) -> Result<Built, ConfigError> {
        if self.routes.is_empty() {
            return Err(ConfigError::at("routes", "name at least one route: `routes: { name: 'jq predicate' }`"));
        }
        let mut routes = Vec::new();
        for (name, code) in &self.routes {
            let identifier = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !identifier || RESERVED.contains(&name.as_str()) {
                return Err(ConfigError::at(
                    format!("routes.{name}"),
                    "a route's name is letters, digits and `_`, and not `else` or `failed` (inputs read it as \
                     `node.name`)",
                ));
            }
            routes.push((port_name(name), compile(&format!("routes.{name}"), code)?));
        }
        for (i, name) in self.drop.iter().enumerate() {
            if name != "else" && !self.routes.contains_key(name) {
                let known: Vec<&str> = self.routes.keys().map(String::as_str).chain(["else"]).collect();
                return Err(ConfigError::at(
                    format!("drop.{i}"),
                    format!("`{name}` is not a route; the routes are: {}", known.join(", ")),
                ));
            }
        }
        Ok(Built::Processor(Arc::new(Route { routes: Arc::new(routes), cfg: self })))
    }
}

struct Route {
    routes: Arc<Vec<(&'static str, Program)>>,
    cfg: RouteConfig,
}

/// The first route whose predicate holds on `doc`, `else` when none does.
fn choose(routes: &[(&'static str, Program)], doc: &Value, meta: &Value) -> Result<&'static str, String> {
    for (name, predicate) in routes {
        if predicate.holds(doc, meta).map_err(|e| format!("route `{name}`: {e}"))? {
            return Ok(name);
        }
    }
    Ok("else")
}

#[async_trait]
impl Processor for Route {
    async fn process(&self, item: Item, out: &Emitter, _cx: &Context) -> Result<(), ItemError> {
        let routes = self.routes.clone();
        let (reads, max) = (self.cfg.reads, self.cfg.max_bytes);
        let limit = crate::parse::Limits::new(self.cfg.time_limit_secs, self.cfg.memory_limit_mb);
        let port = decide(&item, reads, "route", max, limit, move |doc, meta| choose(&routes, doc, meta)).await?;
        send(item, out, port).await
    }

    /// Routes on the metadata in a plan (`reads: metadata`), or in `--deep` plans on the
    /// bytes read; otherwise the route needs the content, and the plan says so.
    async fn preview(&self, item: Item, out: &Emitter, cx: &Context, deep: bool) -> Result<(), ItemError> {
        if self.cfg.reads == Reads::Metadata || (deep && item.body.is_some()) {
            return self.process(item, out, cx).await;
        }
        item.plan_note("the route reads the content: shown on its first route (plan --deep decides)");
        let first = self.routes.first().map(|(name, _)| *name).unwrap_or("else");
        out.emit(first, item).await.map_err(ItemError::from)
    }
}
