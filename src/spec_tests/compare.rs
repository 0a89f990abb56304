//! Expected against got, for one case: a readable difference per mismatch, as `cargo test`
//! and `vector test` show them (`- expected` / `+ got` lines; bodies as pretty JSON, line
//! by line).

use std::collections::BTreeMap;

use serde_json::Value;
use similar::{ChangeTag, TextDiff};

use super::Case;

/// What became of each object of a run, by its key.
#[derive(Debug, Default)]
pub struct Got {
    pub objects: BTreeMap<String, Outcome>,
}

#[derive(Debug, Default)]
pub struct Outcome {
    /// The source sent it into the pipeline.
    pub listed: bool,
    /// Every `put` that wrote it.
    pub written: Vec<Written>,
    /// The reason on its problem route, or why it was not done.
    pub reason: Option<String>,
}

#[derive(Debug)]
pub struct Written {
    pub node: String,
    pub key: String,
    pub body: Option<Vec<u8>>,
}

/// Every difference between what `case` expects and what `got`, and `alerts` sent.
pub fn compare(case: &Case, got: &Got, alerts: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for (key, want) in &case.expect {
        let empty = Outcome::default();
        let had = got.objects.get(key).unwrap_or(&empty);
        match (want.listed.unwrap_or(true), had.listed) {
            (true, false) => {
                out.push(format!(
                    "{key}: never listed (not among the objects, or the source's prefix, suffix or regex leave it out)"
                ));
                continue;
            }
            (false, true) => out.push(format!("{key}: listed, though the case expects the source to leave it out")),
            (false, false) => continue,
            (true, true) => {}
        }
        let mut routes: Vec<String> = had.written.iter().map(|w| w.node.clone()).collect();
        routes.sort();
        if let Some(r) = &want.route {
            let expected = r.names();
            if expected != routes {
                out.push(lines(&format!("{key}: route"), &show(&expected), &show(&routes)));
            }
        }
        if let Some(k) = &want.key {
            if !had.written.iter().any(|w| &w.key == k) {
                let written: Vec<String> = had.written.iter().map(|w| w.key.clone()).collect();
                out.push(lines(&format!("{key}: key"), k, &show(&written)));
            }
        }
        let body = had.written.first().and_then(|w| w.body.as_deref());
        let parsed =
            body.map(|b| serde_json::from_slice::<Value>(b).map_err(|_| String::from_utf8_lossy(b).into_owned()));
        if let Some(expected) = &want.body {
            match &parsed {
                Some(Ok(v)) if v == expected && same_order(v, expected) => {}
                Some(Ok(v)) => out.push(json_diff(&format!("{key}: body"), expected, v)),
                Some(Err(text)) => out.push(lines(&format!("{key}: body (not JSON)"), &pretty(expected), text)),
                None => out.push(format!("{key}: body: nothing was written")),
            }
        }
        if let Some(part) = &want.body_contains {
            match &parsed {
                Some(Ok(v)) if contains(v, part) => {}
                Some(Ok(v)) => out.push(json_diff(&format!("{key}: body_contains (the body lacks these)"), part, v)),
                _ => out.push(format!("{key}: body_contains: no JSON body was written")),
            }
        }
        if let Some(r) = &want.reason {
            let had_reason = had.reason.clone().unwrap_or_default();
            if !had_reason.contains(r.as_str()) {
                out.push(lines(&format!("{key}: reason (a part of it)"), r, &had_reason));
            }
        }
    }
    let mut expected = case.alerts.clone().unwrap_or_default();
    let mut sent = alerts.to_vec();
    expected.sort();
    sent.sort();
    if expected != sent {
        let mut text = String::from("alerts (`-` expected, not sent; `+` sent, not expected):");
        let mut unmatched = sent.clone();
        for e in &expected {
            match unmatched.iter().position(|s| s == e) {
                Some(i) => drop(unmatched.remove(i)),
                None => text.push_str(&format!("\n  - {e}")),
            }
        }
        for s in &unmatched {
            text.push_str(&format!("\n  + {s}"));
        }
        out.push(text);
    }
    out
}

/// `what` with an expected and a got value.
fn lines(what: &str, expected: &str, got: &str) -> String {
    format!("{what}\n  - expected: {expected}\n  + got:      {got}")
}

fn show(v: &[String]) -> String {
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

/// Two JSON values as pretty text, the differing lines marked `-` (expected) and `+` (got).
fn json_diff(what: &str, expected: &Value, got: &Value) -> String {
    let (a, b) = (pretty(expected), pretty(got));
    let mut text = format!("{what} (`-` expected, `+` got):");
    for change in TextDiff::from_lines(&a, &b).iter_all_changes() {
        let sign = match change.tag() {
            ChangeTag::Delete => '-',
            ChangeTag::Insert => '+',
            ChangeTag::Equal => ' ',
        };
        text.push_str(&format!("\n  {sign} {}", change.value().trim_end_matches('\n')));
    }
    text
}

/// Objects' keys in the same order, all the way down (JSON values compare equal whatever
/// the order; a record's order is part of what it is).
fn same_order(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            x.keys().eq(y.keys()) && x.values().zip(y.values()).all(|(p, q)| same_order(p, q))
        }
        (Value::Array(x), Value::Array(y)) => x.iter().zip(y).all(|(p, q)| same_order(p, q)),
        _ => true,
    }
}

/// `got` has everything `part` has: the same scalars and arrays, objects with at least its
/// fields (recursively).
fn contains(got: &Value, part: &Value) -> bool {
    match (got, part) {
        (Value::Object(g), Value::Object(p)) => p.iter().all(|(k, v)| g.get(k).is_some_and(|gv| contains(gv, v))),
        _ => got == part,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn a_subset_is_contained() {
        assert!(super::contains(&json!({"a": 1, "b": {"c": 2, "d": 3}}), &json!({"b": {"c": 2}})));
        assert!(!super::contains(&json!({"a": 1}), &json!({"a": 2})));
        assert!(!super::contains(&json!({"a": [1, 2]}), &json!({"a": [1]})));
    }
}
