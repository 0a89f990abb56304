//! What a run did: per node and port counts, failures, and the outcome that decides the
//! exit code. Printed as a human summary and written as JSON with `--report`.

use indexmap::IndexMap;
use serde::Serialize;

pub use crate::api::outcome::{Cause, NotListed, Outcome, UnmetExpectation};
use crate::api::{ItemFailure, ProblemObject};

/// The version of the report's format, [`RunReport::format_version`].
pub const REPORT_FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// The report's own format: fields are only added within a version (CHANGELOG.md).
    pub format_version: u32,
    pub pipeline: String,
    /// This run's identity, also recorded with every object it wrote.
    pub run_id: String,
    /// dqpipe's version.
    pub version: String,
    /// SHA-256 of the spec after interpolation (as `plan` files record it).
    pub spec_hash: String,
    /// When the run started and ended (RFC 3339, UTC).
    pub started_at: String,
    pub ended_at: String,
    pub outcome: Outcome,
    pub exit_code: i32,
    pub duration_seconds: f64,
    pub items: ItemCounts,
    pub nodes: Vec<NodeReport>,
    /// Why objects were not done, grouped by node and reason (keys and quoted values
    /// left out), most frequent first, with a few example keys; and why the run stopped
    /// early, or a source stopped.
    pub causes: Vec<Cause>,
    /// Every object that was not processed, with the node and the reason.
    pub failures: Vec<ItemFailure>,
    /// Every object sent to a problem route (quarantined, dead-lettered), with the node,
    /// the port and the reason, by key.
    pub problem_objects: Vec<ProblemObject>,
    /// Sources that stopped early (a listing that failed part way).
    pub source_errors: Vec<SourceError>,
    /// What a source expected of its listing and did not find (`list`'s `expect`: nothing
    /// new for too long, too few objects): a problem (exit 3), and a cause.
    pub expectations: Vec<UnmetExpectation>,
    /// Entries listings met that are not objects (links, which could lead out of a
    /// folder store, sockets, names that are not UTF-8), with the path and why: not
    /// processed, and no change to the outcome.
    pub not_listed: Vec<NotListed>,
    /// Set when the run was asked to stop (SIGTERM, Ctrl-C).
    pub interrupted: bool,
    /// Set when the run stopped itself: a node failed every object for a while (a
    /// dependency down), or more failed than `defaults.halt` tolerates, so the rest was
    /// left for the rerun.
    pub halted: Option<String>,
    /// When the run would stop itself (`defaults.halt`, described).
    pub halt_policy: String,
    /// This process's share of the objects, when sharded.
    pub shard: Option<crate::api::Shard>,
    /// The process's peak resident memory (Linux `VmHWM`), when known.
    pub peak_rss_bytes: Option<u64>,
}

impl RunReport {
    /// A run stopped (SIGTERM) before any object moved: nothing processed, rerun.
    pub fn stopped_before_start(pipeline: &str, shard: Option<crate::api::Shard>, secs: f64) -> Self {
        let outcome = Outcome::Incomplete;
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        RunReport {
            format_version: REPORT_FORMAT_VERSION,
            pipeline: pipeline.to_string(),
            run_id: String::new(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            spec_hash: String::new(),
            started_at: now.clone(),
            ended_at: now,
            outcome,
            exit_code: outcome.exit_code(),
            duration_seconds: secs,
            items: ItemCounts {
                from_sources: 0,
                complete: 0,
                failed: 0,
                refused: 0,
                problems: 0,
                skipped_done: 0,
                dropped: 0,
            },
            nodes: Vec::new(),
            causes: Vec::new(),
            failures: Vec::new(),
            problem_objects: Vec::new(),
            source_errors: Vec::new(),
            expectations: Vec::new(),
            not_listed: Vec::new(),
            interrupted: true,
            halted: None,
            halt_policy: String::new(),
            shard,
            peak_rss_bytes: peak_rss_bytes(),
        }
    }
}

/// The process's peak resident set size so far, from `/proc/self/status` (Linux).
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.trim_start_matches("VmHWM:").trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb * 1024)
}

#[derive(Debug, Clone, Serialize)]
pub struct ItemCounts {
    /// Objects the sources produced.
    pub from_sources: u64,
    /// Objects every copy of which reached the end of its path.
    pub complete: u64,
    /// Objects a node could not process for a transient reason: a rerun processes them.
    pub failed: u64,
    /// Objects refused for good and routed nowhere (a key the store refuses, a destination
    /// another object wrote): left at their source, listed in `failures` with
    /// `permanent: true`.
    pub refused: u64,
    /// Items sent to problem ports (quarantine, dead letter).
    pub problems: u64,
    /// Objects skipped because an earlier run finished them (resume).
    pub skipped_done: u64,
    /// Complete objects a filter dropped on purpose (counted in `complete` too).
    pub dropped: u64,
}

impl ItemCounts {
    /// `10 listed, 10 complete (6 dropped by filters), 0 failed, ...`: the summary's line.
    fn line(&self) -> String {
        let dropped = if self.dropped > 0 { format!(" ({} dropped by filters)", self.dropped) } else { String::new() };
        format!(
            "{} listed, {} complete{dropped}, {} failed, {} refused, {} routed to problem ports, {} skipped as already \
             done",
            self.from_sources, self.complete, self.failed, self.refused, self.problems, self.skipped_done
        )
    }
}

/// Groups failures by node and reason, quoted values (keys, names) left out, most
/// frequent first.
pub fn causes(failures: &[ItemFailure]) -> Vec<Cause> {
    let mut groups: IndexMap<(String, String), Cause> = IndexMap::new();
    for f in failures {
        let reason = unquoted(&f.reason);
        let c = groups.entry((f.node.clone(), reason.clone())).or_insert_with(|| Cause {
            node: f.node.clone(),
            reason,
            count: 0,
            examples: Vec::new(),
        });
        c.count += 1;
        if c.examples.len() < 3 {
            c.examples.push(f.key.clone());
        }
    }
    let mut out: Vec<Cause> = groups.into_values().collect();
    out.sort_by_key(|c| std::cmp::Reverse(c.count));
    out
}

/// `reading "a.json": not found` -> `reading "…": not found`.
pub(crate) fn unquoted(reason: &str) -> String {
    let mut out = String::with_capacity(reason.len());
    let mut quoted = false;
    let mut escaped = false;
    for c in reason.chars() {
        match (quoted, c) {
            (true, '\\') if !escaped => escaped = true,
            (true, '"') if !escaped => {
                out.push_str("…\"");
                quoted = false;
            }
            (true, _) => escaped = false,
            (false, '"') => {
                out.push('"');
                quoted = true;
            }
            (false, c) => out.push(c),
        }
    }
    if quoted {
        out.push('…');
    }
    out
}

#[derive(Debug, Clone, Serialize)]
pub struct SourceError {
    pub node: String,
    pub error: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct NodeReport {
    pub name: String,
    pub kind: String,
    /// Sources produce items and receive none.
    pub source: bool,
    /// How many items it worked on at once: fixed, or where an adaptive limit started.
    pub concurrency: usize,
    /// An adaptive limit: its ceiling, the lowest and highest it was, and where it ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub adaptive: Option<AdaptiveReport>,
    /// Items the node received (0 for sources).
    pub received: u64,
    /// Items the node could not process.
    pub errors: u64,
    /// The most items the node worked on at once during the run.
    pub max_in_flight: u64,
    /// Retries of transient failures (timeouts, resets, 5xx, throttling, a busy scanner).
    pub retries: u64,
    pub ports: IndexMap<String, PortReport>,
    /// The node's own figures (an alert node's `delivered`, `not_delivered`, `suppressed`).
    #[serde(skip_serializing_if = "IndexMap::is_empty")]
    pub counters: IndexMap<String, u64>,
}

/// Where a node's adaptive concurrency went during the run.
#[derive(Debug, Clone, Serialize)]
pub struct AdaptiveReport {
    pub max: usize,
    pub lowest: u64,
    pub highest: u64,
    pub last: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct PortReport {
    pub items: u64,
    pub bytes: u64,
    /// The nodes this port feeds; empty when the port ends the items' path.
    pub routed_to: Vec<String>,
    pub problem: bool,
}

impl NodeReport {
    /// The node's line of the run summary.
    fn render_line(&self, s: &mut String, width: usize) {
        use std::fmt::Write as _;
        let n = self;
        let label = format!("{} ({})", n.name, n.kind);
        let mut ports = Vec::new();
        for (p, r) in &n.ports {
            let to = if r.routed_to.is_empty() { "end".to_string() } else { r.routed_to.join(",") };
            ports.push(format!("{p}={} -> {to}", r.items));
        }
        let recv = if n.source { String::from("source") } else { format!("in={}", n.received) };
        let _ = write!(s, "  {label:<width$}  {recv:<10} {}", ports.join("  "));
        if n.errors > 0 {
            let _ = write!(s, "  errors={}", n.errors);
        }
        if n.retries > 0 {
            let _ = write!(s, "  retries={}", n.retries);
        }
        for (name, count) in &n.counters {
            let _ = write!(s, "  {name}={count}");
        }
        let _ = match &n.adaptive {
            None => writeln!(s, "  [concurrency {}, peak in flight {}]", n.concurrency, n.max_in_flight),
            Some(a) => writeln!(
                s,
                "  [concurrency adaptive {}..{} (ended at {}, at most {}), peak in flight {}]",
                a.lowest, a.highest, a.last, a.max, n.max_in_flight
            ),
        };
    }
}

impl RunReport {
    /// The entries listings did not list, the first five by path.
    fn render_not_listed(&self, s: &mut String) {
        use std::fmt::Write as _;
        let Some(first) = self.not_listed.first() else { return };
        let _ = writeln!(s, "Not listed by `{}`: {} entries that are not files:", first.node, self.not_listed.len());
        for e in self.not_listed.iter().take(5) {
            let _ = writeln!(s, "  {} ({})", e.path.escape_debug(), e.why);
        }
        if self.not_listed.len() > 5 {
            let _ = writeln!(s, "  ... and {} more (see --report)", self.not_listed.len() - 5);
        }
    }

    /// The human summary printed at the end of a run.
    pub fn render_text(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let rss = self.peak_rss_bytes.map(|b| format!(", peak memory {} MB", b / 1_000_000)).unwrap_or_default();
        let _ = writeln!(s, "Run summary: {} ({:.1}s{rss})", self.pipeline, self.duration_seconds);
        let width = self.nodes.iter().map(|n| n.name.len() + n.kind.len() + 3).max().unwrap_or(10);
        for n in &self.nodes {
            n.render_line(&mut s, width);
        }
        let shard = self.shard.map(|x| format!(" (shard {x})")).unwrap_or_default();
        let _ = writeln!(s, "Objects{shard}: {}", self.items.line());
        for e in &self.source_errors {
            let _ = writeln!(s, "Source `{}` stopped early: {}", e.node, e.error);
        }
        for e in &self.expectations {
            let _ = writeln!(s, "Expectation of `{}` not met: {}", e.node, e.reason);
        }
        self.render_not_listed(&mut s);
        // Many failures are read by cause; a few, object by object.
        let shown = if self.failures.len() > 20 { 5 } else { 20 };
        if self.failures.len() > 20 {
            let _ = writeln!(s, "Causes:");
            for c in self.causes.iter().filter(|c| !c.examples.is_empty()).take(5) {
                let node = if c.node.is_empty() { String::new() } else { format!("at `{}`: ", c.node) };
                let _ = writeln!(s, "  {} objects {node}{}", c.count, c.reason.escape_debug());
            }
        }
        for f in self.failures.iter().take(shown) {
            let what = if f.permanent { "refused" } else { "unprocessed" };
            let at = if f.node.is_empty() { String::new() } else { format!(" at `{}`", f.node) };
            let _ = writeln!(s, "  {what}: {}{at}: {}", f.key.escape_debug(), f.reason.escape_debug());
        }
        if self.failures.len() > shown {
            let _ = writeln!(s, "  ... and {} more (see --report)", self.failures.len() - shown);
        }
        if self.interrupted {
            let _ = writeln!(s, "The run was interrupted.");
        }
        if let Some(why) = &self.halted {
            let _ = writeln!(s, "The run stopped early: {why}. A rerun processes what is left.");
        }
        let _ = writeln!(
            s,
            "Outcome: {} (exit code {})",
            match self.outcome {
                Outcome::Complete => "complete",
                Outcome::CompleteWithProblems if self.items.refused > 0 => {
                    "PROBLEMS: refused objects are left at their source (a rerun refuses them again until fixed)"
                }
                Outcome::CompleteWithProblems if !self.expectations.is_empty() && self.items.problems == 0 => {
                    "PROBLEMS: a listing did not meet what the spec expects of it"
                }
                Outcome::CompleteWithProblems => "complete, with quarantined or dead-lettered items",
                Outcome::Incomplete => "INCOMPLETE: rerun to process what is missing",
            },
            self.exit_code
        );
        s
    }
}
