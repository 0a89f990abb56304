//! Hostile input: keys that try to leave a store, keys a store cannot hold, documents that
//! try to exhaust the parser or memory, and secrets that must never be printed.

use crate::common::*;

use std::path::Path;

fn copy_spec(dir: &Path, key: &str) -> String {
    let spec = format!(
        r#"version: 1
name: hostile-copy
stores:
  src: {{ url: "${{SRC_URL}}", s3: {{ endpoint: "${{S3_ENDPOINT:-}}" }} }}
  dst: {{ url: "${{DST_URL}}", s3: {{ endpoint: "${{S3_ENDPOINT:-}}" }} }}
nodes:
  list: {{ kind: list, store: src }}
  fetch: {{ kind: fetch, input: list }}
  write: {{ kind: put, input: fetch, store: dst, key: "{key}" }}
"#
    );
    let path = dir.join("copy.yaml");
    std::fs::write(&path, spec).unwrap();
    path.to_string_lossy().into_owned()
}

fn failures(report: &serde_json::Value) -> Vec<(String, String)> {
    report["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["key"].as_str().unwrap().to_string(), f["reason"].as_str().unwrap().to_string()))
        .collect()
}

#[test]
fn names_that_decode_to_paths_never_leave_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    // Names are URL-decoded (as the original job did): these decode to `../../escape.json`,
    // `/etc/dqpipe-escape.json`, `sub/c.json` and a name with a NUL and a newline.
    for name in [
        "%2E%2E%2F%2E%2E%2Fescape.json",
        "%2Fetc%2Fdqpipe-escape.json",
        "sub%2Fc.json",
        "nul%00and%0Anewline.json",
        "ok.json",
        "back\\slash.json",
    ] {
        std::fs::write(src.join(name), b"{}").unwrap();
    }
    let long = format!("{}.json", "é".repeat(120)); // 244 bytes: allowed
    std::fs::write(src.join(&long), b"{}").unwrap();
    let dst = dir.path().join("deep/dst");
    let spec = copy_spec(dir.path(), "{{ name }}");
    let out = TestRun::new(dir.path(), &spec)
        .env("SRC_URL", &format!("file://{}", src.display()))
        .env("DST_URL", &format!("file://{}", dst.display()))
        .run()
        .out;
    // Refused for good, not "incomplete": no rerun can write these names (exit 3, which
    // the Job does not retry; exit 4 would be retried for ever).
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("4 refused"), "{}", stderr(&out));
    // Nothing outside the destination folder, and no name turned into a deeper path.
    assert!(!dir.path().join("escape.json").exists() && !dir.path().join("deep/escape.json").exists());
    assert!(!Path::new("/etc/dqpipe-escape.json").exists());
    let mut written = files_under(&dst);
    written.sort();
    // A backslash is no path separator: written as it is (issue 27.6h).
    let mut expected = vec!["ok.json".to_string(), "back\\slash.json".to_string(), long.clone()];
    expected.sort();
    assert_eq!(written, expected);
    let f = failures(&read_json(&dir.path().join("r.json")));
    assert_eq!(f.len(), 4, "{f:?}");
    for refused in ["%2E%2E", "%2Fetc", "sub%2Fc.json"] {
        assert!(
            f.iter().any(|(k, r)| k.starts_with(refused) && r.contains("holds a path separator")),
            "{refused}: {f:?}"
        );
    }
    assert!(f.iter().any(|(k, r)| k.starts_with("nul%00") && r.contains("control character")), "{f:?}");
    // Control characters are escaped in the summary, never printed raw.
    assert!(!stderr(&out).contains("nul\0and\nnewline"));
}

#[test]
fn keys_s3_cannot_hold_are_refused_alone() {
    let s3 = S3Server::start(&["dst"]);
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    // A key of more than S3's 1,024 bytes (ten folders of 110 bytes), and ordinary ones.
    let deep = (0..10).map(|i| format!("{i}{}", "d".repeat(109))).collect::<Vec<_>>().join("/");
    std::fs::create_dir_all(src.join(&deep)).unwrap();
    std::fs::write(src.join(&deep).join("too-long.json"), b"{}").unwrap();
    for i in 0..20 {
        std::fs::write(src.join(format!("f{i}.json")), b"{}").unwrap();
    }
    // Control characters S3 keys cannot carry through the client: TAB, DEL, U+0085 (NEL).
    for name in ["tab\there.json", "del\u{7f}.json", "nel\u{85}.json"] {
        std::fs::write(src.join(name), b"{}").unwrap();
    }
    let spec = copy_spec(dir.path(), "{{ key }}");
    let ran = TestRun::new(dir.path(), &spec)
        .env("SRC_URL", &format!("file://{}", src.display()))
        .env("DST_URL", "s3://dst/in")
        .s3(&s3)
        .run();
    assert_eq!(ran.code(), Some(3), "a key S3 cannot hold is refused for good: {}", ran.stderr());
    assert_eq!(files_under(&s3.bucket_dir("dst").join("in")).len(), 20);
    assert_eq!(ran.report["items"]["refused"], 4, "{}", ran.report);
    let f = failures(&ran.report);
    assert_eq!(f.len(), 4);
    assert!(f.iter().any(|(k, r)| k.ends_with("too-long.json") && r.contains("over S3's 1024 bytes")), "{f:?}");
    for name in ["tab\there.json", "del\u{7f}.json", "nel\u{85}.json"] {
        assert!(f.iter().any(|(k, r)| k == name && r.contains("control character")), "{name:?}: {f:?}");
    }
}

#[test]
fn a_key_with_a_control_character_in_s3_is_refused_alone() {
    let s3 = S3Server::start(&["archive"]);
    let folder = s3.bucket_dir("archive").join("in");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join("line\nbreak.json"), b"{}").unwrap();
    for i in 0..10 {
        std::fs::write(folder.join(format!("f{i}.json")), b"{}").unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let spec = copy_spec(dir.path(), "{{ key }}");
    let out = TestRun::new(dir.path(), &spec)
        .env("SRC_URL", "s3://archive/in")
        .env("DST_URL", "file://./out")
        .s3(&s3)
        .run()
        .out;
    // Listed, but the client cannot address it exactly: refused for good (exit 3).
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert_eq!(files_under(&dir.path().join("out")).len(), 10);
    let f = failures(&read_json(&dir.path().join("r.json")));
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0].0, "line\nbreak.json");
}

#[test]
fn hostile_documents_are_dead_lettered_or_quarantined_not_crashed_on() {
    let clamd = Clamd::start("40M");
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("var/archive");
    std::fs::create_dir_all(&archive).unwrap();
    std::fs::write(archive.join("deep.json"), "[".repeat(200_000) + &"]".repeat(200_000)).unwrap();
    std::fs::write(archive.join("empty.json"), b"").unwrap();
    std::fs::write(archive.join("binary.json"), (0..=255u8).cycle().take(10_000).collect::<Vec<u8>>()).unwrap();
    let out = TestRun::nats(dir.path(), &clamd.tcp()).run().out;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    // The control: the same process and pipeline without the large object.
    let control = read_json(&dir.path().join("r.json"))["peak_rss_bytes"].as_u64().unwrap();
    // 30 MB, over the scan's max_bytes (25 MiB): to quarantine unscanned, never in memory.
    // The rerun takes only this object (the others are done).
    let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(30_000_000));
    std::fs::write(archive.join("huge.json"), big).unwrap();
    let out = TestRun::nats(dir.path(), &clamd.tcp()).run().out;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let mut dead = files_under(&dir.path().join("var/dead-letter"));
    dead.retain(|f| !f.ends_with(".error.json"));
    dead.sort();
    assert_eq!(dead, vec!["binary.json", "deep.json", "empty.json"]);
    assert_eq!(files_under(&dir.path().join("var/quarantine")), vec!["huge.json", "huge.json.error.json"]);
    let reason = read_json(&dir.path().join("var/quarantine/huge.json.error.json"));
    assert!(reason["reason"].as_str().unwrap().contains("over max_bytes"), "{reason}");
    let r = read_json(&dir.path().join("r.json"));
    let peak = r["peak_rss_bytes"].as_u64().unwrap();
    // Held in memory, the object would add its 30 MB to the control's peak; streamed to
    // the quarantine through 8 MiB of spool threshold at most, it adds less than half.
    assert!(
        peak < control + 15_000_000,
        "the 30 MB object was held in memory: peak {peak} bytes, {control} without it"
    );
    assert!(files_under(&dir.path().join("var/internal")).is_empty());
}

#[test]
fn no_secret_in_any_log_plan_report_or_error() {
    let s3 = S3Server::start(&["archive", "internal", "ops"]);
    let hook = Listener::start(Answer::Status500);
    let token = "T0KEN-9f8e7d6c5b4a";
    let webhook = format!("{}/services/T000/B000/{token}", hook.url.trim_end_matches('/'));
    let dir = tempfile::tempdir().unwrap();
    let archive = s3.bucket_dir("archive").join("nats");
    std::fs::create_dir_all(&archive).unwrap();
    std::fs::write(archive.join("bad.json"), b"{ not json").unwrap();
    let clamd = Clamd::start("25M");
    let secrets = [S3_SECRET, token];

    let mut transcripts = Vec::new();
    let run = |args: &[&str], extra: &[(&str, &str)]| {
        let mut c = dqpipe(dir.path());
        nats_s3_env(&mut c, &s3.endpoint(), &clamd.tcp());
        c.env("SLACK_WEBHOOK", &webhook).env("DQPIPE_LOG", "debug").args(args);
        for (k, v) in extra {
            c.env(k, v);
        }
        let out = c.output().unwrap();
        format!("{}{}", stdout(&out), stderr(&out))
    };
    let spec = nats_pipeline();
    transcripts.push(run(&["validate", &spec], &[]));
    transcripts.push(run(&["plan", &spec], &[]));
    transcripts.push(run(&["plan", &spec, "--format", "json"], &[]));
    transcripts.push(run(&["run", &spec, "--progress", "log", "--report", "r.json"], &[]));
    transcripts.push(run(&["--log-format", "json", "run", &spec, "--reprocess", "--report", "r2.json"], &[]));
    // Failures print what went wrong, still without secrets.
    transcripts.push(run(&["run", &spec], &[("S3_SRC_SECRET_ACCESS_KEY", "wrong-but-still-secret")]));
    transcripts.push(run(&["run", &spec], &[("S3_ENDPOINT", "http://127.0.0.1:1")]));
    transcripts.push(std::fs::read_to_string(dir.path().join("r.json")).unwrap());
    transcripts.push(std::fs::read_to_string(dir.path().join("r2.json")).unwrap());
    assert!(transcripts[3].contains("Slack alert not delivered"), "{}", transcripts[3]);
    for t in &transcripts {
        for s in secrets.iter().chain(["wrong-but-still-secret"].iter()) {
            assert!(!t.contains(s), "secret {s:?} printed in:\n{t}");
        }
    }
    // The alert itself went out (and failed with 500): the webhook was used, not printed.
    assert!(!hook.received().is_empty());
}

/// Issue 27.3: local stores read and write only beneath their root, whatever links they
/// hold: a symlinked partition folder inside the destination is not written through, a
/// prefix naming a symlinked folder inside the source is not listed, and links, sockets
/// and names that are not UTF-8 met in a listing are named, not skipped in silence.
#[test]
fn local_stores_do_not_follow_links_out_of_their_root() {
    let dir = tempfile::tempdir().unwrap();
    let (src, dst, elsewhere) = (dir.path().join("src"), dir.path().join("dst"), dir.path().join("elsewhere"));
    for d in [&src, &dst, &elsewhere] {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::write(src.join("a.json"), "{}").unwrap();
    std::fs::write(elsewhere.join("secret.json"), "{\"outside\": true}").unwrap();
    // The destination's `part` folder and a source entry both lead outside.
    std::os::unix::fs::symlink(&elsewhere, dst.join("part")).unwrap();
    std::os::unix::fs::symlink(&elsewhere, src.join("linked")).unwrap();
    // A socket and a name that is not UTF-8 in the source: not objects either.
    let _socket = std::os::unix::net::UnixListener::bind(src.join("sock")).unwrap();
    use std::os::unix::ffi::OsStrExt;
    std::fs::write(src.join(std::ffi::OsStr::from_bytes(b"bad\xff.json")), "{}").unwrap();
    let spec = copy_spec(dir.path(), "part/{{ name }}");
    let ran = TestRun::new(dir.path(), &spec)
        .env("SRC_URL", &format!("file://{}", src.display()))
        .env("DST_URL", &format!("file://{}", dst.display()))
        .run();
    assert_eq!(ran.code(), Some(3), "the write through the link is refused: {}", ran.stderr());
    assert!(ran.stderr().contains("leads out of the store through a link"), "{}", ran.stderr());
    // Each entry that is not a file is named, in the log, the summary and the report.
    assert!(ran.stderr().contains("not listed: a symbolic link"), "{}", ran.stderr());
    let summary = ran.stderr();
    assert!(summary.contains("Not listed by `list`: 3 entries that are not files:"), "{summary}");
    assert!(summary.contains("  linked (a symbolic link)"), "{summary}");
    let named: Vec<(String, String)> = ran.report["not_listed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["path"].as_str().unwrap().to_string(), e["why"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(
        named,
        [
            ("bad\u{fffd}.json".to_string(), "a name that is not UTF-8".to_string()),
            ("linked".to_string(), "a symbolic link".to_string()),
            ("sock".to_string(), "not a file (a socket, a pipe, a device)".to_string()),
        ]
    );
    assert_eq!(files_under(&elsewhere), ["secret.json"], "nothing written outside the destination");

    // A prefix naming the linked folder: not listed, not read.
    let spec = format!(
        "version: 1\nname: t\nstores:\n  src: {{ url: \"file://{}\" }}\n  out: {{ url: file://./out }}\nnodes:\n  list: {{ kind: list, store: src, prefix: linked/ }}\n  fetch: {{ kind: fetch, input: list }}\n  write: {{ kind: put, input: fetch, store: out, key: \"{{{{ name }}}}\" }}\n",
        src.display()
    );
    std::fs::write(dir.path().join("prefix.yaml"), spec).unwrap();
    let ran = TestRun::new(dir.path(), "prefix.yaml").run();
    assert_ne!(ran.code(), Some(0), "{}", ran.stderr());
    assert!(ran.stderr().contains("leads out of the store through a link"), "{}", ran.stderr());
    assert!(!dir.path().join("out/secret.json").exists(), "a file outside the source was read");
}
