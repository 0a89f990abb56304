//! The JSON Schema of the spec, generated from the same types that read it (schemars), so
//! editors' YAML language servers complete and check specs. Never hand-written.

use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, Schema};
use serde_json::{json, Value};

use crate::node::{Registry, Role};
use crate::spec::SpecHeader;

/// A schema for one config type, with sub-schemas inlined so it can be merged.
pub fn config_schema<T: JsonSchema>() -> Schema {
    let settings = SchemaSettings::draft2020_12().with(|s| {
        s.inline_subschemas = true;
        s.meta_schema = None;
    });
    settings.into_generator().into_root_schema_for::<T>()
}

/// The schema of a whole spec file, with one entry per node kind.
pub fn spec_schema(registry: &Registry) -> Value {
    let mut root = config_schema::<SpecHeader>().to_value();
    root["$schema"] = json!("https://json-schema.org/draft/2020-12/schema");
    root["title"] = json!("dqpipe pipeline spec");
    let kinds: Vec<Value> = registry
        .kinds
        .iter()
        .map(|k| {
            let mut s = k.schema().to_value();
            if !s.is_object() {
                s = json!({"type": "object"});
            }
            if let Some(o) = s.as_object_mut() {
                o.remove("$schema");
            }
            s["title"] = json!(k.name());
            s["description"] = json!(k.summary());
            s["type"] = json!("object");
            s["additionalProperties"] = json!(false);
            if !s["properties"].is_object() {
                s["properties"] = json!({});
            }
            s["properties"]["kind"] = json!({"const": k.name()});
            s["properties"]["description"] = json!({"type": "string", "description": "Free text for readers."});
            let mut required: Vec<Value> = s["required"].as_array().cloned().unwrap_or_default();
            required.push(json!("kind"));
            if k.role() == Role::Processor {
                let ports: Vec<String> = k.ports().iter().map(|p| p.name.to_string()).collect();
                s["properties"]["input"] = json!({
                    "description": "The node(s) this node reads from: `node` or `node.port`.",
                    "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "minItems": 1}]
                });
                s["properties"]["concurrency"] = json!({
                    "description": "Items processed at once (default: defaults.concurrency).",
                    "type": "integer", "minimum": 1
                });
                s["x-dqpipe-ports"] = json!(ports);
                required.push(json!("input"));
            }
            s["required"] = Value::Array(required);
            s
        })
        .collect();
    root["properties"]["nodes"]["additionalProperties"] = json!({ "oneOf": kinds });
    root["properties"]["stores"]["additionalProperties"] = registry.stores.schema().to_value();
    root
}
