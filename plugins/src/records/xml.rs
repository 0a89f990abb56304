//! XML records: each element named `xml.record`, wherever it is, becomes one JSON object.
//!
//! The mapping (README, "Records"): an element's attributes are keys `@name`; its child
//! elements are keys by their name, a name that repeats giving an array in document order;
//! its text is the key `#text`, or the element's whole value when it has neither
//! attributes nor children (`<ARCID>BAW1</ARCID>` is `"ARCID": "BAW1"`). Every value is a
//! string, as the document gives it, entities and character references resolved;
//! whitespace between elements is dropped, text is kept as written. Namespace prefixes
//! stay part of the name (`ns:Flight`). A document that is not well-formed stops the
//! reading at that point with the reason: the records before it have gone on.

use quick_xml::events::{BytesStart, Event};
use serde_json::{Map, Value};

/// The deepest a record's elements may nest, the record included. Each level may add an
/// array (a repeated name) as well as an object, so the record's JSON nests at most 128
/// deep: what serde_json, and so the nodes after this one, read back. A deeper record is
/// refused as malformed is, before a tree that deep is built: serialising or dropping one
/// recurses and would overflow the thread's stack.
pub const MAX_DEPTH: usize = 64;

/// One element being read: its object so far and its text.
struct Open {
    name: String,
    fields: Map<String, Value>,
    text: String,
}

impl Open {
    fn new(e: &BytesStart) -> Result<Open, String> {
        let name = String::from_utf8_lossy(e.name().as_ref()).into_owned();
        let mut fields = Map::new();
        for a in e.attributes() {
            let a = a.map_err(|e| format!("an attribute of <{name}>: {e}"))?;
            let key = format!("@{}", String::from_utf8_lossy(a.key.as_ref()));
            let value = a.unescape_value().map_err(|e| format!("an attribute of <{name}>: {e}"))?;
            fields.insert(key, Value::from(value.into_owned()));
        }
        Ok(Open { name, fields, text: String::new() })
    }

    /// The element as JSON: its text alone, or its fields with the text as `#text`.
    fn value(mut self) -> Value {
        if self.fields.is_empty() {
            return Value::from(self.text);
        }
        if !self.text.trim().is_empty() {
            self.fields.insert("#text".into(), Value::from(self.text));
        }
        Value::Object(self.fields)
    }
}

/// Adds `value` under `name`: a second one makes an array.
fn add(fields: &mut Map<String, Value>, name: String, value: Value) {
    match fields.get_mut(&name) {
        None => {
            fields.insert(name, value);
        }
        Some(Value::Array(a)) => a.push(value),
        Some(first) => {
            let first = first.take();
            fields.insert(name, Value::Array(vec![first, value]));
        }
    }
}

/// Reads every `record` element of `r`, handing each (its number, from 1) to `send`
/// (false: nobody takes more); `Err` at the first place that is not well-formed.
/// A record of more than `cap` bytes is refused at its start.
pub(super) fn read(
    r: impl std::io::Read,
    record: &str,
    cap: u64,
    send: impl FnMut(u64, Value) -> bool,
) -> Result<(), crate::invalid::Invalid> {
    read_records(r, record, cap, send).map_err(crate::invalid::Invalid)
}

fn read_records(
    r: impl std::io::Read,
    record: &str,
    cap: u64,
    mut send: impl FnMut(u64, Value) -> bool,
) -> Result<(), String> {
    let mut reader = quick_xml::Reader::from_reader(std::io::BufReader::new(r));
    let (mut buf, mut open, mut n): (Vec<u8>, Vec<Open>, u64) = (Vec::new(), Vec::new(), 0);
    let mut began = 0;
    loop {
        let at = reader.buffer_position();
        if open.is_empty() {
            began = at;
        } else if at - began > cap {
            return Err(format!(
                "a <{}> from byte {began} longer than max_record_bytes ({cap} bytes): refused, the rest not read \
                 (raise `max_record_bytes` if the feed's records are this long)",
                open[0].name
            ));
        }
        let event = reader.read_event_into(&mut buf).map_err(|e| format!("not XML at byte {at}: {e}"))?;
        let text = |t: Result<std::borrow::Cow<'_, str>, _>| -> Result<String, String> {
            t.map(|c| c.into_owned()).map_err(|_| format!("text that is not UTF-8 at byte {at}"))
        };
        match event {
            Event::Start(e) if !open.is_empty() || e.name().as_ref() == record.as_bytes() => {
                if open.len() >= MAX_DEPTH {
                    let outer = &open[0].name;
                    return Err(format!(
                        "a <{outer}> nested deeper than {MAX_DEPTH} elements at byte {at}: refused, as a record \
                         dqpipe could not pass on as JSON"
                    ));
                }
                open.push(Open::new(&e)?)
            }
            Event::Empty(e) if !open.is_empty() || e.name().as_ref() == record.as_bytes() => {
                let element = Open::new(&e)?;
                if !close(&mut open, element, &mut n, &mut send) {
                    return Ok(());
                }
            }
            Event::End(_) => {
                if let Some(element) = open.pop() {
                    if !close(&mut open, element, &mut n, &mut send) {
                        return Ok(());
                    }
                }
            }
            Event::Text(t) => {
                if let Some(o) = open.last_mut() {
                    o.text.push_str(&text(t.decode())?);
                }
            }
            Event::CData(t) => {
                if let Some(o) = open.last_mut() {
                    o.text.push_str(&text(t.decode())?);
                }
            }
            Event::GeneralRef(r) => {
                if let Some(o) = open.last_mut() {
                    let name = text(r.decode())?;
                    let resolved = match r.resolve_char_ref() {
                        Ok(Some(c)) => c.to_string(),
                        _ => quick_xml::escape::resolve_predefined_entity(&name)
                            .ok_or_else(|| format!("an unknown entity `&{name};` at byte {at}"))?
                            .to_string(),
                    };
                    o.text.push_str(&resolved);
                }
            }
            Event::Eof if !open.is_empty() => return Err(format!("not XML: <{}> not closed at the end", open[0].name)),
            Event::Eof => return Ok(()),
            _ => {}
        }
        buf.clear();
    }
}

/// Closes `element`: into its parent, or, the record itself, out to `send`.
fn close(open: &mut [Open], element: Open, n: &mut u64, send: &mut impl FnMut(u64, Value) -> bool) -> bool {
    let name = element.name.clone();
    match open.last_mut() {
        Some(parent) => {
            add(&mut parent.fields, name, element.value());
            true
        }
        None => {
            *n += 1;
            send(*n, Value::Object(element.fields_with_text()))
        }
    }
}

impl Open {
    /// A record is always an object: its text, if any, under `#text`.
    fn fields_with_text(mut self) -> Map<String, Value> {
        if !self.text.trim().is_empty() {
            self.fields.insert("#text".into(), Value::from(self.text));
        }
        self.fields
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    fn records(xml: &str) -> Result<Vec<(u64, serde_json::Value)>, crate::invalid::Invalid> {
        let mut got = Vec::new();
        super::read(xml.as_bytes(), "Flight", 1 << 20, |n, v| {
            got.push((n, v));
            true
        })
        .map(|()| got)
    }

    #[test]
    fn elements_attributes_and_text_map_as_the_readme_says() {
        let xml = r#"<?xml version="1.0"?>
<FIMSSR date="2022-01-28">
  <Flights>
    <Flight n="1"><ARCID>BAW1</ARCID><Leg>LHR</Leg><Leg>JFK</Leg><Note kind="x">A &amp; B &#65;</Note></Flight>
    <Flight n="2"/>
    <Flight><![CDATA[<raw>]]></Flight>
  </Flights>
</FIMSSR>"#;
        assert_eq!(
            records(xml).unwrap(),
            [
                (
                    1,
                    json!({"@n": "1", "ARCID": "BAW1", "Leg": ["LHR", "JFK"], "Note": {"@kind": "x", "#text": "A & B A"}})
                ),
                (2, json!({"@n": "2"})),
                (3, json!({"#text": "<raw>"})),
            ]
        );
    }

    #[test]
    fn a_document_cut_short_stops_with_the_records_before_it_read() {
        let mut got = 0;
        let e = super::read("<a><Flight/><Flight><b>".as_bytes(), "Flight", 1 << 20, |_, _| {
            got += 1;
            true
        })
        .unwrap_err();
        assert_eq!(got, 1);
        assert!(e.0.contains("not closed"), "{e}");
        assert!(records("<a><Flight>&nosuch;</Flight></a>").unwrap_err().0.contains("unknown entity"));
    }

    #[test]
    fn a_record_longer_than_the_cap_is_refused_at_its_start() {
        let xml = format!("<doc><Flight/><Flight>{}</Flight></doc>", "<a>x</a>".repeat(1000));
        let mut kept = 0;
        let e = super::read(xml.as_bytes(), "Flight", 4096, |_, _| {
            kept += 1;
            true
        })
        .unwrap_err();
        assert!(e.0.contains("a <Flight> from byte 14 longer than max_record_bytes (4096 bytes)"), "{e}");
        assert_eq!(kept, 1);
        assert_eq!(records(&xml).unwrap().len(), 2);
    }

    #[test]
    fn a_record_nested_too_deep_is_refused_and_the_records_before_it_kept() {
        let deep = |n: usize| format!("<Flight>{}x{}</Flight>", "<a>".repeat(n - 1), "</a>".repeat(n - 1));
        // As deep as allowed, with a repeated name (an array) at every level: read, and its
        // JSON read back by serde_json.
        let mut arrays = "<a>x</a><a/>".to_string();
        for _ in 2..super::MAX_DEPTH {
            arrays = format!("<a>{arrays}</a><a/>");
        }
        for xml in [deep(super::MAX_DEPTH), format!("<Flight>{arrays}</Flight>")] {
            let got = records(&format!("<doc><Flight/>{xml}</doc>")).unwrap();
            let json = serde_json::to_string(&got[1].1).unwrap();
            assert!(serde_json::from_str::<serde_json::Value>(&json).is_ok(), "{json}");
        }
        // One deeper, or 200,000 deep (a stack overflow once): refused, the first record kept.
        for n in [super::MAX_DEPTH + 1, 200_000] {
            let mut kept = 0;
            let xml = format!("<doc><Flight/>{}</doc>", deep(n));
            let e = super::read(xml.as_bytes(), "Flight", 1 << 30, |_, _| {
                kept += 1;
                true
            })
            .unwrap_err();
            assert!(e.0.contains("nested deeper than 64 elements"), "{e}");
            assert_eq!(kept, 1);
        }
    }
}
