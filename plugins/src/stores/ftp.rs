//! `ftp://user@host:port/dir` stores, for feeds that are still served over plain FTP (the
//! ACL feed): list a folder (LIST, parsed by suppaftp: name, size, time), read files
//! (RETR, streamed into a body that spools past the threshold; the transfer's closing
//! reply must say it completed, and the length must be the listed one), delete them once
//! done (DELE). A source only: nothing is written to an FTP server.
//!
//! Client: suppaftp (tokio). FTPS is explicit TLS (`ftp.tls: explicit`: AUTH TLS, then
//! PBSZ 0 and PROT P, so the data connections are encrypted too), by rustls with ring,
//! the TLS the S3 client already builds, trusting Mozilla's roots (webpki-roots) and the
//! PEM certificates of `ftp.ca_bundle`; the server's name is checked against the URL's
//! host.
//! FTP's control connection carries one transfer at a time, so connections are pooled:
//! an operation takes an idle one or logs in anew, and gives it back when it succeeded (a
//! failed one is dropped). At most `ftp.max_connections` (4) are open at once, whatever
//! the nodes' concurrency: FTP servers limit connections per client (vsftpd's
//! `max_per_ip`, ProFTPD's `MaxClientsPerHost`) and answer more with 421, and an operation
//! waits for one of the store's connections instead. The password is a setting, never part of the URL, and never
//! printed: plans show it `<redacted>`, errors never quote it.
//!
//! LIST gives times to the minute (and only the day for files older than six months, as
//! `ls -l` does); `min_age_secs` (60 by default) keeps a file modified in the last minute,
//! perhaps still being uploaded, for a later run, judged from the end of the minute LIST
//! gives.

use std::time::Duration;

use async_trait::async_trait;
use dqpipe_engine::api::body::{Body, Spool};
use dqpipe_engine::api::store::{Access, ObjectInfo, PutOptions, Store, StoreError, StoreErrorKind};
use dqpipe_engine::api::ConfigError;
use futures::stream::BoxStream;
use futures::StreamExt;
use schemars::JsonSchema;
use serde::Deserialize;
use suppaftp::tokio::{AsyncRustlsConnector, AsyncRustlsFtpStream as AsyncFtpStream};
use suppaftp::{FtpError, Status};
use tokio::sync::{Mutex, SemaphorePermit};

use super::non_empty;

/// Settings of an `ftp://` store, under `ftp:` in the store's entry.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct FtpOptions {
    /// The password of the URL's user (from a secret: `"${FTP_PASSWORD}"`).
    pub password: Option<String>,
    /// Time limit to connect and log in, and of each reply. Default 20 s.
    #[schemars(range(min = 1, max = 3600))]
    pub timeout_secs: Option<u64>,
    /// Only files last modified at least this long ago are listed. Default 60 s.
    #[schemars(range(min = 0, max = 31536000))]
    pub min_age_secs: Option<u64>,
    /// `explicit`: FTPS (AUTH TLS on the usual port; commands and data encrypted);
    /// `none` (the default): plain FTP, for servers that offer nothing else.
    pub tls: FtpTls,
    /// PEM file of CA certificates to trust beside the public roots (a private CA).
    pub ca_bundle: Option<String>,
    /// At most this many connections (logins) to the server at once: each carries one
    /// transfer, and servers limit connections per client. Default 4.
    #[schemars(range(min = 1, max = 64))]
    pub max_connections: Option<usize>,
}

/// TLS on an FTP connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FtpTls {
    #[default]
    None,
    /// AUTH TLS after connecting, then PBSZ 0 and PROT P.
    Explicit,
}

pub struct FtpStore {
    url: String,
    user: String,
    password: String,
    address: String,
    /// The folder on the server; keys are names in it.
    dir: String,
    timeout: Duration,
    min_age: Duration,
    host: String,
    /// With `tls: explicit`: the TLS client configuration.
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    idle: Mutex<Vec<AsyncFtpStream>>,
    /// One permit per connection that may be open (`max_connections`).
    slots: tokio::sync::Semaphore,
}

impl std::fmt::Debug for FtpStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FtpStore").field("url", &self.url).finish_non_exhaustive()
    }
}

impl FtpStore {
    pub fn open(url: &str, opts: FtpOptions) -> Result<Self, ConfigError> {
        let (user, host, port, dir) = super::server_url(url, "ftp", 21, "set `ftp.password` (from a secret)")?;
        let tls = match opts.tls {
            FtpTls::None => None,
            FtpTls::Explicit => Some(tls_config(non_empty(&opts.ca_bundle))?),
        };
        Ok(Self {
            address: format!("{host}:{port}"),
            host,
            tls,
            url: url.to_string(),
            user,
            password: non_empty(&opts.password).unwrap_or_default().to_string(),
            dir,
            timeout: Duration::from_secs(opts.timeout_secs.unwrap_or(20).max(1)),
            min_age: Duration::from_secs(opts.min_age_secs.unwrap_or(60)),
            idle: Mutex::new(Vec::new()),
            slots: tokio::sync::Semaphore::new(opts.max_connections.unwrap_or(4).clamp(1, 64)),
        })
    }

    /// One of the store's connections, with the permit to use it (held until the
    /// operation is over): an idle one, or a new one, logged in, binary, in the folder.
    async fn connection(&self) -> Result<(SemaphorePermit<'_>, AsyncFtpStream), StoreError> {
        let slot =
            self.slots.acquire().await.map_err(|_| {
                StoreError::new(StoreErrorKind::Other, "internal error: the FTP connection slots closed")
            })?;
        if let Some(c) = self.idle.lock().await.pop() {
            return Ok((slot, c));
        }
        let login = async {
            let mut c = AsyncFtpStream::connect(&self.address).await?;
            if let Some(config) = &self.tls {
                let connector = AsyncRustlsConnector::from(tokio_rustls::TlsConnector::from(config.clone()));
                c = c.into_secure(connector, &self.host).await?;
            }
            c.login(self.user.as_str(), self.password.as_str()).await?;
            c.transfer_type(suppaftp::types::FileType::Binary).await?;
            c.cwd(&self.dir).await?;
            Ok::<_, FtpError>(c)
        };
        match tokio::time::timeout(self.timeout, login).await {
            Ok(Ok(c)) => Ok((slot, c)),
            Ok(Err(e)) => Err(self.error(&format!("logging in to {}", self.address), e)),
            Err(_) => Err(StoreError::new(
                StoreErrorKind::Transient,
                format!("cannot reach {} within {} s", self.address, self.timeout.as_secs()),
            )),
        }
    }

    /// One request within the store's timeout: a server that stops answering is a
    /// transient failure, not a run that hangs.
    async fn within<T>(
        &self,
        what: &str,
        f: impl std::future::Future<Output = Result<T, FtpError>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.timeout, f).await {
            Ok(r) => r.map_err(|e| self.error(what, e)),
            Err(_) => Err(StoreError::new(
                StoreErrorKind::Transient,
                format!("{what} ({}): no answer within {} s", self.url, self.timeout.as_secs()),
            )),
        }
    }

    async fn give_back(&self, c: AsyncFtpStream) {
        self.idle.lock().await.push(c);
    }

    /// An FTP failure as a store error: 530 (not logged in) is a refusal, 550 a missing
    /// file (or one we may not have: FTP does not tell them apart), 4xx and lost
    /// connections transient.
    fn error(&self, what: &str, e: FtpError) -> StoreError {
        let kind = match &e {
            FtpError::UnexpectedResponse(r) if r.status == Status::NotLoggedIn => StoreErrorKind::AccessDenied,
            FtpError::UnexpectedResponse(r) if r.status == Status::FileUnavailable => StoreErrorKind::NotFound,
            FtpError::UnexpectedResponse(r) if (400..500).contains(&r.status.code()) => StoreErrorKind::Transient,
            FtpError::ConnectionError(_) | FtpError::BadResponse => StoreErrorKind::Transient,
            _ => StoreErrorKind::Other,
        };
        // The reply's text, not the request: a password never appears.
        StoreError::new(kind, format!("{what} ({}): {e}", self.url))
    }

    fn name(&self, key: &str) -> Result<String, StoreError> {
        if key.is_empty() || key.contains('/') || key.chars().any(|c| c.is_control()) || key == "." || key == ".." {
            return Err(StoreError::new(StoreErrorKind::InvalidKey, format!("key {key:?} is not a file name")));
        }
        Ok(key.to_string())
    }

    async fn listing(&self, prefix: &str, start_after: Option<String>) -> Result<Vec<ObjectInfo>, StoreError> {
        let (_slot, mut c) = self.connection().await?;
        let lines = self.within(&format!("listing {}", self.dir), c.list(None)).await?;
        self.give_back(c).await;
        // LIST gives the minute a file was modified, not the second: judged by the end of
        // that minute, a file written 10 s ago never passes for a minute old.
        let settled = std::time::SystemTime::now() - self.min_age - Duration::from_secs(60);
        let mut files: Vec<ObjectInfo> = lines
            .iter()
            .filter_map(|l| suppaftp::list::File::try_from(l.as_str()).ok())
            .filter(|f| f.is_file() && f.modified() <= settled)
            .map(|f| ObjectInfo {
                key: f.name().to_string(),
                size: f.size() as u64,
                etag: None,
                last_modified: Some(
                    chrono::DateTime::<chrono::Utc>::from(f.modified())
                        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                ),
            })
            .filter(|o| o.key.starts_with(prefix) && start_after.as_deref().is_none_or(|s| o.key.as_str() > s))
            .collect();
        files.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(files)
    }
}

/// The TLS client of `tls: explicit`: Mozilla's roots and the bundle's certificates.
fn tls_config(ca_bundle: Option<&str>) -> Result<std::sync::Arc<rustls::ClientConfig>, ConfigError> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    if let Some(path) = ca_bundle {
        let certs = rustls::pki_types::CertificateDer::pem_file_iter(path)
            .map_err(|e| ConfigError::at("ftp.ca_bundle", format!("{path}: {e}")))?;
        for cert in certs {
            let cert = cert.map_err(|e| ConfigError::at("ftp.ca_bundle", format!("{path}: {e}")))?;
            roots.add(cert).map_err(|e| ConfigError::at("ftp.ca_bundle", format!("{path}: {e}")))?;
        }
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError::at("ftp.tls", e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(std::sync::Arc::new(config))
}

#[async_trait]
impl Store for FtpStore {
    fn display_url(&self) -> String {
        self.url.clone()
    }

    /// A source: read and delete.
    fn can(&self, access: Access) -> bool {
        access == Access::Delete
    }

    /// The folder's files (not sub-folders), in name order; `prefix` filters names.
    fn list<'a>(
        &'a self,
        prefix: &'a str,
        start_after: Option<String>,
    ) -> BoxStream<'a, Result<ObjectInfo, StoreError>> {
        futures::stream::once(async move { self.listing(prefix, start_after).await })
            .map(|r| match r {
                Ok(files) => futures::stream::iter(files.into_iter().map(Ok)).boxed(),
                Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
            })
            .flatten()
            .boxed()
    }

    /// RETR, streamed; the closing reply (226) must confirm the whole transfer.
    async fn get(&self, key: &str, spool: &Spool) -> Result<Body, StoreError> {
        let name = self.name(key)?;
        let (_slot, mut c) = self.connection().await?;
        let what = format!("reading {key:?}");
        let mut stream = self.within(&what, c.retr_as_stream(name.as_str())).await?;
        // The bytes themselves may take long (a large file): only the replies are timed.
        let body = Body::from_stream(tokio_util::io::ReaderStream::new(stream.get_mut()), None, spool).await;
        let finished = self.within(&format!("{what}: the transfer did not complete"), stream.finish()).await;
        let body = body.map_err(|e| StoreError::new(StoreErrorKind::Transient, format!("{what}: {e}")))?;
        finished?;
        self.give_back(c).await;
        Ok(body)
    }

    async fn put(&self, key: &str, _body: &Body, _options: &PutOptions) -> Result<(), StoreError> {
        Err(StoreError::new(StoreErrorKind::Other, format!("writing {key:?}: ftp:// stores are sources only")))
    }

    /// SIZE and MDTM; `None` when the server says the file is not there.
    async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, StoreError> {
        let name = self.name(key)?;
        let (_slot, mut c) = self.connection().await?;
        let size = match self.within(&format!("checking {key:?}"), c.size(name.as_str())).await {
            Ok(s) => s as u64,
            Err(e) => {
                if e.kind == StoreErrorKind::NotFound {
                    self.give_back(c).await;
                    return Ok(None);
                }
                return Err(e);
            }
        };
        // A server without MDTM still says the size; a connection whose request failed is
        // not given back (a late reply would answer the next request).
        let modified = match self.within("MDTM", c.mdtm(name.as_str())).await {
            Ok(t) => {
                self.give_back(c).await;
                Some(t.and_utc().to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            }
            Err(_) => None,
        };
        Ok(Some(ObjectInfo { key: key.to_string(), size, etag: None, last_modified: modified }))
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let name = self.name(key)?;
        let (_slot, mut c) = self.connection().await?;
        self.within(&format!("deleting {key:?}"), c.rm(name.as_str())).await?;
        self.give_back(c).await;
        Ok(())
    }
}
