//! Keys and paths are minijinja templates over an item's metadata: `copied/{{ name }}`,
//! `{{ prefix }}/msg_date={{ msg_date }}/parsed_{{ name }}`.
//!
//! Undefined variables are errors, never empty strings: a key that silently loses a part
//! would write to the wrong place.

use std::sync::Arc;

use minijinja::{Environment, UndefinedBehavior};

use crate::api::Meta;

/// A compiled template. Cheap to clone.
#[derive(Clone)]
pub struct KeyTemplate {
    env: Arc<Environment<'static>>,
    source: String,
}

impl std::fmt::Debug for KeyTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyTemplate({:?})", self.source)
    }
}

impl KeyTemplate {
    /// Compiles `source`; the error is minijinja's description of the syntax problem.
    pub fn new(source: &str) -> Result<Self, String> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.add_template_owned("key", source.to_string()).map_err(|e| describe(&e))?;
        Ok(Self { env: Arc::new(env), source: source.to_string() })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// The variables the template reads, so a planner can tell whether listing metadata
    /// is enough to resolve it.
    pub fn variables(&self) -> Vec<String> {
        match self.env.get_template("key") {
            Ok(t) => {
                let mut v: Vec<String> = t.undeclared_variables(false).into_iter().collect();
                v.sort();
                v
            }
            Err(_) => Vec::new(),
        }
    }

    pub fn render(&self, meta: &Meta) -> Result<String, String> {
        let t = self.env.get_template("key").map_err(|e| describe(&e))?;
        t.render(to_context(meta)).map_err(|e| describe(&e))
    }
}

fn describe(e: &minijinja::Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

/// Converts metadata to template values by hand: serde_json numbers are kept as text
/// (arbitrary_precision, for exact transforms), which minijinja would see as a map.
fn to_context(meta: &Meta) -> minijinja::Value {
    minijinja::Value::from_iter(meta.iter().map(|(k, v)| (k.clone(), to_value(v))))
}

fn to_value(v: &serde_json::Value) -> minijinja::Value {
    use serde_json::Value as J;
    match v {
        J::Null => minijinja::Value::from(()),
        J::Bool(b) => minijinja::Value::from(*b),
        J::Number(n) => {
            if let Some(i) = n.as_i64() {
                minijinja::Value::from(i)
            } else if let Some(u) = n.as_u64() {
                minijinja::Value::from(u)
            } else {
                minijinja::Value::from(n.to_string())
            }
        }
        J::String(s) => minijinja::Value::from(s.clone()),
        J::Array(a) => minijinja::Value::from_iter(a.iter().map(to_value)),
        J::Object(m) => minijinja::Value::from_iter(m.iter().map(|(k, v)| (k.clone(), to_value(v)))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_and_refuses_undefined() {
        let t = KeyTemplate::new("out/{{ msg_date }}/parsed_{{ name }}").unwrap();
        assert_eq!(t.variables(), vec!["msg_date".to_string(), "name".to_string()]);
        let mut m = Meta::new();
        m.insert("name".into(), "a.json".into());
        let e = t.render(&m).unwrap_err();
        assert!(e.contains("undefined"), "{e}");
        m.insert("msg_date".into(), "2021-03-15".into());
        m.insert("size".into(), serde_json::json!(12));
        assert_eq!(t.render(&m).unwrap(), "out/2021-03-15/parsed_a.json");
        assert_eq!(KeyTemplate::new("{{ size + 1 }}").unwrap().render(&m).unwrap(), "13");
        assert!(KeyTemplate::new("{{ name").is_err());
    }
}
