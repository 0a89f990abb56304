//! Plain words for the raw parser errors people meet most in a spec, at the line where the
//! mistake is: a tab, a key without its colon, a template value left unquoted, a TOML key
//! written twice. The parsers' own words are kept after the hint.

use crate::spec::locate::Pos;

/// A YAML parser error made helpful: where the mistake is, and what to write.
pub(crate) fn yaml(text: &str, pos: Option<Pos>, message: &str) -> (Option<Pos>, String) {
    let lines: Vec<&str> = text.lines().collect();
    // A tab in the indentation: YAML indents with spaces only.
    if let Some((i, line)) =
        lines.iter().enumerate().find(|(_, l)| l.chars().take_while(|c| c.is_whitespace()).any(|c| c == '\t'))
    {
        let column = line.find('\t').unwrap_or(0) + 1;
        let hint = "a tab in the indentation: YAML indents with spaces only; replace the tab with spaces";
        return (Some(Pos { line: i + 1, column }), format!("{hint} ({message})"));
    }
    // A value starting with `{{` unquoted: YAML reads `{...}` as a mapping.
    for (i, line) in lines.iter().enumerate() {
        if let Some(at) = unquoted_template(line) {
            let hint = "a value that starts with `{` is read as a YAML mapping: quote it, as in `key: \"{{ name }}\"`";
            return (Some(Pos { line: i + 1, column: at + 1 }), format!("{hint} ({message})"));
        }
    }
    // A key without its colon: the parser notices only on a later line.
    if message.contains("mapping values are not allowed") || message.contains("could not find expected ':'") {
        let at = pos.map_or(lines.len(), |p| p.line.saturating_sub(1));
        let before = lines[..at.min(lines.len())].iter().enumerate().rev().find(|(_, l)| {
            let t = l.trim();
            !t.is_empty() && !t.starts_with('#') && !t.starts_with('-') && !t.contains(':')
        });
        if let Some((i, line)) = before {
            let t = line.trim();
            let column = line.len() - line.trim_start().len() + 1;
            let fix = t.split_once(' ').map(|(k, v)| format!("`{k}: {v}`")).unwrap_or_else(|| format!("`{t}:`"));
            let hint = format!("`{t}` has no `:` after its key: write {fix}");
            return (Some(Pos { line: i + 1, column }), format!("{hint} ({message})"));
        }
    }
    // A key indented unlike the keys beside it: the parser stops at it without saying so.
    if message.contains("did not find expected key") || message.contains("while parsing a block mapping") {
        if let Some(p) = pos.filter(|p| p.line >= 2 && p.line <= lines.len()) {
            let line = lines[p.line - 1];
            let indent = |l: &str| l.len() - l.trim_start().len();
            let above =
                lines[..p.line - 1].iter().rev().find(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'));
            if let Some(above) = above.filter(|a| indent(a) != indent(line)) {
                let hint = format!(
                    "`{}` is indented {} spaces, the line above {}: keys of one mapping start in the same column; \
                     indent it as its neighbours",
                    line.trim(),
                    indent(line),
                    indent(above)
                );
                return (Some(Pos { line: p.line, column: indent(line) + 1 }), format!("{hint} ({message})"));
            }
        }
    }
    (pos, message.to_string())
}

/// Where an unquoted `{{` starts a value on this line (after `: `, `- ` or `[`, `,`).
fn unquoted_template(line: &str) -> Option<usize> {
    let mut quote: Option<char> = None;
    let chars: Vec<(usize, char)> = line.char_indices().collect();
    for (n, &(i, c)) in chars.iter().enumerate() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '#') => return None,
            (None, '{') if line[i..].starts_with("{{") => {
                let before = chars[..n].iter().rev().map(|(_, c)| *c).find(|c| !c.is_whitespace());
                if matches!(before, Some(':' | '-' | ',' | '[')) {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

/// A TOML parser error made helpful: a duplicate key is named; a word left unquoted
/// (`input = fetch`, which TOML tries to read as a boolean or a number) is shown quoted.
pub(crate) fn toml(text: &str, pos: Option<Pos>, message: &str) -> String {
    let line = pos.and_then(|p| text.lines().nth(p.line.saturating_sub(1)));
    if let Some((key, value)) = line.and_then(|l| l.split_once('=')).map(|(k, v)| (k.trim(), v.trim())) {
        let word = value.split('#').next().unwrap_or("").trim();
        let bare = !word.is_empty() && word.chars().all(|c| c.is_alphanumeric() || "_-.:/".contains(c));
        if bare && !matches!(word, "true" | "false") && word.parse::<f64>().is_err() {
            return format!("`{key} = {word}`: text is quoted in TOML: write `{key} = \"{word}\"` ({message})");
        }
    }
    if message.trim() == "duplicate key" {
        if let Some(line) = pos.and_then(|p| text.lines().nth(p.line - 1)) {
            let key = line.split('=').next().unwrap_or("").trim().trim_matches('"');
            return format!("duplicate key `{key}`: it is written twice in this table; remove or rename one");
        }
    }
    message.to_string()
}

/// A node's setting indented too little (`input: list` under `nodes:` at a node's
/// column) reads as a node whose value is no mapping. It is reported once, as the
/// indentation mistake it is, and counted as the node above's setting, so that the node
/// above does not also report the setting missing (a false second error).
pub(crate) fn dedented_settings_folded(
    header: &crate::spec::SpecHeader,
    errors: &mut crate::spec::errors::ErrorSink,
) -> indexmap::IndexMap<String, serde_json::Value> {
    let mut nodes: indexmap::IndexMap<String, serde_json::Value> = indexmap::IndexMap::new();
    for (name, value) in &header.nodes {
        let above = nodes.last_mut().filter(|(_, v)| v.is_object() && !value.is_object());
        match above {
            Some((node, serde_json::Value::Object(settings))) => {
                errors.push(
                    &crate::spec::locate::SpecPath::root().key("nodes").key(name),
                    format!(
                        "`{name}` is indented as a node but is no mapping: it is most likely a setting of `{node}` \
                         above, indented too little; indent it like `{node}`'s other keys"
                    ),
                );
                settings.entry(name.clone()).or_insert_with(|| value.clone());
            }
            _ => {
                nodes.insert(name.clone(), value.clone());
            }
        }
    }
    nodes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_usual_mistakes_are_named_at_their_line() {
        let (pos, m) = yaml("version: 1\nnodes:\n\tlist: {}\n", Some(Pos { line: 3, column: 1 }), "found character");
        assert_eq!(pos, Some(Pos { line: 3, column: 1 }));
        assert!(m.starts_with("a tab in the indentation"), "{m}");
        let (pos, m) = yaml(
            "nodes:\n  list:\n    kind list\n    store: src\n",
            Some(Pos { line: 4, column: 10 }),
            "mapping values are not allowed in this context",
        );
        assert_eq!(pos, Some(Pos { line: 3, column: 5 }));
        assert!(m.starts_with("`kind list` has no `:` after its key: write `kind: list`"), "{m}");
        let (pos, m) = yaml("w: { kind: put, key: {{ key }} }\nx: \"{{ ok }}\"\n", None, "key must be a string");
        assert_eq!(pos, Some(Pos { line: 1, column: 22 }));
        assert!(m.contains("quote it"), "{m}");
        assert_eq!(
            toml("a = 1\nname = \"t\"\nname = \"u\"\n", Some(Pos { line: 3, column: 1 }), "duplicate key"),
            "duplicate key `name`: it is written twice in this table; remove or rename one"
        );
        assert!(toml("[nodes.f]\ninput = fetch\n", Some(Pos { line: 2, column: 9 }), "invalid boolean")
            .starts_with("`input = fetch`: text is quoted in TOML: write `input = \"fetch\"`"));
        let (pos, m) = yaml(
            "nodes:\n  fetch:\n      kind: fetch\n    input: list\n",
            Some(Pos { line: 4, column: 5 }),
            "did not find expected key",
        );
        assert_eq!(pos, Some(Pos { line: 4, column: 5 }));
        assert!(m.starts_with("`input: list` is indented 4 spaces, the line above 6"), "{m}");
    }
}
