//! The store interface: where objects are listed, read and written. The engine names no
//! concrete store; `dqpipe-plugins` opens them by URL scheme (`file://`, `s3://`, ...).

use std::fmt;

use async_trait::async_trait;
use futures::stream::BoxStream;

use crate::api::body::{Body, Spool};

/// One object as a listing sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObjectInfo {
    /// The key exactly as stored, relative to the store's root.
    pub key: String,
    pub size: u64,
    pub etag: Option<String>,
    /// RFC 3339.
    pub last_modified: Option<String>,
}

/// What kind of failure, so that callers decide what to retry and what to report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreErrorKind {
    NotFound,
    AccessDenied,
    /// Worth retrying: timeouts, resets, 5xx, throttling.
    Transient,
    /// A key the store refuses (for example `..` on a local store).
    InvalidKey,
    Other,
}

#[derive(Debug, Clone)]
pub struct StoreError {
    pub kind: StoreErrorKind,
    pub message: String,
}

impl StoreError {
    pub fn new(kind: StoreErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into() }
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for StoreError {}

/// Settings for one write.
#[derive(Debug, Clone, Default)]
pub struct PutOptions {
    pub content_type: Option<String>,
    /// Metadata stored with the object (S3 user metadata; ignored by stores without it).
    pub metadata: Vec<(String, String)>,
    /// What the object is written from, recorded with it (see [`Store::origin`]).
    pub origin: Option<Origin>,
}

/// What a written object was written from, recorded with it (S3 user metadata, extended
/// attributes on a local file): `put` refuses to replace an object written from another
/// source object, so two sources that map to one key never overwrite each other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The source object's key, as its source listed it.
    pub source_key: String,
    /// The run that wrote it (`Context::run_id`).
    pub run: String,
}

/// What a store can do beyond listing and reading; nodes that need more say so when they
/// are built, so that `validate` refuses a spec that writes where nothing can be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Write,
    Delete,
}

/// A read of a listed object must give what the listing described: a body of another
/// length, or another ETag where both are known, was cut short on the way (a proxy that
/// rewrote its Content-Length, a connection that ended early) or replaced since the
/// listing. Either way the bytes are not the object: a transient error, retried and, past
/// the retries, left for a rerun, never routed as bad content (which would dead-letter and
/// mark done an object that is whole at its source).
pub fn check_read(listed: &ObjectInfo, len: u64, etag: Option<&str>) -> Result<(), StoreError> {
    let unquoted = |e: &str| e.trim_matches('"').to_string();
    if let (Some(read), Some(was)) = (etag, listed.etag.as_deref()) {
        if unquoted(read) != unquoted(was) {
            return Err(StoreError::new(
                StoreErrorKind::Transient,
                format!(
                    "{:?} was replaced since it was listed (ETag {was} -> {read}); the next run lists it again",
                    listed.key
                ),
            ));
        }
    }
    if len != listed.size {
        return Err(StoreError::new(
            StoreErrorKind::Transient,
            format!(
                "{:?}: read {len} bytes of the {} listed (cut short on the way, or changed since the listing)",
                listed.key, listed.size
            ),
        ));
    }
    Ok(())
}

#[async_trait]
pub trait Store: Send + Sync + fmt::Debug {
    /// The store's URL with any secret removed, for plans and logs.
    fn display_url(&self) -> String;

    /// Whether the store can write, or delete, objects. Both by default.
    fn can(&self, _access: Access) -> bool {
        true
    }

    /// Whether [`Store::list`] gives keys in byte order (S3's ListObjectsV2 does), so that
    /// a listing can be split into ranges listed at once. False by default.
    fn lists_in_key_order(&self) -> bool {
        false
    }

    /// Whether a listed object's ETag changes whenever its content does (S3's does; the
    /// modification time and size that stand for one on folders, SFTP and FTP do not: a
    /// file sent again under its name, size and time holds other bytes). False by default.
    fn etag_follows_content(&self) -> bool {
        false
    }

    /// The metadata dqpipe wrote with an object (`dqpipe-...` names: its scan provenance,
    /// `dqpipe-scan-engine` and the rest), as S3 user metadata or a local file's extended
    /// attributes hold it; empty for an object without any, or a store that keeps none.
    async fn metadata(&self, _key: &str) -> Result<Vec<(String, String)>, StoreError> {
        Ok(Vec::new())
    }

    /// The entries listings met that are not objects (links, sockets, names that are not
    /// UTF-8), as (path, why), taken once: a source reports them with its listing.
    fn take_not_listed(&self) -> Vec<(String, String)> {
        Vec::new()
    }

    /// Lists objects whose key starts with `prefix`, page by page as the store gives them,
    /// in key order where the store has one, starting after `start_after` when given.
    fn list<'a>(
        &'a self,
        prefix: &'a str,
        start_after: Option<String>,
    ) -> BoxStream<'a, Result<ObjectInfo, StoreError>>;

    /// Reads an object; bodies over the spool threshold go to a temporary file.
    async fn get(&self, key: &str, spool: &Spool) -> Result<Body, StoreError>;

    /// Reads an object as it was listed: see [`check_read`]. Stores whose read answers an
    /// ETag override this to compare it too.
    async fn get_listed(&self, listed: &ObjectInfo, spool: &Spool) -> Result<Body, StoreError> {
        let body = self.get(&listed.key, spool).await?;
        check_read(listed, body.len(), None)?;
        Ok(body)
    }

    /// Writes an object so that it is complete when visible: readers never see part of it.
    async fn put(&self, key: &str, body: &Body, options: &PutOptions) -> Result<(), StoreError>;

    /// An object's listing information, or `None` when it does not exist.
    async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, StoreError>;

    /// Writes an object only if the key holds none: `Ok(false)`, and nothing written, when
    /// it does. Stores that can do it in one request (S3's `If-None-Match: *`) or
    /// atomically (a hard link) override this, which checks first and then writes.
    async fn put_new(&self, key: &str, body: &Body, options: &PutOptions) -> Result<bool, StoreError> {
        if self.head(key).await?.is_some() {
            return Ok(false);
        }
        self.put(key, body, options).await.map(|()| true)
    }

    /// The origin recorded with an object when it was written; `None` when it does not
    /// exist, was written by something else, or the store records none (read-only stores).
    async fn origin(&self, _key: &str) -> Result<Option<Origin>, StoreError> {
        Ok(None)
    }

    /// Deletes an object only if it is still as it was listed (same size, and same ETag
    /// where both are known): a file that changed since (still being uploaded, replaced)
    /// is left for the next run, with an error saying so. One that is gone already is fine.
    async fn delete_listed(&self, listed: &ObjectInfo) -> Result<(), StoreError> {
        let Some(now) = self.head(&listed.key).await? else { return Ok(()) };
        let etag_changed = matches!((&now.etag, &listed.etag), (Some(a), Some(b)) if a != b);
        if now.size != listed.size || etag_changed {
            return Err(StoreError::new(
                StoreErrorKind::Other,
                format!(
                    "{:?} changed since it was listed (size {} -> {}{}): not deleted; the next run takes it again",
                    listed.key,
                    listed.size,
                    now.size,
                    if etag_changed { ", modified again" } else { "" }
                ),
            ));
        }
        self.delete(&listed.key).await
    }

    /// Deletes an object (sources that are emptied once their objects are done).
    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        Err(StoreError::new(StoreErrorKind::Other, format!("deleting {key:?}: {} does not delete", self.display_url())))
    }
}
