//! Reading test cases as specs are read: every mistake at `file:line:column`, with a
//! did-you-mean for a misspelt field, and the mistakes a case can only make against its
//! spec (a stub or a route naming no such node) found when the cases load, once each, not
//! as a failure of every case.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use dqpipe_engine::spec::locate::{SourceMap, SpecPath};
use serde::Deserialize;
use serde_json::Value;

use super::{tests_file, Case, Suite};

/// Where a case was written: its file, that file's positions, and the case's path in it.
pub struct Origin {
    file: PathBuf,
    map: Arc<SourceMap>,
    path: SpecPath,
}

impl Origin {
    /// `file:line:column: path` of `sub` below the case (`expect.a.json.route`).
    fn at(&self, sub: &[&str]) -> String {
        let path = sub.iter().fold(self.path.clone(), |p, k| p.key(k));
        let pos = self.map.locate(&path).map(|p| format!(":{}:{}", p.line, p.column)).unwrap_or_default();
        format!("{}{pos}: {path}", self.file.display())
    }
}

/// The cases of `spec`: its `tests:` section (`inline`) and its tests file, if any.
pub fn suite(spec: &Path, inline: &[Value]) -> Result<Suite, String> {
    let mut cases = Vec::new();
    let mut origins = Vec::new();
    if !inline.is_empty() {
        let text = std::fs::read_to_string(spec).map_err(|e| format!("{}: {e}", spec.display()))?;
        let map = Arc::new(if spec.extension().is_some_and(|e| e == "toml") {
            SourceMap::from_toml(&text)
        } else {
            SourceMap::from_yaml(&text)
        });
        for (i, v) in inline.iter().enumerate() {
            let origin =
                Origin { file: spec.to_path_buf(), map: map.clone(), path: SpecPath::root().key("tests").index(i) };
            cases.push(read_case(v.clone(), &origin)?);
            origins.push(origin);
        }
    }
    let file = tests_file(spec);
    if file.exists() {
        let text = std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
        let map = Arc::new(SourceMap::from_yaml(&text));
        for (i, v) in cases_in(&file, &text)?.into_iter().enumerate() {
            let origin = Origin { file: file.clone(), map: map.clone(), path: SpecPath::root().key("tests").index(i) };
            cases.push(read_case(v, &origin)?);
            origins.push(origin);
        }
    }
    let base = spec.parent().map(Path::to_path_buf).unwrap_or_default();
    Ok(Suite { spec: spec.to_path_buf(), cases, base, origins })
}

/// The list under `tests:` of a tests file, or what is wrong with its shape.
fn cases_in(file: &Path, text: &str) -> Result<Vec<Value>, String> {
    let doc: Value = serde_norway::from_str(text).map_err(|e| match e.location() {
        Some(l) => format!("{}:{}:{}: {e}", file.display(), l.line(), l.column()),
        None => format!("{}: {e}", file.display()),
    })?;
    let shape = || {
        format!(
            "{}:1:1: a tests file is a mapping whose `tests:` holds a list of cases (`tests:` then `  - name: ...`)",
            file.display()
        )
    };
    let Value::Object(mut top) = doc else { return Err(shape()) };
    if let Some(other) = top.keys().find(|k| *k != "tests") {
        let hint = dqpipe_engine::api::suggest::did_you_mean(other, &["tests"]);
        return Err(format!("{}:1:1: unknown field `{other}`{hint}; a tests file holds `tests:` only", file.display()));
    }
    match top.remove("tests") {
        Some(Value::Array(cases)) => Ok(cases),
        _ => Err(shape()),
    }
}

/// One case, typed; an error names the place and, for a misspelt field, the fields there.
fn read_case(v: Value, origin: &Origin) -> Result<Case, String> {
    #[derive(Deserialize)]
    #[serde(transparent)]
    struct One(Case);
    serde_path_to_error::deserialize::<_, One>(v).map(|c| c.0).map_err(|e| {
        let segments: Vec<String> = e
            .path()
            .iter()
            .filter_map(|s| match s {
                serde_path_to_error::Segment::Map { key } => Some(key.clone()),
                serde_path_to_error::Segment::Seq { index } => Some(index.to_string()),
                _ => None,
            })
            .collect();
        let message = e.inner().to_string();
        let message = dqpipe_engine::api::suggest::unknown_field(&message, &[]).unwrap_or(message);
        let sub: Vec<&str> = segments.iter().map(String::as_str).collect();
        format!("{}: {message}", origin.at(&sub))
    })
}

/// What the cases name that the spec has not: a stub for no node, a route that is no
/// `put`, `stamp`, `batch` or `delete` node. One error each, at its place.
pub fn check(suite: &Suite, nodes: &[(String, String)]) -> Vec<String> {
    let names: Vec<&str> = nodes.iter().map(|(n, _)| n.as_str()).collect();
    let sinks: Vec<&str> = nodes
        .iter()
        .filter(|(_, k)| ["put", "stamp", "batch", "delete"].contains(&k.as_str()))
        .map(|(n, _)| n.as_str())
        .collect();
    let mut errors = Vec::new();
    for (case, origin) in suite.cases.iter().zip(&suite.origins) {
        for node in case.stubs.keys().filter(|n| !names.contains(&n.as_str())) {
            let hint = dqpipe_engine::api::suggest::did_you_mean(node, &names);
            errors.push(format!("{}: the spec has no node `{node}`{hint}", origin.at(&["stubs", node])));
        }
        for (key, want) in &case.expect {
            let Some(route) = &want.route else { continue };
            for r in route.names().iter().filter(|r| !sinks.contains(&r.as_str())) {
                let hint = dqpipe_engine::api::suggest::did_you_mean(r, &sinks);
                errors.push(format!(
                    "{}: `{r}` is not a `put`, `stamp`, `batch` or `delete` node of the spec{hint}; routes name those (or `none`)",
                    origin.at(&["expect", key, "route"])
                ));
            }
        }
    }
    errors
}
