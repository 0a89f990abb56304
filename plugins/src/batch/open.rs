//! One open batch: the rows gathered so far for one output key, encoded as they come
//! (NDJSON lines, CSV rows, or a running count and sums), and the items they came from,
//! held until the batch object is durable.

use dqpipe_engine::api::body::{Body, BodyWriter, Spool};
use dqpipe_engine::api::Held;
use serde_json::{Map, Value};

use super::{BatchConfig, Format};

pub(crate) struct Open {
    /// The output key with the batch's id left out ([`super::ID_SLOT`]).
    pub pattern: String,
    writer: BodyWriter,
    /// CSV: the columns, given or taken from the first record.
    columns: Option<Vec<String>>,
    /// `format: summary`: the sums of the `sum` fields (the count is the members').
    sums: Vec<Sum>,
    /// Each held item, with its member id (see [`super::manifest::member_id`]).
    pub members: Vec<(String, Held)>,
    /// The order batches were opened in: with too many open, the fullest is written.
    pub opened: u64,
}

/// A running sum: whole numbers add exactly until a fraction comes.
#[derive(Debug, Clone, Copy)]
enum Sum {
    Whole(i128),
    Real(f64),
}

impl Open {
    pub fn new(pattern: String, cfg: &BatchConfig, spool: &Spool, opened: u64) -> Open {
        let mut open = Open {
            pattern,
            writer: BodyWriter::new(spool, 64 * 1024),
            columns: None,
            sums: vec![Sum::Whole(0); cfg.sum.len()],
            members: Vec::new(),
            opened,
        };
        if cfg.format == Format::Csv && !cfg.columns.is_empty() {
            open.start_csv(cfg.columns.clone());
        }
        open
    }

    fn start_csv(&mut self, columns: Vec<String>) {
        let header = csv_line(columns.iter().map(String::as_str));
        self.writer.put(&header);
        self.columns = Some(columns);
    }

    /// How many items it holds, and the bytes written so far.
    pub fn items(&self) -> usize {
        self.members.len()
    }
    pub fn bytes(&self) -> u64 {
        self.writer.len()
    }

    /// Adds one row, or says why it cannot be written in this format (then nothing is
    /// added); the item it came from is then [`Open::hold`]ed.
    pub fn add(&mut self, cfg: &BatchConfig, row: &Value) -> Result<(), crate::invalid::Invalid> {
        match cfg.format {
            Format::Ndjson => {
                let mut line = serde_json::to_vec(row).map_err(|e| format!("encoding the record: {e}"))?;
                line.push(b'\n');
                self.writer.put(&line);
            }
            Format::Csv => {
                let fields = row.as_object().ok_or("a CSV row needs a JSON object, not another value")?;
                if self.columns.is_none() {
                    self.start_csv(fields.keys().cloned().collect());
                }
                let line = self.csv_row(fields, !cfg.columns.is_empty())?;
                self.writer.put(&line);
            }
            Format::Summary => self.add_sums(cfg, row)?,
        }
        Ok(())
    }

    /// Holds the item of the row just added, with its member id.
    pub fn hold(&mut self, id: String, held: Held) {
        self.members.push((id, held));
    }

    /// The row's values in column order: strings as they are, `null` empty, other values
    /// as JSON text. A field outside columns taken from the first record is refused, not
    /// dropped in silence; with `columns` given, other fields are left out by choice.
    fn csv_row(&self, fields: &Map<String, Value>, given: bool) -> Result<Vec<u8>, String> {
        let columns = self.columns.as_deref().unwrap_or_default();
        if !given {
            if let Some(extra) = fields.keys().find(|k| !columns.contains(k)) {
                return Err(format!(
                    "field `{extra}` is not among the columns this batch's first record gave ({}): name the columns \
                     in `columns`",
                    columns.join(", ")
                ));
            }
        }
        let cells: Vec<String> = columns
            .iter()
            .map(|c| match fields.get(c) {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
            })
            .collect();
        Ok(csv_line(cells.iter().map(String::as_str)))
    }

    fn add_sums(&mut self, cfg: &BatchConfig, row: &Value) -> Result<(), String> {
        let mut next = self.sums.clone();
        for (field, sum) in cfg.sum.iter().zip(next.iter_mut()) {
            let value = match row.get(field) {
                None | Some(Value::Null) => continue,
                Some(Value::Number(n)) => n.clone(),
                Some(Value::String(s)) => s.trim().parse().map_err(|_| format!("`{field}` is {s:?}, not a number"))?,
                Some(other) => return Err(format!("`{field}` is {other}, not a number")),
            };
            *sum = match (*sum, value.as_i64()) {
                (Sum::Whole(total), Some(v)) => Sum::Whole(total + i128::from(v)),
                (Sum::Whole(total), None) => Sum::Real(total as f64 + value.as_f64().unwrap_or(0.0)),
                (Sum::Real(total), _) => Sum::Real(total + value.as_f64().unwrap_or(0.0)),
            };
        }
        self.sums = next;
        Ok(())
    }

    /// The batch object's bytes, and the held items with their member ids.
    pub fn finish(mut self, cfg: &BatchConfig) -> (std::io::Result<Body>, Vec<(String, Held)>) {
        if cfg.format == Format::Summary {
            let sums: Map<String, Value> = cfg
                .sum
                .iter()
                .zip(&self.sums)
                .map(|(f, s)| {
                    let v = match *s {
                        Sum::Whole(t) => serde_json::from_str(&t.to_string()).unwrap_or(Value::Null),
                        Sum::Real(t) => serde_json::Number::from_f64(t).map(Value::Number).unwrap_or(Value::Null),
                    };
                    (f.clone(), v)
                })
                .collect();
            let mut doc = serde_json::to_vec(&serde_json::json!({ "count": self.members.len(), "sum": sums }))
                .unwrap_or_default();
            doc.push(b'\n');
            self.writer.put(&doc);
        }
        (self.writer.finish(), self.members)
    }
}

/// One CSV line (RFC 4180 quoting, as the `csv` crate writes it).
fn csv_line<'a>(cells: impl Iterator<Item = &'a str>) -> Vec<u8> {
    let mut w = csv::WriterBuilder::new().from_writer(Vec::new());
    let cells: Vec<&str> = cells.collect();
    // Writing to a Vec cannot fail.
    let _ = w.write_record(&cells);
    w.into_inner().unwrap_or_default()
}
