//! Rescans (issue 28.4): `pipelines/nats-rescan.yaml` against the S3 server, with a
//! scanner whose database is newer than what the objects record.

use crate::common::*;

const A: &str = "nats/msg_date=2022-01-28/parsed_a.json";
const B: &str = "nats/msg_date=2022-01-28/parsed_b.json";
const C: &str = "nats/msg_date=2022-01-28/parsed_c.json";

/// Objects the internal store holds from before a signature existed (no recorded scan):
/// the rescan quarantines the infected one (copied, then deleted from the internal store)
/// with an alert, and writes the clean ones back with the new verdict. A rescan below the
/// database they now record selects nothing; one above it, everything again.
#[test]
fn a_rescan_quarantines_what_older_signatures_passed_and_records_the_new_verdict() {
    let s3 = S3Server::start(&["internal", "ops"]);
    let scanner = FakeClamd::start_as(Scanner::Blind { detects: usize::MAX }, &clamd_version("1 hour ago"));
    let hook = Listener::start(Answer::Ok);
    let eicar = dqpipe_plugins::clamav::eicar();
    for (key, body) in [(A, "{\"a\": 1}"), (B, "{\"b\": 2}"), (C, eicar.as_str())] {
        let path = s3.bucket_dir("internal").join(key);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, body).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let rescan = |below: &str| {
        TestRun::new(dir.path(), &repo().join("pipelines/nats-rescan.yaml").to_string_lossy())
            .env("INTERNAL_URL", "s3://internal")
            .env("QUARANTINE_URL", "s3://ops/quarantine")
            .env("S3_ENDPOINT", &s3.endpoint())
            .env("S3_DST_ACCESS_KEY_ID", S3_KEY_ID)
            .env("S3_DST_SECRET_ACCESS_KEY", S3_SECRET)
            .env("CLAMD_ADDRESS", &scanner.address)
            .env("SLACK_WEBHOOK", &hook.url)
            .env("RESCAN_BELOW_DATABASE", below)
            .run()
    };

    let ran = rescan("27500");
    assert_eq!(ran.code(), Some(3), "{}", ran.stderr());
    assert_eq!(files_under(&s3.bucket_dir("internal")), [A, B], "the infected object left the internal store");
    let quarantined = files_under(&s3.bucket_dir("ops"));
    assert_eq!(quarantined, [format!("quarantine/rescan/{C}"), format!("quarantine/rescan/{C}.error.json")]);
    assert_eq!(std::fs::read_to_string(s3.bucket_dir("ops").join(&quarantined[0])).unwrap(), eicar);
    let alerts: Vec<String> = hook.received().iter().map(|m| m["text"].as_str().unwrap_or("").to_string()).collect();
    assert!(alerts.iter().any(|t| t.contains("parsed_c.json")), "{alerts:?}");
    let scanned_at = |key: &str| {
        let meta = s3_metadata(&s3.endpoint(), "internal", key);
        assert_eq!((&meta["dqpipe-scan-database"], &meta["dqpipe-scan-verdict"]), (&"27500".into(), &"clean".into()));
        meta["dqpipe-scan-scanned-at"].as_str().unwrap().to_string()
    };
    let first = (scanned_at(A), scanned_at(B));
    assert_eq!(std::fs::read_to_string(s3.bucket_dir("internal").join(A)).unwrap(), "{\"a\": 1}");

    // Both now record database 27500: a rescan below it selects nothing.
    let ran = rescan("27500");
    assert_eq!(ran.code(), Some(0), "{}", ran.stderr());
    assert_eq!(ran.report["items"]["dropped"], 2, "{}", ran.report);
    assert_eq!((scanned_at(A), scanned_at(B)), first);

    // Above it: both scanned and written back again.
    let ran = rescan("27501");
    assert_eq!(ran.code(), Some(0), "{}", ran.stderr());
    assert_eq!((ran.report["items"]["complete"].as_u64(), ran.report["items"]["dropped"].as_u64()), (Some(2), Some(0)));
    assert_eq!(files_under(&s3.bucket_dir("internal")), [A, B]);
}
