//! The `clamav` node: scans each item, retries connection failures, routes by verdict.

use std::time::Duration;

use async_trait::async_trait;
use dqpipe_engine::api::{Context, Emitter, Item, ItemError, NodeError, Problem, Processor};

use super::protocol::{Scanner, Sessions, Verdict};
use super::ClamavConfig;

pub(super) struct Clamav {
    pub(super) cfg: ClamavConfig,
    pub(super) scanner: Scanner,
    pub(super) sessions: Sessions,
}

#[async_trait]
impl Processor for Clamav {
    async fn preflight(&self) -> Result<(), NodeError> {
        self.scanner.ping(Duration::from_secs(self.cfg.timeout_secs.min(30))).await.map_err(|e| {
            NodeError::from(format!(
                "{e}. Start clamd (scripts/clamd-local does it on a laptop) or set the scanner address."
            ))
        })
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
            Verdict::Clean => "clean",
            Verdict::Infected { signature } => {
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
