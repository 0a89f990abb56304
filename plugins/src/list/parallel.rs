//! `parallel_listings`: where a `list` node splits its prefix into ranges listed at once.
//!
//! The ranges are cut at the character that follows the prefix, so the prefix must end
//! where keys start to differ. Archives name their keys alike (NATS:
//! `[-PRMD=EG-ADMD=ICAO-C=XX-;MTA-EGGG-1-MTCU_` and 16 hex digits): split after the
//! spec's prefix, nearly every key would fall in one range. So the prefix is first
//! extended to what every key under it shares, found from the first key and a few probes,
//! without reading the listing: with `C` a start of the first key, a listing that starts
//! after `C` + U+10FFFF (the last character) finds nothing exactly when no key sorts past
//! those beginning with `C`, and none sorts before the first key. A binary search over the
//! first key's length takes about log2(its length) probes: 6 for NATS keys.

use dqpipe_engine::api::store::{Store, StoreError};
use futures::StreamExt;

/// The longest prefix that every key under `prefix` starts with (`prefix` itself when the
/// store holds no key there, or one key sorts past the candidates).
pub async fn shared_prefix(store: &dyn Store, prefix: &str) -> Result<String, StoreError> {
    let first = match store.list(prefix, None).next().await {
        None => return Ok(prefix.to_string()),
        Some(r) => r?.key,
    };
    if !first.starts_with(prefix) {
        return Ok(prefix.to_string());
    }
    // Candidate ends: each character boundary of the first key past the prefix. The
    // prefix itself is shared; the search keeps `ends[lo]` shared.
    let ends: Vec<usize> =
        first.char_indices().map(|(i, _)| i).filter(|i| *i > prefix.len()).chain([first.len()]).collect();
    let (mut lo, mut hi) = (0usize, ends.len());
    let shared_to = |n: usize| if n == 0 { prefix.len() } else { ends[n - 1] };
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if all_start_with(store, prefix, &first[..shared_to(mid)]).await? {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    Ok(first[..shared_to(lo)].to_string())
}

/// Whether no key under `prefix` sorts past the keys that start with `c`. A key that starts
/// with `c` and U+10FFFF (none does in practice) answers no: the split is then made earlier.
async fn all_start_with(store: &dyn Store, prefix: &str, c: &str) -> Result<bool, StoreError> {
    let past = format!("{c}\u{10FFFF}");
    match store.list(prefix, Some(past)).next().await {
        None => Ok(true),
        Some(Ok(_)) => Ok(false),
        Some(Err(e)) => Err(e),
    }
}

/// The prefixes of the ranges after `base`, one per printable ASCII character; the keys
/// whose next character sorts before the space or after `~` are two more ranges, which
/// the caller lists from `base` itself.
pub fn fan(base: &str) -> Vec<String> {
    (b' '..=b'~').map(|c| format!("{base}{}", c as char)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use dqpipe_engine::testing::MemoryStore;

    async fn shared(keys: &[&str], prefix: &str) -> String {
        let store = MemoryStore::new("t");
        for k in keys {
            store.insert(k, &b"{}"[..]);
        }
        shared_prefix(&store, prefix).await.unwrap()
    }

    #[tokio::test]
    async fn the_prefix_grows_to_what_every_key_shares() {
        let nats: Vec<String> = (0..40u64)
            .map(|i| format!("[-PRMD=EG;MTCU_{:016X}].json", i.wrapping_mul(0x9E37_79B9_7F4A_7C15)))
            .collect();
        let keys: Vec<&str> = nats.iter().map(String::as_str).collect();
        assert_eq!(shared(&keys, "").await, "[-PRMD=EG;MTCU_");
        assert_eq!(shared(&["a/x1", "a/x2", "b/x"], "").await, "");
        assert_eq!(shared(&["a/x1", "a/x2", "b/x"], "a/").await, "a/x");
        assert_eq!(shared(&["only.json"], "").await, "only.json");
        assert_eq!(shared(&[], "p/").await, "p/");
        assert_eq!(shared(&["é1", "é2", "ü"], "").await, "");
        assert_eq!(shared(&["✈a", "✈b"], "").await, "✈");
        assert_eq!(shared(&["k\u{10FFFF}z", "k1"], "").await, "", "a key past the last character: no split after `k`");
    }
}
