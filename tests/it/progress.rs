//! The progress display on a pseudo-terminal (util-linux's `script`, 80 columns): rows
//! cut to the width, rates as people read them, the last frame's counts the summary's;
//! and a run whose scanner is killed mid-run, which must show its trouble: errors and
//! retries in the scanner's row, log lines by cause without the span prefix, and a last
//! row that says the run halted and that the rest was never listed.

use crate::common::*;

use std::time::{Duration, Instant};

/// The progress bars on an 80-column terminal (a pseudo-terminal from util-linux's
/// `script`): one row per node, each cut to the width (indicatif pads a row to the width
/// and lets the terminal wrap, so every row starts at a multiple of 80 characters, with a
/// node's name), rates rounded, and a last frame whose counts are the summary's.
#[test]
fn progress_bars_fit_an_80_column_terminal() {
    let dir = tempfile::tempdir().unwrap();
    dqpipe(dir.path()).args(["samples", "--out", "in", "--count", "2000"]).output().unwrap();
    let spec = "version: 1\nname: bars\nstores:\n  src: { url: \"file://./in\" }\n  dst: { url: \"file://./out\" }\nnodes:\n  list: { kind: list, store: src }\n  fetch: { kind: fetch, input: list }\n  transform_the_messages: { kind: nats_message, input: fetch }\n  write: { kind: put, input: transform_the_messages.ok, store: dst, key: \"{{ msg_date }}/{{ name }}\" }\n  dead: { kind: put, input: transform_the_messages.failed, store: dst, key: \"dead/{{ name }}\" }\n";
    std::fs::write(dir.path().join("p.yaml"), spec).unwrap();
    let command = format!("stty cols 80 rows 24; {} run p.yaml --progress bars", env!("CARGO_BIN_EXE_dqpipe"));
    let out = std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .current_dir(dir.path())
        .output()
        .expect("util-linux's script");
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    // Escape sequences move the cursor between frames; what is left of a frame is its rows.
    let segments = between_escapes(&text);
    let names = ["list", "fetch", "transform_the_messages", "write", "dead", "objects"];
    let mut frames = 0;
    let (mut last_write, mut last_total) = (None, None);
    // Frames (a row per node, with its rates, and the run's row), not the log lines
    // printed above them.
    let is_frame = |s: &&String| s.contains("/s ") && names.iter().any(|n| s.trim_start().starts_with(n));
    for segment in segments.iter().filter(is_frame) {
        let chars: Vec<char> = segment.chars().collect();
        let rows: Vec<String> = chars.chunks(80).map(|c| c.iter().collect()).collect();
        for row in rows.iter().filter(|r| !r.starts_with("Run summary")) {
            let first = row.split_whitespace().next().unwrap_or_default();
            assert!(names.contains(&first), "a row that does not start at a multiple of 80: {row:?}");
            // Rates as people read them: `812/s`, `1.2 MB/s`, never 12 decimals.
            assert!(row.split_whitespace().all(|w| !w.contains('.') || w.len() <= 8), "{row:?}");
            if first == "write" {
                last_write = row.split_whitespace().find(|w| w.chars().all(|c| c.is_ascii_digit())).map(String::from);
            }
            if first == "objects" {
                last_total = Some(row.split_whitespace().collect::<Vec<_>>().join(" "));
            }
        }
        frames += 1;
    }
    assert!(frames > 0, "no frame drawn: {text:?}");
    assert_eq!(last_write.as_deref(), Some("2000"), "the last frame's write count");
    // The run's row: objects finished of the listing's total, the share, the time left.
    let total = last_total.unwrap_or_default();
    assert!(total.starts_with("objects 2000 of 2000 100% ETA 0s "), "{total:?}");
    assert!(text.contains("write (put)                            in=2000"), "{text}");
}

/// A pseudo-terminal run of 80 columns: `dqpipe run ARGS` in `dir`, under `script`.
fn on_a_terminal(dir: &std::path::Path, args: &str) -> std::process::Child {
    let command = format!("stty cols 80 rows 24; {} run {args}; echo exit=$?", env!("CARGO_BIN_EXE_dqpipe"));
    std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .current_dir(dir)
        .env("CLAMAV_ALLOW_UNVERSIONED_DB", "true")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("util-linux's script")
}

/// clamd killed once 100 files are written, of 2,000: the scanner's row shows its errors
/// and retries, each cause is logged once (then counted), log lines have no span prefix,
/// and the last frame says the run halted, why, and that the rest was never listed (not
/// `587 of 587 100%`). The run exits 4: incomplete, the rest for a rerun.
#[test]
fn a_scanner_killed_mid_run_shows_on_the_terminal_as_errors_and_a_halt() {
    let clamd = Clamd::start("25M");
    let dir = tempfile::tempdir().unwrap();
    dqpipe(dir.path()).args(["samples", "--out", "in", "--count", "2000"]).output().unwrap();
    let spec = format!(
        "version: 1\nname: killed\ndefaults: {{ halt: {{ in_a_row: 20 }} }}\nstores:\n  src: {{ url: \"file://./in\" }}\n  dst: {{ url: \"file://./out\" }}\n  bad: {{ url: \"file://./bad\" }}\nnodes:\n  list: {{ kind: list, store: src }}\n  fetch: {{ kind: fetch, input: list }}\n  scan: {{ kind: clamav, input: fetch, address: \"{}\", database: {{ allow_unversioned: true }}, retry: {{ attempts: 2, initial_delay_ms: 10 }} }}\n  write: {{ kind: put, input: scan.clean, store: dst, key: \"{{{{ name }}}}\" }}\n  quarantine: {{ kind: put, input: [scan.infected, scan.error], store: bad, key: \"{{{{ name }}}}\", with_reason: true }}\n",
        clamd.tcp()
    );
    std::fs::write(dir.path().join("p.yaml"), spec).unwrap();
    let child = on_a_terminal(dir.path(), "p.yaml --progress bars --concurrency 2 --report r.json");
    // Once 100 files are written (an event, not a time), the scanner goes.
    let deadline = Instant::now() + Duration::from_secs(120);
    while files_under(&dir.path().join("out")).len() < 100 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    clamd.stop();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains("exit=4"), "incomplete: {text}");
    assert!(!text.contains("run{pipeline="), "log lines on a terminal carry no span prefix: {text}");
    let all = rows_of(&text);
    let rows = |name: &str| -> Vec<String> {
        all.iter().filter(|r| r.split_whitespace().next() == Some(name)).cloned().collect()
    };
    let bars = |name: &str| -> Vec<String> { rows(name).into_iter().filter(|r| r.contains("/s")).collect() };
    assert!(bars("scan").iter().any(|r| r.contains("errors=")), "the scanner's errors show: {:?}", bars("scan"));
    let last = rows("objects").last().cloned().unwrap_or_default();
    eprintln!("{}\n{last}", bars("scan").last().cloned().unwrap_or_default());
    assert!(last.contains("HALTED: the rest never listed"), "{last:?}");
    assert!(!last.contains("100%"), "{last:?}");
    // A whole line for the first object of each cause (the report groups them), the rest
    // counted: far fewer lines than failures.
    let report = read_json(&dir.path().join("r.json"));
    let causes = report["causes"].as_array().unwrap().iter().filter(|c| c["node"] == "scan").count();
    let failed = report["items"]["failed"].as_u64().unwrap();
    let whole = text.lines().filter(|l| l.contains("item not processed")).count();
    assert!(
        whole >= 1 && whole <= causes && (whole as u64) < failed,
        "{whole} lines, {causes} causes, {failed} failed"
    );
}

/// A run that cannot start (its scanner unreachable) draws no frame on the terminal: it
/// says only why it did not start, and exits 1.
#[test]
fn a_run_that_cannot_start_draws_no_frame() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("in")).unwrap();
    std::fs::write(dir.path().join("in/a.json"), "{}").unwrap();
    let spec = "version: 1\nname: down\nstores:\n  src: { url: \"file://./in\" }\n  dst: { url: \"file://./out\" }\nnodes:\n  list: { kind: list, store: src }\n  fetch: { kind: fetch, input: list }\n  scan: { kind: clamav, input: fetch, address: \"tcp://127.0.0.1:1\", database: { allow_unversioned: true } }\n  write: { kind: put, input: scan.clean, store: dst, key: \"{{ name }}\" }\n  quarantine: { kind: put, input: [scan.infected, scan.error], store: dst, key: \"q/{{ name }}\", with_reason: true }\n";
    std::fs::write(dir.path().join("p.yaml"), spec).unwrap();
    let out = on_a_terminal(dir.path(), "p.yaml --progress bars").wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains("exit=1") && text.contains("preflight checks failed"), "{text}");
    let frames = rows_of(&text).into_iter().filter(|r| r.split_whitespace().next() == Some("objects")).count();
    assert_eq!(frames, 0, "a frame was drawn: {text}");
}

/// The rows on an 80-column terminal: a frame's rows are padded to the width, one after
/// another (see the first test), between escape sequences.
fn rows_of(text: &str) -> Vec<String> {
    let chunks = |s: &String| -> Vec<String> {
        s.chars().collect::<Vec<_>>().chunks(80).map(|c| c.iter().collect::<String>()).collect()
    };
    between_escapes(text).iter().flat_map(chunks).collect()
}

/// The text between escape sequences and line breaks.
fn between_escapes(text: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => {
                // CSI: ESC [ parameters, then one letter.
                if chars.peek() == Some(&'[') {
                    chars.next();
                    for p in chars.by_ref() {
                        if p.is_ascii_alphabetic() {
                            break;
                        }
                    }
                }
                out.push(String::new());
            }
            '\r' | '\n' => out.push(String::new()),
            c => out.last_mut().unwrap().push(c),
        }
    }
    out.retain(|s| !s.trim().is_empty());
    out
}
