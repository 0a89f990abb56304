//! Logging in: one SSH connection and SFTP session kept per store, opened on first use
//! and again after a failure, with the server's host key checked against known_hosts.

use dqpipe_engine::api::store::{StoreError, StoreErrorKind};
use russh::keys::PrivateKeyWithHashAlg;
use russh_sftp::client::SftpSession;
use std::sync::Arc;

use super::{Connection, SftpStore};

impl SftpStore {
    /// The shared session, connecting (again) when there is none.
    pub(super) async fn session(&self) -> Result<Arc<Connection>, StoreError> {
        let mut slot = self.session.lock().await;
        if let Some(c) = slot.as_ref() {
            if !c._ssh.is_closed() {
                return Ok(c.clone());
            }
        }
        let c = Arc::new(tokio::time::timeout(self.timeout, self.connect()).await.map_err(|_| {
            StoreError::new(
                StoreErrorKind::Transient,
                format!("cannot reach {}:{} within {} s", self.host, self.port, self.timeout.as_secs()),
            )
        })??);
        *slot = Some(c.clone());
        Ok(c)
    }

    async fn connect(&self) -> Result<Connection, StoreError> {
        if self.insecure {
            tracing::warn!(store = %self.url, "accepting any SSH host key (insecure_accept_any_host_key): for tests only");
        }
        let check = HostKeyCheck {
            host: self.host.clone(),
            port: self.port,
            known_hosts: self.known_hosts.clone(),
            refusal: Arc::new(std::sync::Mutex::new(None)),
        };
        let refusal = check.refusal.clone();
        let config = Arc::new(russh::client::Config::default());
        let mut ssh = match russh::client::connect(config, (self.host.as_str(), self.port), check).await {
            Ok(s) => s,
            Err(e) => {
                if let Some(why) = refusal.lock().ok().and_then(|r| r.clone()) {
                    return Err(StoreError::new(StoreErrorKind::AccessDenied, why));
                }
                return Err(StoreError::new(
                    StoreErrorKind::Transient,
                    format!("cannot connect to {}:{}: {e}", self.host, self.port),
                ));
            }
        };
        let key = self.private_key()?;
        let hash = ssh.best_supported_rsa_hash().await.ok().flatten().flatten();
        let auth = ssh
            .authenticate_publickey(&self.user, PrivateKeyWithHashAlg::new(key, hash))
            .await
            .map_err(|e| StoreError::new(StoreErrorKind::Transient, format!("authenticating: {e}")))?;
        if !auth.success() {
            return Err(StoreError::new(
                StoreErrorKind::AccessDenied,
                format!(
                    "{}@{}:{} refused the private key (is its public key in the user's authorized_keys?)",
                    self.user, self.host, self.port
                ),
            ));
        }
        let channel = ssh
            .channel_open_session()
            .await
            .map_err(|e| StoreError::new(StoreErrorKind::Transient, format!("opening a channel: {e}")))?;
        channel
            .request_subsystem(true, "sftp")
            .await
            .map_err(|e| StoreError::new(StoreErrorKind::Other, format!("starting SFTP: {e}")))?;
        let sftp = SftpSession::new(channel.into_stream())
            .await
            .map_err(|e| StoreError::new(StoreErrorKind::Other, format!("starting SFTP: {e}")))?;
        Ok(Connection { sftp, _ssh: ssh })
    }

    pub(super) async fn forget_session(&self) {
        *self.session.lock().await = None;
    }
}

/// Checks the server's host key against known_hosts (or accepts any, when told to).
pub(super) struct HostKeyCheck {
    host: String,
    port: u16,
    known_hosts: Option<std::path::PathBuf>,
    /// Why the key was refused, for the error message.
    refusal: Arc<std::sync::Mutex<Option<String>>>,
}

impl russh::client::Handler for HostKeyCheck {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        server_key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let Some(path) = &self.known_hosts else { return Ok(true) };
        let russh::keys::PublicKeyOrCertificate::PublicKey { key, .. } = server_key else {
            self.refuse(format!(
                "{}:{} offered a host certificate; give its host key in known_hosts",
                self.host, self.port
            ));
            return Ok(false);
        };
        match russh::keys::check_known_hosts_path(&self.host, self.port, key, path) {
            Ok(true) => Ok(true),
            Ok(false) => {
                self.refuse(format!(
                    "unknown host key for {}:{}: it is not in {} (add it with ssh-keyscan after checking its fingerprint {})",
                    self.host,
                    self.port,
                    path.display(),
                    key.fingerprint(Default::default())
                ));
                Ok(false)
            }
            Err(e) => {
                self.refuse(format!(
                    "host key of {}:{} refused: {e} (known_hosts: {})",
                    self.host,
                    self.port,
                    path.display()
                ));
                Ok(false)
            }
        }
    }
}

impl HostKeyCheck {
    fn refuse(&self, why: String) {
        if let Ok(mut r) = self.refusal.lock() {
            *r = Some(why);
        }
    }
}
