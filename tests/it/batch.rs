//! Records written together (`batch`): pipelines/examples/csv-ingest.yaml (FTP -> clamd
//! -> CSV rows -> filter -> NDJSON per day in S3) against vsftpd, clamd and s3s-fs, its
//! output read back row by row; and a batch pipeline on S3 killed with SIGKILL twice, at
//! points set by what it has written, then rerun: each record in exactly one object.

use crate::common::*;

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

const HEADER: &str = "A/C,FLIGHT,DATE,DEP,ARR,STATUS\n";

/// The rows of the NDJSON objects under `dir`, each as (object, row).
fn ndjson_rows(dir: &std::path::Path, prefix: &str) -> Vec<(String, serde_json::Value)> {
    let mut rows = Vec::new();
    for f in files_under(dir).into_iter().filter(|f| f.starts_with(prefix) && f.ends_with(".ndjson")) {
        for line in std::fs::read_to_string(dir.join(&f)).unwrap().lines() {
            rows.push((f.clone(), serde_json::from_str(line).unwrap()));
        }
    }
    rows
}

/// A node's entry in a run report.
#[test]
fn the_csv_ingest_example_writes_each_flown_row_once_into_its_days_ndjson_in_s3() {
    let clamd = Clamd::start("25M");
    let ftp = Vsftpd::start();
    let s3 = S3Server::start(&["internal"]);
    let dir = tempfile::tempdir().unwrap();
    let roll = |name: &str, rows: &str| std::fs::write(ftp.landing().join(name), format!("{HEADER}{rows}")).unwrap();
    roll("HOMEOFFICEROLL1_20261203.CSV", "BAW,BA117,2026-12-03,LHR,JFK,OK\nBAW,BA118,2026-12-03,JFK,LHR,CX\n");
    roll("HOMEOFFICEROLL2_20261203.CSV", "EZY,\"U2 101, late\",2026-12-03,LTN,AMS,OK\nEZY,\"U2\n");
    roll("homeofficeroll1_20261204.csv", "VIR,VS3,2026-12-04,LHR,JFK,OK\nVIR,VS4,2026-12-04,JFK,LHR,OK\n");
    infected_file(&ftp.landing().join("HOMEOFFICEROLL1_20261205.CSV"), 300);
    std::fs::write(ftp.landing().join("notes.txt"), "not a roll").unwrap();
    settle_files(&ftp.landing());
    let run = |report: &str| {
        TestRun::new(dir.path(), &repo().join("pipelines/examples/csv-ingest.yaml").to_string_lossy())
            .s3(&s3)
            .env("FTP_URL", &ftp.url())
            .env("FTP_PASSWORD", "dqpipe@example")
            .env("INTERNAL_URL", "s3://internal")
            .env("CLAMD_ADDRESS", &clamd.tcp())
            .report(report)
            .run()
    };
    let ran = run("r.json");
    assert_eq!(ran.code(), Some(3), "an infected roll and a bad row are problems: {}", ran.stderr());
    let bucket = s3.bucket_dir("internal");
    let mut by_day: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (object, row) in ndjson_rows(&bucket, "acl/") {
        let day = object.split('/').nth(1).unwrap().to_string();
        assert_eq!(row["DATE"], day.as_str(), "{object}: {row}");
        by_day.entry(day).or_default().push(row["FLIGHT"].as_str().unwrap().to_string());
    }
    for flights in by_day.values_mut() {
        flights.sort();
    }
    assert_eq!(
        by_day,
        BTreeMap::from([
            ("2026-12-03".to_string(), vec!["BA117".to_string(), "U2 101, late".to_string()]),
            ("2026-12-04".to_string(), vec!["VS3".to_string(), "VS4".to_string()]),
        ]),
        "every flown row once, under its roll's day; the cancelled one left out"
    );
    // Rows in the order they arrive: nodes work on several items at once.
    let rows = ndjson_rows(&bucket, "acl/2026-12-04/");
    let vs3 = rows.iter().map(|(_, r)| r).find(|r| r["FLIGHT"] == "VS3").unwrap();
    assert_eq!(
        *vs3,
        serde_json::json!({"A/C": "VIR", "FLIGHT": "VS3", "DATE": "2026-12-04", "DEP": "LHR", "ARR": "JFK", "STATUS": "OK"})
    );
    let objects: Vec<String> = files_under(&bucket).into_iter().filter(|f| f.starts_with("acl/")).collect();
    assert_eq!(objects.len(), 2, "one object per day: {objects:?}");
    let failed = dir.path().join("var/acl-failed");
    assert_eq!(files_under(&failed), ["HOMEOFFICEROLL2_20261203.CSV/3", "HOMEOFFICEROLL2_20261203.CSV/3.error.json"]);
    let bad = read_json(&failed.join("HOMEOFFICEROLL2_20261203.CSV/3.error.json"));
    assert!(bad["reason"].as_str().unwrap().contains("line 3"), "{bad}");
    let quarantined = read_json(&dir.path().join("var/acl-quarantine/HOMEOFFICEROLL1_20261205.CSV.error.json"));
    assert_eq!(quarantined["reason"], "infected: Local.EICAR.UNOFFICIAL", "{quarantined}");
    assert_eq!(files_under(&ftp.landing()).len(), 5, "the rolls stay on the server");
    assert_eq!(node(&ran.report, "daily")["counters"]["batches_written"], 2, "{}", ran.report["nodes"]);

    let again = run("again.json");
    assert_eq!(again.code(), Some(0), "{}", again.stderr());
    assert_eq!(again.report["items"]["from_sources"], 0, "{}", again.report["items"]);
    let after: Vec<String> = files_under(&bucket).into_iter().filter(|f| f.starts_with("acl/")).collect();
    assert_eq!(after, objects, "a rerun writes no batch again");
}

const KILLED: &str = r#"
version: 1
name: rows-killed
defaults: { s3: { endpoint: "${S3_ENDPOINT}" } }
stores:
  feeds: { url: "s3://feeds/incoming" }
  out: { url: "s3://out" }
nodes:
  list: { kind: list, store: feeds, resume: { store: out } }
  fetch: { kind: fetch, input: list }
  rows: { kind: records, input: fetch, format: csv }
  daily:
    kind: batch
    input: rows
    store: out
    key: "rows/{{ name[0:2] }}/{{ batch }}.ndjson"
    max_items: 7
  bad: { kind: put, input: rows.bad, store: out, key: "bad/{{ name }}/{{ record }}", with_reason: true }
"#;

/// Killed once a few batch objects are written, killed again later, then run to its end:
/// every record of every file is in exactly one batch object, whatever was durable when
/// each kill came (a batch written but its files not yet done-marked included).
#[test]
fn a_batch_killed_twice_then_rerun_holds_each_record_in_exactly_one_object() {
    let s3 = S3Server::start(&["feeds", "out"]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("p.yaml"), KILLED).unwrap();
    let incoming = s3.bucket_dir("feeds").join("incoming");
    std::fs::create_dir_all(&incoming).unwrap();
    let (files, rows) = (300, 5);
    for n in 0..files {
        let body: String = (0..rows).map(|r| format!("{n},{r}\n")).collect();
        std::fs::write(incoming.join(format!("{:02}_{n:04}.csv", n % 3)), format!("file,row\n{body}")).unwrap();
    }
    let run = || TestRun::new(dir.path(), "p.yaml").s3(&s3).arg("--concurrency").arg("1");
    let batches =
        |s3: &S3Server| files_under(&s3.bucket_dir("out")).into_iter().filter(|f| f.starts_with("rows/")).count();
    for kill_after in [3, 40] {
        let mut child = run().into_command().stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        // Wait for the event (that many batch objects written), not for a time.
        let deadline = Instant::now() + Duration::from_secs(120);
        while batches(&s3) < kill_after && Instant::now() < deadline && child.try_wait().unwrap().is_none() {
            std::thread::sleep(Duration::from_millis(2));
        }
        assert!(child.try_wait().unwrap().is_none(), "the run ended before it was killed: make the data set larger");
        child.kill().unwrap();
        child.wait().unwrap();
    }
    let ran = run().report("r.json").run();
    assert_eq!(ran.code(), Some(0), "{}", ran.stderr());
    let mut seen: BTreeMap<(String, String), usize> = BTreeMap::new();
    for (object, row) in ndjson_rows(&s3.bucket_dir("out"), "rows/") {
        let prefix = object.split('/').nth(1).unwrap();
        let file: usize = row["file"].as_str().unwrap().parse().unwrap();
        assert_eq!(prefix, format!("{:02}", file % 3), "{object}: {row}");
        *seen.entry((row["file"].to_string(), row["row"].to_string())).or_default() += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "records in more than one batch object: {twice:?}");
    assert_eq!(seen.len(), files * rows, "every record in a batch object");
    let counters = &node(&ran.report, "daily")["counters"];
    assert!(counters["batches_written"].as_u64().unwrap() < (files * rows) as u64, "{counters}");
}
