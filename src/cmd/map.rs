//! `dqpipe map`: tries a jq program on files, the way `jq` users expect: the program from
//! a file (`--program FILE.jq`) or from a spec's `map` node (`--spec SPEC --node NODE`,
//! with the node's `fields`), each input's output on its own line, its fields and any
//! failure on stderr. `$meta` holds the input's `key` (its path), `name` and `size`.

use std::path::PathBuf;

use anyhow::{bail, Context as _};
use dqpipe_plugins::map::{apply, jq::Program};
use serde_json::{json, Value};

use crate::exit::Exit;

#[derive(clap::Args)]
pub struct Args {
    /// A file holding the jq program.
    #[arg(long, conflicts_with_all = ["spec", "node"], required_unless_present = "spec")]
    program: Option<PathBuf>,
    /// A spec whose `map` node's program (and fields) to use, with `--node`.
    #[arg(long, requires = "node")]
    spec: Option<PathBuf>,
    /// The `map` node of `--spec`.
    #[arg(long)]
    node: Option<String>,
    /// JSON files to map.
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
}

pub fn run(args: Args) -> Exit {
    let (program, fields) = match programs(&args) {
        Ok(p) => p,
        Err(e) => {
            crate::say::error(format!("{e:#}"));
            return Exit::Invalid;
        }
    };
    let mut failed = false;
    for input in &args.inputs {
        let name = input.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let result = std::fs::read(input).map_err(|e| format!("cannot read it: {e}")).and_then(|bytes| {
            let meta = json!({"key": input.to_string_lossy(), "name": name, "size": bytes.len()});
            apply(&program, &fields, &bytes, &meta).map_err(String::from)
        });
        match result {
            Ok(None) => eprintln!("{}: no value (dropped in a run, unless on_empty: fail)", input.display()),
            Ok(Some(mapped)) => {
                println!("{}", String::from_utf8_lossy(&mapped.body));
                for (field, value) in mapped.fields {
                    eprintln!("{}: {field} = {value}", input.display());
                }
            }
            Err(reason) => {
                failed = true;
                crate::say::error(format!("{}: {reason}", input.display()));
            }
        }
    }
    if failed {
        Exit::Error
    } else {
        Exit::Ok
    }
}

/// The program and the field programs, from a file or from a spec's node.
fn programs(args: &Args) -> anyhow::Result<(Program, Vec<(String, Program)>)> {
    if let Some(file) = &args.program {
        let code = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        let program = Program::compile(&code).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
        return Ok((program, Vec::new()));
    }
    let (Some(spec), Some(node)) = (&args.spec, &args.node) else {
        bail!("give --program FILE, or --spec SPEC --node NODE")
    };
    // The spec is validated first: its errors are placed as `validate` places them.
    let pipeline = crate::options::load(spec).map_err(|_| anyhow::anyhow!("{} is not valid", spec.display()))?;
    let Some(n) = pipeline.nodes.iter().find(|n| &n.spec.name == node) else {
        bail!("{} has no node `{node}`", spec.display())
    };
    if n.spec.kind != "map" {
        bail!("node `{node}` is a `{}`, not a `map`", n.spec.kind);
    }
    let text = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or_default().to_string();
    let program = Program::compile(&text(n.spec.config.get("program"))).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut fields = Vec::new();
    for (name, code) in n.spec.config.get("fields").and_then(Value::as_object).into_iter().flatten() {
        fields.push((name.clone(), Program::compile(&text(Some(code))).map_err(|e| anyhow::anyhow!("{e}"))?));
    }
    Ok((program, fields))
}
