//! The pipeline as a graph (petgraph): nodes wired by `input`, edges labelled by port.
//! Checks kinds, inputs, ports, routing of must-route ports and cycles, and renders the
//! graph as DOT or Mermaid.

use std::collections::HashMap;
use std::fmt::Write as _;

use petgraph::graph::{DiGraph, NodeIndex};

use crate::api::{Registry, Role};
use crate::spec::errors::ErrorSink;
use crate::spec::{InputRef, NodeSpec};

/// One wire: items leaving `from` on `port` go to `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edge {
    pub from: String,
    pub port: String,
    pub to: String,
}

#[derive(Debug, Clone)]
pub struct Dag {
    /// Node names, as in the spec.
    pub names: Vec<String>,
    /// Node kinds, by the same index.
    pub kinds: Vec<String>,
    /// Indices into `names` in topological order.
    pub order: Vec<usize>,
    pub edges: Vec<Edge>,
}

impl Dag {
    /// Wires and checks the nodes; `None` when the graph is not usable (errors pushed).
    pub fn build(specs: &[NodeSpec], registry: &Registry, errors: &mut ErrorSink<'_>) -> Option<Dag> {
        let before = errors.errors.len();
        let index: HashMap<&str, usize> = specs.iter().enumerate().map(|(i, s)| (s.name.as_str(), i)).collect();
        let mut edges = Vec::new();
        for spec in specs {
            check_role(spec, registry, errors);
            for input in &spec.inputs {
                let Some(edge) = resolve_input(spec, input, specs, &index, registry, errors) else { continue };
                if edges.contains(&edge) {
                    errors.push(&input.path, format!("`{}` is listed twice", input_label(&edge)));
                } else {
                    edges.push(edge);
                }
            }
        }
        check_routed(specs, &edges, registry, errors);
        let order = flow_order(specs, &edges, &index, errors)?;
        if errors.errors.len() > before {
            return None;
        }
        Some(Dag {
            names: specs.iter().map(|s| s.name.clone()).collect(),
            kinds: specs.iter().map(|s| s.kind.clone()).collect(),
            order,
            edges,
        })
    }

    /// Consumers of `node`'s `port`.
    pub fn consumers<'a>(&'a self, node: &'a str, port: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.edges.iter().filter(move |e| e.from == node && e.port == port).map(|e| e.to.as_str())
    }

    /// Graphviz DOT, through petgraph's renderer; edges are labelled with their port.
    pub fn to_dot(&self) -> String {
        let mut g: DiGraph<String, String> = DiGraph::new();
        let idx: HashMap<&str, NodeIndex> = self
            .order
            .iter()
            .map(|&i| (self.names[i].as_str(), g.add_node(format!("{} ({})", self.names[i], self.kinds[i]))))
            .collect();
        for e in &self.edges {
            g.add_edge(idx[e.from.as_str()], idx[e.to.as_str()], e.port.clone());
        }
        let dot = petgraph::dot::Dot::with_attr_getters(
            &g,
            &[petgraph::dot::Config::EdgeNoLabel, petgraph::dot::Config::NodeNoLabel],
            &|_, e| format!("label = {:?}", e.weight()),
            &|_, (_, label)| format!("label = {label:?} shape = box"),
        );
        format!("{dot:?}")
    }

    /// A Mermaid flowchart. Written by hand: petgraph has no Mermaid renderer, and the
    /// format is three line shapes.
    pub fn to_mermaid(&self) -> String {
        let mut s = String::from("flowchart LR\n");
        for &i in &self.order {
            let _ =
                writeln!(s, "    n{i}[\"{} ({})\"]", mermaid_escape(&self.names[i]), mermaid_escape(&self.kinds[i]));
        }
        let pos: HashMap<&str, usize> = self.names.iter().enumerate().map(|(i, n)| (n.as_str(), i)).collect();
        for e in &self.edges {
            let _ =
                writeln!(s, "    n{} -->|{}| n{}", pos[e.from.as_str()], mermaid_escape(&e.port), pos[e.to.as_str()]);
        }
        s
    }
}

/// The kind exists; a source takes no input, a processor needs one.
fn check_role(spec: &NodeSpec, registry: &Registry, errors: &mut ErrorSink<'_>) {
    match registry.kind(&spec.kind) {
        None => errors.push(
            &spec.path.key("kind"),
            format!(
                "unknown kind `{}`{}; the kinds are: {}",
                spec.kind,
                crate::api::suggest::did_you_mean(&spec.kind, &registry.kind_names()),
                registry.kind_names().join(", ")
            ),
        ),
        Some(k) if k.role() == Role::Source && !spec.inputs.is_empty() => {
            errors.push(&spec.inputs[0].path, format!("a `{}` node is a source and takes no `input`", spec.kind))
        }
        Some(k) if k.role() == Role::Processor && spec.inputs.is_empty() => errors.push(
            &spec.path,
            format!("missing `input`: a `{}` node needs the node (or `node.port`) it reads from", spec.kind),
        ),
        _ => {}
    }
}

/// The edge an `input` names: an existing node, and one of its ports (named, or its only one).
fn resolve_input(
    spec: &NodeSpec,
    input: &InputRef,
    specs: &[NodeSpec],
    index: &HashMap<&str, usize>,
    registry: &Registry,
    errors: &mut ErrorSink<'_>,
) -> Option<Edge> {
    let Some(&up) = index.get(input.node.as_str()) else {
        let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        let hint = crate::api::suggest::did_you_mean(&input.node, &names);
        errors.push(&input.path, format!("unknown node `{}`{hint}; the nodes are: {}", input.node, names.join(", ")));
        return None;
    };
    let upstream = &specs[up];
    let up_kind = registry.kind(&upstream.kind)?;
    let up_ports = up_kind.ports_for(&upstream.config);
    let port_names: Vec<&str> = up_ports.iter().map(|p| p.name).collect();
    let (name, kind, ports) = (&upstream.name, &upstream.kind, port_names.join(", "));
    let port = match &input.port {
        Some(p) if port_names.contains(&p.as_str()) => p.clone(),
        Some(p) => {
            let hint = crate::api::suggest::did_you_mean(p, &port_names);
            errors.push(&input.path, format!("node `{name}` ({kind}) has no port `{p}`{hint}; its ports are: {ports}"));
            return None;
        }
        None => match up_kind.default_port() {
            Some(p) => p.to_string(),
            None => {
                let first = port_names.first().copied().unwrap_or("out");
                errors.push(
                    &input.path,
                    format!("node `{name}` ({kind}) has several ports ({ports}); name one, e.g. `{name}.{first}`"),
                );
                return None;
            }
        },
    };
    Some(Edge { from: upstream.name.clone(), port, to: spec.name.clone() })
}

/// A port that must be routed may never drop items silently.
fn check_routed(specs: &[NodeSpec], edges: &[Edge], registry: &Registry, errors: &mut ErrorSink<'_>) {
    for spec in specs {
        let Some(kind) = registry.kind(&spec.kind) else { continue };
        for port in kind.ports_for(&spec.config).iter().filter(|p| p.must_route) {
            if !edges.iter().any(|e| e.from == spec.name && e.port == port.name) {
                errors.push(
                    &spec.path,
                    format!(
                        "output port `{}.{}` is not routed: its items ({}) must go somewhere; add a node with `input: {}.{}`",
                        spec.name, port.name, port.doc, spec.name, port.name
                    ),
                );
            }
        }
    }
}

/// The nodes in the order items flow (petgraph's topological sort), or every cycle.
fn flow_order(
    specs: &[NodeSpec],
    edges: &[Edge],
    index: &HashMap<&str, usize>,
    errors: &mut ErrorSink<'_>,
) -> Option<Vec<usize>> {
    let mut graph: DiGraph<usize, ()> = DiGraph::new();
    let idx: Vec<NodeIndex> = (0..specs.len()).map(|i| graph.add_node(i)).collect();
    for e in edges {
        graph.add_edge(idx[index[e.from.as_str()]], idx[index[e.to.as_str()]], ());
    }
    match petgraph::algo::toposort(&graph, None) {
        Ok(order) => Some(order.into_iter().map(|n| graph[n]).collect()),
        Err(_) => {
            for cycle in find_cycles(&graph) {
                let names: Vec<&str> = cycle.iter().map(|&n| specs[graph[n]].name.as_str()).collect();
                let first = &specs[graph[cycle[0]]];
                errors.push(&first.path, format!("cycle: {} -> {}", names.join(" -> "), names[0]));
            }
            None
        }
    }
}

fn mermaid_escape(s: &str) -> String {
    s.replace('"', "#quot;").replace('|', "#124;")
}

fn input_label(e: &Edge) -> String {
    format!("{}.{}", e.from, e.port)
}

/// Each cycle as a list of nodes in order, from the strongly connected components.
fn find_cycles(graph: &DiGraph<usize, ()>) -> Vec<Vec<NodeIndex>> {
    let mut out = Vec::new();
    for scc in petgraph::algo::tarjan_scc(graph) {
        let self_loop = scc.len() == 1 && graph.contains_edge(scc[0], scc[0]);
        if scc.len() < 2 && !self_loop {
            continue;
        }
        let mut members = scc.clone();
        members.sort();
        // The cycle to print: the smallest member, then any simple path back to it.
        let start = members[0];
        let path = if self_loop {
            vec![start]
        } else {
            graph
                .neighbors(start)
                .filter(|n| members.contains(n) && *n != start)
                .find_map(|n| {
                    petgraph::algo::all_simple_paths::<Vec<NodeIndex>, _, std::hash::RandomState>(
                        graph, n, start, 0, None,
                    )
                    .next()
                })
                .map(|mut p| {
                    p.pop(); // the path ends back at `start`
                    let mut full = vec![start];
                    full.extend(p);
                    full
                })
                .unwrap_or(members.clone())
        };
        out.push(path);
    }
    out
}
