//! `dqpipe test`: the shipped specs' test cases pass, in memory (no clamd, S3, SFTP or
//! network is started for them); and each kind of wrong expectation fails with a readable
//! difference and exit 1.

use crate::common::*;

/// `N passed, N failed` from the closing line.
fn totals(out: &str) -> (u64, u64) {
    let last = out.lines().rev().find(|l| l.ends_with(" failed")).unwrap_or_default();
    let n: Vec<u64> = last.split(' ').filter_map(|w| w.parse().ok()).collect();
    (n.first().copied().unwrap_or(0), n.get(1).copied().unwrap_or(u64::MAX))
}

#[test]
fn the_shipped_specs_pass_their_tests() {
    let out = dqpipe(&repo()).args(["test", "pipelines/"]).output().unwrap();
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}{}", stderr(&out));
    let (passed, failed) = totals(&text);
    assert_eq!(failed, 0, "{text}");
    assert!(passed >= 10, "{text}");
    for spec in ["nats-historical.yaml", "nats-sftp-ingest.yaml", "examples/nats-jq.yaml"] {
        assert!(text.contains(&format!("from pipelines/{spec}")), "{spec}: {text}");
    }
}

/// The NATS spec and its tests in a folder of their own, with `edit` applied to the tests.
fn nats_tests_with(edit: impl Fn(&str) -> String) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(repo().join("pipelines/nats-historical.yaml"), dir.path().join("nats.yaml")).unwrap();
    let tests = std::fs::read_to_string(repo().join("pipelines/nats-historical.tests.yaml")).unwrap();
    let edited = edit(&tests);
    assert_ne!(edited, tests, "the edit changed nothing");
    std::fs::write(dir.path().join("nats.tests.yaml"), edited).unwrap();
    let out = dqpipe(dir.path()).args(["test", "nats.yaml"]).output().unwrap();
    (out.status.code().unwrap_or(-1), stdout(&out))
}

#[test]
fn a_changed_expected_key_fails_with_both_keys() {
    let (code, text) = nats_tests_with(|t| {
        t.replacen(
            "key: msg_date=2021-03-15/parsed_FPL_BAW123.json",
            "key: msg_date=2021-03-16/parsed_FPL_BAW123.json",
            1,
        )
    });
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("test nats.yaml: a clean message is written under its delivery date, in the original job's format ... FAILED"), "{text}");
    assert!(
        text.contains(
            "2021/FPL_BAW123.json: key\n  - expected: msg_date=2021-03-16/parsed_FPL_BAW123.json\n  + got:      msg_date=2021-03-15/parsed_FPL_BAW123.json"
        ),
        "{text}"
    );
    assert_eq!(totals(&text), (4, 1), "{text}");
}

#[test]
fn a_wrong_route_fails_with_the_route_taken() {
    let (code, text) = nats_tests_with(|t| t.replace("eicar.json: { route: quarantine", "eicar.json: { route: write"));
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("eicar.json: route\n  - expected: write\n  + got:      quarantine"), "{text}");
}

#[test]
fn an_unexpected_alert_fails_and_is_named() {
    let (code, text) = nats_tests_with(|t| t.replacen("      - \"Virus detected: eicar.json quarantined\"\n", "", 1));
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains(
            "alerts (`-` expected, not sent; `+` sent, not expected):\n  + Virus detected: eicar.json quarantined"
        ),
        "{text}"
    );
}

#[test]
fn a_different_body_fails_with_a_line_diff() {
    let (code, text) = nats_tests_with(|t| t.replacen("          ADES: KJFK\n", "          ADES: KBOS\n", 1));
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("2021/FPL_BAW123.json: body (`-` expected, `+` got):"), "{text}");
    assert!(text.contains("\n  -   \"ADES\": \"KBOS\",\n  +   \"ADES\": \"KJFK\","), "{text}");
    // Lines that agree are shown as context, unmarked.
    assert!(text.contains("\n      \"ARCID\": \"BAW123\","), "{text}");
}

#[test]
fn a_wrong_reason_and_a_bad_stub_are_reported() {
    let (code, text) = nats_tests_with(|t| {
        t.replace("reason: not valid JSON }", "reason: not JSON at all }")
            .replace("stubs: { scan: clean }", "stubs: { scan: maybe }")
    });
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains(
            "single-quoted.json: reason (a part of it)\n  - expected: not JSON at all\n  + got:      not valid JSON"
        ),
        "{text}"
    );
    assert!(
        text.contains("stubs.scan: `maybe`: a scanner answers `clean`, `infected SIGNATURE` or `error REASON`"),
        "{text}"
    );
}

/// A tests file is read as a spec is: its mistakes at file:line:column with a did-you-mean,
/// and a stub or a route that names no node of the spec is one error when the file
/// loads, not a failure of every case.
#[test]
fn mistakes_in_a_tests_file_are_placed_and_found_when_it_loads() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(repo().join("pipelines/examples/classify.yaml"), dir.path().join("classify.yaml")).unwrap();
    let cases = [
        ("- name: x\n  objects: []\n", "classify.tests.yaml:1:1: a tests file is a mapping whose `tests:` holds a list"),
        (
            "tests:\n  - name: x\n    objects:\n      - { key: a.json, json: {} }\n    expect:\n      a.json: { rout: out }\n",
            "classify.tests.yaml:6:17: tests[0].expect.a.json.rout: unknown field `rout` (did you mean `route`?)",
        ),
        (
            "tests:\n  - name: x\n    objects: []\n    expect:\n      a.json: { route: otu }\n  - name: y\n    objects: []\n    expect:\n      a.json: { route: otu }\n",
            "classify.tests.yaml:5:17: tests[0].expect.a.json.route: `otu` is not a `put`, `stamp`, `batch` or `delete` node of the spec (did you mean `out`?)",
        ),
    ];
    for (text, want) in cases {
        std::fs::write(dir.path().join("classify.tests.yaml"), text).unwrap();
        let out = dqpipe(dir.path()).args(["test", "classify.yaml"]).output().unwrap();
        assert_eq!(out.status.code(), Some(1));
        let said = stdout(&out);
        assert!(said.contains(want), "{said}");
        assert!(said.contains("0 passed, 1 failed"), "one error for the file, not one per case: {said}");
        assert!(!stderr(&out).contains("WARN"), "{}", stderr(&out));
    }
}
