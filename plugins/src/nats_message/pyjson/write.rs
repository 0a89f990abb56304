//! Writing JSON as Python's `json.dumps(obj)` does: `", "` and `": "`, `ensure_ascii`
//! escapes, floats as `repr` writes them.

use crate::invalid::Invalid;
use dqpipe_engine::api::body::BodyWriter;

use super::{Json, Str};

/// Where the writers put bytes: a `Vec`, or a [`BodyWriter`] that moves to a temporary file
/// past the spool threshold.
pub trait Sink {
    fn put(&mut self, bytes: &[u8]);
}

impl Sink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

impl Sink for BodyWriter {
    fn put(&mut self, bytes: &[u8]) {
        BodyWriter::put(self, bytes);
    }
}

/// Writes `s` as `json.dumps` writes a string.
pub fn write_str(out: &mut impl Sink, s: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let u = |out: &mut _, c: u32| {
        let h = |shift: u32| HEX[((c >> shift) & 0xF) as usize];
        Sink::put(out, &[b'\\', b'u', h(12), h(8), h(4), h(0)]);
    };
    out.put(b"\"");
    let mut i = 0;
    while i < s.len() {
        let b = s[i];
        match b {
            b'"' => out.put(b"\\\""),
            b'\\' => out.put(b"\\\\"),
            b'\n' => out.put(b"\\n"),
            b'\r' => out.put(b"\\r"),
            b'\t' => out.put(b"\\t"),
            8 => out.put(b"\\b"),
            12 => out.put(b"\\f"),
            0x20..=0x7E => {
                // A run of printable ASCII, copied at once.
                let end = i + super::scan::plain_run(&s[i..], true);
                out.put(&s[i..end]);
                i = end;
                continue;
            }
            0..=0x1F | 0x7F => u(out, u32::from(b)),
            _ => {
                let (cp, len) = decode_wtf8(&s[i..]);
                if cp >= 0x10000 {
                    let c = cp - 0x10000;
                    u(out, 0xD800 + (c >> 10));
                    u(out, 0xDC00 + (c & 0x3FF));
                } else {
                    u(out, cp);
                }
                i += len;
                continue;
            }
        }
        i += 1;
    }
    out.put(b"\"");
}

/// The code point at the start of `s` (WTF-8 this module wrote or checked) and its length.
fn decode_wtf8(s: &[u8]) -> (u32, usize) {
    let b = u32::from(s[0]);
    let cont = |k: usize| u32::from(s.get(k).copied().unwrap_or(0x80) & 0x3F);
    match s[0] {
        0xC0..=0xDF => (((b & 0x1F) << 6) | cont(1), 2),
        0xE0..=0xEF => (((b & 0x0F) << 12) | (cont(1) << 6) | cont(2), 3),
        _ => (((b & 0x07) << 18) | (cont(1) << 12) | (cont(2) << 6) | cont(3), 4),
    }
}

/// A float as Python's `repr` writes it: the shortest digits that read back as the same
/// double, an exact tie going to the even digit (ryu; Rust's own formatting rounds ties
/// up: 1256360419338641.25 is `...641.2` in Python, `...641.3` in Rust), in fixed notation
/// from 1e-4 to below 1e16 and in exponent notation otherwise, with `.0` on a whole number.
pub fn write_float(out: &mut impl Sink, f: f64) -> Result<(), Invalid> {
    if !f.is_finite() {
        return Err("a number out of range: Python would write `Infinity`, which is not JSON".into());
    }
    if f.is_sign_negative() {
        out.put(b"-");
    }
    if f == 0.0 {
        out.put(b"0.0");
        return Ok(());
    }
    let (digits, decpt) = shortest_digits(f.abs());
    let n = digits.len() as i32;
    if decpt <= -4 || decpt > 16 {
        out.put(&digits[..1]);
        if n > 1 {
            out.put(b".");
            out.put(&digits[1..]);
        }
        let e = decpt - 1;
        out.put(format!("e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs()).as_bytes());
    } else if decpt <= 0 {
        out.put(b"0.");
        out.put(&vec![b'0'; (-decpt) as usize]);
        out.put(&digits);
    } else if decpt < n {
        out.put(&digits[..decpt as usize]);
        out.put(b".");
        out.put(&digits[decpt as usize..]);
    } else {
        out.put(&digits);
        out.put(&vec![b'0'; (decpt - n) as usize]);
        out.put(b".0");
    }
    Ok(())
}

/// The shortest digits of a positive finite `f` and where its decimal point goes: `f` is
/// `0.DIGITS x 10^decpt`, as Python's dtoa gives them.
fn shortest_digits(f: f64) -> (Vec<u8>, i32) {
    let mut buf = ryu::Buffer::new();
    let text = buf.format_finite(f); // "1.5e-7", "123.45", "1e16"
    let (mantissa, exp) = text.split_once('e').unwrap_or((text, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let point = mantissa.find('.').unwrap_or(mantissa.len()) as i32;
    let all: Vec<u8> = mantissa.bytes().filter(u8::is_ascii_digit).collect();
    let lead = all.iter().take_while(|&&d| d == b'0').count();
    let mut digits = all[lead..].to_vec();
    while digits.len() > 1 && digits.last() == Some(&b'0') {
        digits.pop();
    }
    (digits, point + exp - lead as i32)
}

/// Writes `v` as `json.dumps(v)` does, with an explicit stack (no recursion).
pub fn write(out: &mut impl Sink, v: &Json) -> Result<(), Invalid> {
    enum Frame<'a> {
        Array(std::slice::Iter<'a, Json>),
        Object(indexmap::map::Iter<'a, Str, Json>),
    }
    let mut stack: Vec<Frame<'_>> = Vec::new();
    let mut next = Some(v);
    // A container was opened and has no value yet: no `, ` before the next one.
    let mut opened = false;
    loop {
        if let Some(v) = next.take() {
            match v {
                Json::Null => out.put(b"null"),
                Json::Bool(true) => out.put(b"true"),
                Json::Bool(false) => out.put(b"false"),
                Json::Int(t) => out.put(t.as_bytes()),
                Json::Float(f) => write_float(out, *f)?,
                Json::Str(s) => write_str(out, s),
                Json::Array(a) => {
                    out.put(b"[");
                    opened = true;
                    stack.push(Frame::Array(a.iter()));
                }
                Json::Object(m) => {
                    out.put(b"{");
                    opened = true;
                    stack.push(Frame::Object(m.iter()));
                }
            }
        }
        // The next value of the innermost open container, or close it.
        let Some(top) = stack.last_mut() else { return Ok(()) };
        let first = std::mem::take(&mut opened);
        match top {
            Frame::Array(items) => match items.next() {
                Some(item) => {
                    if !first {
                        out.put(b", ");
                    }
                    next = Some(item);
                }
                None => {
                    out.put(b"]");
                    stack.pop();
                }
            },
            Frame::Object(entries) => match entries.next() {
                Some((k, item)) => {
                    if !first {
                        out.put(b", ");
                    }
                    write_str(out, k);
                    out.put(b": ");
                    next = Some(item);
                }
                None => {
                    out.put(b"}");
                    stack.pop();
                }
            },
        }
    }
}
