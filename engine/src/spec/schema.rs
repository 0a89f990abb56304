//! The JSON Schema of the spec, generated from the same types that read it (schemars), so
//! editors' YAML language servers complete and check specs. Never hand-written.

use serde_json::{json, Value};

use crate::api::{Registry, Role};
use crate::spec::{SpecHeader, MAX_CONCURRENCY};

pub use crate::api::kind::config_schema;

/// The schema of a whole spec file. A node's settings are chosen by its `kind` (`if`/`then`
/// per kind), so an editor reports a typo inside a `clamav` node against the clamav
/// settings rather than "`list` was expected". Every number, boolean or fixed word may
/// also be a string holding `${...}`, as the loader reads it after interpolation.
pub fn spec_schema(registry: &Registry) -> Value {
    let mut root = config_schema::<SpecHeader>().to_value();
    accept_interpolation(&mut root);
    root["$schema"] = json!("https://json-schema.org/draft/2020-12/schema");
    root["title"] = json!("dqpipe pipeline spec");
    let names: Vec<&str> = registry.kinds.iter().map(|k| k.name()).collect();
    let branches: Vec<Value> = registry
        .kinds
        .iter()
        .map(|k| {
            json!({
                "if": {"properties": {"kind": {"const": k.name()}}, "required": ["kind"]},
                "then": kind_schema(k.as_ref()),
            })
        })
        .collect();
    root["properties"]["nodes"]["additionalProperties"] = json!({
        "type": "object",
        "required": ["kind"],
        "properties": {"kind": {"enum": names, "description": "What the node does; `dqpipe kinds` lists them."}},
        "allOf": branches,
    });
    let mut store = registry.stores.schema().to_value();
    accept_interpolation(&mut store);
    // Per-scheme tables under `defaults` (`defaults.s3`) that every store inherits.
    for (scheme, table) in store["properties"].as_object().into_iter().flatten() {
        if scheme != "url" {
            let mut table = table.clone();
            table["description"] =
                json!(format!("`{scheme}` settings every store inherits unless its own `{scheme}` table sets them."));
            root["properties"]["defaults"]["properties"][scheme] = table;
        }
    }
    store["properties"]["trusted"] = json!({
        "type": "boolean",
        "description": "Only what a scanner passed as clean may be written here: validate refuses a path into this store that bypasses a scan."
    });
    store["properties"]["max_requests_per_second"] = json!({
        "type": ["number", "string"],
        "exclusiveMinimum": 0,
        "maximum": 1000000,
        "pattern": "\\$\\{|^\\s*[0-9]+(\\.[0-9]+)?\\s*$",
        "description": "The most object requests (GET, PUT, HEAD, DELETE) that start in a second, whatever the nodes' concurrency (rclone's --tpslimit): for a server that throttles or is shared."
    });
    root["properties"]["stores"]["additionalProperties"] = store;
    root
}

/// One kind's settings with the keys every node has.
fn kind_schema(k: &dyn crate::api::NodeKind) -> Value {
    let mut s = k.schema().to_value();
    if !s.is_object() {
        s = json!({"type": "object"});
    }
    if let Some(o) = s.as_object_mut() {
        o.remove("$schema");
    }
    if !s["properties"].is_object() {
        s["properties"] = json!({});
    }
    let common = node_keys(k.role());
    for (key, value) in common["properties"].as_object().into_iter().flatten() {
        s["properties"][key] = value.clone();
    }
    accept_interpolation(&mut s);
    s["title"] = json!(k.name());
    s["description"] = json!(k.summary());
    s["type"] = json!("object");
    s["additionalProperties"] = json!(false);
    s["properties"]["kind"] = json!({"const": k.name()});
    let mut required: Vec<Value> = s["required"].as_array().cloned().unwrap_or_default();
    required.push(json!("kind"));
    required.extend(common["required"].as_array().cloned().unwrap_or_default());
    if k.role() == Role::Processor {
        let ports: Vec<String> = k.ports().iter().map(|p| p.name.to_string()).collect();
        s["x-dqpipe-ports"] = json!(ports);
    }
    s["required"] = Value::Array(required);
    s
}

/// The keys every node of a role has beside its kind's own settings (`input` and
/// `concurrency` for processors, `description` for all), as an object schema: the spec's
/// schema and the reference (`dqpipe explain`) both read them from here.
pub fn node_keys(role: Role) -> Value {
    let mut keys = json!({
        "properties": {"description": {"type": "string", "description": "Free text for readers."}},
        "required": [],
    });
    if role == Role::Processor {
        keys["properties"]["input"] = json!({
            "description": "The node(s) this node reads from: `node` or `node.port`.",
            "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "minItems": 1}]
        });
        keys["properties"]["concurrency"] = json!({
            "description": "Items processed at once: a number, or `adaptive` (a limit from \
                `defaults.concurrency` up to `defaults.max_concurrency` that follows how the \
                node's requests fare; the default of `fetch`, `put`, `delete` and `stamp`). \
                Other kinds: `defaults.concurrency` unless set.",
            "anyOf": [
                {"type": "integer", "minimum": 1, "maximum": MAX_CONCURRENCY},
                {"const": "adaptive"}
            ]
        });
        keys["required"] = json!(["input"]);
    }
    keys
}

/// A string that holds a variable: `${...}` anywhere in it.
const VARIABLE: &str = "\\$\\{";
/// A string the loader reads as a whole number.
const INTEGER_TEXT: &str = "^\\s*-?[0-9]+\\s*$";

/// A string holding `${...}` is accepted wherever a number, a boolean or one of a few
/// words is: the loader interpolates every string first, then reads the value as the type
/// asked for (and names the variable if it does not parse).
fn accept_interpolation(schema: &mut Value) {
    let Some(o) = schema.as_object_mut() else { return };
    for key in ["properties", "$defs", "definitions"] {
        for sub in o.get_mut(key).and_then(Value::as_object_mut).into_iter().flat_map(|m| m.values_mut()) {
            accept_interpolation(sub);
        }
    }
    for key in ["anyOf", "oneOf", "allOf"] {
        for sub in o.get_mut(key).and_then(Value::as_array_mut).into_iter().flatten() {
            accept_interpolation(sub);
        }
    }
    for key in ["additionalProperties", "items", "then", "else"] {
        if let Some(sub) = o.get_mut(key) {
            accept_interpolation(sub);
        }
    }
    if o.contains_key("enum") || o.contains_key("const") {
        let mut fixed = std::mem::take(o);
        for key in ["description", "default", "title"] {
            if let Some(v) = fixed.remove(key) {
                o.insert(key.into(), v);
            }
        }
        o.insert("anyOf".into(), json!([fixed, {"type": "string", "pattern": VARIABLE}]));
        return;
    }
    let types: Vec<String> = match o.get("type") {
        Some(Value::String(t)) => vec![t.clone()],
        Some(Value::Array(a)) => a.iter().filter_map(|t| t.as_str().map(String::from)).collect(),
        _ => return,
    };
    // A string the loader reads as the scalar asked for (`concurrency: "8"`, as
    // coerce_scalars does: trimmed, then parsed) is accepted too, so that schema and
    // loader agree on what a spec may say.
    let written = if types.iter().any(|t| t == "integer") {
        Some(INTEGER_TEXT)
    } else if types.iter().any(|t| t == "number") {
        Some("^\\s*-?[0-9]+(\\.[0-9]+)?([eE][-+]?[0-9]+)?\\s*$")
    } else if types.iter().any(|t| t == "boolean") {
        Some("^\\s*(true|false)\\s*$")
    } else {
        None
    };
    if let Some(written) = written.filter(|_| !types.iter().any(|t| t == "string")) {
        let mut types: Vec<Value> = types.into_iter().map(Value::from).collect();
        types.push(json!("string"));
        o.insert("type".into(), Value::Array(types));
        // `pattern` applies to strings only: the numbers keep their range.
        o.insert("pattern".into(), json!(format!("{VARIABLE}|{written}")));
    }
}

/// Checks every number in `value` against the `minimum` and `maximum` its schema gives
/// (declared once, on the config type, with `#[schemars(range(...))]`), so that a value a
/// node could not run with (a concurrency of 2^61, a chunk size of 2^53) is refused by
/// `validate`, at its place, with the allowed range. Strings holding a number (from the
/// environment) are checked as that number. Returns (dotted path, message) pairs.
pub fn check_ranges(schema: &Value, value: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    walk(schema, value, "", &mut out);
    out.dedup();
    out
}

fn walk(schema: &Value, value: &Value, path: &str, out: &mut Vec<(String, String)>) {
    for branch in ["anyOf", "oneOf", "allOf"] {
        for s in schema[branch].as_array().into_iter().flatten() {
            walk(s, value, path, out);
        }
    }
    if let (Some(props), Some(obj)) = (schema["properties"].as_object(), value.as_object()) {
        for (k, v) in obj {
            if let Some(s) = props.get(k) {
                let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                walk(s, v, &p, out);
            }
        }
    }
    let number = match value {
        Value::Number(n) => n.as_f64(),
        Value::String(t) => t.trim().parse::<f64>().ok(),
        _ => None,
    };
    let (min, max) = (schema["minimum"].as_f64(), schema["maximum"].as_f64());
    let Some(n) = number.filter(|_| min.is_some() || max.is_some()) else { return };
    if min.is_some_and(|m| n < m) || max.is_some_and(|m| n > m) {
        let bound = |b: Option<&Value>| b.map(|v| v.to_string()).unwrap_or_else(|| "any".into());
        out.push((
            path.to_string(),
            format!(
                "{value} is out of range: use a whole number from {} to {}",
                bound(schema.get("minimum")),
                bound(schema.get("maximum"))
            ),
        ));
    }
}

/// Turns strings into the numbers and booleans the schema asks for, where they parse:
/// `concurrency: "${SCAN_CONCURRENCY:-8}"` is 8 once interpolated. A string that does not
/// parse is left for the reader and reported here, with the type expected. Returns
/// (dotted path, message) pairs.
pub fn coerce_scalars(schema: &Value, value: &mut Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    coerce(schema, value, "", &mut out);
    out.dedup();
    out
}

fn coerce(schema: &Value, value: &mut Value, path: &str, out: &mut Vec<(String, String)>) {
    for branch in ["anyOf", "oneOf", "allOf"] {
        for s in schema[branch].as_array().into_iter().flatten() {
            coerce(s, value, path, out);
        }
    }
    if let (Some(props), Some(obj)) = (schema["properties"].as_object(), value.as_object_mut()) {
        for (k, v) in obj.iter_mut() {
            if let Some(s) = props.get(k) {
                let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                coerce(s, v, &p, out);
            }
        }
    }
    let Value::String(text) = value else { return };
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
        _ => return,
    };
    if types.contains(&"string") {
        return;
    }
    let t = text.trim();
    let parsed = if types.contains(&"integer") {
        t.parse::<u64>().map(Value::from).or_else(|_| t.parse::<i64>().map(Value::from)).ok()
    } else if types.contains(&"number") {
        t.parse::<f64>().ok().filter(|f| f.is_finite()).and_then(|f| serde_json::Number::from_f64(f).map(Value::Number))
    } else if types.contains(&"boolean") {
        match t {
            "true" => Some(Value::Bool(true)),
            "false" => Some(Value::Bool(false)),
            _ => None,
        }
    } else {
        return;
    };
    match parsed {
        Some(v) => *value = v,
        None => {
            let expected = if types.contains(&"integer") {
                "a whole number"
            } else if types.contains(&"number") {
                "a number"
            } else {
                "true or false"
            };
            out.push((path.to_string(), format!("must be {expected}, not {:?}", text)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_checked_against_the_schema_ranges() {
        let schema = config_schema::<crate::spec::Defaults>().to_value();
        let errors = check_ranges(&schema, &json!({"concurrency": 2305843009213693952u64, "channel_capacity": 16}));
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].0, "concurrency");
        assert!(errors[0].1.contains("from 1 to 4096"), "{}", errors[0].1);
        assert!(check_ranges(&schema, &json!({"concurrency": 8, "channel_capacity": 16})).is_empty());
        assert_eq!(check_ranges(&schema, &json!({"channel_capacity": "0"})).len(), 1);
    }

    #[test]
    fn strings_become_the_numbers_and_booleans_the_schema_asks_for() {
        let schema = config_schema::<crate::spec::Defaults>().to_value();
        let mut v = json!({"concurrency": " 8", "channel_capacity": "16"});
        assert!(coerce_scalars(&schema, &mut v).is_empty());
        assert_eq!(v, json!({"concurrency": 8, "channel_capacity": 16}));
        let mut v = json!({"concurrency": "x"});
        let errors = coerce_scalars(&schema, &mut v);
        assert_eq!(errors, vec![("concurrency".to_string(), "must be a whole number, not \"x\"".to_string())]);
    }
}
