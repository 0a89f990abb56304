//! Reading archives, on a blocking thread: first a check of the whole archive against the
//! limits (nothing is sent on from an archive that breaks one), then its members, one at a
//! time, each into a body that spools to disk past the spool threshold.
//!
//! zip: the central directory gives every member's name and sizes before any is read, and
//! the zip crate stops a member at its declared size (a CRC or size mismatch is an error).
//! tar, tar.gz and gzip have no directory: the check reads the archive through once,
//! counting what it decompresses (bounded by the limits), and the members are read in a
//! second pass. Twice the CPU for those formats, in exchange for never sending on part of
//! a hostile archive.

use std::io::{Read, Seek};
use std::path::{Component, Path};

use dqpipe_engine::api::body::{BodyWriter, Spool};

use super::{Format, Limits, Member};

/// Why an archive is not unpacked: said in the item's reason.
pub(super) type Refusal = String;

/// A member's path, if it stays inside the archive: relative, no `..`, no root.
fn safe_path(name: &str) -> Result<String, Refusal> {
    let path = Path::new(name);
    let ok = !name.is_empty()
        && !name.contains('\0')
        && path.components().all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    match ok {
        true => Ok(name.trim_start_matches("./").to_string()),
        false => Err(format!(
            "member {:?} is not a relative path inside the archive (`..` or absolute)",
            name.escape_debug()
        )),
    }
}

/// What the check counts against the limits.
#[derive(Default)]
struct Tally {
    members: u64,
    bytes: u64,
}

impl Tally {
    fn add(&mut self, limits: &Limits, size: u64, compressed: u64) -> Result<(), Refusal> {
        self.members += 1;
        self.bytes += size;
        if self.members > limits.max_members {
            return Err(format!("more than max_members ({}) members", limits.max_members));
        }
        if self.bytes > limits.max_bytes {
            return Err(format!("more than max_bytes ({}) bytes once unpacked", limits.max_bytes));
        }
        if size > limits.max_ratio.saturating_mul(compressed.max(1)).max(64 * 1024) {
            return Err(format!(
                "a member {size} bytes unpacked from {compressed}: over max_ratio ({}:1)",
                limits.max_ratio
            ));
        }
        Ok(())
    }
}

/// Checks the archive against the limits; `Ok` means every member can be sent on.
pub(super) fn check<R: Read + Seek>(
    format: Format,
    mut open: impl FnMut() -> std::io::Result<R>,
    len: u64,
    limits: &Limits,
) -> Result<(), Refusal> {
    let io = |e: std::io::Error| format!("not a readable {}: {e}", format.name());
    let mut tally = Tally::default();
    match format {
        Format::Zip => {
            let mut zip = zip::ZipArchive::new(open().map_err(io)?).map_err(|e| format!("not a readable zip: {e}"))?;
            if zip.len() as u64 > limits.max_members {
                return Err(format!("{} members: more than max_members ({})", zip.len(), limits.max_members));
            }
            for i in 0..zip.len() {
                let entry = zip.by_index_raw(i).map_err(|e| format!("not a readable zip: {e}"))?;
                safe_path(entry.name())?;
                if entry.is_file() {
                    tally.add(limits, entry.size(), entry.compressed_size())?;
                }
            }
        }
        Format::Tar | Format::TarGz => {
            let reader = decoder(format, open().map_err(io)?);
            let mut archive = tar::Archive::new(reader);
            for entry in archive.entries().map_err(io)? {
                let mut entry = entry.map_err(io)?;
                let name = entry.path_bytes().into_owned();
                safe_path(&String::from_utf8_lossy(&name))?;
                if entry.header().entry_type().is_file() {
                    let read = std::io::copy(&mut (&mut entry).take(limits.max_bytes + 1), &mut std::io::sink())
                        .map_err(io)?;
                    tally.add(limits, read, len)?;
                }
            }
        }
        Format::Gzip => {
            let mut reader = decoder(format, open().map_err(io)?).take(limits.max_bytes + 1);
            let read = std::io::copy(&mut reader, &mut std::io::sink()).map_err(io)?;
            tally.add(limits, read, len)?;
        }
    }
    Ok(())
}

/// A gzip decoder for the compressed formats, the reader itself for the others.
fn decoder<'r, R: Read + 'r>(format: Format, r: R) -> Box<dyn Read + 'r> {
    match format {
        Format::TarGz | Format::Gzip => Box::new(flate2::read::MultiGzDecoder::new(std::io::BufReader::new(r))),
        _ => Box::new(r),
    }
}

/// Reads the members of a checked archive, handing each to `send` (which returns false
/// when nobody takes more). `stem` names a gzip's one member.
pub(super) fn members<R: Read + Seek>(
    format: Format,
    r: R,
    stem: &str,
    spool: &Spool,
    mut send: impl FnMut(Member) -> bool,
) -> Result<(), Refusal> {
    let io = |e: std::io::Error| format!("reading the {}: {e}", format.name());
    let body = |reader: &mut dyn Read, size: u64| -> Result<dqpipe_engine::api::body::Body, Refusal> {
        let mut w = BodyWriter::new(spool, size as usize);
        std::io::copy(reader, &mut w).map_err(io)?;
        w.finish().map_err(io)
    };
    match format {
        Format::Zip => {
            let mut zip = zip::ZipArchive::new(r).map_err(|e| format!("not a readable zip: {e}"))?;
            for i in 0..zip.len() {
                let mut entry = zip.by_index(i).map_err(|e| format!("reading the zip: {e}"))?;
                if !entry.is_file() {
                    continue;
                }
                let path = safe_path(entry.name())?;
                let modified = entry.last_modified().and_then(|t| {
                    chrono::NaiveDate::from_ymd_opt(t.year().into(), t.month().into(), t.day().into())?
                        .and_hms_opt(t.hour().into(), t.minute().into(), t.second().into())
                        .map(|t| t.and_utc().to_rfc3339())
                });
                let size = entry.size();
                let bytes = body(&mut entry, size)?;
                if !send(Member { path, size, modified, body: bytes }) {
                    return Ok(());
                }
            }
        }
        Format::Tar | Format::TarGz => {
            let mut archive = tar::Archive::new(decoder(format, r));
            for entry in archive.entries().map_err(io)? {
                let mut entry = entry.map_err(io)?;
                if !entry.header().entry_type().is_file() {
                    continue;
                }
                let path = safe_path(&String::from_utf8_lossy(&entry.path_bytes()))?;
                let modified = entry
                    .header()
                    .mtime()
                    .ok()
                    .and_then(|s| chrono::DateTime::from_timestamp(s as i64, 0))
                    .map(|t| t.to_rfc3339());
                let size = entry.header().size().unwrap_or(0);
                let bytes = body(&mut entry, size)?;
                if !send(Member { path, size: bytes.len(), modified, body: bytes }) {
                    return Ok(());
                }
            }
        }
        Format::Gzip => {
            let mut reader = decoder(format, r);
            let bytes = body(&mut reader, 0)?;
            send(Member { path: stem.to_string(), size: bytes.len(), modified: None, body: bytes });
        }
    }
    Ok(())
}
