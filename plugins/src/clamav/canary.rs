//! Canary scans: proof, before the first item and again at intervals, that the scanner
//! really scans. A scanner can answer every item and still detect nothing (a database of
//! one unrelated signature), or answer `OK` early while it drains the stream and then
//! answer the session's `PING`: no reply to a real item tells those apart from a real
//! verdict. A scan of a payload that must be found does.
//!
//! The canary is a zip archive, stored (not compressed), of two members: several MiB of
//! padding, then the 68-byte EICAR test file, then the archive's central directory. So a
//! scanner that reads only the start of the stream (an early answer, a proxy that stops
//! after 64 KiB) never reaches the signature, and the archive is only whole once its last
//! bytes are read. It is found by any ClamAV database: body signatures see the EICAR bytes
//! in the stream as they are (stored), and hash signatures (the official database names
//! the EICAR file by its hash) see the member once clamd has unpacked the archive.
//!
//! The zip is written here by hand (about 40 lines, no compression, two fixed members)
//! rather than with the `zip` crate: a dependency and its features for one constant file.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use schemars::JsonSchema;
use serde::Deserialize;

/// The 68-byte EICAR anti-virus test string, assembled at run time from pieces, so no
/// file in the repository holds it whole (scanners on developers' machines would flag
/// the repository).
pub fn eicar() -> String {
    let parts = ["X5O!P%@AP[4\\PZX54(P^)7CC)7}", "$EICAR-STANDARD-", "ANTIVIRUS-TEST-", "FILE!$H+H*"];
    parts.concat()
}

/// Settings of the canary scans (`clamav.canary`).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CanaryConfig {
    /// Scan the canary at all. Off only for a scanner known not to detect EICAR, and then
    /// nothing proves the scanner detects anything.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Size of the canary: longer than one INSTREAM chunk and the socket buffers between
    /// dqpipe and the scanner (loopback's can hold 4 MiB), so that only a scanner that read
    /// it to the end can find the signature. At most the node's `max_bytes` and clamd's
    /// StreamMaxLength.
    #[serde(default = "default_bytes")]
    #[schemars(range(min = 65536, max = 4294967296u64))]
    pub bytes: u64,
    /// Scan the canary again after this many items.
    #[serde(default = "default_every_items")]
    #[schemars(range(min = 1, max = 1000000000))]
    pub every_items: u64,
    /// Scan the canary again once this long has passed since the last one.
    #[serde(default = "default_every_secs")]
    #[schemars(range(min = 1, max = 86400))]
    pub every_secs: u64,
    /// The signature the scanner must name (a part of it, any case): ClamAV's official
    /// database says `Win.Test.EICAR_HDB-1`, `scripts/clamd-local`'s `Local.EICAR.UNOFFICIAL`.
    #[serde(default = "default_signature")]
    pub signature: String,
}

fn yes() -> bool {
    true
}
fn default_bytes() -> u64 {
    4 * 1024 * 1024
}
fn default_every_items() -> u64 {
    5_000
}
fn default_every_secs() -> u64 {
    300
}
fn default_signature() -> String {
    "eicar".into()
}

impl Default for CanaryConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            bytes: default_bytes(),
            every_items: default_every_items(),
            every_secs: default_every_secs(),
            signature: default_signature(),
        }
    }
}

/// The canary's bytes: a stored zip of `padding.txt` (spaces and newlines) and
/// `eicar.com`, `total` bytes in all (at least the two members' headers and EICAR).
pub fn payload(total: u64) -> Bytes {
    let eicar = eicar().into_bytes();
    let names: [&[u8]; 2] = [b"padding.txt", b"eicar.com"];
    // Two local headers (30 + name), two central entries (46 + name), the end record (22).
    let overhead = names.iter().map(|n| 30 + 46 + 2 * n.len()).sum::<usize>() + 22;
    let pad_len = (total as usize).saturating_sub(overhead + eicar.len());
    let padding: Vec<u8> = (0..pad_len).map(|i| if i % 64 == 63 { b'\n' } else { b' ' }).collect();
    let members: [&[u8]; 2] = [&padding, &eicar];
    let mut zip = Vec::with_capacity(total as usize);
    let mut central = Vec::new();
    for (name, data) in names.iter().zip(members) {
        let (offset, crc, len) = (zip.len() as u32, crc32fast::hash(data), data.len() as u32);
        // Local file header: version 10, no flags, stored, no time, CRC, sizes, name.
        zip.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        zip.extend_from_slice(&[10, 0, 0, 0, 0, 0, 0, 0, 0x21, 0]);
        for v in [crc, len, len] {
            zip.extend_from_slice(&v.to_le_bytes());
        }
        zip.extend_from_slice(&(name.len() as u16).to_le_bytes());
        zip.extend_from_slice(&0u16.to_le_bytes());
        zip.extend_from_slice(name);
        zip.extend_from_slice(data);
        // Central directory entry for it.
        central.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
        central.extend_from_slice(&[20, 0, 10, 0, 0, 0, 0, 0, 0, 0, 0x21, 0]);
        for v in [crc, len, len] {
            central.extend_from_slice(&v.to_le_bytes());
        }
        central.extend_from_slice(&(name.len() as u16).to_le_bytes());
        central.extend_from_slice(&[0; 12]); // extra, comment, disk, attributes
        central.extend_from_slice(&offset.to_le_bytes());
        central.extend_from_slice(name);
    }
    let (cd_offset, cd_len) = (zip.len() as u32, central.len() as u32);
    zip.extend_from_slice(&central);
    zip.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    zip.extend_from_slice(&[0, 0, 0, 0, 2, 0, 2, 0]);
    zip.extend_from_slice(&cd_len.to_le_bytes());
    zip.extend_from_slice(&cd_offset.to_le_bytes());
    zip.extend_from_slice(&0u16.to_le_bytes());
    Bytes::from(zip)
}

/// When the next canary is due, and whether the scanner has failed one.
pub struct CanaryState {
    inner: Mutex<State>,
    /// One canary at a time: items that find one due wait for its verdict.
    pub(super) running: tokio::sync::Mutex<()>,
}

struct State {
    items_since: u64,
    last: Instant,
    /// Why verdicts are not trusted, from the canary that failed.
    failed: Option<String>,
}

impl Default for CanaryState {
    fn default() -> Self {
        let state = State { items_since: 0, last: Instant::now(), failed: None };
        Self { inner: Mutex::new(state), running: tokio::sync::Mutex::new(()) }
    }
}

impl CanaryState {
    /// Counts an item; true when a check of the scanner (its database, and the canary when
    /// enabled) is due before it is scanned.
    pub fn due(&self, cfg: &CanaryConfig) -> bool {
        let Ok(mut s) = self.inner.lock() else { return true };
        s.items_since += 1;
        s.items_since > cfg.every_items || s.last.elapsed() >= Duration::from_secs(cfg.every_secs)
    }
    /// A canary was found; `items` have been counted since (the item that waited for it).
    pub fn passed(&self, items: u64) {
        if let Ok(mut s) = self.inner.lock() {
            s.items_since = items;
            s.last = Instant::now();
        }
    }
    pub fn fail(&self, why: String) {
        if let Ok(mut s) = self.inner.lock() {
            s.failed.get_or_insert(why);
        }
    }
    /// Why no verdict is trusted, once a canary failed.
    pub fn failed(&self) -> Option<String> {
        self.inner.lock().map(|s| s.failed.clone()).unwrap_or_else(|_| Some("internal error".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_canary_is_a_zip_of_the_size_asked_with_eicar_at_its_end() {
        let zip = payload(4 << 20);
        assert_eq!(zip.len(), 4 << 20);
        let eicar = eicar().into_bytes();
        let at = zip.windows(eicar.len()).position(|w| w == eicar.as_slice()).unwrap();
        assert!(at > zip.len() - 300, "EICAR is in the last bytes, before the central directory");
        assert_eq!(&zip[zip.len() - 22..zip.len() - 18], &0x0605_4b50u32.to_le_bytes());
    }
}
