//! What the command says on stderr besides its log: errors and the run summary. In text,
//! as they are; with `--log-format json`, one JSON object per line shaped like the log's
//! own lines (`timestamp`, `level`, `fields`, `target`), so that a log collector reads
//! every line of a run, the summary and fatal errors included, and none is plain text.

use std::sync::atomic::{AtomicBool, Ordering};

use dqpipe_engine::run::report::RunReport;
use serde_json::{json, Value};

static JSON: AtomicBool = AtomicBool::new(false);

pub fn use_json(on: bool) {
    JSON.store(on, Ordering::Relaxed);
}

fn json_line(level: &str, fields: Value) {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    eprintln!("{}", json!({ "timestamp": now, "level": level, "fields": fields, "target": "dqpipe" }));
}

/// A fatal error: `error: ...` in text; one ERROR line per line of it in JSON.
/// `n` things, in words: `1 node`, `2 nodes`.
pub fn counted(n: usize, thing: &str) -> String {
    format!("{n} {thing}{}", if n == 1 { "" } else { "s" })
}

pub fn error(message: impl std::fmt::Display) {
    let message = message.to_string();
    if JSON.load(Ordering::Relaxed) {
        for line in message.lines() {
            json_line("ERROR", json!({ "message": line.trim_start_matches("error: ") }));
        }
    } else if message.starts_with("error: ") || message.starts_with("error[") {
        eprintln!("{message}");
    } else {
        eprintln!("error: {message}");
    }
}

/// Lines that explain an error (a count, a hint): as they are in text; INFO in JSON.
pub fn note(message: impl std::fmt::Display) {
    if JSON.load(Ordering::Relaxed) {
        json_line("INFO", json!({ "message": message.to_string() }));
    } else {
        eprintln!("{message}");
    }
}

/// The end of a run: the human summary in text; in JSON one line holding the figures
/// (the report's, without the per-object lists: those are in `--report`).
pub fn summary(r: &RunReport) {
    if !JSON.load(Ordering::Relaxed) {
        eprint!("{}", r.render_text());
        return;
    }
    json_line(
        if r.exit_code == 0 { "INFO" } else { "WARN" },
        json!({
            "message": "run summary",
            "pipeline": r.pipeline,
            "run_id": r.run_id,
            "shard": r.shard.map(|s| s.to_string()),
            "outcome": r.outcome,
            "exit_code": r.exit_code,
            "duration_seconds": r.duration_seconds,
            "items": r.items,
            "causes": r.causes.iter().take(10).collect::<Vec<_>>(),
            "halted": r.halted,
            "interrupted": r.interrupted,
            "peak_rss_bytes": r.peak_rss_bytes,
        }),
    );
}
