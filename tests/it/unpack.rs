//! Archives as items: the S4 suite's zips of XML (and a tar.gz) unpacked, each member
//! written; hostile archives (a zip bomb, a `../` member, 100,000 empty members) routed
//! as problems before any member goes on. Local folders; archives built by the test.

use crate::common::*;

use std::io::Write;
use std::path::Path;

const SPEC: &str = r#"
version: 1
name: s4-unpack
stores:
  landing: { url: "file://./landing" }
  xml: { url: "file://./xml" }
  failed: { url: "file://./failed" }
nodes:
  list: { kind: list, store: landing, resume: { store: xml } }
  fetch: { kind: fetch, input: list }
  members: { kind: unpack, input: fetch }
  write: { kind: put, input: members, store: xml, key: "{{ archive_key }}/{{ member }}" }
  failed: { kind: put, input: members.failed, store: failed, key: "{{ name }}", with_reason: true }
"#;

/// A zip of `members` (path, bytes), deflated.
fn zip_of(path: &Path, members: &[(&str, Vec<u8>)]) {
    let mut z = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    for (name, bytes) in members {
        z.start_file(*name, opts).unwrap();
        z.write_all(bytes).unwrap();
    }
    z.finish().unwrap();
}

#[test]
fn archives_become_their_members_and_hostile_ones_are_refused_whole() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("s4.yaml"), SPEC).unwrap();
    let landing = dir.path().join("landing");
    std::fs::create_dir_all(&landing).unwrap();
    let xml = |n: u32| format!("<APIData><Flight n=\"{n}\"/></APIData>\n").into_bytes();
    zip_of(
        &landing.join("PARSED_20261203_0930_0001.zip"),
        &[("a/1.xml", xml(1)), ("a/2.xml", xml(2)), ("b/1.xml", xml(3))],
    );
    let mut tgz = tar::Builder::new(flate2::write::GzEncoder::new(
        std::fs::File::create(landing.join("RAW_20261203_0930_0002.tar.gz")).unwrap(),
        flate2::Compression::default(),
    ));
    for (name, bytes) in [("x.xml", xml(4)), ("y.xml", xml(5))] {
        let mut h = tar::Header::new_gnu();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tgz.append_data(&mut h, name, bytes.as_slice()).unwrap();
    }
    tgz.into_inner().unwrap().finish().unwrap();
    // Hostile: 20 MB of zeros (a ratio of about 1,000), a member outside the archive, and
    // 100,000 empty members.
    zip_of(&landing.join("bomb.zip"), &[("zeros.xml", vec![0u8; 20 << 20])]);
    zip_of(&landing.join("escape.zip"), &[("ok.xml", xml(6)), ("../../escape.xml", xml(7))]);
    let many: Vec<(String, Vec<u8>)> = (0..100_000).map(|n| (format!("e/{n}.xml"), Vec::new())).collect();
    let many: Vec<(&str, Vec<u8>)> = many.iter().map(|(n, b)| (n.as_str(), b.clone())).collect();
    zip_of(&landing.join("many.zip"), &many);

    let ran = TestRun::new(dir.path(), "s4.yaml").run();
    assert_eq!(ran.code(), Some(3), "hostile archives are problems: {}", ran.stderr());
    let written: Vec<String> =
        files_under(&dir.path().join("xml")).into_iter().filter(|f| !f.starts_with("_dqpipe")).collect();
    assert_eq!(
        written,
        [
            "PARSED_20261203_0930_0001.zip/a/1.xml",
            "PARSED_20261203_0930_0001.zip/a/2.xml",
            "PARSED_20261203_0930_0001.zip/b/1.xml",
            "RAW_20261203_0930_0002.tar.gz/x.xml",
            "RAW_20261203_0930_0002.tar.gz/y.xml",
        ],
        "no member of a hostile archive went on"
    );
    assert_eq!(std::fs::read(dir.path().join("xml/RAW_20261203_0930_0002.tar.gz/y.xml")).unwrap(), xml(5));
    assert!(!dir.path().join("escape.xml").exists() && !dir.path().join("xml/escape.xml").exists());
    let reason = |name: &str| read_json(&dir.path().join(format!("failed/{name}.error.json")))["reason"].to_string();
    assert!(reason("bomb.zip").contains("max_ratio"), "{}", reason("bomb.zip"));
    assert!(reason("escape.zip").contains("not a relative path inside the archive"), "{}", reason("escape.zip"));
    assert!(reason("many.zip").contains("max_members (10000)"), "{}", reason("many.zip"));
    let items = &ran.report["items"];
    assert_eq!((items["complete"].as_u64(), items["problems"].as_u64()), (Some(5), Some(3)), "{}", ran.report);

    // Each archive is one object: done once its members are written; the rerun skips all.
    let rerun = TestRun::new(dir.path(), "s4.yaml").run();
    assert_eq!(rerun.report["items"]["skipped_done"].as_u64(), Some(5), "{}", rerun.report);
}

/// `name_pattern` on members, as on listed names: captures become fields for the key; a
/// member whose name does not match goes out of `unmatched` (routed here to its own
/// folder, never lost), and with `unmatched: drop` it is dropped, counted.
#[test]
fn member_names_give_fields_and_the_unmatched_are_routed_or_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let landing = dir.path().join("landing");
    std::fs::create_dir_all(&landing).unwrap();
    zip_of(
        &landing.join("feed.zip"),
        &[
            ("in/report_20261203.xml", b"<a/>".to_vec()),
            ("in/report_20261204.xml", b"<b/>".to_vec()),
            ("README.txt", b"notes".to_vec()),
        ],
    );
    let spec = |unmatched: &str, extra: &str| {
        format!(
            "version: 1\nname: t\nstores:\n  landing: {{ url: file://./landing }}\n  out: {{ url: file://./out }}\nnodes:\n  list: {{ kind: list, store: landing }}\n  fetch: {{ kind: fetch, input: list }}\n  members: {{ kind: unpack, input: fetch, name_pattern: '^report_(?P<day>\\d{{8}})\\.xml$', unmatched: {unmatched} }}\n  write: {{ kind: put, input: members, store: out, key: \"{{{{ day }}}}/{{{{ name }}}}\" }}\n  failed: {{ kind: put, input: members.failed, store: out, key: \"failed/{{{{ name }}}}\", with_reason: true }}\n{extra}"
        )
    };
    let routed =
        spec("route", "  odd: { kind: put, input: members.unmatched, store: out, key: \"unmatched/{{ member }}\" }\n");
    std::fs::write(dir.path().join("p.yaml"), routed).unwrap();
    let ran = TestRun::new(dir.path(), "p.yaml").run();
    assert_eq!(ran.code(), Some(0), "{}", ran.stderr());
    assert_eq!(
        files_under(&dir.path().join("out")),
        ["20261203/report_20261203.xml", "20261204/report_20261204.xml", "unmatched/README.txt"]
    );
    // Unrouted, `unmatched: route` is refused by validate; `drop` drops them.
    std::fs::write(dir.path().join("p.yaml"), spec("route", "")).unwrap();
    let out = dqpipe(dir.path()).args(["validate", "p.yaml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("unmatched"), "{}", stderr(&out));
    std::fs::remove_dir_all(dir.path().join("out")).unwrap();
    std::fs::write(dir.path().join("p.yaml"), spec("drop", "")).unwrap();
    let ran = TestRun::new(dir.path(), "p.yaml").run();
    assert_eq!(ran.code(), Some(0), "{}", ran.stderr());
    assert_eq!(files_under(&dir.path().join("out")), ["20261203/report_20261203.xml", "20261204/report_20261204.xml"]);
}

/// pipelines/examples/zip-index.yaml against clamd and s3s-fs: each readable archive is
/// indexed (one CSV, a row per XML member: name, GUID, size, carrier) and copied under
/// the date in its name; hostile archives (a `../` member, a zip bomb, 100,000 empty
/// members) and an infected one each end as a routed problem with nothing of them copied
/// or indexed; every handled archive leaves the landing folder; a rerun does nothing.
#[test]
fn the_zip_index_example_indexes_and_copies_whole_archives_and_routes_hostile_ones() {
    let clamd = Clamd::start("25M");
    let s3 = S3Server::start(&["internal"]);
    let dir = tempfile::tempdir().unwrap();
    let landing = dir.path().join("var/s4-landing");
    std::fs::create_dir_all(&landing).unwrap();
    let xml = |carrier: &str| format!("<APIData><Flight carrier=\"{carrier}\"/><Flight carrier=\"X\"/></APIData>");
    let good = landing.join("RAW_20261203_0930_0001.zip");
    zip_of(
        &good,
        &[
            ("0A1B-0001.xml", xml("BAW").into_bytes()),
            ("0A1B-0002.xml", xml("EZY").into_bytes()),
            ("sub/0A1B-0003.xml", b"<APIData/>".to_vec()),
            ("readme.txt", b"not indexed".to_vec()),
        ],
    );
    let good_bytes = std::fs::read(&good).unwrap();
    zip_of(&landing.join("RAW_20261203_0930_0002.zip"), &[("../../escape.xml", xml("BAW").into_bytes())]);
    zip_of(&landing.join("RAW_20261204_1200_0003.zip"), &[("zeros.xml", vec![b' '; 20 << 20])]);
    let many: Vec<(String, Vec<u8>)> = (0..100_000).map(|n| (format!("e/{n}.xml"), Vec::new())).collect();
    let many: Vec<(&str, Vec<u8>)> = many.iter().map(|(n, b)| (n.as_str(), b.clone())).collect();
    zip_of(&landing.join("RAW_20261204_1200_0004.zip"), &many);
    let eicar = dqpipe_plugins::clamav::eicar().into_bytes();
    zip_of(&landing.join("RAW_20261205_0000_0005.zip"), &[("0A1B-0005.xml", eicar)]);
    std::fs::write(landing.join("PARSED_20261203_0930_0001.zip"), "another stage").unwrap();
    let run = |report: &str| {
        TestRun::new(dir.path(), &repo().join("pipelines/examples/zip-index.yaml").to_string_lossy())
            .s3(&s3)
            .env("INTERNAL_URL", "s3://internal")
            .env("CLAMD_ADDRESS", &clamd.tcp())
            .report(report)
            .run()
    };
    let ran = run("r.json");
    assert_eq!(ran.code(), Some(3), "{}", ran.stderr());
    let bucket = s3.bucket_dir("internal");
    let written: Vec<String> = files_under(&bucket).into_iter().filter(|f| f.starts_with("s4/")).collect();
    assert_eq!(written.len(), 2, "one index and one copy: {written:?}");
    assert_eq!(std::fs::read(bucket.join("s4/raw/2026/12/03/RAW_20261203_0930_0001.zip")).unwrap(), good_bytes);
    let index = written.iter().find(|f| f.starts_with("s4/index/RAW_20261203_0930_0001.zip/")).unwrap();
    let text = std::fs::read_to_string(bucket.join(index)).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.remove(0), "member,guid,member_size,carrier");
    lines.sort();
    let size = xml("BAW").len();
    assert_eq!(
        lines,
        [
            format!("0A1B-0001.xml,0A1B-0001,{size},BAW"),
            format!("0A1B-0002.xml,0A1B-0002,{size},EZY"),
            "sub/0A1B-0003.xml,0A1B-0003,10,".to_string()
        ],
        "a row per XML member, each once"
    );
    let reason = |path: &str| read_json(&dir.path().join(path))["reason"].as_str().unwrap_or_default().to_string();
    let escape = reason("var/s4-failed/RAW_20261203_0930_0002.zip.error.json");
    assert!(escape.contains("not a relative path inside the archive"), "{escape}");
    // ClamAV stops at its own MaxFiles (10,000) first: with AlertExceedsMax that is a
    // problem (`scan.error`, quarantined), never a clean archive unpack would read.
    let many = reason("var/s4-quarantine/RAW_20261204_1200_0004.zip.error.json");
    assert!(many.contains("MaxFiles"), "{many}");
    let bomb = reason("var/s4-failed/RAW_20261204_1200_0003.zip.error.json");
    assert!(bomb.contains("max_ratio"), "{bomb}");
    let infected = reason("var/s4-quarantine/RAW_20261205_0000_0005.zip.error.json");
    assert!(infected.contains("EICAR"), "{infected}");
    assert_eq!(files_under(&landing), ["PARSED_20261203_0930_0001.zip"], "handled archives moved, others left");
    let again = run("again.json");
    assert_eq!(again.code(), Some(0), "{}", again.stderr());
    let items = &again.report["items"];
    assert_eq!(
        (items["from_sources"].as_u64(), items["dropped"].as_u64()),
        (Some(1), Some(1)),
        "only the other stage's name: {items}"
    );
    let after: Vec<String> = files_under(&bucket).into_iter().filter(|f| f.starts_with("s4/")).collect();
    assert_eq!(after, written, "nothing written again");
}

const SIZES: &str = r#"
version: 1
name: zip-sizes
stores:
  landing: { url: "file://./landing" }
  out: { url: "file://./out" }
nodes:
  list: { kind: list, store: landing }
  fetch: { kind: fetch, input: list }
  members: { kind: unpack, input: fetch, max_members: 20000, max_bytes: 2000000000 }
  sizes:
    kind: batch
    input: members
    store: out
    key: "sizes/{{ archive_key }}/{{ batch }}.json"
    format: summary
    rows: metadata
    sum: [member_size]
  failed: { kind: put, input: members.failed, store: out, key: "failed/{{ name }}", with_reason: true }
"#;

/// A 1 GB zip of 10,000 members of 100 kB, unpacked and summed (a `batch` summary: the
/// count of members and the sum of their sizes), within the byte budget of the run.
#[test]
fn a_1_gb_zip_of_small_members_is_unpacked_within_the_byte_budget() {
    let (members, size) = (10_000usize, 100_000usize);
    let peak = |count: usize| {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("p.yaml"), SIZES).unwrap();
        std::fs::create_dir_all(dir.path().join("landing")).unwrap();
        let file = std::fs::File::create(dir.path().join("landing/big.zip")).unwrap();
        let mut z = zip::ZipWriter::new(std::io::BufWriter::new(file));
        let stored = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
        let body: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        for n in 0..count {
            z.start_file(format!("m/{n:05}.xml"), stored).unwrap();
            z.write_all(&body).unwrap();
        }
        z.finish().unwrap();
        let ran = TestRun::new(dir.path(), "p.yaml").report("r.json").run();
        assert_eq!(ran.code(), Some(0), "{}", ran.stderr());
        let written: Vec<String> = files_under(&dir.path().join("out"));
        assert_eq!(written.len(), 1, "{written:?}");
        let summary = read_json(&dir.path().join("out").join(&written[0]));
        assert_eq!(summary, serde_json::json!({"count": count, "sum": {"member_size": count * size}}));
        ran.report["peak_rss_bytes"].as_u64().expect("peak memory in the report")
    };
    let control = peak(10);
    let big = peak(members);
    // What the run may hold is its byte budget (`max_bytes_in_flight`, 64 MiB by default).
    // The zip itself (1 GB) is spooled to disk by `fetch` and read from there; in memory
    // are at most the members between nodes: 2 between unpack's reader and the node, 64
    // in the channel to `sizes` (`channel_capacity`), 8 in `sizes` (its concurrency):
    // 74 x 100 kB = 7.4 MB, and the held items (10,000 x about 1 kB = 10 MB). Reading the
    // archive whole would add 1,000 MB.
    let budget = 64 << 20;
    eprintln!("peak memory: {big} B for the 1 GB zip, {control} B for 10 members");
    assert!(big < control + budget, "peak {big} B for the 1 GB zip, {control} B for a small one");
}
