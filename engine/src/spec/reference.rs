//! The reference a spec author reads (`dqpipe kinds`, `dqpipe explain`, `docs/kinds/`):
//! every kind's settings, ports and example, and the stores' and defaults' settings, read
//! from the same registry and JSON Schemas that read specs, so the reference cannot say
//! other than the loader does. Data only: the CLI renders it as text, JSON or Markdown.

use serde::Serialize;
use serde_json::Value;

use crate::api::{NodeKind, Registry, Role};
use crate::spec::schema::config_schema;
use crate::spec::SpecHeader;

/// One kind, as its reference page shows it.
#[derive(Debug, Clone, Serialize)]
pub struct KindDoc {
    pub name: String,
    pub summary: String,
    /// `source` (makes items: has no `input`) or `processor`.
    pub role: &'static str,
    pub settings: Vec<SettingDoc>,
    pub ports: Vec<PortDoc>,
    /// Nodes of a spec's `nodes:` that show the kind at work, checked by a test to
    /// validate as they are.
    pub example: String,
}

/// One setting, at its dotted path below the node, store or `defaults` (`retry.attempts`).
#[derive(Debug, Clone, Serialize)]
pub struct SettingDoc {
    pub name: String,
    /// `string`, `integer`, `boolean`, `list of string`, `one of: route, drop`, `table`.
    #[serde(rename = "type")]
    pub type_name: String,
    pub required: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
    /// `1 to 4096`, for numbers with bounds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub range: Option<String>,
    pub description: String,
}

/// One output port of a kind.
#[derive(Debug, Clone, Serialize)]
pub struct PortDoc {
    pub name: String,
    /// `validate` refuses a spec that leaves it unrouted.
    pub must_route: bool,
    /// Items on it are problems: a run that routed any exits 3.
    pub problem: bool,
    /// Unrouted, its items are dropped on purpose, counted `dropped`.
    pub drops: bool,
    /// The fields its items gain.
    pub sets: Vec<String>,
    pub description: String,
}

/// Every kind, in the registry's order.
pub fn kinds(registry: &Registry) -> Vec<KindDoc> {
    registry.kinds.iter().map(|k| kind(k.as_ref())).collect()
}

/// One kind's reference: its `input` first, then its own settings, then the other keys
/// every node of its role has ([`crate::spec::schema::node_keys`]).
pub fn kind(k: &dyn NodeKind) -> KindDoc {
    let (input, common): (Vec<SettingDoc>, Vec<SettingDoc>) =
        settings_of(&crate::spec::schema::node_keys(k.role()), "").into_iter().partition(|s| s.name == "input");
    let settings: Vec<SettingDoc> =
        input.into_iter().chain(settings_of(&k.schema().to_value(), "")).chain(common).collect();
    let ports = k
        .ports()
        .iter()
        .map(|p| PortDoc {
            name: p.name.into(),
            must_route: p.must_route,
            problem: p.problem,
            drops: p.drops,
            sets: p.sets.iter().map(|s| s.to_string()).collect(),
            description: p.doc.into(),
        })
        .collect();
    KindDoc {
        name: k.name().into(),
        summary: k.summary().into(),
        role: match k.role() {
            Role::Source => "source",
            Role::Processor => "processor",
        },
        settings,
        ports,
        example: k.example().trim_end().to_string(),
    }
}

/// The settings under `defaults:`.
pub fn defaults() -> Vec<SettingDoc> {
    let header = config_schema::<SpecHeader>().to_value();
    settings_of(&header["properties"]["defaults"], "")
}

/// The settings of a store entry, every scheme's table included (`s3.endpoint`).
pub fn stores(registry: &Registry) -> Vec<SettingDoc> {
    let mut out = settings_of(&registry.stores.schema().to_value(), "");
    out.push(SettingDoc {
        name: "trusted".into(),
        type_name: "boolean".into(),
        required: false,
        default: Some(Value::Bool(false)),
        range: None,
        description: "Only what a scanner passed as clean may be written here: validate refuses a path into \
                      this store that bypasses a scan."
            .into(),
    });
    out
}

/// The settings of an object schema, flattened: a table's own settings follow it with
/// dotted names (`retry`, then `retry.attempts`).
pub fn settings_of(schema: &Value, prefix: &str) -> Vec<SettingDoc> {
    let mut out = Vec::new();
    let required: Vec<&str> = schema["required"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    for (name, s) in schema["properties"].as_object().into_iter().flatten() {
        let path = if prefix.is_empty() { name.clone() } else { format!("{prefix}.{name}") };
        let table = object_branch(s);
        out.push(SettingDoc {
            name: path.clone(),
            type_name: type_name(s),
            required: required.contains(&name.as_str()),
            default: s.get("default").cloned().filter(|d| !d.is_null()),
            range: range(s),
            description: description(s),
        });
        if let Some(t) = table {
            out.extend(settings_of(t, &path));
        }
    }
    out
}

/// The object schema a setting holds (a table of settings), if it is one.
fn object_branch(s: &Value) -> Option<&Value> {
    if s["properties"].is_object() {
        return Some(s);
    }
    ["anyOf", "oneOf"].iter().flat_map(|b| s[*b].as_array().into_iter().flatten()).find(|b| b["properties"].is_object())
}

fn description(s: &Value) -> String {
    let own = s["description"].as_str().map(str::to_string);
    own.or_else(|| object_branch(s).and_then(|t| t["description"].as_str().map(str::to_string)))
        .unwrap_or_default()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

fn range(s: &Value) -> Option<String> {
    let (min, max) = (s.get("minimum"), s.get("maximum"));
    match (min, max) {
        (None, None) => None,
        (Some(a), Some(b)) => Some(format!("{a} to {b}")),
        (Some(a), None) => Some(format!("at least {a}")),
        (None, Some(b)) => Some(format!("at most {b}")),
    }
}

/// A setting's type as a reader says it.
pub fn type_name(s: &Value) -> String {
    if let Some(values) = s["enum"].as_array() {
        return format!("one of: {}", values.iter().map(word).collect::<Vec<_>>().join(", "));
    }
    if let Some(c) = s.get("const") {
        return format!("`{}`", word(c));
    }
    for branch in ["oneOf", "anyOf"] {
        if let Some(bs) = s[branch].as_array() {
            let consts: Vec<String> = bs
                .iter()
                .flat_map(|b| match (b.get("const"), b["enum"].as_array()) {
                    (Some(c), _) => vec![word(c)],
                    (None, Some(e)) => e.iter().map(word).collect(),
                    _ => vec![],
                })
                .collect();
            let others: Vec<String> = bs
                .iter()
                .filter(|b| b.get("const").is_none() && b.get("enum").is_none() && b["type"] != "null")
                .map(type_name)
                .collect();
            let mut parts = Vec::new();
            if !consts.is_empty() {
                parts.push(format!("one of: {}", consts.join(", ")));
            }
            parts.extend(others);
            if !parts.is_empty() {
                return parts.join(", or ");
            }
        }
    }
    let types: Vec<&str> = match &s["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(a) => a.iter().filter_map(Value::as_str).filter(|t| *t != "null").collect(),
        _ => vec![],
    };
    let one = |t: &str| match t {
        "array" => format!("list of {}", if s["items"].is_object() { type_name(&s["items"]) } else { "any".into() }),
        "object" if s["properties"].is_object() => "table".into(),
        "object" => match s.get("additionalProperties") {
            Some(v) if v.is_object() => format!("map of {}", type_name(v)),
            _ => "table".into(),
        },
        t => t.into(),
    };
    match types.as_slice() {
        [] => "any".into(),
        ts => ts.iter().map(|t| one(t)).collect::<Vec<_>>().join(" or "),
    }
}

fn word(v: &Value) -> String {
    v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())
}

/// A setting that is not there: its path, the nearest name, and the names there are.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no setting `{path}`{hint}; there are: {}", .names.join(", "))]
pub struct UnknownSetting {
    pub path: String,
    pub hint: String,
    pub names: Vec<String>,
}

/// The setting at a dotted path in a list of settings (`retry.attempts`), or the names
/// nearest to it.
pub fn find<'a>(settings: &'a [SettingDoc], path: &str) -> Result<&'a SettingDoc, UnknownSetting> {
    if let Some(s) = settings.iter().find(|s| s.name == path) {
        return Ok(s);
    }
    let names: Vec<&str> = settings.iter().map(|s| s.name.as_str()).collect();
    let hint = crate::api::suggest::did_you_mean(path, &names);
    Err(UnknownSetting { path: path.to_string(), hint, names: names.into_iter().map(String::from).collect() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tables_are_flattened_with_dotted_names_and_types_read_as_words() {
        let schema = json!({
            "type": "object",
            "required": ["store"],
            "properties": {
                "store": {"type": "string", "description": "Where."},
                "order": {"oneOf": [{"const": "key", "description": "a"}, {"const": "modified"}], "default": "key"},
                "retry": {"type": "object", "description": "Retries.", "properties": {
                    "attempts": {"type": "integer", "minimum": 1, "maximum": 10, "default": 5}
                }},
                "limit": {"type": ["integer", "null"]},
                "input": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}
            }
        });
        let s = settings_of(&schema, "");
        let names: Vec<&str> = s.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["store", "order", "retry", "retry.attempts", "limit", "input"]);
        assert!(s[0].required && !s[1].required);
        assert_eq!(s[1].type_name, "one of: key, modified");
        assert_eq!(s[2].type_name, "table");
        assert_eq!(s[3].range.as_deref(), Some("1 to 10"));
        assert_eq!(s[3].default, Some(json!(5)));
        assert_eq!(s[4].type_name, "integer");
        assert_eq!(s[5].type_name, "string, or list of string");
        assert!(find(&s, "retry.atempts").unwrap_err().hint.contains("retry.attempts"));
    }
}
