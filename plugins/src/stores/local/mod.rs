//! `file://` stores: a folder on the local file system.
//!
//! Written on tokio::fs rather than object_store's LocalFileSystem: that one maps keys to
//! file names through its percent-encoding of path parts, so an archive file named
//! `[-PRMD=EG-...].json` or one with `%` in its name is not found as it is on disk, and keys
//! would not be "used exactly as stored". Here a key is the relative path, byte for byte,
//! after checks that keep every write inside the root.

mod write;
use write::{unsupported, TMP_PREFIX};

use std::path::{Component, Path, PathBuf};

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
    /// Entries listings met that are not files, by path (a relisting meets them again).
    not_listed: NotListed,
}

type NotListed = std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<String, String>>>;

/// At most this many entries that are not files are named (the rest are not kept).
const NOT_LISTED_KEPT: usize = 1000;

fn not_listed(seen: &NotListed, path: &std::path::Path, root: &std::path::Path, why: &str) {
    let shown = path.strip_prefix(root).unwrap_or(path).to_string_lossy().into_owned();
    tracing::warn!(path = %shown.escape_debug(), "not listed: {why}");
    if let Ok(mut m) = seen.lock() {
        if m.len() < NOT_LISTED_KEPT {
            m.insert(shown, why.to_string());
        }
    }
}

/// The extended attributes that hold a file's [`Origin`], set on the temporary file before
/// it is renamed into place, so a file is never visible without them.
const XATTR_SOURCE_KEY: &str = "user.dqpipe.source_key";
const XATTR_RUN: &str = "user.dqpipe.run";

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
            not_listed: Default::default(),
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

impl LocalStore {
    /// That `path`, links resolved, lies inside the store's root: a symlinked folder or
    /// file inside the store (`msg_date=2022-01-28 -> /elsewhere`) is not read or written
    /// through. A path that does not exist yet is checked by its nearest existing folder.
    /// Resolved by the file system (`canonicalize`), not by the path's text; a link
    /// swapped in between this check and the open is not caught (openat2's
    /// RESOLVE_BENEATH would be; not used yet).
    pub(super) fn beneath(&self, key: &str, path: &Path) -> Result<(), StoreError> {
        let Ok(root) = self.root.canonicalize() else { return Ok(()) };
        let mut at = path.to_path_buf();
        let real = loop {
            match at.canonicalize() {
                Ok(real) => break real,
                Err(_) if at.pop() && at.starts_with(&self.root) => continue,
                Err(_) => return Ok(()),
            }
        };
        match real.starts_with(&root) {
            true => Ok(()),
            false => Err(StoreError::new(
                StoreErrorKind::InvalidKey,
                format!("{key:?} leads out of the store through a link (to {}): refused", real.display()),
            )),
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
    fn take_not_listed(&self) -> Vec<(String, String)> {
        self.not_listed.lock().map(|mut m| std::mem::take(&mut *m).into_iter().collect()).unwrap_or_default()
    }
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
        if let Err(e) = self.beneath(prefix, &dir) {
            return futures::stream::once(async move { Err(e) }).boxed();
        }
        let root = self.root.clone();
        let prefix = prefix.to_string();
        let seen = self.not_listed.clone();

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
                            not_listed(&seen, e.path(), &root, "a name that is not UTF-8");
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
                    Ok(e) if e.file_type().is_dir() => continue,
                    // Links (which could lead out of the store), sockets, pipes: not
                    // objects, and said so rather than skipped in silence.
                    Ok(e) => {
                        let t = e.file_type();
                        let why =
                            if t.is_symlink() { "a symbolic link" } else { "not a file (a socket, a pipe, a device)" };
                        not_listed(&seen, e.path(), &root, why);
                        continue;
                    }
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
        self.beneath(key, &path)?;
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

    async fn metadata(&self, key: &str) -> Result<Vec<(String, String)>, StoreError> {
        let path = self.path_of(key)?;
        let read = tokio::task::spawn_blocking(move || write::dqpipe_attributes(&path));
        match read.await {
            Ok(r) => r.map_err(|e| io_error(key, "reading the metadata of", e)),
            Err(e) => Err(StoreError::new(StoreErrorKind::Other, format!("reading the metadata of {key:?}: {e}"))),
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
