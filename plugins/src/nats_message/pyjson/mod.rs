//! JSON as Python 3's `json` module reads it (`json.loads`) and writes it with default
//! arguments (`json.dumps(obj)`): the `python` output style of `nats_message`, so that its
//! output is byte for byte what the job dqpipe replaces wrote.
//!
//! Hand-written, because no crate reads and writes this dialect: serde_json refuses lone
//! surrogate escapes (`"\ud800"`, which RFC 8259's grammar allows and Python carries
//! through), parses by recursion (a limit of 128 levels, or a stack overflow without it),
//! and writes neither Python's float `repr` nor its `ensure_ascii` escapes. Here parsing
//! and writing use explicit stacks, so depth is bounded by [`MAX_DEPTH`] and not by the
//! thread's stack, and a deep tree is also dropped without recursion.
//!
//! What Python does, and this does:
//! - strings may hold lone surrogates (kept as WTF-8 here); objects keep the first
//!   position and the last value of a repeated key (a dict);
//! - an integer is exact (`-0` is `0`); a number with a fraction or exponent is the nearest
//!   double, written as `repr` writes it (`1e5` -> `100000.0`, `1.5e-7` -> `1.5e-07`);
//!   one out of range (`1e400`) is refused, as Python would write the non-JSON `Infinity`;
//!   integers of any length are kept digit for digit: the job dqpipe replaces ran Python
//!   3.7, before 3.11's `int_max_str_digits` (4,300) refused longer ones, and wrote them;
//! - `NaN` and `Infinity` literals, which Python accepts, are refused (they are not JSON);
//! - written with `", "` and `": "`, every character outside printable ASCII escaped as
//!   `\uXXXX` (lowercase hex; surrogate pairs above U+FFFF), `\n`-style escapes for the
//!   five that have one.

use indexmap::IndexMap;

mod scan;
mod write;
pub use write::{write, write_float, write_str, Sink};

/// The deepest nesting read: Python's own recursion limit is 1,000, so the job dqpipe
/// replaces wrote files up to about 990 levels. Deeper files are refused with a reason.
pub const MAX_DEPTH: usize = 1000;

/// A string as Python holds it: WTF-8 (UTF-8 that may also encode lone surrogates).
pub type Str = Box<[u8]>;

#[derive(Debug)]
pub enum Json {
    Null,
    Bool(bool),
    /// An integer, its JSON text.
    Int(Box<str>),
    Float(f64),
    Str(Str),
    Array(Vec<Json>),
    Object(IndexMap<Str, Json>),
}

/// A parsed document; dropped without recursion.
pub struct Doc(pub Json);

impl Drop for Doc {
    fn drop(&mut self) {
        let mut stack = vec![std::mem::replace(&mut self.0, Json::Null)];
        while let Some(v) = stack.pop() {
            match v {
                Json::Array(a) => stack.extend(a),
                Json::Object(m) => stack.extend(m.into_values()),
                _ => {}
            }
        }
    }
}

/// Reads a document as `json.loads` would; the error says what and where.
pub fn parse(input: &[u8]) -> Result<Doc, crate::invalid::Invalid> {
    let mut p = Parser { s: input, i: 0 };
    let doc = Doc(p.document()?);
    p.ws();
    if p.i != input.len() {
        return Err(p.error("extra data after the document").into());
    }
    Ok(doc)
}

/// A container being read: its values so far, and for an object the key of the value
/// being read.
enum Open {
    Array(Vec<Json>),
    Object(IndexMap<Str, Json>, Option<Str>),
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn error(&self, what: &str) -> String {
        format!("not valid JSON: {what} at byte {}", self.i)
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.s.get(self.i) {
            self.i += 1;
        }
    }

    fn eat(&mut self, b: u8) -> bool {
        self.ws();
        let hit = self.s.get(self.i) == Some(&b);
        self.i += usize::from(hit);
        hit
    }

    /// The whole document, one value at a time, with the open containers on a stack.
    fn document(&mut self) -> Result<Json, String> {
        let mut stack: Vec<Open> = Vec::new();
        loop {
            // Read a value, or open a container (and go on with its first value).
            self.ws();
            let mut value = match self.s.get(self.i) {
                Some(b'[') | Some(b'{') if stack.len() >= MAX_DEPTH => {
                    return Err(format!("nested deeper than {MAX_DEPTH} levels"));
                }
                Some(b'[') => {
                    self.i += 1;
                    if !self.eat(b']') {
                        stack.push(Open::Array(Vec::new()));
                        continue;
                    }
                    Json::Array(Vec::new())
                }
                Some(b'{') => {
                    self.i += 1;
                    if !self.eat(b'}') {
                        let key = self.key()?;
                        stack.push(Open::Object(IndexMap::new(), Some(key)));
                        continue;
                    }
                    Json::Object(IndexMap::new())
                }
                _ => self.scalar()?,
            };
            // Put it in its container; close the containers that end here.
            loop {
                match stack.last_mut() {
                    None => return Ok(value),
                    Some(Open::Array(items)) => {
                        items.push(value);
                        if self.eat(b',') {
                            break;
                        }
                        if !self.eat(b']') {
                            return Err(self.error("expected `,` or `]`"));
                        }
                    }
                    Some(Open::Object(map, key)) => {
                        map.insert(key.take().unwrap_or_default(), value);
                        if self.eat(b',') {
                            *key = Some(self.key()?);
                            break;
                        }
                        if !self.eat(b'}') {
                            return Err(self.error("expected `,` or `}`"));
                        }
                    }
                }
                value = match stack.pop() {
                    Some(Open::Array(items)) => Json::Array(items),
                    Some(Open::Object(map, _)) => Json::Object(map),
                    None => unreachable!("the stack had a last element"),
                };
            }
        }
    }

    /// `"key":`
    fn key(&mut self) -> Result<Str, String> {
        self.ws();
        if self.s.get(self.i) != Some(&b'"') {
            return Err(self.error("expected a property name in double quotes"));
        }
        let k = self.string()?;
        if !self.eat(b':') {
            return Err(self.error("expected `:`"));
        }
        Ok(k)
    }

    fn scalar(&mut self) -> Result<Json, String> {
        let rest = &self.s[self.i..];
        for (word, v) in [(&b"null"[..], Json::Null), (b"true", Json::Bool(true)), (b"false", Json::Bool(false))] {
            if rest.starts_with(word) {
                self.i += word.len();
                return Ok(v);
            }
        }
        match rest.first() {
            Some(b'"') => Ok(Json::Str(self.string()?)),
            Some(b'-' | b'0'..=b'9') => self.number(),
            None => Err(self.error("the document ends where a value was expected")),
            Some(_) => Err(self.error("expected a value")),
        }
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`, Python's NUMBER_RE.
    fn number(&mut self) -> Result<Json, String> {
        let start = self.i;
        let digits = |p: &mut Self| {
            let from = p.i;
            while p.s.get(p.i).is_some_and(u8::is_ascii_digit) {
                p.i += 1;
            }
            p.i - from
        };
        self.i += usize::from(self.s[self.i] == b'-');
        let int_digits = digits(self);
        if int_digits == 0 || (int_digits > 1 && self.s[self.i - int_digits] == b'0') {
            return Err(self.error("invalid number"));
        }
        let mut float = false;
        if self.s.get(self.i) == Some(&b'.') && self.s.get(self.i + 1).is_some_and(u8::is_ascii_digit) {
            self.i += 1;
            digits(self);
            float = true;
        }
        if let Some(b'e' | b'E') = self.s.get(self.i) {
            let save = self.i;
            self.i += 1;
            if let Some(b'+' | b'-') = self.s.get(self.i) {
                self.i += 1;
            }
            if digits(self) == 0 {
                self.i = save; // Python stops the number before a bare `e`.
            } else {
                float = true;
            }
        }
        let text = std::str::from_utf8(&self.s[start..self.i]).map_err(|_| self.error("invalid number"))?;
        if float {
            return text.parse::<f64>().map(Json::Float).map_err(|_| self.error("invalid number"));
        }
        Ok(Json::Int(if text == "-0" { "0".into() } else { text.into() }))
    }

    /// A string, unescaped into WTF-8: `\ud83d\ude00` is one character, a lone `\ud800`
    /// stays a lone surrogate, as in Python.
    fn string(&mut self) -> Result<Str, String> {
        self.i += 1; // the opening quote
        let mut out = Vec::new();
        loop {
            let start = self.i;
            self.i += scan::plain_run(&self.s[self.i..], false);
            let run = &self.s[start..self.i];
            std::str::from_utf8(run).map_err(|_| self.error("invalid UTF-8 in a string"))?;
            out.extend_from_slice(run);
            match self.s.get(self.i) {
                Some(b'"') => {
                    self.i += 1;
                    return Ok(out.into_boxed_slice());
                }
                Some(b'\\') => self.escape(&mut out)?,
                Some(_) => return Err(self.error("a control character in a string")),
                None => return Err(self.error("a string that does not end")),
            }
        }
    }

    fn escape(&mut self, out: &mut Vec<u8>) -> Result<(), String> {
        let c = self.s.get(self.i + 1).copied();
        self.i += 2;
        let simple = match c {
            Some(b'"') => b'"',
            Some(b'\\') => b'\\',
            Some(b'/') => b'/',
            Some(b'b') => 8,
            Some(b'f') => 12,
            Some(b'n') => b'\n',
            Some(b'r') => b'\r',
            Some(b't') => b'\t',
            Some(b'u') => {
                let mut cp = self.hex4()?;
                let low = self.s.get(self.i..self.i + 2) == Some(b"\\u");
                if (0xD800..0xDC00).contains(&cp) && low {
                    let save = self.i;
                    self.i += 2;
                    let lo = self.hex4()?;
                    if (0xDC00..0xE000).contains(&lo) {
                        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                    } else {
                        self.i = save; // not a pair: the next escape is read on its own
                    }
                }
                push_wtf8(out, cp);
                return Ok(());
            }
            _ => return Err(self.error("an invalid escape")),
        };
        out.push(simple);
        Ok(())
    }

    fn hex4(&mut self) -> Result<u32, String> {
        let hex = self.s.get(self.i..self.i + 4).and_then(|h| std::str::from_utf8(h).ok());
        let cp =
            hex.and_then(|h| u32::from_str_radix(h, 16).ok()).ok_or_else(|| self.error("an invalid \\u escape"))?;
        self.i += 4;
        Ok(cp)
    }
}

/// Encodes a code point (a surrogate too) as UTF-8 does.
fn push_wtf8(out: &mut Vec<u8>, cp: u32) {
    match cp {
        0..=0x7F => out.push(cp as u8),
        0x80..=0x7FF => out.extend_from_slice(&[0xC0 | (cp >> 6) as u8, 0x80 | (cp & 0x3F) as u8]),
        0x800..=0xFFFF => {
            out.extend_from_slice(&[0xE0 | (cp >> 12) as u8, 0x80 | ((cp >> 6) & 0x3F) as u8, 0x80 | (cp & 0x3F) as u8])
        }
        _ => out.extend_from_slice(&[
            0xF0 | (cp >> 18) as u8,
            0x80 | ((cp >> 12) & 0x3F) as u8,
            0x80 | ((cp >> 6) & 0x3F) as u8,
            0x80 | (cp & 0x3F) as u8,
        ]),
    }
}
