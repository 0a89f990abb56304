//! The static plan: what `dqpipe plan` prints before any object is listed: the stores,
//! the nodes in the order items flow through them, each with its resolved settings
//! (secrets redacted), its concurrency and where each port leads.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::executor::RunOptions;
use crate::load::Pipeline;
use crate::redact::{redact_url, redact_value};

#[derive(Debug, Serialize)]
pub struct StaticPlan {
    pub pipeline: String,
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
    pub concurrency: usize,
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

impl StaticPlan {
    pub fn new(p: &Pipeline, opts: &RunOptions, env_vars: &BTreeMap<String, Vec<String>>) -> Self {
        let conc = p.effective_concurrency(opts);
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
                source: matches!(n.built, crate::node::Built::Source(_)),
                concurrency: conc[i],
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
                    .kind
                    .ports()
                    .iter()
                    .map(|d| (d.name.to_string(), p.dag.consumers(&n.spec.name, d.name).map(String::from).collect()))
                    .collect(),
            })
            .collect();
        StaticPlan { pipeline: p.name.clone(), stores, nodes }
    }

    pub fn render_text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "Pipeline: {}", self.pipeline);
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
                format!("concurrency {}, input: {}", n.concurrency, n.inputs.join(", "))
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
