//! Two runs of one pipeline at once, over s3s-fs: the second finds the first's lease
//! (in the bucket of its done markers) and exits 5, naming it, having done nothing; a
//! run killed with SIGKILL leaves its lease, taken over at once on the same host (its
//! process is gone), and waited out (`defaults.lease_secs`) when held from another.

use crate::common::*;

use std::process::Stdio;
use std::time::{Duration, Instant};

const SPEC: &str = r#"
version: 1
name: leased-copy
defaults: { s3: { endpoint: "${S3_ENDPOINT}" }, lease_secs: 3 }
stores:
  feeds: { url: "s3://feeds/in" }
  out: { url: "s3://out" }
nodes:
  list: { kind: list, store: feeds, resume: { store: out } }
  fetch: { kind: fetch, input: list }
  write: { kind: put, input: fetch, store: out, key: "copied/{{ name }}" }
"#;

fn copied(s3: &S3Server) -> usize {
    files_under(&s3.bucket_dir("out")).into_iter().filter(|f| f.starts_with("copied/")).count()
}

/// Waits for `n` copies (an event, not a time), while `child` runs.
fn until_copied(s3: &S3Server, n: usize, child: &mut std::process::Child) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while copied(s3) < n && Instant::now() < deadline && child.try_wait().unwrap().is_none() {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(child.try_wait().unwrap().is_none(), "the run ended first: make the data set larger");
}

#[test]
fn a_second_run_of_a_pipeline_exits_5_while_the_first_holds_its_lease() {
    let s3 = S3Server::start(&["feeds", "out"]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("p.yaml"), SPEC).unwrap();
    let folder = s3.bucket_dir("feeds").join("in");
    std::fs::create_dir_all(&folder).unwrap();
    let count = 200;
    for i in 0..count {
        std::fs::write(folder.join(format!("m{i:05}.json")), format!("{{\"n\":{i}}}")).unwrap();
    }
    let run = |report: &str| TestRun::new(dir.path(), "p.yaml").s3(&s3).args(&["--concurrency", "1"]).report(report);
    let lease = s3.bucket_dir("out").join("_dqpipe/leases/leased-copy/all.json");

    let mut first = run("first.json").into_command().stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    until_copied(&s3, 10, &mut first);
    let holder = read_json(&lease);
    let second = run("second.json").run();
    assert!(first.try_wait().unwrap().is_none(), "the first run ended before the second tried: a larger data set");
    assert_eq!(second.code(), Some(5), "{}", second.stderr());
    let said = second.stderr();
    assert!(said.contains("holds its lease") && said.contains(holder["run_id"].as_str().unwrap()), "{said}");
    assert!(!dir.path().join("second.json").exists(), "a run that did nothing writes no report");
    assert!(first.wait().unwrap().success());
    assert_eq!(copied(&s3), count);
    assert_eq!(read_json(&dir.path().join("first.json"))["run_id"], holder["run_id"]);
    assert!(!lease.exists(), "the lease is released at the end of the run");

    // Killed, the run leaves its lease. Its process is gone from this host, so the next
    // run here takes it over at once and does what is left.
    for f in all_files_under(&s3.bucket_dir("out")) {
        std::fs::remove_file(s3.bucket_dir("out").join(f)).unwrap();
    }
    let kill_midway = |report: &str| {
        let mut killed = run(report).into_command().stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        until_copied(&s3, copied(&s3) + 10, &mut killed);
        killed.kill().unwrap();
        killed.wait().unwrap();
        read_json(&lease)
    };
    let left = kill_midway("killed.json");
    assert!(left["expires"].as_i64().unwrap() > chrono::Utc::now().timestamp(), "{left}");
    let taken = run("taken.json").run();
    assert_eq!(taken.code(), Some(0), "{}", taken.stderr());
    assert_eq!(copied(&s3), count);

    // Held from another host (a pod elsewhere), whose process cannot be checked: refused
    // until the lease lapses, then taken over.
    let mut elsewhere = left.clone();
    elsewhere["host"] = "nats-historical-29190240-x7k2p".into();
    elsewhere["expires"] = (chrono::Utc::now().timestamp() + 3).into();
    std::fs::write(&lease, serde_json::to_vec(&elsewhere).unwrap()).unwrap();
    let refused = run("refused.json").run();
    let expires = elsewhere["expires"].as_i64().unwrap();
    if chrono::Utc::now().timestamp() < expires {
        assert_eq!(refused.code(), Some(5), "{}", refused.stderr());
        assert!(refused.stderr().contains("on nats-historical-29190240-x7k2p"), "{}", refused.stderr());
    }
    // Until the clock passes the expiry the lease names (an event, not a fixed sleep).
    while chrono::Utc::now().timestamp() <= expires {
        std::thread::sleep(Duration::from_millis(50));
    }
    let rerun = run("rerun.json").run();
    assert_eq!(rerun.code(), Some(0), "{}", rerun.stderr());
    assert_eq!(copied(&s3), count);
    assert!(!lease.exists());
}
