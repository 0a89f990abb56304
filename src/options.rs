//! What several commands share: loading a spec (errors printed, exit 2) and the tuning
//! flags that become the engine's run options.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use dqpipe_engine::run::executor::RunOptions;
use dqpipe_engine::spec::errors::SpecErrors;
use dqpipe_engine::spec::MAX_CONCURRENCY;
use dqpipe_engine::{load_pipeline, Pipeline};

use crate::exit::Exit;

#[derive(clap::Args)]
pub struct Tuning {
    /// `N` replaces the spec's default concurrency; `NODE=N` sets one node's. Repeatable.
    #[arg(long, value_name = "N|NODE=N")]
    pub concurrency: Vec<String>,
    /// Take only this share of the objects, by a stable hash of each key: `2/4` is the
    /// third of four. `/4` takes INDEX from JOB_COMPLETION_INDEX (Kubernetes Indexed Jobs).
    #[arg(long, value_name = "INDEX/COUNT", env = "DQPIPE_SHARD")]
    pub shard: Option<String>,
    /// Process objects even when an earlier run recorded them as done.
    #[arg(long)]
    pub reprocess: bool,
}

/// A variable of the spec: from the environment, or else, when `DQPIPE_ENV_DIR` is set,
/// from the file of that name in that folder, without its final newline. A Kubernetes
/// Secret mounted as a volume is such a folder (one file per key), so secrets need not sit
/// in the process environment. Names are letters, digits and `_`: never a path.
pub fn lookup(name: &str) -> Option<String> {
    if let Ok(v) = std::env::var(name) {
        return Some(v);
    }
    let dir = std::env::var_os("DQPIPE_ENV_DIR")?;
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return None;
    }
    let text = std::fs::read_to_string(Path::new(&dir).join(name)).ok()?;
    let text = text.strip_suffix('\n').map(|t| t.strip_suffix('\r').unwrap_or(t)).unwrap_or(&text);
    Some(text.to_string())
}

/// Reads and checks a spec.
pub fn check(spec: &Path) -> Result<Pipeline, SpecErrors> {
    load_pipeline(spec, &dqpipe_plugins::registry(), &lookup)
}

/// Reads and checks a spec; its errors are printed.
pub fn load(spec: &Path) -> Result<Pipeline, Exit> {
    check(spec).map_err(|e| {
        crate::say::error(&e);
        crate::say::note(format!("{} error{} in {}", e.0.len(), if e.0.len() == 1 { "" } else { "s" }, spec.display()));
        Exit::Invalid
    })
}

/// The run options the flags ask for; a bad flag is printed.
pub fn run_options(tuning: &Tuning) -> Result<RunOptions, Exit> {
    let mut opts = RunOptions::default();
    let mut nodes = HashMap::new();
    let in_range = |n: &str| n.parse::<u64>().ok().filter(|n| (1..=MAX_CONCURRENCY).contains(n)).map(|n| n as usize);
    for c in &tuning.concurrency {
        let parsed = match c.split_once('=') {
            Some((node, n)) => in_range(n).map(|n| {
                nodes.insert(node.to_string(), n);
            }),
            None => in_range(c).map(|n| opts.default_concurrency = Some(n)),
        };
        if parsed.is_none() {
            crate::say::error(format!(
                "--concurrency {c:?}: expected a whole number from 1 to {MAX_CONCURRENCY}, or NODE=N"
            ));
            return Err(Exit::Invalid);
        }
    }
    opts.node_concurrency = nodes;
    opts.reprocess = tuning.reprocess;
    if let Some(shard) = &tuning.shard {
        let spelled = match shard.strip_prefix('/') {
            Some(count) => match std::env::var("JOB_COMPLETION_INDEX") {
                Ok(i) => format!("{}/{count}", i.trim()),
                Err(_) => {
                    crate::say::error(format!(
                        "--shard /{count} takes its index from JOB_COMPLETION_INDEX, which is not set"
                    ));
                    return Err(Exit::Invalid);
                }
            },
            None => shard.clone(),
        };
        match spelled.parse() {
            Ok(s) => opts.shard = Some(s),
            Err(e) => {
                crate::say::error(format!("--shard {e}"));
                return Err(Exit::Invalid);
            }
        }
    }
    Ok(opts)
}

/// Loads the spec and reads the tuning flags; `--concurrency NODE=N` must name a node.
pub fn load_with(spec: &Path, tuning: &Tuning) -> Result<(Pipeline, RunOptions), Exit> {
    let p = load(spec)?;
    let opts = run_options(tuning)?;
    let names: Vec<&str> = p.nodes.iter().map(|n| n.spec.name.as_str()).collect();
    let mut unknown: Vec<&String> = opts.node_concurrency.keys().filter(|k| !names.contains(&k.as_str())).collect();
    unknown.sort();
    if let Some(node) = unknown.first() {
        crate::say::error(format!(
            "--concurrency {node}=...: {} has no node `{node}`; its nodes are: {}",
            spec.display(),
            names.join(", ")
        ));
        return Err(Exit::Invalid);
    }
    Ok((p, opts))
}

/// The spec files `paths` name: files as given, folders searched below in name order
/// (hidden folders skipped) for `.yaml`, `.yml` and `.toml` files, leaving out test
/// files (`*.tests.yaml`, see `dqpipe test`).
pub fn specs_in(paths: &[PathBuf]) -> Vec<PathBuf> {
    fn under(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        paths.sort();
        for p in paths {
            let hidden = p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.'));
            if p.is_dir() && !hidden {
                under(&p, out);
            } else if matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml" | "toml"))
                && !crate::spec_tests::is_tests_file(&p)
            {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            under(p, &mut out);
        } else {
            out.push(p.clone());
        }
    }
    out
}
