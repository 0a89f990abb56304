//! `list`: the source. Lists objects under a prefix in a store and starts one item per
//! object, streaming: processing begins with the first page, not after the last.
//!
//! With `resume`, each object whose outputs are all durable is recorded as done in a store
//! (normally the destination), and later runs skip it unless it changed: see `resume.rs`.

pub mod expect;
pub mod inventory;
mod parallel;
pub mod resume;

pub(crate) mod select;
mod source;

pub use source::{List, Selection};

use std::sync::Arc;

use dqpipe_engine::api::store::{Access, ObjectInfo};
use dqpipe_engine::api::{BuildContext, Built, ConfigError, KindConfig, Meta, PortDecl, Role};
use schemars::JsonSchema;
use serde::Deserialize;

use crate::list::resume::DoneLog;
use crate::retry::RetryPolicy;

/// Settings of a `list` node.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListConfig {
    /// The store to list (a name under `stores`).
    pub store: String,
    /// Only keys starting with this.
    #[serde(default)]
    pub prefix: String,
    /// Only keys ending with this, e.g. `.json`.
    #[serde(default)]
    pub suffix: Option<String>,
    /// Only objects whose name (the last segment of the key) matches this regular
    /// expression.
    #[serde(default)]
    pub regex: Option<String>,
    /// A regular expression with named captures on the name: each capture becomes an item
    /// field (`(?P<day>\d{8})` gives `{{ day }}`). Names it does not match go out of
    /// `unmatched` (see `select.rs`).
    #[serde(default)]
    pub name_pattern: Option<String>,
    /// What becomes of names `name_pattern` does not match: `route` (the `unmatched`
    /// port, which must then be routed) or `drop`.
    #[serde(default)]
    pub unmatched: select::Unmatched,
    /// Only objects last modified at least this long ago (`15m`, `6h`, `7d`).
    #[serde(default)]
    pub min_age: Option<String>,
    /// Only objects last modified at most this long ago.
    #[serde(default)]
    pub max_age: Option<String>,
    /// Only objects last modified at or after this time (RFC 3339).
    #[serde(default)]
    pub modified_after: Option<String>,
    /// Only objects last modified before this time (RFC 3339).
    #[serde(default)]
    pub modified_before: Option<String>,
    /// What must hold of the listing, or the run ends with problems (exit 3) and its
    /// alert says why: `{ newest_within: 6h }` (a feed that stopped arriving),
    /// `{ at_least: 1 }` (see `expect.rs`).
    #[serde(default)]
    pub expect: Option<expect::ExpectConfig>,
    /// Start after this key (keys are listed in order).
    #[serde(default)]
    pub start_after: Option<String>,
    /// At most this many objects per run. A number, or a string holding one (so that
    /// `limit: "${MAX_BATCH_SIZE:-500}"` works).
    #[serde(default, deserialize_with = "number_or_text")]
    #[schemars(with = "Option<u64>", range(min = 0, max = 9007199254740991u64))]
    pub limit: Option<u64>,
    /// Record finished objects and skip them on later runs.
    #[serde(default)]
    pub resume: Option<ResumeConfig>,
    /// Retries of transient listing failures; the listing goes on after the last key seen.
    #[serde(default)]
    pub retry: RetryPolicy,
    /// `key` (default: as the store lists, streaming) or `modified` (oldest first; the
    /// whole listing is read before the first item goes out).
    #[serde(default)]
    pub order: Order,
    /// Delete each object from the source once every output of it is durable (and it is
    /// recorded as done, with `resume`). An object an earlier run already delivered is only
    /// deleted.
    #[serde(default)]
    pub delete_after_success: bool,
    /// Read the objects from an S3 Inventory report instead of listing the store (see
    /// `inventory.rs`): each shard reads only its share of the report's data files.
    #[serde(default)]
    pub inventory: Option<crate::list::inventory::InventoryConfig>,
    /// Listings in flight at once: the prefix is split by the character that follows it
    /// (one listing per printable ASCII character, and the keys beyond), listed up to this
    /// many at a time; objects then come in no particular order. The prefix is first
    /// extended to what every key under it shares (found from the first key and a few
    /// probes: NATS archive keys share everything up to `MTCU_`, then differ by a hex
    /// digit). For stores that list in key order (S3); 1 (the default) lists in one
    /// sequence.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 256))]
    pub parallel_listings: usize,
}

fn one() -> usize {
    1
}

fn number_or_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum N {
        Number(u64),
        Text(String),
    }
    match Option::<N>::deserialize(d)? {
        None => Ok(None),
        Some(N::Number(n)) => Ok(Some(n)),
        Some(N::Text(t)) if t.trim().is_empty() => Ok(None),
        Some(N::Text(t)) => t
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| serde::de::Error::custom(format!("invalid value: string {t:?}, expected a whole number"))),
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Order {
    #[default]
    Key,
    Modified,
}

/// Where done markers are kept.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResumeConfig {
    /// The store holding the markers (a name under `stores`), normally the destination.
    pub store: String,
    /// Key prefix of the markers. Default `_dqpipe/done/<pipeline name>` (a leading `_`
    /// keeps them out of Hive/Athena-style table scans).
    #[serde(default)]
    pub prefix: Option<String>,
}

const PORTS: &[PortDecl] = &[PortDecl::out("out", "one item per listed object").setting(LISTED_FIELDS)];

impl KindConfig for ListConfig {
    const NAME: &'static str = "list";
    const SUMMARY: &'static str =
        "Lists objects under a prefix in a store; one item per object (key, name, size, etag).";
    const ROLE: Role = Role::Source;
    const PORTS: &'static [PortDecl] = PORTS;
    const EXAMPLE: &'static str = include_str!("../kind_examples/list.yaml");
    fn ports_named(config: &serde_json::Map<String, serde_json::Value>) -> Vec<PortDecl> {
        select::ports_named(config)
    }
    fn build(self, ctx: &BuildContext) -> Result<Built, ConfigError> {
        let cfg = self;
        let selectors = select::Selectors::new(&cfg, ctx)?;
        let store = match cfg.delete_after_success {
            true => ctx.store_that_can("store", &cfg.store, Access::Delete)?,
            false => ctx.store("store", &cfg.store)?,
        };
        ctx.lists(&cfg.store, &cfg.prefix);
        let resume = match &cfg.resume {
            Some(r) => Some(DoneLog::new(
                ctx.store_that_can("resume.store", &r.store, Access::Write)?,
                r.prefix
                    .clone()
                    .unwrap_or_else(|| format!("_dqpipe/done/{}", ctx.pipeline))
                    .trim_matches('/')
                    .to_string(),
                cfg.retry.clone(),
            )),
            None => None,
        };
        let regex = match &cfg.regex {
            Some(r) => Some(
                regex::Regex::new(r)
                    .map_err(|e| ConfigError::at("regex", format!("invalid regular expression: {e}")))?,
            ),
            None => None,
        };
        if cfg.parallel_listings > 1 && cfg.start_after.is_some() {
            return Err(ConfigError::at(
                "start_after",
                "parallel listings split the keys by their first character: `start_after` does not apply",
            ));
        }
        let inventory = match &cfg.inventory {
            Some(_) if cfg.start_after.is_some() => {
                return Err(ConfigError::at("start_after", "an inventory is read whole: `start_after` does not apply"))
            }
            Some(inv) => Some(ctx.store("inventory.store", &inv.store)?),
            None => None,
        };
        let expect = cfg.expect.as_ref().map(expect::Expect::new).transpose()?;
        Ok(Built::Source(Arc::new(List {
            cfg,
            store,
            regex,
            selectors,
            expect,
            resume,
            inventory,
            split: Default::default(),
        })))
    }
}

/// The item's name: the URL-decoded last segment of its key, as the original job named
/// its local copies.
pub fn name_of(key: &str) -> String {
    let last = key.rsplit('/').next().unwrap_or(key);
    percent_encoding::percent_decode_str(last).decode_utf8_lossy().into_owned()
}

/// The fields every listed item starts with (see [`object_meta`]).
pub const LISTED_FIELDS: &[&str] = &["store", "key", "name", "size", "etag", "last_modified", "run_date", "run_time"];

/// The metadata every listed item starts with.
pub fn object_meta(store: &str, o: &ObjectInfo) -> Meta {
    let mut m = Meta::new();
    m.insert("store".into(), store.into());
    m.insert("key".into(), o.key.clone().into());
    m.insert("name".into(), name_of(&o.key).into());
    m.insert("size".into(), o.size.into());
    if let Some(e) = &o.etag {
        m.insert("etag".into(), e.clone().into());
    }
    if let Some(t) = &o.last_modified {
        m.insert("last_modified".into(), t.clone().into());
    }
    m.insert("run_date".into(), RUN_DATE.clone().into());
    m.insert("run_time".into(), RUN_TIME.clone().into());
    m
}

/// The time the run started (UTC, RFC 3339 with microseconds), `run_time`: one value for
/// every item of the run, as the platform's jobs key a run's files under one folder.
static RUN_TIME: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true));

/// The day the run started (UTC), `YYYY/MM/DD`, for date-partitioned keys (`run_date`).
static RUN_DATE: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| chrono::Utc::now().format("%Y/%m/%d").to_string());

#[cfg(test)]
mod tests {
    #[test]
    fn names_are_url_decoded_last_segments() {
        assert_eq!(super::name_of("a/b/%5B-PRMD%3DEG%5D.json"), "[-PRMD=EG].json");
        assert_eq!(super::name_of("plain.json"), "plain.json");
    }
}
