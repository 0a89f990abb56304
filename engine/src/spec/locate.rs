//! Where things are in a spec file: a map from a value's path (`nodes.write.key`) to its
//! line and column, so that every error, including those found after parsing (an unknown
//! input, a cycle), names file:line:column.
//!
//! serde_norway and toml report positions only for their own parse errors; the checks the
//! engine makes afterwards work on paths, and this map turns a path into a position.

use std::collections::HashMap;
use std::fmt;

/// A path to a value inside a spec: `nodes.scan.input[1]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct SpecPath(Vec<Seg>);

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Seg {
    Key(String),
    Index(usize),
}

impl SpecPath {
    pub fn root() -> Self {
        Self::default()
    }
    pub fn key(&self, k: &str) -> Self {
        let mut v = self.0.clone();
        v.push(Seg::Key(k.to_string()));
        Self(v)
    }
    pub fn index(&self, i: usize) -> Self {
        let mut v = self.0.clone();
        v.push(Seg::Index(i));
        Self(v)
    }
    pub fn parent(&self) -> Option<Self> {
        if self.0.is_empty() {
            None
        } else {
            Some(Self(self.0[..self.0.len() - 1].to_vec()))
        }
    }
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }
    /// Appends a path as printed by serde_path_to_error (`a.b[2].c`).
    pub fn join_dotted(&self, dotted: &str) -> Self {
        let mut out = self.clone();
        if dotted.is_empty() || dotted == "." {
            return out;
        }
        for part in dotted.split('.') {
            let mut rest = part;
            if let Some(pos) = rest.find('[') {
                let (k, idx) = rest.split_at(pos);
                if !k.is_empty() {
                    out = out.key(k);
                }
                rest = idx;
                for i in rest.split('[').filter(|s| !s.is_empty()) {
                    match i.trim_end_matches(']').parse::<usize>() {
                        Ok(n) => out = out.index(n),
                        Err(_) => out = out.key(i.trim_end_matches(']')),
                    }
                }
            } else {
                out = out.key(rest);
            }
        }
        out
    }
}

impl fmt::Display for SpecPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("(top level)");
        }
        for (i, s) in self.0.iter().enumerate() {
            match s {
                Seg::Key(k) if i == 0 => write!(f, "{k}")?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// A 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

/// Positions of every key and sequence element in one spec file.
#[derive(Debug, Default)]
pub struct SourceMap {
    positions: HashMap<SpecPath, Pos>,
    /// Keys written twice in one mapping: the path, where it first was, where again.
    pub duplicates: Vec<(SpecPath, Pos, Pos)>,
}

impl SourceMap {
    /// The position of `path`, or of its nearest ancestor that has one.
    pub fn locate(&self, path: &SpecPath) -> Option<Pos> {
        let mut p = Some(path.clone());
        while let Some(cur) = p {
            if let Some(pos) = self.positions.get(&cur) {
                return Some(*pos);
            }
            p = cur.parent();
        }
        None
    }

    /// The position where a YAML document first nests deeper than `max` mappings and
    /// sequences, in one pass over its events (the parsers behind serde take time
    /// quadratic in the depth before their own limit stops them).
    pub fn yaml_too_deep(text: &str, max: usize) -> Option<Pos> {
        use saphyr_parser::{Event, Parser};
        let mut depth = 0usize;
        for ev in Parser::new_from_str(text) {
            let (ev, span) = match ev {
                Ok(x) => x,
                // The scanner has a nesting limit of its own (flow collections).
                Err(e) if e.info().contains("recursion limit") => {
                    return Some(Pos { line: e.marker().line(), column: e.marker().col() + 1 })
                }
                // Other syntax errors are reported, with their place, by the YAML reader.
                Err(_) => return None,
            };
            match ev {
                Event::MappingStart(..) | Event::SequenceStart(..) => {
                    depth += 1;
                    if depth > max {
                        return Some(Pos { line: span.start.line(), column: span.start.col() + 1 });
                    }
                }
                Event::MappingEnd | Event::SequenceEnd => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        None
    }

    /// Builds the map of a YAML document from saphyr-parser's event stream. A document that
    /// does not parse gives an empty map; serde_norway reports that error with its position.
    pub fn from_yaml(text: &str) -> Self {
        use saphyr_parser::{Event, Parser};
        enum Frame {
            Map { path: SpecPath, key: Option<String> },
            Seq { path: SpecPath, next: usize },
        }
        let mut map = SourceMap::default();
        let mut stack: Vec<Frame> = Vec::new();
        for ev in Parser::new_from_str(text) {
            let Ok((ev, span)) = ev else { break };
            let pos = Pos { line: span.start.line(), column: span.start.col() + 1 };
            let is_node =
                matches!(ev, Event::Scalar(..) | Event::Alias(_) | Event::MappingStart(..) | Event::SequenceStart(..));
            // The path of this node, when it is a value (not a mapping key).
            let mut node_path = None;
            if is_node {
                match stack.last_mut() {
                    Some(Frame::Map { path, key }) => match key.take() {
                        None => {
                            // This node is a key.
                            let k = match &ev {
                                Event::Scalar(s, ..) => s.to_string(),
                                _ => String::from("?"),
                            };
                            match map.positions.entry(path.key(&k)) {
                                std::collections::hash_map::Entry::Occupied(first) => {
                                    map.duplicates.push((path.key(&k), *first.get(), pos))
                                }
                                std::collections::hash_map::Entry::Vacant(v) => {
                                    v.insert(pos);
                                }
                            }
                            *key = Some(k);
                            if matches!(ev, Event::MappingStart(..) | Event::SequenceStart(..)) {
                                // A complex key: parse through it without recording.
                                let p = path.key("?");
                                stack.push(Frame::Map { path: p, key: Some("?".into()) });
                            }
                            continue;
                        }
                        Some(k) => node_path = Some(path.key(&k)),
                    },
                    Some(Frame::Seq { path, next }) => {
                        let p = path.index(*next);
                        *next += 1;
                        map.positions.entry(p.clone()).or_insert(pos);
                        node_path = Some(p);
                    }
                    None => {
                        map.positions.entry(SpecPath::root()).or_insert(pos);
                        node_path = Some(SpecPath::root());
                    }
                }
            }
            match ev {
                Event::MappingStart(..) => stack.push(Frame::Map { path: node_path.unwrap_or_default(), key: None }),
                Event::SequenceStart(..) => stack.push(Frame::Seq { path: node_path.unwrap_or_default(), next: 0 }),
                Event::MappingEnd | Event::SequenceEnd => {
                    stack.pop();
                }
                _ => {}
            }
        }
        map
    }

    /// Builds the map of a TOML document from toml's spanned parse tree.
    pub fn from_toml(text: &str) -> Self {
        use toml::de::{DeTable, DeValue};
        let lines = LineIndex::new(text);
        let mut map = SourceMap::default();
        fn walk_value(map: &mut SourceMap, lines: &LineIndex, path: SpecPath, v: &DeValue<'_>) {
            match v {
                DeValue::Table(t) => walk_table(map, lines, path, t),
                DeValue::Array(a) => {
                    for (i, el) in a.iter().enumerate() {
                        let p = path.index(i);
                        map.positions.entry(p.clone()).or_insert(lines.pos(el.span().start));
                        walk_value(map, lines, p, el.get_ref());
                    }
                }
                _ => {}
            }
        }
        fn walk_table(map: &mut SourceMap, lines: &LineIndex, path: SpecPath, t: &DeTable<'_>) {
            for (k, v) in t.iter() {
                let p = path.key(k.get_ref());
                map.positions.entry(p.clone()).or_insert(lines.pos(k.span().start));
                walk_value(map, lines, p, v.get_ref());
            }
        }
        if let Ok(doc) = DeTable::parse(text) {
            walk_table(&mut map, &lines, SpecPath::root(), doc.get_ref());
        }
        map
    }
}

/// Turns byte offsets into 1-based line and (character) column.
pub struct LineIndex<'a> {
    text: &'a str,
    starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    pub fn new(text: &'a str) -> Self {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Self { text, starts }
    }
    pub fn pos(&self, offset: usize) -> Pos {
        let line = self.starts.partition_point(|&s| s <= offset).max(1);
        let start = self.starts[line - 1];
        let end = offset.min(self.text.len());
        let column = self.text.get(start..end).map(|s| s.chars().count()).unwrap_or(0) + 1;
        Pos { line, column }
    }
}

/// The position in the file `text` of a place inside a string value: `within` is a 0-based
/// line and column of the value, `key` where its key is. The value's lines are looked for
/// in the file from the key on: on the key's own line (`program: ".a | .b"`), or on the
/// lines below it (a block scalar, `program: |`). None when they are not there as written
/// (escapes in a quoted string, a value from a variable).
pub fn within_value(text: &str, key: Pos, value: &str, within: (usize, usize)) -> Option<Pos> {
    let lines: Vec<&str> = text.lines().collect();
    let value_lines: Vec<&str> = value.lines().collect();
    let (k, first) = value_lines.iter().enumerate().find(|(_, l)| !l.trim().is_empty())?;
    let target = value_lines.get(within.0)?;
    // The file line holding the value's first non-empty line, from the key's line on.
    let found = (key.line - 1..lines.len().min(key.line + 200)).find(|&i| {
        let from = if i == key.line - 1 { key.column.saturating_sub(1) } else { 0 };
        lines[i].get(from..).is_some_and(|rest| rest.contains(first))
    })?;
    let at = (found + within.0).checked_sub(k)?;
    let line = lines.get(at)?;
    let from = if at == key.line - 1 { key.column.saturating_sub(1) } else { 0 };
    let start = line.get(from..)?.find(target)? + from;
    let column = line[..start].chars().count() + within.1 + 1;
    Some(Pos { line: at + 1, column })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_positions_of_keys_and_elements() {
        let text = "version: 1\nnodes:\n  a: { kind: list }\n  b:\n    kind: fetch\n    input: [a, c]\n";
        let m = SourceMap::from_yaml(text);
        let root = SpecPath::root();
        assert_eq!(m.locate(&root.key("nodes").key("b").key("kind")), Some(Pos { line: 5, column: 5 }));
        assert_eq!(m.locate(&root.key("nodes").key("a").key("kind")), Some(Pos { line: 3, column: 8 }));
        assert_eq!(m.locate(&root.key("nodes").key("b").key("input").index(1)), Some(Pos { line: 6, column: 16 }));
        // Unknown paths fall back to the nearest ancestor.
        assert_eq!(m.locate(&root.key("nodes").key("b").key("nope")), Some(Pos { line: 4, column: 3 }));
    }

    #[test]
    fn toml_positions_of_keys_and_elements() {
        let text = "version = 1\n[nodes.b]\nkind = \"fetch\"\ninput = [\"a\", \"c\"]\n";
        let m = SourceMap::from_toml(text);
        let root = SpecPath::root();
        assert_eq!(m.locate(&root.key("nodes").key("b").key("kind")), Some(Pos { line: 3, column: 1 }));
        assert_eq!(m.locate(&root.key("nodes").key("b").key("input").index(1)), Some(Pos { line: 4, column: 15 }));
    }

    #[test]
    fn dotted_paths_from_serde_path_to_error() {
        let p = SpecPath::root().key("nodes").join_dotted("input[1].x");
        assert_eq!(p.to_string(), "nodes.input[1].x");
    }
}
