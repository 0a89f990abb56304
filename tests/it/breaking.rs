//! Issue 14: inputs found by trying to break dqpipe. Each test reproduces one finding with
//! the input that broke it, against the real binary.

use crate::common::*;

use std::path::Path;

fn validate_in(dir: &Path, name: &str, text: &str) -> (i32, String) {
    std::fs::write(dir.join(name), text).unwrap();
    let out = dqpipe(dir).args(["validate", name]).output().unwrap();
    (out.status.code().unwrap_or(-1), stderr(&out))
}

/// Every integer setting of the JSON Schema (defaults, each kind's settings, each store
/// scheme's): the integer properties of `schema`, as dotted paths with their bounds.
fn integer_settings(schema: &serde_json::Value, path: &str, out: &mut Vec<(String, Option<u64>, Option<u64>)>) {
    let types = match &schema["type"] {
        serde_json::Value::String(t) => vec![t.as_str()],
        serde_json::Value::Array(a) => a.iter().filter_map(|t| t.as_str()).collect(),
        _ => vec![],
    };
    if types.contains(&"integer") {
        out.push((path.to_string(), schema["minimum"].as_u64(), schema["maximum"].as_u64()));
    }
    for branch in ["anyOf", "oneOf"] {
        for s in schema[branch].as_array().into_iter().flatten() {
            integer_settings(s, path, out);
        }
    }
    for (k, s) in schema["properties"].as_object().into_iter().flatten() {
        integer_settings(s, &if path.is_empty() { k.clone() } else { format!("{path}.{k}") }, out);
    }
}

/// Sets `dotted` (below `at`) in a YAML document.
fn set(doc: &mut serde_norway::Value, at: &[&str], dotted: &str, value: serde_norway::Value) {
    let mut cur = doc;
    for k in at.iter().copied().chain(dotted.split('.')) {
        let map = cur.as_mapping_mut().expect("a mapping");
        let key = serde_norway::Value::String(k.to_string());
        if !map.contains_key(&key) {
            map.insert(key.clone(), serde_norway::Value::Mapping(Default::default()));
        }
        cur = map.get_mut(&key).unwrap();
    }
    *cur = value;
}

#[test]
fn every_numeric_setting_has_a_range_that_validate_checks() {
    let dir = tempfile::tempdir().unwrap();
    let schema: serde_json::Value =
        serde_json::from_str(&stdout(&dqpipe(dir.path()).arg("schema").output().unwrap())).unwrap();
    let base: serde_norway::Value = serde_norway::from_str(&std::fs::read_to_string(nats_pipeline()).unwrap()).unwrap();

    // Where each group of settings lives in the NATS spec (json_check gets a node of its own).
    let mut targets: Vec<(Vec<String>, serde_json::Value)> =
        vec![(vec!["defaults".into()], schema["properties"]["defaults"].clone())];
    targets.push((
        vec!["stores".into(), "archive".into()],
        schema["properties"]["stores"]["additionalProperties"].clone(),
    ));
    let node_of_kind = |kind: &str| match kind {
        "list" => "list",
        "fetch" => "fetch",
        "clamav" => "scan",
        "nats_message" => "transform",
        "put" => "write",
        "slack" => "alert",
        _ => "extra",
    };
    for branch in schema["properties"]["nodes"]["additionalProperties"]["allOf"].as_array().unwrap() {
        let k = &branch["then"];
        let kind = k["title"].as_str().unwrap();
        targets.push((vec!["nodes".into(), node_of_kind(kind).into(), format!("kind={kind}")], k.clone()));
    }

    let mut checked = 0;
    for (at, s) in targets {
        let mut settings = Vec::new();
        integer_settings(&s, "", &mut settings);
        for (setting, min, max) in settings {
            let max = max.unwrap_or_else(|| panic!("{}.{setting} has no maximum in the schema", at.join(".")));
            let mut values: Vec<serde_norway::Value> =
                vec![(max + 1).into(), (1u64 << 61).into(), u64::MAX.into(), ((1u64 << 53) + 1).into()];
            if let Some(min) = min.filter(|m| *m > 0) {
                values.push((min - 1).into());
            }
            for v in values.into_iter().filter(|v| v.as_u64().is_some_and(|n| n > max || min.is_some_and(|m| n < m))) {
                let mut doc = base.clone();
                let path: Vec<&str> = at.iter().filter(|p| !p.starts_with("kind=")).map(String::as_str).collect();
                if let Some(kind) = at.iter().find_map(|p| p.strip_prefix("kind=")) {
                    if path.last() == Some(&"extra") {
                        set(&mut doc, &path, "kind", kind.into());
                        set(&mut doc, &path, "input", "fetch".into());
                    }
                }
                set(&mut doc, &path, &setting, v.clone());
                let (code, err) = validate_in(dir.path(), "p.yaml", &serde_norway::to_string(&doc).unwrap());
                let place = format!("{}.{setting}", path.join("."));
                assert_eq!(code, 2, "{place} = {v:?}: {err}");
                let line = err
                    .lines()
                    .find(|l| l.contains(&format!(": {place}: ")))
                    .unwrap_or_else(|| panic!("{place} = {v:?}: no error at that setting:\n{err}"));
                assert!(line.starts_with("error: p.yaml:"), "{line}");
                assert!(line.contains("out of range: use a whole number from"), "{line}");
                checked += 1;
            }
        }
    }
    // Defaults (4), clamav (3 + retry), s3 (3), sftp (2), ...: the sweep really swept.
    assert!(checked > 60, "only {checked} values checked");
}

#[test]
fn a_concurrency_on_the_command_line_out_of_range_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let spec = repo().join("pipelines/examples/copy.yaml");
    for c in ["2305843009213693952", "scan=4097", "0"] {
        let out = dqpipe(dir.path()).args(["plan", &spec.to_string_lossy(), "--concurrency", c]).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{c}: {}", stderr(&out));
        assert!(stderr(&out).contains("from 1 to 4096"), "{}", stderr(&out));
    }
}

#[test]
fn deep_nesting_is_refused_quickly_at_its_place() {
    let dir = tempfile::tempdir().unwrap();
    // 50,000 nested ${A:-...}: used to overflow the stack (exit 134).
    let deep = format!("{}x{}", "${A:-".repeat(50_000), "}".repeat(50_000));
    let (code, err) = validate_in(
        dir.path(),
        "p.yaml",
        &format!("version: 1\nname: t\nstores:\n  s: {{ url: \"{deep}\" }}\nnodes:\n  l: {{ kind: list, store: s }}\n"),
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("p.yaml:4:") && err.contains("nested 50000 deep; at most 16"),
        "{}",
        &err[..err.len().min(400)]
    );

    // YAML nested 100,000 levels: refused at the level past the limit, in one pass.
    let yaml = format!("version: 1\nname: t\nnodes: {}{}\n", "[".repeat(100_000), "]".repeat(100_000));
    let (code, err) = validate_in(dir.path(), "p.yaml", &yaml);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("p.yaml:3:") && err.contains("nested more than 64 levels deep"), "{err}");
    // Block style, one level per line: refused at the 65th level.
    let mut block = String::from("version: 1\nname: t\nnodes:\n");
    for i in 0..70 {
        block.push_str(&format!("{}k{i}:\n", "  ".repeat(i + 1)));
    }
    let (code, err) = validate_in(dir.path(), "p.yaml", &block);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("p.yaml:67:") && err.contains("nested more than 64 levels deep"), "{err}");
}

#[test]
fn every_spec_error_has_a_place() {
    let dir = tempfile::tempdir().unwrap();
    for (yaml, expect) in [
        ("version: 1\nname: t\nnodes: {}\n", "p.yaml:3:1: nodes: a pipeline needs nodes"),
        ("name: t\nnodes: {}\n", "p.yaml:1:1: missing field `version`"),
        ("version: 1\nnodes: {}\n", "p.yaml:1:1: missing field `name`"),
        ("version: 1\nname: t\n", "p.yaml:1:1: missing field `nodes`"),
    ] {
        let (code, err) = validate_in(dir.path(), "p.yaml", yaml);
        assert_eq!(code, 2, "{yaml}: {err}");
        assert!(err.contains(expect), "{yaml}: {err}");
    }
    // A billion laughs: refused by the YAML reader, placed at the document's start.
    let mut laughs = String::from("a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n");
    for (i, c) in "bcdefghi".chars().enumerate() {
        let prev = (b'a' + i as u8) as char;
        laughs.push_str(&format!(
            "{c}: &{c} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"
        ));
    }
    let (code, err) = validate_in(dir.path(), "p.yaml", &laughs);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("error: p.yaml:1:1: invalid YAML: repetition limit exceeded"), "{err}");
}

#[test]
fn a_spec_without_nodes_does_not_run() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("p.yaml"), "version: 1\nname: t\nnodes: {}\n").unwrap();
    let out = dqpipe(dir.path()).args(["run", "p.yaml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[test]
fn secret_values_never_appear_in_validation_errors() {
    let dir = tempfile::tempdir().unwrap();
    let secret = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY";
    let yaml = "version: 1\nname: t\nstores:\n  s:\n    url: s3://bucket\n    s3:\n      endpoint: \"${S3_SECRET_ACCESS_KEY}\"\n      sse: \"${MY_TOKEN}\"\n  d: { url: file://./out }\nnodes:\n  l: { kind: list, store: s }\n  c:\n    kind: clamav\n    input: l\n    address: \"${SLACK_WEBHOOK}\"\n";
    std::fs::write(dir.path().join("p.yaml"), yaml).unwrap();
    let out = dqpipe(dir.path())
        .args(["validate", "p.yaml"])
        .env("S3_SECRET_ACCESS_KEY", secret)
        .env("MY_TOKEN", format!("{secret}-2"))
        .env("SLACK_WEBHOOK", format!("https://hooks.example/{secret}"))
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    // The errors are there, about the right fields, without the values.
    assert!(err.contains("stores.s.s3.endpoint") || err.contains("stores.s.s3.sse"), "{err}");
    assert!(err.contains("<redacted>"), "{err}");
    assert!(!err.contains(secret) && !err.contains("EXAMPLEKEY"), "{err}");
}

/// A scanner that answers `OK` once 64 KiB arrived (hanging up, or draining the rest and
/// then answering the session's PING) never reads the canary's EICAR at its end: the run
/// does not start, and nothing is scanned, passed or quarantined.
#[test]
fn a_scanner_answering_ok_before_the_whole_item_was_sent_fails_the_canary() {
    for hang_up in [true, false] {
        let fake = FakeClamd::start(Scanner::EarlyOk { hang_up });
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("var/archive");
        infected_file(&archive.join("one-mib.json"), 1 << 20);
        let Ran { out, .. } = TestRun::nats(dir.path(), &fake.address).run();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "hang_up {hang_up}: {err}");
        assert!(err.contains("canary"), "the failed check is named: {err}");
        assert!(fake.scans.load(std::sync::atomic::Ordering::SeqCst) > 0, "the canary was sent");
        for store in ["internal", "quarantine", "dead-letter"] {
            assert_eq!(files_under(&dir.path().join("var").join(store)), Vec::<String>::new(), "{store}: {err}");
        }
    }
}

/// A scanner whose database detects nothing answers `OK` to every item, as a real one
/// does to clean ones: the canary stops the run before the first item (exit 1); one that
/// stops detecting mid-run (after the preflight canary and 3 more streams) passes nothing
/// from the next canary on, and the run ends incomplete (exit 4) saying why.
#[test]
fn a_scanner_that_detects_nothing_is_not_believed() {
    let blind = FakeClamd::start(Scanner::Blind { detects: 0 });
    let dir = tempfile::tempdir().unwrap();
    infected_file(&dir.path().join("var/archive/eicar.json"), 300);
    let Ran { out, .. } = TestRun::nats(dir.path(), &blind.address).run();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("answered clean for the canary"), "{err}");
    assert_eq!(files_under(&dir.path().join("var/internal")), Vec::<String>::new());

    // Mid-run: canaries every 4 items. The preflight canary (stream 0) is found, then
    // items 1-3, then the canary before the 5th item is answered clean: from there on
    // nothing is passed, and the 4 items scanned before it stay the only ones written.
    let dir = tempfile::tempdir().unwrap();
    let gen = dqpipe(dir.path()).args(["samples", "--out", "var/archive", "--count", "12"]).output().unwrap();
    assert!(gen.status.success(), "{}", stderr(&gen));
    let spec = std::fs::read_to_string(nats_pipeline())
        .unwrap()
        .replace("    concurrency: 8\n  # Records", "    concurrency: 1\n    canary: { every_items: 4 }\n  # Records");
    assert!(spec.contains("every_items: 4"), "the spec's scan node is where this test expects it");
    std::fs::write(dir.path().join("p.yaml"), spec).unwrap();
    let turns = FakeClamd::start(Scanner::Blind { detects: 5 });
    let Ran { out, report } = TestRun::new(dir.path(), "p.yaml").env("CLAMD_ADDRESS", &turns.address).run();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert_eq!(files_under(&dir.path().join("var/internal")).len(), 4, "{err}");
    let failures = report["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 8, "{report}");
    for f in failures {
        assert!(f["reason"].as_str().unwrap().contains("canary scan failed"), "{f}");
        assert_eq!(f["permanent"], false, "a rerun with a working scanner takes it: {f}");
    }
}

/// Issue 28.2: a scanner is asked its version at preflight; a database older than the
/// limit, or one naming no version, is refused unless the spec allows it.
#[test]
fn a_scanner_with_an_old_or_unversioned_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let gen = dqpipe(dir.path()).args(["samples", "--out", "var/archive", "--count", "5"]).output().unwrap();
    assert!(gen.status.success(), "{}", stderr(&gen));

    // Built 4 days ago: over the 72 hours of `database.max_age_hours`.
    let stale = FakeClamd::start_as(Scanner::Blind { detects: usize::MAX }, &clamd_version("4 days ago"));
    let ran = TestRun::nats(dir.path(), &stale.address).run();
    assert_eq!(ran.code(), Some(1), "{}", ran.stderr());
    assert!(
        ran.stderr().contains("database 27500 was built") && ran.stderr().contains("max_age_hours (72)"),
        "{}",
        ran.stderr()
    );
    assert_eq!(stale.scans.load(std::sync::atomic::Ordering::SeqCst), 0, "scanned with a stale database");
    assert!(files_under(&dir.path().join("var/internal")).is_empty());

    // Built an hour ago: scans, and the run completes; the plan and the run say which
    // scanner they checked and how old its signatures are.
    let fresh = FakeClamd::start_as(Scanner::Blind { detects: usize::MAX }, &clamd_version("1 hour ago"));
    let plan =
        dqpipe(dir.path()).args(["plan", &nats_pipeline()]).env("CLAMD_ADDRESS", &fresh.address).output().unwrap();
    assert_eq!(plan.status.code(), Some(0), "{}", stderr(&plan));
    let checked = stderr(&plan);
    assert!(
        checked.contains("scanner checked")
            && checked.contains("scanner=ClamAV 1.4.6/27500/")
            && checked.contains("database=1 h old (at most 72 h)"),
        "{checked}"
    );
    let ran = TestRun::nats(dir.path(), &fresh.address).run();
    assert_eq!(ran.code(), Some(0), "{}", ran.stderr());
    assert_eq!(files_under(&dir.path().join("var/internal")).len(), 5);

    // Debian's clamd with local signatures only names no database version: refused
    // unless the spec allows it (the tests' environment does, see `dqpipe()`).
    let clamd = Clamd::start("25M");
    let dir = tempfile::tempdir().unwrap();
    let gen = dqpipe(dir.path()).args(["samples", "--out", "var/archive", "--count", "5"]).output().unwrap();
    assert!(gen.status.success(), "{}", stderr(&gen));
    let ran = TestRun::nats(dir.path(), &clamd.tcp()).env("CLAMAV_ALLOW_UNVERSIONED_DB", "false").run();
    assert_eq!(ran.code(), Some(1), "{}", ran.stderr());
    assert!(
        ran.stderr().contains("ClamAV 1.4.6 names no database version")
            && ran.stderr().contains("allow_unversioned: true"),
        "{}",
        ran.stderr()
    );
    assert!(files_under(&dir.path().join("var/internal")).is_empty());
}

#[test]
fn limit_zero_takes_nothing_and_deletes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    for n in 0..3 {
        std::fs::create_dir_all(dir.path().join("in")).unwrap();
        std::fs::write(dir.path().join(format!("in/{n}.json")), "{}").unwrap();
    }
    std::fs::write(
        dir.path().join("p.yaml"),
        "version: 1\nname: t\nstores:\n  src: { url: file://./in }\n  dst: { url: file://./out }\nnodes:\n  list: { kind: list, store: src, limit: \"${MAX_BATCH_SIZE:-500}\", delete_after_success: true }\n  fetch: { kind: fetch, input: list }\n  write: { kind: put, input: fetch, store: dst, key: \"{{ name }}\" }\n",
    )
    .unwrap();
    let out =
        dqpipe(dir.path()).args(["run", "p.yaml", "--progress", "off"]).env("MAX_BATCH_SIZE", "0").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(files_under(&dir.path().join("in")).len(), 3, "limit 0 deleted something");
    assert!(!dir.path().join("out").exists() || files_under(&dir.path().join("out")).is_empty());
    assert!(stderr(&out).contains("limit is 0"), "{}", stderr(&out));
}

#[test]
fn temporary_files_left_by_a_killed_run_are_swept_by_the_next() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("in")).unwrap();
    std::fs::write(dir.path().join("in/a.json"), "{}").unwrap();
    // What a kill -9 between write and rename leaves: a temporary file of a process that is
    // gone; and one of a process still running (this test), which must stay.
    let host: String = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(32)
        .collect();
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    let gone_pid = gone.id();
    gone.wait().unwrap();
    let out_dir = dir.path().join("out/copied");
    std::fs::create_dir_all(&out_dir).unwrap();
    let stale = out_dir.join(format!(".dqpipe-tmp-{host}-{gone_pid}-7"));
    let live = out_dir.join(format!(".dqpipe-tmp-{host}-{}-7", std::process::id()));
    std::fs::write(&stale, "partial").unwrap();
    std::fs::write(&live, "being written").unwrap();
    let out = dqpipe(dir.path())
        .args(["run", &repo().join("pipelines/examples/copy.yaml").to_string_lossy(), "--progress", "off"])
        .env("SRC_URL", "file://./in")
        .env("DST_URL", "file://./out")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(out_dir.join("a.json").is_file(), "{:?}", all_files_under(&dir.path().join("out")));
    assert!(!stale.exists(), "the dead writer's temporary file is still there");
    assert!(live.exists(), "a running writer's temporary file was removed");
}

#[test]
fn sigterm_during_a_preflight_that_hangs_ends_the_run_with_a_report() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    // An "S3 server" that accepts connections and never answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = std::sync::Arc::new(AtomicUsize::new(0));
    let a = accepted.clone();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in listener.incoming() {
            a.fetch_add(1, Ordering::SeqCst);
            held.push(c);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let mut c = dqpipe(dir.path());
    c.args(["run", &nats_pipeline(), "--progress", "off", "--report", "r.json"]);
    nats_s3_env(&mut c, &format!("http://127.0.0.1:{port}"), "tcp://127.0.0.1:1");
    let mut child = c.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    // Wait for the event: the preflight's first request is in the black hole.
    while accepted.load(Ordering::SeqCst) == 0 {
        assert!(child.try_wait().unwrap().is_none(), "dqpipe ended before reaching the server");
        std::thread::yield_now();
    }
    std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    // Kubernetes sends SIGKILL 30 s after SIGTERM: the run must be over before.
    let mut stderr_pipe = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait()));
    let status =
        rx.recv_timeout(std::time::Duration::from_secs(30)).expect("still running 30 s after SIGTERM").unwrap();
    let err = {
        use std::io::Read;
        let mut s = String::new();
        stderr_pipe.read_to_string(&mut s).unwrap();
        s
    };
    assert_eq!(status.code(), Some(4), "{err}");
    let report = read_json(&dir.path().join("r.json"));
    assert_eq!(report["interrupted"], true, "{report}");
    assert_eq!(report["outcome"], "incomplete", "{report}");
    assert!(err.contains("stopped during the preflight checks"), "{err}");
}

/// 2,500 small objects under `k/` in the S3 server's `archive` bucket (3 listing pages).
fn archive_of_2500(s3: &S3Server) {
    let dir = s3.bucket_dir("archive").join("k");
    std::fs::create_dir_all(&dir).unwrap();
    for n in 0..2500 {
        std::fs::write(dir.join(format!("{n:05}.json")), "{}").unwrap();
    }
}

fn copy_through(dir: &Path, endpoint: &str, attempts: u32) -> (std::process::Output, serde_json::Value) {
    std::fs::write(
        dir.join("p.yaml"),
        format!(
            "version: 1\nname: t\nstores:\n  src:\n    url: s3://archive/k\n    s3: {{ endpoint: \"{endpoint}\", access_key_id: {S3_KEY_ID}, secret_access_key: {S3_SECRET} }}\n  dst: {{ url: file://./out }}\nnodes:\n  list: {{ kind: list, store: src, retry: {{ attempts: {attempts}, initial_delay_ms: 10, max_delay_ms: 20 }} }}\n  fetch: {{ kind: fetch, input: list }}\n  write: {{ kind: put, input: fetch, store: dst, key: \"{{{{ key }}}}\" }}\n"
        ),
    )
    .unwrap();
    let out = dqpipe(dir).args(["run", "p.yaml", "--progress", "off", "--report", "r.json"]).output().unwrap();
    let report = read_json(&dir.join("r.json"));
    (out, report)
}

/// Issue 27.6a: a last page cut to a well-formed document (`IsTruncated` false, fewer
/// `<Contents>` than its `KeyCount`) is not the end of the listing: the listing is retried
/// after its last key, and past the retries the run is incomplete, never complete.
#[test]
fn a_last_page_holding_fewer_objects_than_its_key_count_is_retried() {
    let s3 = S3Server::start(&["archive"]);
    archive_of_2500(&s3);
    // Cuts the last object out of the last page, `times` times.
    let cutting = |times: usize| {
        let cuts = std::sync::atomic::AtomicUsize::new(0);
        listing_proxy_with(s3.port, move |text: &str| {
            let last = text.contains("<IsTruncated>false</IsTruncated>") && text.contains("<KeyCount>");
            if !last || cuts.fetch_add(1, std::sync::atomic::Ordering::SeqCst) >= times {
                return None;
            }
            let (a, b) = (text.rfind("<Contents>")?, text.rfind("</Contents>")?);
            Some(format!("{}{}", &text[..a], &text[b + "</Contents>".len()..]))
        })
    };
    let proxy = cutting(1);
    let dir = tempfile::tempdir().unwrap();
    let (out, report) = copy_through(dir.path(), &format!("http://127.0.0.1:{}", proxy.port), 6);
    assert_eq!(proxy.altered(), 1, "the proxy did not cut the last page");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(files_under(&dir.path().join("out")).len(), 2500);
    assert_eq!(report["items"]["complete"], 2500, "{report}");

    let proxy = cutting(usize::MAX);
    let dir = tempfile::tempdir().unwrap();
    let (out, report) = copy_through(dir.path(), &format!("http://127.0.0.1:{}", proxy.port), 2);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let errors = report["source_errors"].as_array().unwrap();
    assert!(errors[0]["error"].as_str().unwrap().contains("KeyCount"), "{report}");
}

#[test]
fn a_listing_page_marked_truncated_without_a_token_is_not_the_end() {
    let s3 = S3Server::start(&["archive"]);
    archive_of_2500(&s3);

    // Once in the run (the preflight's look at the first page is the first page broken):
    // the listing goes on after the last key it saw; every object is copied.
    let proxy = listing_proxy(s3.port, 0..2, false);
    let dir = tempfile::tempdir().unwrap();
    let (out, report) = copy_through(dir.path(), &format!("http://127.0.0.1:{}", proxy.port), 6);
    assert_eq!(proxy.altered(), 2, "the proxy did not break the pages");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(files_under(&dir.path().join("out")).len(), 2500);
    assert_eq!(report["items"]["complete"], 2500, "{report}");
    assert!(report["nodes"][0]["retries"].as_u64().unwrap() >= 1, "{report}");

    // Every page broken: each retry goes on after the page's last key, and the listing
    // still reaches its real end.
    let proxy = listing_proxy(s3.port, 0..usize::MAX, false);
    let dir = tempfile::tempdir().unwrap();
    let (out, report) = copy_through(dir.path(), &format!("http://127.0.0.1:{}", proxy.port), 2);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(report["items"]["complete"], 2500, "{report}");

    // From the run's second page on, broken pages that bring nothing new: past the
    // retries, a source error and exit 4 (rerun), never a complete run. (The preflight's
    // look at the first page is page 0.)
    let proxy = listing_proxy(s3.port, 2..usize::MAX, true);
    let dir = tempfile::tempdir().unwrap();
    let (out, report) = copy_through(dir.path(), &format!("http://127.0.0.1:{}", proxy.port), 2);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let errors = report["source_errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{report}");
    assert!(errors[0]["error"].as_str().unwrap().contains("truncated but gave no continuation token"), "{report}");
}

#[test]
fn an_sftp_file_still_being_uploaded_is_neither_taken_nor_deleted() {
    let clamd = Clamd::start("25M");
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().unwrap();
    let name = "[-PRMD=EG-ADMD=ICAO-C=XX-;MTA-EGGG-1-MTCU_0123456789ABCDEF].json";
    let full = r#"{"X400Message":{"envelope":{"x":1}},"padding":"...................."}"#;
    let landed = sshd.landing().join(name);

    // Just written (480 of 627 bytes, say): too young to be stable, left alone.
    std::fs::write(&landed, &full[..full.len() / 2]).unwrap();
    let Ran { out, report } = TestRun::sftp_ingest(dir.path(), &sshd, "id_ed25519", &clamd.tcp()).run();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(report["items"]["from_sources"], 0, "{report}");
    assert!(landed.exists(), "a file being uploaded was deleted");
    assert!(stderr(&out).contains("modified too recently"), "{}", stderr(&out));

    // Old enough at listing, but it grows while it is processed (the scanner appends to
    // it before answering): its copies are written, it is not deleted, the run says why.
    settle_files(&sshd.landing());
    let grow = landed.clone();
    let rest = full[full.len() / 2..].to_string();
    let scanner = FakeClamd::start(Scanner::Hook(std::sync::Arc::new(move || {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().append(true).open(&grow).unwrap();
        f.write_all(rest.as_bytes()).unwrap();
    })));
    let Ran { out, report } = TestRun::sftp_ingest(dir.path(), &sshd, "id_ed25519", &scanner.address).run();
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(landed.exists(), "a file that changed since listing was deleted");
    assert_eq!(std::fs::read_to_string(&landed).unwrap(), full);
    let reason = report["failures"][0]["reason"].as_str().unwrap_or_default().to_string();
    assert!(reason.contains("changed since it was listed") && reason.contains("not deleted"), "{report}");

    // Complete and settled: the next run takes the whole file and deletes it.
    settle_files(&sshd.landing());
    let out = TestRun::sftp_ingest(dir.path(), &sshd, "id_ed25519", &clamd.tcp()).run().out;
    assert!(matches!(out.status.code(), Some(0 | 3)), "{}", stderr(&out));
    assert!(!landed.exists(), "the settled file was not taken");
    let delivered: Vec<String> =
        all_files_under(&dir.path().join("var")).into_iter().filter(|f| f.ends_with(name)).collect();
    assert!(!delivered.is_empty(), "{:?}", all_files_under(&dir.path().join("var")));
}

#[test]
fn keys_are_read_exactly_from_a_second_s3_implementation() {
    let moto = MotoServer::start();
    // S3 allows both; object_store's paths would read `conf/a.json` for the first.
    moto.put(
        "archive",
        &[
            ("/conf/a.json", "{\"which\":\"leading slash\"}"),
            ("conf/a.json", "{\"which\":\"plain\"}"),
            ("cr\rkey.json", "{}"),
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("p.yaml"),
        format!(
            "version: 1\nname: t\nstores:\n  src:\n    url: s3://archive\n    s3: {{ endpoint: \"{}\", access_key_id: moto, secret_access_key: moto }}\n  dst: {{ url: file://./out }}\nnodes:\n  list: {{ kind: list, store: src }}\n  fetch: {{ kind: fetch, input: list }}\n  write: {{ kind: put, input: fetch, store: dst, key: \"{{{{ key }}}}\" }}\n",
            moto.endpoint()
        ),
    )
    .unwrap();
    let out = dqpipe(dir.path()).args(["run", "p.yaml", "--progress", "off", "--report", "r.json"]).output().unwrap();
    let report = read_json(&dir.path().join("r.json"));
    // Keys the client cannot address are refused for good (exit 3), not retried.
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    // The plain key is copied with its own bytes; the other object is not read as it.
    assert_eq!(files_under(&dir.path().join("out")), vec!["conf/a.json"]);
    assert_eq!(std::fs::read_to_string(dir.path().join("out/conf/a.json")).unwrap(), "{\"which\":\"plain\"}");
    let failures = report["failures"].as_array().unwrap();
    let by_key =
        |k: &str| failures.iter().find(|f| f["key"] == k).unwrap_or_else(|| panic!("{k:?} not reported: {report}"));
    assert!(by_key("/conf/a.json")["reason"].as_str().unwrap().contains("cannot be addressed exactly"), "{report}");
    // The CR key is listed and reported as it is, not as `cr\nkey.json` (object_store's
    // paths refuse control characters, so its fetch is refused alone).
    assert_eq!(by_key("cr\rkey.json")["node"], "fetch", "{report}");
    assert!(failures.iter().all(|f| f["key"] != "cr\nkey.json"), "{report}");
    assert_eq!(report["items"]["complete"], 1, "{report}");
}

#[test]
fn internal_sse_encrypts_quarantine_and_dead_letter_too() {
    let clamd = Clamd::start("25M");
    let s3 = S3Server::start(&["archive", "internal", "ops"]);
    let dir = tempfile::tempdir().unwrap();
    let samples = dir.path().join("samples");
    let gen = dqpipe(dir.path())
        .args(["samples", "--out", &samples.to_string_lossy(), "--count", "20", "--infected", "2", "--malformed", "2"])
        .output()
        .unwrap();
    assert!(gen.status.success(), "{}", stderr(&gen));
    upload_samples(&s3, &samples);
    // Every request goes through a proxy that keeps what dqpipe sent.
    let proxy = RecordingProxy::start(s3.port);
    let mut c = dqpipe(dir.path());
    nats_s3_env(&mut c, &format!("http://127.0.0.1:{}", proxy.port), &clamd.tcp());
    let out = c.args(["run", &nats_pipeline(), "--progress", "off"]).env("INTERNAL_SSE", "AES256").output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert_eq!(files_under(&s3.bucket_dir("ops").join("quarantine/nats")).len(), 4);
    assert_eq!(files_under(&s3.bucket_dir("ops").join("dead-letter/nats")).len(), 4);
    // Every write (internal, quarantine, dead letter, done markers) asked for encryption.
    let puts = proxy.count("put /");
    assert!(proxy.count("put /ops/") >= 8, "quarantine and dead-letter writes not seen");
    assert_eq!(proxy.count("x-amz-server-side-encryption: aes256"), puts, "a write without SSE");
}

#[test]
fn a_rest_scanner_answering_ok_and_hanging_up_mid_file_passes_nothing() {
    use std::io::{BufRead, Read, Write};
    // The original job's REST front end, misbehaving: it reads the request's head and
    // 64 KiB of its body, answers "Everything ok : true" and hangs up. (One that reads on
    // and throws the rest away cannot be told from a real one: hyper sends the whole body
    // before it looks at the answer. README, "Fail closed".)
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/scan", listener.local_addr().unwrap());
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let a = answered.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let a = a.clone();
            std::thread::spawn(move || {
                let mut r = std::io::BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                while r.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                    line.clear();
                }
                let mut body = vec![0u8; 64 * 1024];
                let _ = r.read_exact(&mut body);
                let text = "Everything ok : true";
                let mut w = conn;
                let _ =
                    write!(w, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}", text.len());
                a.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let _ = w.shutdown(std::net::Shutdown::Both);
            });
        }
    });
    let dir = tempfile::tempdir().unwrap();
    infected_file(&dir.path().join("var/archive/twenty-mb.json"), 20_000_000);
    // The canary (4 MiB) is cut off the same way: the run does not start.
    let Ran { out, .. } = TestRun::nats(dir.path(), &url).run();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("canary"), "{}", stderr(&out));
    assert!(answered.load(std::sync::atomic::Ordering::SeqCst) > 0, "the fake scanner was never asked");
    for store in ["internal", "quarantine", "dead-letter"] {
        assert_eq!(files_under(&dir.path().join("var").join(store)), Vec::<String>::new(), "{store}");
    }
}

#[test]
fn run_plan_reads_the_plan_file_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("in")).unwrap();
    std::fs::write(dir.path().join("in/a.json"), "{}").unwrap();
    let spec = repo().join("pipelines/examples/copy.yaml").to_string_lossy().into_owned();
    let with_env = |c: &mut std::process::Command| {
        c.env("SRC_URL", "file://./in").env("DST_URL", "file://./out");
    };
    let mut plan = dqpipe(dir.path());
    with_env(&mut plan);
    let out = plan.args(["plan", &spec, "--out", "small.json"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));

    // The same plan with 300,000 more objects already done: a 60 MB file.
    let small = std::fs::read_to_string(dir.path().join("small.json")).unwrap();
    let (head, tail) = small.split_once("\"objects\":[").unwrap();
    let mut big = String::with_capacity(70 << 20);
    big.push_str(head);
    big.push_str("\"objects\":[");
    for n in 0..300_000 {
        big.push_str(&format!(
            "{{\"source\":\"list\",\"key\":\"archive/2019/{n:08}-padding-to-a-realistic-key-length.json\",\"size\":627,\"etag\":\"\\\"{n:032x}\\\"\",\"status\":\"done\",\"delete_at_source\":false,\"route\":[],\"writes\":[],\"notes\":[]}},"
        ));
    }
    big.push_str(tail);
    std::fs::write(dir.path().join("big.json"), &big).unwrap();
    let big_len = big.len() as u64;
    drop(big);

    let peak = |plan: &str| {
        let _ = std::fs::remove_dir_all(dir.path().join("out"));
        let mut c = dqpipe(dir.path());
        with_env(&mut c);
        let out = c.args(["run", &spec, "--progress", "off", "--plan", plan, "--report", "r.json"]).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{plan}: {}", stderr(&out));
        assert!(dir.path().join("out/copied/a.json").is_file(), "{plan}: the planned object was not copied");
        read_json(&dir.path().join("r.json"))["peak_rss_bytes"].as_u64().expect("peak memory in the report")
    };
    let (small_peak, big_peak) = (peak("small.json"), peak("big.json"));
    // Read whole, the file alone would add its own size (60 MB) to the peak, and its parsed
    // tree several times that. Streamed, only the reader's buffer and one object at a time
    // are held: the peak stays within a quarter of the file's size of the small plan's.
    assert!(
        big_peak < small_peak + big_len / 4,
        "peak {big_peak} B with a {big_len} B plan, {small_peak} B with a small one"
    );
}

/// Issue 27.6c: a file in the done-marker folder whose name no store reads back (a
/// newline in it) is skipped with a warning, not a failure of every run.
#[test]
fn a_stray_file_in_the_marker_folder_is_skipped_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("in")).unwrap();
    for n in 0..3 {
        std::fs::write(dir.path().join(format!("in/{n}.json")), "{}").unwrap();
    }
    std::fs::write(
        dir.path().join("p.yaml"),
        "version: 1\nname: t\nstores:\n  src: { url: file://./in }\n  dst: { url: file://./out }\nnodes:\n  list: { kind: list, store: src, resume: { store: dst } }\n  fetch: { kind: fetch, input: list }\n  write: { kind: put, input: fetch, store: dst, key: \"{{ name }}\" }\n",
    )
    .unwrap();
    let first = TestRun::new(dir.path(), "p.yaml").run();
    assert_eq!(first.code(), Some(0), "{}", first.stderr());
    std::fs::write(dir.path().join("out/_dqpipe/done/t/stray\nname.jsonl"), "not a marker").unwrap();
    let rerun = TestRun::new(dir.path(), "p.yaml").run();
    assert_eq!(rerun.code(), Some(0), "{}", rerun.stderr());
    assert_eq!(rerun.report["items"]["skipped_done"].as_u64(), Some(3), "{}", rerun.report);
    assert!(rerun.stderr().contains("not a done marker dqpipe writes"), "{}", rerun.stderr());
}
