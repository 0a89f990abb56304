//! What makes a batch exactly-once across runs: each batch object has a manifest, the
//! list of its members, written *before* the object, beside the done markers in the
//! batch's store (`_dqpipe/batches/<pipeline>/<node>/<group>/<batch id>.json`).
//!
//! A member is one item: its source object (key and version) and which part of it (an
//! archive's member, a file's record). The batch's id is a digest of its members, so the
//! same members always make the same key, and a rerun replaces rather than duplicates.
//!
//! The order of a batch's write is: manifest, then object, then the members' done
//! markers (the engine's acknowledgement, once the held items are let go). A kill -9:
//! - before the object is written: the manifest names an object that does not exist, so
//!   it is void; the members' objects were never done-marked, and the rerun batches them;
//! - after the object, before the done markers: the rerun lists those objects again, and
//!   their records arrive again; the first item of a group reads that group's manifests,
//!   and a member a manifest names whose object exists is not written again (it goes out
//!   of `out` with the `batch_key` that holds it).
//!
//! So each record ends in exactly one batch object. Manifests are read only for the
//! groups a run writes (one listing and one read per earlier batch of that group), and
//! kept: they also say, for anyone asking later, which records each batch object holds.

use std::collections::HashMap;
use std::sync::Arc;

use dqpipe_engine::api::body::Spool;
use dqpipe_engine::api::store::{Store, StoreErrorKind};
use dqpipe_engine::api::{Context, Item, ItemError};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::list::resume::version_of;
use crate::retry::{resumable_listing, RetryPolicy};

/// Member id -> the batch object that holds it.
pub(crate) type Committed = Arc<HashMap<String, String>>;

/// A manifest as written: the batch object's key and its members' ids.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Manifest {
    pub key: String,
    pub run: String,
    pub members: Vec<String>,
}

/// Which item this is, as a manifest records it: `[source key, source version, part]`,
/// the part being the item's key when it differs from its source's (an archive's member)
/// and its `record` number when it has one. JSON text, so that no key can be mistaken
/// for two fields.
pub(crate) fn member_id(item: &Item) -> String {
    let source = item.listed();
    let mut part = String::new();
    if item.key() != source.key {
        part.push_str(item.key());
    }
    if let Some(record) = item.meta.get("record").filter(|r| !r.is_null()) {
        part.push('#');
        part.push_str(&record.to_string());
    }
    serde_json::to_string(&[source.key.as_str(), &version_of(source), &part]).unwrap_or_default()
}

/// The batch's id: the first 16 hex digits of the SHA-256 of its members' ids, sorted.
pub(crate) fn batch_id(members: &mut [String]) -> String {
    members.sort_unstable();
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for m in members.iter() {
        ctx.update(m.as_bytes());
        ctx.update(b"\n");
    }
    hex16(ctx.finish().as_ref())
}

/// The folder of a group's manifests: a digest of the key pattern, so that any key is a
/// safe folder name.
pub(crate) fn group_folder(prefix: &str, pattern: &str) -> String {
    format!("{prefix}/{}", hex16(ring::digest::digest(&ring::digest::SHA256, pattern.as_bytes()).as_ref()))
}

fn hex16(digest: &[u8]) -> String {
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// The members earlier runs wrote into batch objects that exist, for one group.
pub(crate) async fn read_group(
    store: &dyn Store,
    folder: &str,
    retry: &RetryPolicy,
    cx: &Context,
) -> Result<Committed, ItemError> {
    let prefix = format!("{folder}/");
    let mut keys = Vec::new();
    let mut listing = resumable_listing(store, &prefix, None, retry, || cx.retried(1));
    while let Some(entry) = listing.next().await {
        match entry {
            Ok(m) if m.key.ends_with(".json") => keys.push(m.key),
            Ok(_) => {}
            Err(e) if e.kind == StoreErrorKind::NotFound => break,
            Err(e) => return Err(ItemError::new(format!("listing batch manifests in {prefix:?}: {e}"))),
        }
    }
    let spool = Spool { threshold: 8 << 20, dir: None };
    let reads = futures::stream::iter(keys.into_iter().map(|key| {
        let spool = spool.clone();
        async move { read_one(store, &key, retry, cx, &spool).await }
    }))
    .buffer_unordered(8);
    let manifests: Vec<Result<Option<Manifest>, ItemError>> = reads.collect().await;
    let mut committed = HashMap::new();
    for manifest in manifests {
        let Some(m) = manifest? else { continue };
        for member in m.members {
            committed.insert(member, m.key.clone());
        }
    }
    Ok(Arc::new(committed))
}

/// One manifest, if its batch object exists (else it is void: that write never finished).
async fn read_one(
    store: &dyn Store,
    key: &str,
    retry: &RetryPolicy,
    cx: &Context,
    spool: &Spool,
) -> Result<Option<Manifest>, ItemError> {
    let body = retry.on_store(store, "reading batch manifest", key, cx, || store.get(key, spool)).await?;
    let bytes = body.to_bytes(64 << 20).await.map_err(|e| ItemError::new(format!("reading {key:?}: {e}")))?;
    // A manifest that does not parse was not written by dqpipe: it names nothing.
    let Ok(manifest) = serde_json::from_slice::<Manifest>(&bytes) else {
        tracing::warn!(key = %key.escape_debug(), "not a batch manifest dqpipe writes: skipped");
        return Ok(None);
    };
    let exists = retry.on_store(store, "checking", &manifest.key, cx, || store.head(&manifest.key)).await?;
    Ok(exists.map(|_| manifest))
}
