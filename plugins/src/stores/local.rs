//! `file://` stores: a folder on the local file system.
//!
//! Written on tokio::fs rather than object_store's LocalFileSystem: that one maps keys to
//! file names through its percent-encoding of path parts, so an archive file named
//! `[-PRMD=EG-...].json` or one with `%` in its name is not found as it is on disk, and keys
//! would not be "used exactly as stored". Here a key is the relative path, byte for byte,
//! after checks that keep every write inside the root.

use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use dqpipe_engine::api::body::{Body, Spool};
use dqpipe_engine::api::store::{ObjectInfo, Origin, PutOptions, Store, StoreError, StoreErrorKind};
use dqpipe_engine::api::ConfigError;
use futures::stream::BoxStream;
use futures::StreamExt;
use schemars::JsonSchema;
use serde::Deserialize;

/// Settings of a `file://` store.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LocalOptions {
    /// Flush each written file to disk before it is renamed into place and counted done.
    #[serde(default = "yes")]
    pub fsync: bool,
}

fn yes() -> bool {
    true
}

impl Default for LocalOptions {
    fn default() -> Self {
        Self { fsync: true }
    }
}

#[derive(Debug)]
pub struct LocalStore {
    url: String,
    root: PathBuf,
    fsync: bool,
    /// Folders this process has written into and cleared of stale temporary files.
    swept: std::sync::Mutex<std::collections::HashSet<PathBuf>>,
    /// Set once the file system has refused extended attributes (warned once).
    no_xattrs: std::sync::atomic::AtomicBool,
}

/// The extended attributes that hold a file's [`Origin`], set on the temporary file before
/// it is renamed into place, so a file is never visible without them.
const XATTR_SOURCE_KEY: &str = "user.dqpipe.source_key";
const XATTR_RUN: &str = "user.dqpipe.run";

/// Files are written as `.dqpipe-tmp-<host>-<pid>-<n>` and renamed into place; a process
/// killed in between leaves one behind, which the next run that writes into that folder
/// removes ([`sweep_stale_temporaries`]). Listings never show them.
const TMP_PREFIX: &str = ".dqpipe-tmp-";
static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// This machine's name as it appears in temporary file names (letters and digits only).
static HOST: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let name: String = name.trim().chars().filter(|c| c.is_ascii_alphanumeric()).take(32).collect();
    if name.is_empty() {
        "host".into()
    } else {
        name
    }
});

/// A temporary file of no running writer: written on this machine by a process that is
/// gone (no `/proc/<pid>`), or older than a day, longer than any write takes.
fn is_stale_temporary(name: &str, modified: Option<std::time::SystemTime>) -> bool {
    let Some(rest) = name.strip_prefix(TMP_PREFIX) else { return false };
    let old = modified.and_then(|m| m.elapsed().ok()).is_some_and(|age| age.as_secs() > 24 * 3600);
    let mut parts = rest.split('-');
    let dead_here = match (parts.next(), parts.next().and_then(|p| p.parse::<u32>().ok())) {
        (Some(host), Some(pid)) if host == HOST.as_str() && Path::new("/proc/self").exists() => {
            !Path::new(&format!("/proc/{pid}")).exists()
        }
        _ => false,
    };
    old || dead_here
}

/// Removes the stale temporary files of one folder (see [`is_stale_temporary`]).
async fn sweep_stale_temporaries(dir: &Path) {
    let Ok(mut entries) = tokio::fs::read_dir(dir).await else { return };
    while let Ok(Some(e)) = entries.next_entry().await {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with(TMP_PREFIX) {
            continue;
        }
        let modified = e.metadata().await.ok().and_then(|m| m.modified().ok());
        if is_stale_temporary(&name, modified) && tokio::fs::remove_file(e.path()).await.is_ok() {
            tracing::info!(file = %e.path().display(), "removed a temporary file left by an interrupted run");
        }
    }
}

impl LocalStore {
    pub fn open(url: &str, opts: LocalOptions) -> Result<Self, ConfigError> {
        let path = url.strip_prefix("file://").unwrap_or(url);
        if path.is_empty() {
            return Err(ConfigError::at("url", "a file:// URL needs a folder: `file://./var/in` or `file:///data/in`"));
        }
        Ok(Self {
            url: url.to_string(),
            root: PathBuf::from(path),
            fsync: opts.fsync,
            swept: Default::default(),
            no_xattrs: Default::default(),
        })
    }

    /// The file for `key`, refusing keys that would leave the root or that a file system
    /// cannot hold faithfully.
    fn path_of(&self, key: &str) -> Result<PathBuf, StoreError> {
        let bad = |why: &str| StoreError::new(StoreErrorKind::InvalidKey, format!("key {key:?} {why}"));
        if key.is_empty() {
            return Err(bad("is empty"));
        }
        if key.starts_with('/') {
            return Err(bad("is absolute"));
        }
        if key.chars().any(|c| c.is_control()) {
            return Err(bad("contains a control character"));
        }
        for seg in key.split('/') {
            if seg.is_empty() || seg == "." || seg == ".." {
                return Err(bad("has an empty, `.` or `..` segment"));
            }
            if seg.len() > 255 {
                return Err(bad("has a segment longer than 255 bytes"));
            }
        }
        let rel = Path::new(key);
        if !rel.components().all(|c| matches!(c, Component::Normal(_))) {
            return Err(bad("is not a plain relative path"));
        }
        Ok(self.root.join(rel))
    }

    fn info(&self, key: String, meta: &std::fs::Metadata) -> ObjectInfo {
        let modified = meta.modified().ok().map(chrono::DateTime::<chrono::Utc>::from);
        ObjectInfo {
            key,
            size: meta.len(),
            etag: modified.map(|m| format!("{:x}-{:x}", m.timestamp_nanos_opt().unwrap_or(0), meta.len())),
            last_modified: modified.map(|m| m.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        }
    }
}

fn io_error(key: &str, what: &str, e: std::io::Error) -> StoreError {
    let kind = match e.kind() {
        std::io::ErrorKind::NotFound => StoreErrorKind::NotFound,
        std::io::ErrorKind::PermissionDenied => StoreErrorKind::AccessDenied,
        _ => StoreErrorKind::Other,
    };
    StoreError::new(kind, format!("{what} {key:?}: {e}"))
}

#[async_trait]
impl Store for LocalStore {
    fn display_url(&self) -> String {
        self.url.clone()
    }

    fn list<'a>(
        &'a self,
        prefix: &'a str,
        start_after: Option<String>,
    ) -> BoxStream<'a, Result<ObjectInfo, StoreError>> {
        // Walk only the folder the prefix names; filter the rest by the prefix itself.
        let dir = match prefix.rfind('/') {
            Some(i) => self.root.join(&prefix[..i]),
            None => self.root.clone(),
        };
        if !self.root.is_dir() {
            let err =
                StoreError::new(StoreErrorKind::NotFound, format!("folder {} does not exist", self.root.display()));
            return futures::stream::once(async move { Err(err) }).boxed();
        }
        let root = self.root.clone();
        let prefix = prefix.to_string();

        let (tx, rx) = tokio::sync::mpsc::channel::<Result<(String, std::fs::Metadata), StoreError>>(256);
        tokio::task::spawn_blocking(move || {
            let walker = walkdir::WalkDir::new(&dir).sort_by_file_name().into_iter();
            for entry in walker {
                let item = match entry {
                    Ok(e) if e.file_type().is_file() => {
                        if e.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
                            continue;
                        }
                        let Ok(rel) = e.path().strip_prefix(&root) else { continue };
                        let Some(key) = rel.to_str().map(|s| s.replace(std::path::MAIN_SEPARATOR, "/")) else {
                            tracing::warn!(path = %e.path().display(), "skipping a file whose name is not UTF-8");
                            continue;
                        };
                        if !key.starts_with(&prefix) || start_after.as_deref().is_some_and(|s| key.as_str() <= s) {
                            continue;
                        }
                        match e.metadata() {
                            Ok(m) => Ok((key, m)),
                            Err(err) => Err(StoreError::new(
                                StoreErrorKind::Other,
                                format!("reading {}: {err}", e.path().display()),
                            )),
                        }
                    }
                    Ok(_) => continue,
                    Err(err)
                        if err.io_error().is_some_and(|e| e.kind() == std::io::ErrorKind::NotFound)
                            && err.depth() == 0 =>
                    {
                        // The prefix names a folder that does not exist: nothing to list.
                        return;
                    }
                    Err(err) => Err(StoreError::new(StoreErrorKind::Other, format!("listing: {err}"))),
                };
                if tx.blocking_send(item).is_err() {
                    return;
                }
            }
        });
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) })
            .map(move |r| r.map(|(key, m)| self.info(key, &m)))
            .boxed()
    }

    async fn get(&self, key: &str, spool: &Spool) -> Result<Body, StoreError> {
        let path = self.path_of(key)?;
        let file = tokio::fs::File::open(&path).await.map_err(|e| io_error(key, "opening", e))?;
        let len = file.metadata().await.map_err(|e| io_error(key, "reading", e))?.len();
        if len <= spool.threshold {
            let bytes = tokio::fs::read(&path).await.map_err(|e| io_error(key, "reading", e))?;
            return Ok(Body::Memory(Bytes::from(bytes)));
        }
        let stream = tokio_util::io::ReaderStream::new(file);
        Body::from_stream(stream, Some(len), spool)
            .await
            .map_err(|e| StoreError::new(StoreErrorKind::Other, format!("reading {key:?}: {e}")))
    }

    async fn put(&self, key: &str, body: &Body, options: &PutOptions) -> Result<(), StoreError> {
        self.write(key, body, options, true).await.map(|_| ())
    }

    async fn put_new(&self, key: &str, body: &Body, options: &PutOptions) -> Result<bool, StoreError> {
        self.write(key, body, options, false).await
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let path = self.path_of(key)?;
        tokio::fs::remove_file(&path).await.map_err(|e| io_error(key, "deleting", e))
    }

    async fn origin(&self, key: &str) -> Result<Option<Origin>, StoreError> {
        let path = self.path_of(key)?;
        let read = tokio::task::spawn_blocking(move || -> std::io::Result<Option<Origin>> {
            let attr = |name| xattr::get(&path, name).map(|v| v.map(|b| String::from_utf8_lossy(&b).into_owned()));
            match attr(XATTR_SOURCE_KEY) {
                Ok(Some(source_key)) => Ok(Some(Origin { source_key, run: attr(XATTR_RUN)?.unwrap_or_default() })),
                Ok(None) => Ok(None),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound || unsupported(&e) => Ok(None),
                Err(e) => Err(e),
            }
        });
        match read.await {
            Ok(r) => r.map_err(|e| io_error(key, "reading the origin of", e)),
            Err(e) => Err(StoreError::new(StoreErrorKind::Other, format!("reading the origin of {key:?}: {e}"))),
        }
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, StoreError> {
        let path = self.path_of(key)?;
        match tokio::fs::metadata(&path).await {
            Ok(m) if m.is_file() => Ok(Some(self.info(key.to_string(), &m))),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error(key, "reading", e)),
        }
    }
}

impl LocalStore {
    /// Writes a temporary file, then renames it into place (`replace`), or links it there
    /// only if the name is free (`Ok(false)` when it is not): either way readers never
    /// see part of a file.
    async fn write(&self, key: &str, body: &Body, options: &PutOptions, replace: bool) -> Result<bool, StoreError> {
        let path = self.path_of(key)?;
        let dir = path.parent().unwrap_or(&self.root).to_path_buf();
        tokio::fs::create_dir_all(&dir).await.map_err(|e| io_error(key, "creating the folder for", e))?;
        let first_write_here = self.swept.lock().is_ok_and(|mut s| s.insert(dir.clone()));
        if first_write_here {
            sweep_stale_temporaries(&dir).await;
        }
        let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!("{TMP_PREFIX}{}-{}-{n}", HOST.as_str(), std::process::id()));
        let write = async {
            self.write_temporary(&tmp, body).await?;
            if let Some(origin) = &options.origin {
                self.record_origin(&tmp, origin, &options.metadata).await?;
            }
            if replace {
                return tokio::fs::rename(&tmp, &path).await.map(|()| true);
            }
            // A hard link fails if the name exists: an atomic "create if absent".
            let linked = match tokio::fs::hard_link(&tmp, &path).await {
                Ok(()) => Ok(true),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
                // A file system without hard links (EPERM, EOPNOTSUPP): check, then rename.
                Err(e) if unsupported(&e) || e.raw_os_error() == Some(1) => match tokio::fs::metadata(&path).await {
                    Ok(_) => Ok(false),
                    Err(_) => tokio::fs::rename(&tmp, &path).await.map(|()| true),
                },
                Err(e) => Err(e),
            };
            let _ = tokio::fs::remove_file(&tmp).await;
            linked
        };
        match write.await {
            Ok(written) => Ok(written),
            Err(e) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                Err(io_error(key, "writing", e))
            }
        }
    }

    /// Writes the body to the temporary file and, with `fsync`, flushes it to disk; then
    /// checks that the file holds every byte. Written with `std::fs` in one blocking task,
    /// not tokio's `File`: tokio's `write_all` hands the bytes to a background write whose
    /// failure (ENOSPC, EDQUOT, EIO, EFBIG) is reported only by a later write or flush,
    /// and `sync_data` does not report it, so a short file was renamed into place and
    /// counted done. Here every error of the write, the copy and the flush fails it.
    async fn write_temporary(&self, tmp: &Path, body: &Body) -> std::io::Result<()> {
        use std::io::Write;
        let (tmp, fsync, expected) = (tmp.to_path_buf(), self.fsync, body.len());
        let (bytes, spooled) = match body {
            Body::Memory(b) => (Some(b.clone()), None),
            Body::Spooled(_) => (None, body.spooled_path().map(Path::to_path_buf)),
        };
        let job = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            match (bytes, spooled) {
                (Some(b), _) => f.write_all(&b)?,
                (None, Some(src)) => {
                    std::io::copy(&mut std::fs::File::open(src)?, &mut f)?;
                }
                (None, None) => {}
            }
            f.flush()?;
            if fsync {
                f.sync_all()?;
            }
            let written = f.metadata()?.len();
            if written != expected {
                return Err(std::io::Error::other(format!(
                    "the file holds {written} of {expected} bytes after writing: not renamed into place"
                )));
            }
            Ok(())
        });
        job.await.map_err(std::io::Error::other)?
    }

    /// Records the origin, and the put's metadata, on the temporary file. A file system without user extended
    /// attributes (some network mounts) is warned about once and written to without them:
    /// there, objects from two sources that map to one key are not told apart.
    async fn record_origin(&self, tmp: &Path, origin: &Origin, metadata: &[(String, String)]) -> std::io::Result<()> {
        if self.no_xattrs.load(Ordering::Relaxed) {
            return Ok(());
        }
        let (tmp, o, metadata) = (tmp.to_path_buf(), origin.clone(), metadata.to_vec());
        let set = tokio::task::spawn_blocking(move || {
            xattr::set(&tmp, XATTR_SOURCE_KEY, o.source_key.as_bytes())?;
            xattr::set(&tmp, XATTR_RUN, o.run.as_bytes())?;
            // The put's metadata (a scan's provenance) as `user.dqpipe.<name>`.
            for (name, value) in &metadata {
                let name = format!("user.dqpipe.{}", name.strip_prefix("dqpipe-").unwrap_or(name));
                xattr::set(&tmp, name, value.as_bytes())?;
            }
            Ok(())
        });
        match set.await.map_err(std::io::Error::other)? {
            Err(e) if unsupported(&e) => {
                if !self.no_xattrs.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        store = %self.url,
                        "this file system keeps no extended attributes: written files do not record their source, \
                         so two source objects that map to one key are not told apart across runs"
                    );
                }
                Ok(())
            }
            r => r,
        }
    }
}

/// The file system does not keep user extended attributes.
fn unsupported(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::Unsupported || e.raw_os_error() == Some(95) // EOPNOTSUPP
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(dir: &Path) -> LocalStore {
        LocalStore::open(&format!("file://{}", dir.display()), LocalOptions { fsync: false }).unwrap()
    }

    #[tokio::test]
    async fn keys_exactly_as_stored_and_never_outside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let spool = Spool { threshold: 1 << 20, dir: None };
        let key = "a/[-PRMD=EG;x=1] 50% é.json";
        s.put(key, &Body::Memory(Bytes::from_static(b"{}")), &PutOptions::default()).await.unwrap();
        assert!(dir.path().join("a/[-PRMD=EG;x=1] 50% é.json").is_file());
        assert_eq!(s.get(key, &spool).await.unwrap().to_bytes(10).await.unwrap(), Bytes::from_static(b"{}"));
        let listed: Vec<String> = s.list("", None).map(|r| r.unwrap().key).collect().await;
        assert_eq!(listed, vec![key.to_string()]);
        // Written only if the name is free; the file there is left as it was.
        assert!(!s.put_new(key, &Body::Memory(Bytes::from_static(b"[]")), &PutOptions::default()).await.unwrap());
        assert!(s
            .put_new("a/new.json", &Body::Memory(Bytes::from_static(b"[]")), &PutOptions::default())
            .await
            .unwrap());
        assert_eq!(std::fs::read(dir.path().join("a/[-PRMD=EG;x=1] 50% é.json")).unwrap(), b"{}");
        assert_eq!(std::fs::read(dir.path().join("a/new.json")).unwrap(), b"[]");
        let mut names: Vec<String> = std::fs::read_dir(dir.path().join("a"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["[-PRMD=EG;x=1] 50% é.json", "new.json"], "no temporary file left");
        for bad in ["../x", "/etc/passwd", "a/../../x", "a//b", "a\0b", "a\nb", ""] {
            let e = s.put(bad, &Body::Memory(Bytes::new()), &PutOptions::default()).await.unwrap_err();
            assert_eq!(e.kind, StoreErrorKind::InvalidKey, "{bad:?}");
        }
    }
}
