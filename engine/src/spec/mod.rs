//! The spec model: what a pipeline file says. One model for YAML and TOML.
//!
//! ```yaml
//! version: 1
//! name: copy-json
//! defaults: { concurrency: 8 }
//! stores:
//!   src: { url: "${SRC_URL:-file://./var/in}" }
//! nodes:
//!   list:  { kind: list, store: src, suffix: ".json" }
//!   fetch: { kind: fetch, input: list, concurrency: 16 }
//!   write: { kind: put, input: fetch, store: dst, key: "copied/{{ name }}" }
//! ```
//!
//! The top level is typed here. A node's own settings depend on its kind and are typed by
//! the kind (see [`crate::api::NodeKind`]); a store's settings depend on its URL scheme
//! and are typed by the store opener. Every struct denies unknown fields.

pub mod dag;
pub mod errors;
pub(crate) mod fields;
pub(crate) mod graph;
pub(crate) mod hints;
pub mod interpolate;
pub mod load;
pub mod locate;
pub(crate) mod overlap;
pub mod redact;
pub mod reference;
pub mod schema;
pub(crate) mod stores;
pub(crate) mod trust;

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use serde_json::Value;

use crate::spec::errors::ErrorSink;
use crate::spec::locate::SpecPath;

/// The keys at the top of a spec file.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SpecHeader {
    /// Spec format version; only `1` exists.
    #[schemars(range(min = 1, max = 1))]
    pub version: u32,
    /// The pipeline's name, used in logs, plans and reports.
    pub name: String,
    /// Free text for people reading the spec.
    #[serde(default)]
    pub description: Option<String>,
    /// Settings that apply to every node unless the node says otherwise.
    #[serde(default)]
    pub defaults: Defaults,
    /// Named stores: where objects are listed, read and written, as URLs
    /// (`file://./var/in`, `s3://bucket/prefix`).
    #[serde(default)]
    pub stores: IndexMap<String, serde_json::Value>,
    /// The nodes, by name. Each names its `kind` and its `input` (one or several upstream
    /// nodes, `node` or `node.port`).
    pub nodes: IndexMap<String, serde_json::Value>,
    /// Where the run's figures go at its end.
    #[serde(default)]
    pub metrics: Metrics,
    /// Test cases for `dqpipe test` (see the README): input objects, stubbed answers of
    /// the nodes that call out, and what should become of each object. Not read by runs.
    #[serde(default)]
    pub tests: Vec<serde_json::Value>,
}

/// The run's metrics, pushed at its end (the way batch jobs report to Prometheus).
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Metrics {
    /// A Prometheus Pushgateway (`http://pushgateway:9091`); empty: no push. The run's
    /// figures go to the group `job=<pipeline>` (and `shard=<index>` when sharded).
    pub pushgateway: String,
}

/// The most items one node may work on at once (`concurrency`, `--concurrency`).
pub const MAX_CONCURRENCY: u64 = 4096;

/// The most items a node whose concurrency adapts works on at once, unless
/// `defaults.max_concurrency` says otherwise.
pub const DEFAULT_MAX_CONCURRENCY: usize = 256;

/// Settings shared by all nodes.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Defaults {
    /// How many items a node works on at once, unless the node sets `concurrency`; for
    /// the nodes whose concurrency adapts (`fetch`, `put`, `delete`, `stamp`: their work is
    /// waiting on requests), where their limit starts.
    #[schemars(range(min = 1, max = MAX_CONCURRENCY))]
    pub concurrency: usize,
    /// The highest limit a node whose concurrency adapts may reach: it rises while items
    /// take no longer and nothing is throttled, and falls at a `503 SlowDown`, a `429`, a
    /// timeout or items that take longer (see docs/spec.md, "Concurrency").
    #[schemars(range(min = 1, max = MAX_CONCURRENCY))]
    pub max_concurrency: usize,
    /// How many items may wait between two nodes. Bounds memory whatever the number of
    /// objects: a fast node waits for a slow one (backpressure).
    #[schemars(range(min = 1, max = 65536))]
    pub channel_capacity: usize,
    /// How many bytes of source objects (their listed sizes) may be in the pipeline at
    /// once; a source waits before emitting more. Bounds memory when objects are large, as
    /// `channel_capacity` does when they are many. An object counts at its full size when
    /// a node reads whole bodies into memory (a parse), times the node's output growth
    /// (`NodeKind::body_growth`), else at most
    /// `spool_threshold_bytes` (beyond that it is on disk); one larger than the budget
    /// still goes through, alone. From 1 KiB to 1 TiB.
    #[schemars(range(min = 1024, max = 1099511627776u64))]
    pub max_bytes_in_flight: u64,
    /// Bodies up to this size stay in memory; larger ones are spooled to a temporary file.
    /// At most 1 GiB.
    #[schemars(range(min = 0, max = 1073741824))]
    pub spool_threshold_bytes: u64,
    /// Where spooled bodies go; the system's temporary directory when unset.
    pub spool_dir: Option<String>,
    /// When the run stops itself and leaves the rest for a rerun (see `run/halt.rs`).
    pub halt: HaltPolicy,
    /// How long a run's lease lasts unless renewed (every third of it), in seconds: a
    /// second run of the same pipeline and shard while one holds it exits with code 5;
    /// a run killed without releasing it blocks the next for at most this long. 0: no
    /// lease. Taken in the store of the sources' done markers (`resume`).
    #[schemars(range(min = 0, max = 86400))]
    pub lease_secs: u64,
}

/// When a run stops itself: a dependency down, or more failures than the pipeline
/// tolerates. Shown in plans and the report.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct HaltPolicy {
    /// Objects failed in a row at one node for a transient reason (clamd gone, a bucket
    /// unreachable): 50.
    #[schemars(range(min = 1, max = 9007199254740991u64))]
    pub in_a_row: u64,
    /// Objects failed in all (transient failures), whatever came between. Unset: no limit.
    #[schemars(range(min = 1, max = 9007199254740991u64))]
    pub failures: Option<u64>,
    /// Failed objects as a percentage of those finished, judged once 100 have finished.
    /// Unset: no limit.
    #[schemars(range(min = 0, max = 100))]
    pub percent: Option<f64>,
}

impl Default for HaltPolicy {
    fn default() -> Self {
        Self { in_a_row: 50, failures: None, percent: None }
    }
}

impl HaltPolicy {
    /// The policy as a plan and a report say it.
    pub fn describe(&self) -> String {
        let mut parts = vec![format!("{} objects failed in a row at one node", self.in_a_row)];
        if let Some(n) = self.failures {
            parts.push(format!("{n} objects failed in all"));
        }
        if let Some(p) = self.percent {
            parts.push(format!("over {p}% of finished objects failed (from 100 finished)"));
        }
        parts.join("; or ")
    }
}

impl Default for Defaults {
    fn default() -> Self {
        Self {
            concurrency: 8,
            max_concurrency: DEFAULT_MAX_CONCURRENCY,
            channel_capacity: 64,
            max_bytes_in_flight: 64 * 1024 * 1024,
            spool_threshold_bytes: 8 * 1024 * 1024,
            spool_dir: None,
            halt: HaltPolicy::default(),
            lease_secs: 120,
        }
    }
}

/// A store as the spec gives it: its URL and the settings its scheme understands.
#[derive(Debug, Clone)]
pub struct StoreSpec {
    pub name: String,
    pub url: String,
    /// `trusted: true`: only what a scanner passed as clean may be written here
    /// (checked by `validate`, see `trust.rs`).
    pub trusted: bool,
    /// `max_requests_per_second`: the most object requests that start in a second.
    pub max_requests_per_second: Option<f64>,
    /// Everything but `url`, checked by the opener of the URL's scheme.
    pub options: serde_json::Map<String, serde_json::Value>,
    pub path: SpecPath,
}

/// A node as the spec gives it, before its kind has checked its settings.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    pub name: String,
    pub kind: String,
    pub inputs: Vec<InputRef>,
    pub concurrency: Option<NodeConcurrency>,
    pub description: Option<String>,
    /// The kind's own settings: everything but the common keys.
    pub config: serde_json::Map<String, serde_json::Value>,
    pub path: SpecPath,
}

/// A node's `concurrency` as the spec gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeConcurrency {
    /// A number: that many items at once, always.
    Fixed(usize),
    /// `adaptive`: a limit that follows how the node's requests fare (kinds that declare
    /// [`crate::api::NodeKind::adaptive`] are so unless a number is set).
    Adaptive,
}

/// A node's concurrency as a run uses it, after the defaults and the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Concurrency {
    Fixed(usize),
    /// Starts at `start` (`defaults.concurrency`), moves within 1 and `max`
    /// (`defaults.max_concurrency`).
    Adaptive {
        start: usize,
        max: usize,
    },
}

impl Concurrency {
    /// The limit it starts at.
    pub fn start(&self) -> usize {
        match *self {
            Concurrency::Fixed(n) => n,
            Concurrency::Adaptive { start, .. } => start,
        }
    }
}

impl std::fmt::Display for Concurrency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Concurrency::Fixed(n) => write!(f, "{n}"),
            Concurrency::Adaptive { start, max } => write!(f, "adaptive (from {start}, at most {max})"),
        }
    }
}

/// Keys every node may have, whatever its kind.
pub const COMMON_NODE_KEYS: &[&str] = &["kind", "input", "concurrency", "description"];

/// `input: scan.clean` names node `scan`, port `clean`; `input: fetch` names the node's
/// default port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputRef {
    pub node: String,
    pub port: Option<String>,
    pub path: SpecPath,
}

impl InputRef {
    pub fn parse(s: &str, path: SpecPath) -> Self {
        match s.split_once('.') {
            Some((node, port)) => Self { node: node.to_string(), port: Some(port.to_string()), path },
            None => Self { node: s.to_string(), port: None, path },
        }
    }
}

impl NodeSpec {
    /// Separates a node's common keys from its kind's settings.
    pub(crate) fn from_value(
        name: &str,
        value: &Value,
        path: &SpecPath,
        errors: &mut ErrorSink<'_>,
    ) -> Option<NodeSpec> {
        let Value::Object(map) = value else {
            errors.push(path, "a node is a mapping with at least `kind`");
            return None;
        };
        let mut config = map.clone();
        for k in COMMON_NODE_KEYS {
            config.shift_remove(*k);
        }
        let kind = match map.get("kind") {
            Some(Value::String(k)) => k.clone(),
            Some(_) => {
                errors.push(&path.key("kind"), "must be a string naming a node kind");
                return None;
            }
            None => {
                errors.push(path, "missing `kind`");
                return None;
            }
        };
        let mut inputs = Vec::new();
        match map.get("input") {
            None => {}
            Some(Value::String(s)) => inputs.push(InputRef::parse(s, path.key("input"))),
            Some(Value::Array(a)) => {
                for (i, el) in a.iter().enumerate() {
                    match el {
                        Value::String(s) => inputs.push(InputRef::parse(s, path.key("input").index(i))),
                        _ => errors.push(&path.key("input").index(i), "must be a string: `node` or `node.port`"),
                    }
                }
            }
            Some(_) => errors.push(&path.key("input"), "must be `node`, `node.port` or a list of them"),
        }
        let concurrency = match map.get("concurrency") {
            None => None,
            Some(Value::String(s)) if s == "adaptive" => Some(NodeConcurrency::Adaptive),
            // A number, or a string holding one (`"${SCAN_CONCURRENCY:-8}"`).
            Some(v) => match v.as_u64().or_else(|| v.as_str().and_then(|s| s.trim().parse().ok())) {
                Some(n) if (1..=MAX_CONCURRENCY).contains(&n) => Some(NodeConcurrency::Fixed(n as usize)),
                _ => {
                    errors.push(
                        &path.key("concurrency"),
                        format!("{v} is out of range: use a whole number from 1 to {MAX_CONCURRENCY}, or `adaptive`"),
                    );
                    None
                }
            },
        };
        let description = map.get("description").and_then(|d| d.as_str()).map(String::from);
        Some(NodeSpec { name: name.to_string(), kind, inputs, concurrency, description, config, path: path.clone() })
    }
}
