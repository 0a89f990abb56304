//! S3 Inventory as the listing of a `list` node (`inventory: { store, manifest }`): the
//! daily report S3 writes of a bucket's objects, read instead of listing the bucket. At
//! 100M objects a listing is 100,000 requests one after another (hours against S3); the
//! inventory is a manifest and a few hundred gzip-compressed CSV files, and each shard of a
//! run reads only its share of them (data file `i` is shard `i % count`'s).
//!
//! The manifest (`manifest.json`) names the data files (keys in the inventory's bucket) and
//! their columns (`fileSchema`: `Bucket, Key, Size, LastModifiedDate, ETag, ...`); only the
//! CSV format is read. Keys in the data files are URL-encoded (`+` for a space); they are
//! the bucket's keys, so the `list` node's store is the bucket's root. An object the
//! inventory names but that is gone by the time it is fetched fails alone, as any object
//! deleted after it was listed, and is reported; the run goes on.

use std::sync::Arc;

use dqpipe_engine::api::body::{Body, Spool};
use dqpipe_engine::api::selection::Shard;
use dqpipe_engine::api::store::{ObjectInfo, Store, StoreError, StoreErrorKind};
use futures::stream::BoxStream;
use futures::StreamExt;
use schemars::JsonSchema;
use serde::Deserialize;

use crate::retry::RetryPolicy;

/// `inventory:` of a `list` node.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InventoryConfig {
    /// The store holding the inventory reports (a name under `stores`).
    pub store: String,
    /// The key of the report's `manifest.json` in that store
    /// (`archive/daily/2026-11-28T01-00Z/manifest.json`).
    pub manifest: String,
}

/// What the manifest says: the data files, and where the columns are in each row.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    pub files: Vec<String>,
    key: usize,
    size: usize,
    modified: Option<usize>,
    etag: Option<usize>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    file_format: String,
    file_schema: String,
    files: Vec<RawFile>,
}

#[derive(Deserialize)]
struct RawFile {
    key: String,
}

impl Manifest {
    /// Reads a `manifest.json`.
    pub fn parse(bytes: &[u8]) -> Result<Manifest, crate::invalid::Invalid> {
        Self::read(bytes).map_err(crate::invalid::Invalid)
    }

    fn read(bytes: &[u8]) -> Result<Manifest, String> {
        let raw: RawManifest = serde_json::from_slice(bytes).map_err(|e| format!("not an inventory manifest: {e}"))?;
        if !raw.file_format.eq_ignore_ascii_case("csv") {
            return Err(format!("fileFormat {:?}: only CSV inventories are read", raw.file_format));
        }
        let columns: Vec<String> = raw.file_schema.split(',').map(|c| c.trim().to_string()).collect();
        let at = |name: &str| columns.iter().position(|c| c == name);
        let key = at("Key").ok_or_else(|| format!("fileSchema {:?} has no `Key` column", raw.file_schema))?;
        // Each read is checked against the listed size (`Store::get_listed`): without it
        // every object would look cut short.
        let size = at("Size").ok_or_else(|| {
            format!(
                "fileSchema {:?} has no `Size` column: add Size to the inventory's optional fields (dqpipe checks each read against it)",
                raw.file_schema
            )
        })?;
        Ok(Manifest {
            files: raw.files.into_iter().map(|f| f.key).collect(),
            key,
            size,
            modified: at("LastModifiedDate"),
            etag: at("ETag"),
        })
    }

    /// The data files this process reads: all, or its shard's share.
    pub fn share(&self, shard: Option<Shard>) -> Vec<String> {
        self.files
            .iter()
            .enumerate()
            .filter(|(i, _)| shard.is_none_or(|s| *i as u64 % u64::from(s.count.max(1)) == u64::from(s.index)))
            .map(|(_, f)| f.clone())
            .collect()
    }

    /// One row as the object it names.
    fn object(&self, row: &csv::StringRecord) -> Result<ObjectInfo, String> {
        let field = |i: Option<usize>| i.and_then(|i| row.get(i)).filter(|v| !v.is_empty());
        let key = field(Some(self.key)).ok_or("a row without a key")?;
        let key = url_decode(key);
        let size = match field(Some(self.size)) {
            Some(s) => s.parse().map_err(|_| format!("{key:?}: size {s:?} is not a number"))?,
            None => return Err(format!("{key:?}: a row without a size")),
        };
        Ok(ObjectInfo {
            key,
            size,
            etag: field(self.etag).map(|e| e.trim_matches('"').to_string()),
            last_modified: field(self.modified).map(String::from),
        })
    }
}

/// Inventory keys are URL-encoded as a form is (`+` for a space).
fn url_decode(key: &str) -> String {
    let spaced = key.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced).decode_utf8_lossy().into_owned()
}

/// The objects of `files` (this process's share), file after file, with `prefix` as a
/// listing's: each file is read from `store` (transient failures retried with `retry`),
/// gunzipped and parsed on a blocking thread, its objects sent on as they are read.
pub fn objects<'a>(
    store: Arc<dyn Store>,
    manifest: Arc<Manifest>,
    files: Vec<String>,
    prefix: &'a str,
    spool: Spool,
    retry: RetryPolicy,
) -> BoxStream<'a, Result<ObjectInfo, StoreError>> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<ObjectInfo, StoreError>>(2_000);
    tokio::spawn(async move {
        for file in files {
            let read = || store.get(&file, &spool);
            let body = match retry.store_op(|e| format!("inventory data file {file:?}: {e}"), read).await {
                Ok(b) => b,
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            };
            let (manifest, tx) = (manifest.clone(), tx.clone());
            let read = tokio::task::spawn_blocking(move || read_file(&body, &manifest, &tx, &file)).await;
            if read.unwrap_or(false) {
                continue;
            }
            return;
        }
    });
    tokio_stream_of(rx)
        .filter(move |o| futures::future::ready(o.as_ref().map_or(true, |o| o.key.starts_with(prefix))))
        .boxed()
}

/// Sends the rows of one data file; false when the file is broken or nobody listens.
fn read_file(
    body: &Body,
    manifest: &Manifest,
    tx: &tokio::sync::mpsc::Sender<Result<ObjectInfo, StoreError>>,
    file: &str,
) -> bool {
    let broken = |e: &dyn std::fmt::Display| {
        StoreError::new(StoreErrorKind::Other, format!("inventory data file {file:?}: {e}"))
    };
    let reader = match body.blocking_reader() {
        Ok(r) => r,
        Err(e) => {
            let _ = tx.blocking_send(Err(broken(&e)));
            return false;
        }
    };
    let gz = flate2::read::MultiGzDecoder::new(reader);
    let mut rows = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(gz);
    for row in rows.records() {
        let sent = match row {
            Ok(row) => tx.blocking_send(manifest.object(&row).map_err(|e| broken(&e))),
            Err(e) => {
                let _ = tx.blocking_send(Err(broken(&e)));
                return false;
            }
        };
        if sent.is_err() {
            return false;
        }
    }
    true
}

/// A receiver as a stream.
fn tokio_stream_of<T: Send + 'static>(mut rx: tokio::sync::mpsc::Receiver<T>) -> BoxStream<'static, T> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = r#"{"sourceBucket": "archive", "destinationBucket": "arn:aws:s3:::inv",
        "version": "2016-11-30", "fileFormat": "CSV",
        "fileSchema": "Bucket, Key, Size, LastModifiedDate, ETag",
        "files": [{"key": "d/0.csv.gz", "size": 1, "MD5checksum": "x"}, {"key": "d/1.csv.gz", "size": 1, "MD5checksum": "x"},
                  {"key": "d/2.csv.gz", "size": 1, "MD5checksum": "x"}]}"#;

    #[test]
    fn the_manifest_names_the_files_and_columns_and_shards_share_them() {
        let m = Manifest::parse(MANIFEST.as_bytes()).unwrap();
        assert_eq!(m.files, ["d/0.csv.gz", "d/1.csv.gz", "d/2.csv.gz"]);
        assert_eq!(m.share(None).len(), 3);
        assert_eq!(m.share(Some(Shard { index: 0, count: 2 })), ["d/0.csv.gz", "d/2.csv.gz"]);
        assert_eq!(m.share(Some(Shard { index: 1, count: 2 })), ["d/1.csv.gz"]);
        let row =
            csv::StringRecord::from(vec!["archive", "a/b+c%5B1%5D.json", "42", "2026-11-28T01:00:00.000Z", "\"abc\""]);
        let o = m.object(&row).unwrap();
        assert_eq!((o.key.as_str(), o.size, o.etag.as_deref()), ("a/b c[1].json", 42, Some("abc")));
        assert!(Manifest::parse(MANIFEST.replace("CSV", "Parquet").as_bytes()).unwrap_err().0.contains("only CSV"));
    }
}
