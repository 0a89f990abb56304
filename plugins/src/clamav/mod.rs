//! `clamav`: scans each item's bytes with clamd, failing closed: only clamd's exact
//! `stream: OK` sends an item to `clean`.
//!
//! The clamd protocol is spoken here rather than through the `clamav-client` crate: that
//! crate treats any reply without `FOUND` as clean and loses the error reply after a failed
//! write (../shared/reference/clamd.md), both of which would let unscanned bytes through.
//!
//! Routes:
//! - `clean`: clamd answered `stream: OK`;
//! - `infected`: `stream: <signature> FOUND` (the signature is kept in `signature`);
//! - `error`: clamd answered with an error about the item (over StreamMaxLength, ...), or
//!   the item is larger than `max_bytes` and was not sent (clamd would not scan past
//!   MaxFileSize and still answer OK);
//! - a connection failure (refused, reset, closed without a reply, timeout) is retried, and
//!   if it persists the item is left unprocessed: the run ends incomplete and a rerun
//!   scans it. An item is never quarantined because the scanner was down.
//!
//! Before the first item, and again every `canary.every_items` items or
//! `canary.every_secs`, a canary that must come back infected is scanned (`canary.rs`):
//! a scanner that detects nothing, or answers before reading the whole stream, stops the
//! run at preflight (exit 1) or, mid-run, passes nothing more (exit 4).
//!
//! The scanner's `VERSION` is asked at preflight and with each canary: a database older
//! than `database.max_age_hours`, or none named (local signature files only), is refused
//! unless the spec allows it (`database.rs`).
//!
//! Connections stay open between scans in clamd's session mode (`zIDSESSION`), one scan
//! at a time on each, and every reply's command number is checked ([`Sessions`]).
//!
//! Here: the settings and the kind (`mod.rs`), clamd's protocol with its sessions
//! (`protocol.rs`), the REST front end (`rest.rs`), the node itself (`node.rs`).

mod canary;
pub use canary::eicar;
mod database;
mod node;
mod protocol;
mod rest;

use std::sync::Arc;

use dqpipe_engine::api::{BuildContext, Built, ConfigError, KindConfig, PortDecl, Role};
use schemars::JsonSchema;
use serde::Deserialize;

use crate::retry::RetryPolicy;
pub use canary::CanaryConfig;
pub use database::{DatabaseConfig, ScannerVersion};
use node::Clamav;
pub use protocol::{parse_reply, Scanner, Sessions, Unreachable, Verdict};

/// Settings of a `clamav` node.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClamavConfig {
    /// clamd's address, `tcp://127.0.0.1:3310` or `unix:///run/clamav/clamd.ctl`; or the
    /// REST front end the original job used, `http://host:8080/scan`.
    pub address: String,
    /// Items larger than this are not sent and go to `error`. Keep it at most clamd's
    /// StreamMaxLength (Debian's default: 25M) and MaxFileSize.
    #[serde(default = "default_max_bytes")]
    #[schemars(range(min = 1, max = 4294967296u64))]
    pub max_bytes: u64,
    /// Time allowed for one scan, from connecting to the reply.
    #[serde(default = "default_timeout")]
    #[schemars(range(min = 1, max = 86400))]
    pub timeout_secs: u64,
    /// Size of the INSTREAM chunks sent to clamd.
    #[serde(default = "default_chunk")]
    #[schemars(range(min = 1, max = 16777216))]
    pub chunk_bytes: usize,
    /// Retries of connection failures.
    #[serde(default)]
    pub retry: RetryPolicy,
    /// Canary scans: a payload that must be found, scanned before the first item and
    /// again at intervals; a scanner that does not find it passes nothing.
    #[serde(default)]
    pub canary: CanaryConfig,
    /// The scanner's database: asked at preflight and with each canary, refused when
    /// older than `max_age_hours` or without a version (unless `allow_unversioned`).
    #[serde(default)]
    pub database: DatabaseConfig,
}

fn default_max_bytes() -> u64 {
    25 * 1024 * 1024
}
fn default_timeout() -> u64 {
    60
}
fn default_chunk() -> usize {
    64 * 1024
}

const PORTS: &[PortDecl] = &[
    PortDecl::out("clean", "clamd answered `stream: OK`; `scan` says which scanner and database, and when")
        .setting(&["scan"]),
    PortDecl::problem("infected", &["reason", "signature", "scan"], "infected items, with `signature` and `scan`"),
    PortDecl::problem("error", &["reason"], "items clamd could not scan, with `reason`"),
];

impl KindConfig for ClamavConfig {
    const NAME: &'static str = "clamav";
    const SUMMARY: &'static str =
        "Scans each item with clamd (INSTREAM) or the ClamAV REST front end; only `stream: OK` is clean.";
    const ROLE: Role = Role::Processor;
    const PORTS: &'static [PortDecl] = PORTS;
    const EXAMPLE: &'static str = include_str!("../kind_examples/clamav.yaml");
    const CLEAN_PORT: Option<&'static str> = Some("clean");
    fn build(self, _ctx: &BuildContext) -> Result<Built, ConfigError> {
        let cfg = self;
        let scanner = Scanner::parse(&cfg.address).map_err(|e| ConfigError::at("address", e))?;
        if cfg.chunk_bytes == 0 {
            return Err(ConfigError::at("chunk_bytes", "must be at least 1"));
        }
        if cfg.canary.enabled && cfg.canary.bytes > cfg.max_bytes {
            return Err(ConfigError::at(
                "canary.bytes",
                format!("{} is over max_bytes ({}): the canary must be scannable", cfg.canary.bytes, cfg.max_bytes),
            ));
        }
        let canary = canary::CanaryState::default();
        let (version, verdicts) = (std::sync::Mutex::new(None), Default::default());
        Ok(Built::Processor(Arc::new(Clamav {
            cfg,
            scanner,
            sessions: Sessions::default(),
            canary,
            version,
            verdicts,
        })))
    }
}
