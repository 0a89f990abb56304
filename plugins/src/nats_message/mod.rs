//! `nats_message`: the NATS archive transform, exactly as
//! ../shared/reference/nats-transform.md gives it.
//!
//! The output is built in an insertion-ordered map (serde_json with `preserve_order`); a
//! later write to an existing key replaces the value and keeps its position. Numbers keep
//! their original text (serde_json's `arbitrary_precision`), so a 20-digit integer stays an
//! integer. JSON is written compact, or with `json_style: python` exactly as the job dqpipe
//! replaces wrote it (Python's `json.dumps` with default arguments: `pyjson.rs`).

pub mod pyjson;

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use dqpipe_engine::api::body::{Body, BodyWriter, Spool};
use dqpipe_engine::api::{
    BuildContext, Built, ConfigError, Context, Emitter, Item, ItemError, KindConfig, PortDecl, Problem, Processor, Role,
};
use indexmap::IndexMap;
use schemars::JsonSchema;

use crate::nats_message::pyjson::Sink;
use crate::parse::parse_body;
use serde::Deserialize;
use serde_json::Value;

/// Settings of a `nats_message` node.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NatsMessageConfig {
    /// Files larger than this are dead-lettered without being parsed.
    #[serde(default = "crate::parse::default_max_bytes")]
    #[schemars(range(min = 1, max = 4294967296u64))]
    pub max_bytes: u64,
    /// How the record is written: `compact` (no spaces, UTF-8, numbers as in the input), or
    /// `python`: byte for byte what Python's `json.dumps(record)` writes (`", "` and `": "`,
    /// non-ASCII as `\uXXXX`, floats as Python's `repr`), for the record and for the
    /// `X400Message` string inside it. It also reads what Python reads and serde_json does
    /// not: lone surrogate escapes, and nesting to 1,000 levels.
    #[serde(default)]
    pub json_style: JsonStyle,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum JsonStyle {
    #[default]
    Compact,
    Python,
}

const PORTS: &[PortDecl] = &[
    PortDecl::out("ok", "the transformed message, with `msg_date`").setting(&["msg_date"]),
    PortDecl::problem("failed", &["reason"], "files that are not valid NATS messages, with `reason`"),
];

impl KindConfig for NatsMessageConfig {
    const NAME: &'static str = "nats_message";
    const SUMMARY: &'static str =
        "Transforms a NATS archive message (X400Message + ATS message) into the flat parsed record; sets `msg_date`.";
    const ROLE: Role = Role::Processor;
    const PORTS: &'static [PortDecl] = PORTS;
    const EXAMPLE: &'static str = include_str!("../kind_examples/nats_message.yaml");
    const CPU_BOUND: bool = true;
    const READS_WHOLE_BODY: bool = true;
    const BODY_GROWTH: u32 = 2;
    fn build(self, _ctx: &BuildContext) -> Result<Built, ConfigError> {
        Ok(Built::Processor(Arc::new(NatsMessage { cfg: self })))
    }
}

struct NatsMessage {
    cfg: NatsMessageConfig,
}

/// A transformed message and its partition date (`YYYY-MM-DD`).
#[derive(Debug)]
pub struct Transformed {
    pub json: Vec<u8>,
    pub msg_date: String,
}

/// The transform. `name` is the file name (URL-decoded last segment of the key). The
/// error names the problem.
pub fn transform(input: &[u8], name: &str) -> Result<Transformed, crate::invalid::Invalid> {
    let doc = parse_compact(input)?;
    // The output holds the input about twice (`entirejson`, and the X400 part as a string).
    let mut json = Vec::with_capacity(input.len() * 2 + input.len() / 4 + 4096);
    let msg_date = write_compact(&doc, name, &mut json)?;
    json.shrink_to_fit();
    Ok(Transformed { json, msg_date })
}

fn parse_compact(input: &[u8]) -> Result<Value, String> {
    serde_json::from_slice(input).map_err(|e| format!("not valid JSON: {e}"))
}

/// The record of a parsed message, written to `sink`; returns the partition date.
///
/// The output map holds references into the parsed input, not copies, and is written once:
/// with 1 MB messages, copying the tree and growing the buffer by doubling cost a third of
/// the transform's time (scripts/bench, W2).
fn write_compact(doc: &Value, name: &str, sink: &mut impl std::io::Write) -> Result<String, String> {
    let Value::Object(top) = doc else {
        return Err(format!("the top level is {}, not a JSON object", type_name(doc)));
    };
    // Insertion-ordered: a later write to an existing key replaces its value in place.
    let mut out: IndexMap<&str, Out<'_>> = IndexMap::new();
    // 1. Each top-level key in document order.
    for (k, v) in top {
        if k.to_lowercase() == "x400message" {
            let s = serde_json::to_string(v).map_err(|e| format!("serialising `{k}`: {e}"))?;
            out.insert(k, Out::Owned(s));
        } else {
            let Value::Object(fields) = v else {
                return Err(format!("top-level `{k}` is {}, not an object", type_name(v)));
            };
            for (f, fv) in fields {
                out.insert(f, Out::Value(fv));
            }
            out.insert("MessageType", Out::Str(k));
        }
    }
    // 2. The delivery time, and the partition it gives.
    let delivery = top
        .get("X400Message")
        .and_then(|x| x.get("envelope"))
        .and_then(|e| e.get("messageDeliveryTime"))
        .ok_or("no X400Message.envelope.messageDeliveryTime")?;
    let Value::String(delivery_text) = delivery else {
        return Err(format!("messageDeliveryTime is {}, not a string", type_name(delivery)));
    };
    let msg_date = partition_date(delivery_text)?;
    out.insert("messageReceievedTime", Out::Value(delivery));
    // 3. and 4.
    out.insert("filename", Out::Str(name));
    out.insert("entirejson", Out::Value(doc));
    serde_json::to_writer(sink, &out).map_err(|e| format!("serialising the result: {e}"))?;
    Ok(msg_date)
}

/// A value of the output map: borrowed from the input where it can be.
#[derive(serde::Serialize)]
#[serde(untagged)]
enum Out<'a> {
    Value(&'a Value),
    Str(&'a str),
    Owned(String),
}

/// The transform in the `python` style: the same steps as [`transform`] over the tree
/// Python's `json.loads` would build, written as `json.dumps` writes it.
pub fn transform_python(input: &[u8], name: &str) -> Result<Transformed, crate::invalid::Invalid> {
    let doc = crate::nats_message::pyjson::parse(input)?;
    // ASCII only: the input about twice, escapes making it longer.
    let mut json = Vec::with_capacity(input.len() * 3 + 4096);
    let msg_date = write_python(&doc, name, &mut json)?;
    json.shrink_to_fit();
    Ok(Transformed { json, msg_date })
}

fn write_python(doc: &crate::nats_message::pyjson::Doc, name: &str, sink: &mut impl Sink) -> Result<String, String> {
    use crate::nats_message::pyjson::{self, Json};
    enum PyOut<'a> {
        Value(&'a Json),
        Text(&'a [u8]),
        Owned(Vec<u8>),
    }
    let Json::Object(top) = &doc.0 else {
        return Err(format!("the top level is {}, not a JSON object", py_type_name(&doc.0)));
    };
    let mut out: IndexMap<&[u8], PyOut<'_>> = IndexMap::new();
    for (k, v) in top {
        if String::from_utf8_lossy(k).to_lowercase() == "x400message" {
            let mut s = Vec::new();
            pyjson::write(&mut s, v)?;
            out.insert(k, PyOut::Owned(s));
        } else {
            let Json::Object(fields) = v else {
                let k = String::from_utf8_lossy(k);
                return Err(format!("top-level `{k}` is {}, not an object", py_type_name(v)));
            };
            for (f, fv) in fields {
                out.insert(f, PyOut::Value(fv));
            }
            out.insert(b"MessageType", PyOut::Text(k));
        }
    }
    fn field<'a>(v: Option<&'a Json>, name: &str) -> Option<&'a Json> {
        match v {
            Some(Json::Object(m)) => m.get(name.as_bytes()),
            _ => None,
        }
    }
    let delivery = field(field(top.get(&b"X400Message"[..]), "envelope"), "messageDeliveryTime")
        .ok_or("no X400Message.envelope.messageDeliveryTime")?;
    let Json::Str(delivery_text) = delivery else {
        return Err(format!("messageDeliveryTime is {}, not a string", py_type_name(delivery)));
    };
    let msg_date = partition_date(&String::from_utf8_lossy(delivery_text))?;
    out.insert(b"messageReceievedTime", PyOut::Value(delivery));
    out.insert(b"filename", PyOut::Text(name.as_bytes()));
    out.insert(b"entirejson", PyOut::Value(&doc.0));
    sink.put(b"{");
    for (i, (k, v)) in out.iter().enumerate() {
        if i > 0 {
            sink.put(b", ");
        }
        pyjson::write_str(sink, k);
        sink.put(b": ");
        match v {
            PyOut::Value(v) => pyjson::write(sink, v)?,
            PyOut::Text(t) => pyjson::write_str(sink, t),
            PyOut::Owned(t) => pyjson::write_str(sink, t),
        }
    }
    sink.put(b"}");
    Ok(msg_date)
}

/// A message parsed in either style.
enum Parsed {
    Compact(Value),
    Python(crate::nats_message::pyjson::Doc),
}

/// The transform of a whole object into a body that spools past the threshold. The input
/// is dropped once parsed (the tree owns what it needs): what is held while the record is
/// written is the tree and at most `spool.threshold` of the record, not also the input and
/// the whole record. (The item keeps its body for the `failed` port: for an object over
/// the threshold that is its spool file, not memory.) The outer error is the content's,
/// the inner one the spool's.
fn transform_to_body(
    input: Bytes,
    name: &str,
    style: JsonStyle,
    spool: &Spool,
) -> Result<std::io::Result<(Body, String)>, String> {
    let expected = input.len() * 2 + 4096;
    let parsed = match style {
        JsonStyle::Compact => Parsed::Compact(parse_compact(&input)?),
        JsonStyle::Python => Parsed::Python(crate::nats_message::pyjson::parse(&input)?),
    };
    drop(input);
    let mut writer = BodyWriter::new(spool, expected);
    let msg_date = match &parsed {
        Parsed::Compact(doc) => write_compact(doc, name, &mut writer)?,
        Parsed::Python(doc) => write_python(doc, name, &mut writer)?,
    };
    drop(parsed);
    Ok(writer.finish().map(|body| (body, msg_date)))
}

fn py_type_name(v: &crate::nats_message::pyjson::Json) -> &'static str {
    use crate::nats_message::pyjson::Json;
    match v {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Int(_) | Json::Float(_) => "a number",
        Json::Str(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

/// `YYMMDDhhmm[ss]Z` -> `20YY-MM-DD`, if the first six characters are a calendar date.
fn partition_date(s: &str) -> Result<String, String> {
    let head: String = s.chars().take(6).collect();
    if head.len() != 6 || !head.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("messageDeliveryTime {s:?} does not start with a date YYMMDD"));
    }
    let n = |r: std::ops::Range<usize>| head[r].parse::<u32>().unwrap_or(0);
    let (yy, mm, dd) = (n(0..2), n(2..4), n(4..6));
    chrono::NaiveDate::from_ymd_opt(2000 + yy as i32, mm, dd).map(|d| d.format("%Y-%m-%d").to_string()).ok_or_else(
        || format!("messageDeliveryTime {s:?} does not start with a valid date (20{yy:02}-{mm:02}-{dd:02})"),
    )
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[async_trait]
impl Processor for NatsMessage {
    /// Transforms in memory in `--deep` plans (the bytes were read); otherwise assumes the
    /// message parses and says that `msg_date` needs the content.
    async fn preview(&self, item: Item, out: &Emitter, cx: &Context, deep: bool) -> Result<(), ItemError> {
        if deep && item.body.is_some() {
            return self.process(item, out, cx).await;
        }
        item.plan_note("msg_date comes from the content: plan --deep reads it");
        out.emit("ok", item).await.map_err(ItemError::from)
    }

    async fn process(&self, mut item: Item, out: &Emitter, cx: &Context) -> Result<(), ItemError> {
        let name = item.name().to_string();
        let style = self.cfg.json_style;
        let spool = cx.spool().clone();
        let result = parse_body(&item, "nats_message", self.cfg.max_bytes, move |bytes| {
            transform_to_body(bytes, &name, style, &spool)
        })
        .await?;
        match result {
            Ok(Err(e)) => Err(ItemError::new(format!("writing the record to a spool file: {e}"))),
            Ok(Ok((body, msg_date))) => {
                item.set("msg_date", msg_date);
                item.body = Some(body);
                out.emit("ok", item).await.map_err(ItemError::from)
            }
            Err(reason) => {
                item.set_problem(Problem::Unparseable { reason: reason.0 });
                out.emit("failed", item).await.map_err(ItemError::from)
            }
        }
    }
}

#[cfg(test)]
mod tests;
