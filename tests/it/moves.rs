//! Moves and deletes: `delete_after_success` on S3 and local folders and the `delete`
//! kind, through the shipped examples.
//! An object leaves its source only once its copy (and done marker) is durable, and only
//! if it is still the object listed; kill -9 mid-move, then a rerun, leaves each object in
//! exactly one place.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::*;

fn example(name: &str) -> String {
    repo().join("pipelines/examples").join(name).to_string_lossy().into_owned()
}

/// The name of the `n`th object of [`incoming`]: a day of December 2026 in it.
fn name(n: usize) -> String {
    format!("acl_202612{:02}_{:04}.csv", 1 + n % 28, n)
}

/// `count` objects under `feeds/incoming/`, named by [`name`], holding `row N`.
fn incoming(s3: &S3Server, count: usize) -> std::path::PathBuf {
    let incoming = s3.bucket_dir("feeds").join("incoming");
    std::fs::create_dir_all(&incoming).unwrap();
    for n in 0..count {
        std::fs::write(incoming.join(name(n)), format!("row {n}\n")).unwrap();
    }
    incoming
}

/// pipelines/examples/scan-folder.yaml: a landing folder scanned by a real clamd, moved
/// into S3 under the unpadded day each file landed, the infected one moved to quarantine
/// with its reason; a rerun finds nothing to do.
#[test]
fn the_scan_folder_example_moves_a_folder_into_s3_by_day() {
    let clamd = Clamd::start("25M");
    let s3 = S3Server::start(&["internal"]);
    let dir = tempfile::tempdir().unwrap();
    let landing = dir.path().join("var/landing");
    std::fs::create_dir_all(landing.join("reports")).unwrap();
    std::fs::write(landing.join("a.csv"), "a,b\n1,2\n").unwrap();
    std::fs::write(landing.join("reports/b.pdf"), vec![7u8; 3000]).unwrap();
    infected_file(&landing.join("c.exe"), 300);
    // Landed on 2026-02-05: the key is 2026/2/5/..., unpadded.
    let landed = std::time::UNIX_EPOCH + Duration::from_secs(1_770_292_800);
    for f in all_files_under(&landing) {
        std::fs::File::options().write(true).open(landing.join(&f)).unwrap().set_modified(landed).unwrap();
    }
    let run = |report: &str| {
        TestRun::new(dir.path(), &example("scan-folder.yaml"))
            .s3(&s3)
            .env("INTERNAL_URL", "s3://internal/landed")
            .env("CLAMD_ADDRESS", &clamd.tcp())
            .report(report)
            .run()
    };
    let ran = run("r.json");
    assert_eq!(ran.code(), Some(3), "{}", ran.stderr());
    let written: Vec<String> =
        files_under(&s3.bucket_dir("internal")).into_iter().filter(|f| !f.contains("_dqpipe")).collect();
    assert_eq!(written, ["landed/2026/2/5/a.csv", "landed/2026/2/5/reports/b.pdf"]);
    assert_eq!(
        std::fs::read(s3.bucket_dir("internal").join("landed/2026/2/5/reports/b.pdf")).unwrap(),
        vec![7u8; 3000]
    );
    let quarantine = dir.path().join("var/landed-quarantine");
    assert!(quarantine.join("c.exe").exists());
    let reason = read_json(&quarantine.join("c.exe.error.json"));
    assert_eq!(reason["reason"], "infected: Local.EICAR.UNOFFICIAL", "{reason}");
    assert!(all_files_under(&landing).is_empty(), "moved files are gone from the landing folder");
    let again = run("again.json");
    assert_eq!(again.code(), Some(0), "{}", again.stderr());
    assert_eq!(again.report["items"]["from_sources"], 0);
}

/// pipelines/examples/repartition.yaml on S3: killed (SIGKILL) once the first copies are
/// written, then rerun: every object is under its date and none is left in incoming/, the
/// one without a date stays where it is.
#[test]
fn a_move_within_a_bucket_killed_midway_then_rerun_leaves_each_object_in_one_place() {
    let s3 = S3Server::start(&["feeds"]);
    let dir = tempfile::tempdir().unwrap();
    let count = 400;
    let incoming = incoming(&s3, count);
    std::fs::write(incoming.join("README.txt"), "notes").unwrap();
    let run = || {
        TestRun::new(dir.path(), &example("repartition.yaml"))
            .s3(&s3)
            .env("BUCKET_URL", "s3://feeds")
            .arg("--concurrency")
            .arg("1")
    };
    let moved =
        |s3: &S3Server| files_under(&s3.bucket_dir("feeds")).into_iter().filter(|f| f.starts_with("by-date/")).count();
    let mut child = run().into_command().stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    // Wait for the event (the first copies written), not for a time.
    let deadline = Instant::now() + Duration::from_secs(60);
    while moved(&s3) < 10 && Instant::now() < deadline && child.try_wait().unwrap().is_none() {
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let left = files_under(&incoming).len();
    assert!(left > 1, "the run ended before it was killed: make the data set larger");
    let ran = run().run();
    assert_eq!(ran.code(), Some(0), "{}", ran.stderr());
    assert_eq!(files_under(&incoming), ["README.txt"], "every dated object moved, the other left");
    let by_date = s3.bucket_dir("feeds").join("by-date");
    let mut expected: Vec<String> = (0..count).map(|n| format!("2026-12-{:02}/{}", 1 + n % 28, name(n))).collect();
    expected.sort();
    assert_eq!(files_under(&by_date), expected);
    for n in [0, count / 2, count - 1] {
        let got = std::fs::read_to_string(by_date.join(format!("2026-12-{:02}/{}", 1 + n % 28, name(n)))).unwrap();
        assert_eq!(got, format!("row {n}\n"));
    }
}

/// pipelines/examples/repartition.yaml on S3 behind a proxy that answers the first DELETE
/// of each object `503 SlowDown`: the delete that ends a move is retried as the copy's
/// requests are, so every object moves in one run instead of staying at its source.
#[test]
fn a_delete_refused_for_a_moment_is_retried_and_the_move_completes() {
    let s3 = S3Server::start(&["feeds"]);
    let dir = tempfile::tempdir().unwrap();
    let incoming = incoming(&s3, 20);
    let proxy = HttpProxy::slowing_first(s3.port, "DELETE", |_| true);
    let ran = TestRun::new(dir.path(), &example("repartition.yaml"))
        .s3(&s3)
        .env("S3_ENDPOINT", &format!("http://127.0.0.1:{}", proxy.port))
        .env("BUCKET_URL", "s3://feeds")
        .report("r.json")
        .run();
    assert_eq!(ran.code(), Some(0), "{}", ran.stderr());
    assert_eq!(proxy.altered(), 20, "each object's first delete was refused");
    assert!(files_under(&incoming).is_empty(), "{:?}", files_under(&incoming));
    assert_eq!(files_under(&s3.bucket_dir("feeds").join("by-date")).len(), 20);
}

/// pipelines/examples/expire.yaml on S3: objects past the retention are deleted, at most
/// `MAX_DELETES` in one run (the rest left, exit 4, and taken by the next run); recent ones
/// stay. `plan` counts the deletes first and deletes nothing.
#[test]
fn the_expire_example_deletes_what_is_past_its_retention_within_its_limit() {
    let s3 = S3Server::start(&["landing"]);
    let dir = tempfile::tempdir().unwrap();
    let bucket = s3.bucket_dir("landing");
    let old = std::time::SystemTime::now() - Duration::from_secs(40 * 86_400);
    for n in 0..5 {
        let path = bucket.join(format!("old/{n}.json"));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, "{}").unwrap();
        std::fs::File::options().write(true).open(&path).unwrap().set_modified(old).unwrap();
    }
    std::fs::write(bucket.join("old/new.json"), "{}").unwrap();
    let with = |extra: &[&str]| {
        let mut c = dqpipe(dir.path());
        c.args(extra)
            .env("S3_ENDPOINT", s3.endpoint())
            .env("AWS_ACCESS_KEY_ID", S3_KEY_ID)
            .env("AWS_SECRET_ACCESS_KEY", S3_SECRET)
            .env("EXPIRE_URL", "s3://landing")
            .env("MAX_DELETES", "3");
        c.output().unwrap()
    };
    let spec = example("expire.yaml");
    let plan = with(&["plan", &spec]);
    assert_eq!(plan.status.code(), Some(0), "{}", stderr(&plan));
    assert!(stdout(&plan).contains("5 to delete"), "{}", stdout(&plan));
    assert_eq!(files_under(&bucket).len(), 6, "a plan deleted something");
    let first = with(&["run", &spec, "--progress", "off"]);
    assert_eq!(first.status.code(), Some(4), "{}", stderr(&first));
    assert!(stderr(&first).contains("limit of 3 deletes"), "{}", stderr(&first));
    assert_eq!(files_under(&bucket).len(), 3, "3 deleted, 2 old and the new one left");
    let second = with(&["run", &spec, "--progress", "off"]);
    assert_eq!(second.status.code(), Some(0), "{}", stderr(&second));
    assert_eq!(files_under(&bucket), ["old/new.json"]);
}

/// A `delete` in a store marked trusted is refused by `validate` unless the node says so.
#[test]
fn deleting_in_a_trusted_store_needs_allow_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let spec = |extra: &str| {
        format!(
            "version: 1\nname: t\nstores:\n  internal: {{ url: file://./internal, trusted: true }}\nnodes:\n  old: {{ kind: list, store: internal, min_age: 400d }}\n  expire: {{ kind: delete, input: old, store: internal{extra} }}\n"
        )
    };
    std::fs::write(dir.path().join("p.yaml"), spec("")).unwrap();
    let out = dqpipe(dir.path()).args(["validate", "p.yaml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("p.yaml:7:39: nodes.expire.store: store `internal` is marked trusted"),
        "{}",
        stderr(&out)
    );
    std::fs::write(dir.path().join("p.yaml"), spec(", allow_trusted: true")).unwrap();
    let out = dqpipe(dir.path()).args(["validate", "p.yaml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

/// pipelines/examples/feed-monitor.yaml on S3 with a real HTTP listener for Slack: a feed
/// whose newest object is recent passes in silence (exit 0, no message); one that stopped
/// arriving ends with problems (exit 3) and one alert saying how old the newest object is.
#[test]
fn the_feed_monitor_alerts_when_nothing_new_has_arrived() {
    let s3 = S3Server::start(&["landing"]);
    let dir = tempfile::tempdir().unwrap();
    let feed = s3.bucket_dir("landing").join("acl");
    std::fs::create_dir_all(&feed).unwrap();
    let old = std::time::SystemTime::now() - Duration::from_secs(9 * 3600);
    for n in 0..3 {
        let path = feed.join(format!("acl_{n}.csv"));
        std::fs::write(&path, "x\n").unwrap();
        std::fs::File::options().write(true).open(&path).unwrap().set_modified(old).unwrap();
    }
    let slack = Listener::start(Answer::Ok);
    let run = |report: &str| {
        TestRun::new(dir.path(), &example("feed-monitor.yaml"))
            .s3(&s3)
            .env("FEED_URL", "s3://landing/acl/")
            .env("SLACK_WEBHOOK", &slack.url)
            .report(report)
            .run()
    };
    let stale = run("stale.json");
    assert_eq!(stale.code(), Some(3), "{}", stale.stderr());
    let reason = stale.report["expectations"][0]["reason"].as_str().unwrap().to_string();
    assert!(
        reason.contains("was modified at") && reason.contains("9h") && reason.contains("expected within 6h"),
        "{reason}"
    );
    let sent = slack.received();
    assert_eq!(sent.len(), 1, "one alert, at the end, not one per file: {sent:?}");
    assert!(sent[0].to_string().contains("expected within 6h"), "{}", sent[0]);
    // A new file: the feed is alive again.
    std::fs::write(feed.join("acl_new.csv"), "y\n").unwrap();
    let alive = run("alive.json");
    assert_eq!(alive.code(), Some(0), "{}", alive.stderr());
    assert_eq!(slack.received().len(), 1, "no alert for a healthy feed");
    assert_eq!(files_under(&feed).len(), 4, "a monitor moves nothing");
}
