//! Adaptive concurrency on real servers: s3s-fs behind a proxy that is far away and
//! throttles PUTs as an S3 prefix does (`503 SlowDown` over a rate).

use super::common::*;
use std::time::Duration;

const SPEC: &str = r#"
version: 1
name: far-copy
defaults: { concurrency: 8, s3: { endpoint: "${S3_ENDPOINT}" } }
stores:
  src: { url: "s3://feeds" }
  dst: { url: "s3://out", s3: { endpoint: "${FAR_ENDPOINT}" } }
nodes:
  list: { kind: list, store: src, prefix: "${PREFIX}" }
  fetch: { kind: fetch, input: list }
  write: { kind: put, input: fetch, store: dst, key: "{{ key }}" }
"#;

/// `files` small files under `prefix` of bucket `feeds`.
fn feed(s3: &S3Server, prefix: &str, files: usize) {
    let incoming = s3.bucket_dir("feeds").join(prefix);
    std::fs::create_dir_all(&incoming).unwrap();
    for n in 0..files {
        std::fs::write(incoming.join(format!("{n:04}.json")), format!("{{\"n\": {n}}}")).unwrap();
    }
}

/// PUTs over 200 a second answered `503 SlowDown`, 25 ms each way: the put node's limit
/// (from 8, doubling while nothing is refused) comes down where the PUTs stay under the
/// rate, every object is written once and none is lost, and few PUTs are refused; the same
/// copy at a fixed 64 is refused over and over.
#[test]
fn a_throttling_store_is_given_less_concurrency_and_loses_nothing() {
    let s3 = S3Server::start(&["feeds", "out"]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("p.yaml"), SPEC).unwrap();
    let files = 1_000;
    feed(&s3, "in", files);
    feed(&s3, "few", 300);
    let far = HttpProxy::throttling(s3.port, 200.0, Duration::from_millis(25));
    let far_endpoint = format!("http://127.0.0.1:{}", far.port);
    let run = |prefix: &str| {
        TestRun::new(dir.path(), "p.yaml").s3(&s3).env("FAR_ENDPOINT", &far_endpoint).env("PREFIX", prefix)
    };
    let ran = run("in/").report("r.json").run();
    assert_eq!(ran.code(), Some(0), "{}", ran.stderr());
    assert_eq!(ran.report["items"]["complete"], files, "{}", ran.report);
    assert_eq!(ran.report["items"]["failed"], 0, "{}", ran.report);
    let written = files_under(&s3.bucket_dir("out").join("in"));
    assert_eq!(written.len(), files);
    for n in [0, files / 2, files - 1] {
        let body = std::fs::read_to_string(s3.bucket_dir("out").join(format!("in/{n:04}.json"))).unwrap();
        assert_eq!(body, format!("{{\"n\": {n}}}"));
    }
    let refused = far.altered() as u64;
    assert!(refused > 0, "the proxy never throttled: the test proves nothing");
    let write = node(&ran.report, "write");
    // Refused PUTs are the node's retries (the fetch's store is not throttled).
    assert_eq!(write["retries"].as_u64(), Some(refused), "{write}");
    let limit = &write["adaptive"];
    assert_eq!(limit["max"], 256, "{write}");
    assert!(limit["lowest"].as_u64() < limit["highest"].as_u64(), "the limit never moved: {write}");
    assert!(refused * 10 < files as u64, "{refused} PUTs refused for {files} objects: {write}");
    assert!(ran.stderr().contains("concurrency adaptive"), "{}", ran.stderr());

    // The same copy of 300 other files, hand-set at 64 in flight.
    let before = far.altered() as u64;
    let fixed = run("few/").args(&["--concurrency", "write=64"]).report("fixed.json").run();
    let refused_fixed = far.altered() as u64 - before;
    let write = node(&fixed.report, "write");
    eprintln!(
        "adaptive: {refused} refused for 1,000 ({}), fixed 64: {refused_fixed} refused for 300, exit {:?}",
        node(&ran.report, "write")["adaptive"],
        fixed.code()
    );
    assert_eq!(write["concurrency"], 64, "{write}");
    assert!(write.get("adaptive").is_none(), "{write}");
    assert!(
        refused_fixed > 3 * refused * 300 / 1_000,
        "at a fixed 64, {refused_fixed} PUTs refused for 300 objects, against {refused} for 1,000 adaptive"
    );
}
