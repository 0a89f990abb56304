//! `map`: reshapes each JSON document with a jq program written in the spec.
//!
//! ```yaml
//! transform:
//!   kind: map
//!   input: scan.clean
//!   program: |
//!     {id: .FPL.ARCID, file: $meta.name, body: .}
//!   fields:                       # item fields for templates downstream, from the output
//!     msg_date: '.body.date[0:10]'
//! ```
//!
//! The program reads the item's body as JSON (`.`) and its metadata as `$meta` (`key`,
//! `name`, `size`, and what nodes upstream set). Its one output is the new body. Programs
//! are compiled when the spec is loaded: `validate` reports a syntax error at its line
//! and column in the spec. A program that fails (`error("...")`) or gives several values,
//! or a body that is not JSON, sends the item to `failed` with the reason. A program that
//! gives no value (`select(...)` false, `empty`) drops the item, as a `filter` does (its
//! object complete, counted `dropped`), unless `on_empty: fail`.
//! jq (with jaq, a pure-Rust jq) rather than VRL: the people who edit specs know jq from
//! the shell, and a program can be tried with `dqpipe map` or `jq` itself.

pub mod budget;
pub mod jq;

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use dqpipe_engine::api::{
    BuildContext, Built, ConfigError, Context, Emitter, Item, ItemError, KindConfig, PortDecl, Problem, Processor, Role,
};
use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

use crate::parse::parse_body_within;
use jq::Program;

/// Settings of a `map` node.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MapConfig {
    /// The jq program: `.` is the document, `$meta` the item's metadata (`key`, `name`,
    /// `size`, ...). Its one output is the new document.
    pub program: String,
    /// Item fields set from the output, for templates downstream (`key: "{{ msg_date
    /// }}/{{ name }}"`): field name -> jq expression run on the program's output, with
    /// `$meta`. A string is kept as it is; other values as JSON text.
    #[serde(default)]
    pub fields: IndexMap<String, String>,
    /// Files larger than this go to `failed` without being parsed.
    #[serde(default = "crate::parse::default_max_bytes")]
    #[schemars(range(min = 1, max = 4294967296u64))]
    pub max_bytes: u64,
    /// What a program that gives no value (`empty`, a `select` that is false) means:
    /// `drop` the item (its object is complete, counted dropped), or `fail` (to `failed`).
    #[serde(default)]
    pub on_empty: OnEmpty,
    /// The longest the program may run on one item; past it the item goes to `failed`.
    #[serde(default = "crate::parse::default_time_limit")]
    #[schemars(range(min = 1, max = 86400))]
    pub time_limit_secs: u64,
    /// The most the program may allocate on one item, in MiB; past it the item goes to
    /// `failed`. A node holds at most its concurrency times this.
    #[serde(default = "crate::parse::default_memory_limit")]
    #[schemars(range(min = 1, max = 1048576))]
    pub memory_limit_mb: u64,
}

/// What a `map` does with an item its program gives no value for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnEmpty {
    /// Dropped on purpose, as a `filter` drops: complete, counted `dropped`.
    #[default]
    Drop,
    /// A failure, to `failed` with the reason.
    Fail,
}

const PORTS: &[PortDecl] = &[
    PortDecl::out("ok", "the program's output, with the `fields` set"),
    PortDecl::dropped("dropped", "items the program gave no value for (`on_empty: drop`)"),
    PortDecl::problem("failed", &["reason"], "not JSON, or the program failed or gave no value, with `reason`"),
];

impl KindConfig for MapConfig {
    const NAME: &'static str = "map";
    const SUMMARY: &'static str = "Reshapes each JSON document with a jq program written in the spec.";
    const ROLE: Role = Role::Processor;
    const PORTS: &'static [PortDecl] = PORTS;
    const EXAMPLE: &'static str = include_str!("../kind_examples/map.yaml");
    const CPU_BOUND: bool = true;
    const READS_WHOLE_BODY: bool = true;
    fn build(self, ctx: &BuildContext) -> Result<Built, ConfigError> {
        let program = compile("program", &self.program)?;
        let mut fields = Vec::new();
        for (name, code) in &self.fields {
            let identifier = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !identifier {
                return Err(ConfigError::at(
                    format!("fields.{name}"),
                    "a field name is letters, digits and `_` (templates read it as `{{ name }}`)",
                ));
            }
            fields.push((name.clone(), compile(&format!("fields.{name}"), code)?));
            ctx.sets("ok", name);
        }
        Ok(Built::Processor(Arc::new(Map { program: Arc::new(program), fields: Arc::new(fields), cfg: self })))
    }
}

/// A program compiled, or its syntax error at its place in the spec.
pub(crate) fn compile(field: &str, code: &str) -> Result<Program, ConfigError> {
    Program::compile(code).map_err(|e| {
        ConfigError::inside(
            field,
            code,
            e.line,
            e.column,
            format!("jq: {} (line {}, column {} of the program)", e.message, e.line + 1, e.column + 1),
        )
    })
}

struct Map {
    program: Arc<Program>,
    fields: Arc<Vec<(String, Program)>>,
    cfg: MapConfig,
}

/// What a map made of one document: the new body and the fields to set.
pub struct Mapped {
    pub body: Vec<u8>,
    pub fields: Vec<(String, Value)>,
}

/// Runs `program` (and the field programs) on one document: the CPU part of the node, also
/// used by `dqpipe map`. `Ok(None)` when the program gives no value.
pub fn apply(
    program: &Program,
    fields: &[(String, Program)],
    input: &[u8],
    meta: &Value,
) -> Result<Option<Mapped>, crate::invalid::Invalid> {
    let doc: Value = serde_json::from_slice(input).map_err(|e| format!("not valid JSON: {e}"))?;
    let Some(out) = program.run_optional(&doc, meta)? else { return Ok(None) };
    let mut set = Vec::new();
    for (name, p) in fields {
        let v = p.run(&out, meta).map_err(|e| format!("field `{name}`: {e}"))?;
        set.push((name.clone(), v));
    }
    let body = serde_json::to_vec(&out).map_err(|e| format!("writing the output: {e}"))?;
    Ok(Some(Mapped { body, fields: set }))
}

#[async_trait]
impl Processor for Map {
    async fn process(&self, mut item: Item, out: &Emitter, _cx: &Context) -> Result<(), ItemError> {
        let meta = Value::Object(item.meta.clone());
        let (program, fields) = (self.program.clone(), self.fields.clone());
        let limit = crate::parse::Limits::new(self.cfg.time_limit_secs, self.cfg.memory_limit_mb);
        let result = parse_body_within(&item, "map", self.cfg.max_bytes, limit, move |bytes| {
            apply(&program, &fields, &bytes, &meta).map_err(String::from)
        })
        .await?;
        match result {
            Ok(None) if self.cfg.on_empty == OnEmpty::Drop => out.emit("dropped", item).await,
            Ok(None) => {
                item.set_problem(Problem::Unparseable { reason: "the program gave no value".into() });
                out.emit("failed", item).await
            }
            Ok(Some(mapped)) => {
                for (name, value) in mapped.fields {
                    match value {
                        Value::String(s) => item.set(&name, s),
                        other => item.set(&name, other.to_string()),
                    }
                }
                item.body = Some(dqpipe_engine::api::body::Body::Memory(Bytes::from(mapped.body)));
                out.emit("ok", item).await
            }
            Err(reason) => {
                item.set_problem(Problem::Unparseable { reason: reason.0 });
                out.emit("failed", item).await
            }
        }
        .map_err(ItemError::from)
    }

    /// Maps in memory in `--deep` plans (the bytes were read); otherwise assumes the
    /// program succeeds, and says the fields need the content.
    async fn preview(&self, item: Item, out: &Emitter, cx: &Context, deep: bool) -> Result<(), ItemError> {
        if deep && item.body.is_some() {
            return self.process(item, out, cx).await;
        }
        if !self.fields.is_empty() {
            item.plan_note("the map's fields come from the content: plan --deep reads it");
        }
        out.emit("ok", item).await.map_err(ItemError::from)
    }
}
