//! The trusted-store rule: a store marked `trusted: true` (the internal store of the NATS
//! pipelines) receives only what a scanner passed as clean. Every path from a source to a
//! node that writes into it must go through a scanner's clean port
//! ([`crate::api::NodeKind::clean_port`]); otherwise `validate` refuses the spec and
//! prints the offending path.

use std::collections::HashMap;

use crate::spec::dag::Dag;
use crate::spec::errors::ErrorSink;
use crate::spec::NodeSpec;

/// Checks every writer of a trusted store (`trusted` names them). `writes` maps a node to
/// the stores it writes to; `clean_ports` a scanner node to its clean port; `sources`
/// names the source nodes.
pub(crate) fn check_trusted_writes(
    dag: &Dag,
    specs: &[NodeSpec],
    trusted: &[String],
    writes: &HashMap<String, Vec<String>>,
    clean_ports: &HashMap<String, &'static str>,
    sources: &[String],
    errors: &mut ErrorSink<'_>,
) {
    for spec in specs {
        for store in writes.get(&spec.name).into_iter().flatten() {
            if !trusted.contains(store) {
                continue;
            }
            if let Some(path) = unscanned_path(dag, &spec.name, clean_ports, sources) {
                errors.push(
                    &spec.path.key("store"),
                    format!(
                        "store `{store}` is trusted: what is written there must have passed a scanner's clean port, \
                         but items reach `{}` by {} without a scan; read from a scanner's clean port \
                         (e.g. `input: scan.clean`) or write elsewhere",
                        spec.name,
                        path.join(" -> ")
                    ),
                );
            }
        }
    }
}

/// A path from a source to `node` that does not pass a scanner's clean port, if any:
/// a search backwards from `node` that does not cross clean edges.
fn unscanned_path(
    dag: &Dag,
    node: &str,
    clean_ports: &HashMap<String, &'static str>,
    sources: &[String],
) -> Option<Vec<String>> {
    let mut stack = vec![vec![node.to_string()]];
    while let Some(path) = stack.pop() {
        let head = &path[0];
        if sources.contains(head) {
            return Some(path);
        }
        for e in dag.edges.iter().filter(|e| &e.to == head) {
            let clean = clean_ports.get(&e.from).is_some_and(|p| *p == e.port);
            if clean || path.contains(&e.from) {
                continue;
            }
            let mut longer = vec![e.from.clone()];
            longer.extend(path.iter().cloned());
            stack.push(longer);
        }
    }
    None
}
