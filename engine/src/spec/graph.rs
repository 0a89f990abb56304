//! The checks that need the whole graph built: trusted stores, templates against the
//! fields that reach them, writes inside listings.

use std::collections::HashMap;

use crate::spec::dag::Dag;
use crate::spec::errors::ErrorSink;
use crate::spec::stores::Stores;
use crate::spec::NodeSpec;

/// What building the nodes found, for the whole-graph checks: the stores each node writes
/// (and those it writes back in place), its templates, listings and fields.
pub(crate) struct Found {
    pub writes: HashMap<String, Vec<String>>,
    pub rewrites: HashMap<String, Vec<String>>,
    /// Per node: the stores it acts on where its objects were listed (field, store).
    pub in_place: HashMap<String, Vec<(String, String)>>,
    pub templates: HashMap<String, Vec<(String, Vec<String>)>>,
    pub listings: crate::spec::overlap::Listings,
    pub sets: crate::spec::fields::PortFields,
    /// Each scanner node's clean port.
    pub clean_ports: HashMap<String, &'static str>,
    /// The source nodes.
    pub sources: Vec<String>,
}

/// The checks that need every node: trusted stores written only from a scanner's clean
/// port, templates against the fields that reach them, no write inside a listing.
pub(crate) fn check(dag: &Dag, specs: &[NodeSpec], stores: &Stores, found: &Found, errors: &mut ErrorSink) {
    let trusted: Vec<String> = stores.iter().filter(|(_, (s, _))| s.trusted).map(|(n, _)| n.clone()).collect();
    let mut writes = found.writes.clone();
    for (node, stores) in &found.rewrites {
        writes.entry(node.clone()).or_default().extend(stores.iter().cloned());
    }
    crate::spec::trust::check_trusted_writes(dag, specs, &trusted, &writes, &found.clean_ports, &found.sources, errors);
    crate::spec::fields::check_templates(dag, specs, &found.templates, &found.sets, errors);
    let by_name = stores.iter().map(|(n, (s, _))| (n.clone(), s)).collect();
    crate::spec::overlap::check_writes_outside_listings(specs, &by_name, &found.writes, &found.listings, errors);
    check_in_place(dag, specs, found, errors);
}

/// A node that acts where its objects were listed (a `delete`, a `stamp`) must take them
/// from sources that list that store: one listing another store would have every item
/// refused at run time.
fn check_in_place(dag: &Dag, specs: &[NodeSpec], found: &Found, errors: &mut ErrorSink) {
    for spec in specs {
        for (field, store) in found.in_place.get(&spec.name).into_iter().flatten() {
            for source in sources_upstream(dag, &spec.name, &found.sources) {
                let listed: Vec<&str> =
                    found.listings.get(&source).into_iter().flatten().map(|(s, _)| s.as_str()).collect();
                if listed.is_empty() || listed.contains(&store.as_str()) {
                    continue;
                }
                errors.push(
                    &spec.path.key(field),
                    format!(
                        "`{}` acts on its objects where they were listed, in store `{store}`, but items reach it \
                         from `{source}`, which lists `{}`: set `{field}: {}`, or take the items from a source \
                         that lists `{store}`",
                        spec.name,
                        listed.join("`, `"),
                        listed[0]
                    ),
                );
            }
        }
    }
}

/// The sources some path leads from to `node`.
fn sources_upstream(dag: &Dag, node: &str, sources: &[String]) -> Vec<String> {
    let (mut seen, mut stack, mut found) = (vec![node.to_string()], vec![node.to_string()], Vec::new());
    while let Some(n) = stack.pop() {
        if sources.contains(&n) {
            found.push(n);
            continue;
        }
        for e in dag.edges.iter().filter(|e| e.to == n) {
            if !seen.contains(&e.from) {
                seen.push(e.from.clone());
                stack.push(e.from.clone());
            }
        }
    }
    found.sort();
    found
}
