//! Environment interpolation in string values: `${VAR}`, `${VAR:-default}`,
//! `${VAR:+alternative}` (the alternative when VAR is set and not empty, else nothing),
//! `${VAR:?message}`, and `$$` for a literal `$`. Defaults and alternatives may hold
//! further `${...}`, as in a shell. A `$` followed by anything else is kept
//! as it is, so regular expressions such as `\.json$` need no escaping.
//!
//! Hand-written rather than taken from a crate: the crates that exist (shellexpand,
//! envsubst) either expand `$VAR` and `~` too, which would rewrite regexes and paths in
//! specs, or do not report which variables a value used, which the planner needs to redact
//! values that came from the environment.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::spec::errors::ErrorSink;
use crate::spec::locate::SpecPath;

/// A value after interpolation, with the names of the variables it used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interpolated {
    pub value: String,
    pub vars: Vec<String>,
}

/// Why a value cannot be interpolated: one line naming the variable (unset, `:?` with
/// its message, nested too deep).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InterpolateError(pub String);

/// Expands `input`, looking variables up with `lookup`.
pub fn interpolate(input: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<Interpolated, InterpolateError> {
    let depth = nesting(input);
    if depth > MAX_NESTING {
        return Err(InterpolateError(format!(
            "`${{...}}` nested {depth} deep; at most {MAX_NESTING} levels are allowed: use fewer nested defaults"
        )));
    }
    expand_all(input, lookup).map_err(InterpolateError)
}

/// How deep `${...}` may nest (`${A:-${B:-${C}}}` is 3). Expansion recurses once per
/// level and rescans the rest of the value at each, so the limit keeps it linear in the
/// value's length and off the stack's end.
pub const MAX_NESTING: usize = 16;

/// The deepest nesting of `${` in `s`, in one pass (`$$` is a literal `$`).
fn nesting(s: &str) -> usize {
    let (mut depth, mut max) = (0usize, 0usize);
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match (b[i], b.get(i + 1)) {
            (b'$', Some(b'$')) => i += 1,
            (b'$', Some(b'{')) => {
                depth += 1;
                max = max.max(depth);
                i += 1;
            }
            (b'}', _) if depth > 0 => depth -= 1,
            _ => {}
        }
        i += 1;
    }
    max
}

fn expand_all(input: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<Interpolated, String> {
    let mut out = String::with_capacity(input.len());
    let mut vars = Vec::new();
    let mut rest = input;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(body_start) = after.strip_prefix('{') {
            let end = matching_brace(body_start).ok_or_else(|| {
                format!("unclosed `${{` in {input:?}: close it with `}}`, or write `$$` for a literal `$`")
            })?;
            let body = &body_start[..end];
            out.push_str(&expand(body, lookup, &mut vars)?);
            rest = &body_start[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(Interpolated { value: out, vars })
}

/// The index of the `}` closing a `${`, counting nested `${ ... }` in defaults.
fn matching_brace(s: &str) -> Option<usize> {
    let mut depth = 0usize;
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'$' if bytes.get(i + 1) == Some(&b'{') => {
                depth += 1;
                i += 1;
            }
            b'}' if depth == 0 => return Some(i),
            b'}' => depth -= 1,
            _ => {}
        }
        i += 1;
    }
    None
}

fn expand(body: &str, lookup: &dyn Fn(&str) -> Option<String>, vars: &mut Vec<String>) -> Result<String, String> {
    let name_end = body.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(body.len());
    let name = &body[..name_end];
    let op = &body[name_end..];
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(format!("`${{{body}}}` does not name a variable: names are letters, digits and `_`"));
    }
    vars.push(name.to_string());
    let value = lookup(name);
    if op.is_empty() {
        return value.ok_or_else(|| {
            format!("environment variable `{name}` is not set; set it, or give a default with `${{{name}:-default}}`")
        });
    }
    if let Some(default) = op.strip_prefix(":-") {
        return match value {
            Some(v) if !v.is_empty() => Ok(v),
            _ => {
                let d = expand_all(default, lookup)?;
                vars.extend(d.vars);
                Ok(d.value)
            }
        };
    }
    if let Some(alternative) = op.strip_prefix(":+") {
        return match value {
            Some(v) if !v.is_empty() => {
                let a = expand_all(alternative, lookup)?;
                vars.extend(a.vars);
                Ok(a.value)
            }
            _ => Ok(String::new()),
        };
    }
    if let Some(message) = op.strip_prefix(":?") {
        return match value {
            Some(v) if !v.is_empty() => Ok(v),
            _ => Err(format!(
                "environment variable `{name}` is not set or empty: {}",
                if message.is_empty() { "it is required" } else { message }
            )),
        };
    }
    Err(format!(
        "`${{{body}}}`: unknown operator `{op}`; use `${{{name}}}`, `${{{name}:-default}}`, `${{{name}:+alternative}}` or `${{{name}:?message}}`"
    ))
}

/// Interpolates every string of a spec document in place; the variables each value used
/// are recorded by its path, errors are placed at it.
pub(crate) fn interpolate_value(
    v: &mut Value,
    path: &SpecPath,
    env: &dyn Fn(&str) -> Option<String>,
    errors: &mut ErrorSink<'_>,
    env_vars: &mut BTreeMap<String, Vec<String>>,
) {
    match v {
        Value::String(s) => match interpolate(s, env) {
            Ok(i) => {
                if !i.vars.is_empty() {
                    env_vars.insert(path.to_string(), i.vars);
                }
                *s = i.value;
            }
            Err(e) => errors.push(path, e.0),
        },
        Value::Array(a) => {
            for (i, el) in a.iter_mut().enumerate() {
                interpolate_value(el, &path.index(i), env, errors, env_vars);
            }
        }
        Value::Object(m) => {
            for (k, el) in m.iter_mut() {
                interpolate_value(el, &path.key(k), env, errors, env_vars);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "SET" => Some("value".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    fn run(s: &str) -> Result<String, String> {
        interpolate(s, &env).map(|i| i.value).map_err(|e| e.0)
    }

    #[test]
    fn forms() {
        assert_eq!(run("a ${SET} b").unwrap(), "a value b");
        assert_eq!(run("${UNSET:-file://./var/in}").unwrap(), "file://./var/in");
        assert_eq!(run("${EMPTY:-d}").unwrap(), "d");
        assert_eq!(run("${SET:-d}").unwrap(), "value");
        assert_eq!(run("$${SET}").unwrap(), "${SET}");
        assert_eq!(run("cost $$5").unwrap(), "cost $5");
        assert_eq!(run(r"\.json$").unwrap(), r"\.json$");
        assert_eq!(run("${UNSET:-${SET}}").unwrap(), "value");
        assert_eq!(run("${EMPTY}").unwrap(), "");
        assert_eq!(run("${SET:+s3://}${SET:-file://./var/in}").unwrap(), "s3://value");
        assert_eq!(run("${UNSET:+s3://}${UNSET:-file://./var/in}").unwrap(), "file://./var/in");
        assert_eq!(run("${EMPTY:+x}").unwrap(), "");
    }

    #[test]
    fn errors_name_the_variable() {
        let e = run("s3://${BUCKET}/x").unwrap_err();
        assert!(e.contains("`BUCKET` is not set"), "{e}");
        let e = run("${TOKEN:?the Slack token}").unwrap_err();
        assert!(e.contains("TOKEN") && e.contains("the Slack token"), "{e}");
        assert!(run("${OPEN").unwrap_err().contains("unclosed"));
        assert!(run("${1X}").unwrap_err().contains("does not name a variable"));
    }

    #[test]
    fn deep_nesting_is_refused_quickly() {
        let mut deep = String::new();
        for _ in 0..50_000 {
            deep.push_str("${A:-");
        }
        deep.push('x');
        deep.push_str(&"}".repeat(50_000));
        let e = run(&deep).unwrap_err();
        assert!(e.contains("nested 50000 deep") && e.contains("at most 16"), "{e}");
        let ok = format!("{}x{}", "${UNSET:-".repeat(MAX_NESTING), "}".repeat(MAX_NESTING));
        assert_eq!(run(&ok).unwrap(), "x");
        assert_eq!(run("$${A:-${SET}}").unwrap(), "${A:-value}");
    }

    #[test]
    fn reports_used_variables() {
        let i = interpolate("${SET}-${UNSET:-x}", &env).unwrap();
        assert_eq!(i.vars, vec!["SET".to_string(), "UNSET".to_string()]);
    }
}
