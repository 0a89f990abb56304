//! Writing to an SFTP server: never a partial file under the final name. The bytes go to
//! a temporary name beside it (`.dqpipe-tmp-<name>-<pid>-<n>`, which listings of an
//! `sftp://` store skip), are flushed (`fsync@openssh.com` where the server offers it),
//! checked by size, and only then renamed into place. SFTP version 3's RENAME refuses an
//! existing target (OpenSSH's server links, then unlinks) and russh-sftp does not send
//! `posix-rename@openssh.com`, so a file being replaced is removed first: for a moment the
//! name is absent, never partial. A failed write removes its temporary file; one left by
//! a killed run is never listed and is overwritten by no one (its name holds the pid).
//!
//! Every write error (a full disk on the server answers `SSH_FX_FAILURE`) fails the write
//! as transient: the item is retried, then left for a rerun, never marked done. Only a
//! refusal (`SSH_FX_PERMISSION_DENIED`) is permanent.

use std::sync::atomic::{AtomicU64, Ordering};

use dqpipe_engine::api::body::Body;
use dqpipe_engine::api::store::{StoreError, StoreErrorKind};
use tokio::io::AsyncWriteExt;

use super::{Connection, SftpStore};

/// The prefix of temporary names: listings skip names that start with it.
pub(super) const TMP_PREFIX: &str = ".dqpipe-tmp-";

static NEXT: AtomicU64 = AtomicU64::new(0);

impl SftpStore {
    /// Writes `body` at `key`: to a temporary name, flushed and checked, then renamed.
    pub(super) async fn write_file(&self, key: &str, body: &Body) -> Result<(), StoreError> {
        let path = self.path(key)?;
        let c = self.session().await?;
        self.make_parents(&c, key).await?;
        let (folder, name) = path.rsplit_once('/').unwrap_or(("", path.as_str()));
        let tmp =
            format!("{folder}/{TMP_PREFIX}{name}-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let written = self.write_tmp(&c, key, &tmp, body).await;
        let placed = match written {
            Ok(()) => self.rename_into_place(&c, key, &tmp, &path).await,
            Err(e) => Err(e),
        };
        if placed.is_err() {
            let _ = c.sftp.remove_file(tmp).await;
        }
        placed
    }

    async fn write_tmp(&self, c: &Connection, key: &str, tmp: &str, body: &Body) -> Result<(), StoreError> {
        let failed = |e: std::io::Error| {
            StoreError::new(StoreErrorKind::Transient, format!("writing {key:?} to {}: {e}", self.display()))
        };
        let mut file = c.sftp.create(tmp.to_string()).await.map_err(|e| self.write_error(key, e))?;
        let mut reader = body.reader().await.map_err(failed)?;
        tokio::io::copy(&mut reader, &mut file).await.map_err(failed)?;
        file.sync_all().await.map_err(|e| self.write_error(key, e))?;
        // Waits for every pending write's status: a full disk is reported here at the latest.
        file.shutdown().await.map_err(failed)?;
        let size = c.sftp.metadata(tmp.to_string()).await.map_err(|e| self.write_error(key, e))?.size;
        if size != Some(body.len()) {
            return Err(StoreError::new(
                StoreErrorKind::Transient,
                format!(
                    "writing {key:?} to {}: the server holds {} of its {} bytes (a full disk?)",
                    self.display(),
                    size.map_or("an unknown number".into(), |s| s.to_string()),
                    body.len()
                ),
            ));
        }
        Ok(())
    }

    async fn rename_into_place(&self, c: &Connection, key: &str, tmp: &str, path: &str) -> Result<(), StoreError> {
        if c.sftp.try_exists(path.to_string()).await.map_err(|e| self.write_error(key, e))? {
            c.sftp.remove_file(path.to_string()).await.map_err(|e| self.write_error(key, e))?;
        }
        c.sftp.rename(tmp.to_string(), path.to_string()).await.map_err(|e| self.write_error(key, e))
    }

    /// Creates the folders of `key` below the store's folder that are missing.
    async fn make_parents(&self, c: &Connection, key: &str) -> Result<(), StoreError> {
        let mut folder = self.dir.trim_end_matches('/').to_string();
        let segments: Vec<&str> = key.split('/').collect();
        for segment in &segments[..segments.len().saturating_sub(1)] {
            folder = format!("{folder}/{segment}");
            if c.sftp.try_exists(folder.clone()).await.map_err(|e| self.write_error(key, e))? {
                continue;
            }
            if let Err(e) = c.sftp.create_dir(folder.clone()).await {
                // Made meanwhile by another write: fine.
                if !c.sftp.try_exists(folder.clone()).await.unwrap_or(false) {
                    return Err(self.write_error(key, e));
                }
            }
        }
        Ok(())
    }

    /// A failed write request: refused for good when the server denies it, else transient.
    fn write_error(&self, key: &str, e: russh_sftp::client::error::Error) -> StoreError {
        let mut err = self.error(&format!("writing {key:?} to {}", self.display()), e);
        if err.kind != StoreErrorKind::AccessDenied {
            err.kind = StoreErrorKind::Transient;
        }
        err
    }

    fn display(&self) -> &str {
        &self.url
    }
}
