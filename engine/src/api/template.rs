//! Keys and paths are minijinja templates over an item's metadata: `copied/{{ name }}`,
//! `{{ prefix }}/msg_date={{ msg_date }}/parsed_{{ name }}`.
//!
//! Undefined variables are errors, never empty strings: a key that silently loses a part
//! would write to the wrong place.
//!
//! Dates and times, for the layouts the platform's jobs write
//! (`{{ run_time | datetime("%Y-%m-%d/%H:%M:%S%.6f") }}/{{ name }}`, unpadded
//! `{{ last_modified | datetime("%Y/%-m/%-d") }}`):
//! - `datetime(format, offset="+00:00")` writes a time (RFC 3339, as `run_time` and
//!   `last_modified` are, or a `YYYY-MM-DD` date) with chrono's strftime `format` (`%-m`
//!   unpadded, `%.6f` microseconds), in UTC or at a fixed offset;
//! - `strptime(format)` reads a time from text with `format` (a date from a name:
//!   `{{ day | strptime("%Y%m%d") | datetime("%Y/%m/%d") }}`), as RFC 3339 UTC.
//!
//! A format that is not strftime is an error when the template compiles (`validate`).

use std::sync::Arc;

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, Utc};
use minijinja::{Environment, Error, ErrorKind, UndefinedBehavior};

use crate::api::Meta;

/// Why a template does not compile, or does not render for an item: one line, what
/// minijinja says (a syntax error, a variable without a value, a date that is none).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TemplateError(pub String);

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
    pub fn new(source: &str) -> Result<Self, TemplateError> {
        check_formats(source).map_err(TemplateError)?;
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.add_filter("datetime", datetime);
        env.add_filter("strptime", strptime);
        env.add_template_owned("key", source.to_string()).map_err(|e| TemplateError(describe(&e)))?;
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

    pub fn render(&self, meta: &Meta) -> Result<String, TemplateError> {
        let t = self.env.get_template("key").map_err(|e| TemplateError(describe(&e)))?;
        t.render(to_context(meta)).map_err(|e| TemplateError(describe(&e)))
    }
}

/// The strftime formats written as the first argument of `datetime` or `strptime`,
/// checked: a bad one is a spec error, not a failure of every item.
fn check_formats(source: &str) -> Result<(), String> {
    for filter in ["datetime", "strptime"] {
        for (i, _) in source.match_indices(&format!("{filter}(")) {
            let rest = source[i + filter.len() + 1..].trim_start();
            let Some(quote) = rest.chars().next().filter(|q| *q == '"' || *q == '\'') else { continue };
            let Some(end) = rest[1..].find(quote) else { continue };
            let format = &rest[1..1 + end];
            if chrono::format::StrftimeItems::new(format).any(|i| matches!(i, chrono::format::Item::Error)) {
                return Err(format!(
                    "`{filter}(\"{format}\")`: not a strftime format (e.g. \"%Y-%m-%d/%H:%M:%S%.6f\")"
                ));
            }
        }
    }
    Ok(())
}

/// A time as templates read one: RFC 3339, or a date (`YYYY-MM-DD`, midnight UTC).
fn parse_time(text: &str) -> Result<DateTime<Utc>, Error> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(d) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc());
    }
    Err(Error::new(ErrorKind::InvalidOperation, format!("{text:?} is not a time (RFC 3339) or a date (YYYY-MM-DD)")))
}

/// `{{ t | datetime("%Y/%-m/%-d") }}`, or at an offset: `datetime("%H:%M", "+01:00")`.
fn datetime(value: String, format: String, offset: Option<String>) -> Result<String, Error> {
    let t = parse_time(&value)?;
    let out = match offset.as_deref() {
        None | Some("UTC") | Some("Z") => t.format(&format).to_string(),
        Some(o) => {
            let zone = DateTime::parse_from_rfc3339(&format!("2000-01-01T00:00:00{o}")).map(|d| *d.offset()).map_err(
                |_| Error::new(ErrorKind::InvalidOperation, format!("offset {o:?}: write `+01:00`, `-05:00` or `UTC`")),
            )?;
            t.with_timezone::<FixedOffset>(&zone).format(&format).to_string()
        }
    };
    Ok(out)
}

/// `{{ day | strptime("%Y%m%d") }}`: the time `value` gives read with `format`, as RFC
/// 3339 UTC (a date alone is its midnight).
fn strptime(value: String, format: String) -> Result<String, Error> {
    let bad = || Error::new(ErrorKind::InvalidOperation, format!("{value:?} does not read as {format:?}"));
    let t = match NaiveDateTime::parse_from_str(&value, &format) {
        Ok(t) => t.and_utc(),
        Err(_) => NaiveDate::parse_from_str(&value, &format)
            .map_err(|_| bad())?
            .and_hms_opt(0, 0, 0)
            .ok_or_else(bad)?
            .and_utc(),
    };
    Ok(t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
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
        assert!(e.0.contains("undefined"), "{e}");
        m.insert("msg_date".into(), "2021-03-15".into());
        m.insert("size".into(), serde_json::json!(12));
        assert_eq!(t.render(&m).unwrap(), "out/2021-03-15/parsed_a.json");
        assert_eq!(KeyTemplate::new("{{ size + 1 }}").unwrap().render(&m).unwrap(), "13");
        assert!(KeyTemplate::new("{{ name").is_err());
    }

    #[test]
    fn dates_and_times_as_the_platform_writes_them() {
        let mut m = Meta::new();
        m.insert("run_time".into(), "2026-03-05T07:08:09.123456Z".into());
        m.insert("name".into(), "PARSED_20260305_0930_0001.zip".into());
        let render = |t: &str| KeyTemplate::new(t).unwrap().render(&m).unwrap();
        assert_eq!(
            render(r#"{{ run_time | datetime("%Y-%m-%d/%H:%M:%S%.6f") }}/{{ name }}"#),
            "2026-03-05/07:08:09.123456/PARSED_20260305_0930_0001.zip"
        );
        assert_eq!(render(r#"{{ run_time | datetime("%Y/%-m/%-d") }}"#), "2026/3/5");
        assert_eq!(render(r#"{{ run_time | datetime("%H:%M", "+01:00") }}"#), "08:08");
        assert_eq!(render(r#"{{ name[7:15] | strptime("%Y%m%d") | datetime("%Y/%m/%d") }}"#), "2026/03/05");
        let e = KeyTemplate::new(r#"{{ run_time | datetime("%Y-%Q") }}"#).unwrap_err();
        assert!(e.0.contains("not a strftime format"), "{e}");
        let e = KeyTemplate::new(r#"{{ name | strptime("%Y%m%d") }}"#).unwrap().render(&m).unwrap_err();
        assert!(e.0.contains("does not read as"), "{e}");
    }
}
