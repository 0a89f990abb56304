//! `fetch`: reads each listed object's bytes from the store it was listed in. Bodies over
//! the spool threshold go to a temporary file, never wholly into memory.

use std::sync::Arc;

use async_trait::async_trait;
use dqpipe_engine::api::store::StoreErrorKind;
use dqpipe_engine::api::{
    BuildContext, Built, ConfigError, Context, Emitter, Item, ItemError, KindConfig, PortDecl, Processor, Role,
};
use schemars::JsonSchema;
use serde::Deserialize;

use crate::retry::RetryPolicy;

/// Settings of a `fetch` node.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FetchConfig {
    /// Retries of transient read failures.
    #[serde(default)]
    pub retry: RetryPolicy,
    /// `gzip`: decode each object on read (a plain `.gz` feed); `none` (the default)
    /// passes the bytes as stored. An object that is not gzip, or decodes to more than
    /// `decoded_max_bytes`, is refused (left at its source, exit 3).
    #[serde(default)]
    pub decode: Decode,
    /// The most bytes an object may decode to (1 GiB).
    #[serde(default = "default_decoded_max")]
    #[schemars(range(min = 1, max = 1099511627776u64))]
    pub decoded_max_bytes: u64,
    /// Also read the scan provenance the object was written with (a HEAD) into the field
    /// `provenance`: `{engine, database, database_built, scanned_at, verdict, signature}`,
    /// or null for an object no scan recorded (what a rescan selects on).
    #[serde(default)]
    pub read_provenance: bool,
}

fn default_decoded_max() -> u64 {
    1 << 30
}

/// How `fetch` decodes what it read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Decode {
    #[default]
    None,
    Gzip,
}

/// `body` gunzipped into a spooling body, at most `max` bytes, on a blocking thread.
async fn gunzip(
    body: dqpipe_engine::api::body::Body,
    max: u64,
    spool: dqpipe_engine::api::body::Spool,
) -> Result<dqpipe_engine::api::body::Body, String> {
    use dqpipe_engine::api::body::BodyWriter;
    tokio::task::spawn_blocking(move || {
        let raw = body.blocking_reader().map_err(|e| format!("reading the spooled body: {e}"))?;
        let mut decoded = std::io::Read::take(flate2::read::MultiGzDecoder::new(std::io::BufReader::new(raw)), max + 1);
        let mut out = BodyWriter::new(&spool, 0);
        std::io::copy(&mut decoded, &mut out).map_err(|e| format!("not gzip: {e}"))?;
        if out.len() > max {
            return Err(format!("decodes to more than decoded_max_bytes ({max})"));
        }
        out.finish().map_err(|e| format!("spooling the decoded body: {e}"))
    })
    .await
    .unwrap_or_else(|_| Err("internal error: the decoder panicked".into()))
}

const PORTS: &[PortDecl] = &[PortDecl::out("out", "the item with its bytes")];

impl KindConfig for FetchConfig {
    const NAME: &'static str = "fetch";
    const SUMMARY: &'static str =
        "Reads each item's object from the store it was listed in (streamed; large bodies spool to disk).";
    const ROLE: Role = Role::Processor;
    const ADAPTIVE: bool = true;
    const PORTS: &'static [PortDecl] = PORTS;
    const EXAMPLE: &'static str = include_str!("kind_examples/fetch.yaml");
    fn build(self, _ctx: &BuildContext) -> Result<Built, ConfigError> {
        Ok(Built::Processor(Arc::new(Fetch { cfg: self })))
    }
}

struct Fetch {
    cfg: FetchConfig,
}

#[async_trait]
impl Processor for Fetch {
    /// Reads only in `--deep` plans.
    async fn preview(&self, item: Item, out: &Emitter, cx: &Context, deep: bool) -> Result<(), ItemError> {
        if deep {
            return self.process(item, out, cx).await;
        }
        out.emit("out", item).await.map_err(ItemError::from)
    }

    async fn process(&self, mut item: Item, out: &Emitter, cx: &Context) -> Result<(), ItemError> {
        let store = item
            .listed_in()
            .cloned()
            .ok_or_else(|| ItemError::new("the item was listed in no store: fetch reads what a `list` node listed"))?;
        // What the listing described is what the read must give (`Store::get_listed`); an
        // item whose key a node changed is read as it is now.
        let listed = Some(item.listed().clone()).filter(|l| l.key == item.key());
        let key = item.key().to_string();
        let got = self
            .cfg
            .retry
            .run(
                || async {
                    match &listed {
                        Some(listed) => store.get_listed(listed, cx.spool()).await,
                        None => store.get(&key, cx.spool()).await,
                    }
                },
                |e| e.kind == StoreErrorKind::Transient,
                |e| match e.kind {
                    StoreErrorKind::NotFound => format!("object vanished since listing (not found): {e}"),
                    _ => format!("fetching: {e}"),
                },
                || cx.retried(1),
            )
            .await
            .map_err(crate::retry::GaveUp::into_item_error)?;
        let got = match self.cfg.decode {
            Decode::None => got,
            Decode::Gzip => gunzip(got, self.cfg.decoded_max_bytes, cx.spool().clone())
                .await
                .map_err(|e| ItemError::refused(format!("decoding {key:?}: {e}")))?,
        };
        item.body = Some(got);
        if self.cfg.read_provenance {
            let read = self.cfg.retry.run(
                || store.metadata(&key),
                |e| e.kind == StoreErrorKind::Transient,
                |e| format!("reading the provenance of {key:?}: {e}"),
                || cx.retried(1),
            );
            let metadata = read.await.map_err(crate::retry::GaveUp::into_item_error)?;
            item.set("provenance", provenance(&metadata));
        }
        out.emit("out", item).await.map_err(ItemError::from)
    }
}

/// The scan provenance in an object's metadata (`dqpipe-scan-database-built` is
/// `database_built`, values percent-decoded as `put` encoded them), or null.
fn provenance(metadata: &[(String, String)]) -> serde_json::Value {
    let scan: serde_json::Map<String, serde_json::Value> = metadata
        .iter()
        .filter_map(|(k, v)| {
            let field = k.strip_prefix("dqpipe-scan-")?.replace('-', "_");
            let value = percent_encoding::percent_decode_str(v).decode_utf8_lossy().into_owned();
            Some((field, value.into()))
        })
        .collect();
    if scan.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::Value::Object(scan)
    }
}
