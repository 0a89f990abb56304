//! The reference and the docs say what the binary does: `dqpipe kinds` and `explain` from
//! the registry, every kind's example and every spec in the guide valid as printed, the
//! generated pages up to date, the README short and every page it links present.

use std::path::Path;

use crate::common::*;

fn dq(dir: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = dqpipe(dir).args(args).output().unwrap();
    (out.status.code(), stdout(&out), stderr(&out))
}

fn kind_names() -> Vec<String> {
    let (code, out, err) = dq(&repo(), &["kinds", "--format", "json"]);
    assert_eq!(code, Some(0), "{err}");
    let kinds: serde_json::Value = serde_json::from_str(&out).unwrap();
    kinds.as_array().unwrap().iter().map(|k| k["name"].as_str().unwrap().to_string()).collect()
}

#[test]
fn kinds_lists_every_kind_and_explain_shows_settings_ports_and_an_example() {
    let (code, out, _) = dq(&repo(), &["kinds"]);
    assert_eq!(code, Some(0));
    for k in kind_names() {
        assert!(out.lines().any(|l| l.starts_with(&format!("{k} "))), "{k} missing from:\n{out}");
    }
    let (code, out, err) = dq(&repo(), &["explain", "clamav"]);
    assert_eq!(code, Some(0), "{err}");
    for want in [
        "clamav (processor)",
        "address",
        "canary.every_items",
        "database.max_age_hours",
        "infected  (problem, must be routed)",
        "sets: reason, signature, scan",
        "EXAMPLE",
        "kind: clamav",
    ] {
        assert!(out.contains(want), "`{want}` missing from:\n{out}");
    }
    let (code, out, _) = dq(&repo(), &["explain", "put.key", "--format", "json"]);
    assert_eq!(code, Some(0));
    let key: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (key["name"].as_str(), key["type"].as_str(), key["required"].as_bool()),
        (Some("key"), Some("string"), Some(true))
    );
    let (code, out, _) = dq(&repo(), &["explain", "defaults.concurrency"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("1 to 4096") && out.contains("default 8"), "{out}");
    let (code, out, _) = dq(&repo(), &["explain", "stores.s3", "--format", "markdown"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("`s3.endpoint`"), "{out}");
    let (code, _, err) = dq(&repo(), &["explain", "clamv"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("did you mean `clamav`"), "{err}");
    let (code, _, err) = dq(&repo(), &["explain", "put.kee"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("did you mean `key`"), "{err}");
}

/// Each kind's example, as `explain` prints it, in a spec with the stores and upstream
/// nodes its comment promises: it validates.
#[test]
fn every_kinds_example_validates() {
    let dir = tempfile::tempdir().unwrap();
    for kind in kind_names() {
        let (_, out, _) = dq(dir.path(), &["explain", &kind, "--format", "json"]);
        let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
        let example = doc["example"].as_str().unwrap();
        assert!(example.contains(&format!("kind: {kind}")), "{kind}'s example does not show it:\n{example}");
        let mut nodes = String::new();
        if !example.lines().any(|l| l.starts_with("list:")) {
            nodes.push_str("  list: { kind: list, store: landing }\n");
        }
        if !example.lines().any(|l| l.starts_with("fetch:")) {
            nodes.push_str("  fetch: { kind: fetch, input: list }\n");
        }
        let indented: String = example.lines().map(|l| format!("  {l}\n")).collect();
        let spec = format!(
            "version: 1\nname: example\nstores:\n  landing: {{ url: file://./landing }}\n  internal: {{ url: file://./internal }}\n  quarantine: {{ url: file://./quarantine }}\n  failed: {{ url: file://./failed }}\nnodes:\n{nodes}{indented}"
        );
        std::fs::write(dir.path().join(format!("{kind}.yaml")), &spec).unwrap();
        let (code, _, err) = dq(dir.path(), &["validate", &format!("{kind}.yaml")]);
        assert_eq!(code, Some(0), "{kind}'s example does not validate:\n{spec}\n{err}");
    }
}

/// The specs of docs/guide.md, in order: each validates; the step with `resume` and its
/// test cases (the guide's last `tests:` block) pass `dqpipe test`.
#[test]
fn the_guides_specs_validate_and_its_test_cases_pass() {
    let guide = std::fs::read_to_string(repo().join("docs/guide.md")).unwrap();
    let blocks: Vec<&str> = guide.split("```yaml\n").skip(1).map(|b| b.split("```").next().unwrap()).collect();
    let specs: Vec<&&str> = blocks.iter().filter(|b| b.starts_with("version: 1")).collect();
    assert!(specs.len() >= 5, "{} specs in the guide", specs.len());
    let dir = tempfile::tempdir().unwrap();
    for (n, spec) in specs.iter().enumerate() {
        std::fs::write(dir.path().join("acl.yaml"), spec).unwrap();
        let (code, _, err) = dq(dir.path(), &["validate", "acl.yaml"]);
        assert_eq!(code, Some(0), "the guide's spec {} does not validate:\n{spec}\n{err}", n + 1);
    }
    let moved = specs.iter().find(|s| s.contains("delete_after_success")).unwrap();
    let tests = blocks.iter().find(|b| b.starts_with("tests:")).unwrap();
    std::fs::write(dir.path().join("acl.yaml"), moved).unwrap();
    std::fs::write(dir.path().join("acl.tests.yaml"), tests).unwrap();
    let (code, out, err) = dq(dir.path(), &["test", "acl.yaml"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("3 passed"), "{out}");
}

#[test]
fn the_generated_docs_are_up_to_date_and_the_readme_is_a_page() {
    let (code, _, err) = dq(&repo(), &["docs", "docs", "--check"]);
    assert_eq!(code, Some(0), "{err}");
    for k in kind_names() {
        assert!(repo().join(format!("docs/kinds/{k}.md")).exists(), "no page for {k}");
    }
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    assert!(readme.lines().count() < 250, "README is {} lines", readme.lines().count());
    for k in kind_names() {
        assert!(readme.contains(&format!("`{k}`")), "README does not name `{k}`");
    }
    // Every local page a doc links to exists.
    for page in ["README.md", "docs/guide.md", "docs/operations.md", "docs/spec.md", "docs/reliability.md"] {
        let text = std::fs::read_to_string(repo().join(page)).unwrap();
        let base = repo().join(page).parent().unwrap().to_path_buf();
        for link in text.split("](").skip(1).map(|l| l.split(')').next().unwrap()) {
            let target = link.split('#').next().unwrap();
            if target.is_empty() || target.starts_with("http") {
                continue;
            }
            assert!(base.join(target).exists(), "{page} links to {link}, which is not there");
        }
    }
}

/// What users reach for: completions and a man page from the same command definitions,
/// and `run --dry-run` pointing at `plan`.
#[test]
fn completions_a_man_page_and_dry_run_pointing_at_plan() {
    let (code, out, _) = dq(&repo(), &["completions", "bash"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("complete -F _dqpipe") && out.contains("explain"), "{out}");
    let (code, out, _) = dq(&repo(), &["man"]);
    assert_eq!(code, Some(0));
    assert!(out.contains(".TH dqpipe 1") && out.contains("validate"), "{out}");
    let (code, _, err) = dq(&repo(), &["run", "pipelines/examples/copy.yaml", "--dry-run"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("dqpipe plan pipelines/examples/copy.yaml"), "{err}");
}
