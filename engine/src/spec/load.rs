//! Reading a spec file into a [`Pipeline`]: parse (YAML or TOML, by extension),
//! interpolate the environment, check the top level, split nodes and stores, wire the DAG,
//! and let each kind check its own settings. All errors are collected and placed.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use indexmap::IndexMap;
use serde_json::Value;

use crate::api::store::Store;
use crate::api::{BuildContext, Built, NodeKind, PortDecl, Registry};
use crate::spec::dag::Dag;
use crate::spec::errors::{ErrorSink, SpecError, SpecErrors};
use crate::spec::interpolate::interpolate_value;
use crate::spec::locate::{LineIndex, Pos, SourceMap, SpecPath};
use crate::spec::schema::{check_ranges, coerce_scalars, config_schema};
use crate::spec::stores::Stores;
use crate::spec::{Defaults, NodeSpec, SpecHeader, StoreSpec};

/// A checked, built pipeline, ready to plan or run.
pub struct Pipeline {
    pub file: PathBuf,
    pub name: String,
    pub description: Option<String>,
    pub defaults: Defaults,
    pub metrics: crate::spec::Metrics,
    pub stores: IndexMap<String, (StoreSpec, Arc<dyn Store>)>,
    /// In topological order: every node comes after its inputs.
    pub nodes: Vec<PipelineNode>,
    pub dag: Dag,
    /// Paths of values that came from environment variables, for redaction.
    pub env_vars: BTreeMap<String, Vec<String>>,
    /// SHA-256 of the spec after interpolation: a saved plan is only run by the same spec
    /// with the same variables.
    pub spec_hash: String,
    /// The spec's `tests:` section, for `dqpipe test`.
    pub tests: Vec<Value>,
}

pub struct PipelineNode {
    pub spec: NodeSpec,
    pub kind: Arc<dyn NodeKind>,
    pub built: Built,
    /// Its output ports (`NodeKind::ports_for`).
    pub ports: Vec<PortDecl>,
}

/// Reads and checks `file`, looking variables up with `env`.
pub fn load_pipeline(
    file: &Path,
    registry: &Registry,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Pipeline, SpecErrors> {
    let text =
        std::fs::read_to_string(file).map_err(|e| one_error(file, None, format!("cannot read the spec: {e}")))?;
    load_pipeline_str(file, &text, registry, env)
}

/// As [`load_pipeline`], from text already read; `file` names it in errors and picks the
/// format by extension.
pub fn load_pipeline_str(
    file: &Path,
    text: &str,
    registry: &Registry,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Pipeline, SpecErrors> {
    let (mut doc, map) = parse(file, text)?;
    let mut errors = ErrorSink::new(file.to_path_buf(), &map, text);
    // YAML keeps the last of two equal keys; a spec never means that (a pasted node
    // would replace the real one).
    for (path, first, again) in &map.duplicates {
        let message = format!(
            "`{}` is written twice in this mapping (first at line {}, column {}); YAML would keep only this one: rename or remove one",
            path.to_string().rsplit('.').next().unwrap_or_default(),
            first.line,
            first.column
        );
        errors.push_at(*again, path, message);
    }
    // 1. Environment interpolation in every string value.
    let mut env_vars = BTreeMap::new();
    interpolate_value(&mut doc, &SpecPath::root(), env, &mut errors, &mut env_vars);
    let spec_hash = {
        let bytes = serde_json::to_vec(&doc).unwrap_or_default();
        let digest = ring::digest::digest(&ring::digest::SHA256, &bytes);
        format!("sha256:{}", digest.as_ref().iter().map(|b| format!("{b:02x}")).collect::<String>())
    };
    let found_early = errors.errors.len();
    let built = build(doc, registry, &mut errors);
    errors.drop_consequences(found_early);
    if !errors.is_empty() {
        let secrets = secret_values(&env_vars, env);
        for e in &mut errors.errors {
            // A value from the environment: say which variable to fix.
            if let Some(vars) = env_vars.get(&e.path) {
                e.message = format!("{} (the value comes from {})", e.message, vars.join(", "));
            }
            e.message = crate::spec::redact::scrub(&e.message, &secrets);
        }
        return Err(SpecErrors(errors.errors));
    }
    let Some((header, stores, nodes, dag)) = built else {
        return Err(one_error(file, None, "the pipeline's graph could not be built".into()));
    };
    Ok(Pipeline {
        file: file.to_path_buf(),
        name: header.name,
        description: header.description,
        defaults: header.defaults,
        metrics: header.metrics,
        tests: header.tests,
        stores,
        nodes,
        dag,
        env_vars,
        spec_hash,
    })
}

/// 2-6: the top level, the stores, the nodes' common keys, the wiring, each kind's own
/// settings. Errors are collected; `None` when there is no pipeline to return.
fn build(
    doc: Value,
    registry: &Registry,
    errors: &mut ErrorSink,
) -> Option<(SpecHeader, Stores, Vec<PipelineNode>, Dag)> {
    let (doc, inherited) = crate::spec::stores::take_scheme_defaults(doc, registry, errors);
    let header = read_header(doc, errors)?;
    let stores = crate::spec::stores::open_stores(&header, &inherited, registry, errors);
    let specs = split_nodes(&header, errors);
    // Kinds, wiring, ports, cycles.
    let dag = Dag::build(&specs, registry, errors);
    let nodes = build_nodes(&header, &specs, dag.as_ref(), &stores, registry, errors);
    Some((header, stores, nodes, dag?))
}

/// The top level, typed, and its checks.
fn read_header(mut doc: Value, errors: &mut ErrorSink) -> Option<SpecHeader> {
    let root = SpecPath::root();
    // `version: "1"` reads as 1, as every number written as text does (and as the schema
    // accepts it).
    let version_schema = serde_json::json!({"properties": {"version": {"type": "integer"}}});
    for (at, message) in coerce_scalars(&version_schema, &mut doc) {
        errors.push(&root.join_dotted(&at), message);
    }
    if let Some(defaults) = doc.get_mut("defaults") {
        for (at, message) in coerce_scalars(&config_schema::<Defaults>().to_value(), defaults) {
            errors.push(&root.key("defaults").join_dotted(&at), message);
        }
    }
    let header: SpecHeader = match serde_path_to_error::deserialize(doc) {
        Ok(h) => h,
        Err(e) => {
            let path = root.join_dotted(&e.path().to_string());
            let message = e.inner().to_string();
            let message = crate::api::suggest::unknown_field(&message, &[]).unwrap_or(message);
            let path = match crate::api::kind::unknown_field(&message) {
                Some(f) if !path.to_string().ends_with(&f) => path.key(&f),
                _ => path,
            };
            errors.push(&path, message);
            return None;
        }
    };
    if header.nodes.is_empty() {
        errors.push(
            &root.key("nodes"),
            "a pipeline needs nodes: at least a source (`kind: list`) and what it feeds; `nodes: {}` would do nothing",
        );
    }
    if header.version != 1 {
        errors
            .push(&root.key("version"), format!("unsupported version {}; this dqpipe reads version 1", header.version));
    }
    let (start, max) = (header.defaults.concurrency, header.defaults.max_concurrency);
    if start > max && start as u64 <= crate::spec::MAX_CONCURRENCY {
        let message = format!(
            "{start} is over `max_concurrency` ({max}), where an adaptive limit stops: lower it, or raise `max_concurrency`"
        );
        errors.push(&root.key("defaults").key("concurrency"), message);
    }
    let defaults = serde_json::to_value(&header.defaults).unwrap_or_default();
    for (at, message) in check_ranges(&config_schema::<Defaults>().to_value(), &defaults) {
        errors.push(&root.key("defaults").join_dotted(&at), message);
    }
    Some(header)
}

/// The nodes' common keys (`kind`, `input`, `concurrency`, ...); the rest is the kind's.
fn split_nodes(header: &SpecHeader, errors: &mut ErrorSink) -> Vec<NodeSpec> {
    let mut specs = Vec::new();
    for (name, value) in &crate::spec::hints::dedented_settings_folded(header, errors) {
        let path = SpecPath::root().key("nodes").key(name);
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            errors.push(&path, "node names are letters, digits, `_` and `-` (a `.` separates a node from its port)");
            continue;
        }
        if let Some(spec) = NodeSpec::from_value(name, value, &path, errors) {
            specs.push(spec);
        }
    }
    specs
}

/// Each kind checks its own settings (also when the wiring has errors, so that one pass
/// reports everything), in the order items flow when the graph is sound.
fn build_nodes(
    header: &SpecHeader,
    specs: &[NodeSpec],
    dag: Option<&Dag>,
    stores: &Stores,
    registry: &Registry,
    errors: &mut ErrorSink,
) -> Vec<PipelineNode> {
    let order: Vec<usize> = match dag {
        Some(d) => d.order.clone(),
        None => (0..specs.len()).collect(),
    };
    let declared: Vec<String> = header.stores.keys().cloned().collect();
    let mut writes = std::collections::HashMap::new();
    let mut rewrites: HashMap<String, Vec<String>> = HashMap::new();
    let mut in_place: HashMap<String, Vec<(String, String)>> = HashMap::new();
    let mut templates = std::collections::HashMap::new();
    let mut listings = crate::spec::overlap::Listings::new();
    let mut sets: crate::spec::fields::PortFields = HashMap::new();
    let mut nodes = Vec::new();
    for i in order {
        let spec = &specs[i];
        let Some(kind) = registry.kind(&spec.kind) else { continue };
        if spec.concurrency == Some(crate::spec::NodeConcurrency::Adaptive) && !kind.adaptive() {
            let message = format!(
                "`{}` does not wait on requests, so its concurrency cannot adapt: give it a number, or leave it out for `defaults.concurrency` (only fetch, put, delete and stamp adapt)",
                spec.kind
            );
            errors.push(&spec.path.key("concurrency"), message);
        }
        let mut config = Value::Object(spec.config.clone());
        let mut ranges = coerce_scalars(&kind.schema().to_value(), &mut config);
        ranges.extend(check_ranges(&kind.schema().to_value(), &config));
        for (at, message) in &ranges {
            errors.push(&spec.path.join_dotted(at), message.clone());
        }
        if !ranges.is_empty() {
            continue;
        }
        let ctx = BuildContext::new(&header.name, &spec.name, &header.defaults, stores, &declared);
        // Plans show the settings as the node reads them (`"5"` from the environment as 5).
        let mut typed = spec.clone();
        typed.config = config.as_object().cloned().unwrap_or_default();
        match kind.build(&ctx, config) {
            Ok(built) => {
                if matches!(built, Built::Processor(_)) {
                    writes.insert(spec.name.clone(), ctx.writes.take());
                    rewrites.insert(spec.name.clone(), ctx.rewrites.take());
                }
                templates.insert(spec.name.clone(), ctx.templates.take());
                listings.insert(spec.name.clone(), ctx.listed.take());
                in_place.insert(spec.name.clone(), ctx.in_place.take());
                let ports = kind.ports_for(&spec.config);
                sets.insert(spec.name.clone(), port_fields(&ports, ctx.sets.take()));
                nodes.push(PipelineNode { spec: typed, kind: kind.clone(), built, ports })
            }
            Err(e) if e.consequential => {}
            Err(e) => {
                let message = crate::api::suggest::unknown_field(&e.message, crate::spec::COMMON_NODE_KEYS);
                let (path, message) = (spec.path.join_dotted(&e.path), message.unwrap_or(e.message));
                match &e.within {
                    Some((text, line, column)) => errors.push_within(&path, text, (*line, *column), message),
                    None => errors.push(&path, message),
                }
            }
        }
    }
    // Whole-graph checks need every node built: a node that failed has its error already.
    if let (Some(dag), true) = (dag, nodes.len() == specs.len()) {
        let clean_ports = nodes.iter().filter_map(|n| Some((n.spec.name.clone(), n.kind.clean_port()?))).collect();
        let sources =
            nodes.iter().filter(|n| matches!(n.built, Built::Source(_))).map(|n| n.spec.name.clone()).collect();
        let found =
            crate::spec::graph::Found { writes, rewrites, in_place, templates, listings, sets, clean_ports, sources };
        crate::spec::graph::check(dag, specs, stores, &found, errors);
    }
    nodes
}

/// The fields each port's items gain: the port's declared `sets`, and those the node
/// added when it was built (`BuildContext::sets`: a `map`'s `fields`).
fn port_fields(ports: &[PortDecl], added: Vec<(&'static str, String)>) -> HashMap<&'static str, Vec<String>> {
    let mut fields: HashMap<&'static str, Vec<String>> = HashMap::new();
    for p in ports {
        fields.entry(p.name).or_default().extend(p.sets.iter().map(|s| s.to_string()));
    }
    for (port, field) in added {
        fields.entry(port).or_default().push(field);
    }
    fields
}

/// The values of the secret-named variables the spec uses (`SLACK_WEBHOOK`,
/// `S3_SRC_SECRET_ACCESS_KEY`), wherever they are used: an error that quotes a value (an
/// `endpoint` or `sse` set from such a variable by mistake) must not print it.
fn secret_values(env_vars: &BTreeMap<String, Vec<String>>, env: &dyn Fn(&str) -> Option<String>) -> Vec<String> {
    let mut names: Vec<&String> =
        env_vars.values().flatten().filter(|v| crate::spec::redact::is_secret_name(v)).collect();
    names.sort();
    names.dedup();
    names.into_iter().filter_map(|n| env(n)).collect()
}

fn one_error(file: &Path, pos: Option<Pos>, message: String) -> SpecErrors {
    SpecErrors(vec![SpecError { file: file.to_path_buf(), pos, path: String::new(), message }])
}

/// How deeply mappings and lists may nest in a spec (the NATS pipeline uses 4).
pub const MAX_DEPTH: usize = 64;

/// Parses the file into a generic tree, with a map of where each value is.
fn parse(file: &Path, text: &str) -> Result<(Value, SourceMap), SpecErrors> {
    let ext = file.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    if matches!(ext.as_str(), "yaml" | "yml") {
        if let Some(pos) = SourceMap::yaml_too_deep(text, MAX_DEPTH) {
            return Err(one_error(
                file,
                Some(pos),
                format!("nested more than {MAX_DEPTH} levels deep; a spec needs far fewer: flatten it"),
            ));
        }
    }
    let doc: Value = match ext.as_str() {
        "yaml" | "yml" => {
            // Errors about the whole document (alias expansion over its limit, a merge
            // key on a scalar) have no location of their own: they are placed at its start.
            let invalid = |e: serde_norway::Error| {
                let pos = e.location().map(|l| Pos { line: l.line(), column: l.column() });
                let (pos, message) = crate::spec::hints::yaml(text, pos, &strip_position(&e.to_string()));
                one_error(file, pos.or(Some(Pos { line: 1, column: 1 })), format!("invalid YAML: {message}"))
            };
            match serde_norway::from_str::<serde_norway::Value>(text) {
                // Merge keys (`<<: *s3`): settings written once and shared.
                Ok(mut yaml) => {
                    yaml.apply_merge().map_err(invalid)?;
                    serde_json::to_value(yaml).map_err(|e| {
                        let (pos, message) = crate::spec::hints::yaml(text, None, &e.to_string());
                        one_error(file, pos.or(Some(Pos { line: 1, column: 1 })), format!("invalid YAML: {message}"))
                    })?
                }
                // Equal keys in one mapping: read as before (the last wins), so that the
                // check of duplicate keys names both places.
                Err(e) if e.to_string().contains("duplicate entry") => serde_norway::from_str(text).map_err(invalid)?,
                Err(e) => return Err(invalid(e)),
            }
        }
        "toml" => toml::from_str(text).map_err(|e| {
            let pos = e.span().map(|s| LineIndex::new(text).pos(s.start)).or(Some(Pos { line: 1, column: 1 }));
            one_error(file, pos, format!("invalid TOML: {}", crate::spec::hints::toml(text, pos, e.message())))
        })?,
        _ => {
            return Err(one_error(
                file,
                None,
                "unknown spec format: the file name must end in .yaml, .yml or .toml".into(),
            ))
        }
    };
    if !doc.is_object() {
        return Err(one_error(
            file,
            Some(Pos { line: 1, column: 1 }),
            "a spec is a mapping with `version`, `name`, `stores` and `nodes`".into(),
        ));
    }
    let map = if ext == "toml" { SourceMap::from_toml(text) } else { SourceMap::from_yaml(text) };
    Ok((doc, map))
}

/// serde_norway appends " at line L column C" to messages; the position is printed first.
fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}
