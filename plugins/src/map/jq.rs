//! jq programs, compiled once and run on JSON documents, with jaq (a pure-Rust jq).
//!
//! Documents are read and written with serde_json, as every other kind reads and writes
//! them (`arbitrary_precision`, `preserve_order`): a number keeps its spelling unless the
//! program computes it, object keys keep their order, and a `map` accepts exactly the
//! JSON the other kinds accept. Between the two, values are converted to and from jaq's
//! (`jaq_json::Val`); jaq keeps integers exact (big ones too) and decimals as written.
//! `tojson` is replaced by one that writes as serde_json does, so a value serialised into
//! a string by a program is the same text the compiled kinds write.

use crate::invalid::Invalid;
use jaq_core::load::{Arena, File, Loader};
use jaq_core::{data, unwrap_valr, Compiler, Ctx, Vars};
use jaq_json::{Num, Val};
use serde_json::Value;

type Data = data::JustLut<Val>;

/// A compiled program. Cheap to share: every run starts from the same compiled filter.
pub struct Program {
    filter: jaq_core::Filter<Data>,
}

/// Where a program is wrong: a 0-based line and column in its text, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl std::fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}, column {}: {}", self.line + 1, self.column + 1, self.message)
    }
}

impl Program {
    /// Compiles `code`; `$meta` is the one variable it may read besides its input.
    pub fn compile(code: &str) -> Result<Program, SyntaxError> {
        let defs = jaq_core::defs().chain(jaq_std::defs()).chain(jaq_json::defs());
        let funs = jaq_core::funs::<Data>()
            .chain(jaq_std::funs())
            .chain(jaq_json::funs().filter(|(name, _, _)| *name != "tojson"))
            .chain([jaq_core::native::run(("tojson", jaq_core::native::v(0), |cv| {
                jaq_core::native::bome(Ok(Val::utf8_str(to_json_text(&cv.1))))
            }))]);
        let arena = Arena::default();
        let modules = Loader::new(defs).load(&arena, File { code, path: () }).map_err(|errors| {
            let (at, message) = match errors.into_iter().next().map(|(_, e)| e) {
                Some(jaq_core::load::Error::Lex(e)) => {
                    e.first().map(|(expect, at)| (*at, format!("expected {}", expect.as_str()))).unwrap_or_default()
                }
                Some(jaq_core::load::Error::Parse(e)) => e
                    .first()
                    .map(|(expect, at)| {
                        let found = match at.split_whitespace().next() {
                            Some(t) => format!("`{}`", t.chars().take(20).collect::<String>()),
                            None => "the end of the program".into(),
                        };
                        let message = match expect.as_str() {
                            "nothing" => format!("unexpected {found}"),
                            what => format!("expected {what}, found {found}"),
                        };
                        (*at, message)
                    })
                    .unwrap_or_default(),
                Some(jaq_core::load::Error::Io(e)) => e.first().map(|(at, why)| (*at, why.clone())).unwrap_or_default(),
                None => ("", "the program could not be read".to_string()),
            };
            located(code, at, message)
        })?;
        let filter =
            Compiler::default().with_funs(funs).with_global_vars(["$meta"]).compile(modules).map_err(|errors| {
                let first = errors.into_iter().flat_map(|(_, e)| e).next();
                match first {
                    Some((name, undefined)) => {
                        located(code, name, format!("undefined {} `{name}`", undefined.as_str()))
                    }
                    None => located(code, "", "the program could not be compiled".into()),
                }
            })?;
        Ok(Program { filter })
    }

    /// Runs the program on `input` with `$meta`; its one output, or why there is none
    /// (an error, no value, several values).
    pub fn run(&self, input: &Value, meta: &Value) -> Result<Value, Invalid> {
        self.run_optional(input, meta)?.ok_or_else(|| "the program gave no value".into())
    }

    /// As [`Program::run`], with no value (`empty`, a `select` that is false) as `None`.
    pub fn run_optional(&self, input: &Value, meta: &Value) -> Result<Option<Value>, Invalid> {
        let ctx = Ctx::<Data>::new(&self.filter.lut, Vars::new([to_val(meta)]));
        let mut outputs = self.filter.id.run((ctx, to_val(input))).map(unwrap_valr);
        let first = match outputs.next() {
            None => return Ok(None),
            Some(Err(e)) => return Err(format!("the program failed: {}", error_text(e)).into()),
            Some(Ok(v)) => v,
        };
        if outputs.next().is_some() {
            return Err("the program gave several values; a map gives one (collect them with `[...]`)".into());
        }
        Ok(Some(to_json(&first)))
    }

    /// A predicate's answer, as jq's `any` reads one: true when one of its values is
    /// neither `false` nor `null`; false when it gives none (`empty`) or only those.
    pub fn holds(&self, input: &Value, meta: &Value) -> Result<bool, Invalid> {
        let ctx = Ctx::<Data>::new(&self.filter.lut, Vars::new([to_val(meta)]));
        for v in self.filter.id.run((ctx, to_val(input))).map(unwrap_valr) {
            match v {
                Err(e) => return Err(format!("the predicate failed: {}", error_text(e)).into()),
                Ok(Val::Null | Val::Bool(false)) => {}
                Ok(_) => return Ok(true),
            }
        }
        Ok(false)
    }
}

/// `error("x")` says `x`, as jq prints it; other errors as jaq describes them.
fn error_text(e: jaq_core::Error<Val>) -> String {
    match e.into_val() {
        Val::TStr(s) | Val::BStr(s) => String::from_utf8_lossy(&s).into_owned(),
        other => to_json_text(&other),
    }
}

/// A position in `code` from a slice of it (jaq reports errors as slices of the source).
fn located(code: &str, at: &str, message: String) -> SyntaxError {
    let (start, end) = (code.as_ptr() as usize, code.as_ptr() as usize + code.len());
    let offset = at.as_ptr() as usize;
    let offset = if (start..=end).contains(&offset) { offset - start } else { code.len() };
    let before = &code[..offset];
    let line = before.matches('\n').count();
    let column = before.rsplit('\n').next().map(|l| l.chars().count()).unwrap_or(0);
    SyntaxError { line, column, message }
}

/// serde_json's value as jaq's. Numbers go through jaq's own number reader, so integers
/// stay exact and decimals keep their text.
pub fn to_val(v: &Value) -> Val {
    match v {
        Value::Null => Val::Null,
        Value::Bool(b) => Val::Bool(*b),
        Value::Number(n) => {
            let text = n.to_string();
            if text == "-0" {
                // The one integer whose digits jaq would change (to `0`): kept as written.
                return Val::Num(Num::Dec(jaq_json::Rc::new(text)));
            }
            jaq_json::read::parse_single_num(text.as_bytes()).map(Val::Num).unwrap_or(Val::Null)
        }
        Value::String(s) => Val::from(s.clone()),
        Value::Array(a) => Val::Arr(jaq_json::Rc::new(a.iter().map(to_val).collect())),
        Value::Object(o) => {
            let mut map = jaq_json::Map::default();
            for (k, v) in o {
                map.insert(Val::from(k.clone()), to_val(v));
            }
            Val::Obj(jaq_json::Rc::new(map))
        }
    }
}

/// jaq's value as serde_json's.
pub fn to_json(v: &Val) -> Value {
    match v {
        Val::Null => Value::Null,
        Val::Bool(b) => Value::Bool(*b),
        Val::Num(n) => number(n),
        Val::TStr(s) | Val::BStr(s) => Value::String(String::from_utf8_lossy(s).into_owned()),
        Val::Arr(a) => Value::Array(a.iter().map(to_json).collect()),
        Val::Obj(o) => Value::Object(
            o.iter()
                .map(|(k, v)| {
                    let key = match k {
                        Val::TStr(s) | Val::BStr(s) => String::from_utf8_lossy(s).into_owned(),
                        other => to_json_text(other),
                    };
                    (key, to_json(v))
                })
                .collect(),
        ),
    }
}

/// A number as serde_json writes it: integers and decimals as their digits, computed
/// floats the shortest way that reads back the same; NaN and infinities as `null` (JSON
/// has no spelling for them).
fn number(n: &Num) -> Value {
    let text = match n {
        Num::Int(i) => return Value::from(*i as i64),
        Num::BigInt(b) => b.to_string(),
        Num::Float(f) if !f.is_finite() => return Value::Null,
        Num::Float(f) => {
            if f.fract() == 0.0 && f.abs() < 1e17 {
                // jq writes 3.0 as 3.
                format!("{}", *f as i64)
            } else {
                ryu::Buffer::new().format_finite(*f).to_string()
            }
        }
        Num::Dec(s) => s.to_string(),
    };
    serde_json::from_str::<serde_json::Number>(&text).map(Value::Number).unwrap_or(Value::Null)
}

/// A value written compactly, as serde_json writes it.
fn to_json_text(v: &Val) -> String {
    serde_json::to_string(&to_json(v)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(code: &str, input: &str) -> Result<String, String> {
        let p = Program::compile(code).map_err(|e| e.to_string())?;
        let input: Value = serde_json::from_str(input).unwrap();
        p.run(&input, &json!({"name": "a.json"})).map(|v| serde_json::to_string(&v).unwrap()).map_err(String::from)
    }

    #[test]
    fn values_keep_their_types_order_and_spelling() {
        let input = r#"{"b":12345678901234567890123,"a":1.50,"c":[1e5,-0,true,null],"d":"é\u0001"}"#;
        assert_eq!(
            run(".", input).unwrap(),
            r#"{"b":12345678901234567890123,"a":1.50,"c":[1e+5,-0,true,null],"d":"é\u0001"}"#
        );
        assert_eq!(run(".x = 1 | .b", input).unwrap(), "12345678901234567890123");
        assert_eq!(run(".c[0] | tojson", input).unwrap(), r#""1e+5""#);
        assert_eq!(run("{n: $meta.name, s: (1 + 2), h: (1 / 2)}", "{}").unwrap(), r#"{"n":"a.json","s":3,"h":0.5}"#);
    }

    #[test]
    fn failures_say_why() {
        assert_eq!(run("error(\"no date\")", "{}").unwrap_err(), "the program failed: no date");
        assert_eq!(run("empty", "{}").unwrap_err(), "the program gave no value");
        assert!(run(".[]", "[1,2]").unwrap_err().contains("several values"));
        let e = Program::compile(".a |\n  if . then 1 end end").err().unwrap();
        assert_eq!((e.line, e.column, e.message.as_str()), (1, 18, "unexpected `end`"), "{e}");
        let e = Program::compile(".a | nosuch(1)").err().unwrap();
        assert_eq!((e.line, e.column, e.message.as_str()), (0, 5, "undefined filter `nosuch`"));
    }
}
