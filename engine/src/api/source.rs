//! A source: produces one item per object it lists, and is told when each object is
//! finished ([`Source::ack`]).

use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::api::item::Meta;
use crate::runtime::outputs::Outputs;

#[async_trait]
pub trait Source: Send + Sync {
    /// Checks what the source needs (a store reachable, credentials accepted) before any
    /// item moves.
    async fn preflight(&self) -> Result<(), String> {
        Ok(())
    }
    /// Produces items with [`Outputs::new_item`] and [`Outputs::emit`] until exhausted or
    /// until `ctx.stop` is set, skipping objects outside `ctx.shard` and (unless
    /// `ctx.reprocess`) objects an earlier run finished.
    async fn run(&self, out: &Outputs, ctx: &SourceContext) -> Result<(), String>;
    /// Called once per object after every output of it is durable, before it is counted
    /// complete: record it as done, delete it at a source that deletes. An error leaves
    /// the object unprocessed (a rerun does it again). `listed` is the metadata the source
    /// gave the object.
    async fn ack(&self, _listed: &Meta) -> Result<(), String> {
        Ok(())
    }
    /// Whether `ack` deletes the object at the source (plans count the deletes).
    fn deletes_on_ack(&self) -> bool {
        false
    }
}

/// What a source is told about the run.
#[derive(Debug, Clone, Default)]
pub struct SourceContext {
    pub stop: Stop,
    /// This process's share of the objects: `(index, count)`.
    pub shard: Option<Shard>,
    /// Process objects even when an earlier run finished them.
    pub reprocess: bool,
    /// `run --plan`: only these objects, and only if unchanged since planning.
    pub only: Option<Arc<Planned>>,
}

/// The objects a saved plan names, by source node: key -> (size, etag) as listed when
/// planning.
#[derive(Debug, Default)]
pub struct Planned {
    pub objects: std::collections::HashMap<String, std::collections::HashMap<String, (u64, Option<String>)>>,
    /// (source, key) met by this run's listings, to report planned objects that are gone.
    pub seen: Mutex<std::collections::HashSet<(String, String)>>,
}

/// One of `count` disjoint shares of the objects, by a stable hash of the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl Shard {
    /// Whether `key` belongs to this shard: FNV-1a of the key's bytes, modulo the count.
    /// Stable across processes, versions and machines (unlike std's randomised hasher).
    pub fn owns(&self, key: &str) -> bool {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in key.as_bytes() {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h % u64::from(self.count.max(1)) == u64::from(self.index)
    }
}

impl std::str::FromStr for Shard {
    type Err = String;
    /// `INDEX/COUNT`, as `2/4`.
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("`{s}`: a shard is INDEX/COUNT with 0 <= INDEX < COUNT, as `0/4`");
        let (i, c) = s.split_once('/').ok_or_else(bad)?;
        let index: u32 = i.trim().parse().map_err(|_| bad())?;
        let count: u32 = c.trim().parse().map_err(|_| bad())?;
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// Asks sources to stop listing (SIGTERM, fatal error). A cancellation token, so that
/// whoever waits (preflight, the drain) wakes at once instead of polling.
#[derive(Debug, Clone, Default)]
pub struct Stop(tokio_util::sync::CancellationToken);

impl Stop {
    pub fn stop(&self) {
        self.0.cancel();
    }
    pub fn is_stopped(&self) -> bool {
        self.0.is_cancelled()
    }
    /// Completes once [`Stop::stop`] was called.
    pub async fn stopped(&self) {
        self.0.cancelled().await
    }
}
