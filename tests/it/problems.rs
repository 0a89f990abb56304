//! Problem files finish where their path ends: a pipeline that is not NATS-shaped (CSV
//! files from a landing folder, scanned, clean ones copied, infected ones quarantined, no
//! alert node, nothing after the quarantine) completes every file, the infected ones
//! included, and a rerun takes none of them again. Real clamd, local folders.

use crate::common::*;

const SPEC: &str = r#"
version: 1
name: scan-landing
stores:
  landing: { url: "file://./landing" }
  clean: { url: "file://./clean" }
  quarantine: { url: "file://./quarantine" }
nodes:
  list: { kind: list, store: landing, suffix: ".csv", resume: { store: clean } }
  fetch: { kind: fetch, input: list }
  scan: { kind: clamav, input: fetch, address: "${CLAMD_ADDRESS}", database: { allow_unversioned: true } }
  copy: { kind: put, input: scan.clean, store: clean, key: "{{ key }}" }
  quarantine: { kind: put, input: [scan.infected, scan.error], store: quarantine, key: "{{ key }}", with_reason: true }
"#;

#[test]
fn quarantined_files_complete_without_an_alert_node_and_a_rerun_skips_them() {
    let clamd = Clamd::start("25M");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("scan.yaml"), SPEC).unwrap();
    std::fs::create_dir_all(dir.path().join("landing")).unwrap();
    for i in 0..8 {
        std::fs::write(dir.path().join(format!("landing/day-{i}.csv")), format!("id,flight\n{i},BAW{i}\n")).unwrap();
    }
    infected_file(&dir.path().join("landing/bad-1.csv"), 300);
    infected_file(&dir.path().join("landing/bad-2.csv"), 300);

    let first = TestRun::new(dir.path(), "scan.yaml").env("CLAMD_ADDRESS", &clamd.tcp()).run();
    assert_eq!(first.code(), Some(3), "quarantined files are problems, not failures: {}", first.stderr());
    let items = &first.report["items"];
    assert_eq!(
        (items["from_sources"].as_u64(), items["complete"].as_u64(), items["refused"].as_u64()),
        (Some(10), Some(10), Some(0)),
        "every file reached the end of its path, the quarantined ones too: {}",
        first.report
    );
    assert_eq!(items["problems"].as_u64(), Some(2), "{}", first.report);
    assert_eq!(files_under(&dir.path().join("quarantine")).len(), 4, "2 files and 2 reasons");
    assert_eq!(files_under(&dir.path().join("clean")).len(), 8);

    // The rerun finds every file done, the quarantined ones included: nothing is written again.
    let before = std::fs::metadata(dir.path().join("quarantine/bad-1.csv")).unwrap().modified().unwrap();
    let rerun = TestRun::new(dir.path(), "scan.yaml").env("CLAMD_ADDRESS", &clamd.tcp()).run();
    assert_eq!(rerun.code(), Some(0), "{}", rerun.stderr());
    assert_eq!(rerun.report["items"]["skipped_done"].as_u64(), Some(10), "{}", rerun.report);
    assert_eq!(rerun.report["items"]["from_sources"].as_u64(), Some(0), "{}", rerun.report);
    let after = std::fs::metadata(dir.path().join("quarantine/bad-1.csv")).unwrap().modified().unwrap();
    assert_eq!(before, after, "the quarantined file is not written again");
}

/// `--exit-zero-on-problems` (the CronJobs'): a run that set an object aside exits 0, and
/// the report and metrics still say 3, so a problem night is a successful Job whose
/// problems are alerted on, not a failed run.
#[test]
fn exit_zero_on_problems_keeps_the_report_honest() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("in")).unwrap();
    std::fs::write(dir.path().join("in/good.json"), "{}").unwrap();
    std::fs::write(dir.path().join("in/bad.json"), "not json").unwrap();
    std::fs::write(
        dir.path().join("p.yaml"),
        "version: 1\nname: t\nstores:\n  in: { url: file://./in }\n  out: { url: file://./out }\nnodes:\n  list: { kind: list, store: in }\n  fetch: { kind: fetch, input: list }\n  check: { kind: json_check, input: fetch }\n  write: { kind: put, input: check.ok, store: out, key: \"{{ name }}\" }\n  failed: { kind: put, input: check.failed, store: out, key: \"failed/{{ name }}\", with_reason: true }\n",
    )
    .unwrap();
    let plain = TestRun::new(dir.path(), "p.yaml").run();
    assert_eq!(plain.code(), Some(3), "{}", plain.stderr());
    let lenient = TestRun::new(dir.path(), "p.yaml").arg("--reprocess").arg("--exit-zero-on-problems").run();
    assert_eq!(lenient.code(), Some(0), "{}", lenient.stderr());
    assert_eq!(lenient.report["exit_code"], 3);
    assert!(lenient.stderr().contains("exiting 0 for a run with problems"), "{}", lenient.stderr());
}
