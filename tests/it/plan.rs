//! `dqpipe plan`: read-only against a real S3 server and local folders, equal to what the
//! run then does item by item, a documented JSON shape, `--detailed-exitcode`, and
//! `run --plan` with a stale plan.

use crate::common::*;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Every file under `root` with its bytes (s3s-fs keeps objects and metadata as files).
fn snapshot(root: &Path) -> BTreeMap<String, Vec<u8>> {
    all_files_under(root).into_iter().map(|f| (f.clone(), std::fs::read(root.join(&f)).unwrap())).collect()
}

fn plan_json(dir: &Path, args: &[&str], env: &[(&str, String)]) -> (Option<i32>, serde_json::Value, String) {
    let mut c = dqpipe(dir);
    c.args(["plan", &nats_pipeline(), "--format", "json"]).args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    let v = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out.status.code(), v, stderr(&out))
}

#[test]
fn plans_change_nothing_in_s3_or_local_folders() {
    let clamd = Clamd::start("25M");
    let s3 = S3Server::start(&["archive", "internal", "ops"]);
    let dir = tempfile::tempdir().unwrap();
    let samples = samples_and_reference(dir.path(), 300, 2, 2, &clamd.tcp());
    upload_samples(&s3, &samples);
    // Some objects already done, so that plans read markers too.
    let mut c = dqpipe(dir.path());
    nats_s3_env(&mut c, &s3.endpoint(), &clamd.tcp());
    c.env("QUARANTINE_URL", "file://./var/q").env("DEADLETTER_URL", "file://./var/dl");
    let spec = nats_pipeline();
    let first = c.args(["run", &spec, "--progress", "off", "--shard", "0/3"]).output().unwrap();
    assert!(matches!(first.status.code(), Some(0) | Some(3)), "{}", stderr(&first));

    let before_s3 = snapshot(s3.root.path());
    let before_local = snapshot(&dir.path().join("var"));
    for args in [vec![], vec!["--deep"], vec!["--deep", "--format", "json", "--all"], vec!["--out", "plan.json"]] {
        let mut c = dqpipe(dir.path());
        nats_s3_env(&mut c, &s3.endpoint(), &clamd.tcp());
        c.env("QUARANTINE_URL", "file://./var/q").env("DEADLETTER_URL", "file://./var/dl");
        let out = c.args(["plan", &spec]).args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
        assert!(stdout(&out).contains("already done") || args.contains(&"json"), "{}", stdout(&out));
    }
    assert!(snapshot(s3.root.path()) == before_s3, "a plan changed something in S3");
    assert!(snapshot(&dir.path().join("var")) == before_local, "a plan changed a local folder");
    // The plans asked the scanner (PING, VERSION, canary) and HEAD on each written store:
    // nothing a snapshot can see.
}

#[test]
fn the_plan_is_what_the_run_does_item_by_item() {
    let clamd = Clamd::start("25M");
    let dir = tempfile::tempdir().unwrap();
    let samples = dir.path().join("var/archive");
    let gen = dqpipe(dir.path())
        .args(["samples", "--out", &samples.to_string_lossy(), "--count", "150", "--malformed", "4"])
        .output()
        .unwrap();
    assert!(gen.status.success());
    let env = [("CLAMD_ADDRESS", clamd.tcp())];

    let (code, shallow, err) = plan_json(dir.path(), &["--all"], &env);
    assert_eq!(code, Some(0), "{err}");
    let (code, deep, err) = plan_json(dir.path(), &["--deep", "--all", "--detailed-exitcode"], &env);
    assert_eq!(code, Some(2), "work to do: {err}");
    assert_eq!(shallow["totals"]["to_process"], 150);
    assert_eq!(deep["totals"]["to_process"], 150);
    // Totals per route: the deep plan knows which messages are dead-lettered.
    assert_eq!(deep["totals"]["writes"], serde_json::json!({"internal (write)": 146, "deadletter (dead_letter)": 4}));
    assert_eq!(shallow["totals"]["writes"], serde_json::json!({"internal (write)": 150}));
    // Without --deep, msg_date is unknown: the key says what it needs.
    let w = &shallow["objects"][0]["writes"][0];
    assert_eq!((w["key"].is_null(), w["needs"][0].as_str()), (true, Some("msg_date")));

    let planned: BTreeSet<(String, String)> = deep["objects"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|o| o["writes"].as_array().unwrap().clone())
        .map(|w| (w["store"].as_str().unwrap().to_string(), w["key"].as_str().unwrap().to_string()))
        .collect();
    let run = dqpipe(dir.path())
        .args(["run", &nats_pipeline(), "--progress", "off", "--report", "r.json"])
        .env("CLAMD_ADDRESS", clamd.tcp())
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(3), "{}", stderr(&run));
    let mut written = BTreeSet::new();
    for (store, folder) in [("internal", "var/internal"), ("deadletter", "var/dead-letter")] {
        for f in files_under(&dir.path().join(folder)) {
            if !f.ends_with(".error.json") {
                written.insert((store.to_string(), f));
            }
        }
    }
    assert_eq!(planned, written);
    let r = read_json(&dir.path().join("r.json"));
    assert_eq!(r["items"]["from_sources"], deep["totals"]["to_process"]);

    // Everything is done now: nothing to do, exit 0 with --detailed-exitcode.
    let (code, after, _) = plan_json(dir.path(), &["--detailed-exitcode"], &env);
    assert_eq!(code, Some(0));
    assert_eq!(
        (after["totals"]["to_process"].as_u64(), after["totals"]["already_done"].as_u64()),
        (Some(0), Some(150))
    );
    let text = dqpipe(dir.path()).args(["plan", &nats_pipeline()]).env("CLAMD_ADDRESS", clamd.tcp()).output().unwrap();
    assert!(
        stdout(&text).contains("Plan: 0 objects to process (0 B), 150 already done, 0 to delete."),
        "{}",
        stdout(&text)
    );
}

#[test]
fn the_json_shape_is_the_documented_one() {
    let dir = tempfile::tempdir().unwrap();
    let samples = dir.path().join("var/archive");
    dqpipe(dir.path()).args(["samples", "--out", &samples.to_string_lossy(), "--count", "30"]).output().unwrap();
    // No scanner here: the plan checks the listing only.
    let (code, v, err) = plan_json(dir.path(), &["--limit", "5", "--no-preflight"], &[]);
    assert_eq!(code, Some(0), "{err}");
    let keys = |v: &serde_json::Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(
        keys(&v),
        [
            "format",
            "pipeline",
            "spec",
            "spec_hash",
            "created_at",
            "deep",
            "reprocess",
            "shard",
            "stores",
            "nodes",
            "objects",
            "totals",
            "objects_shown"
        ]
    );
    assert_eq!(v["format"], "dqpipe-plan/1");
    assert_eq!(v["objects"].as_array().unwrap().len(), 5);
    assert_eq!(v["objects_shown"], 5);
    assert_eq!(
        keys(&v["objects"][0]),
        ["source", "key", "size", "etag", "status", "delete_at_source", "route", "writes", "notes"]
    );
    assert_eq!(v["objects"][0]["route"], serde_json::json!(["fetch", "scan", "transform", "write"]));
    assert_eq!(keys(&v["totals"]), ["to_process", "bytes", "already_done", "errors", "to_delete", "writes"]);
    assert_eq!(v["totals"]["to_process"], 30);

    // An invalid spec prints its errors, not a plan; exit 2 (1 with --detailed-exitcode).
    std::fs::write(dir.path().join("bad.yaml"), "version: 1\nname: x\nnodes:\n  a: { kind: nope }\n").unwrap();
    for (flag, code) in [(None, 2), (Some("--detailed-exitcode"), 1)] {
        let out = dqpipe(dir.path()).args(["plan", "bad.yaml"]).args(flag).output().unwrap();
        assert_eq!(out.status.code(), Some(code));
        assert!(stdout(&out).is_empty() && stderr(&out).contains("bad.yaml:4:"), "{}", stderr(&out));
    }
}

#[test]
fn run_with_a_saved_plan_does_exactly_the_plan_and_reports_what_changed() {
    let clamd = Clamd::start("25M");
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("var/archive");
    dqpipe(dir.path()).args(["samples", "--out", &archive.to_string_lossy(), "--count", "40"]).output().unwrap();
    let mut names = files_under(&archive);
    names.sort();
    let out = dqpipe(dir.path())
        .args(["plan", &nats_pipeline(), "--out", "plan.json"])
        .env("CLAMD_ADDRESS", clamd.tcp())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    // After planning: one object changes, one is deleted, one is added.
    let changed = &names[0];
    let deleted = &names[1];
    let original = std::fs::read(archive.join(changed)).unwrap();
    std::fs::write(archive.join(changed), [original.as_slice(), b" "].concat()).unwrap();
    std::fs::remove_file(archive.join(deleted)).unwrap();
    std::fs::write(archive.join("[-PRMD=EG-ADMD=ICAO-C=XX-;MTA-EGGG-1-MTCU_0000000000000NEW].json"), &original)
        .unwrap();

    // A plan from another spec or other variables is refused.
    let other = dqpipe(dir.path())
        .args(["run", &nats_pipeline(), "--plan", "plan.json"])
        .env("CLAMD_ADDRESS", clamd.tcp())
        .env("INTERNAL_PREFIX", "elsewhere")
        .output()
        .unwrap();
    assert_eq!(other.status.code(), Some(2));
    assert!(stderr(&other).contains("different spec or different variables"), "{}", stderr(&other));
    assert!(files_under(&dir.path().join("var/internal")).is_empty());

    let run = dqpipe(dir.path())
        .args(["run", &nats_pipeline(), "--plan", "plan.json", "--progress", "off", "--report", "r.json"])
        .env("CLAMD_ADDRESS", clamd.tcp())
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(4), "{}", stderr(&run));
    let r = read_json(&dir.path().join("r.json"));
    assert_eq!(r["items"]["complete"], 38);
    let failures: BTreeMap<String, String> = r["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["key"].as_str().unwrap().to_string(), f["reason"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(failures.len(), 2, "{failures:?}");
    assert!(failures[changed].contains("changed since the plan was made"), "{failures:?}");
    assert!(failures[deleted].contains("no longer listed"), "{failures:?}");
    // The new object was not in the plan: not processed.
    assert_eq!(files_under(&dir.path().join("var/internal")).len(), 38);
    assert!(!files_under(&dir.path().join("var/internal")).iter().any(|f| f.contains("0000000000000NEW")));
}

#[test]
fn a_plan_made_with_reprocess_is_run_with_reprocess() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("in")).unwrap();
    for n in 0..5 {
        std::fs::write(dir.path().join(format!("in/{n}.json")), "{}").unwrap();
    }
    std::fs::write(
        dir.path().join("p.yaml"),
        "version: 1\nname: t\nstores:\n  src: { url: file://./in }\n  dst: { url: file://./out }\nnodes:\n  list: { kind: list, store: src, resume: { store: dst } }\n  fetch: { kind: fetch, input: list }\n  write: { kind: put, input: fetch, store: dst, key: \"{{ name }}\" }\n",
    )
    .unwrap();
    let run = |args: &[&str]| {
        let out = dqpipe(dir.path())
            .args(["run", "p.yaml", "--progress", "off", "--report", "r.json"])
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        read_json(&dir.path().join("r.json"))
    };
    assert_eq!(run(&[])["items"]["complete"], 5);
    // Everything is done now; a plan made with --reprocess plans all five again...
    let out = dqpipe(dir.path()).args(["plan", "p.yaml", "--reprocess", "--out", "again.json"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("Plan: 5 objects to process"), "{}", stdout(&out));
    // ...and the run of that plan processes them, not skips them as done.
    let r = run(&["--plan", "again.json"]);
    assert_eq!((r["items"]["complete"].as_u64(), r["items"]["skipped_done"].as_u64()), (Some(5), Some(0)), "{r}");
}

/// Issue 33.1: a plan checks what the run needs, as the run would: a scanner that cannot
/// be reached, or a destination whose credentials are wrong, fails the plan (exit 1,
/// naming the node) instead of promising work; `--no-preflight` checks the listing only.
#[test]
fn a_plan_fails_when_the_run_would_fail_its_preflight() {
    let s3 = S3Server::start(&["archive", "internal", "ops"]);
    let clamd = Clamd::start("25M");
    let dir = tempfile::tempdir().unwrap();
    let samples = samples_and_reference(dir.path(), 5, 0, 0, &clamd.tcp());
    upload_samples(&s3, &samples);
    let plan = |clamd: &str, dst_secret: &str, extra: &[&str]| {
        let mut c = dqpipe(dir.path());
        nats_s3_env(&mut c, &s3.endpoint(), clamd);
        c.env("S3_DST_SECRET_ACCESS_KEY", dst_secret)
            .args(["plan", &nats_pipeline(), "--detailed-exitcode"])
            .args(extra);
        let out = c.output().unwrap();
        (out.status.code(), format!("{}{}", stdout(&out), stderr(&out)))
    };
    let (code, text) = plan(&clamd.tcp(), S3_SECRET, &[]);
    assert_eq!(code, Some(2), "work to do: {text}");
    assert!(text.contains("Checks, as a run makes them"), "{text}");

    let (code, text) = plan("tcp://127.0.0.1:1", S3_SECRET, &[]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("preflight checks failed") && text.contains("scan:"), "{text}");

    let (code, text) = plan(&clamd.tcp(), "wrong-secret-value", &[]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("write:") && !text.contains("wrong-secret-value"), "{text}");

    let (code, text) = plan("tcp://127.0.0.1:1", S3_SECRET, &["--no-preflight"]);
    assert_eq!(code, Some(2), "--no-preflight lists only: {text}");
}
