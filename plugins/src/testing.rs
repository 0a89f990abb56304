//! What `dqpipe test` runs a spec with: the same kinds and settings, but every store in
//! memory and every node that calls out answered by a stub, so a spec's test cases run in
//! a second with no clamd, S3, SFTP or network.
//!
//! - Stores: each store of the spec is a [`MemoryStore`] (by the store's name), whatever
//!   its URL; its settings are still checked by the real scheme.
//! - `clamav` nodes answer as the case says: `clean`, `infected SIGNATURE` or
//!   `error REASON`, per node and per object.
//! - `slack` nodes keep their messages instead of posting them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use dqpipe_engine::api::store::Store;
use dqpipe_engine::api::{
    kind_built_by, Built, ConfigError, Context, Emitter, Item, ItemError, NodeKind, Problem, Processor, Registry,
    StoreOpener,
};
use dqpipe_engine::spec::StoreSpec;
use dqpipe_engine::testing::MemoryStore;
use indexmap::IndexMap;

use crate::clamav::ClamavConfig;
use crate::slack::{Captured, SlackConfig};

/// A scanner's answer in a test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Clean,
    Infected(String),
    Error(String),
}

impl std::str::FromStr for Answer {
    type Err = String;
    /// `clean`, `infected SIGNATURE`, `error REASON`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (word, rest) = s.trim().split_once(' ').map(|(w, r)| (w, r.trim())).unwrap_or((s.trim(), ""));
        match (word, rest) {
            ("clean", "") => Ok(Answer::Clean),
            ("infected", sig) if !sig.is_empty() => Ok(Answer::Infected(sig.to_string())),
            ("error", why) if !why.is_empty() => Ok(Answer::Error(why.to_string())),
            _ => Err(format!("`{s}`: a scanner answers `clean`, `infected SIGNATURE` or `error REASON`")),
        }
    }
}

/// The answers of the scanner nodes: per node, and per source key (every scanner) over that.
#[derive(Debug, Default)]
pub struct Stubs {
    pub scan: HashMap<String, Answer>,
    pub per_object: HashMap<String, Answer>,
}

/// The stores of one test run, in memory, by the spec's store names.
#[derive(Default)]
pub struct InMemory {
    stores: Mutex<IndexMap<String, Arc<MemoryStore>>>,
}

impl InMemory {
    /// The store named `name` (made empty on first use).
    pub fn store(&self, name: &str) -> Arc<MemoryStore> {
        let mut stores = self.stores.lock().unwrap_or_else(|e| e.into_inner());
        stores.entry(name.to_string()).or_insert_with(|| Arc::new(MemoryStore::new(name))).clone()
    }
}

struct MemoryOpener {
    stores: Arc<InMemory>,
    real: Arc<dyn StoreOpener>,
}

impl StoreOpener for MemoryOpener {
    fn open(&self, spec: &StoreSpec) -> Result<Arc<dyn Store>, ConfigError> {
        // The settings are the real scheme's to check; no I/O either way.
        self.real.open(spec)?;
        Ok(self.stores.store(&spec.name))
    }
    fn schema(&self) -> schemars::Schema {
        self.real.schema()
    }
}

/// The registry of a test run: the real kinds, with scanners and alerts stubbed and
/// stores in memory.
pub fn registry(stubs: Arc<Stubs>, alerts: Captured, stores: Arc<InMemory>) -> Registry {
    let real = crate::registry();
    let kinds = real
        .kinds
        .into_iter()
        .map(|k| -> Arc<dyn NodeKind> {
            match k.name() {
                "clamav" => {
                    let stubs = stubs.clone();
                    kind_built_by::<ClamavConfig>(move |_, ctx| {
                        Ok(Built::Processor(Arc::new(StubScan { node: ctx.node.to_string(), stubs: stubs.clone() })))
                    })
                }
                "slack" => {
                    let alerts = alerts.clone();
                    kind_built_by::<SlackConfig>(move |cfg, _| crate::slack::build(cfg, Some(alerts.clone())))
                }
                _ => k,
            }
        })
        .collect();
    Registry { kinds, stores: Arc::new(MemoryOpener { stores, real: real.stores }) }
}

/// `clamav` with the case's answers instead of clamd: same settings, same ports.
struct StubScan {
    node: String,
    stubs: Arc<Stubs>,
}

#[async_trait]
impl Processor for StubScan {
    async fn process(&self, mut item: Item, out: &Emitter, _cx: &Context) -> Result<(), ItemError> {
        let answer = self.stubs.per_object.get(item.source_key()).or_else(|| self.stubs.scan.get(&self.node));
        let port = match answer.cloned().unwrap_or(Answer::Clean) {
            Answer::Clean => "clean",
            Answer::Infected(signature) => {
                item.set_problem(Problem::Infected { signature });
                "infected"
            }
            Answer::Error(reason) => {
                item.set_problem(Problem::Unscannable { reason });
                "error"
            }
        };
        out.emit(port, item).await.map_err(ItemError::from)
    }

    async fn preview(&self, item: Item, out: &Emitter, _cx: &Context, _deep: bool) -> Result<(), ItemError> {
        out.emit("clean", item).await.map_err(ItemError::from)
    }
}
