//! Records: the ACL feed's CSV read into JSON records, filtered, written one per record,
//! with a bad row set aside by line; NDJSON as one document; XML elements as records.
//! Local folders.

use crate::common::*;

const ACL: &str = r#"
version: 1
name: acl-records
stores:
  landing: { url: "file://./landing" }
  out: { url: "file://./out" }
  failed: { url: "file://./failed" }
nodes:
  list: { kind: list, store: landing, suffix: ".CSV", resume: { store: out } }
  fetch: { kind: fetch, input: list }
  rows: { kind: records, input: fetch, format: csv }
  baw: { kind: filter, input: rows, predicate: '.carrier == "BAW"' }
  write: { kind: put, input: baw, store: out, key: "{{ name }}/{{ record }}.json" }
  bad: { kind: put, input: rows.bad, store: failed, key: "{{ name }}/{{ record }}", with_reason: true }
"#;

#[test]
fn csv_rows_become_records_and_a_bad_row_is_set_aside_by_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("acl.yaml"), ACL).unwrap();
    std::fs::create_dir_all(dir.path().join("landing")).unwrap();
    std::fs::write(
        dir.path().join("landing/HOMEOFFICEROLL1_20261203.CSV"),
        "carrier,flight,\"dep, arr\"\nBAW,123,\"LHR, JFK\"\nEZY,45,\"LGW, NCE\"\nBAW,9\nBAW,777,\"LHR, SIN\"\n",
    )
    .unwrap();
    let ran = TestRun::new(dir.path(), "acl.yaml").run();
    assert_eq!(ran.code(), Some(3), "a bad row is a problem: {}", ran.stderr());
    let name = "HOMEOFFICEROLL1_20261203.CSV";
    let written: Vec<String> =
        files_under(&dir.path().join("out")).into_iter().filter(|f| !f.starts_with("_dqpipe")).collect();
    assert_eq!(written, [format!("{name}/2.json"), format!("{name}/5.json")]);
    let record = read_json(&dir.path().join(format!("out/{name}/5.json")));
    assert_eq!(record, serde_json::json!({"carrier": "BAW", "flight": "777", "dep, arr": "LHR, SIN"}));
    let reason = read_json(&dir.path().join(format!("failed/{name}/4.error.json")));
    assert!(reason["reason"].as_str().unwrap().contains("line 4: 2 fields, the header has 3"), "{reason}");
    assert_eq!(std::fs::read_to_string(dir.path().join(format!("failed/{name}/4"))).unwrap(), "BAW,9");
    // One object, done once: the dropped EZY row and the bad row included.
    let items = &ran.report["items"];
    assert_eq!((items["complete"].as_u64(), items["problems"].as_u64()), (Some(1), Some(1)), "{}", ran.report);
    let rerun = TestRun::new(dir.path(), "acl.yaml").run();
    assert_eq!(rerun.report["items"]["skipped_done"].as_u64(), Some(1), "{}", rerun.report);
}

#[test]
fn ndjson_becomes_one_document_and_a_line_that_is_not_json_is_bad() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("in")).unwrap();
    std::fs::write(dir.path().join("in/events.jsonl"), "{\"n\": 1}\n\n{\"n\": 2}\nnot json\n[3]\n").unwrap();
    std::fs::write(
        dir.path().join("p.yaml"),
        "version: 1\nname: t\nstores:\n  in: { url: file://./in }\n  out: { url: file://./out }\nnodes:\n  list: { kind: list, store: in }\n  fetch: { kind: fetch, input: list }\n  doc: { kind: records, input: fetch, format: ndjson, output: document }\n  write: { kind: put, input: doc, store: out, key: \"{{ name }}.json\" }\n  bad: { kind: put, input: doc.bad, store: out, key: \"bad/{{ record }}\", with_reason: true }\n",
    )
    .unwrap();
    let ran = TestRun::new(dir.path(), "p.yaml").run();
    assert_eq!(ran.code(), Some(3), "{}", ran.stderr());
    assert_eq!(read_json(&dir.path().join("out/events.jsonl.json")), serde_json::json!([{"n": 1}, {"n": 2}, [3]]));
    assert_eq!(std::fs::read_to_string(dir.path().join("out/bad/4")).unwrap(), "not json");
}

/// XML records (issue 30.3): each `Flight` element of an OAG-style schedule becomes one
/// JSON item, routed by content; a document cut short sends its object to `bad` after the
/// flights before the cut went on.
#[test]
fn xml_elements_become_records_routed_by_content() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("in")).unwrap();
    std::fs::write(
        dir.path().join("in/FIMSSR_20220128.xml"),
        "<?xml version=\"1.0\"?>\n<FIMSSR><Flight n=\"1\"><Carrier>BAW</Carrier><Leg>LHR</Leg><Leg>JFK</Leg></Flight>\n<Flight n=\"2\"><Carrier>EZY</Carrier><Leg>LGW</Leg></Flight>\n<Flight n=\"3\"><Carrier>BAW</Carrier><Note>A &amp; B</Note></Flight></FIMSSR>\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("in/FIMSSR_20220129.xml"),
        "<FIMSSR><Flight n=\"1\"><Carrier>BAW</Carrier></Flight><Flight>",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("p.yaml"),
        "version: 1\nname: t\nstores:\n  in: { url: file://./in }\n  out: { url: file://./out }\n  failed: { url: file://./failed }\nnodes:\n  list: { kind: list, store: in }\n  fetch: { kind: fetch, input: list }\n  flights: { kind: records, input: fetch, format: xml, xml: { record: Flight } }\n  by_carrier:\n    kind: route\n    input: flights\n    routes: { baw: '.Carrier == \"BAW\"' }\n  baw: { kind: put, input: by_carrier.baw, store: out, key: \"baw/{{ name }}/{{ record }}.json\" }\n  other: { kind: put, input: by_carrier.else, store: out, key: \"other/{{ name }}/{{ record }}.json\" }\n  bad: { kind: put, input: flights.bad, store: failed, key: \"{{ name }}\", with_reason: true }\n",
    )
    .unwrap();
    let ran = TestRun::new(dir.path(), "p.yaml").run();
    assert_eq!(ran.code(), Some(3), "the cut document is a problem: {}", ran.stderr());
    assert_eq!(
        files_under(&dir.path().join("out")),
        [
            "baw/FIMSSR_20220128.xml/1.json",
            "baw/FIMSSR_20220128.xml/3.json",
            "baw/FIMSSR_20220129.xml/1.json",
            "other/FIMSSR_20220128.xml/2.json"
        ]
    );
    let first = read_json(&dir.path().join("out/baw/FIMSSR_20220128.xml/1.json"));
    assert_eq!(first, serde_json::json!({"@n": "1", "Carrier": "BAW", "Leg": ["LHR", "JFK"]}));
    let third = read_json(&dir.path().join("out/baw/FIMSSR_20220128.xml/3.json"));
    assert_eq!(third, serde_json::json!({"@n": "3", "Carrier": "BAW", "Note": "A & B"}));
    let reason = read_json(&dir.path().join("failed/FIMSSR_20220129.xml.error.json"));
    assert!(reason["reason"].as_str().unwrap().contains("not closed"), "{reason}");
}

/// `fetch` with `decode: gzip` reads a plain `.gz` feed as its content; an object that is
/// not gzip is refused, left at its source (exit 3).
#[test]
fn fetch_decodes_gzip_on_read() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("in")).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(b"{\"n\": 1}\n{\"n\": 2}\n").unwrap();
    std::fs::write(dir.path().join("in/day.jsonl.gz"), gz.finish().unwrap()).unwrap();
    std::fs::write(dir.path().join("in/plain.jsonl.gz"), "{\"n\": 3}\n").unwrap();
    std::fs::write(
        dir.path().join("p.yaml"),
        "version: 1\nname: t\nstores:\n  in: { url: file://./in }\n  out: { url: file://./out }\nnodes:\n  list: { kind: list, store: in }\n  fetch: { kind: fetch, input: list, decode: gzip }\n  doc: { kind: records, input: fetch, format: ndjson, output: document }\n  write: { kind: put, input: doc, store: out, key: \"{{ name }}.json\" }\n  bad: { kind: put, input: doc.bad, store: out, key: \"bad/{{ record }}\", with_reason: true }\n",
    )
    .unwrap();
    let ran = TestRun::new(dir.path(), "p.yaml").run();
    assert_eq!(ran.code(), Some(3), "{}", ran.stderr());
    assert_eq!(read_json(&dir.path().join("out/day.jsonl.gz.json")), serde_json::json!([{"n": 1}, {"n": 2}]));
    let failures = ran.report["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 1, "{}", ran.report);
    assert!(
        failures[0]["reason"].as_str().unwrap().contains("not gzip") && failures[0]["permanent"] == true,
        "{}",
        ran.report
    );
}

/// A CSV line that never ends (1 MiB, past `max_record_bytes: 4096`) stops the reading
/// there: the rows before it are records, and the object leaves by `bad` with the reason,
/// instead of the row growing in memory.
#[test]
fn a_record_longer_than_max_record_bytes_stops_the_reading_there() {
    let dir = tempfile::tempdir().unwrap();
    let spec = ACL.replace("format: csv }", "format: csv, max_record_bytes: 4096 }");
    std::fs::write(dir.path().join("acl.yaml"), spec).unwrap();
    std::fs::create_dir_all(dir.path().join("landing")).unwrap();
    let name = "HOMEOFFICEROLL2_20261204.CSV";
    let mut file = b"carrier,flight,route\nBAW,1,LHR\nBAW,2,LGW\n".to_vec();
    file.extend(std::iter::repeat_n(b'x', 1 << 20));
    std::fs::write(dir.path().join("landing").join(name), &file).unwrap();
    let ran = TestRun::new(dir.path(), "acl.yaml").run();
    assert_eq!(ran.code(), Some(3), "{}", ran.stderr());
    let written: Vec<String> =
        files_under(&dir.path().join("out")).into_iter().filter(|f| !f.starts_with("_dqpipe")).collect();
    assert_eq!(written, [format!("{name}/2.json"), format!("{name}/3.json")]);
    let reason = read_json(&dir.path().join(format!("failed/{name}/0.error.json")));
    let reason = reason["reason"].as_str().unwrap();
    assert!(reason.contains("longer than max_record_bytes (4096 bytes) from byte 41"), "{reason}");
}
