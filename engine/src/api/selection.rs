//! Which listed objects a run takes, whatever the source: this process's share of them
//! ([`Shard`]) and, with `run --plan`, the objects a saved plan names ([`Planned`]).

use std::sync::Mutex;

/// The objects a saved plan names, by source node: key -> (size, etag) as listed when
/// planning.
#[derive(Debug, Default)]
pub struct Planned {
    pub objects: std::collections::HashMap<String, std::collections::HashMap<String, (u64, Option<String>)>>,
    /// (source, key) met by this run's listings, to report planned objects that are gone.
    pub seen: Mutex<std::collections::HashSet<(String, String)>>,
    /// The plan was made with `--reprocess`: its objects are processed even if done.
    pub reprocess: bool,
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
