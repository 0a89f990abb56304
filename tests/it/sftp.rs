//! The live ingest: Debian's OpenSSH sshd (chrooted SFTP, a throwaway user and keys) on a
//! loopback port, the real S3 server, real clamd, a real Slack listener.

use crate::common::*;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

fn ingest(dir: &Path, sshd: &Sshd, s3_endpoint: &str, clamd: &str, key: &str) -> Command {
    TestRun::sftp_ingest(dir, sshd, key, clamd)
        .env("DQ_URL", "s3://dq-bucket")
        .env("DQ_PREFIX", "nats")
        .env("SECURE_URL", "s3://secure/nats")
        .env("QUARANTINE_URL", "s3://ops/quarantine")
        .env("FAILED_URL", "s3://ops/failed-to-parse")
        .env("S3_ENDPOINT", s3_endpoint)
        .env("AWS_ACCESS_KEY_ID", S3_KEY_ID)
        .env("AWS_SECRET_ACCESS_KEY", S3_SECRET)
        .into_command()
}

fn today() -> String {
    // The run's date, as the pipeline's `run_date`: from the date command, UTC.
    let out = Command::new("date").args(["-u", "+%Y/%m/%d"]).output().unwrap();
    stdout(&out).trim().to_string()
}

#[test]
fn files_are_delivered_twice_then_deleted_and_problems_set_aside() {
    let clamd = Clamd::start("25M");
    let s3 = S3Server::start(&["dq-bucket", "secure", "ops"]);
    let sshd = Sshd::start();
    let hook = Listener::start(Answer::Ok);
    let dir = tempfile::tempdir().unwrap();
    let samples = dir.path().join("samples");
    let gen = dqpipe(dir.path())
        .args(["samples", "--out", &samples.to_string_lossy(), "--count", "298", "--infected", "2"])
        .output()
        .unwrap();
    assert!(gen.status.success());
    // Two unreadable files, as the original's test stack had: single-quoted JSON, and empty.
    std::fs::write(samples.join("[-PRMD=EG-ADMD=ICAO-C=XX-;MTA-EGGG-1-MTCU_BAD0000000000001].json"), "{'a': 'b'}")
        .unwrap();
    std::fs::write(samples.join("[-PRMD=EG-ADMD=ICAO-C=XX-;MTA-EGGG-1-MTCU_BAD0000000000002].json"), "").unwrap();
    for f in files_under(&samples) {
        std::fs::copy(samples.join(&f), sshd.landing().join(&f)).unwrap();
    }
    // Not matching the landing pattern: left alone.
    std::fs::write(sshd.landing().join("README.txt"), b"not a NATS file").unwrap();
    settle_files(&sshd.landing());

    // The KMS-encrypted bucket is reached through a proxy that records the requests.
    let secure = RecordingProxy::start(s3.port);
    let out = ingest(dir.path(), &sshd, &s3.endpoint(), &clamd.tcp(), "id_ed25519")
        .env("SECURE_S3_ENDPOINT", format!("http://127.0.0.1:{}", secure.port))
        .env("SLACK_WEBHOOK", &hook.url)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}\n{}", stderr(&out), sshd.log());

    let day = today();
    let dq = files_under(&s3.bucket_dir("dq-bucket").join("nats").join(&day));
    let secure_files = files_under(&s3.bucket_dir("secure").join("nats"));
    assert_eq!(dq.len(), 296);
    assert_eq!(dq, secure_files);
    for f in &dq {
        let original = std::fs::read(samples.join(f)).unwrap();
        assert_eq!(std::fs::read(s3.bucket_dir("dq-bucket").join("nats").join(&day).join(f)).unwrap(), original);
        assert_eq!(std::fs::read(s3.bucket_dir("secure").join("nats").join(f)).unwrap(), original);
    }
    assert!(secure.count("x-amz-server-side-encryption: aws:kms") >= 296, "KMS encryption not requested");
    let quarantined: Vec<_> = files_under(&s3.bucket_dir("ops").join("quarantine"))
        .into_iter()
        .filter(|f| !f.ends_with(".error.json"))
        .collect();
    let failed: Vec<_> = files_under(&s3.bucket_dir("ops").join("failed-to-parse"))
        .into_iter()
        .filter(|f| !f.ends_with(".error.json"))
        .collect();
    assert_eq!((quarantined.len(), failed.len()), (2, 2));
    // Every handled file is gone from the server; the one that does not match stays.
    assert_eq!(files_under(&sshd.landing()), vec!["README.txt"]);
    assert_eq!(hook.received().len(), 5);
    // One headline per kind of problem: the 2 infected files, the 2 unreadable ones; then
    // the run's own (it had problems).
    let mut headlines: Vec<String> = hook
        .received()
        .iter()
        .map(|m| m["text"].as_str().unwrap_or("").split(':').next().unwrap_or("").to_string())
        .collect();
    headlines.sort();
    assert_eq!(
        headlines,
        ["Failed to parse", "Failed to parse", "Virus detected", "Virus detected", "nats-sftp-ingest"]
    );
    assert!(hook.received()[4]["text"].as_str().unwrap().ends_with("finished with problems (exit 3)"));

    // The next run finds nothing: "Pulling zero files!".
    let again = ingest(dir.path(), &sshd, &s3.endpoint(), &clamd.tcp(), "id_ed25519")
        .env("SLACK_WEBHOOK", &hook.url)
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    assert!(hook.received().iter().any(|m| m["text"].as_str().unwrap_or("").contains("Pulling zero files!")));
}

/// Issue 27.6f: a file sent again under its name, size and modification time, with other
/// bytes, is delivered before it is deleted (SFTP gives no checksum: the done marker's
/// size and time cannot tell it from the file delivered before).
#[test]
fn a_file_sent_again_under_its_name_size_and_time_is_delivered_before_it_is_deleted() {
    let s3 = S3Server::start(&["dq-bucket", "secure", "ops"]);
    let sshd = Sshd::start();
    let scanner = FakeClamd::start(Scanner::Hook(Arc::new(|| {})));
    let dir = tempfile::tempdir().unwrap();
    let samples = dir.path().join("samples");
    dqpipe(dir.path()).args(["samples", "--out", &samples.to_string_lossy(), "--count", "3"]).output().unwrap();
    let name = files_under(&samples).remove(0);
    let landed = sshd.landing().join(&name);
    let send = |bytes: &[u8]| {
        std::fs::write(&landed, bytes).unwrap();
        let touched = Command::new("touch").args(["-d", "@1700000000"]).arg(&landed).status().unwrap();
        assert!(touched.success());
    };
    let first = std::fs::read(samples.join(&name)).unwrap();
    send(&first);
    settle_files(&sshd.landing());
    let run = || ingest(dir.path(), &sshd, &s3.endpoint(), &scanner.address, "id_ed25519").output().unwrap();
    let out = run();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let delivered = s3.bucket_dir("dq-bucket").join("nats").join(today()).join(&name);
    assert_eq!(std::fs::read(&delivered).unwrap(), first);
    assert!(files_under(&sshd.landing()).is_empty());

    // The same name, size and time; one digit changed.
    let mut second = first.clone();
    let at = second.iter().position(u8::is_ascii_digit).unwrap();
    second[at] = if second[at] == b'1' { b'2' } else { b'1' };
    send(&second);
    let out = run();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(files_under(&sshd.landing()).is_empty());
    assert_eq!(std::fs::read(&delivered).unwrap(), second, "the file sent again was deleted without being delivered");
    assert_eq!(std::fs::read(s3.bucket_dir("secure").join("nats").join(&name)).unwrap(), second);
}

#[test]
fn a_file_whose_delivery_failed_stays_on_the_server() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let s3 = S3Server::start(&["dq-bucket", "secure", "ops"]);
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().unwrap();
    let samples = dir.path().join("samples");
    dqpipe(dir.path()).args(["samples", "--out", &samples.to_string_lossy(), "--count", "300"]).output().unwrap();
    for f in files_under(&samples) {
        std::fs::copy(samples.join(&f), sshd.landing().join(&f)).unwrap();
    }
    settle_files(&sshd.landing());
    // The scanner holds every scan after the 20th until S3 is broken; S3 breaks (500 to
    // everything) once the first delivered files were deleted from the server. (A fake
    // scanner: what is tested is S3 failing, at a known point of the run.)
    let broken = Arc::new(AtomicBool::new(false));
    let scans = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (held, counted) = (broken.clone(), scans.clone());
    let scanner = FakeClamd::start(Scanner::Hook(Arc::new(move || {
        if counted.fetch_add(1, Ordering::SeqCst) >= 20 {
            while !held.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    })));
    // Every answer after the break is a 500, on connections already open too.
    let breaks = broken.clone();
    let proxy = HttpProxy::start(s3.port, move |_, head, body| {
        breaks.load(Ordering::SeqCst) && {
            *head = "HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\n\r\n".into();
            body.clear();
            true
        }
    });
    let child = ingest(dir.path(), &sshd, &format!("http://127.0.0.1:{}", proxy.port), &scanner.address, "id_rsa_pem")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    while files_under(&sshd.landing()).len() == 300 {
        std::thread::sleep(Duration::from_millis(20));
    }
    broken.store(true, Ordering::SeqCst);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let remaining = files_under(&sshd.landing());
    assert!(remaining.len() >= 280, "files scanned after S3 broke were deleted: {} left", remaining.len());
    let day = today();
    for f in files_under(&samples) {
        let delivered = s3.bucket_dir("dq-bucket").join("nats").join(&day).join(&f).exists()
            && s3.bucket_dir("secure").join("nats").join(&f).exists();
        let deleted = !remaining.contains(&f);
        assert!(!deleted || delivered, "{f} was deleted from the server but not delivered to both buckets");
    }
}

#[test]
fn wrong_key_unknown_host_and_unreachable_server_fail_clearly_and_delete_nothing() {
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().unwrap();
    dqpipe(dir.path()).args(["samples", "--out", &sshd.landing().to_string_lossy(), "--count", "5"]).output().unwrap();
    settle_files(&sshd.landing());
    let spec = repo().join("pipelines/nats-sftp-ingest.yaml").to_string_lossy().into_owned();
    let plan = |key: &str, known_hosts: &str, url: &str| {
        // The SFTP login is the listing's check; no scanner here (`--no-preflight`).
        let out = dqpipe(dir.path())
            .args(["plan", &spec, "--no-preflight"])
            .env("SFTP_URL", url)
            .env("SFTP_KEY_PATH", sshd.file(key))
            .env("SFTP_KNOWN_HOSTS", sshd.file(known_hosts))
            .output()
            .unwrap();
        (out.status.code(), format!("{}{}", stdout(&out), stderr(&out)))
    };
    // Both key formats work: OpenSSH ed25519 and PEM RSA.
    for key in ["id_ed25519", "id_rsa_pem"] {
        let (code, text) = plan(key, "known_hosts", &sshd.url());
        assert_eq!(code, Some(0), "{key}: {text}\n{}", sshd.log());
        assert!(text.contains("Plan: 5 objects to process") && text.contains("5 to delete"), "{text}");
    }
    let (code, text) = plan("id_other", "known_hosts", &sshd.url());
    assert_eq!(code, Some(1));
    assert!(text.contains("refused the private key"), "{text}");
    let (code, text) = plan("id_ed25519", "known_hosts_other", &sshd.url());
    assert_eq!(code, Some(1));
    assert!(text.contains("host key of 127.0.0.1") || text.contains("unknown host key"), "{text}");
    let closed = free_port();
    let (code, text) = plan("id_ed25519", "known_hosts", &format!("sftp://{SFTP_USER}@127.0.0.1:{closed}/landing"));
    assert_eq!(code, Some(1));
    assert!(text.contains(&format!("cannot connect to 127.0.0.1:{closed}")), "{text}");
    assert_eq!(files_under(&sshd.landing()).len(), 5, "a failed connection deleted something");
}

/// pipelines/examples/xml-ingest.yaml, the OAG feed: real sshd, real clamd, local stores.
/// Well-formed XML is written under the run's start and deleted from the server; a file
/// that is not XML goes to the failed store, an infected one to quarantine (both deleted
/// from the server once set aside); a name outside the pattern stays.
#[test]
fn the_xml_ingest_example_writes_checks_and_moves() {
    let clamd = Clamd::start("25M");
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().unwrap();
    let good = ["1124_2026_12_03_09_30_00.xml", "1124_2026_12_03_09_31_00.xml"];
    for (n, name) in good.iter().enumerate() {
        std::fs::write(sshd.landing().join(name), format!("<OAG><Flight n=\"{n}\"/></OAG>\n")).unwrap();
    }
    std::fs::write(sshd.landing().join("1124_2026_12_03_09_32_00.xml"), "<OAG><Flight></OAG>").unwrap();
    infected_file(&sshd.landing().join("1124_2026_12_03_09_33_00.xml"), 200);
    std::fs::write(sshd.landing().join("notes.xml"), "<a/>").unwrap();
    settle_files(&sshd.landing());
    let ran = TestRun::new(dir.path(), &repo().join("pipelines/examples/xml-ingest.yaml").to_string_lossy())
        .env("SFTP_URL", &sshd.url())
        .env("SFTP_KEY_PATH", &sshd.file("id_ed25519"))
        .env("SFTP_KNOWN_HOSTS", &sshd.file("known_hosts"))
        .env("CLAMD_ADDRESS", &clamd.tcp())
        .run();
    assert_eq!(ran.code(), Some(3), "{}\n{}", ran.stderr(), sshd.log());
    let written: Vec<String> =
        files_under(&dir.path().join("var/oag")).into_iter().filter(|f| !f.starts_with("_dqpipe")).collect();
    assert_eq!(written.len(), 2, "{written:?}");
    let folder = written[0].rsplit_once('/').unwrap().0;
    assert_eq!(written, good.map(|g| format!("{folder}/{g}")));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("var/oag").join(&written[1])).unwrap(),
        "<OAG><Flight n=\"1\"/></OAG>\n"
    );
    let reason = read_json(&dir.path().join("var/oag-failed/1124_2026_12_03_09_32_00.xml.error.json"));
    assert!(reason["reason"].as_str().unwrap().starts_with("not XML"), "{reason}");
    assert!(dir.path().join("var/oag-quarantine/1124_2026_12_03_09_33_00.xml").exists());
    assert_eq!(files_under(&sshd.landing()), ["notes.xml"], "every handled file deleted, the other left");
}

/// SFTP as a destination, against a real sshd: files are written under folders made as
/// needed, whole, with no temporary name left; a rerun replaces them; a listing of the
/// folder never shows a temporary file.
#[test]
fn files_are_written_to_sftp_whole_and_replaced_on_a_rerun() {
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("in/sub")).unwrap();
    std::fs::write(dir.path().join("in/a.xml"), "<a/>").unwrap();
    std::fs::write(dir.path().join("in/sub/b.bin"), vec![9u8; 300_000]).unwrap();
    let spec = format!(
        "version: 1\nname: to-sftp\nstores:\n  in: {{ url: file://./in }}\n  out:\n    url: \"{}\"\n    sftp: {{ private_key_path: \"{}\", known_hosts_path: \"{}\" }}\nnodes:\n  list: {{ kind: list, store: in }}\n  fetch: {{ kind: fetch, input: list }}\n  write: {{ kind: put, input: fetch, store: out, key: \"outbox/{{{{ run_date }}}}/{{{{ key }}}}\" }}\n",
        sshd.url(),
        sshd.file("id_ed25519"),
        sshd.file("known_hosts")
    );
    std::fs::write(dir.path().join("p.yaml"), spec).unwrap();
    let ran = TestRun::new(dir.path(), "p.yaml").run();
    assert_eq!(ran.code(), Some(0), "{}\n{}", ran.stderr(), sshd.log());
    let day = chrono::Utc::now().format("%Y/%m/%d").to_string();
    let outbox = sshd.landing().join("outbox").join(&day);
    assert_eq!(all_files_under(&outbox), ["a.xml", "sub/b.bin"], "no temporary file is left");
    assert_eq!(std::fs::read(outbox.join("sub/b.bin")).unwrap(), vec![9u8; 300_000]);
    std::fs::write(dir.path().join("in/a.xml"), "<a>changed</a>").unwrap();
    let again = TestRun::new(dir.path(), "p.yaml").run();
    assert_eq!(again.code(), Some(0), "{}", again.stderr());
    assert_eq!(std::fs::read_to_string(outbox.join("a.xml")).unwrap(), "<a>changed</a>");
    assert_eq!(all_files_under(&outbox), ["a.xml", "sub/b.bin"]);
}
