//! Test kinds and an in-memory store, so that the executor is tested in-process (with
//! tokio's paused time) without a server, a process or a plugin crate. Also the smallest
//! complete example of what a kind is: a config type (`KindConfig`), a running part.
//!
//! - `numbers` (source): `count` items `k0`, `k1`, ... of `size` bytes (listed size);
//!   records each acknowledgement in the [`Probe`].
//! - `gate` (processor): counts items open at once; with `hold: true` each waits until
//!   the test releases it ([`Probe::release`]); keys in `fail` fail, keys in `refuse`
//!   are refused for good, keys in `panic` panic; with `keep: true` each item is held
//!   ([`crate::api::Held`]) until the end of the input, then sent on, but those in `lose`
//!   are dropped unwritten.
//! - `mem://NAME` stores: a map in memory ([`MemoryStore`]).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::stream::BoxStream;
use schemars::JsonSchema;
use serde::Deserialize;

use crate::api::body::{Body, Spool};
use crate::api::store::{ObjectInfo, PutOptions, Store, StoreError, StoreErrorKind};
use crate::api::{
    kind_built_by, BuildContext, Built, ConfigError, Context, Emitter, Finished, Held, Item, ItemError, KindConfig,
    Meta, NodeError, PortDecl, Processor, Registry, Role, Source, StoreOpener,
};
use crate::spec::StoreSpec;

/// What the test kinds saw, for the test to check.
pub struct Probe {
    /// Keys acknowledged to the source, in order.
    pub acked: Mutex<Vec<String>>,
    /// Items in a `gate` now, and the most at once.
    pub open: AtomicUsize,
    pub max_open: AtomicUsize,
    /// Items a `gate` has received.
    pub entered: AtomicUsize,
    release: tokio::sync::Semaphore,
}

impl Default for Probe {
    fn default() -> Self {
        Self {
            acked: Mutex::default(),
            open: AtomicUsize::new(0),
            max_open: AtomicUsize::new(0),
            entered: AtomicUsize::new(0),
            release: tokio::sync::Semaphore::new(0),
        }
    }
}

impl Probe {
    /// Lets `n` held items go on.
    pub fn release(&self, n: usize) {
        self.release.add_permits(n);
    }
    pub fn acked(&self) -> Vec<String> {
        self.acked.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

/// The test kinds and the `mem://` stores, sharing `probe`: each kind declared by its
/// config type, as a plugin's are, and built with the probe ([`kind_built_by`]).
pub fn registry(probe: Arc<Probe>) -> Registry {
    let (p1, p2, p3) = (probe.clone(), probe.clone(), probe);
    Registry {
        kinds: vec![
            kind_built_by::<NumbersConfig>(move |cfg, _| {
                Ok(Built::Source(Arc::new(Numbers { cfg, probe: p1.clone() })))
            }),
            kind_built_by::<GateConfig>(move |cfg, _| {
                Ok(Built::Processor(Arc::new(Gate { cfg, probe: p2.clone(), kept: Mutex::default() })))
            }),
            kind_built_by::<ParseGateConfig>(move |ParseGateConfig(cfg), _| {
                Ok(Built::Processor(Arc::new(Gate { cfg, probe: p3.clone(), kept: Mutex::default() })))
            }),
        ],
        stores: Arc::new(MemoryStores),
    }
}

/// Built only with a probe, by [`registry`].
fn needs_a_probe(kind: &str) -> ConfigError {
    ConfigError::at("kind", format!("the test kind `{kind}` is built by testing::registry, with its probe"))
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct NumbersConfig {
    count: u64,
    #[serde(default)]
    size: u64,
    #[serde(default)]
    panic_in_preflight: bool,
}

const OUT: &[PortDecl] = &[PortDecl::out("out", "every item").setting(&["key"])];

impl KindConfig for NumbersConfig {
    const NAME: &'static str = "numbers";
    const SUMMARY: &'static str = "Test source: `count` items of `size` bytes.";
    const ROLE: Role = Role::Source;
    const PORTS: &'static [PortDecl] = OUT;
    const EXAMPLE: &'static str = "list: { kind: numbers, count: 3 }";
    fn build(self, _ctx: &BuildContext) -> Result<Built, ConfigError> {
        Err(needs_a_probe(Self::NAME))
    }
}

struct Numbers {
    cfg: NumbersConfig,
    probe: Arc<Probe>,
}

#[async_trait]
impl Source for Numbers {
    async fn preflight(&self) -> Result<(), NodeError> {
        assert!(!self.cfg.panic_in_preflight, "a preflight check that panics");
        Ok(())
    }
    async fn run(&self, out: &Emitter, cx: &Context) -> Result<(), NodeError> {
        for i in 0..self.cfg.count {
            if cx.is_stopped() {
                break;
            }
            let listed = ObjectInfo { key: format!("k{i}"), size: self.cfg.size, ..ObjectInfo::default() };
            if !out.offer(&listed) {
                continue;
            }
            let mut meta = Meta::new();
            meta.insert("key".into(), listed.key.clone().into());
            out.emit("out", out.new_item(&listed, meta)).await.map_err(|_| "closed".to_string())?;
        }
        Ok(())
    }
    async fn ack(&self, done: &Finished) -> Result<(), NodeError> {
        self.probe.acked.lock().map_err(|e| e.to_string())?.push(done.listed.key.clone());
        Ok(())
    }
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct GateConfig {
    #[serde(default)]
    hold: bool,
    #[serde(default)]
    fail: Vec<String>,
    #[serde(default)]
    panic: Vec<String>,
    #[serde(default)]
    refuse: Vec<String>,
    #[serde(default)]
    keep: bool,
    #[serde(default)]
    lose: Vec<String>,
}

impl KindConfig for GateConfig {
    const NAME: &'static str = "gate";
    const SUMMARY: &'static str = "Test processor: holds, fails or panics on items as told.";
    const ROLE: Role = Role::Processor;
    const PORTS: &'static [PortDecl] = OUT;
    const EXAMPLE: &'static str = "gate: { kind: gate, input: list, hold: true }";
    fn build(self, _ctx: &BuildContext) -> Result<Built, ConfigError> {
        Err(needs_a_probe(Self::NAME))
    }
}

/// `parse_gate`: `gate`, declared as a parse whose output is twice its input.
#[derive(Deserialize, JsonSchema)]
#[serde(transparent)]
struct ParseGateConfig(GateConfig);

impl KindConfig for ParseGateConfig {
    const NAME: &'static str = "parse_gate";
    const SUMMARY: &'static str = GateConfig::SUMMARY;
    const ROLE: Role = Role::Processor;
    const PORTS: &'static [PortDecl] = OUT;
    const EXAMPLE: &'static str = "gate: { kind: parse_gate, input: list }";
    const READS_WHOLE_BODY: bool = true;
    const BODY_GROWTH: u32 = 2;
    fn build(self, _ctx: &BuildContext) -> Result<Built, ConfigError> {
        Err(needs_a_probe(Self::NAME))
    }
}

struct Gate {
    cfg: GateConfig,
    probe: Arc<Probe>,
    kept: Mutex<Vec<Held>>,
}

#[async_trait]
impl Processor for Gate {
    async fn process(&self, item: Item, out: &Emitter, _cx: &Context) -> Result<(), ItemError> {
        let p = &self.probe;
        p.entered.fetch_add(1, Ordering::SeqCst);
        let now = p.open.fetch_add(1, Ordering::SeqCst) + 1;
        p.max_open.fetch_max(now, Ordering::SeqCst);
        if self.cfg.hold {
            if let Ok(permit) = p.release.acquire().await {
                permit.forget();
            }
        }
        p.open.fetch_sub(1, Ordering::SeqCst);
        let key = item.key().to_string();
        assert!(!self.cfg.panic.contains(&key), "a node that panics on {key}");
        if self.cfg.fail.contains(&key) {
            return Err(ItemError::new(format!("told to fail {key:?}")));
        }
        if self.cfg.refuse.contains(&key) {
            return Err(ItemError::refused(format!("told to refuse {key}")));
        }
        if self.cfg.keep {
            self.kept.lock().map_err(|_| ItemError::new("poisoned"))?.push(item.hold("gate"));
            return Ok(());
        }
        out.emit("out", item).await.map_err(ItemError::from)
    }
    async fn end_of_input(&self, out: &Emitter, _cx: &Context) {
        let kept = self.kept.lock().map(|mut k| std::mem::take(&mut *k)).unwrap_or_default();
        for held in kept {
            let key = held.meta().get("key").and_then(|k| k.as_str()).unwrap_or_default().to_string();
            if !self.cfg.lose.contains(&key) {
                let _ = out.emit("out", held.release()).await;
            }
        }
    }
    async fn preview(&self, item: Item, out: &Emitter, _cx: &Context, _deep: bool) -> Result<(), ItemError> {
        out.emit("out", item).await.map_err(ItemError::from)
    }
}

/// Opens `mem://NAME` stores.
struct MemoryStores;

#[derive(Deserialize, JsonSchema)]
struct NoOptions {}

impl StoreOpener for MemoryStores {
    fn open(&self, spec: &StoreSpec) -> Result<Arc<dyn Store>, ConfigError> {
        match spec.url.strip_prefix("mem://") {
            Some(name) => Ok(Arc::new(MemoryStore::new(name))),
            None => Err(ConfigError::at("url", "test stores are `mem://NAME`")),
        }
    }
    fn schema(&self) -> schemars::Schema {
        crate::spec::schema::config_schema::<NoOptions>()
    }
}

/// A store in memory: key -> the bytes, and when they were last modified (RFC 3339).
#[derive(Debug)]
pub struct MemoryStore {
    name: String,
    objects: Mutex<BTreeMap<String, (bytes::Bytes, String)>>,
}

impl MemoryStore {
    pub fn new(name: &str) -> Self {
        Self { name: name.to_string(), objects: Mutex::default() }
    }
    /// Puts an object there directly (a test's input), modified now.
    pub fn insert(&self, key: &str, bytes: impl Into<bytes::Bytes>) {
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
        self.insert_modified(key, bytes, &now);
    }
    /// Puts an object there directly, last modified at `when` (RFC 3339), as a listing
    /// will say.
    pub fn insert_modified(&self, key: &str, bytes: impl Into<bytes::Bytes>, when: &str) {
        if let Ok(mut m) = self.objects.lock() {
            m.insert(key.to_string(), (bytes.into(), when.to_string()));
        }
    }
    /// The object at `key` as a listing describes it.
    fn info(key: &str, (bytes, modified): &(bytes::Bytes, String)) -> ObjectInfo {
        ObjectInfo { key: key.to_string(), size: bytes.len() as u64, etag: None, last_modified: Some(modified.clone()) }
    }
    /// Every object it holds, by key.
    pub fn objects(&self) -> BTreeMap<String, bytes::Bytes> {
        self.objects.lock().map(|m| m.iter().map(|(k, (b, _))| (k.clone(), b.clone())).collect()).unwrap_or_default()
    }
}

#[async_trait]
impl Store for MemoryStore {
    fn lists_in_key_order(&self) -> bool {
        true
    }
    fn display_url(&self) -> String {
        format!("mem://{}", self.name)
    }
    fn list<'a>(&'a self, prefix: &'a str, after: Option<String>) -> BoxStream<'a, Result<ObjectInfo, StoreError>> {
        let listed: Vec<Result<ObjectInfo, StoreError>> = self
            .objects
            .lock()
            .map(|m| {
                m.iter()
                    .filter(|(k, _)| k.starts_with(prefix) && after.as_deref().is_none_or(|a| k.as_str() > a))
                    .map(|(k, o)| Ok(Self::info(k, o)))
                    .collect()
            })
            .unwrap_or_default();
        Box::pin(futures::stream::iter(listed))
    }
    async fn get(&self, key: &str, _spool: &Spool) -> Result<Body, StoreError> {
        let found = self.objects.lock().ok().and_then(|m| m.get(key).map(|(b, _)| b.clone()));
        found.map(Body::Memory).ok_or_else(|| StoreError::new(StoreErrorKind::NotFound, format!("{key}: not found")))
    }
    async fn put(&self, key: &str, body: &Body, _options: &PutOptions) -> Result<(), StoreError> {
        let bytes = body.to_bytes(u64::MAX).await.map_err(|e| StoreError::new(StoreErrorKind::Other, e.to_string()))?;
        self.insert(key, bytes);
        Ok(())
    }
    async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, StoreError> {
        Ok(self.objects.lock().ok().and_then(|m| m.get(key).map(|o| Self::info(key, o))))
    }
    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        if let Ok(mut m) = self.objects.lock() {
            m.remove(key);
        }
        Ok(())
    }
}
