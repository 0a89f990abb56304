//! `sftp://user@host:port/dir` stores: list a folder (names, sizes, modification times),
//! read files, delete them once done, and write files (a temporary name, then a rename:
//! `write.rs`).
//!
//! Client: russh + russh-sftp, pure Rust (no libssh2 or OpenSSL to build or ship), with
//! the ring crypto backend the S3 client already uses. Keys: RSA and ed25519, in OpenSSH
//! (`BEGIN OPENSSH PRIVATE KEY`) and PEM (`BEGIN RSA PRIVATE KEY`, `BEGIN PRIVATE KEY`)
//! formats, optionally with a passphrase. The server's host key is checked against a
//! known_hosts file; `insecure_accept_any_host_key` turns that off for tests, with a
//! warning on every connection.
//!
//! One SSH connection and SFTP session per store, shared by every concurrent operation
//! (SFTP requests are multiplexed), opened on first use and again after a failure.

mod connect;
mod write;
use connect::HostKeyCheck;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use dqpipe_engine::api::body::{Body, Spool};
use dqpipe_engine::api::store::{Access, ObjectInfo, PutOptions, Store, StoreError, StoreErrorKind};
use dqpipe_engine::api::ConfigError;
use futures::stream::BoxStream;
use futures::StreamExt;
use russh::keys::PrivateKey;
use russh_sftp::client::SftpSession;
use schemars::JsonSchema;
use serde::Deserialize;
use tokio::sync::Mutex;

use super::non_empty;

/// Settings of an `sftp://` store, under `sftp:` in the store's entry.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct SftpOptions {
    /// Path of the private key file (RSA or ed25519; OpenSSH or PEM format).
    pub private_key_path: Option<String>,
    /// Passphrase of the private key, if it has one.
    pub private_key_passphrase: Option<String>,
    /// known_hosts file holding the server's host key. Default `~/.ssh/known_hosts`.
    pub known_hosts_path: Option<String>,
    /// Accept any host key. For tests only: it is logged as a warning on every connection.
    pub insecure_accept_any_host_key: bool,
    /// Time limit to connect and authenticate. Default 20 s.
    #[schemars(range(min = 1, max = 3600))]
    pub connect_timeout_secs: Option<u64>,
    /// Only files last modified at least this long ago are listed: a file still being
    /// uploaded is left for a later run. Default 60 s.
    #[schemars(range(min = 0, max = 31536000))]
    pub min_age_secs: Option<u64>,
}

pub struct SftpStore {
    url: String,
    user: String,
    host: String,
    port: u16,
    /// The folder on the server; keys are relative to it.
    dir: String,
    /// The private key file and its passphrase: read when connecting (a preflight check),
    /// not when the spec is validated, so that a spec repository can lint the spec
    /// without the key.
    key_path: String,
    passphrase: Option<String>,
    known_hosts: Option<std::path::PathBuf>,
    insecure: bool,
    timeout: Duration,
    min_age: Duration,
    session: Mutex<Option<Arc<Connection>>>,
}

struct Connection {
    sftp: SftpSession,
    // Kept open for as long as the SFTP session lives.
    _ssh: russh::client::Handle<HostKeyCheck>,
}

impl std::fmt::Debug for SftpStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SftpStore").field("url", &self.url).finish_non_exhaustive()
    }
}

/// A file as listed or checked: its ETag is its modification time and size, so that a
/// file that grew or was replaced since it was listed is seen to have changed.
fn info_of(key: String, m: &russh_sftp::client::fs::Metadata) -> ObjectInfo {
    let modified = m.mtime.and_then(|t| chrono::DateTime::<chrono::Utc>::from_timestamp(i64::from(t), 0));
    ObjectInfo {
        key,
        size: m.size.unwrap_or(0),
        etag: modified.map(|t| format!("{:x}-{:x}", t.timestamp(), m.size.unwrap_or(0))),
        last_modified: modified.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
    }
}

fn modified_of(o: &ObjectInfo) -> Option<chrono::DateTime<chrono::Utc>> {
    o.last_modified.as_deref().and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok()).map(|t| t.to_utc())
}

impl SftpStore {
    pub fn open(url: &str, opts: SftpOptions) -> Result<Self, ConfigError> {
        let (user, host, port, dir) = super::server_url(url, "sftp", 22, "dqpipe authenticates with a key")?;
        let key_path = non_empty(&opts.private_key_path)
            .ok_or_else(|| ConfigError::at("sftp.private_key_path", "an sftp:// store needs a private key file"))?;
        let known_hosts = match (non_empty(&opts.known_hosts_path), opts.insecure_accept_any_host_key) {
            (_, true) => None,
            (Some(p), false) => Some(std::path::PathBuf::from(p)),
            (None, false) => Some(
                std::env::var_os("HOME")
                    .map(|h| std::path::PathBuf::from(h).join(".ssh/known_hosts"))
                    .ok_or_else(|| ConfigError::at("sftp.known_hosts_path", "no HOME: give known_hosts_path"))?,
            ),
        };
        Ok(Self {
            url: url.to_string(),
            user,
            host,
            port,
            dir,
            key_path: key_path.to_string(),
            passphrase: non_empty(&opts.private_key_passphrase).map(String::from),
            known_hosts,
            insecure: opts.insecure_accept_any_host_key,
            timeout: Duration::from_secs(opts.connect_timeout_secs.unwrap_or(20).max(1)),
            min_age: Duration::from_secs(opts.min_age_secs.unwrap_or(60)),
            session: Mutex::new(None),
        })
    }

    /// The private key, read from its file: a file missing or in another format is an
    /// error of the store's settings (not retried).
    fn private_key(&self) -> Result<Arc<PrivateKey>, StoreError> {
        let key = russh::keys::load_secret_key(&self.key_path, self.passphrase.as_deref()).map_err(|e| {
            StoreError::new(
                StoreErrorKind::AccessDenied,
                format!("cannot read the private key `{}`: {e} (RSA or ed25519, OpenSSH or PEM format)", self.key_path),
            )
        })?;
        Ok(Arc::new(key))
    }

    fn path(&self, key: &str) -> Result<String, StoreError> {
        let bad = |why: &str| StoreError::new(StoreErrorKind::InvalidKey, format!("key {key:?} {why}"));
        if key.is_empty() || key.starts_with('/') || key.chars().any(|c| c.is_control()) {
            return Err(bad("is empty, absolute or has a control character"));
        }
        if key.split('/').any(|s| s.is_empty() || s == "." || s == "..") {
            return Err(bad("has an empty, `.` or `..` segment"));
        }
        Ok(format!("{}/{key}", self.dir.trim_end_matches('/')))
    }

    fn error(&self, what: &str, e: russh_sftp::client::error::Error) -> StoreError {
        use russh_sftp::client::error::Error as E;
        use russh_sftp::protocol::StatusCode as S;
        let kind = match &e {
            E::Status(s) if s.status_code == S::NoSuchFile => StoreErrorKind::NotFound,
            E::Status(s) if s.status_code == S::PermissionDenied => StoreErrorKind::AccessDenied,
            E::Status(s) if matches!(s.status_code, S::ConnectionLost | S::NoConnection) => StoreErrorKind::Transient,
            E::Timeout | E::IO(_) => StoreErrorKind::Transient,
            _ => StoreErrorKind::Other,
        };
        StoreError::new(kind, format!("{what}: {e}"))
    }
}
#[async_trait]
impl Store for SftpStore {
    fn display_url(&self) -> String {
        self.url.clone()
    }

    /// Read, write and delete.
    fn can(&self, _access: Access) -> bool {
        true
    }

    /// The folder's files (not sub-folders), in name order; `prefix` filters names.
    fn list<'a>(
        &'a self,
        prefix: &'a str,
        start_after: Option<String>,
    ) -> BoxStream<'a, Result<ObjectInfo, StoreError>> {
        futures::stream::once(async move {
            let c = self.session().await?;
            let entries = match c.sftp.read_dir(self.dir.clone()).await {
                Ok(e) => e,
                Err(e) => {
                    let err = self.error(&format!("listing {}", self.dir), e);
                    if err.kind == StoreErrorKind::Transient {
                        self.forget_session().await;
                    }
                    return Err(err);
                }
            };
            // Files modified after this are perhaps still being written: not listed.
            let settled = chrono::Utc::now() - self.min_age;
            let mut young = 0usize;
            let mut files: Vec<ObjectInfo> = entries
                .filter(|e| e.file_type().is_file() && !e.file_name().starts_with(write::TMP_PREFIX))
                .map(|e| info_of(e.file_name(), &e.metadata()))
                .filter(|o| o.key.starts_with(prefix) && start_after.as_deref().is_none_or(|s| o.key.as_str() > s))
                .filter(|o| {
                    let old_enough = modified_of(o).is_some_and(|m| m <= settled);
                    young += usize::from(!old_enough);
                    old_enough
                })
                .collect();
            if young > 0 {
                tracing::info!(
                    store = %self.url,
                    files = young,
                    min_age_secs = self.min_age.as_secs(),
                    "files modified too recently (perhaps still being uploaded) are left for a later run"
                );
            }
            files.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(futures::stream::iter(files.into_iter().map(Ok)))
        })
        .map(|r: Result<_, StoreError>| match r {
            Ok(s) => s.boxed(),
            Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
        })
        .flatten()
        .boxed()
    }

    async fn get(&self, key: &str, spool: &Spool) -> Result<Body, StoreError> {
        let path = self.path(key)?;
        let c = self.session().await?;
        let file = match c.sftp.open(path.clone()).await {
            Ok(f) => f,
            Err(e) => {
                let err = self.error(&format!("opening {key:?}"), e);
                if err.kind == StoreErrorKind::Transient {
                    self.forget_session().await;
                }
                return Err(err);
            }
        };
        let stream = tokio_util::io::ReaderStream::with_capacity(file, 64 * 1024);
        Body::from_stream(stream, None, spool)
            .await
            .map_err(|e| StoreError::new(StoreErrorKind::Transient, format!("reading {key:?}: {e}")))
    }

    /// A temporary name, then a rename: never a partial file under `key` (`write.rs`).
    /// Content type and metadata have no place on an SFTP server and are not kept.
    async fn put(&self, key: &str, body: &Body, _options: &PutOptions) -> Result<(), StoreError> {
        self.write_file(key, body).await
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, StoreError> {
        let path = self.path(key)?;
        let c = self.session().await?;
        match c.sftp.metadata(path).await {
            Ok(m) => Ok(Some(info_of(key.to_string(), &m))),
            Err(e) => {
                let err = self.error(&format!("checking {key:?}"), e);
                if err.kind == StoreErrorKind::NotFound {
                    Ok(None)
                } else {
                    Err(err)
                }
            }
        }
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let path = self.path(key)?;
        let c = self.session().await?;
        c.sftp.remove_file(path).await.map_err(|e| self.error(&format!("deleting {key:?}"), e))
    }
}
