//! Fields from names and a LastModified window: the platform's re-partition job
//! (`PARSED_YYYYMMDD_HHMM_SSSS.zip` re-keyed under `dest/YYYY/MM/DD/`, the date taken from
//! the name), objects of the last week only, names that do not fit set aside. Real s3s-fs.

use crate::common::*;

use std::time::{Duration, SystemTime};

const REPARTITION: &str = r#"
version: 1
name: repartition
defaults:
  s3: { endpoint: "${S3_ENDPOINT}" }
stores:
  incoming: { url: "s3://data/incoming" }
  dest: { url: "s3://data/dest" }
  odd: { url: "s3://data/odd" }
nodes:
  list:
    kind: list
    store: incoming
    name_pattern: '^PARSED_(?P<year>\d{4})(?P<month>\d{2})(?P<day>\d{2})_\d{4}_\d{4}\.zip$'
    max_age: 7d
    resume: { store: dest }
  fetch: { kind: fetch, input: list }
  write: { kind: put, input: fetch, store: dest, key: "{{ year }}/{{ month }}/{{ day }}/{{ name }}" }
  odd_fetch: { kind: fetch, input: list.unmatched }
  odd: { kind: put, input: odd_fetch, store: odd, key: "{{ name }}" }
"#;

#[test]
fn names_give_fields_a_window_takes_the_last_week_and_odd_names_are_set_aside() {
    let s3 = S3Server::start(&["data"]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("repartition.yaml"), REPARTITION).unwrap();
    let incoming = s3.bucket_dir("data").join("incoming");
    std::fs::create_dir_all(&incoming).unwrap();
    let day = Duration::from_secs(24 * 3600);
    for (name, age) in [
        ("PARSED_20261201_0930_0001.zip", day),
        ("PARSED_20261202_1015_0002.zip", day * 2),
        ("PARSED_20261101_0800_0003.zip", day * 30),
        ("notes.txt", day),
    ] {
        std::fs::write(incoming.join(name), name).unwrap();
        let f = std::fs::File::options().write(true).open(incoming.join(name)).unwrap();
        f.set_modified(SystemTime::now() - age).unwrap();
    }
    let ran = TestRun::new(dir.path(), "repartition.yaml").s3(&s3).run();
    assert_eq!(ran.code(), Some(0), "{}", ran.stderr());
    let dest: Vec<String> =
        files_under(&s3.bucket_dir("data").join("dest")).into_iter().filter(|f| !f.starts_with("_dqpipe")).collect();
    assert_eq!(dest, ["2026/12/01/PARSED_20261201_0930_0001.zip", "2026/12/02/PARSED_20261202_1015_0002.zip"]);
    assert_eq!(files_under(&s3.bucket_dir("data").join("odd")), ["notes.txt"]);
    // The month-old object is outside the window: not listed, not written.
    assert_eq!(ran.report["items"]["from_sources"].as_u64(), Some(3), "{}", ran.report);

    // A template field no capture gives, and an unrouted `unmatched`: placed errors.
    for (from, to, says) in [
        ("{{ year }}/{{ month }}", "{{ yr }}/{{ month }}", "yr"),
        ("  odd_fetch: { kind: fetch, input: list.unmatched }\n  odd: { kind: put, input: odd_fetch, store: odd, key: \"{{ name }}\" }\n", "", "list.unmatched"),
        ("max_age: 7d", "max_age: a week", "not a duration"),
    ] {
        assert!(REPARTITION.contains(from), "{from}");
        std::fs::write(dir.path().join("broken.yaml"), REPARTITION.replace(from, to)).unwrap();
        let out = dqpipe(dir.path()).args(["validate", "broken.yaml"]).env("S3_ENDPOINT", s3.endpoint()).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{to}: {}", stderr(&out));
        assert!(stderr(&out).contains("broken.yaml:") && stderr(&out).contains(says), "{to}: {}", stderr(&out));
    }
    // `unmatched: drop` needs no route: the odd name is dropped, counted.
    let dropping = REPARTITION.replace("    max_age: 7d\n", "    max_age: 7d\n    unmatched: drop\n").replace(
        "  odd_fetch: { kind: fetch, input: list.unmatched }\n  odd: { kind: put, input: odd_fetch, store: odd, key: \"{{ name }}\" }\n",
        "",
    );
    std::fs::write(dir.path().join("dropping.yaml"), dropping).unwrap();
    let ran = TestRun::new(dir.path(), "dropping.yaml").s3(&s3).arg("--reprocess").run();
    assert_eq!(ran.code(), Some(0), "{}", ran.stderr());
    assert_eq!(ran.report["items"]["dropped"].as_u64(), Some(1), "{}", ran.report);
}

/// The ACL and OAG ingests key a run's files under the pod's clock:
/// `YYYY-MM-DD/HH:MM:SS.ffffff/<name>`, one folder per run; a format that is not strftime
/// is a placed error.
#[test]
fn a_run_writes_its_files_under_its_start_time() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("landing")).unwrap();
    for n in 1..=3 {
        std::fs::write(dir.path().join(format!("landing/HOMEOFFICEROLL{n}_20261203.CSV")), "a,b\n").unwrap();
    }
    let spec = |format: &str| {
        format!(
            "version: 1\nname: acl\nstores:\n  landing: {{ url: file://./landing }}\n  s3: {{ url: file://./out }}\nnodes:\n  list: {{ kind: list, store: landing, regex: '(?i)^HOMEOFFICEROLL\\d+_\\d{{8}}\\.CSV$' }}\n  fetch: {{ kind: fetch, input: list }}\n  write:\n    kind: put\n    input: fetch\n    store: s3\n    key: '{{{{ run_time | datetime(\"{format}\") }}}}/{{{{ name }}}}'\n"
        )
    };
    std::fs::write(dir.path().join("acl.yaml"), spec("%Y-%m-%d/%H:%M:%S%.6f")).unwrap();
    let ran = TestRun::new(dir.path(), "acl.yaml").run();
    assert_eq!(ran.code(), Some(0), "{}", ran.stderr());
    let written = files_under(&dir.path().join("out"));
    assert_eq!(written.len(), 3, "{written:?}");
    let folder = written[0].rsplit_once('/').unwrap().0.to_string();
    let (day, time) = folder.split_once('/').unwrap();
    assert!(day.len() == 10 && day.as_bytes()[4] == b'-' && day.starts_with("20"), "{folder}");
    assert!(
        time.len() == 15 && time.as_bytes()[8] == b'.' && time[9..].chars().all(|c| c.is_ascii_digit()),
        "{folder}"
    );
    assert!(written.iter().all(|f| f.starts_with(&format!("{folder}/HOMEOFFICEROLL"))), "one folder: {written:?}");

    std::fs::write(dir.path().join("bad.yaml"), spec("%Y-%m-%d/%H:%Q")).unwrap();
    let out = dqpipe(dir.path()).args(["validate", "bad.yaml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("bad.yaml:13:") && stderr(&out).contains("not a strftime format"),
        "{}",
        stderr(&out)
    );
}
