//! The reference pages of `dqpipe kinds`, `dqpipe explain` and `dqpipe docs`, rendered
//! from the engine's reference data (`dqpipe_engine::spec::reference`) as text for a
//! terminal or Markdown for `docs/`. One renderer per page, so the terminal and the
//! generated docs say the same thing.

use std::fmt::Write;

use clap::ValueEnum;
use dqpipe_engine::spec::reference::{KindDoc, PortDoc, SettingDoc};

/// The first lines of the stores page (`explain stores`, docs/stores.md).
pub const STORES_INTRO: &str = "A store is a URL (`file://./var/in`, `s3://bucket/prefix`, \
     `sftp://user@host:22/folder`, `ftp://user@host:21/folder`) and the settings of its scheme; `defaults.s3` \
     and `defaults.sftp` set them for every store. `file://./` paths are relative to the working directory.";
/// The first lines of the defaults page (`explain defaults`, docs/stores.md).
pub const DEFAULTS_INTRO: &str = "Settings under `defaults:` that apply to every node unless the node sets its \
     own; `defaults.s3` and `defaults.sftp` set store settings for every store.";

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
    Markdown,
}

/// `dqpipe kinds`: one row per kind.
pub fn kinds_table(kinds: &[KindDoc], format: Format) -> String {
    let mut out = String::new();
    match format {
        Format::Markdown => {
            out.push_str("| kind | role | what it does |\n|---|---|---|\n");
            for k in kinds {
                let _ = writeln!(out, "| [`{0}`]({0}.md) | {1} | {2} |", k.name, k.role, cell(&k.summary));
            }
        }
        _ => {
            let width = kinds.iter().map(|k| k.name.len()).max().unwrap_or(0);
            for k in kinds {
                let _ = writeln!(out, "{:width$}  {:9}  {}", k.name, k.role, k.summary);
            }
            out.push_str("\n`dqpipe explain KIND` shows a kind's settings, ports and an example.\n");
        }
    }
    out
}

/// `dqpipe explain KIND`: the kind's page.
pub fn kind_page(k: &KindDoc, format: Format) -> String {
    let mut out = String::new();
    match format {
        Format::Markdown => {
            let _ = writeln!(out, "# `{}` ({})\n\n{}\n", k.name, k.role, k.summary);
            out.push_str("## Settings\n\n");
            out.push_str(&settings_markdown(&k.settings));
            out.push_str("\n## Ports\n\n");
            out.push_str("| port | routing | fields it sets | what goes out |\n|---|---|---|---|\n");
            for p in &k.ports {
                let sets = p.sets.iter().map(|s| format!("`{s}`")).collect::<Vec<_>>().join(", ");
                let _ = writeln!(out, "| `{}` | {} | {} | {} |", p.name, routing(p), sets, cell(&p.description));
            }
            if k.ports.is_empty() {
                out.push_str("| (none) | | | |\n");
            }
            let _ = writeln!(out, "\n## Example\n\n```yaml\nnodes:\n{}\n```", indent(&k.example));
        }
        _ => {
            let _ = writeln!(out, "{} ({})", k.name, k.role);
            wrap_into(&mut out, &k.summary, 2);
            out.push('\n');
            out.push_str("SETTINGS\n");
            out.push_str(&settings_text(&k.settings));
            out.push_str("\nPORTS\n");
            for p in &k.ports {
                let _ = writeln!(out, "  {}  ({})", p.name, routing(p));
                wrap_into(&mut out, &p.description, 6);
                if !p.sets.is_empty() {
                    let _ = writeln!(out, "      sets: {}", p.sets.join(", "));
                }
            }
            let _ = writeln!(out, "\nEXAMPLE\nnodes:\n{}", indent(&k.example));
        }
    }
    out
}

/// `dqpipe explain stores` or `defaults`: a page of settings.
pub fn settings_page(title: &str, intro: &str, settings: &[SettingDoc], format: Format) -> String {
    match format {
        Format::Markdown => format!("# {title}\n\n{intro}\n\n{}", settings_markdown(settings)),
        _ => {
            let mut out = format!("{title}\n");
            wrap_into(&mut out, intro, 2);
            format!("{out}\nSETTINGS\n{}", settings_text(settings))
        }
    }
}

/// `dqpipe explain KIND.setting`: one setting.
pub fn setting_page(owner: &str, s: &SettingDoc, format: Format) -> String {
    match format {
        Format::Markdown => format!("# `{owner}.{}`\n\n{}", s.name, settings_markdown(std::slice::from_ref(s))),
        _ => format!("{owner}.{}\n{}", s.name, settings_text(std::slice::from_ref(s))),
    }
}

fn routing(p: &PortDoc) -> &'static str {
    match (p.must_route, p.problem, p.drops) {
        (true, true, _) => "problem, must be routed",
        (true, false, _) => "must be routed",
        (false, true, _) => "problem; unrouted, its objects stay at their source",
        (false, false, true) => "unrouted: dropped, counted",
        (false, false, false) => "optional",
    }
}

fn settings_markdown(settings: &[SettingDoc]) -> String {
    let mut out = String::from("| setting | type | default | what it does |\n|---|---|---|---|\n");
    for s in settings {
        let _ = writeln!(
            out,
            "| `{}`{} | {}{} | {} | {} |",
            s.name,
            if s.required { " (required)" } else { "" },
            cell(&s.type_name),
            s.range.as_ref().map(|r| format!(", {r}")).unwrap_or_default(),
            s.default.as_ref().map(|d| format!("`{}`", cell(&value(d)))).unwrap_or_default(),
            cell(&s.description)
        );
    }
    out
}

fn settings_text(settings: &[SettingDoc]) -> String {
    let mut out = String::new();
    for s in settings {
        let mut head = format!("  {}  {}", s.name, s.type_name);
        if let Some(r) = &s.range {
            let _ = write!(head, ", {r}");
        }
        if s.required {
            head.push_str(", required");
        }
        if let Some(d) = &s.default {
            let _ = write!(head, ", default {}", value(d));
        }
        out.push_str(&head);
        out.push('\n');
        wrap_into(&mut out, &s.description, 6);
    }
    out
}

fn value(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => format!("{s:?}"),
        v => v.to_string(),
    }
}

/// A table cell: no line breaks or bars.
fn cell(s: &str) -> String {
    s.replace('\n', " ").replace('|', "\\|")
}

fn indent(s: &str) -> String {
    s.lines().map(|l| if l.is_empty() { String::new() } else { format!("  {l}") }).collect::<Vec<_>>().join("\n")
}

/// Appends `text` wrapped at 88 columns, each line indented by `by`.
fn wrap_into(out: &mut String, text: &str, by: usize) {
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && by + line.len() + 1 + word.len() > 88 {
            let _ = writeln!(out, "{:by$}{line}", "");
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        let _ = writeln!(out, "{:by$}{line}", "");
    }
}
