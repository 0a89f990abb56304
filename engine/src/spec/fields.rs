//! Templates checked against the fields that reach them: each port declares the item
//! fields it sets ([`crate::api::PortDecl::sets`]); a template variable must be set on
//! every path from a source to the node that uses it. `{{ nme }}` for `{{ name }}`, or
//! `{{ msg_date }}` on the quarantine (items there were never transformed), is an error
//! at `validate`, naming the variable and the path where it is missing.

use std::collections::{BTreeSet, HashMap};

use crate::spec::dag::Dag;
use crate::spec::errors::ErrorSink;
use crate::spec::NodeSpec;

/// What a node set on each of its ports: node -> port -> fields.
pub(crate) type PortFields = HashMap<String, HashMap<&'static str, Vec<String>>>;

/// At most this many paths into one node are followed (pipelines have a handful).
const MAX_PATHS: usize = 1024;

/// Checks each node's templates (`templates`: node -> (field, variables)).
pub(crate) fn check_templates(
    dag: &Dag,
    specs: &[NodeSpec],
    templates: &HashMap<String, Vec<(String, Vec<String>)>>,
    sets: &PortFields,
    errors: &mut ErrorSink<'_>,
) {
    for spec in specs {
        let Some(used) = templates.get(&spec.name) else { continue };
        let paths = paths_into(dag, &spec.name, sets);
        for (field, vars) in used {
            for var in vars {
                let Some((path, have)) = paths.iter().find(|(_, have)| !have.contains(var.as_str())) else {
                    continue;
                };
                let known: Vec<&str> = have.iter().copied().collect();
                let hint = match crate::api::suggest::closest(var, &known) {
                    Some(k) => format!("did you mean `{k}`? "),
                    None => String::new(),
                };
                errors.push(
                    &spec.path.key(field),
                    format!(
                        "`{{{{ {var} }}}}` is not set on items that reach `{}` by {}; {hint}the fields there are: {}",
                        spec.name,
                        path.join(" -> "),
                        known.join(", ")
                    ),
                );
            }
        }
    }
}

/// Every path from a source to `node` (as `node.port` steps), with the fields set along it.
fn paths_into<'s>(dag: &Dag, node: &str, sets: &'s PortFields) -> Vec<(Vec<String>, BTreeSet<&'s str>)> {
    let mut done = Vec::new();
    let mut stack: Vec<(String, Vec<String>, BTreeSet<&'s str>)> =
        vec![(node.to_string(), vec![node.to_string()], BTreeSet::new())];
    while let Some((head, path, have)) = stack.pop() {
        let inputs: Vec<_> = dag.edges.iter().filter(|e| e.to == head).collect();
        if inputs.is_empty() || done.len() >= MAX_PATHS {
            done.push((path, have));
            continue;
        }
        for e in inputs {
            if path.iter().any(|p| p == &e.from || p.starts_with(&format!("{}.", e.from))) {
                continue;
            }
            let mut have = have.clone();
            have.extend(
                sets.get(&e.from).and_then(|p| p.get(e.port.as_str())).into_iter().flatten().map(String::as_str),
            );
            let step = if e.port == "out" { e.from.clone() } else { format!("{}.{}", e.from, e.port) };
            let mut longer = vec![step];
            longer.extend(path.iter().cloned());
            stack.push((e.from.clone(), longer, have));
        }
    }
    done
}
