//! Writing a local file so that it is whole when visible: a temporary file written with
//! blocking writes, checked, given its origin, then renamed or linked into place; and the
//! temporary files interrupted runs left behind.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use dqpipe_engine::api::body::Body;
use dqpipe_engine::api::store::{Origin, PutOptions, StoreError};

use super::{io_error, LocalStore, XATTR_RUN, XATTR_SOURCE_KEY};

/// Files are written as `.dqpipe-tmp-<host>-<pid>-<n>` and renamed into place; a process
/// killed in between leaves one behind, which the next run that writes into that folder
/// removes ([`sweep_stale_temporaries`]). Listings never show them.
pub(super) const TMP_PREFIX: &str = ".dqpipe-tmp-";
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
pub(super) fn is_stale_temporary(name: &str, modified: Option<std::time::SystemTime>) -> bool {
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
pub(super) async fn sweep_stale_temporaries(dir: &Path) {
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
    /// Writes a temporary file, then renames it into place (`replace`), or links it there
    /// only if the name is free (`Ok(false)` when it is not): either way readers never
    /// see part of a file.
    pub(super) async fn write(
        &self,
        key: &str,
        body: &Body,
        options: &PutOptions,
        replace: bool,
    ) -> Result<bool, StoreError> {
        let path = self.path_of(key)?;
        let dir = path.parent().unwrap_or(&self.root).to_path_buf();
        // Before any folder is made: a link on the way would have them made out of the store.
        self.beneath(key, &dir)?;
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
pub(super) fn unsupported(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::Unsupported || e.raw_os_error() == Some(95) // EOPNOTSUPP
}

/// The `user.dqpipe.*` extended attributes of `path` other than its origin, by the names
/// `put` wrote them under (`user.dqpipe.scan-engine` is `dqpipe-scan-engine`). A file
/// system without extended attributes, or a file gone, has none.
pub(super) fn dqpipe_attributes(path: &std::path::Path) -> std::io::Result<Vec<(String, String)>> {
    let names = match xattr::list(path) {
        Ok(names) => names,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound || unsupported(&e) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut found = Vec::new();
    for name in names {
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix("user.dqpipe.")) else { continue };
        if name == XATTR_SOURCE_KEY || name == XATTR_RUN {
            continue;
        }
        if let Some(value) = xattr::get(path, &name)? {
            found.push((format!("dqpipe-{rest}"), String::from_utf8_lossy(&value).into_owned()));
        }
    }
    found.sort();
    Ok(found)
}
