//! `run --tap NODE.PORT`: prints a sample of the items passing a port, as `vector tap`
//! does, without changing the run: one JSON line each on stdout (the summary and logs are
//! on stderr), with the node, the port, the source key and the item's fields. The first
//! `--tap-limit` items of each tapped port are printed, then one in `--tap-every`.
//! Fields hold no secret (they come from listings and from what nodes found: a key, a
//! name, a date, a scan's verdict); text is written as JSON escapes it, so a control
//! character in a key cannot reach the terminal raw.

use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use dqpipe_engine::run::outputs::Tap;
use dqpipe_engine::Pipeline;

/// What to print: the ports tapped, and how many of their items.
pub struct Sample {
    pub limit: u64,
    pub every: u64,
}

/// A tap on `ports` (`NODE.PORT` each), or why one names no port of the pipeline.
pub fn tap(p: &Pipeline, ports: &[String], sample: Sample) -> Result<Tap, String> {
    let mut counts: HashMap<(String, String), AtomicU64> = HashMap::new();
    for want in ports {
        let (node, port) = want.split_once('.').ok_or_else(|| format!("--tap {want:?}: name a port as NODE.PORT"))?;
        let Some(n) = p.nodes.iter().find(|n| n.spec.name == node) else {
            let names: Vec<&str> = p.nodes.iter().map(|n| n.spec.name.as_str()).collect();
            let hint = dqpipe_engine::api::suggest::did_you_mean(node, &names);
            return Err(format!("--tap {want}: the spec has no node `{node}`{hint}"));
        };
        if !n.ports.iter().any(|d| d.name == port) {
            let names: Vec<&str> = n.ports.iter().map(|d| d.name).collect();
            let hint = dqpipe_engine::api::suggest::did_you_mean(port, &names);
            return Err(format!("--tap {want}: `{node}` has no port `{port}`{hint}; its ports: {}", names.join(", ")));
        }
        counts.insert((node.to_string(), port.to_string()), AtomicU64::new(0));
    }
    let out = Mutex::new(std::io::stdout());
    let every = sample.every.max(1);
    Ok(Tap(Arc::new(move |node: &str, port: &str, item: &dqpipe_engine::api::Item| {
        let Some(seen) = counts.get(&(node.to_string(), port.to_string())) else { return };
        // Counted and printed under one lock, so that the lines come out in their order
        // (`n` 1, 2, 3, 6, ...), whichever tasks send the items.
        let Ok(mut out) = out.lock() else { return };
        let n = seen.fetch_add(1, Ordering::Relaxed);
        if n >= sample.limit && (n - sample.limit) % every != 0 {
            return;
        }
        let line = serde_json::json!({
            "node": node,
            "port": port,
            "n": n + 1,
            "key": item.source_key(),
            "fields": item.meta,
        });
        let _ = writeln!(out, "{line}");
    })))
}
