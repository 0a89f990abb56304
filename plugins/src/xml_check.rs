//! `xml_check`: passes files that are well-formed XML, unchanged; the rest go to `failed`
//! with the reason and its place. The OAG ingest delivers XML as it is and moves files that
//! do not parse to a failed-to-parse place.
//!
//! Well-formed here: one root element, every element closed by a tag of its name, names
//! and text in UTF-8, nothing but comments, processing instructions and white space
//! outside the root (quick-xml reads the tags; the rules above the tags are checked
//! here). Not checked: DTDs and schemas (nothing is fetched), entity references beyond
//! XML's own.

use std::sync::Arc;

use dqpipe_engine::api::{BuildContext, Built, ConfigError, KindConfig, PortDecl, Role};
use quick_xml::events::Event;
use schemars::JsonSchema;
use serde::Deserialize;

use crate::parse::Check;

/// Settings of an `xml_check` node.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct XmlCheckConfig {
    /// Files larger than this fail without being parsed.
    #[serde(default = "crate::parse::default_max_bytes")]
    #[schemars(range(min = 1, max = 4294967296u64))]
    pub max_bytes: u64,
}

const PORTS: &[PortDecl] = &[
    PortDecl::out("ok", "well-formed XML, unchanged"),
    PortDecl::problem("failed", &["reason"], "anything else, with `reason` (and the byte where it goes wrong)"),
];

impl KindConfig for XmlCheckConfig {
    const NAME: &'static str = "xml_check";
    const SUMMARY: &'static str = "Passes well-formed XML files unchanged; the rest go to `failed` with the reason.";
    const ROLE: Role = Role::Processor;
    const PORTS: &'static [PortDecl] = PORTS;
    const EXAMPLE: &'static str = include_str!("kind_examples/xml_check.yaml");
    const CPU_BOUND: bool = true;
    const READS_WHOLE_BODY: bool = true;
    fn build(self, _ctx: &BuildContext) -> Result<Built, ConfigError> {
        Ok(Built::Processor(Arc::new(Check { kind: Self::NAME, max_bytes: self.max_bytes, check })))
    }
}

/// Why `bytes` is not well-formed XML, if it is not.
pub fn check(bytes: &[u8]) -> Result<(), crate::invalid::Invalid> {
    well_formed(bytes).map_err(crate::invalid::Invalid)
}

fn well_formed(bytes: &[u8]) -> Result<(), String> {
    let mut reader = quick_xml::Reader::from_reader(bytes);
    let mut buf = Vec::new();
    let (mut depth, mut roots) = (0usize, 0usize);
    loop {
        let at = reader.buffer_position();
        let event = reader.read_event_into(&mut buf).map_err(|e| format!("not XML at byte {at}: {e}"))?;
        let outside = depth == 0;
        match event {
            Event::Start(_) | Event::Empty(_) if outside && roots == 1 => {
                return Err(format!("not XML: a second root element at byte {at}"))
            }
            Event::Start(_) => {
                depth += 1;
                roots += usize::from(outside);
            }
            Event::Empty(_) => roots += usize::from(outside),
            Event::End(_) => depth -= 1,
            Event::Text(t) if outside && !t.iter().all(u8::is_ascii_whitespace) => {
                return Err(format!("not XML: text outside the root element at byte {at}"))
            }
            Event::Text(t) => {
                std::str::from_utf8(&t).map_err(|_| format!("not XML: text that is not UTF-8 at byte {at}"))?;
            }
            Event::Eof if depth > 0 => return Err(format!("not XML: {depth} elements not closed at the end")),
            Event::Eof if roots == 0 => return Err("not XML: no root element".into()),
            Event::Eof => return Ok(()),
            _ => {}
        }
        buf.clear();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn well_formed_is_what_xml_says() {
        let ok = ["<a/>", "<?xml version=\"1.0\"?>\n<!-- c --><FIMSSR><Flight n=\"1\">BA &amp; co</Flight></FIMSSR>\n"];
        for x in ok {
            assert_eq!(super::check(x.as_bytes()), Ok(()), "{x}");
        }
        for (x, says) in [
            ("", "no root element"),
            ("<a><b></a>", "not XML at byte"),
            ("<a>", "not closed"),
            ("<a/><b/>", "a second root element"),
            ("<a/>trailing", "text outside the root"),
            ("{\"json\": 1}", "text outside the root"),
        ] {
            let e = super::check(x.as_bytes()).unwrap_err();
            assert!(e.0.contains(says), "{x}: {e}");
        }
    }
}
