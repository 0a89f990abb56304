//! `dqpipe validate`: checks specs without I/O; every error as `file:line:column`, or as
//! one JSON record per problem (`--format json`) for editors and CI.

use std::path::PathBuf;

use dqpipe_engine::spec::errors::SpecError;

use crate::exit::Exit;
use crate::say;

#[derive(clap::Args)]
pub struct Args {
    /// Pipeline specs (.yaml, .yml or .toml), or folders: every spec under them.
    #[arg(required = true)]
    specs: Vec<PathBuf>,
    /// `text`, or `json`: one JSON object per problem, a line each (file, line, column,
    /// severity, path, message).
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    Text,
    Json,
}

pub fn run(args: Args) -> Exit {
    let files = crate::options::specs_in(&args.specs);
    if files.is_empty() {
        crate::say::error(format!("no spec (.yaml, .yml, .toml) under {}", args.specs[0].display()));
        return Exit::Invalid;
    }
    let mut invalid = 0;
    for file in &files {
        match (crate::options::check(file), args.format) {
            (Ok(p), Format::Text) => {
                let (nodes, stores) = (say::counted(p.nodes.len(), "node"), say::counted(p.stores.len(), "store"));
                println!("{}: valid ({nodes}, {stores})", file.display())
            }
            (Ok(_), Format::Json) => {}
            (Err(e), Format::Text) => {
                invalid += 1;
                crate::say::error(&e);
                let n = e.0.len();
                crate::say::note(format!("{} in {}", say::counted(n, "error"), file.display()));
            }
            (Err(e), Format::Json) => {
                invalid += 1;
                e.0.iter().for_each(|e| println!("{}", record(e)));
            }
        }
    }
    if invalid > 0 {
        Exit::Invalid
    } else {
        Exit::Ok
    }
}

fn record(e: &SpecError) -> serde_json::Value {
    serde_json::json!({
        "file": e.file.display().to_string(),
        "line": e.pos.map(|p| p.line),
        "column": e.pos.map(|p| p.column),
        "severity": "error",
        "path": e.path,
        "message": e.message,
    })
}
