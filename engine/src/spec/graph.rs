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
}
