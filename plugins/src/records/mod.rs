//! `records`: reads CSV, NDJSON or XML into JSON records, one item each, or one document.
//!
//! ```yaml
//! rows:
//!   kind: records
//!   input: fetch
//!   format: csv                     # or ndjson
//!   csv: { delimiter: ",", header: true }
//! keep: { kind: filter, input: rows, predicate: '.carrier == "BAW"' }
//! write: { kind: put, input: keep, store: out, key: "{{ name }}/{{ record }}.json" }
//! bad: { kind: put, input: rows.bad, store: failed, key: "{{ name }}/{{ record }}", with_reason: true }
//! ```
//!
//! A CSV row becomes an object of its header's columns (or `csv.columns`), every value a
//! string, as the file gives it; an NDJSON line is its JSON value; each XML element named
//! `xml.record` is an object of its attributes, children and text (`xml.rs`, which states
//! the mapping), `record` being its number. A record that cannot be
//! read (a row of another width, a line that is not JSON) leaves by `bad` with its line
//! number and the reason, its raw text as the body; the good records go on. Records are
//! copies of the object's item: the object is done once each reached the end of its path.
//! With `output: document` the records are one JSON array instead (bad ones still go to
//! `bad`). Read on a blocking thread and handed over a few at a time: memory holds a few
//! records, not the file, and a record longer than `max_record_bytes` (16 MiB) stops the
//! reading there, as malformed input does (`capped.rs`).

mod capped;
mod xml;

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use dqpipe_engine::api::body::{BlockingReader, Body};
use dqpipe_engine::api::{
    BuildContext, Built, ConfigError, Context, Emitter, Item, ItemError, KindConfig, PortDecl, Problem, Processor, Role,
};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

/// Settings of a `records` node.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RecordsConfig {
    /// `csv`, `ndjson` or `xml`.
    pub format: RecordFormat,
    /// CSV settings.
    #[serde(default)]
    pub csv: CsvConfig,
    /// XML settings (`format: xml`).
    #[serde(default)]
    pub xml: XmlConfig,
    /// `items` (one item per record, the default) or `document` (one JSON array).
    #[serde(default)]
    pub output: Output,
    /// The longest record read (a CSV row, an NDJSON line, an XML record, and any one
    /// text or tag in the document): a longer one stops the reading there, as malformed
    /// input does. Default 16 MiB.
    #[serde(default = "sixteen_mib")]
    #[schemars(range(min = 1024, max = 1073741824))]
    pub max_record_bytes: u64,
}

fn sixteen_mib() -> u64 {
    16 << 20
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RecordFormat {
    Csv,
    Ndjson,
    Xml,
}

/// How an XML document is read.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct XmlConfig {
    /// The name of the elements that are records (`Flight`), at any depth: each becomes
    /// an object of its attributes (`@n`), child elements (a repeated name, an array) and
    /// text (`#text`, or the child's whole value when it has nothing else).
    #[serde(default)]
    pub record: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Output {
    #[default]
    Items,
    Document,
}

/// How a CSV file is read.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CsvConfig {
    /// One character.
    #[serde(default = "comma")]
    pub delimiter: String,
    /// The first row names the columns.
    #[serde(default = "yes")]
    pub header: bool,
    /// The columns' names, when the file has no header row (or to replace it).
    #[serde(default)]
    pub columns: Vec<String>,
}

fn comma() -> String {
    ",".into()
}
fn yes() -> bool {
    true
}

impl Default for CsvConfig {
    fn default() -> Self {
        Self { delimiter: comma(), header: true, columns: Vec::new() }
    }
}

const PORTS: &[PortDecl] = &[
    PortDecl::out("out", "one item per record (JSON), with `record` (its line), or one document").setting(&["record"]),
    PortDecl::problem(
        "bad",
        &["reason", "record"],
        "records that cannot be read: the raw text, with `record` and `reason`",
    ),
];

impl KindConfig for RecordsConfig {
    const NAME: &'static str = "records";
    const SUMMARY: &'static str =
        "Reads CSV, NDJSON or XML into JSON records, one item each or one document; bad records to `bad`.";
    const ROLE: Role = Role::Processor;
    const PORTS: &'static [PortDecl] = PORTS;
    const EXAMPLE: &'static str = include_str!("../kind_examples/records.yaml");
    const CPU_BOUND: bool = true;
    fn build(self, _ctx: &BuildContext) -> Result<Built, ConfigError> {
        if self.csv.delimiter.len() != 1 {
            return Err(ConfigError::at("csv.delimiter", "one ASCII character, e.g. `,` or `;` or `|`"));
        }
        if !self.csv.header && self.csv.columns.is_empty() && self.format == RecordFormat::Csv {
            return Err(ConfigError::at("csv.columns", "without a header row, name the columns: `columns: [a, b, c]`"));
        }
        if self.format == RecordFormat::Xml && self.xml.record.is_empty() {
            return Err(ConfigError::at("xml.record", "name the elements that are records: `xml: { record: Flight }`"));
        }
        Ok(Built::Processor(Arc::new(Records { cfg: Arc::new(self) })))
    }
}

struct Records {
    cfg: Arc<RecordsConfig>,
}

/// One record read: its line, and its JSON or why it is not one (with its raw text).
enum Read {
    Good(u64, Value),
    Bad(u64, String, Vec<u8>),
}

/// Reads every record of `r`, handing each to `send` (false: nobody takes more).
fn read_all(cfg: &RecordsConfig, r: BlockingReader, mut send: impl FnMut(Read) -> bool) -> Result<(), String> {
    let cap = cfg.max_record_bytes;
    match cfg.format {
        RecordFormat::Ndjson => {
            use std::io::BufRead;
            let r = capped::Capped::new(r, b"\n", cap);
            for (i, line) in std::io::BufReader::new(r).split(b'\n').enumerate() {
                let line = line.map_err(|e| format!("reading: {e}"))?;
                let n = i as u64 + 1;
                if line.iter().all(|b| b.is_ascii_whitespace()) {
                    continue;
                }
                let read = match serde_json::from_slice::<Value>(&line) {
                    Ok(v) => Read::Good(n, v),
                    Err(e) => Read::Bad(n, format!("line {n}: not JSON: {e}"), line),
                };
                if !send(read) {
                    return Ok(());
                }
            }
        }
        RecordFormat::Xml => {
            let r = capped::Capped::new(r, b"<>", cap);
            xml::read(r, &cfg.xml.record, cap, |n, v| send(Read::Good(n, v)))?
        }
        RecordFormat::Csv => {
            let r = capped::Capped::new(r, b"\n", cap);
            let mut reader = csv::ReaderBuilder::new()
                .delimiter(cfg.csv.delimiter.as_bytes()[0])
                .has_headers(cfg.csv.header)
                .flexible(true)
                .from_reader(r);
            let columns: Vec<String> = match cfg.csv.columns.is_empty() {
                true => {
                    reader.headers().map_err(|e| format!("the header row: {e}"))?.iter().map(String::from).collect()
                }
                false => cfg.csv.columns.clone(),
            };
            for row in reader.byte_records() {
                let row = row.map_err(|e| format!("reading: {e}"))?;
                let n = row.position().map(|p| p.line()).unwrap_or(0);
                let raw = row.iter().collect::<Vec<_>>().join(&cfg.csv.delimiter.as_bytes()[0]);
                let read = if row.len() != columns.len() {
                    Read::Bad(n, format!("line {n}: {} fields, the header has {}", row.len(), columns.len()), raw)
                } else {
                    let fields: Result<serde_json::Map<String, Value>, _> = columns
                        .iter()
                        .zip(row.iter())
                        .map(|(c, v)| std::str::from_utf8(v).map(|v| (c.clone(), Value::from(v))))
                        .collect();
                    match fields {
                        Ok(m) => Read::Good(n, Value::Object(m)),
                        Err(_) => Read::Bad(n, format!("line {n}: not UTF-8"), raw),
                    }
                };
                if !send(read) {
                    return Ok(());
                }
            }
        }
    }
    Ok(())
}

#[async_trait]
impl Processor for Records {
    async fn process(&self, mut item: Item, out: &Emitter, _cx: &Context) -> Result<(), ItemError> {
        let body =
            item.body.clone().ok_or_else(|| ItemError::new("the item has no bytes: records needs a fetch upstream"))?;
        let reader = body.blocking_reader().map_err(|e| ItemError::new(format!("reading the spooled body: {e}")))?;
        let (tx, mut rx) = tokio::sync::mpsc::channel(16);
        let cfg = self.cfg.clone();
        let reading = tokio::task::spawn_blocking(move || read_all(&cfg, reader, |r| tx.blocking_send(r).is_ok()));
        let mut document = Vec::new();
        while let Some(read) = rx.recv().await {
            let mut record = item.clone();
            match read {
                Read::Good(_, v) if self.cfg.output == Output::Document => {
                    document.push(v);
                    continue;
                }
                Read::Good(n, v) => {
                    record.set("record", n);
                    record.body = Some(Body::Memory(Bytes::from(v.to_string())));
                    out.emit("out", record).await
                }
                Read::Bad(n, reason, raw) => {
                    record.set("record", n);
                    record.body = Some(Body::Memory(Bytes::from(raw)));
                    record.set_problem(Problem::Unparseable { reason });
                    out.emit("bad", record).await
                }
            }
            .map_err(ItemError::from)?;
        }
        // A file that cannot be read at all (no header row, a read error) is one bad
        // record: the object's own.
        if let Err(reason) = reading.await.unwrap_or_else(|_| Err("internal error: the reader panicked".into())) {
            item.set("record", 0);
            item.set_problem(Problem::Unparseable { reason });
            return out.emit("bad", item).await.map_err(ItemError::from);
        }
        if self.cfg.output == Output::Document {
            item.set("record", 0);
            item.body = Some(Body::Memory(Bytes::from(Value::Array(document).to_string())));
            return out.emit("out", item).await.map_err(ItemError::from);
        }
        Ok(())
    }

    /// Never reads in a plan: the records come from the content.
    async fn preview(&self, item: Item, out: &Emitter, _cx: &Context, _deep: bool) -> Result<(), ItemError> {
        item.plan_note("read into records at run time: each record is an item (the plan shows the file)");
        out.emit("out", item).await.map_err(ItemError::from)
    }
}
