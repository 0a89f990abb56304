//! The static plan: what `dqpipe plan` prints before any object is listed: the stores,
//! the nodes in the order items flow through them, each with its resolved settings
//! (secrets redacted), its concurrency and where each port leads.

pub mod file;

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::spec::load::Pipeline;
use crate::spec::redact::{redact_url, redact_value};
use crate::spec::Concurrency;

#[derive(Debug, Serialize)]
pub struct StaticPlan {
    pub pipeline: String,
    /// When the run stops itself (`defaults.halt`, described).
    pub halt: String,
    pub stores: Vec<PlanStore>,
    pub nodes: Vec<PlanNode>,
}

#[derive(Debug, Serialize)]
pub struct PlanStore {
    pub name: String,
    pub url: String,
    pub options: serde_json::Value,
}

#[derive(Debug, Serialize)]
pub struct PlanNode {
    pub name: String,
    pub kind: String,
    pub source: bool,
    /// How many items it works on at once: fixed, or where an adaptive limit starts.
    pub concurrency: usize,
    /// An adaptive limit's ceiling (`defaults.max_concurrency`); absent when fixed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrency_max: Option<usize>,
    pub inputs: Vec<String>,
    pub config: serde_json::Value,
    /// port -> nodes it feeds (empty: the items' path ends there).
    pub ports: Vec<(String, Vec<String>)>,
}

/// The settings a store uses: its scheme's table (`s3:` for an `s3://` URL) and plain
/// settings, without the tables of other schemes and without empty values.
fn store_options_in_use(spec: &crate::spec::StoreSpec) -> serde_json::Value {
    let scheme = spec.url.split_once("://").map(|(s, _)| s).unwrap_or("");
    let mut out = serde_json::Map::new();
    for (k, v) in &spec.options {
        match v {
            serde_json::Value::Object(table) if k == scheme => {
                let used: serde_json::Map<_, _> =
                    table.iter().filter(|(_, v)| v.as_str() != Some("")).map(|(k, v)| (k.clone(), v.clone())).collect();
                if !used.is_empty() {
                    out.insert(k.clone(), serde_json::Value::Object(used));
                }
            }
            serde_json::Value::Object(_) => {}
            serde_json::Value::String(s) if s.is_empty() => {}
            _ => {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    serde_json::Value::Object(out)
}

/// One object in a plan: what a run would do with it.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedObject {
    /// The source node that listed it.
    pub source: String,
    pub key: String,
    pub size: u64,
    pub etag: Option<String>,
    pub status: PlanStatus,
    /// Deleted at the source once done (sources that delete, such as SFTP).
    pub delete_at_source: bool,
    /// The nodes it would pass, in order.
    pub route: Vec<String>,
    /// Where it would be written.
    pub writes: Vec<crate::api::PlannedWrite>,
    pub notes: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlanStatus {
    /// A run would process it.
    Process,
    /// An earlier run finished it; a run would skip it.
    Done,
    /// Planning it failed (a `--deep` read, a key that cannot be made).
    Error,
}

impl StaticPlan {
    /// `conc`: each node's concurrency ([`Pipeline::effective_concurrency`]).
    pub fn new(p: &Pipeline, conc: &[Concurrency], env_vars: &BTreeMap<String, Vec<String>>) -> Self {
        let stores = p
            .stores
            .iter()
            .map(|(name, (spec, store))| PlanStore {
                name: name.clone(),
                url: redact_url(&store.display_url()),
                options: redact_value(&store_options_in_use(spec), &spec.path.to_string(), env_vars),
            })
            .collect();
        let nodes = p
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| PlanNode {
                name: n.spec.name.clone(),
                kind: n.spec.kind.clone(),
                source: matches!(n.built, crate::api::Built::Source(_)),
                concurrency: conc[i].start(),
                concurrency_max: match conc[i] {
                    Concurrency::Adaptive { max, .. } => Some(max),
                    Concurrency::Fixed(_) => None,
                },
                inputs: n
                    .spec
                    .inputs
                    .iter()
                    .map(|r| match &r.port {
                        Some(port) => format!("{}.{port}", r.node),
                        None => r.node.clone(),
                    })
                    .collect(),
                config: redact_value(
                    &serde_json::Value::Object(n.spec.config.clone()),
                    &n.spec.path.to_string(),
                    env_vars,
                ),
                ports: n
                    .ports
                    .iter()
                    .map(|d| (d.name.to_string(), p.dag.consumers(&n.spec.name, d.name).map(String::from).collect()))
                    .collect(),
            })
            .collect();
        StaticPlan { pipeline: p.name.clone(), halt: p.defaults.halt.describe(), stores, nodes }
    }

    pub fn render_text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "Pipeline: {}", self.pipeline);
        let _ = writeln!(s, "Stops itself when: {}", self.halt);
        let _ = writeln!(s, "\nStores:");
        let w = self.stores.iter().map(|x| x.name.len()).max().unwrap_or(0);
        for st in &self.stores {
            let _ = write!(s, "  {:<w$}  {}", st.name, st.url);
            if let Some(o) = st.options.as_object().filter(|o| !o.is_empty()) {
                for (k, v) in o {
                    let _ = write!(s, "  {k}={v}");
                }
            }
            let _ = writeln!(s);
        }
        let _ = writeln!(s, "\nNodes, in the order items flow:");
        for (i, n) in self.nodes.iter().enumerate() {
            let role = if n.source {
                "source".to_string()
            } else {
                let conc = match n.concurrency_max {
                    Some(max) => Concurrency::Adaptive { start: n.concurrency, max },
                    None => Concurrency::Fixed(n.concurrency),
                };
                format!("concurrency {conc}, input: {}", n.inputs.join(", "))
            };
            let _ = writeln!(s, "  {}. {} ({}), {}", i + 1, n.name, n.kind, role);
            if let Some(o) = n.config.as_object() {
                for (k, v) in o {
                    let _ = writeln!(s, "       {k}: {v}");
                }
            }
            for (port, to) in &n.ports {
                let to = if to.is_empty() { "(end)".to_string() } else { to.join(", ") };
                let _ = writeln!(s, "       -> {port}: {to}");
            }
        }
        s
    }
}

/// The first lines of a plan file (`plan --format json`, `plan --out`); `objects` and
/// `totals` follow. The shape is documented in the README ("Plans") and versioned by
/// `format`.
#[derive(Debug, Serialize)]
pub struct PlanHeader<'a> {
    pub format: &'static str,
    pub pipeline: &'a str,
    pub spec: String,
    pub spec_hash: &'a str,
    pub created_at: String,
    pub deep: bool,
    /// Made with `--reprocess`: objects earlier runs finished are planned too, and
    /// `run --plan` processes them.
    pub reprocess: bool,
    pub shard: Option<crate::api::Shard>,
    pub stores: &'a [PlanStore],
    pub nodes: &'a [PlanNode],
}

pub const PLAN_FORMAT: &str = "dqpipe-plan/1";

/// What a plan adds up to.
#[derive(Debug, Default, Clone, Serialize)]
pub struct PlanTotals {
    pub to_process: u64,
    pub bytes: u64,
    pub already_done: u64,
    pub errors: u64,
    pub to_delete: u64,
    /// Objects each writing node would write, by `store (node)`: the totals per route.
    pub writes: std::collections::BTreeMap<String, u64>,
}

impl PlanTotals {
    pub fn add(&mut self, o: &PlannedObject) {
        match o.status {
            PlanStatus::Process => {
                self.to_process += 1;
                self.bytes += o.size;
            }
            PlanStatus::Done => self.already_done += 1,
            PlanStatus::Error => self.errors += 1,
        }
        if o.delete_at_source {
            self.to_delete += 1;
        }
        if o.status == PlanStatus::Process {
            for w in &o.writes {
                *self.writes.entry(format!("{} ({})", w.store, w.node)).or_default() += 1;
            }
        }
    }

    /// `Plan: 4,998 objects to process (21.3 MB), 2 already done, 0 to delete.`
    pub fn render(&self) -> String {
        let mut s = format!(
            "Plan: {} object{} to process ({}), {} already done, {} to delete",
            thousands(self.to_process),
            if self.to_process == 1 { "" } else { "s" },
            human_size(self.bytes),
            thousands(self.already_done),
            thousands(self.to_delete)
        );
        if self.errors > 0 {
            let _ = write!(s, ", {} could not be planned", thousands(self.errors));
        }
        s.push('.');
        // Most written first: `2,990 -> internal (write), 10 -> deadletter (dead_letter)`.
        let mut routes: Vec<(&String, &u64)> = self.writes.iter().collect();
        routes.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        if !routes.is_empty() {
            let list: Vec<String> = routes.iter().map(|(to, n)| format!("{} -> {to}", thousands(**n))).collect();
            let _ = write!(s, "\nWrites: {}.", list.join(", "));
        }
        s
    }
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A size in the unit that reads best: `627 B`, `17 KB`, `21.3 MB`, `1.2 GB` (decimal).
fn human_size(bytes: u64) -> String {
    let b = bytes as f64;
    match bytes {
        0..1_000 => format!("{bytes} B"),
        1_000..1_000_000 => format!("{:.0} KB", b / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1} MB", b / 1e6),
        _ => format!("{:.1} GB", b / 1e9),
    }
}

impl PlannedObject {
    /// One object in the text plan: `+` to process, `=` already done, `!` not plannable.
    pub fn render_text(&self) -> String {
        let mut s = String::new();
        let mark = match self.status {
            PlanStatus::Process => '+',
            PlanStatus::Done => '=',
            PlanStatus::Error => '!',
        };
        let _ = write!(s, "  {mark} {} ({} B)", self.key.escape_debug(), self.size);
        match self.status {
            PlanStatus::Done => s.push_str("  already done"),
            PlanStatus::Error => {
                let _ = write!(s, "  {}", self.error.as_deref().unwrap_or("").escape_debug());
            }
            PlanStatus::Process => {
                for w in &self.writes {
                    match &w.key {
                        Some(k) => {
                            let _ = write!(s, "\n      {} -> {}:{}", w.node, w.store, k.escape_debug());
                        }
                        None => {
                            let _ = write!(
                                s,
                                "\n      {} -> {}:<needs {} from the content: --deep>",
                                w.node,
                                w.store,
                                w.needs.join(", ")
                            );
                        }
                    }
                }
                if self.writes.is_empty() {
                    let _ = write!(s, "\n      route: {} (writes nothing)", self.route.join(" -> "));
                }
                if self.delete_at_source {
                    s.push_str("\n      then deleted at the source");
                }
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn totals_read_like_terraform() {
        let t = super::PlanTotals {
            to_process: 4_998,
            bytes: 21_300_000,
            already_done: 2,
            errors: 0,
            to_delete: 0,
            ..Default::default()
        };
        assert_eq!(t.render(), "Plan: 4,998 objects to process (21.3 MB), 2 already done, 0 to delete.");
        let sizes = [0, 627, 17_200, 21_300_000, 1_250_000_000].map(super::human_size);
        assert_eq!(sizes, ["0 B", "627 B", "17 KB", "21.3 MB", "1.2 GB"]);
    }
}
