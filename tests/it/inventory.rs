//! S3 Inventory as a `list` node's listing: a generated report of 1,000,000 rows in 10
//! gzip-compressed CSV files, over an archive that holds only a few of those objects.

use std::io::Write;

use crate::common::*;

const ROWS: usize = 1_000_000;
const FILES: usize = 10;
/// Objects that exist in the archive, listed in the inventory under `small/`.
const REAL: usize = 30;

/// `inventory/manifest.json` and its data files, and `archive/small/o*.json`: the report
/// lists the real objects first, then `big/k*.json` objects that do not exist.
fn inventory(dir: &std::path::Path) {
    std::fs::create_dir_all(dir.join("archive/small")).unwrap();
    std::fs::create_dir_all(dir.join("inventory/data")).unwrap();
    for i in 0..REAL {
        std::fs::write(dir.join(format!("archive/small/o{i}.json")), format!("{{\"i\":{i}}}")).unwrap();
    }
    let per_file = ROWS / FILES;
    let mut files = Vec::new();
    for f in 0..FILES {
        let name = format!("data/{f}.csv.gz");
        let out = std::fs::File::create(dir.join("inventory").join(&name)).unwrap();
        let mut gz = flate2::write::GzEncoder::new(std::io::BufWriter::new(out), flate2::Compression::fast());
        for r in f * per_file..(f + 1) * per_file {
            let (key, size) = if r < REAL {
                (format!("small/o{r}.json"), format!("{{\"i\":{r}}}").len())
            } else {
                (format!("big/k{r:07}.json"), 100)
            };
            writeln!(gz, "\"archive\",\"{key}\",\"{size}\",\"2026-11-28T01:00:00.000Z\",\"\"").unwrap();
        }
        gz.finish().unwrap().flush().unwrap();
        files.push(serde_json::json!({"key": name, "size": 1, "MD5checksum": "-"}));
    }
    let manifest = serde_json::json!({
        "sourceBucket": "archive", "destinationBucket": "arn:aws:s3:::inventory", "version": "2016-11-30",
        "fileFormat": "CSV", "fileSchema": "Bucket, Key, Size, LastModifiedDate, ETag", "files": files,
    });
    std::fs::write(dir.join("inventory/manifest.json"), manifest.to_string()).unwrap();
}

fn spec(dir: &std::path::Path, filter: &str) {
    let spec = format!(
        "version: 1\nname: inv\nstores:\n  archive: {{ url: \"file://./archive\" }}\n  inventory: {{ url: \"file://./inventory\" }}\n  out: {{ url: \"file://./out\" }}\nnodes:\n  list: {{ kind: list, store: archive, {filter} inventory: {{ store: inventory, manifest: manifest.json }} }}\n  fetch: {{ kind: fetch, input: list, retry: {{ attempts: 1 }} }}\n  write: {{ kind: put, input: fetch, store: out, key: \"{{{{ key }}}}\" }}\n"
    );
    std::fs::write(dir.join("p.yaml"), spec).unwrap();
}

#[test]
fn a_run_reads_the_inventory_instead_of_listing() {
    let dir = tempfile::tempdir().unwrap();
    inventory(dir.path());
    spec(dir.path(), "prefix: small/,");
    let plan = dqpipe(dir.path()).args(["plan", "p.yaml"]).output().unwrap();
    assert!(plan.status.success(), "{}", stderr(&plan));
    assert!(stdout(&plan).contains("Plan: 30 objects to process"), "{}", stdout(&plan));
    let ran = TestRun::new(dir.path(), "p.yaml").run();
    assert_eq!(ran.code(), Some(0), "{}", ran.stderr());
    assert_eq!(files_under(&dir.path().join("out/small")).len(), REAL);
    assert_eq!(ran.report["items"]["from_sources"], REAL as u64);
    assert!(ran.stderr().contains("inventory data files to read files=10 of=10"), "{}", ran.stderr());
}

/// Four shards: each reads only its data files (file i is shard i % 4's), together they
/// take every object once.
#[test]
fn each_shard_reads_only_its_share_of_the_data_files() {
    let dir = tempfile::tempdir().unwrap();
    inventory(dir.path());
    // The real objects spread over every data file: regex on the name, the whole report read.
    spec(dir.path(), "regex: '^(o\\d+|k00\\d0000)\\.json$',");
    let mut taken = 0;
    for (shard, files) in [(0, 3), (1, 3), (2, 2), (3, 2)] {
        let ran = TestRun::new(dir.path(), "p.yaml").arg(&format!("--shard={shard}/4")).run();
        assert!(
            ran.stderr().contains(&format!("inventory data files to read files={files} of=10")),
            "{}",
            ran.stderr()
        );
        taken += ran.report["items"]["from_sources"].as_u64().unwrap();
    }
    // 30 real objects (all in file 0) and the `k00N0000` rows, one per file from the
    // second on (row 0 of file 0 is `small/o0`).
    assert_eq!(taken, (REAL + FILES - 1) as u64);
    assert_eq!(files_under(&dir.path().join("out/small")).len(), REAL);
}

/// Objects the report names but the archive no longer holds fail alone, reported with the
/// reason; the others are processed.
#[test]
fn objects_gone_since_the_report_are_reported_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    inventory(dir.path());
    spec(dir.path(), "regex: '^(o\\d+|k00\\d0000)\\.json$',");
    let ran = TestRun::new(dir.path(), "p.yaml").run();
    assert_eq!(files_under(&dir.path().join("out/small")).len(), REAL, "{}", ran.stderr());
    let failures = ran.report["failures"].as_array().unwrap();
    assert_eq!(failures.len(), FILES - 1, "{failures:?}");
    assert!(failures.iter().all(|f| f["reason"].as_str().unwrap().contains("not found")), "{failures:?}");
    assert_ne!(ran.code(), Some(0));
    assert_ne!(ran.code(), Some(1), "the run ran: {}", ran.stderr());
}

/// The report in S3 behind a proxy that answers the first GET of each data file `503
/// SlowDown`: the data files are read again after a moment, as any other request is, and
/// every object of the report is taken in one run.
#[test]
fn a_data_file_refused_for_a_moment_is_read_again() {
    let s3 = S3Server::start(&["archive", "inventory"]);
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for f in 0..3 {
        let name = format!("data/{f}.csv.gz");
        let path = s3.bucket_dir("inventory").join(&name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let mut gz = flate2::write::GzEncoder::new(std::fs::File::create(path).unwrap(), flate2::Compression::fast());
        for r in 0..4 {
            let key = format!("o{f}{r}.json");
            std::fs::write(s3.bucket_dir("archive").join(&key), format!("{{\"r\":{r}}}")).unwrap();
            writeln!(gz, "\"archive\",\"{key}\",\"7\",\"2026-11-28T01:00:00.000Z\",\"\"").unwrap();
        }
        gz.finish().unwrap();
        files.push(serde_json::json!({"key": name, "size": 1, "MD5checksum": "-"}));
    }
    let manifest = serde_json::json!({"sourceBucket": "archive", "destinationBucket": "arn:aws:s3:::inventory",
        "version": "2016-11-30", "fileFormat": "CSV", "fileSchema": "Bucket, Key, Size, LastModifiedDate, ETag",
        "files": files});
    std::fs::write(s3.bucket_dir("inventory").join("manifest.json"), manifest.to_string()).unwrap();
    let proxy = HttpProxy::slowing_first(s3.port, "GET", |target| target.contains("/data/"));
    let spec = "version: 1\nname: inv\ndefaults: { s3: { endpoint: \"${S3_ENDPOINT}\" } }\nstores:\n  archive: { url: \"s3://archive\" }\n  inventory: { url: \"s3://inventory\" }\n  out: { url: \"file://./out\" }\nnodes:\n  list: { kind: list, store: archive, inventory: { store: inventory, manifest: manifest.json } }\n  fetch: { kind: fetch, input: list }\n  write: { kind: put, input: fetch, store: out, key: \"{{ key }}\" }\n";
    std::fs::write(dir.path().join("p.yaml"), spec).unwrap();
    let ran = TestRun::new(dir.path(), "p.yaml")
        .s3(&s3)
        .env("S3_ENDPOINT", &format!("http://127.0.0.1:{}", proxy.port))
        .run();
    assert_eq!(ran.code(), Some(0), "{}", ran.stderr());
    assert_eq!(proxy.altered(), 3, "each data file's first GET was refused");
    assert_eq!(files_under(&dir.path().join("out")).len(), 12);
    assert_eq!(std::fs::read_to_string(dir.path().join("out/o21.json")).unwrap(), "{\"r\":1}");
}
