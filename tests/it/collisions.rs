//! Two source objects that map to one destination key never overwrite each other: within a
//! run, across runs, and between an object and another's `.error.json`. The one refused
//! goes to the node's `refused` route (the NATS pipeline's dead letter) with a reason naming
//! both source keys, or, unrouted, stays at its source (exit 3).

use crate::common::*;

use std::path::Path;

/// A NATS archive file, valid, dated 2019-01-03 (its `msg_date`), whose callsign is
/// `arcid`: files made with different callsigns have different bodies and one destination
/// name when their names decode alike.
fn message(path: &Path, arcid: &str) {
    let sample = repo().join("../shared/samples/[-PRMD=EG-ADMD=ICAO-C=XX-;MTA-EGGG-1-MTCU_06CB0FB39A1DE644].json");
    let text = std::fs::read_to_string(sample).unwrap().replace("VIR8929", arcid);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn run(dir: &Path, clamd: &Clamd, extra: &[&str]) -> (std::process::Output, serde_json::Value) {
    let ran = TestRun::nats(dir, &clamd.tcp()).args(extra).run();
    (ran.out, ran.report)
}

/// The reason the dead letter recorded for `key`.
fn dead_letter_reason(dir: &Path, key: &str) -> String {
    let path = dir.join("var/dead-letter").join(format!("{key}.error.json"));
    read_json(&path)["reason"].as_str().unwrap().to_string()
}

#[test]
fn archive_files_that_map_to_one_key_never_overwrite_each_other() {
    let clamd = Clamd::start("25M");
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("var/archive");
    // Names are URL-decoded (as the original job did): each group decodes to one name,
    // so to one key in the internal store.
    let groups: [&[&str]; 3] =
        [&["a b.json", "a%20b.json"], &["100%25done.json", "100%done.json"], &["a/X.json", "b/X.json", "a/%58.json"]];
    let dest = ["a b.json", "100%done.json", "X.json"];
    for (g, keys) in groups.iter().enumerate() {
        for (i, key) in keys.iter().enumerate() {
            message(&archive.join(key), &format!("VIR{g}{i}00"));
        }
    }
    let (out, report) = run(dir.path(), &clamd, &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert_eq!(report["items"]["complete"], 7, "{report}");

    let internal = dir.path().join("var/internal/msg_date=2019-01-03");
    let mut written = files_under(&internal);
    written.sort();
    let mut expected: Vec<String> = dest.iter().map(|n| format!("parsed_{n}")).collect();
    expected.sort();
    assert_eq!(written, expected, "{err}");
    let dead = files_under(&dir.path().join("var/dead-letter"));
    for (keys, name) in groups.iter().zip(dest) {
        // One file of the group was written, and it is whole: its body is that file's.
        let body = std::fs::read_to_string(internal.join(format!("parsed_{name}"))).unwrap();
        let winners: Vec<&&str> = keys.iter().filter(|k| !dead.contains(&k.to_string())).collect();
        assert_eq!(winners.len(), 1, "{keys:?}: dead letter {dead:?}");
        let i = keys.iter().position(|k| k == winners[0]).unwrap();
        let g = groups.iter().position(|x| x == keys).unwrap();
        assert!(body.contains(&format!("VIR{g}{i}00")), "{name} holds another file's body: {body}");
        // Every other one is in the dead letter, its reason naming both source keys.
        for loser in keys.iter().filter(|k| *k != winners[0]) {
            let reason = dead_letter_reason(dir.path(), loser);
            assert!(reason.contains(&format!("{:?}", winners[0])), "{loser}: {reason}");
            assert!(reason.contains("refused, not overwritten"), "{loser}: {reason}");
            let dest_key = format!("msg_date=2019-01-03/parsed_{name}");
            assert!(reason.contains(&format!("{dest_key:?}")), "{loser}: {reason}");
        }
    }
}

#[test]
fn a_later_run_never_replaces_what_another_file_wrote_unless_reprocessing() {
    let clamd = Clamd::start("25M");
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("var/archive");
    let written = dir.path().join("var/internal/msg_date=2019-01-03/parsed_a b.json");
    message(&archive.join("a b.json"), "VIR0100");
    let (out, _) = run(dir.path(), &clamd, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    // A second file arrives whose name decodes to the same name: the next run refuses it.
    message(&archive.join("a%20b.json"), "VIR0200");
    let (out, report) = run(dir.path(), &clamd, &[]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert_eq!(report["items"]["skipped_done"], 1, "{report}");
    assert!(std::fs::read_to_string(&written).unwrap().contains("VIR0100"));
    let reason = dead_letter_reason(dir.path(), "a%20b.json");
    assert!(reason.contains("\"a b.json\" by run ") && reason.contains("--reprocess"), "{reason}");

    // Asked to, a run replaces it.
    std::fs::remove_dir_all(dir.path().join("var/dead-letter")).unwrap();
    let (out, _) = run(dir.path(), &clamd, &["--reprocess"]);
    // Both files are processed again in that run: the second of the two to reach the key
    // is refused (this run wrote it), so which body wins is the run's, but one is whole.
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let body = std::fs::read_to_string(&written).unwrap();
    let dead = files_under(&dir.path().join("var/dead-letter"));
    let (winner, loser) =
        if body.contains("VIR0100") { ("a b.json", "a%20b.json") } else { ("a%20b.json", "a b.json") };
    assert!(dead.contains(&loser.to_string()), "{dead:?}");
    // Refused while the other was being written, or after: either way by this run.
    let reason = dead_letter_reason(dir.path(), loser);
    assert!(reason.contains(&format!("{winner:?}")) && reason.contains("in this run"), "{reason}");
}

#[test]
fn an_objects_reason_file_and_an_archive_file_of_that_name_never_overwrite_each_other() {
    let clamd = Clamd::start("25M");
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("var/archive");
    infected_file(&archive.join("x.json"), 1000);
    infected_file(&archive.join("x.json.error.json"), 1000);
    let (out, report) = run(dir.path(), &clamd, &[]);
    let err = stderr(&out);
    // The quarantine has no `refused` route: the second file is left in the archive, and
    // the run says so (exit 3), never overwriting the first one's reason or bytes.
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert_eq!((report["items"]["complete"].as_u64(), report["items"]["refused"].as_u64()), (Some(1), Some(1)));
    let f = &report["failures"][0];
    assert_eq!((&f["node"], &f["permanent"]), (&serde_json::json!("quarantine"), &serde_json::json!(true)), "{f}");
    assert!(err.contains("refused: "), "{err}");
    let quarantined = if f["key"] == "x.json" { "x.json.error.json" } else { "x.json" };
    let q = dir.path().join("var/quarantine");
    assert!(std::fs::read(q.join(quarantined)).unwrap().starts_with(dqpipe_plugins::clamav::eicar().as_bytes()));
    assert_eq!(read_json(&q.join(format!("{quarantined}.error.json")))["source_key"], quarantined);
    // Not recorded as done: the next run takes it again.
    let done = done_under(&dir.path().join("var/internal"));
    assert_eq!(done.len(), 1, "{done:?}");
    assert!(done[0].starts_with(&format!("{quarantined}@")), "{done:?}");
}

/// `list -> fetch -> put` from a local folder into S3 at `{{ name }}`.
/// Requests go through `proxy`, which records them.
fn copy_to_s3(
    dir: &Path,
    s3: &S3Server,
    proxy: &RecordingProxy,
    conditional: &str,
    extra: &[&str],
) -> (std::process::Output, serde_json::Value) {
    let spec = dir.join("copy.yaml");
    std::fs::write(
        &spec,
        r#"version: 1
name: copy
stores:
  src: { url: "file://./src" }
  dst: { url: "s3://dst/in", s3: { endpoint: "${S3_ENDPOINT}", conditional_put: "${CONDITIONAL:-true}" } }
nodes:
  list: { kind: list, store: src }
  fetch: { kind: fetch, input: list }
  write: { kind: put, input: fetch, store: dst, key: "{{ name }}" }
"#,
    )
    .unwrap();
    let ran = TestRun::new(dir, "copy.yaml")
        .s3(s3)
        .env("S3_ENDPOINT", &format!("http://127.0.0.1:{}", proxy.port))
        .env("CONDITIONAL", conditional)
        .args(extra)
        .run();
    (ran.out, ran.report)
}

#[test]
fn an_s3_object_records_its_source_and_is_not_replaced_from_another() {
    // With a conditional PUT (the default), and with a HEAD first (`conditional_put: false`).
    for conditional in ["true", "false"] {
        s3_object_not_replaced(conditional);
    }
}

fn s3_object_not_replaced(conditional: &str) {
    let s3 = S3Server::start(&["dst"]);
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a b.json"), b"first").unwrap();
    let proxy = RecordingProxy::start(s3.port);
    let (out, _) = copy_to_s3(dir.path(), &s3, &proxy, conditional, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // A new key: one conditional PUT, no question first; or, without conditional puts,
    // a HEAD, then a plain PUT.
    let (conditions, heads) = (proxy.count("if-none-match: *"), proxy.count("head /dst/in/a%20b.json"));
    assert_eq!((conditions, heads), if conditional == "true" { (1, 0) } else { (0, 1) }, "{conditional}");

    // The same key from another source file, in a later run (no resume here: the first
    // file is copied again, and replaces its own object, which is allowed).
    std::fs::write(src.join("a%20b.json"), b"second").unwrap();
    let (out, report) = copy_to_s3(dir.path(), &s3, &proxy, conditional, &[]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert_eq!((report["items"]["complete"].as_u64(), report["items"]["refused"].as_u64()), (Some(1), Some(1)));
    let reason = report["failures"][0]["reason"].as_str().unwrap();
    assert!(reason.contains("\"in/a b.json\"") || reason.contains("\"a b.json\""), "{reason}");
    assert!(reason.contains("written from \"a b.json\""), "{reason}");
    let object = s3.bucket_dir("dst").join("in/a b.json");
    assert_eq!(std::fs::read(&object).unwrap(), b"first");

    // `--reprocess` lets a later run replace what an earlier one wrote from another file.
    std::fs::remove_file(src.join("a b.json")).unwrap();
    let (out, _) = copy_to_s3(dir.path(), &s3, &proxy, conditional, &["--reprocess"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(std::fs::read(&object).unwrap(), b"second");
}
