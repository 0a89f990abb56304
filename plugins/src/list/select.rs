//! What a `list` takes by name and by time: fields captured from names (`name_pattern`),
//! and a window on the listing's LastModified (`min_age`, `max_age`, `modified_after`,
//! `modified_before`, as rclone's `--min-age` / `--max-age`).
//!
//! ```yaml
//! list:
//!   kind: list
//!   store: landing
//!   name_pattern: '^PARSED_(?P<year>\d{4})(?P<month>\d{2})(?P<day>\d{2})_\d{4}_\d{4}\.zip$'
//!   unmatched: drop                 # or `route` (the default): the `unmatched` port
//!   max_age: 7d
//! write: { kind: put, input: list, store: dest, key: "{{ year }}/{{ month }}/{{ day }}/{{ name }}" }
//! ```

use chrono::{DateTime, Utc};
use dqpipe_engine::api::store::ObjectInfo;
use dqpipe_engine::api::{BuildContext, ConfigError, Meta, PortDecl};
use schemars::JsonSchema;
use serde::Deserialize;

use super::{ListConfig, LISTED_FIELDS};

/// What becomes of an object whose name `name_pattern` does not match.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Unmatched {
    /// Sent out of the `unmatched` port, which must be routed (a `put` to a store for
    /// them, say): never lost in silence.
    #[default]
    Route,
    /// Dropped on purpose: complete, counted `dropped`, done-marked.
    Drop,
}

/// The ports a `list` adds for its settings: `unmatched`, with a `name_pattern`.
pub(super) fn ports_named(config: &serde_json::Map<String, serde_json::Value>) -> Vec<PortDecl> {
    unmatched_port(config, LISTED_FIELDS)
}

/// The `unmatched` port of a node with a `name_pattern` (a `list`, an `unpack`), its
/// items carrying `fields`: to be routed, or dropped with `unmatched: drop`.
pub(crate) fn unmatched_port(
    config: &serde_json::Map<String, serde_json::Value>,
    fields: &'static [&'static str],
) -> Vec<PortDecl> {
    if !config.get("name_pattern").is_some_and(|p| p.is_string()) {
        return Vec::new();
    }
    match config.get("unmatched").and_then(|u| u.as_str()) {
        Some("drop") => {
            vec![PortDecl::dropped("unmatched", "items whose name `name_pattern` does not match, dropped")
                .setting(fields)]
        }
        _ => vec![PortDecl::out("unmatched", "items whose name `name_pattern` does not match")
            .required()
            .setting(fields)],
    }
}

/// `name_pattern`, compiled: a regular expression with named captures, each an item field.
pub(crate) struct NamePattern {
    re: regex::Regex,
}

impl NamePattern {
    /// Compiles `pattern` and declares its captures as fields of the `out` port.
    pub(crate) fn new(pattern: &str, ctx: &BuildContext) -> Result<NamePattern, ConfigError> {
        let re = regex::Regex::new(pattern)
            .map_err(|e| ConfigError::at("name_pattern", format!("invalid regular expression: {e}")))?;
        let names: Vec<&str> = re.capture_names().flatten().collect();
        if names.is_empty() {
            return Err(ConfigError::at(
                "name_pattern",
                "no named capture: write one per field, e.g. `(?P<day>\\d{8})`, or use `regex` to filter only",
            ));
        }
        for name in names {
            ctx.sets("out", name);
        }
        Ok(NamePattern { re })
    }

    /// The port an item of this name leaves by, with the captured fields set: `out`, or
    /// `unmatched` when the pattern does not match it.
    pub(crate) fn capture(&self, name: &str, meta: &mut Meta) -> &'static str {
        let Some(caps) = self.re.captures(name) else { return "unmatched" };
        for field in self.re.capture_names().flatten() {
            let value = caps.name(field).map(|m| m.as_str()).unwrap_or_default();
            meta.insert(field.to_string(), value.into());
        }
        "out"
    }
}

/// The node's name and time selection, checked and compiled.
pub(super) struct Selectors {
    pattern: Option<NamePattern>,
    /// Objects last modified at or after this, and before that.
    after: Option<DateTime<Utc>>,
    before: Option<DateTime<Utc>>,
}

impl Selectors {
    /// From the settings; the ages count back from now (the run's start: nodes are built
    /// just before a run).
    pub(super) fn new(cfg: &ListConfig, ctx: &BuildContext) -> Result<Selectors, ConfigError> {
        let pattern = cfg.name_pattern.as_deref().map(|p| NamePattern::new(p, ctx)).transpose()?;
        let now = Utc::now();
        let age = |field: &str, text: &Option<String>| -> Result<Option<DateTime<Utc>>, ConfigError> {
            let Some(text) = text.as_deref().filter(|t| !t.trim().is_empty()) else { return Ok(None) };
            let d = humantime::parse_duration(text.trim()).map_err(|e| {
                ConfigError::at(field, format!("{text:?} is not a duration ({e}): write e.g. `90s`, `15m`, `6h`, `7d`"))
            })?;
            let d = chrono::Duration::from_std(d).map_err(|_| ConfigError::at(field, "too long"))?;
            Ok(Some(now - d))
        };
        let time = |field: &str, text: &Option<String>| -> Result<Option<DateTime<Utc>>, ConfigError> {
            let Some(text) = text.as_deref().filter(|t| !t.trim().is_empty()) else { return Ok(None) };
            DateTime::parse_from_rfc3339(text.trim()).map(|t| Some(t.with_timezone(&Utc))).map_err(|e| {
                ConfigError::at(
                    field,
                    format!("{text:?} is not an RFC 3339 time ({e}): write e.g. `2026-01-31T00:00:00Z`"),
                )
            })
        };
        // Younger than max_age: modified after now - max_age; older than min_age: before.
        let after =
            [age("max_age", &cfg.max_age)?, time("modified_after", &cfg.modified_after)?].into_iter().flatten().max();
        let before =
            [age("min_age", &cfg.min_age)?, time("modified_before", &cfg.modified_before)?].into_iter().flatten().min();
        if let (Some(a), Some(b)) = (after, before) {
            if a >= b {
                return Err(ConfigError::at(
                    "min_age",
                    format!("the window is empty: objects modified after {a} and before {b}"),
                ));
            }
        }
        Ok(Selectors { pattern, after, before })
    }

    /// Whether the object's LastModified lies in the window. An object whose listing gives
    /// no time is outside any window (an inventory without its LastModifiedDate column).
    pub(super) fn in_window(&self, o: &ObjectInfo) -> bool {
        if self.after.is_none() && self.before.is_none() {
            return true;
        }
        let Some(t) = o.last_modified.as_deref().and_then(|t| DateTime::parse_from_rfc3339(t).ok()) else {
            return false;
        };
        let t = t.with_timezone(&Utc);
        self.after.is_none_or(|a| t >= a) && self.before.is_none_or(|b| t < b)
    }

    /// The port an item of this name leaves by, with the captured fields set: `out`, or
    /// `unmatched` when `name_pattern` does not match it.
    pub(super) fn capture(&self, name: &str, meta: &mut Meta) -> &'static str {
        match &self.pattern {
            Some(p) => p.capture(name, meta),
            None => "out",
        }
    }
}
