//! The stores of a spec: each opened by its URL's scheme, after inheriting the per-scheme
//! settings under `defaults` (`defaults.s3`), so that a spec states its region, endpoint
//! and encryption once:
//!
//! ```yaml
//! defaults:
//!   s3: { region: eu-west-2, sse: aws:kms }
//! stores:
//!   archive: { url: "s3://archive", s3: { region: eu-west-1 } }   # overrides the region
//!   internal: { url: "s3://internal" }                            # inherits both
//! ```
//!
//! A store's own value wins, key by key (tables are merged, not replaced). The engine knows
//! no scheme: the scheme names are the tables the store opener's schema lists.

use std::sync::Arc;

use indexmap::IndexMap;
use serde_json::{Map, Value};

use crate::api::store::Store;
use crate::api::Registry;
use crate::spec::errors::ErrorSink;
use crate::spec::locate::SpecPath;
use crate::spec::schema::{check_ranges, coerce_scalars};
use crate::spec::{SpecHeader, StoreSpec};

/// The opened stores, by name, with what the spec said of them.
pub(crate) type Stores = IndexMap<String, (StoreSpec, Arc<dyn Store>)>;

/// Per-scheme tables from `defaults`, by scheme name.
pub(crate) type SchemeDefaults = Map<String, Value>;

/// Takes the scheme tables (`s3`, `sftp`, ...) out of `defaults`, leaving the node
/// defaults for the typed header.
pub(crate) fn take_scheme_defaults(
    mut doc: Value,
    registry: &Registry,
    errors: &mut ErrorSink,
) -> (Value, SchemeDefaults) {
    let schema = registry.stores.schema().to_value();
    let schemes: Vec<String> =
        schema["properties"].as_object().into_iter().flatten().map(|(k, _)| k.clone()).filter(|k| k != "url").collect();
    let mut taken = Map::new();
    if let Some(defaults) = doc.get_mut("defaults").and_then(Value::as_object_mut) {
        for scheme in schemes {
            match defaults.remove(&scheme) {
                Some(table @ Value::Object(_)) => {
                    taken.insert(scheme, table);
                }
                Some(_) => errors.push(
                    &SpecPath::root().key("defaults").key(&scheme),
                    format!("`defaults.{scheme}` is a mapping of `{scheme}` settings every store inherits"),
                ),
                None => {}
            }
        }
    }
    (doc, taken)
}

/// Fills each scheme table of a store with the defaults it does not set itself.
fn inherit(options: &mut Map<String, Value>, inherited: &SchemeDefaults) {
    for (scheme, table) in inherited {
        let own = options.entry(scheme.clone()).or_insert_with(|| Value::Object(Map::new()));
        merge_missing(own, table);
    }
}

fn merge_missing(own: &mut Value, defaults: &Value) {
    let (Value::Object(own), Value::Object(defaults)) = (own, defaults) else { return };
    for (key, value) in defaults {
        match own.get_mut(key) {
            Some(mine) => merge_missing(mine, value),
            None => {
                own.insert(key.clone(), value.clone());
            }
        }
    }
}

/// Where an error about a store's setting belongs: the store's own value when it has one,
/// else the `defaults` table it inherited the value from.
fn place(store: &SpecPath, own: &Map<String, Value>, inherited: &SchemeDefaults, at: &str) -> SpecPath {
    let (mut mine, mut default) = (Some(&Value::Object(own.clone())), Some(&Value::Object(inherited.clone())));
    for part in at.split('.').filter(|p| !p.is_empty()) {
        mine = mine.and_then(|v| v.get(part));
        default = default.and_then(|v| v.get(part));
    }
    match (mine, default) {
        (None, Some(_)) => SpecPath::root().key("defaults").join_dotted(at),
        _ => store.join_dotted(at),
    }
}

/// Opens each store by its URL's scheme; no I/O.
pub(crate) fn open_stores(
    header: &SpecHeader,
    inherited: &SchemeDefaults,
    registry: &Registry,
    errors: &mut ErrorSink,
) -> Stores {
    let mut stores = IndexMap::new();
    for (name, value) in &header.stores {
        let path = SpecPath::root().key("stores").key(name);
        let Value::Object(mut options) = value.clone() else {
            errors.push(&path, "a store is a mapping with at least `url`");
            continue;
        };
        let url = match options.remove("url") {
            Some(Value::String(u)) => u,
            Some(_) => {
                errors.push(&path.key("url"), "must be a string such as `file://./var/in` or `s3://bucket/prefix`");
                continue;
            }
            None => {
                errors.push(&path, "missing `url`");
                continue;
            }
        };
        let trusted = match options.remove("trusted") {
            None => false,
            Some(Value::Bool(b)) => b,
            Some(Value::String(s)) if matches!(s.trim(), "true" | "false") => s.trim() == "true",
            Some(_) => {
                errors.push(&path.key("trusted"), "must be true or false");
                continue;
            }
        };
        let rate = match options.remove("max_requests_per_second") {
            None => None,
            Some(v) => match v.as_f64().or_else(|| v.as_str().and_then(|s| s.trim().parse().ok())) {
                Some(r) if r > 0.0 && r <= 1e6 => Some(r),
                _ => {
                    let at = path.key("max_requests_per_second");
                    errors.push(&at, "must be a number of requests a second, above 0 and at most 1000000");
                    continue;
                }
            },
        };
        let own = options.clone();
        inherit(&mut options, inherited);
        let mut typed = Value::Object(options);
        let mut ranges = coerce_scalars(&registry.stores.schema().to_value(), &mut typed);
        ranges.extend(check_ranges(&registry.stores.schema().to_value(), &typed));
        let Value::Object(options) = typed else { continue };
        for (at, message) in &ranges {
            errors.push(&place(&path, &own, inherited, at), message.clone());
        }
        if !ranges.is_empty() {
            continue;
        }
        let spec =
            StoreSpec { name: name.clone(), url, trusted, max_requests_per_second: rate, options, path: path.clone() };
        match registry.stores.open(&spec) {
            Ok(store) => {
                stores.insert(name.clone(), (spec, store));
            }
            Err(e) => {
                let at = place(&path, &own, inherited, &e.path);
                let message = crate::api::suggest::unknown_field(&e.message, &[]).unwrap_or(e.message);
                // A mistake in `defaults.s3` is one mistake, whatever the stores inheriting it.
                if !errors.errors.iter().any(|x| x.path == at.to_string() && x.message == message) {
                    errors.push(&at, message)
                }
            }
        }
    }
    stores
}
