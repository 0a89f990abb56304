//! Nothing lost, nothing doubled: kill -9 and rerun, faults between dqpipe and S3 and
//! clamd, clamd stopping mid-run, SIGTERM with a grace period. Real s3s-fs, real clamd,
//! a fault-injecting TCP proxy on 127.0.0.1.

use crate::common::*;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// These tests each run clamd, an S3 server and thousands of objects: one at a time, so
/// that on two cores they do not starve each other (timeouts are real here).
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// The NATS pipeline S3 -> S3 through `endpoint` and `clamd`, writing `report`.
fn nats_run(dir: &Path, endpoint: &str, clamd: &str, report: &str) -> Command {
    TestRun::nats_s3(dir, endpoint, clamd).report(report).into_command()
}

/// The S3 buckets hold exactly what the local reference run made: every clean file once
/// with the right bytes, every infected one in quarantine, every malformed one
/// dead-lettered, nothing else.
fn assert_matches_reference(dir: &Path, s3: &S3Server) {
    assert_same_files(&dir.join("var/internal"), &s3.bucket_dir("internal"));
    // Quarantine and dead letter keep the source key, which has the `nats/` prefix in S3.
    let reason = |f: &str| f.ends_with(".error.json");
    assert_same_files_but(&dir.join("var/quarantine"), &s3.bucket_dir("ops").join("quarantine/nats"), reason);
    assert_same_files_but(&dir.join("var/dead-letter"), &s3.bucket_dir("ops").join("dead-letter/nats"), reason);
}

/// After an interrupted or failed run: whatever reached the internal store is complete and
/// correct (nothing partial, nothing unscanned); then a rerun completes the whole.
fn assert_partial_then_rerun_completes(dir: &Path, s3: &S3Server, clamd: &Clamd) {
    let reference = dir.join("var/internal");
    for f in files_under(&s3.bucket_dir("internal")) {
        assert_eq!(
            std::fs::read(reference.join(&f)).unwrap(),
            std::fs::read(s3.bucket_dir("internal").join(&f)).unwrap()
        );
    }
    let out = nats_run(dir, &s3.endpoint(), &clamd.tcp(), "rerun.json").output().unwrap();
    assert!(matches!(out.status.code(), Some(0) | Some(3)), "{}", stderr(&out));
    assert_matches_reference(dir, s3);
}

fn total_retries(report: &serde_json::Value) -> u64 {
    report["nodes"].as_array().unwrap().iter().map(|n| n["retries"].as_u64().unwrap_or(0)).sum()
}

#[test]
fn kill_9_at_random_points_then_rerun_completes_exactly_once() {
    let _serial = serial();
    let clamd = Clamd::start("25M");
    let s3 = S3Server::start(&["archive", "internal", "ops"]);
    let dir = tempfile::tempdir().unwrap();
    let samples = samples_and_reference(dir.path(), 5_000, 5, 5, &clamd.tcp());
    upload_samples(&s3, &samples);

    // Kill points from a fixed seed, spread over the first seconds of each run.
    let mut seed: u64 = 0x5eed;
    let mut killed = 0;
    for _ in 0..4 {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        let after = Duration::from_millis(300 + (seed >> 33) % 2_500);
        let mut child = nats_run(dir.path(), &s3.endpoint(), &clamd.tcp(), "killed.json")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(after);
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL: no cleanup of any kind
            killed += 1;
        }
        child.wait().unwrap();
    }
    assert!(killed >= 2, "the runs ended before they could be killed: make the data set larger");

    let markers_before = done_under(&s3.bucket_dir("internal")).len() as u64;
    assert!(markers_before < 5_000, "the killed runs finished everything; nothing left to resume");
    let out = nats_run(dir.path(), &s3.endpoint(), &clamd.tcp(), "final.json").output().unwrap();
    let r = read_json(&dir.path().join("final.json"));
    // The rerun did only what was missing. s3s-fs finishes the PUTs it had received in full
    // after their client died (CI saw 117 markers counted here and 172 read by the rerun), so the
    // markers counted above are a lower bound, and the rerun's own count is the one it works from.
    let skipped = r["items"]["skipped_done"].as_u64().unwrap();
    assert!(skipped >= markers_before, "{skipped} skipped, {markers_before} markers found: {}", stderr(&out));
    assert!(skipped < 5_000, "{}", stderr(&out));
    assert_eq!(r["items"]["from_sources"].as_u64().unwrap(), 5_000 - skipped, "{}", stderr(&out));
    assert_eq!(r["items"]["failed"], 0, "{}", stderr(&out));
    assert!(matches!(out.status.code(), Some(0) | Some(3)), "{}", stderr(&out));
    assert_matches_reference(dir.path(), &s3);
    assert_eq!(done_under(&s3.bucket_dir("internal")).len(), 5_000);
    // A further rerun has nothing to do and writes nothing.
    let again = nats_run(dir.path(), &s3.endpoint(), &clamd.tcp(), "again.json").output().unwrap();
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    let r = read_json(&dir.path().join("again.json"));
    assert_eq!((r["items"]["from_sources"].as_u64(), r["items"]["skipped_done"].as_u64()), (Some(0), Some(5_000)));
}

#[test]
fn transient_faults_to_s3_and_clamd_are_retried_and_counted() {
    let _serial = serial();
    let clamd = Clamd::start("25M");
    let s3 = S3Server::start(&["archive", "internal", "ops"]);
    let dir = tempfile::tempdir().unwrap();
    let samples = samples_and_reference(dir.path(), 400, 3, 3, &clamd.tcp());
    upload_samples(&s3, &samples);

    use Fault::*;
    // About one connection in ten meets a fault; each item has 6 attempts (the default).
    let s3_proxy =
        FaultProxy::start(s3.port, vec![Pass, Reset, Pass, Pass, Http500, Pass, Delay(300), Pass, Cut, Pass]);
    let mut clamd_faults = vec![Pass; 20];
    clamd_faults[3] = Reset;
    clamd_faults[9] = Delay(200);
    clamd_faults[14] = Cut;
    let clamd_proxy = FaultProxy::start(clamd.port, clamd_faults);
    let out = nats_run(
        dir.path(),
        &format!("http://127.0.0.1:{}", s3_proxy.port),
        &format!("tcp://127.0.0.1:{}", clamd_proxy.port),
        "r.json",
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let r = read_json(&dir.path().join("r.json"));
    assert_eq!(r["items"]["failed"], 0);
    assert!(total_retries(&r) > 0, "no retry was needed: the proxy injected nothing");
    assert_matches_reference(dir.path(), &s3);
}

#[test]
fn persistent_s3_faults_fail_closed_then_a_rerun_completes() {
    let _serial = serial();
    let clamd = Clamd::start("25M");
    let s3 = S3Server::start(&["archive", "internal", "ops"]);
    let dir = tempfile::tempdir().unwrap();
    let samples = samples_and_reference(dir.path(), 600, 2, 2, &clamd.tcp());
    upload_samples(&s3, &samples);

    // The proxy starts answering 500 to everything a moment into the run.
    let proxy = FaultProxy::start(s3.port, vec![]);
    let endpoint = format!("http://127.0.0.1:{}", proxy.port);
    let child = nats_run(dir.path(), &endpoint, &clamd.tcp(), "r.json")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Once items flow (the first one written), not by a timer.
    wait_for_first_output(&s3);
    proxy.set(vec![Fault::Http500]);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let r = read_json(&dir.path().join("r.json"));
    let failures = r["failures"].as_array().unwrap();
    assert!(!failures.is_empty());
    for f in failures {
        let reason = f["reason"].as_str().unwrap();
        assert!(reason.contains("server error 500") || reason.contains("InternalError"), "{reason}");
    }
    // Whatever reached the internal store is a complete, correct output.
    assert_partial_then_rerun_completes(dir.path(), &s3, &clamd);
}

#[test]
fn clamd_stopping_mid_run_lets_nothing_unscanned_through() {
    let _serial = serial();
    let clamd = Clamd::start("25M");
    let s3 = S3Server::start(&["archive", "internal", "ops"]);
    let dir = tempfile::tempdir().unwrap();
    let samples = samples_and_reference(dir.path(), 2_000, 4, 4, &clamd.tcp());
    upload_samples(&s3, &samples);

    let child = nats_run(dir.path(), &s3.endpoint(), &clamd.tcp(), "r.json")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_first_output(&s3);
    clamd.stop();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let r = read_json(&dir.path().join("r.json"));
    let scan = r["nodes"].as_array().unwrap().iter().find(|n| n["name"] == "scan").unwrap().clone();
    let write = r["nodes"].as_array().unwrap().iter().find(|n| n["name"] == "write").unwrap().clone();
    // Only what clamd answered clean went on, and the internal store holds only that.
    let clean = scan["ports"]["clean"]["items"].as_u64().unwrap();
    assert!(clean < 2_000, "clamd was stopped too late to matter");
    assert!(write["received"].as_u64().unwrap() <= clean);
    assert_eq!(files_under(&s3.bucket_dir("internal")).len() as u64, write["ports"]["out"]["items"].as_u64().unwrap());
    let failures = r["failures"].as_array().unwrap();
    assert!(!failures.is_empty());
    assert!(
        failures.iter().all(|f| f["node"] == "scan" && f["reason"].as_str().unwrap().contains("not scanned")),
        "{failures:?}"
    );
    assert_eq!(r["items"]["failed"].as_u64().unwrap() as usize, failures.len());
    // The log says each cause once, then counts: not one line per object.
    let log = stderr(&out);
    let causes = r["causes"].as_array().unwrap().iter().filter(|c| c["node"] == "scan").count();
    let whole = log.lines().filter(|l| l.contains("item not processed")).count();
    assert!(whole >= 1 && whole <= causes, "{whole} lines for {causes} causes:\n{log}");
    let counted: u64 = log
        .lines()
        .filter(|l| l.contains("more objects not processed for this cause"))
        .filter_map(|l| l.split(" more objects").next()?.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(whole as u64 + counted, failures.len() as u64, "every failure said or counted:\n{log}");

    clamd.start_again("25M");
    let out = nats_run(dir.path(), &s3.endpoint(), &clamd.tcp(), "rerun.json").output().unwrap();
    assert!(matches!(out.status.code(), Some(0) | Some(3)), "{}", stderr(&out));
    assert_matches_reference(dir.path(), &s3);
}

#[test]
fn sigterm_stops_within_the_grace_period_and_a_rerun_completes() {
    let _serial = serial();
    let clamd = Clamd::start("25M");
    let s3 = S3Server::start(&["archive", "internal", "ops"]);
    let dir = tempfile::tempdir().unwrap();
    let samples = samples_and_reference(dir.path(), 300, 2, 2, &clamd.tcp());
    upload_samples(&s3, &samples);

    // Every scan takes 4 s (the first connection, the preflight PING, is let through):
    // at SIGTERM, items are in flight and cannot finish in time.
    let mut slow = vec![Fault::Delay(4_000); 10_000];
    slow[0] = Fault::Pass;
    let slow_clamd = FaultProxy::start(clamd.port, slow);
    let mut c = nats_run(dir.path(), &s3.endpoint(), &format!("tcp://127.0.0.1:{}", slow_clamd.port), "r.json");
    let child = c.args(["--grace-secs", "2"]).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    // Once items flow (the first one written, after the preflight canary), not by a timer.
    wait_for_first_output(&s3);
    let sent = Instant::now();
    let kill = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let out = child.wait_with_output().unwrap();
    let took = sent.elapsed();
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(took < Duration::from_secs(2 + 5), "exited {took:?} after SIGTERM with a 2 s grace period");
    let r = read_json(&dir.path().join("r.json"));
    assert_eq!(r["interrupted"], true);
    let failures = r["failures"].as_array().unwrap();
    assert!(failures.iter().any(|f| f["reason"].as_str().unwrap().contains("abandoned at shutdown")), "{failures:?}");
    // Nothing partial: what is in the internal store is complete and correct.
    assert_partial_then_rerun_completes(dir.path(), &s3, &clamd);
}

/// Issue 27.2: a proxy that cuts answers short and rewrites their Content-Length to match
/// (nothing on the wire says the body is short). The length is checked against the
/// listing: a cut body is retried, never dead-lettered, never marked done.
#[test]
fn a_body_cut_short_on_the_way_is_retried_never_dead_lettered() {
    let _serial = serial();
    let clamd = Clamd::start("25M");
    let s3 = S3Server::start(&["archive", "internal", "ops"]);
    let dir = tempfile::tempdir().unwrap();
    let samples = samples_and_reference(dir.path(), 30, 0, 0, &clamd.tcp());
    upload_samples(&s3, &samples);
    // Object reads are `GET /archive/nats/<name>`; listings carry `list-type=2`.
    let object_read = |request: &str, answer: &str| {
        let line = request.lines().next().unwrap_or("");
        line.starts_with("GET /archive/nats/") && !line.contains("list-type") && answer.starts_with("HTTP/1.1 200")
    };
    let cut = |body: &mut Vec<u8>| body.truncate(body.len() * 9 / 10);

    // Every read cut: past its retries each object is left for a rerun (exit 4), with a
    // transient reason; nothing written, quarantined, dead-lettered or marked done.
    let always = HttpProxy::start(s3.port, move |request, answer, body| {
        object_read(request, answer) && {
            cut(body);
            true
        }
    });
    let ran = TestRun::nats_s3(dir.path(), &format!("http://127.0.0.1:{}", always.port), &clamd.tcp()).run();
    assert_eq!(ran.code(), Some(4), "{}", ran.stderr());
    assert!(always.altered() >= 30, "the proxy cut {} reads", always.altered());
    let failures = ran.report["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 30, "{}", ran.report);
    assert!(failures.iter().all(|f| f["permanent"] == false), "{}", ran.report);
    assert!(failures[0]["reason"].as_str().unwrap().contains("cut short"), "{}", ran.report);
    assert!(all_files_under(&s3.bucket_dir("internal")).is_empty(), "written or marked done from cut bodies");
    assert!(all_files_under(&s3.bucket_dir("ops")).is_empty(), "a cut body was dead-lettered");

    // The first read of each object cut: its retry reads it whole; the run is the
    // reference's, byte for byte.
    let seen = std::sync::Mutex::new(std::collections::HashSet::new());
    let once = HttpProxy::start(s3.port, move |request, answer, body| {
        let first = object_read(request, answer)
            && seen.lock().unwrap().insert(request.lines().next().unwrap_or("").to_string());
        first && {
            cut(body);
            true
        }
    });
    let ran = TestRun::nats_s3(dir.path(), &format!("http://127.0.0.1:{}", once.port), &clamd.tcp()).run();
    assert_eq!(ran.code(), Some(0), "{}", ran.stderr());
    assert_eq!(once.altered(), 30);
    assert!(total_retries(&ran.report) >= 30, "{}", ran.report);
    assert_same_files(&dir.path().join("var/internal"), &s3.bucket_dir("internal"));
    assert_eq!(done_under(&s3.bucket_dir("internal")).len(), 30);
}

/// Issue 27.6g: a gateway that answers 200 to a PUT it never delivered. Trusting the
/// answer loses those objects for good once they are marked done; `verify: head` reads
/// each write back, retries the lost ones, and the store ends up holding every object.
#[test]
fn a_write_answered_but_lost_is_caught_by_verify_head() {
    let _serial = serial();
    let s3 = S3Server::start(&["dst"]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("src")).unwrap();
    for n in 0..10 {
        std::fs::write(dir.path().join(format!("src/{n}.json")), format!("{{\"n\": {n}}}")).unwrap();
    }
    let spec = |verify: &str| {
        format!(
            "version: 1\nname: copy\nstores:\n  src: {{ url: \"file://./src\" }}\n  dst: {{ url: \"s3://dst/in\", s3: {{ endpoint: \"${{S3_ENDPOINT}}\" }} }}\nnodes:\n  list: {{ kind: list, store: src }}\n  fetch: {{ kind: fetch, input: list }}\n  write: {{ kind: put, input: fetch, store: dst, key: \"{{{{ name }}}}\", verify: {verify}, retry: {{ initial_delay_ms: 10, max_delay_ms: 20 }} }}\n"
        )
    };
    // The first PUT of each key is answered 200 and dropped.
    let proxy_losing_first_puts = || {
        let seen = std::sync::Mutex::new(std::collections::HashSet::new());
        HttpProxy::swallowing(s3.port, move |request| {
            let line = request.lines().next().unwrap_or("").to_string();
            line.starts_with("PUT /dst/in/") && seen.lock().unwrap().insert(line)
        })
    };
    let stored = || files_under(&s3.bucket_dir("dst").join("in")).len();

    let proxy = proxy_losing_first_puts();
    std::fs::write(dir.path().join("trust.yaml"), spec("none")).unwrap();
    let ran = TestRun::new(dir.path(), "trust.yaml")
        .s3(&s3)
        .env("S3_ENDPOINT", &format!("http://127.0.0.1:{}", proxy.port))
        .run();
    assert_eq!(ran.code(), Some(0), "{}", ran.stderr());
    assert_eq!((proxy.altered(), stored()), (10, 0), "trusting the answer, every object is lost");

    let proxy = proxy_losing_first_puts();
    std::fs::write(dir.path().join("verify.yaml"), spec("head")).unwrap();
    let ran = TestRun::new(dir.path(), "verify.yaml")
        .s3(&s3)
        .env("S3_ENDPOINT", &format!("http://127.0.0.1:{}", proxy.port))
        .run();
    assert_eq!(ran.code(), Some(0), "{}", ran.stderr());
    assert_eq!((proxy.altered(), stored()), (10, 10), "every lost write was caught and made again");
    assert!(total_retries(&ran.report) >= 10, "{}", ran.report);
}

/// Waits until the run wrote its first output to the internal bucket (a minute at most).
fn wait_for_first_output(s3: &S3Server) {
    let started = Instant::now();
    while files_under(&s3.bucket_dir("internal")).is_empty() {
        assert!(started.elapsed() < Duration::from_secs(60), "nothing was written within a minute");
        std::thread::sleep(Duration::from_millis(20));
    }
}
