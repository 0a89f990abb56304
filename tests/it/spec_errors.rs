//! Broken specs: each gives a non-zero exit and a message naming file:line:column.

use std::path::Path;

use crate::common::*;

fn validate(yaml: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("p.yaml"), yaml).unwrap();
    let out = dqpipe(dir.path()).args(["validate", "p.yaml"]).output().unwrap();
    (out.status.code().unwrap_or(-1), stderr(&out))
}

const HEAD: &str =
    "version: 1\nname: t\nstores:\n  src: { url: \"file://./in\" }\n  dst: { url: \"file://./out\" }\nnodes:\n";

#[test]
fn a_cycle_is_printed() {
    let (code, err) = validate(&format!(
        "{HEAD}  list: {{ kind: list, store: src }}\n  a: {{ kind: fetch, input: [list, c] }}\n  b: {{ kind: fetch, input: a }}\n  c: {{ kind: fetch, input: b }}\n"
    ));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("p.yaml:8:3: nodes.a: cycle: a -> b -> c -> a"), "{err}");
}

#[test]
fn an_unknown_input() {
    let (code, err) =
        validate(&format!("{HEAD}  list: {{ kind: list, store: src }}\n  fetch: {{ kind: fetch, input: lst }}\n"));
    assert_eq!(code, 2);
    assert!(err.contains("p.yaml:8:25: nodes.fetch.input: unknown node `lst`"), "{err}");
}

#[test]
fn an_unknown_port() {
    let (code, err) = validate(&format!(
        "{HEAD}  list: {{ kind: list, store: src }}\n  fetch: {{ kind: fetch, input: list.clean }}\n"
    ));
    assert_eq!(code, 2);
    assert!(
        err.contains("p.yaml:8:25: nodes.fetch.input: node `list` (list) has no port `clean`; its ports are: out"),
        "{err}"
    );
}

#[test]
fn an_unknown_field() {
    let (code, err) = validate(&format!("{HEAD}  list: {{ kind: list, store: src, sufix: \".json\" }}\n"));
    assert_eq!(code, 2);
    assert!(err.contains("p.yaml:7:35: nodes.list.sufix: unknown field `sufix`"), "{err}");
    let (code, err) = validate("version: 1\nname: t\nnodez: {}\nnodes: {}\n");
    assert_eq!(code, 2);
    assert!(err.contains("p.yaml:3:1: nodez: unknown field `nodez`"), "{err}");
}

#[test]
fn a_wrong_type() {
    let (code, err) = validate(&format!("{HEAD}  list: {{ kind: list, store: src, limit: many }}\n"));
    assert_eq!(code, 2);
    assert!(err.contains("p.yaml:7:35: nodes.list.limit: must be a whole number, not \"many\""), "{err}");
}

#[test]
fn an_unset_variable() {
    let (code, err) =
        validate(&format!("{HEAD}  list: {{ kind: list, store: src, prefix: \"${{DQPIPE_TEST_UNSET}}/x\" }}\n"));
    assert_eq!(code, 2);
    assert!(
        err.contains("p.yaml:7:35: nodes.list.prefix: environment variable `DQPIPE_TEST_UNSET` is not set"),
        "{err}"
    );
}

#[test]
fn an_unrouted_failure_port() {
    let (code, err) = validate(&format!(
        "{HEAD}  list: {{ kind: list, store: src }}\n  fetch: {{ kind: fetch, input: list }}\n  parse: {{ kind: nats_message, input: fetch }}\n  write: {{ kind: put, input: parse.ok, store: dst, key: \"{{{{ name }}}}\" }}\n"
    ));
    assert_eq!(code, 2);
    assert!(err.contains("p.yaml:9:3: nodes.parse: output port `parse.failed` is not routed"), "{err}");
}

#[test]
fn a_toml_error_has_its_position_too() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("p.toml"),
        "version = 1\nname = \"t\"\n[nodes.list]\nkind = \"list\"\nstore = \"nowhere\"\n",
    )
    .unwrap();
    let out = dqpipe(dir.path()).args(["validate", "p.toml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("p.toml:5:1: nodes.list.store: unknown store `nowhere`"), "{}", stderr(&out));
}

#[test]
fn yaml_and_toml_give_the_same_plan() {
    // Plans list for real: an empty source folder to list.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("var/in")).unwrap();
    let plan = |f: &str| {
        let out = dqpipe(dir.path()).args(["plan", &repo().join(f).to_string_lossy()]).output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out)
    };
    let yaml = plan("pipelines/examples/copy.yaml");
    assert_eq!(yaml.replace("copy.yaml", "copy.toml"), plan("pipelines/examples/copy.toml"));
    // fetch and put adapt unless a number is set; the copy example sets none.
    assert!(yaml.contains("fetch (fetch), concurrency adaptive (from 8, at most 256), input: list"), "{yaml}");
}

#[test]
fn secrets_never_appear_in_plans() {
    // No scanner here: the plans check the listing only (`--no-preflight`).
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("var/archive")).unwrap();
    let secret = "https://hooks.slack.test/services/T123/B456/very-secret-token";
    let out = dqpipe(dir.path())
        .args(["plan", &repo().join("pipelines/nats-historical.yaml").to_string_lossy(), "--no-preflight"])
        .env("SLACK_WEBHOOK", secret)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stdout(&out).contains("very-secret-token") && !stderr(&out).contains("very-secret-token"));
    assert!(stdout(&out).contains("webhook_url: \"<redacted>\""), "{}", stdout(&out));
    // Without a webhook, the plan says alerts are off rather than hiding an empty value.
    let out = dqpipe(dir.path())
        .args(["plan", &repo().join("pipelines/nats-historical.yaml").to_string_lossy(), "--no-preflight"])
        .output()
        .unwrap();
    assert!(stdout(&out).contains("webhook_url: \"(off)\""), "{}", stdout(&out));
}

#[test]
fn graph_is_valid_dot_and_mermaid() {
    let repo = repo();
    let out = dqpipe(&repo).args(["graph", "pipelines/nats-historical.yaml"]).output().unwrap();
    assert!(out.status.success());
    let mut dot = std::process::Command::new("dot")
        .arg("-Tsvg")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("graphviz `dot` is installed (scripts/test installs it)");
    use std::io::Write as _;
    dot.stdin.take().unwrap().write_all(&out.stdout).unwrap();
    let svg = dot.wait_with_output().unwrap();
    assert!(svg.status.success());
    assert!(String::from_utf8_lossy(&svg.stdout).contains("scan (clamav)"));
    let out = dqpipe(&repo).args(["graph", "--format", "mermaid", "pipelines/nats-historical.yaml"]).output().unwrap();
    let m = stdout(&out);
    assert!(m.starts_with("flowchart LR\n") && m.contains("-->|infected|"), "{m}");
}

#[test]
fn schema_covers_every_kind() {
    let out = dqpipe(&repo()).arg("schema").output().unwrap();
    assert!(out.status.success());
    let schema: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // One branch per kind, chosen by `kind` (if/then), holding that kind's settings.
    let node = &schema["properties"]["nodes"]["additionalProperties"];
    let kinds: Vec<&str> = node["allOf"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            let name = k["if"]["properties"]["kind"]["const"].as_str().unwrap();
            assert_eq!(k["then"]["properties"]["kind"]["const"], name);
            name
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "list",
            "fetch",
            "put",
            "clamav",
            "nats_message",
            "slack",
            "json_check",
            "map",
            "filter",
            "route",
            "unpack",
            "records",
            "xml_check",
            "delete",
            "stamp",
            "batch"
        ]
    );
    assert_eq!(node["properties"]["kind"]["enum"], serde_json::json!(kinds));
    // A number may be a string holding a variable, as the loader reads it.
    let clamav = &node["allOf"][3]["then"]["properties"];
    assert_eq!(clamav["concurrency"]["anyOf"][0]["type"], serde_json::json!(["integer", "string"]));
    assert_eq!(clamav["concurrency"]["anyOf"][1]["anyOf"][0]["const"], "adaptive");
    // ... or a string the loader reads as a number, as `validate` does.
    assert_eq!(clamav["timeout_secs"]["pattern"], "\\$\\{|^\\s*-?[0-9]+\\s*$");
}

/// The schema and `validate` accept the same specs: one setting at a time of a valid spec
/// takes values of every shape (numbers as numbers and as text, words, out of range,
/// `${...}`, a typo in a key), and each variation passes both or fails both. Also the
/// shipped specs (all pass) and the broken ones (all fail). What neither can disagree on
/// is left out: the wiring, templates and trust, which only `validate` checks, and a
/// number written as text out of its range (`concurrency: "5000"`), which JSON Schema
/// cannot compare as a number and only `validate` refuses.
#[test]
fn the_schema_and_validate_accept_the_same_specs() {
    let checker = std::env::var("CHECK_JSONSCHEMA").unwrap_or_else(|_| "check-jsonschema".into());
    let dir = tempfile::tempdir().unwrap();
    let schema = dqpipe(dir.path()).arg("schema").output().unwrap();
    std::fs::write(dir.path().join("schema.json"), &schema.stdout).unwrap();
    let base = [
        ("VERSION", "1"),
        ("CONC", "8"),
        ("FSYNC", "true"),
        ("LIMIT", "10"),
        ("ORDER", "key"),
        ("TIMEOUT", "60"),
        ("SUFFIX_KEY", "suffix"),
    ];
    let template = "version: VERSION\nname: t\ndefaults: { concurrency: CONC }\nstores:\n  src: { url: \"file://./in\", file: { fsync: FSYNC } }\n  dst: { url: \"file://./out\" }\nnodes:\n  list: { kind: list, store: src, limit: LIMIT, order: ORDER, SUFFIX_KEY: .json }\n  fetch: { kind: fetch, input: list }\n  scan: { kind: clamav, input: fetch, address: \"tcp://127.0.0.1:3310\", timeout_secs: TIMEOUT }\n  write: { kind: put, input: scan.clean, store: dst, key: \"{{ name }}\" }\n  bad: { kind: put, input: [scan.infected, scan.error], store: dst, key: \"bad/{{ name }}\" }\n";
    let values: &[(&str, &[&str])] = &[
        ("VERSION", &["2", "0", "\"1\"", "one"]),
        ("CONC", &["\"8\"", "\" 8 \"", "x", "0", "5000", "\"${C:-8}\"", "8.5", "true", "-1"]),
        ("FSYNC", &["\"true\"", "false", "yes", "1", "\"${F:-true}\""]),
        ("LIMIT", &["\"10\"", "ten", "-1", "0", "[1]"]),
        ("ORDER", &["modified", "mod", "1"]),
        ("TIMEOUT", &["\"60\"", "0", "86401", "1.5", "\"${T:-60}\""]),
        ("SUFFIX_KEY", &["sufix", "prefix"]),
    ];
    let mut files = Vec::new();
    for (setting, vs) in values {
        for v in *vs {
            let mut spec = template.to_string();
            for (name, default) in base {
                spec = spec.replace(name, if name == *setting { v } else { default });
            }
            let name = format!("v{}.yaml", files.len());
            std::fs::write(dir.path().join(&name), spec).unwrap();
            files.push(dir.path().join(name));
        }
    }
    let shipped = std::process::Command::new("find")
        .args(["pipelines", "-name", "*.yaml", "!", "-name", "*.tests.yaml"])
        .current_dir(repo())
        .output()
        .unwrap();
    files.extend(stdout(&shipped).lines().map(|l| repo().join(l)));
    files.extend(std::fs::read_dir(repo().join("tests/schema/broken")).unwrap().map(|e| e.unwrap().path()));
    let out = std::process::Command::new(&checker)
        .args(["--output-format", "json", "--schemafile"])
        .arg(dir.path().join("schema.json"))
        .args(&files)
        .output()
        .unwrap_or_else(|e| panic!("cannot run `{checker}` ({e}); scripts/test installs it and sets CHECK_JSONSCHEMA"));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("check-jsonschema's JSON");
    let refused: Vec<String> = report["errors"]
        .as_array()
        .unwrap()
        .iter()
        .chain(report["parse_errors"].as_array().into_iter().flatten())
        .map(|e| e["filename"].as_str().unwrap().to_string())
        .collect();
    let mut disagree = Vec::new();
    for f in &files {
        let valid = dqpipe(dir.path()).arg("validate").arg(f).output().unwrap();
        let by_schema = !refused.iter().any(|r| Path::new(r) == f.as_path());
        if valid.status.success() != by_schema {
            let text = std::fs::read_to_string(f).unwrap();
            disagree.push(format!(
                "{}: validate {}, schema {}\n{text}{}",
                f.display(),
                valid.status.success(),
                by_schema,
                stderr(&valid)
            ));
        }
    }
    assert!(disagree.is_empty(), "{} of {} disagree:\n{}", disagree.len(), files.len(), disagree.join("\n"));
}

#[test]
fn a_put_to_an_sftp_store_validates_without_its_key_file() {
    let dir = tempfile::tempdir().unwrap();
    // SFTP is a destination too (a temporary name, then a rename); the key file need not
    // exist to validate (it is read when connecting).
    let key = dir.path().join("no-such-key");
    let yaml = format!(
        "{HEAD}  landing:\n    url: sftp://nats@127.0.0.1:2222/landing\n    sftp: {{ private_key_path: {}, insecure_accept_any_host_key: true }}\n  list: {{ kind: list, store: src }}\n  fetch: {{ kind: fetch, input: list }}\n  write: {{ kind: put, input: fetch, store: landing, key: \"{{{{ name }}}}\" }}\n",
        key.display()
    )
    .replace("nodes:\n  landing:", "  landing:")
    .replace("  list: {", "nodes:\n  list: {");
    std::fs::write(dir.path().join("p.yaml"), yaml).unwrap();
    let out = dqpipe(dir.path()).args(["validate", "p.yaml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn a_key_written_twice_is_an_error_at_both_places() {
    // A pasted second `write` node used to replace the real one silently.
    let (code, err) = validate(&format!(
        "{HEAD}  list: {{ kind: list, store: src }}\n  write: {{ kind: put, input: list, store: dst, key: \"a/{{{{ name }}}}\" }}\n  write: {{ kind: put, input: list, store: dst, key: \"b/{{{{ name }}}}\" }}\n"
    ));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("p.yaml:9:3: nodes.write: `write` is written twice in this mapping (first at line 8, column 3)"),
        "{err}"
    );
}

#[test]
fn adaptive_concurrency_is_for_the_kinds_that_wait_on_requests_and_starts_within_its_ceiling() {
    let nodes = "  list: { kind: list, store: src }\n  fetch: { kind: fetch, input: list, concurrency: adaptive }\n  check: { kind: json_check, input: fetch, concurrency: adaptive }\n  write: { kind: put, input: check.ok, store: dst, key: \"{{ name }}\" }\n  bad: { kind: put, input: check.failed, store: dst, key: \"bad/{{ name }}\" }\n";
    let (code, err) = validate(&format!("{HEAD}{nodes}"));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("p.yaml:9:44: nodes.check.concurrency: `json_check` does not wait on requests, so its concurrency cannot adapt: give it a number"),
        "{err}"
    );
    assert_eq!(err.matches("error:").count(), 1, "fetch may adapt: {err}");
    let head = HEAD.replace("stores:", "defaults: { concurrency: 300, max_concurrency: 200 }\nstores:");
    let (code, err) = validate(&format!("{head}  list: {{ kind: list, store: src }}\n  fetch: {{ kind: fetch, input: list }}\n  write: {{ kind: put, input: fetch, store: dst, key: \"{{{{ name }}}}\" }}\n"));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("defaults.concurrency: 300 is over `max_concurrency` (200)"), "{err}");
}

#[test]
fn a_concurrency_for_a_node_that_does_not_exist_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dqpipe(dir.path())
        .args(["plan", &repo().join("pipelines/nats-historical.yaml").to_string_lossy(), "--concurrency", "scna=4"])
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--concurrency scna=...") && err.contains("has no node `scna`") && err.contains("scan"),
        "{err}"
    );
}

#[test]
fn a_report_that_cannot_be_written_does_not_change_the_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("in")).unwrap();
    std::fs::write(dir.path().join("in/a.json"), "{}").unwrap();
    let out = dqpipe(dir.path())
        .args(["run", &repo().join("pipelines/examples/copy.yaml").to_string_lossy(), "--progress", "off"])
        .args(["--report", "no-such-folder/r.json"])
        .env("SRC_URL", "file://./in")
        .env("DST_URL", "file://./out")
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("the run report could not be written"), "{err}");
}

#[test]
fn the_sftp_spec_validates_without_its_key_file_and_a_run_says_it_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let spec = repo().join("pipelines/nats-sftp-ingest.yaml").to_string_lossy().into_owned();
    for command in ["validate", "graph"] {
        let out = dqpipe(dir.path()).args([command, &spec]).env("SFTP_KEY_PATH", "/no/such/key").output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{command}: {}", stderr(&out));
    }
    // Reaching the server and reading the key are preflight checks: the run stops before
    // anything moves.
    let out = dqpipe(dir.path())
        .args(["run", &spec, "--progress", "off"])
        .env("SFTP_KEY_PATH", "/no/such/key")
        .env("SFTP_URL", format!("sftp://nats@127.0.0.1:{}/landing", free_port()))
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("preflight checks failed"), "{err}");
}

#[test]
fn a_store_that_fails_to_open_gives_one_error_not_one_per_node() {
    let (code, err) = validate(
        "version: 1\nname: t\nstores:\n  src: { url: \"gopher://host/x\" }\n  dst: { url: \"file://./out\" }\nnodes:\n  list: { kind: list, store: src }\n  fetch: { kind: fetch, input: list }\n  write: { kind: put, input: fetch, store: dst, key: \"{{ name }}\" }\n",
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("p.yaml:4:") && err.contains("unsupported store scheme `gopher://`"), "{err}");
    assert!(!err.contains("unknown store"), "a consequential error: {err}");
    assert!(err.contains("1 error in p.yaml"), "{err}");
}

#[test]
fn a_trusted_store_reached_without_a_scan_is_refused_with_the_path() {
    let spec = |write_input: &str| {
        format!(
            "version: 1\nname: t\nstores:\n  src: {{ url: \"file://./in\" }}\n  internal: {{ url: \"file://./out\", trusted: true }}\n  q: {{ url: \"file://./q\" }}\nnodes:\n  list: {{ kind: list, store: src }}\n  fetch: {{ kind: fetch, input: list }}\n  scan: {{ kind: clamav, input: fetch, address: \"tcp://127.0.0.1:3310\" }}\n  quarantine: {{ kind: put, input: [scan.infected, scan.error], store: q, key: \"{{{{ key }}}}\" }}\n  write: {{ kind: put, input: {write_input}, store: internal, key: \"{{{{ name }}}}\" }}\n"
        )
    };
    let (code, err) = validate(&spec("scan.clean"));
    assert_eq!(code, 0, "{err}");
    // A second input straight from fetch bypasses the scan.
    let (code, err) = validate(&spec("[scan.clean, fetch]"));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("p.yaml:12:51: nodes.write.store: store `internal` is trusted")
            && err.contains("items reach `write` by list -> fetch -> write without a scan"),
        "{err}"
    );
    // The quarantine may take what was not scanned clean: it is not trusted.
    assert!(!err.contains("nodes.quarantine"), "{err}");
}

/// The NATS pipeline with `from` replaced by `to` once.
fn nats_with(dir: &std::path::Path, from: &str, to: &str) -> (i32, String) {
    let text = std::fs::read_to_string(nats_pipeline()).unwrap();
    assert!(text.contains(from), "{from}");
    std::fs::write(dir.join("n.yaml"), text.replacen(from, to, 1)).unwrap();
    let out = dqpipe(dir).args(["validate", "n.yaml"]).output().unwrap();
    (out.status.code().unwrap_or(-1), stderr(&out))
}

#[test]
fn a_template_variable_that_no_path_sets_is_caught_by_validate() {
    let dir = tempfile::tempdir().unwrap();
    // A typo: every object would be fetched, scanned and transformed, then fail.
    let (code, err) = nats_with(dir.path(), "parsed_{{ name }}", "parsed_{{ nme }}");
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("n.yaml:")
            && err.contains("nodes.write.key: `{{ nme }}` is not set on items that reach `write` by list -> fetch -> scan.clean -> transform.ok -> write; did you mean `name`?"),
        "{err}"
    );
    // msg_date comes from the transform: quarantined items never had one.
    let (code, err) = nats_with(
        dir.path(),
        "store: quarantine\n    key: \"{{ key }}\"",
        "store: quarantine\n    key: \"{{ msg_date }}/{{ key }}\"",
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("nodes.quarantine.key: `{{ msg_date }}` is not set on items that reach `quarantine` by list -> fetch -> scan."),
        "{err}"
    );
}

/// Numbers and booleans from the environment: a string whose interpolated value parses as
/// the type a setting takes is that value; one that does not is refused at its place,
/// naming the variable to fix.
#[test]
fn numbers_and_booleans_come_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let spec = "version: 1\nname: t\ndefaults:\n  concurrency: \"${CONC:-4}\"\nstores:\n  src: { url: \"file://./in\" }\n  dst: { url: \"file://./out\", trusted: \"${TRUSTED:-false}\", file: { fsync: \"${FSYNC:-true}\" } }\nnodes:\n  list: { kind: list, store: src }\n  fetch: { kind: fetch, input: list, concurrency: \"${FETCH_CONCURRENCY:-16}\", retry: { attempts: \"${ATTEMPTS:-3}\" } }\n  write: { kind: put, input: fetch, store: dst, key: \"{{ key }}\" }\n";
    std::fs::write(dir.path().join("p.yaml"), spec).unwrap();
    let ok = dqpipe(dir.path()).args(["validate", "p.yaml"]).output().unwrap();
    assert_eq!(ok.status.code(), Some(0), "{}", stderr(&ok));
    let plan = dqpipe(dir.path()).args(["plan", "p.yaml"]).env("ATTEMPTS", "5").output().unwrap();
    assert!(stdout(&plan).contains(r#"retry: {"attempts":5}"#), "{}", stdout(&plan));

    let bad = dqpipe(dir.path()).args(["validate", "p.yaml"]).env("ATTEMPTS", "many").output().unwrap();
    assert_eq!(bad.status.code(), Some(2));
    let err = stderr(&bad);
    assert!(
        err.contains("p.yaml:10:88: nodes.fetch.retry.attempts: must be a whole number, not \"many\" (the value comes from ATTEMPTS)"),
        "{err}"
    );
}

/// Typos get the nearest name and, for fields, every field allowed there (the node's
/// common ones included).
#[test]
fn typos_are_answered_with_the_nearest_name() {
    let (code, err) = validate(&format!(
        "{HEAD}  list: {{ kind: list, store: src }}\n  fetch: {{ kind: fetch, input: list, concurency: 4 }}\n  write: {{ kind: put, input: fetch, store: dts, key: \"{{{{ key }}}}\" }}\n  more: {{ kind: fech, input: lst }}\n"
    ));
    assert_eq!(code, 2, "{err}");
    for want in [
        "p.yaml:8:38: nodes.fetch.concurency: unknown field `concurency` (did you mean `concurrency`?); the fields here are: kind, input, concurrency, description, retry",
        "p.yaml:9:37: nodes.write.store: unknown store `dts` (did you mean `dst`?); the spec's stores are: src, dst",
        "nodes.more.kind: unknown kind `fech` (did you mean `fetch`?)",
        "nodes.more.input: unknown node `lst` (did you mean `list`?)",
    ] {
        assert!(err.contains(want), "{want}\n{err}");
    }
    let (code, err) = validate(&format!(
        "{HEAD}  list: {{ kind: list, store: src }}\n  fetch: {{ kind: fetch, input: list }}\n  scan: {{ kind: clamav, input: fetch, address: \"tcp://127.0.0.1:3310\" }}\n  write: {{ kind: put, input: scan.clen, store: dst, key: \"{{{{ key }}}}\" }}\n"
    ));
    assert_eq!(code, 2, "{err}");
    let want = "p.yaml:10:23: nodes.write.input: node `scan` (clamav) has no port `clen` (did you mean `clean`?); its ports are: clean, infected, error";
    assert!(err.contains(want), "{want}\n{err}");
}

/// `DQPIPE_ENV_DIR`: a variable the environment does not set is read from the file of
/// that name (a Kubernetes Secret mounted as a volume), its final newline dropped; a
/// secret read so is redacted in plans like one from the environment.
#[test]
fn variables_can_come_from_files_of_a_mounted_secret() {
    let dir = tempfile::tempdir().unwrap();
    let secrets = dir.path().join("secrets");
    std::fs::create_dir_all(&secrets).unwrap();
    std::fs::write(secrets.join("DST_URL"), "file://./from-a-file\n").unwrap();
    std::fs::write(secrets.join("SLACK_WEBHOOK"), "http://127.0.0.1:9/services/T0/B0/hush-hush\n").unwrap();
    std::fs::write(
        dir.path().join("p.yaml"),
        "version: 1\nname: t\nstores:\n  src: { url: \"file://./in\" }\n  dst: { url: \"${DST_URL}\" }\nnodes:\n  list: { kind: list, store: src }\n  fetch: { kind: fetch, input: list }\n  write: { kind: put, input: fetch, store: dst, key: \"{{ key }}\" }\n  alert: { kind: slack, input: write, webhook_url: \"${SLACK_WEBHOOK}\" }\n",
    )
    .unwrap();
    std::fs::create_dir_all(dir.path().join("in")).unwrap();
    let unset = dqpipe(dir.path()).args(["validate", "p.yaml"]).output().unwrap();
    assert_eq!(unset.status.code(), Some(2), "without the folder, DST_URL is unset");
    let plan = dqpipe(dir.path()).args(["plan", "p.yaml"]).env("DQPIPE_ENV_DIR", &secrets).output().unwrap();
    assert_eq!(plan.status.code(), Some(0), "{}", stderr(&plan));
    let text = stdout(&plan);
    assert!(text.contains("file://./from-a-file\n\nNodes"), "the final newline is dropped: {text}");
    assert!(!text.contains("hush-hush") && text.contains("<redacted>"), "{text}");
    // The environment wins over the folder.
    let plan = dqpipe(dir.path())
        .args(["plan", "p.yaml"])
        .env("DQPIPE_ENV_DIR", &secrets)
        .env("DST_URL", "file://./from-the-environment")
        .output()
        .unwrap();
    assert!(stdout(&plan).contains("file://./from-the-environment"), "{}", stdout(&plan));
}

/// `validate` takes files and folders, and `--format json` prints one record per problem.
#[test]
fn validate_takes_folders_and_prints_json_records() {
    let shipped = dqpipe(&repo()).args(["validate", "pipelines/"]).env("HOME", "/root").output().unwrap();
    assert_eq!(shipped.status.code(), Some(0), "{}", stderr(&shipped));
    assert!(stdout(&shipped).lines().count() >= 4, "{}", stdout(&shipped));

    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("specs/more")).unwrap();
    std::fs::write(dir.path().join("specs/good.yaml"), format!("{HEAD}  list: {{ kind: list, store: src }}\n"))
        .unwrap();
    std::fs::write(
        dir.path().join("specs/more/bad.yaml"),
        format!("{HEAD}  list: {{ kind: list, store: scr }}\n  f: {{ kind: fetch, input: lst }}\n"),
    )
    .unwrap();
    let out = dqpipe(dir.path()).args(["validate", "specs", "--format", "json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let records: Vec<serde_json::Value> = stdout(&out).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(records.len(), 2, "{records:?}");
    for r in &records {
        assert_eq!(r["file"], "specs/more/bad.yaml");
        assert_eq!(r["severity"], "error");
        assert!(r["line"].as_u64().is_some() && r["column"].as_u64().is_some(), "{r}");
    }
    assert!(records.iter().any(|r| r["path"] == "nodes.list.store" && r["line"] == 7), "{records:?}");
    assert!(records.iter().any(|r| r["path"] == "nodes.f.input" && r["message"].as_str().unwrap().contains("`list`")));
}

/// YAML anchors and merge keys: settings written once and shared; a key written beside
/// the merge wins over the merged one. The NATS spec states its S3 settings once.
#[test]
fn merge_keys_share_settings_written_once() {
    let dir = tempfile::tempdir().unwrap();
    let spec = "version: 1\nname: t\nstores:\n  src: { url: \"s3://src-bucket\", s3: { <<: &s3 { region: eu-west-2, endpoint: \"http://127.0.0.1:9\" }, request_timeout_secs: 5 } }\n  dst: { url: \"s3://dst-bucket\", s3: { <<: *s3, region: eu-west-1 } }\nnodes:\n  list: { kind: list, store: src }\n  fetch: { kind: fetch, input: list }\n  write: { kind: put, input: fetch, store: dst, key: \"{{ key }}\" }\n";
    std::fs::write(dir.path().join("p.yaml"), spec).unwrap();
    let plan = dqpipe(dir.path()).args(["plan", "p.yaml"]).output().unwrap();
    let text = stdout(&plan);
    let line = |store: &str| text.lines().find(|l| l.trim_start().starts_with(store)).unwrap_or_default().to_string();
    assert!(line("src").contains(r#""region":"eu-west-2""#) && line("src").contains("127.0.0.1:9"), "{text}");
    assert!(line("dst").contains(r#""region":"eu-west-1""#) && line("dst").contains("127.0.0.1:9"), "{text}");
}

/// The raw parser errors people meet most, in plain words at the line of the mistake.
#[test]
fn syntax_mistakes_are_named_in_plain_words_at_their_line() {
    let cases = [
        ("tab.yaml", "version: 1\nname: t\nnodes:\n\tlist: { kind: list }\n", "tab.yaml:4:1: invalid YAML: a tab in the indentation"),
        (
            "colon.yaml",
            "version: 1\nname: t\nnodes:\n  list:\n    kind list\n    store: src\n",
            "colon.yaml:5:5: invalid YAML: `kind list` has no `:` after its key: write `kind: list`",
        ),
        (
            "brace.yaml",
            &format!("{HEAD}  list: {{ kind: list, store: src }}\n  w:\n    kind: put\n    input: list\n    key: {{{{ key }}}}\n"),
            "brace.yaml:11:10: invalid YAML: a value that starts with `{` is read as a YAML mapping: quote it",
        ),
        ("dup.toml", "version = 1\nname = \"t\"\nname = \"u\"\n", "dup.toml:3:1: invalid TOML: duplicate key `name`"),
    ];
    for (file, text, want) in cases {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(file), text).unwrap();
        let out = dqpipe(dir.path()).args(["validate", file]).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{file}");
        assert!(stderr(&out).contains(want), "{want}\n{}", stderr(&out));
    }
}

/// One mistake, one error: an unset variable is reported once, not again by the node that
/// then reads `${X}` as its value.
#[test]
fn an_unset_variable_is_one_error() {
    let (code, err) = validate(&format!(
        "{HEAD}  list: {{ kind: list, store: src }}\n  fetch: {{ kind: fetch, input: list }}\n  scan: {{ kind: clamav, input: fetch, address: \"${{DQPIPE_TEST_UNSET_ADDRESS}}\" }}\n  ok: {{ kind: put, input: scan.clean, store: dst, key: \"{{{{ key }}}}\" }}\n  q: {{ kind: put, input: [scan.infected, scan.error], store: dst, key: \"q/{{{{ key }}}}\" }}\n"
    ));
    assert_eq!(code, 2);
    assert!(err.contains("nodes.scan.address: environment variable `DQPIPE_TEST_UNSET_ADDRESS` is not set"), "{err}");
    assert!(err.ends_with("1 error in p.yaml\n"), "{err}");
}

/// `defaults.s3` is inherited by every store, key by key, unless the store sets the key;
/// the same table works in TOML; a mistake in it is reported once, at its own line.
#[test]
fn stores_inherit_the_s3_defaults_unless_they_override_them() {
    let dir = tempfile::tempdir().unwrap();
    let body = "nodes:\n  list: { kind: list, store: src }\n  fetch: { kind: fetch, input: list }\n  write: { kind: put, input: fetch, store: dst, key: \"{{ key }}\" }\n";
    let yaml = format!("version: 1\nname: t\ndefaults:\n  s3: {{ region: eu-west-2, endpoint: \"http://127.0.0.1:9\" }}\nstores:\n  src: {{ url: \"s3://src-bucket\", s3: {{ region: eu-west-1 }} }}\n  dst: {{ url: \"s3://dst-bucket\" }}\n{body}");
    let toml = "version = 1\nname = \"t\"\n[defaults.s3]\nregion = \"eu-west-2\"\nendpoint = \"http://127.0.0.1:9\"\n[stores]\nsrc = { url = \"s3://src-bucket\", s3 = { region = \"eu-west-1\" } }\ndst = { url = \"s3://dst-bucket\" }\n[nodes]\nlist = { kind = \"list\", store = \"src\" }\nfetch = { kind = \"fetch\", input = \"list\" }\nwrite = { kind = \"put\", input = \"fetch\", store = \"dst\", key = \"{{ key }}\" }\n";
    std::fs::write(dir.path().join("p.yaml"), &yaml).unwrap();
    std::fs::write(dir.path().join("p.toml"), toml).unwrap();
    for file in ["p.yaml", "p.toml"] {
        let plan = dqpipe(dir.path()).args(["plan", file]).output().unwrap();
        let text = stdout(&plan);
        let line =
            |store: &str| text.lines().find(|l| l.trim_start().starts_with(store)).unwrap_or_default().to_string();
        assert!(
            line("src").contains(r#""region":"eu-west-1""#) && line("src").contains("127.0.0.1:9"),
            "{file}: {text}"
        );
        assert!(
            line("dst").contains(r#""region":"eu-west-2""#) && line("dst").contains("127.0.0.1:9"),
            "{file}: {text}"
        );
    }

    std::fs::write(dir.path().join("p.yaml"), yaml.replace("region: eu-west-2", "regoin: eu-west-2")).unwrap();
    let out = dqpipe(dir.path()).args(["validate", "p.yaml"]).output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("p.yaml:4:9: defaults.s3.regoin: unknown field `regoin` (did you mean `region`?)"), "{err}");
    assert_eq!(err.matches("regoin").count(), 2, "one error, not one per store: {err}");

    // The shipped specs say their S3 settings once (the SFTP spec's secure bucket has an
    // endpoint of its own).
    for (spec, endpoints) in [("pipelines/nats-historical.yaml", 1), ("pipelines/nats-sftp-ingest.yaml", 2)] {
        let text = std::fs::read_to_string(repo().join(spec)).unwrap();
        assert_eq!(text.matches("region:").count(), 1, "{spec}");
        assert_eq!(text.matches("endpoint:").count(), endpoints, "{spec}");
        assert_eq!(text.matches("sse:").count(), endpoints, "{spec}");
    }
}

/// Issue 27.6e: a written store inside what a source lists is refused by `validate`,
/// naming both; stores side by side in one bucket or folder are not.
#[test]
fn a_store_written_inside_the_listing_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let validate = |vars: &[(&str, &str)]| {
        let mut c = dqpipe(dir.path());
        c.args(["validate", &nats_pipeline()]);
        for (k, v) in vars {
            c.env(k, v);
        }
        let out = c.output().unwrap();
        (out.status.code(), stderr(&out))
    };
    for (archive, internal) in [
        ("file://./var/archive", "file://./var/archive"),
        ("file://./var/archive", "file://./var/archive/../archive/parsed"),
        ("s3://data/nats", "s3://data/nats/parsed"),
    ] {
        let (code, err) = validate(&[("ARCHIVE_URL", archive), ("INTERNAL_URL", internal)]);
        assert_eq!(code, Some(2), "{archive} -> {internal}: {err}");
        assert!(
            err.contains("nats-historical.yaml:")
                && err.contains("store `internal`")
                && err.contains("store `archive`"),
            "{err}"
        );
        assert!(err.contains("would list and process its own output"), "{err}");
    }
    for (archive, internal) in [
        ("file://./var/archive", "file://./var/internal"),
        ("s3://data/nats", "s3://data/parsed"),
        ("s3://archive", "s3://internal"),
    ] {
        let (code, err) = validate(&[("ARCHIVE_URL", archive), ("INTERNAL_URL", internal)]);
        assert_eq!(code, Some(0), "{archive} -> {internal}: {err}");
    }
}

/// The usual syntax mistakes get their line, the likely cause and the fix, and no second,
/// false error: a setting dedented to a node's column, one indented unlike its
/// neighbours, a TOML word left unquoted.
#[test]
fn indentation_and_quoting_mistakes_are_named_once_with_the_fix() {
    let head =
        "version: 1\nname: t\nstores:\n  src: { url: \"file://./in\" }\nnodes:\n  list: { kind: list, store: src }\n";
    let (code, err) = validate(&format!("{head}  fetch:\n    kind: fetch\n  input: list\n"));
    assert_eq!(code, 2);
    assert!(err.contains("p.yaml:9:3: nodes.input: `input` is indented as a node but is no mapping: it is most likely a setting of `fetch` above"), "{err}");
    assert!(err.contains("1 error in p.yaml"), "no false `missing input` for fetch: {err}");
    let (code, err) = validate(&format!("{head}  fetch:\n      kind: fetch\n    input: list\n"));
    assert_eq!(code, 2);
    assert!(err.contains("p.yaml:9:5: invalid YAML: `input: list` is indented 4 spaces, the line above 6"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("p.toml"),
        "version = 1\nname = \"t\"\n[stores.src]\nurl = \"file://./in\"\n[nodes.list]\nkind = \"list\"\nstore = \"src\"\n[nodes.fetch]\nkind = \"fetch\"\ninput = list\n",
    )
    .unwrap();
    let out = dqpipe(dir.path()).args(["validate", "p.toml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out)
            .contains("p.toml:10:9: invalid TOML: `input = list`: text is quoted in TOML: write `input = \"list\"`"),
        "{}",
        stderr(&out)
    );
}

/// A `delete` (or a `stamp`) acts where its objects were listed: taking its items from a
/// source over another store is refused by `validate`, at the node's `store`, naming the
/// store the source lists; the run would have refused every item.
#[test]
fn a_delete_from_a_store_its_items_were_not_listed_in_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let spec = "version: 1\nname: d\nstores:\n  a: { url: \"file://./a\" }\n  b: { url: \"file://./b\" }\nnodes:\n  list: { kind: list, store: a }\n  gone: { kind: delete, input: list, store: b }\n";
    std::fs::write(dir.path().join("p.yaml"), spec).unwrap();
    let out = dqpipe(dir.path()).args(["validate", "p.yaml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("p.yaml:8:38: nodes.gone.store:") && err.contains("which lists `a`: set `store: a`"), "{err}");
    std::fs::write(dir.path().join("p.yaml"), spec.replace("store: b }", "store: a }")).unwrap();
    let out = dqpipe(dir.path()).args(["validate", "p.yaml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

/// `max_requests_per_second` on a store: a number above 0 (or a string holding one);
/// anything else is refused at its place. A run with it set does its work.
#[test]
fn a_store_request_rate_is_checked_and_a_run_keeps_to_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("a")).unwrap();
    for i in 0..5 {
        std::fs::write(dir.path().join(format!("a/{i}.json")), "{}").unwrap();
    }
    let spec = |rate: &str| {
        format!("version: 1\nname: r\nstores:\n  a: {{ url: \"file://./a\" }}\n  b: {{ url: \"file://./b\", max_requests_per_second: {rate} }}\nnodes:\n  list: {{ kind: list, store: a }}\n  fetch: {{ kind: fetch, input: list }}\n  write: {{ kind: put, input: fetch, store: b, key: \"{{{{ name }}}}\" }}\n")
    };
    for bad in ["0", "-3", "fast"] {
        std::fs::write(dir.path().join("p.yaml"), spec(bad)).unwrap();
        let out = dqpipe(dir.path()).args(["validate", "p.yaml"]).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("p.yaml:5:27: stores.b.max_requests_per_second: must be a number"),
            "{}",
            stderr(&out)
        );
    }
    std::fs::write(dir.path().join("p.yaml"), spec("\"200\"")).unwrap();
    let ran = TestRun::new(dir.path(), "p.yaml").run();
    assert_eq!(ran.code(), Some(0), "{}", ran.stderr());
    assert_eq!(files_under(&dir.path().join("b")).len(), 5);
}
