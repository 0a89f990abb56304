//! `slack`: alerts people through a Slack incoming webhook, in the original's format: a
//! `text` headline and one attachment with the error text, colour `#B22222` and a
//! "Priority: High" field.
//!
//! One message per problem item up to `max_messages` per run, then one summary of the
//! rest; an alert when a run found zero objects; one at the end of a run that is not clean,
//! with its outcome and causes. An empty webhook URL disables alerts (with
//! a log line). A failing webhook is logged and never fails the pipeline. The URL is a
//! secret: it is never logged.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use dqpipe_engine::api::{
    BuildContext, Built, ConfigError, Context, Emitter, Item, ItemError, KindConfig, NodeError, PortDecl, Problem,
    Processor, Role, RunFacts,
};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;

use crate::retry::RetryPolicy;

/// Settings of a `slack` node.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SlackConfig {
    /// The incoming-webhook URL (a secret: give it as `${SLACK_WEBHOOK}`). Empty: alerts
    /// are off.
    #[serde(default)]
    pub webhook_url: String,
    /// At most this many per-item messages a run; the rest are summed up in one message.
    #[serde(default = "default_max")]
    #[schemars(range(min = 0, max = 1000))]
    pub max_messages: u64,
    /// Also alert when the run's sources found no object at all (objects skipped as
    /// already done by an earlier run count as found).
    #[serde(default = "yes")]
    pub alert_on_zero_items: bool,
    /// At the end of any run that is not clean (exit 1: could not start; 3: problems; 4:
    /// incomplete), one message with the outcome, the counts per route, the top causes
    /// and where the report is.
    #[serde(default = "yes")]
    pub alert_on_unclean_run: bool,
    /// Time allowed for one webhook call.
    #[serde(default = "default_timeout")]
    #[schemars(range(min = 1, max = 3600))]
    pub timeout_secs: u64,
    /// Retries of failed webhook calls (timeouts, 5xx, 429).
    #[serde(default = "alert_retry")]
    pub retry: RetryPolicy,
}

fn default_max() -> u64 {
    20
}
fn yes() -> bool {
    true
}
fn default_timeout() -> u64 {
    10
}
fn alert_retry() -> RetryPolicy {
    RetryPolicy { attempts: 3, initial_delay_ms: 500, max_delay_ms: 4_000, deadline_secs: 30, ..RetryPolicy::default() }
}

impl KindConfig for SlackConfig {
    const NAME: &'static str = "slack";
    const SUMMARY: &'static str = "Posts an alert per problem item (up to a cap, then a summary) to a Slack incoming webhook; never fails the run.";
    const ROLE: Role = Role::Processor;
    const PORTS: &'static [PortDecl] = &[];
    const EXAMPLE: &'static str = include_str!("kind_examples/slack.yaml");
    fn build(self, _ctx: &BuildContext) -> Result<Built, ConfigError> {
        build(self, None)
    }
}

/// Messages kept instead of posted (`dqpipe test`): each message's JSON body.
pub type Captured = Arc<std::sync::Mutex<Vec<serde_json::Value>>>;

/// A Slack node from its settings; `capture` keeps messages instead of posting them.
pub(crate) fn build(cfg: SlackConfig, capture: Option<Captured>) -> Result<Built, ConfigError> {
    let url = cfg.webhook_url.trim().to_string();
    if !(url.is_empty() || url.starts_with("https://") || url.starts_with("http://")) {
        return Err(ConfigError::at("webhook_url", "must be an http(s) URL (value not shown: it is a secret)"));
    }
    crate::tls::use_ring();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(cfg.timeout_secs.max(1)))
        .build()
        .map_err(|e| ConfigError::at("", format!("HTTP client: {e}")))?;
    Ok(Built::Processor(Arc::new(Slack {
        url,
        cfg,
        client,
        sent: AtomicU64::new(0),
        suppressed: AtomicU64::new(0),
        delivered: AtomicU64::new(0),
        not_delivered: AtomicU64::new(0),
        capture,
    })))
}

struct Slack {
    url: String,
    cfg: SlackConfig,
    client: reqwest::Client,
    sent: AtomicU64,
    suppressed: AtomicU64,
    /// Messages Slack accepted, and messages given up on after the retries: the report's
    /// and the summary's `delivered` and `not_delivered`.
    delivered: AtomicU64,
    not_delivered: AtomicU64,
    /// Set in `dqpipe test`: messages are kept here, not posted.
    capture: Option<Captured>,
}

/// The original's message shape.
pub fn message(headline: &str, error_text: &str) -> serde_json::Value {
    json!({
        "text": headline,
        "attachments": [{
            "color": "#B22222",
            "text": error_text,
            "fields": [{ "title": "Priority", "value": "High", "short": false }]
        }]
    })
}

/// An HTTP client error with its causes: `error sending request: tcp connect error:
/// Connection refused (os error 111)`.
fn cause_of(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(c) = next {
        text.push_str(": ");
        text.push_str(&c.to_string());
        next = c.source();
    }
    text
}

/// Why a webhook call failed; `transient` ones are retried.
struct PostError {
    transient: bool,
    message: String,
}

impl Slack {
    async fn post(&self, body: &serde_json::Value) {
        if let Some(kept) = &self.capture {
            if let Ok(mut kept) = kept.lock() {
                kept.push(body.clone());
            }
            self.delivered.fetch_add(1, Ordering::SeqCst);
            return;
        }
        let attempt = || async {
            let resp = self.client.post(&self.url).json(body).send().await.map_err(|e| PostError {
                transient: true,
                // without_url: the URL is the secret. The root cause tells a refused
                // connection from a DNS failure or a timeout.
                message: cause_of(&e.without_url()),
            })?;
            let status = resp.status();
            if status.is_success() {
                Ok(())
            } else {
                // Slack says why in the body (`no_service`, `invalid_payload`, ...).
                let said = resp.text().await.unwrap_or_default();
                let said: String = said.chars().take(200).collect();
                Err(PostError {
                    transient: status.is_server_error() || status.as_u16() == 429,
                    message: format!("HTTP {status}: {}", said.trim()),
                })
            }
        };
        match self.cfg.retry.run(attempt, |e| e.transient, |e| e.message.clone(), || {}).await {
            Ok(()) => self.delivered.fetch_add(1, Ordering::SeqCst),
            Err(e) => {
                tracing::warn!(error = %e, "Slack alert not delivered (the run goes on)");
                self.not_delivered.fetch_add(1, Ordering::SeqCst)
            }
        };
    }

    fn enabled(&self) -> bool {
        !self.url.is_empty() || self.capture.is_some()
    }
}

/// The end-of-run alert of a run that is not clean: outcome, counts, causes, report.
fn run_alert(facts: &RunFacts) -> (String, String) {
    use dqpipe_engine::run::report::Outcome;
    let p = &facts.pipeline;
    let headline = match facts.outcome {
        None => format!("{p}: the run could not start (exit 1)"),
        Some(Outcome::Incomplete) => {
            format!("{p}: INCOMPLETE, some files were not processed (exit 4): it needs a rerun")
        }
        Some(_) => format!("{p}: finished with problems (exit {})", facts.exit_code),
    };
    let mut text = String::new();
    if facts.outcome.is_some() {
        text.push_str(&format!(
            "{} files listed, {} skipped as done; {} not processed (a rerun takes them), {} refused (left where they \
             are until someone acts)",
            facts.source_items, facts.skipped_done, facts.failed_items, facts.refused_items
        ));
        let routes: Vec<String> = facts.problem_routes.iter().map(|(r, n)| format!("{r} {n}")).collect();
        if !routes.is_empty() {
            text.push_str(&format!("; problem routes: {}", routes.join(", ")));
        }
        text.push('\n');
    }
    for c in facts.causes.iter().take(5) {
        let node = if c.node.is_empty() { String::new() } else { format!("{}: ", c.node) };
        let count = if c.examples.is_empty() {
            String::new()
        } else {
            format!(" ({} files, e.g. {})", c.count, c.examples.join(", "))
        };
        text.push_str(&format!("Cause: {node}{}{count}\n", c.reason));
    }
    if let Some(r) = &facts.report {
        text.push_str(&format!("Report: {r}\n"));
    }
    (headline, text.trim_end().to_string())
}

/// The alert text for one problem item.
fn describe(item: &Item) -> (String, String) {
    let name = item.name();
    let reason = item.get_str("reason").unwrap_or("no reason recorded");
    let headline = match &item.problem {
        Some(Problem::Infected { .. }) => format!("Virus detected: {name} quarantined"),
        Some(Problem::Unscannable { .. }) => format!("File could not be scanned: {name} quarantined"),
        Some(Problem::Unparseable { .. }) => format!("Failed to parse: {name}"),
        Some(Problem::Refused { .. }) | None => format!("Not delivered: {name}"),
    };
    let mut text = format!("Source key: {}\nReason: {reason}", item.source_key());
    if let Some(dest) = item.get_str("dest_key") {
        text.push_str(&format!("\nMoved to: {dest}"));
    }
    (headline, text)
}

#[async_trait]
impl Processor for Slack {
    async fn preflight(&self) -> Result<(), NodeError> {
        if !self.enabled() {
            tracing::info!("Slack alerts are off: webhook_url is empty");
        }
        Ok(())
    }

    /// Sends nothing in a plan.
    async fn preview(&self, _item: Item, _out: &Emitter, _cx: &Context, _deep: bool) -> Result<(), ItemError> {
        Ok(())
    }

    /// One alert per problem item; an item without a problem (a monitor's listing, a
    /// delivered file) passes in silence: the end of the run says what it needs to.
    async fn process(&self, item: Item, _out: &Emitter, _cx: &Context) -> Result<(), ItemError> {
        if !self.enabled() || item.problem.is_none() {
            return Ok(());
        }
        if self.sent.fetch_add(1, Ordering::SeqCst) >= self.cfg.max_messages {
            self.suppressed.fetch_add(1, Ordering::SeqCst);
            return Ok(());
        }
        let (headline, text) = describe(&item);
        self.post(&message(&headline, &text)).await;
        Ok(())
    }

    fn counters(&self) -> Vec<(String, u64)> {
        if !self.enabled() {
            return Vec::new();
        }
        let load = |a: &AtomicU64| a.load(Ordering::SeqCst);
        vec![
            ("delivered".into(), load(&self.delivered)),
            ("not_delivered".into(), load(&self.not_delivered)),
            ("suppressed".into(), load(&self.suppressed)),
        ]
    }

    async fn finish(&self, facts: &RunFacts) {
        if !self.enabled() {
            return;
        }
        let more = self.suppressed.load(Ordering::SeqCst);
        if more > 0 {
            let text = format!(
                "{more} more problem files in this run were not alerted one by one (cap: {} messages). See the run report.",
                self.cfg.max_messages
            );
            self.post(&message(&format!("{}: {more} more problem files", facts.pipeline), &text)).await;
        }
        if self.cfg.alert_on_unclean_run && facts.exit_code != 0 {
            let (headline, text) = run_alert(facts);
            self.post(&message(&headline, &text)).await;
        }
        if self.cfg.alert_on_zero_items && facts.outcome.is_some() && facts.source_items == 0 && facts.skipped_done == 0
        {
            let text = format!("Pipeline {} listed no files to process.", facts.pipeline);
            self.post(&message("Pulling zero files!", &text)).await;
        }
    }
}
