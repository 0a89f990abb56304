//! `list`: the source. Lists objects under a prefix in a store and starts one item per
//! object, streaming: processing begins with the first page, not after the last.

use std::sync::Arc;

use async_trait::async_trait;
use dqpipe_engine::node::{
    parse_config, BuildContext, Built, ConfigError, Meta, NodeKind, Outputs, PortDecl, Role, Source, Stop,
};
use dqpipe_engine::store::{ObjectInfo, Store};
use futures::StreamExt;
use schemars::JsonSchema;
use serde::Deserialize;

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
    /// Start after this key (keys are listed in order).
    #[serde(default)]
    pub start_after: Option<String>,
    /// At most this many objects per run.
    #[serde(default)]
    pub limit: Option<u64>,
}

pub struct ListKind;

const PORTS: &[PortDecl] =
    &[PortDecl { name: "out", must_route: false, problem: false, doc: "one item per listed object" }];

impl NodeKind for ListKind {
    fn name(&self) -> &'static str {
        "list"
    }
    fn summary(&self) -> &'static str {
        "Lists objects under a prefix in a store; one item per object (key, name, size, etag)."
    }
    fn role(&self) -> Role {
        Role::Source
    }
    fn ports(&self) -> &'static [PortDecl] {
        PORTS
    }
    fn schema(&self) -> schemars::Schema {
        dqpipe_engine::schema::config_schema::<ListConfig>()
    }
    fn build(&self, ctx: &BuildContext, config: serde_json::Value) -> Result<Built, ConfigError> {
        let cfg: ListConfig = parse_config(config)?;
        let store = ctx.store("store", &cfg.store)?;
        let regex = match &cfg.regex {
            Some(r) => Some(
                regex::Regex::new(r)
                    .map_err(|e| ConfigError::at("regex", format!("invalid regular expression: {e}")))?,
            ),
            None => None,
        };
        Ok(Built::Source(Arc::new(List { cfg, store, regex })))
    }
}

struct List {
    cfg: ListConfig,
    store: Arc<dyn Store>,
    regex: Option<regex::Regex>,
}

/// The item's name: the URL-decoded last segment of its key, as the original job named
/// its local copies.
pub fn name_of(key: &str) -> String {
    let last = key.rsplit('/').next().unwrap_or(key);
    percent_encoding::percent_decode_str(last).decode_utf8_lossy().into_owned()
}

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
    m
}

#[async_trait]
impl Source for List {
    /// Reads the first entry of the listing, so that wrong credentials, a missing bucket or
    /// an unreachable endpoint stop the run before anything moves.
    async fn preflight(&self) -> Result<(), String> {
        let mut listing = self.store.list(&self.cfg.prefix, self.cfg.start_after.as_deref());
        match listing.next().await {
            Some(Err(e)) => Err(format!("listing {}: {e}", self.store.display_url())),
            _ => Ok(()),
        }
    }

    async fn run(&self, out: &Outputs, stop: &Stop) -> Result<(), String> {
        let mut listing = self.store.list(&self.cfg.prefix, self.cfg.start_after.as_deref());
        let mut count = 0u64;
        while let Some(entry) = listing.next().await {
            if stop.is_stopped() {
                tracing::info!(store = %self.cfg.store, listed = count, "listing stopped");
                break;
            }
            let o = entry.map_err(|e| format!("listing {}: {e}", self.store.display_url()))?;
            if self.cfg.suffix.as_deref().is_some_and(|s| !o.key.ends_with(s)) {
                continue;
            }
            let name = name_of(&o.key);
            if self.regex.as_ref().is_some_and(|r| !r.is_match(&name)) {
                continue;
            }
            let item = out.new_item(&o.key, object_meta(&self.cfg.store, &o));
            if out.emit("out", item).await.is_err() {
                break;
            }
            count += 1;
            if self.cfg.limit.is_some_and(|l| count >= l) {
                break;
            }
        }
        if count == 0 {
            tracing::warn!(store = %self.store.display_url(), prefix = %self.cfg.prefix, "listed zero objects");
        } else {
            tracing::info!(store = %self.store.display_url(), listed = count, "listing done");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_are_url_decoded_last_segments() {
        assert_eq!(super::name_of("a/b/%5B-PRMD%3DEG%5D.json"), "[-PRMD=EG].json");
        assert_eq!(super::name_of("plain.json"), "plain.json");
    }
}
