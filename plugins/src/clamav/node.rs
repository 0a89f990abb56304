//! The `clamav` node: scans each item, retries connection failures, routes by verdict.

use std::time::Duration;

use async_trait::async_trait;
use dqpipe_engine::api::{Context, Emitter, Item, ItemError, NodeError, Problem, Processor};

use super::canary::{payload, CanaryState};
use super::database::ScannerVersion;
use super::protocol::{Scanner, Sessions, Verdict};
use super::ClamavConfig;

pub(super) struct Clamav {
    pub(super) cfg: ClamavConfig,
    pub(super) scanner: Scanner,
    pub(super) sessions: Sessions,
    pub(super) canary: CanaryState,
    /// What the scanner said of itself at the last check.
    pub(super) version: std::sync::Mutex<Option<ScannerVersion>>,
    /// Verdicts given per scanner version (`ClamAV 1.4.6/27500/2026-12-01T08:21:02Z`),
    /// for the report: which database passed what.
    pub(super) verdicts: std::sync::Mutex<std::collections::BTreeMap<String, u64>>,
}

impl Clamav {
    /// Asks the scanner its version and checks its database's age (`database.rs`); `Err`
    /// says why its verdicts are not to be trusted.
    async fn check_database(&self) -> Result<(), String> {
        let timeout = Duration::from_secs(self.cfg.timeout_secs.min(30));
        let reply = self
            .cfg
            .retry
            .run(|| self.scanner.version(timeout), |_| true, |e| format!("asking the scanner's version: {e}"), || {})
            .await
            .map_err(String::from)?;
        let version = match reply {
            Some(reply) => ScannerVersion::parse(&reply)?,
            None => ScannerVersion { engine: "ClamAV REST front end".into(), database: None },
        };
        version.check(&self.cfg.database, chrono::Utc::now()).map_err(|e| e.message)?;
        if let Ok(mut v) = self.version.lock() {
            *v = Some(version);
        }
        Ok(())
    }

    /// Which scanner gave a verdict, when, and what it was: the item's `scan` field, which
    /// `put` records with what it writes.
    fn provenance(&self, verdict: &str, signature: Option<&str>) -> serde_json::Value {
        let version = self.version.lock().ok().and_then(|v| v.clone());
        let (engine, database) = match &version {
            Some(v) => (v.engine.clone(), v.database.clone()),
            None => ("unknown".to_string(), None),
        };
        let described = version.as_ref().map(ScannerVersion::describe).unwrap_or_else(|| "unknown".into());
        if let Ok(mut v) = self.verdicts.lock() {
            *v.entry(format!("verdicts by {described}")).or_default() += 1;
        }
        serde_json::json!({
            "engine": engine,
            "database": database.as_ref().map(|d| d.version.to_string()),
            "database_built": database.map(|d| d.built.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            "scanned_at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "verdict": verdict,
            "signature": signature,
        })
    }

    /// The proof a scanner is scanning with current signatures: its database's age, then
    /// the canary (when enabled).
    async fn prove(&self) -> Result<(), String> {
        self.check_database().await?;
        if self.cfg.canary.enabled {
            self.scan_canary().await?;
        }
        Ok(())
    }

    /// Scans the canary; `Err` says why the scanner's verdicts are not to be trusted.
    async fn scan_canary(&self) -> Result<(), String> {
        let body = dqpipe_engine::api::body::Body::Memory(payload(self.cfg.canary.bytes));
        let timeout = Duration::from_secs(self.cfg.timeout_secs.max(1));
        let verdict = self
            .cfg
            .retry
            .run(
                || self.scanner.scan(&self.sessions, "dqpipe-canary.zip", &body, self.cfg.chunk_bytes, timeout),
                |_| true,
                |e| format!("the canary could not be scanned: {}", e.0),
                || {},
            )
            .await
            .map_err(String::from)?;
        let want = self.cfg.canary.signature.to_lowercase();
        match verdict {
            Verdict::Infected { signature } if signature.to_lowercase().contains(&want) => Ok(()),
            Verdict::Infected { signature } => Err(format!(
                "the canary ({} bytes, EICAR at its end) was found as {signature:?}, not as a signature naming \
                 {want:?} (canary.signature)",
                self.cfg.canary.bytes
            )),
            Verdict::Clean => Err(format!(
                "the scanner answered clean for the canary ({} bytes, EICAR at its end): it detects nothing, or \
                 answered before reading the whole stream; its verdicts are not trusted",
                self.cfg.canary.bytes
            )),
            Verdict::Error { reason } => Err(format!(
                "the scanner could not scan the canary ({} bytes): {reason} (canary.bytes must be under clamd's \
                 StreamMaxLength)",
                self.cfg.canary.bytes
            )),
        }
    }

    /// Before an item is scanned: a canary if one is due; fails once a canary has failed,
    /// and from then on (fail closed: no verdict passes an item on).
    async fn check_canary(&self) -> Result<(), ItemError> {
        let untrusted = |why: String| {
            Err(ItemError::new(format!("not scanned: verdicts not trusted since a canary scan failed: {why}")))
        };
        if let Some(why) = self.canary.failed() {
            return untrusted(why);
        }
        if !self.canary.due(&self.cfg.canary) {
            return Ok(());
        }
        // Items that found the canary due wait for its verdict; the first one scans it.
        let _one = self.canary.running.lock().await;
        if let Some(why) = self.canary.failed() {
            return untrusted(why);
        }
        match self.prove().await {
            Ok(()) => {
                self.canary.passed(1);
                Ok(())
            }
            Err(why) => {
                let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
                tracing::error!(reason = %why, "a canary scan failed: the scanner's verdicts are not trusted from {at}");
                self.canary.fail(format!("{why} (at {at})"));
                Err(ItemError::new(format!("not scanned: a canary scan failed at {at}: {why}")))
            }
        }
    }
}

#[async_trait]
impl Processor for Clamav {
    async fn preflight(&self) -> Result<(), NodeError> {
        self.scanner.ping(Duration::from_secs(self.cfg.timeout_secs.min(30))).await.map_err(|e| {
            NodeError::from(format!(
                "{e}. Start clamd (scripts/clamd-local does it on a laptop) or set the scanner address."
            ))
        })?;
        self.check_database().await.map_err(NodeError::from)?;
        if self.cfg.canary.enabled {
            self.scan_canary().await.map_err(|e| NodeError::from(format!("canary scan: {e}")))?;
            self.canary.passed(0);
        }
        // What was checked, for `plan` and the run's log: which scanner, how old its
        // signatures are, whether the canary was found.
        let version = self.version.lock().ok().and_then(|v| v.clone());
        let age = version.as_ref().and_then(|v| v.database.as_ref()).map(|d| {
            let hours = (chrono::Utc::now() - d.built).num_hours().max(0);
            format!("{hours} h old (at most {} h)", self.cfg.database.max_age_hours)
        });
        tracing::info!(
            scanner = %version.as_ref().map(|v| v.describe()).unwrap_or_else(|| "unknown".into()),
            database = %age.unwrap_or_else(|| "unversioned (allowed by the spec)".into()),
            canary = if self.cfg.canary.enabled { "found" } else { "off" },
            "scanner checked"
        );
        Ok(())
    }

    /// Verdicts per scanner version: `verdicts by ClamAV 1.4.6/27500/2026-12-01T08:21:02Z`.
    /// Verdicts per scanner version, and `database_age_seconds`: how old the signature
    /// database was at the run's end (pushed as a metric, for an alert before the refusal
    /// at `database.max_age_hours`).
    fn counters(&self) -> Vec<(String, u64)> {
        let mut figures: Vec<(String, u64)> =
            self.verdicts.lock().map(|v| v.iter().map(|(k, n)| (k.clone(), *n)).collect()).unwrap_or_default();
        let built = self.version.lock().ok().and_then(|v| v.as_ref()?.database.as_ref().map(|d| d.built));
        if let Some(built) = built {
            let age = (chrono::Utc::now() - built).num_seconds().max(0);
            figures.push(("database_age_seconds".into(), age as u64));
        }
        figures
    }

    /// Never scans: a plan assumes clean and says so.
    async fn preview(&self, item: Item, out: &Emitter, _cx: &Context, _deep: bool) -> Result<(), ItemError> {
        item.plan_note("not scanned in a plan: assumed clean (infected or unscannable would go to quarantine)");
        out.emit("clean", item).await.map_err(ItemError::from)
    }

    async fn process(&self, mut item: Item, out: &Emitter, cx: &Context) -> Result<(), ItemError> {
        let body =
            item.body.clone().ok_or_else(|| ItemError::new("the item has no bytes: clamav needs a fetch upstream"))?;
        if body.len() > self.cfg.max_bytes {
            let reason = format!("{} bytes is over max_bytes ({})", body.len(), self.cfg.max_bytes);
            item.set_problem(Problem::Unscannable { reason });
            return out.emit("error", item).await.map_err(ItemError::from);
        }
        self.check_canary().await?;
        let name = item.name().to_string();
        let timeout = Duration::from_secs(self.cfg.timeout_secs.max(1));
        let verdict = self
            .cfg
            .retry
            .run(
                || self.scanner.scan(&self.sessions, &name, &body, self.cfg.chunk_bytes, timeout),
                |_| true,
                |e| format!("not scanned: {}", e.0),
                || cx.retried(1),
            )
            .await
            .map_err(ItemError::new)?;
        let port = match verdict {
            Verdict::Clean => {
                let scan = self.provenance("clean", None);
                item.record_for_source("scan", scan.clone());
                item.set("scan", scan);
                "clean"
            }
            Verdict::Infected { signature } => {
                let scan = self.provenance("infected", Some(&signature));
                item.record_for_source("scan", scan.clone());
                item.set("scan", scan);
                item.set_problem(Problem::Infected { signature });
                "infected"
            }
            Verdict::Error { reason } => {
                item.set_problem(Problem::Unscannable { reason });
                "error"
            }
        };
        out.emit(port, item).await.map_err(ItemError::from)
    }
}
