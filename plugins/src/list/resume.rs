//! Done markers: how a `list` node remembers, across runs, pods and shards, which objects
//! are finished.
//!
//! A finished object is recorded only after every output of it is durable (the engine's
//! acknowledgement). Records are written in small batches: one marker object per batch,
//! `<prefix>/<time>-<pid>-<n>.jsonl`, one JSON line per object (key, version, etag, size,
//! and what nodes recorded about it: `scan`, the verdict and scanner that passed it),
//! at most `BATCH` lines or `FLUSH_AFTER` after the first. An acknowledgement returns once
//! its batch is written, so "done" is never claimed before the marker is durable, and a
//! run costs one PUT per `BATCH` objects rather than one per object. A run starts by
//! listing and reading the markers (a few requests per thousand objects). Markers live
//! beside the data, so a lost local volume or several shards at once change nothing; a
//! batch lost to a kill -9 means those objects are processed again, to the same keys.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use dqpipe_engine::api::body::{Body, Spool};
use dqpipe_engine::api::store::{ObjectInfo, PutOptions, Store, StoreError, StoreErrorKind};
use futures::StreamExt;
use tokio::sync::oneshot;

use crate::retry::{resumable_listing, RetryPolicy};

/// At most this many objects per marker.
pub const BATCH: usize = 256;
/// A marker is written at most this long after its first object finished.
pub const FLUSH_AFTER: Duration = Duration::from_millis(250);

pub struct DoneLog {
    store: Arc<dyn Store>,
    /// Key prefix of the markers, without a trailing `/`.
    prefix: String,
    retry: RetryPolicy,
    pending: Mutex<Batch>,
    written: AtomicU64,
}

#[derive(Default)]
struct Batch {
    id: u64,
    lines: Vec<String>,
    waiters: Vec<oneshot::Sender<Result<(), StoreError>>>,
}

/// The version of an object a marker records: its ETag (letters, digits, `-`), else its
/// size. A changed object has another version, so it is not taken for done.
pub fn version_of(o: &ObjectInfo) -> String {
    let etag: String =
        o.etag.as_deref().unwrap_or("").chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').collect();
    if etag.is_empty() {
        format!("s{}", o.size)
    } else {
        etag
    }
}

/// Whether `key` is named as dqpipe names markers (`<time>-<pid>-<n>.jsonl`: letters,
/// digits, `-`, `_`, `.`). Anything else in the folder (a file someone put there, a name
/// with a newline no store can read back) is not read.
fn is_marker_name(key: &str) -> bool {
    let name = key.rsplit('/').next().unwrap_or(key);
    name.ends_with(".jsonl") && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// Adds the objects a marker records to `done`, line by line. A line that does not parse
/// (a torn write cannot happen: puts are atomic) or is longer than any marker line is
/// skipped: at worst its object is processed again.
async fn read_lines(key: &str, body: &Body, done: &mut HashSet<String>) -> Result<(), StoreError> {
    use tokio::io::AsyncBufReadExt;
    // A spooled marker that cannot be read back: the local disk, which a rerun may find well.
    let io =
        |e: std::io::Error| StoreError::new(StoreErrorKind::Transient, format!("reading done marker {key:?}: {e}"));
    let reader = body.reader().await.map_err(io)?;
    let mut lines = tokio::io::BufReader::new(reader).split(b'\n');
    while let Some(line) = lines.next_segment().await.map_err(io)? {
        if line.is_empty() || line.len() > 64 * 1024 {
            continue;
        }
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&line) {
            if let (Some(k), Some(ver)) = (v["key"].as_str(), v["version"].as_str()) {
                done.insert(format!("{k}@{ver}"));
            }
        }
    }
    Ok(())
}

/// What a done-set holds for an object.
pub fn done_id(o: &ObjectInfo) -> String {
    format!("{}@{}", o.key, version_of(o))
}

impl DoneLog {
    pub fn new(store: Arc<dyn Store>, prefix: String, retry: RetryPolicy) -> Self {
        Self { store, prefix, retry, pending: Mutex::new(Batch::default()), written: AtomicU64::new(0) }
    }

    /// The store the markers are in.
    pub fn store(&self) -> Arc<dyn Store> {
        self.store.clone()
    }

    pub fn display(&self) -> String {
        format!("{}/{}", self.store.display_url().trim_end_matches('/'), self.prefix)
    }

    /// Every object earlier runs finished, as [`done_id`]s. A failure keeps the store's
    /// kind: refused credentials are not a timeout.
    pub async fn read(&self) -> Result<HashSet<String>, StoreError> {
        let prefix = format!("{}/", self.prefix);
        let mut keys = Vec::new();
        let mut listing = resumable_listing(&*self.store, &prefix, None, &self.retry, || {});
        while let Some(entry) = listing.next().await {
            match entry {
                Ok(m) => keys.push(m.key),
                // No marker folder yet: nothing is done.
                Err(e) if e.kind == StoreErrorKind::NotFound && keys.is_empty() => break,
                Err(e) => {
                    return Err(StoreError::new(e.kind, format!("listing done markers in {}: {e}", self.display())))
                }
            }
        }
        // Markers larger than 1 MiB are read from the spool, line by line: a marker of any
        // size costs its lines, not its bytes.
        let spool = Spool { threshold: 1 << 20, dir: None };
        let (markers, strays): (Vec<String>, Vec<String>) = keys.into_iter().partition(|k| is_marker_name(k));
        for stray in strays.iter().filter(|k| k.ends_with(".jsonl") || k.contains(['\n', '\r'])) {
            tracing::warn!(key = %stray.escape_debug(), "not a done marker dqpipe writes: skipped");
        }
        let mut reads = futures::stream::iter(markers.into_iter().map(|key| {
            let spool = spool.clone();
            async move {
                let got = self
                    .retry
                    .store_op(|e| format!("reading done marker {key:?}: {e}"), || self.store.get(&key, &spool))
                    .await;
                (key, got)
            }
        }))
        .buffer_unordered(16);
        let mut done = HashSet::new();
        while let Some((key, got)) = reads.next().await {
            match got {
                Ok(body) => read_lines(&key, &body, &mut done).await?,
                // Gone since the listing (another run compacted it), or refused for good:
                // its objects are processed again at worst; no rerun would read it either.
                Err(e) if matches!(e.kind, StoreErrorKind::NotFound | StoreErrorKind::InvalidKey) => {
                    tracing::warn!(key = %key.escape_debug(), error = %e, "done marker skipped")
                }
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }

    /// Records a finished object; returns once the marker holding it is written.
    pub async fn record(&self, o: &ObjectInfo, recorded: &dqpipe_engine::api::Meta) -> Result<(), StoreError> {
        let mut line = serde_json::json!({
            "key": o.key,
            "version": version_of(o),
            "etag": o.etag,
            "size": o.size,
            "at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        });
        // What nodes recorded about the object: the scan that passed or quarantined it.
        for (k, v) in recorded {
            line[k] = v.clone();
        }
        let line = line.to_string();
        let (tx, rx) = oneshot::channel();
        let (full, first_of) = {
            let poisoned = || StoreError::new(StoreErrorKind::Other, "internal error: the done log was poisoned");
            let mut p = self.pending.lock().map_err(|_| poisoned())?;
            p.lines.push(line);
            p.waiters.push(tx);
            if p.lines.len() >= BATCH {
                (Some(take(&mut p)), None)
            } else if p.lines.len() == 1 {
                (None, Some(p.id))
            } else {
                (None, None)
            }
        };
        if let Some(batch) = full {
            self.flush(batch).await;
        } else if let Some(id) = first_of {
            // The first object of a batch writes it if it has not filled up meanwhile.
            tokio::time::sleep(FLUSH_AFTER).await;
            let batch =
                self.pending.lock().ok().and_then(|mut p| (p.id == id && !p.lines.is_empty()).then(|| take(&mut p)));
            if let Some(batch) = batch {
                self.flush(batch).await;
            }
        }
        rx.await.unwrap_or_else(|_| Err(StoreError::new(StoreErrorKind::Transient, "the done marker was not written")))
    }

    async fn flush(&self, batch: Batch) {
        let n = self.written.fetch_add(1, Ordering::Relaxed);
        let key = format!(
            "{}/{}-{}-{:08x}-{n}.jsonl",
            self.prefix,
            chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ"),
            std::process::id(),
            rand::random::<u32>()
        );
        let body = Body::Memory(Bytes::from(batch.lines.join("\n") + "\n"));
        let opts = PutOptions { content_type: Some("application/x-ndjson".into()), ..Default::default() };
        let result = self
            .retry
            .store_op(|e| format!("writing done marker {key:?}: {e}"), || self.store.put(&key, &body, &opts))
            .await;
        for w in batch.waiters {
            let _ = w.send(result.clone());
        }
    }
}

fn take(p: &mut Batch) -> Batch {
    let next = Batch { id: p.id + 1, ..Batch::default() };
    std::mem::replace(p, next)
}
