//! `unpack`: a zip, tar, tar.gz or gzip object becomes its members, each an item.
//!
//! ```yaml
//! members:
//!   kind: unpack
//!   input: scan.clean               # ClamAV scans inside archives itself: scan the archive
//! write: { kind: put, input: members, store: out, key: "{{ archive_key }}/{{ member }}" }
//! ```
//!
//! A member's item has the archive's metadata and lineage, and `member` (its path in the
//! archive), `archive_key`, `member_size`, `member_modified`, `name` (the member's file
//! name), `key` (`<archive key>/<member>`) and `archive_depth`. The archive's object is
//! done once every member reached the end of its path (they are copies of one item).
//! Members are read one at a time, each spooled to disk past the spool threshold: at most
//! two wait between the reader and the node, so memory is bounded by the settings, not by
//! the archive.
//!
//! Hostile archives go to `failed` with the reason, before any member is sent on (see
//! `read.rs`): more members than `max_members`, more bytes unpacked than `max_bytes`, a
//! member unpacked more than `max_ratio` times its compressed size, a member named with
//! `..` or an absolute path, an archive inside archives deeper than `max_depth`. An
//! archive without a file in it leaves by `empty` (dropped unless routed). Once every
//! member was read and sent on, the archive itself leaves by `unpacked`: an archive is
//! copied from there only if it could be read whole (the platform's RAW indexer uploaded
//! zips that failed their integrity test).

mod read;

use std::sync::Arc;

use async_trait::async_trait;
use dqpipe_engine::api::body::Body;
use dqpipe_engine::api::{
    BuildContext, Built, ConfigError, Context, Emitter, Item, ItemError, KindConfig, PortDecl, Problem, Processor, Role,
};
use schemars::JsonSchema;
use serde::Deserialize;

use crate::list::select::NamePattern;

/// Settings of an `unpack` node.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UnpackConfig {
    /// `auto` (by the name: `.zip`, `.tar`, `.tar.gz` or `.tgz`, `.gz`; else by the first
    /// bytes), or one of `zip`, `tar`, `tar_gz`, `gzip`.
    #[serde(default)]
    pub format: FormatSetting,
    /// The most members an archive may have.
    #[serde(default = "default_max_members")]
    #[schemars(range(min = 1, max = 100000000))]
    pub max_members: u64,
    /// The most bytes an archive may unpack to, all members together (1 GiB).
    #[serde(default = "default_max_bytes")]
    #[schemars(range(min = 1, max = 1099511627776u64))]
    pub max_bytes: u64,
    /// The most a member may grow unpacked, as a multiple of its compressed size (100:
    /// text and XML compress 5 to 20 times; a zip bomb, thousands).
    #[serde(default = "default_max_ratio")]
    #[schemars(range(min = 1, max = 1000000))]
    pub max_ratio: u64,
    /// How deep archives inside archives are unpacked (a member that is itself an archive,
    /// through a second `unpack`): 1 unpacks only what was listed.
    #[serde(default = "default_max_depth")]
    #[schemars(range(min = 1, max = 16))]
    pub max_depth: u64,
    /// A regular expression with named captures on each member's name (its last path
    /// segment): each capture becomes an item field, as `list`'s `name_pattern` does.
    /// Members it does not match go out of `unmatched` (or are dropped, counted, with
    /// `unmatched: drop`).
    #[serde(default)]
    pub name_pattern: Option<String>,
    /// `route` (the default: the `unmatched` port, which must then be routed) or `drop`.
    #[serde(default)]
    pub unmatched: crate::list::select::Unmatched,
}

fn default_max_members() -> u64 {
    10_000
}
fn default_max_bytes() -> u64 {
    1 << 30
}
fn default_max_ratio() -> u64 {
    100
}
fn default_max_depth() -> u64 {
    1
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FormatSetting {
    #[default]
    Auto,
    Zip,
    Tar,
    TarGz,
    Gzip,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Zip,
    Tar,
    TarGz,
    Gzip,
}

impl Format {
    fn name(self) -> &'static str {
        match self {
            Format::Zip => "zip",
            Format::Tar => "tar",
            Format::TarGz => "tar.gz",
            Format::Gzip => "gzip",
        }
    }

    /// The format `setting` names, or by the object's name, else its first bytes.
    fn of(setting: FormatSetting, name: &str, head: &[u8]) -> Option<Format> {
        let lower = name.to_ascii_lowercase();
        Some(match setting {
            FormatSetting::Zip => Format::Zip,
            FormatSetting::Tar => Format::Tar,
            FormatSetting::TarGz => Format::TarGz,
            FormatSetting::Gzip => Format::Gzip,
            FormatSetting::Auto if lower.ends_with(".zip") || head.starts_with(b"PK\x03\x04") => Format::Zip,
            FormatSetting::Auto if lower.ends_with(".tar.gz") || lower.ends_with(".tgz") => Format::TarGz,
            FormatSetting::Auto if lower.ends_with(".tar") => Format::Tar,
            FormatSetting::Auto if lower.ends_with(".gz") || head.starts_with(&[0x1f, 0x8b]) => Format::Gzip,
            FormatSetting::Auto => return None,
        })
    }
}

/// The limits an archive is checked against.
pub(crate) struct Limits {
    max_members: u64,
    max_bytes: u64,
    max_ratio: u64,
}

/// One member, read.
pub(crate) struct Member {
    path: String,
    size: u64,
    modified: Option<String>,
    body: Body,
}

const MEMBER_FIELDS: &[&str] = &["member", "archive_key", "member_size", "member_modified", "archive_depth"];

const PORTS: &[PortDecl] = &[
    PortDecl::out("out", "one item per member, with `member`, `archive_key`, `member_size`").setting(MEMBER_FIELDS),
    PortDecl::dropped("empty", "archives without a file in them"),
    PortDecl::out(
        "unpacked",
        "the archive itself, once every member was read and sent on, with `members` (how many): an archive \
         copied from here was whole",
    )
    .setting(&["members"]),
    PortDecl::problem(
        "failed",
        &["reason"],
        "archives not unpacked, with `reason`: unreadable, over a limit, a member outside the archive",
    ),
];

impl KindConfig for UnpackConfig {
    const NAME: &'static str = "unpack";
    const SUMMARY: &'static str =
        "Unpacks zip, tar, tar.gz and gzip objects into their members, one item each, checked against limits first.";
    const ROLE: Role = Role::Processor;
    const PORTS: &'static [PortDecl] = PORTS;
    const EXAMPLE: &'static str = include_str!("../kind_examples/unpack.yaml");
    const CPU_BOUND: bool = true;
    fn ports_named(config: &serde_json::Map<String, serde_json::Value>) -> Vec<PortDecl> {
        crate::list::select::unmatched_port(config, MEMBER_FIELDS)
    }
    fn build(self, ctx: &BuildContext) -> Result<Built, ConfigError> {
        let pattern = self.name_pattern.as_deref().map(|p| NamePattern::new(p, ctx)).transpose()?;
        Ok(Built::Processor(Arc::new(Unpack { cfg: self, pattern })))
    }
}

struct Unpack {
    cfg: UnpackConfig,
    /// `name_pattern`, compiled.
    pattern: Option<NamePattern>,
}

impl Unpack {
    fn limits(&self) -> Limits {
        Limits { max_members: self.cfg.max_members, max_bytes: self.cfg.max_bytes, max_ratio: self.cfg.max_ratio }
    }
}

/// Reads `body` as `format` on a blocking thread: the check, then the members, sent on
/// `tx` one at a time. `Err` before the first member when the archive is refused.
fn unpack_blocking(
    format: Format,
    body: Body,
    stem: String,
    limits: Limits,
    spool: dqpipe_engine::api::body::Spool,
    tx: tokio::sync::mpsc::Sender<Member>,
) -> Result<(), String> {
    let open = || body.blocking_reader();
    read::check(format, open, body.len(), &limits)?;
    let r = open().map_err(|e| format!("reading the {}: {e}", format.name()))?;
    read::members(format, r, &stem, &spool, |m| tx.blocking_send(m).is_ok())
}

#[async_trait]
impl Processor for Unpack {
    async fn process(&self, item: Item, out: &Emitter, cx: &Context) -> Result<(), ItemError> {
        let body =
            item.body.clone().ok_or_else(|| ItemError::new("the item has no bytes: unpack needs a fetch upstream"))?;
        let depth = item.meta.get("archive_depth").and_then(|d| d.as_u64()).unwrap_or(0);
        let head = match &body {
            Body::Memory(b) => b.slice(..b.len().min(4)).to_vec(),
            Body::Spooled(_) => Vec::new(),
        };
        let refuse = |mut item: Item, reason: String| async move {
            item.set_problem(Problem::Unparseable { reason });
            out.emit("failed", item).await.map_err(ItemError::from)
        };
        let Some(format) = Format::of(self.cfg.format, item.name(), &head) else {
            return refuse(item, "not an archive unpack reads (zip, tar, tar.gz, gzip)".into()).await;
        };
        if depth >= self.cfg.max_depth {
            let reason = format!("an archive inside archives {depth} deep: over max_depth ({})", self.cfg.max_depth);
            return refuse(item, reason).await;
        }
        let archive_key = item.key().to_string();
        let stem = item.name().trim_end_matches(".gz").trim_end_matches(".GZ").to_string();
        let (tx, mut rx) = tokio::sync::mpsc::channel(2);
        let (limits, spool) = (self.limits(), cx.spool().clone());
        // The archive keeps its bytes: refused, it is written to `failed` with them.
        let reader = tokio::task::spawn_blocking(move || unpack_blocking(format, body, stem, limits, spool, tx));
        let mut sent = 0u64;
        while let Some(m) = rx.recv().await {
            let mut member = item.clone();
            member.set("member", m.path.clone());
            member.set("archive_key", archive_key.clone());
            member.set("key", format!("{archive_key}/{}", m.path));
            member.set("name", m.path.rsplit('/').next().unwrap_or(&m.path).to_string());
            member.set("member_size", m.size);
            member.set("member_modified", m.modified.map(serde_json::Value::from).unwrap_or_default());
            member.set("archive_depth", depth + 1);
            member.body = Some(m.body);
            let name = m.path.rsplit('/').next().unwrap_or(&m.path).to_string();
            let port = self.pattern.as_ref().map_or("out", |p| p.capture(&name, &mut member.meta));
            out.emit(port, member).await.map_err(ItemError::from)?;
            sent += 1;
        }
        match reader.await {
            Ok(Ok(())) if sent == 0 => out.emit("empty", item).await.map_err(ItemError::from),
            Ok(Ok(())) => {
                let mut archive = item;
                archive.set("members", sent);
                out.emit("unpacked", archive).await.map_err(ItemError::from)
            }
            Ok(Err(reason)) if sent == 0 => refuse(item, reason).await,
            // Part of the archive went on: the object is not done, a rerun unpacks it again
            // (to the same keys).
            Ok(Err(reason)) => Err(ItemError::new(format!("unpacking stopped after {sent} members: {reason}"))),
            Err(_) => Err(ItemError::new("internal error: the archive reader panicked")),
        }
    }

    /// Never unpacks in a plan: says the members come from the content.
    async fn preview(&self, item: Item, out: &Emitter, _cx: &Context, _deep: bool) -> Result<(), ItemError> {
        item.plan_note("unpacked at run time: each member is an item (the plan shows the archive)");
        out.emit("out", item.clone()).await.map_err(ItemError::from)?;
        out.emit("unpacked", item).await.map_err(ItemError::from)
    }
}
