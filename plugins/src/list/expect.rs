//! What a `list` expects of its listing (`expect`): a feed that has stopped arriving is
//! a problem (exit 3, a cause in the report and the end-of-run alert), so a monitor is a
//! list and an alert node:
//!
//! ```yaml
//! feed: { kind: list, store: landing, prefix: acl/, expect: { newest_within: 6h } }
//! alert: { kind: slack, input: feed, webhook_url: "${SLACK_WEBHOOK:-}" }
//! ```
//!
//! Checked over every object the listing gives under the prefix that the node's `suffix`
//! and `regex` keep, done or not and whatever its time window: the feed's objects, not
//! this run's share. Only a listing that ran to its end is judged.

use chrono::{DateTime, Utc};
use dqpipe_engine::api::store::ObjectInfo;
use dqpipe_engine::api::ConfigError;
use schemars::JsonSchema;
use serde::Deserialize;

/// `expect`: what must hold of the listing, or the run ends with problems.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExpectConfig {
    /// The newest object must have been modified within this long before the run
    /// (`6h`, `1d`): a feed that stopped arriving is reported.
    #[serde(default)]
    pub newest_within: Option<String>,
    /// At least this many objects must be listed.
    #[serde(default)]
    #[schemars(range(min = 0, max = 9007199254740991u64))]
    pub at_least: Option<u64>,
}

/// The expectation, checked: from when (the run's start) and for how long the newest
/// object may be old.
#[derive(Debug, Clone)]
pub(super) struct Expect {
    started: DateTime<Utc>,
    newest_within: Option<(chrono::Duration, String)>,
    at_least: Option<u64>,
}

impl Expect {
    pub(super) fn new(cfg: &ExpectConfig) -> Result<Expect, ConfigError> {
        if cfg.newest_within.is_none() && cfg.at_least.is_none() {
            return Err(ConfigError::at("expect", "say what to expect: `newest_within: 6h`, `at_least: 1`, or both"));
        }
        let newest_within = match &cfg.newest_within {
            None => None,
            Some(text) => {
                let d = humantime::parse_duration(text.trim()).map_err(|e| {
                    ConfigError::at(
                        "expect.newest_within",
                        format!("{text:?} is not a duration ({e}): write `6h`, `2d`"),
                    )
                })?;
                let d = chrono::Duration::from_std(d)
                    .map_err(|_| ConfigError::at("expect.newest_within", "too long a duration"))?;
                Some((d, text.trim().to_string()))
            }
        };
        Ok(Expect { started: Utc::now(), newest_within, at_least: cfg.at_least })
    }
}

/// What the listing showed of the feed, for [`Expect`].
#[derive(Debug, Default)]
pub(super) struct Seen {
    count: u64,
    newest: Option<DateTime<Utc>>,
}

impl Seen {
    pub(super) fn see(&mut self, o: &ObjectInfo) {
        self.count += 1;
        let t = o.last_modified.as_deref().and_then(|t| DateTime::parse_from_rfc3339(t).ok());
        if let Some(t) = t.map(|t| t.with_timezone(&Utc)) {
            self.newest = Some(self.newest.map_or(t, |n| n.max(t)));
        }
    }

    /// Why the expectation does not hold, if it does not.
    pub(super) fn unmet(&self, e: &Expect, prefix: &str) -> Option<String> {
        let under = if prefix.is_empty() { "in the store".to_string() } else { format!("under {prefix:?}") };
        if let Some(n) = e.at_least.filter(|n| self.count < *n) {
            return Some(format!("{} objects {under}, expected at least {n}", self.count));
        }
        let (limit, within) = e.newest_within.as_ref()?;
        match self.newest {
            None => Some(format!("nothing {under} with a modification time, expected something new within {within}")),
            Some(t) if e.started - t > *limit => {
                // Whole minutes: what an operator reads, not the milliseconds.
                let age = std::time::Duration::from_secs(((e.started - t).num_seconds().max(0) as u64 / 60) * 60);
                Some(format!(
                    "the newest object {under} was modified at {}, {} before the run; expected within {within}",
                    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    humantime::format_duration(age)
                ))
            }
            Some(_) => None,
        }
    }
}
