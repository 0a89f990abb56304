//! `list`: the source. Lists objects under a prefix in a store and starts one item per
//! object, streaming: processing begins with the first page, not after the last.
//!
//! With `resume`, each object whose outputs are all durable is recorded as done by a small
//! marker object in a store (normally the destination), under
//! `<prefix>/<source key>@<etag>`. A run first lists those markers (one request per
//! thousand objects, not one per object) and skips the objects already done, unless the
//! source object changed since (its ETag is part of the marker's key). Markers live with the
//! data, so they survive a lost local volume and are seen by every shard.

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use dqpipe_engine::body::Body;
use dqpipe_engine::node::{
    parse_config, BuildContext, Built, ConfigError, Meta, NodeKind, Outputs, PortDecl, Role, Source, SourceContext,
};
use dqpipe_engine::store::{ObjectInfo, PutOptions, Store, StoreError, StoreErrorKind};
use futures::stream::BoxStream;
use futures::StreamExt;
use schemars::JsonSchema;
use serde::Deserialize;

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
    /// Start after this key (keys are listed in order).
    #[serde(default)]
    pub start_after: Option<String>,
    /// At most this many objects per run.
    #[serde(default)]
    pub limit: Option<u64>,
    /// Record finished objects and skip them on later runs.
    #[serde(default)]
    pub resume: Option<ResumeConfig>,
    /// Retries of transient listing failures; the listing goes on after the last key seen.
    #[serde(default)]
    pub retry: RetryPolicy,
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
        let resume = match &cfg.resume {
            Some(r) => Some(Resume {
                store: ctx.store("resume.store", &r.store)?,
                prefix: r
                    .prefix
                    .clone()
                    .unwrap_or_else(|| format!("_dqpipe/done/{}", ctx.pipeline))
                    .trim_matches('/')
                    .to_string(),
                pipeline: ctx.pipeline.to_string(),
            }),
            None => None,
        };
        let regex = match &cfg.regex {
            Some(r) => Some(
                regex::Regex::new(r)
                    .map_err(|e| ConfigError::at("regex", format!("invalid regular expression: {e}")))?,
            ),
            None => None,
        };
        Ok(Built::Source(Arc::new(List { name: ctx.node.to_string(), cfg, store, regex, resume })))
    }
}

pub struct List {
    name: String,
    cfg: ListConfig,
    store: Arc<dyn Store>,
    regex: Option<regex::Regex>,
    resume: Option<Resume>,
}

struct Resume {
    store: Arc<dyn Store>,
    prefix: String,
    pipeline: String,
}

/// What a listing does with one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// Filtered out (suffix, regex, another shard's): not this run's business.
    Ignored,
    /// An earlier run finished it.
    Done,
    /// `run --plan`: it is not what was planned.
    Changed(String),
    Take,
}

/// The version part of a done marker: the source's ETag (letters, digits, `-`), else
/// its size.
fn version_of(o: &ObjectInfo) -> String {
    let etag: String =
        o.etag.as_deref().unwrap_or("").chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').collect();
    if etag.is_empty() {
        format!("s{}", o.size)
    } else {
        etag
    }
}

impl List {
    /// Whether this run takes the object. `done` holds the markers an earlier run left.
    pub fn select(&self, o: &ObjectInfo, ctx: &SourceContext, done: &HashSet<String>) -> Selection {
        if self.cfg.suffix.as_deref().is_some_and(|s| !o.key.ends_with(s)) {
            return Selection::Ignored;
        }
        if self.regex.as_ref().is_some_and(|r| !r.is_match(&name_of(&o.key))) {
            return Selection::Ignored;
        }
        if ctx.shard.is_some_and(|s| !s.owns(&o.key)) {
            return Selection::Ignored;
        }
        if let Some(only) = &ctx.only {
            let Some((size, etag)) = only.objects.get(&self.name).and_then(|m| m.get(&o.key)) else {
                return Selection::Ignored;
            };
            if let Ok(mut seen) = only.seen.lock() {
                seen.insert((self.name.clone(), o.key.clone()));
            }
            if *size != o.size || (etag.is_some() && *etag != o.etag) {
                return Selection::Changed(format!(
                    "changed since the plan was made (size {size} -> {}, etag {} -> {}); not processed: plan again",
                    o.size,
                    etag.as_deref().unwrap_or("-"),
                    o.etag.as_deref().unwrap_or("-")
                ));
            }
        }
        if !ctx.reprocess && done.contains(&format!("{}@{}", o.key, version_of(o))) {
            return Selection::Done;
        }
        Selection::Take
    }

    /// The markers of objects finished by earlier runs: `<source key>@<version>`.
    pub async fn done_markers(&self) -> Result<HashSet<String>, String> {
        let Some(r) = &self.resume else { return Ok(HashSet::new()) };
        let prefix = format!("{}/", r.prefix);
        let mut done = HashSet::new();
        let mut after: Option<String> = None;
        let mut delays = self.cfg.retry.delays();
        'pages: loop {
            let mut listing = r.store.list(&prefix, after.clone());
            while let Some(entry) = listing.next().await {
                match entry {
                    Ok(m) => {
                        if let Some(rest) = m.key.strip_prefix(&prefix) {
                            done.insert(rest.to_string());
                        }
                        after = Some(m.key);
                    }
                    Err(e) if e.kind == StoreErrorKind::Transient => match delays.next() {
                        Some(d) => {
                            tokio::time::sleep(d).await;
                            continue 'pages;
                        }
                        None => return Err(format!("reading done markers in {}: {e}", r.store.display_url())),
                    },
                    // No marker folder yet: nothing is done.
                    Err(e) if e.kind == StoreErrorKind::NotFound && after.is_none() => break 'pages,
                    Err(e) => return Err(format!("reading done markers in {}: {e}", r.store.display_url())),
                }
            }
            break;
        }
        Ok(done)
    }

    /// The listing, with transient failures retried from the last key seen.
    pub fn walk<'a>(&'a self, out: Option<&'a Outputs>) -> BoxStream<'a, Result<ObjectInfo, String>> {
        struct Walk<'a> {
            listing: Option<BoxStream<'a, Result<ObjectInfo, StoreError>>>,
            after: Option<String>,
            delays: Box<dyn Iterator<Item = std::time::Duration> + Send + 'a>,
            over: bool,
        }
        let start = Walk {
            listing: None,
            after: self.cfg.start_after.clone(),
            delays: Box::new(self.cfg.retry.delays()),
            over: false,
        };
        futures::stream::unfold(start, move |mut w| async move {
            loop {
                if w.over {
                    return None;
                }
                let listing = w.listing.get_or_insert_with(|| self.store.list(&self.cfg.prefix, w.after.clone()));
                match listing.next().await {
                    None => return None,
                    Some(Ok(o)) => {
                        w.after = Some(o.key.clone());
                        return Some((Ok(o), w));
                    }
                    Some(Err(e)) if e.kind == StoreErrorKind::Transient => {
                        if let Some(d) = w.delays.next() {
                            tracing::warn!(store = %self.store.display_url(), error = %e, "listing failed; retrying after the last key seen");
                            if let Some(out) = out {
                                out.retried(1);
                            }
                            w.listing = None;
                            tokio::time::sleep(d).await;
                            continue;
                        }
                        w.over = true;
                        return Some((Err(format!("listing {}: {e}", self.store.display_url())), w));
                    }
                    Some(Err(e)) => {
                        w.over = true;
                        return Some((Err(format!("listing {}: {e}", self.store.display_url())), w));
                    }
                }
            }
        })
        .boxed()
    }
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
        match self.walk(None).next().await {
            Some(Err(e)) => Err(e),
            _ => Ok(()),
        }
    }

    async fn run(&self, out: &Outputs, ctx: &SourceContext) -> Result<(), String> {
        let done = self.done_markers().await?;
        if self.resume.is_some() {
            tracing::info!(markers = done.len(), reprocess = ctx.reprocess, "done markers read");
        }
        let mut count = 0u64;
        let mut listing = self.walk(Some(out));
        while let Some(o) = listing.next().await {
            if ctx.stop.is_stopped() {
                tracing::info!(store = %self.cfg.store, listed = count, "listing stopped");
                break;
            }
            let o = o?;
            match self.select(&o, ctx, &done) {
                Selection::Ignored => {}
                Selection::Done => out.skipped_done(&o.key, object_meta(&self.cfg.store, &o)),
                Selection::Changed(reason) => out.reject(&o.key, object_meta(&self.cfg.store, &o), &reason),
                Selection::Take => {
                    let item = out.new_item(&o.key, object_meta(&self.cfg.store, &o));
                    if out.emit("out", item).await.is_err() {
                        break;
                    }
                    count += 1;
                    if self.cfg.limit.is_some_and(|l| count >= l) {
                        break;
                    }
                }
            }
        }
        if let Some(only) = &ctx.only {
            if !ctx.stop.is_stopped() {
                let seen = only.seen.lock().map(|s| s.clone()).unwrap_or_default();
                let planned = only.objects.get(&self.name).into_iter().flatten();
                for (key, (size, etag)) in planned.filter(|(k, _)| !seen.contains(&(self.name.clone(), k.to_string())))
                {
                    let gone = ObjectInfo { key: key.clone(), size: *size, etag: etag.clone(), last_modified: None };
                    out.reject(
                        key,
                        object_meta(&self.cfg.store, &gone),
                        "planned, but no longer listed (deleted or moved since the plan was made)",
                    );
                }
            }
        }
        if count == 0 {
            tracing::warn!(store = %self.store.display_url(), prefix = %self.cfg.prefix, "listed zero objects to process");
        } else {
            tracing::info!(store = %self.store.display_url(), listed = count, "listing done");
        }
        Ok(())
    }

    /// Writes the object's done marker (when `resume` is set).
    async fn ack(&self, listed: &Meta) -> Result<(), String> {
        let Some(r) = &self.resume else { return Ok(()) };
        let key = listed.get("key").and_then(|v| v.as_str()).unwrap_or_default();
        let info = ObjectInfo {
            key: key.to_string(),
            size: listed.get("size").and_then(|v| v.as_u64()).unwrap_or(0),
            etag: listed.get("etag").and_then(|v| v.as_str()).map(String::from),
            last_modified: None,
        };
        let marker = format!("{}/{}@{}", r.prefix, key, version_of(&info));
        let body = serde_json::json!({
            "pipeline": r.pipeline,
            "source_store": self.cfg.store,
            "key": key,
            "etag": info.etag,
            "size": info.size,
            "finished_at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        });
        let body = Body::Memory(Bytes::from(body.to_string()));
        let opts = PutOptions { content_type: Some("application/json".into()), metadata: Vec::new() };
        self.cfg
            .retry
            .run(
                || r.store.put(&marker, &body, &opts),
                |e| e.kind == StoreErrorKind::Transient,
                |e| e.to_string(),
                || {},
            )
            .await
            .map(|_| ())
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
