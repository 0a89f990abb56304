//! `dqpipe explain TOPIC`: a kind's settings, ports and example (`explain clamav`), one
//! setting (`explain put.key`, `explain list.retry.attempts`), the settings every spec
//! may set under `defaults`, or a store's (`explain stores`, `explain stores.s3`), from
//! the same registry and schemas that read specs.

use dqpipe_engine::spec::reference::{self, SettingDoc};

use crate::exit::Exit;
use crate::reference::{kind_page, setting_page, settings_page, Format, DEFAULTS_INTRO, STORES_INTRO};

#[derive(clap::Args)]
pub struct Args {
    /// `KIND`, `KIND.setting`, `defaults`, `defaults.setting`, `stores` or `stores.setting`.
    topic: String,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

pub fn run(a: Args) -> Exit {
    let registry = dqpipe_plugins::registry();
    let (head, rest) = a.topic.split_once('.').map_or((a.topic.as_str(), None), |(h, r)| (h, Some(r)));
    let page = match head {
        "defaults" => settings(&reference::defaults(), "defaults", DEFAULTS_INTRO, rest, a.format),
        "stores" => settings(&reference::stores(&registry), "stores", STORES_INTRO, rest, a.format),
        kind => match registry.kind(kind) {
            None => Err(format!(
                "no kind, `defaults` or `stores` is called `{kind}`{}; `dqpipe kinds` lists the kinds",
                dqpipe_engine::api::suggest::did_you_mean(kind, &registry.kind_names())
            )),
            Some(k) => {
                let doc = reference::kind(k.as_ref());
                match rest {
                    None if a.format == Format::Json => Ok(json(&doc)),
                    None => Ok(kind_page(&doc, a.format)),
                    Some(path) => reference::find(&doc.settings, path)
                        .map(|s| one(kind, s, a.format))
                        .map_err(|e| format!("{kind}: {e}")),
                }
            }
        },
    };
    match page {
        Ok(p) => {
            print!("{p}");
            Exit::Ok
        }
        // An unknown topic is a mistake on the command line.
        Err(e) => {
            crate::say::error(e);
            Exit::Invalid
        }
    }
}

fn settings(
    all: &[SettingDoc],
    title: &str,
    intro: &str,
    path: Option<&str>,
    format: Format,
) -> Result<String, String> {
    match path {
        None if format == Format::Json => Ok(json(&all)),
        None => Ok(settings_page(title, intro, all, format)),
        // `stores.s3` is a table: its settings, not the one row.
        Some(p) if all.iter().any(|s| s.name.starts_with(&format!("{p}."))) => {
            let under: Vec<SettingDoc> =
                all.iter().filter(|s| s.name == p || s.name.starts_with(&format!("{p}."))).cloned().collect();
            match format {
                Format::Json => Ok(json(&under)),
                f => Ok(settings_page(&format!("{title}.{p}"), intro, &under, f)),
            }
        }
        Some(p) => reference::find(all, p).map(|s| one(title, s, format)).map_err(|e| format!("{title}: {e}")),
    }
}

fn one(owner: &str, s: &SettingDoc, format: Format) -> String {
    match format {
        Format::Json => json(s),
        f => setting_page(owner, s, f),
    }
}

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default() + "\n"
}
