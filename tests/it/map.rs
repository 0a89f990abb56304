//! `map`: jq programs in specs. The NATS transform written in jq
//! (pipelines/examples/nats-jq.yaml) against the compiled `nats_message` on the golden
//! files and on 5,000 generated ones; `dqpipe map`; a jq syntax error at its place.

use crate::common::*;

const JQ_SPEC: &str = "pipelines/examples/nats-jq.yaml";

/// `dqpipe map --spec nats-jq.yaml --node transform` on every golden case: the exact
/// record, its partition (the `msg_date` field), or the dead-letter reason.
#[test]
fn the_jq_transform_gives_the_golden_records() {
    let golden = repo().join("tests/golden/nats");
    let dir = tempfile::tempdir().unwrap();
    let mut cases = 0;
    for entry in std::fs::read_dir(&golden).unwrap() {
        let path = entry.unwrap().path();
        let Some(case) = path.file_name().unwrap().to_str().unwrap().strip_suffix(".input.json").map(String::from)
        else {
            continue;
        };
        // Read as the file `<case>.json`, as nats_message's golden test reads it.
        let input = dir.path().join(format!("{case}.json"));
        std::fs::copy(&path, &input).unwrap();
        let out = dqpipe(dir.path())
            .args(["map", "--spec", &repo().join(JQ_SPEC).to_string_lossy(), "--node", "transform"])
            .arg(&input)
            .output()
            .unwrap();
        let expected = golden.join(format!("{case}.expected.json"));
        if expected.exists() {
            assert_eq!(out.status.code(), Some(0), "{case}: {}", stderr(&out));
            assert_eq!(stdout(&out).trim_end(), std::fs::read_to_string(&expected).unwrap(), "{case}");
            let date = std::fs::read_to_string(golden.join(format!("{case}.msg_date"))).unwrap();
            assert!(stderr(&out).contains(&format!("msg_date = \"{}\"", date.trim())), "{case}: {}", stderr(&out));
        } else {
            let want = std::fs::read_to_string(golden.join(format!("{case}.error.txt"))).unwrap();
            assert_eq!(out.status.code(), Some(1), "{case}");
            assert!(stderr(&out).contains(want.trim()), "{case}: want {want:?}\n{}", stderr(&out));
        }
        cases += 1;
    }
    assert!(cases >= 12, "{cases} golden cases");
}

/// 5,000 generated archive files (the random ones of scripts/golden-nats-python: unicode
/// raw and escaped, lone surrogates, number spellings, repeated keys, wrong types; and
/// `dqpipe samples`) through both transforms in one run: every record byte for byte equal
/// at the same key, and the same files dead-lettered.
#[test]
fn the_jq_transform_equals_nats_message_on_5000_generated_files() {
    let dir = tempfile::tempdir().unwrap();
    random_archive(&dir.path().join("r"), 4000);
    let samples = dqpipe(dir.path())
        .args(["samples", "--out", "r/archive/samples", "--count", "1000", "--malformed", "20"])
        .output()
        .unwrap();
    assert!(samples.status.success(), "{}", stderr(&samples));
    let listed = all_files_under(&dir.path().join("r/archive")).len();
    assert_eq!(listed, 5000);

    // The jq program as the example spec has it, beside the compiled kind.
    let example: serde_norway::Value =
        serde_norway::from_str(&std::fs::read_to_string(repo().join(JQ_SPEC)).unwrap()).unwrap();
    let transform = &example["nodes"]["transform"];
    let program = serde_json::to_string(transform["program"].as_str().unwrap()).unwrap();
    let field = serde_json::to_string(transform["fields"]["msg_date"].as_str().unwrap()).unwrap();
    let spec = format!(
        r#"version: 1
name: jq-vs-compiled
stores:
  archive: {{ url: "file://./r/archive" }}
  out: {{ url: "file://./out" }}
nodes:
  list: {{ kind: list, store: archive }}
  fetch: {{ kind: fetch, input: list }}
  compiled: {{ kind: nats_message, input: fetch }}
  jq: {{ kind: map, input: fetch, program: {program}, fields: {{ msg_date: {field} }} }}
  write_compiled: {{ kind: put, input: compiled.ok, store: out, key: "compiled/msg_date={{{{ msg_date }}}}/{{{{ key }}}}" }}
  write_jq: {{ kind: put, input: jq.ok, store: out, key: "jq/msg_date={{{{ msg_date }}}}/{{{{ key }}}}" }}
  dead_compiled: {{ kind: put, input: compiled.failed, store: out, key: "dead-compiled/{{{{ key }}}}" }}
  dead_jq: {{ kind: put, input: jq.failed, store: out, key: "dead-jq/{{{{ key }}}}" }}
"#
    );
    std::fs::write(dir.path().join("both.yaml"), spec).unwrap();
    let ran = TestRun::new(dir.path(), "both.yaml").run();
    assert!(matches!(ran.code(), Some(0 | 3)), "{}", ran.stderr());

    let under = |sub: &str| {
        let mut f = files_under(&dir.path().join("out").join(sub));
        f.sort();
        f
    };
    let (compiled, jq) = (under("compiled"), under("jq"));
    assert_eq!(compiled, jq, "the same records at the same keys (partitions included)");
    assert!(compiled.len() > 3000, "{} records: the generator should make mostly good files", compiled.len());
    for f in &compiled {
        let a = std::fs::read(dir.path().join("out/compiled").join(f)).unwrap();
        let b = std::fs::read(dir.path().join("out/jq").join(f)).unwrap();
        assert!(
            a == b,
            "{f} differs:\ncompiled: {}\njq:       {}",
            String::from_utf8_lossy(&a),
            String::from_utf8_lossy(&b)
        );
    }
    let (dead_compiled, dead_jq) = (under("dead-compiled"), under("dead-jq"));
    assert_eq!(dead_compiled, dead_jq, "the same files dead-lettered");
    assert!(!dead_jq.is_empty());
    assert_eq!(compiled.len() + dead_jq.len(), listed);
}

/// A jq syntax error in a spec is reported by `validate` at its line and column in the
/// spec file, inside the block scalar; an undefined function too.
#[test]
fn a_jq_syntax_error_is_placed_in_the_spec() {
    let dir = tempfile::tempdir().unwrap();
    let spec = "version: 1\nname: t\nstores:\n  src: { url: \"file://./in\" }\n  dst: { url: \"file://./out\" }\nnodes:\n  list: { kind: list, store: src }\n  fetch: { kind: fetch, input: list }\n  m:\n    kind: map\n    input: fetch\n    program: |\n      .a\n      | if . then 1 end end\n    fields: { day: '.d | nosuch' }\n  w: { kind: put, input: m.ok, store: dst, key: \"{{ day }}/{{ name }}\" }\n  d: { kind: put, input: m.failed, store: dst, key: \"dead/{{ name }}\" }\n";
    std::fs::write(dir.path().join("p.yaml"), spec).unwrap();
    let out = dqpipe(dir.path()).args(["validate", "p.yaml"]).output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("p.yaml:14:25: nodes.m.program: jq: unexpected `end` (line 2, column 19 of the program)"),
        "{err}"
    );

    // Fixed: the undefined function in a field is next, at its column on the key's line.
    std::fs::write(dir.path().join("p.yaml"), spec.replace("1 end end", "1 end")).unwrap();
    let out = dqpipe(dir.path()).args(["validate", "p.yaml"]).output().unwrap();
    let err = stderr(&out);
    assert!(err.contains("p.yaml:15:26: nodes.m.fields.day: jq: undefined filter `nosuch`"), "{err}");

    // Fixed too: valid, and the field the map declares reaches the template.
    std::fs::write(dir.path().join("p.yaml"), spec.replace("1 end end", "1 end").replace("nosuch", "ascii_downcase"))
        .unwrap();
    let out = dqpipe(dir.path()).args(["validate", "p.yaml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    std::fs::write(
        dir.path().join("p.yaml"),
        spec.replace("1 end end", "1 end").replace("{{ day }}", "{{ dya }}").replace("nosuch", "ascii_downcase"),
    )
    .unwrap();
    let out = dqpipe(dir.path()).args(["validate", "p.yaml"]).output().unwrap();
    assert!(stderr(&out).contains("did you mean `day`?"), "{}", stderr(&out));
}

/// `dqpipe map --program FILE.jq INPUT.json`, as a jq user would try a program.
#[test]
fn dqpipe_map_tries_a_program_on_a_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("p.jq"), "{id: .FPL.ARCID, file: $meta.name, big: .n}").unwrap();
    std::fs::write(dir.path().join("m.json"), r#"{"FPL": {"ARCID": "BAW1"}, "n": 123456789012345678901234567890}"#)
        .unwrap();
    std::fs::write(dir.path().join("bad.json"), "{'a': 1}").unwrap();
    let out = dqpipe(dir.path()).args(["map", "--program", "p.jq", "m.json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "{\"id\":\"BAW1\",\"file\":\"m.json\",\"big\":123456789012345678901234567890}\n");
    let out = dqpipe(dir.path()).args(["map", "--program", "p.jq", "bad.json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("bad.json: not valid JSON"), "{}", stderr(&out));
}

/// Issue 27.4: a jq program that never ends on one item fails that item for good once it
/// is over `time_limit_secs` (or builds past `memory_limit_mb`), and the run goes on and ends; after SIGTERM the process
/// exits within the grace period whatever a program is doing.
#[test]
fn a_runaway_program_fails_its_item_and_sigterm_always_ends_the_run() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("in")).unwrap();
    for n in 0..5 {
        std::fs::write(dir.path().join(format!("in/{n}.json")), format!("{{\"n\": {n}}}")).unwrap();
    }
    let spec = |program: &str, limit: u64| {
        format!(
            "version: 1\nname: runaway\nstores:\n  in: {{ url: file://./in }}\n  out: {{ url: file://./out }}\n  dead: {{ url: file://./dead }}\nnodes:\n  list: {{ kind: list, store: in }}\n  fetch: {{ kind: fetch, input: list }}\n  shape:\n    kind: map\n    input: fetch\n    time_limit_secs: {limit}\n    program: '{program}'\n  write: {{ kind: put, input: shape.ok, store: out, key: \"{{{{ name }}}}\" }}\n  dead: {{ kind: put, input: shape.failed, store: dead, key: \"{{{{ name }}}}\", with_reason: true }}\n"
        )
    };
    // Waits for `child` at most `secs` (a safety net: a run that hangs fails the test
    // instead of hanging it).
    let wait = |child: std::process::Child, secs: u64| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(child.wait_with_output()));
        rx.recv_timeout(std::time::Duration::from_secs(secs)).expect("the run did not end").unwrap()
    };

    std::fs::write(dir.path().join("loop.yaml"), spec("def f: f; if .n == 2 then f else . end", 1)).unwrap();
    let child = dqpipe(dir.path())
        .args(["run", "loop.yaml", "--progress", "off", "--report", "r.json"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait(child, 120);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert_eq!(files_under(&dir.path().join("out")), ["0.json", "1.json", "3.json", "4.json"]);
    let reason = read_json(&dir.path().join("dead/2.json.error.json"));
    assert!(reason["reason"].as_str().unwrap().contains("time_limit_secs (1 s)"), "{reason}");

    // A program that builds without end ([range(1e9)]: 16 GB of values) is given up at
    // memory_limit_mb, its item failed with the reason, and the run goes on.
    let _ = std::fs::remove_dir_all(dir.path().join("out"));
    let big = spec("if .n == 2 then [range(1e9)] | length else . end", 3600)
        .replace("time_limit_secs: 3600", "time_limit_secs: 3600\n    memory_limit_mb: 64");
    std::fs::write(dir.path().join("big.yaml"), big).unwrap();
    let out = dqpipe(dir.path()).args(["run", "big.yaml", "--progress", "off"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert_eq!(files_under(&dir.path().join("out")), ["0.json", "1.json", "3.json", "4.json"]);
    let reason = read_json(&dir.path().join("dead/2.json.error.json"));
    assert!(reason["reason"].as_str().unwrap().contains("memory_limit_mb (64 MiB)"), "{reason}");

    // A program that runs on past SIGTERM (its limit an hour): the run stops, writes its
    // report and the process exits, with the item left for a rerun.
    let _ = std::fs::remove_dir_all(dir.path().join("out"));
    std::fs::write(dir.path().join("forever.yaml"), spec("if .n == 2 then last(range(infinite)) else . end", 3600))
        .unwrap();
    let child = dqpipe(dir.path())
        .args(["run", "forever.yaml", "--progress", "off", "--report", "r2.json", "--grace-secs", "1"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    while files_under(&dir.path().join("out")).len() < 4 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let out = wait(child, 30);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let report = read_json(&dir.path().join("r2.json"));
    // The item the program holds is not complete: left for a rerun, and the report names it.
    let items = &report["items"];
    assert_eq!((items["from_sources"].as_u64(), items["complete"].as_u64()), (Some(5), Some(4)), "{report}");
    assert_eq!(report["outcome"], "incomplete", "{report}");
    let failures = report["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 1, "{report}");
    assert!(failures[0]["key"].as_str().unwrap().ends_with("2.json"), "{report}");
    assert!(failures[0]["reason"].as_str().unwrap().contains("abandoned at shutdown"), "{report}");
}
