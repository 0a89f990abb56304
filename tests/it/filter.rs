//! Filters and empty maps drop items on purpose: the platform's backload job (copy the
//! objects of an S3 bucket whose LastModified lies in a window to another bucket), and an
//! event feed whose non-API messages are dropped by a jq `select`. Not NATS-shaped: no
//! scanner, no alert node. Real s3s-fs.

use crate::common::*;

use std::time::{Duration, SystemTime};

/// The backload: objects of `archive/feed/` last modified in the window are copied to
/// `backload/`; done markers beside the copies.
const BACKLOAD: &str = r#"
version: 1
name: backload
defaults:
  s3: { endpoint: "${S3_ENDPOINT}" }
stores:
  archive: { url: "s3://archive/feed" }
  target: { url: "s3://backload" }
nodes:
  list: { kind: list, store: archive, resume: { store: target } }
  in_window:
    kind: filter
    input: list
    reads: metadata
    predicate: '.last_modified >= "${FROM}" and .last_modified < "${UNTIL}"'
  fetch: { kind: fetch, input: in_window }
  copy: { kind: put, input: fetch, store: target, key: "{{ name }}" }
"#;

fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    let out =
        std::process::Command::new("date").args(["-u", "-d", &format!("@{secs}"), "+%Y-%m-%dT%H:%M:%SZ"]).output();
    stdout(&out.unwrap()).trim().to_string()
}

#[test]
fn a_filter_on_last_modified_copies_the_window_and_drops_the_rest_as_done() {
    let s3 = S3Server::start(&["archive", "backload"]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("backload.yaml"), BACKLOAD).unwrap();
    // Ten objects, one a day back from ten days ago; the window takes days 3 to 6 back.
    let feed = s3.bucket_dir("archive").join("feed");
    std::fs::create_dir_all(&feed).unwrap();
    let now = SystemTime::now();
    let day = Duration::from_secs(24 * 3600);
    for n in 1..=10u32 {
        let f = feed.join(format!("event-{n:02}.jsonl"));
        std::fs::write(&f, format!("{{\"n\": {n}}}\n")).unwrap();
        std::fs::File::options().write(true).open(&f).unwrap().set_modified(now - day * n).unwrap();
    }
    let (from, until) = (rfc3339(now - day * 6 - day / 2), rfc3339(now - day * 2 - day / 2));
    let run = || TestRun::new(dir.path(), "backload.yaml").s3(&s3).env("FROM", &from).env("UNTIL", &until).run();

    let first = run();
    assert_eq!(first.code(), Some(0), "dropped items are not failures: {}", first.stderr());
    let copied: Vec<String> =
        files_under(&s3.bucket_dir("backload")).into_iter().filter(|f| !f.starts_with("_dqpipe")).collect();
    assert_eq!(copied, ["event-03.jsonl", "event-04.jsonl", "event-05.jsonl", "event-06.jsonl"]);
    let items = &first.report["items"];
    assert_eq!(
        (items["from_sources"].as_u64(), items["complete"].as_u64(), items["dropped"].as_u64()),
        (Some(10), Some(10), Some(6)),
        "every object complete, six of them dropped: {}",
        first.report
    );
    assert_eq!(items["problems"].as_u64(), Some(0), "a drop is never a problem: {}", first.report);
    assert!(first.stderr().contains("(6 dropped by filters)"), "the summary names them: {}", first.stderr());

    // Dropped objects are done: the rerun takes none of the ten again.
    let rerun = run();
    assert_eq!(rerun.code(), Some(0), "{}", rerun.stderr());
    assert_eq!(rerun.report["items"]["skipped_done"].as_u64(), Some(10), "{}", rerun.report);
}

/// An event feed: messages that are not API data are dropped by the map's `select`; with
/// `on_empty: fail` the same messages are failures (dead letter, exit 3).
#[test]
fn an_empty_map_output_drops_the_item_unless_the_node_says_it_fails() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("in")).unwrap();
    for (n, kind) in ["API", "GA", "API", "CARGO"].iter().enumerate() {
        std::fs::write(dir.path().join(format!("in/{n}.json")), format!("{{\"kind\": \"{kind}\", \"n\": {n}}}"))
            .unwrap();
    }
    let spec = |on_empty: &str| {
        format!(
            "version: 1\nname: api-only\nstores:\n  in: {{ url: file://./in }}\n  out: {{ url: file://./out }}\n  dead: {{ url: file://./dead }}\nnodes:\n  list: {{ kind: list, store: in }}\n  fetch: {{ kind: fetch, input: list }}\n  api:\n    kind: map\n    input: fetch\n    program: 'select(.kind == \"API\") | {{n}}'\n{on_empty}  write: {{ kind: put, input: api.ok, store: out, key: \"{{{{ name }}}}\" }}\n  dead: {{ kind: put, input: api.failed, store: dead, key: \"{{{{ name }}}}\", with_reason: true }}\n"
        )
    };
    std::fs::write(dir.path().join("drop.yaml"), spec("")).unwrap();
    let dropped = TestRun::new(dir.path(), "drop.yaml").run();
    assert_eq!(dropped.code(), Some(0), "{}", dropped.stderr());
    assert_eq!(files_under(&dir.path().join("out")), ["0.json", "2.json"]);
    assert_eq!(std::fs::read_to_string(dir.path().join("out/2.json")).unwrap(), r#"{"n":2}"#);
    assert!(files_under(&dir.path().join("dead")).is_empty());
    assert_eq!(dropped.report["items"]["dropped"].as_u64(), Some(2), "{}", dropped.report);

    std::fs::write(dir.path().join("fail.yaml"), spec("    on_empty: fail\n")).unwrap();
    let failed = TestRun::new(dir.path(), "fail.yaml").run();
    assert_eq!(failed.code(), Some(3), "{}", failed.stderr());
    assert_eq!(files_under(&dir.path().join("dead")), ["1.json", "1.json.error.json", "3.json", "3.json.error.json"]);
    let reason = read_json(&dir.path().join("dead/1.json.error.json"));
    assert_eq!(reason["reason"], "the program gave no value", "{reason}");
}

/// A predicate's syntax error is placed in the spec, as a map program's is.
#[test]
fn a_filter_predicate_error_is_placed_in_the_spec() {
    let dir = tempfile::tempdir().unwrap();
    let spec = "version: 1\nname: t\nstores:\n  in: { url: file://./in }\nnodes:\n  list: { kind: list, store: in }\n  keep:\n    kind: filter\n    input: list\n    reads: metadata\n    predicate: '.name | endswith(\"x\") and'\n";
    std::fs::write(dir.path().join("p.yaml"), spec).unwrap();
    let out = dqpipe(dir.path()).args(["validate", "p.yaml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("p.yaml:11:"), "placed at the predicate's line: {}", stderr(&out));
    assert!(stderr(&out).contains("jq:"), "{}", stderr(&out));
}

/// The S4 suite's classification, on JSON messages: messages without `APIData` are
/// dropped, API messages go to `out/`, and those of GA carriers to `ga/` as well (one
/// route, two consumers).
const CLASSIFY: &str = r#"
version: 1
name: classify
stores:
  landing: { url: "file://./landing" }
  out: { url: "file://./out" }
  ga: { url: "file://./ga" }
nodes:
  list: { kind: list, store: landing, resume: { store: out } }
  fetch: { kind: fetch, input: list }
  classify:
    kind: route
    input: fetch
    routes:
      api_ga: 'has("APIData") and (.carrier | startswith("G"))'
      api: 'has("APIData")'
    drop: [else]
  out: { kind: put, input: [classify.api, classify.api_ga], store: out, key: "{{ name }}" }
  ga: { kind: put, input: classify.api_ga, store: ga, key: "{{ name }}" }
"#;

/// Edits of a spec: (from, to) replacements.
type Edits<'a> = &'a [(&'a str, &'a str)];

#[test]
fn a_route_sends_each_item_to_its_first_match_and_drops_what_no_route_takes() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("classify.yaml"), CLASSIFY).unwrap();
    std::fs::create_dir_all(dir.path().join("landing")).unwrap();
    let messages = [
        ("a.json", r#"{"APIData": {}, "carrier": "BAW"}"#),
        ("b.json", r#"{"APIData": {}, "carrier": "GXA"}"#),
        ("c.json", r#"{"carrier": "GXA"}"#),
        ("d.json", r#"{"APIData": {}, "carrier": "GAB"}"#),
        ("e.json", r#"{"status": "heartbeat"}"#),
    ];
    for (name, body) in messages {
        std::fs::write(dir.path().join("landing").join(name), body).unwrap();
    }
    let ran = TestRun::new(dir.path(), "classify.yaml").run();
    assert_eq!(ran.code(), Some(0), "{}", ran.stderr());
    let data = |d: &str| -> Vec<String> {
        files_under(&dir.path().join(d)).into_iter().filter(|f| !f.starts_with("_dqpipe")).collect()
    };
    assert_eq!(data("out"), ["a.json", "b.json", "d.json"]);
    assert_eq!(data("ga"), ["b.json", "d.json"]);
    assert_eq!(std::fs::read_to_string(dir.path().join("ga/b.json")).unwrap(), messages[1].1);
    let items = &ran.report["items"];
    assert_eq!((items["complete"].as_u64(), items["dropped"].as_u64()), (Some(5), Some(2)), "{}", ran.report);
    let rerun = TestRun::new(dir.path(), "classify.yaml").run();
    assert_eq!(rerun.report["items"]["skipped_done"].as_u64(), Some(5), "{}", rerun.report);

    // A `drop` naming no route, a route nothing reads, a reserved name, a jq error: each
    // placed, each saying what is wrong. (Edits of the spec above, then where and what.)
    let ga_node = "  ga: { kind: put, input: classify.api_ga, store: ga, key: \"{{ name }}\" }\n";
    let broken: [(Edits, &str, &str); 4] = [
        (&[("drop: [else]", "drop: [els]")], "classify.yaml:17:", "`els` is not a route"),
        (
            &[("input: [classify.api, classify.api_ga], store: out", "input: classify.api, store: out"), (ga_node, "")],
            "classify.yaml:11:",
            "output port `classify.api_ga` is not routed",
        ),
        (&[("      api: 'has(\"APIData\")'", "      else: 'has(\"APIData\")'")], "", "not `else` or `failed`"),
        (&[("      api: 'has(\"APIData\")'", "      api: 'has(\"APIData\"'")], "classify.yaml:16:", "jq:"),
    ];
    for (edits, place, says) in broken {
        let spec = edits.iter().fold(CLASSIFY.to_string(), |spec, (from, to)| {
            assert!(spec.contains(from), "{from}");
            spec.replace(from, to)
        });
        std::fs::write(dir.path().join("broken.yaml"), &spec).unwrap();
        let out = dqpipe(dir.path()).args(["validate", "broken.yaml"]).output().unwrap();
        let err = stderr(&out).replace("broken.yaml", "classify.yaml");
        assert_eq!(out.status.code(), Some(2), "{edits:?}: {err}");
        assert!(err.contains(place) && err.contains(says), "{edits:?}: {err}");
    }
}
