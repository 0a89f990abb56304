//! FTP sources, against Debian's vsftpd: pipelines/examples/ftp-ingest.yaml (FTP -> clamd
//! -> S3 under the time of arrival, moved), and what an FTP store refuses.

use crate::common::*;

/// Clean files are written to s3s-fs under `YYYY-MM-DD/HH:MM:SS.ffffff/<name>` and
/// deleted from the FTP server; the infected one is quarantined with its reason and
/// deleted too; a file modified in the last minute stays for a later run; a rerun finds
/// nothing to do.
#[test]
fn the_ftp_ingest_example_scans_and_moves_files_into_s3() {
    let clamd = Clamd::start("25M");
    let ftp = Vsftpd::start();
    let s3 = S3Server::start(&["internal"]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(ftp.landing().join("ACL_1.csv"), "carrier,flight\nBAW,1\n").unwrap();
    std::fs::write(ftp.landing().join("ACL_2.csv"), vec![b'x'; 200_000]).unwrap();
    infected_file(&ftp.landing().join("ACL_3.csv"), 300);
    settle_files(&ftp.landing());
    std::fs::write(ftp.landing().join("ACL_4.csv"), "still arriving").unwrap();
    let run = |report: &str| {
        TestRun::new(dir.path(), &repo().join("pipelines/examples/ftp-ingest.yaml").to_string_lossy())
            .s3(&s3)
            .env("FTP_URL", &ftp.url())
            .env("FTP_PASSWORD", "dqpipe@example")
            .env("INTERNAL_URL", "s3://internal/acl")
            .env("CLAMD_ADDRESS", &clamd.tcp())
            .report(report)
            .run()
    };
    let ran = run("r.json");
    assert_eq!(ran.code(), Some(3), "{}", ran.stderr());
    let written: Vec<String> =
        files_under(&s3.bucket_dir("internal")).into_iter().filter(|f| !f.contains("_dqpipe")).collect();
    assert_eq!(written.len(), 2, "{written:?}");
    let folder = written[0].rsplit_once('/').unwrap().0.to_string();
    assert_eq!(written, [format!("{folder}/ACL_1.csv"), format!("{folder}/ACL_2.csv")]);
    // acl/2026-12-03/09:30:00.123456
    let stamp = folder.strip_prefix("acl/").unwrap();
    assert!(chrono::NaiveDateTime::parse_from_str(stamp, "%Y-%m-%d/%H:%M:%S%.6f").is_ok(), "{stamp}");
    assert_eq!(std::fs::read(s3.bucket_dir("internal").join(&written[1])).unwrap(), vec![b'x'; 200_000]);
    let reason = read_json(&dir.path().join("var/acl-quarantine/ACL_3.csv.error.json"));
    assert_eq!(reason["reason"], "infected: Local.EICAR.UNOFFICIAL", "{reason}");
    assert_eq!(files_under(&ftp.landing()), ["ACL_4.csv"], "handled files deleted, the one still arriving left");
    let again = run("again.json");
    assert_eq!(again.code(), Some(0), "{}", again.stderr());
    assert_eq!(again.report["items"]["from_sources"], 0);
}

/// A wrong password stops the run before anything moves (exit 1) and never prints the
/// password; an FTP store is a source, so `validate` refuses a `put` to it.
#[test]
fn a_wrong_password_fails_the_preflight_and_ftp_is_never_written_to() {
    let ftp = Vsftpd::start();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(ftp.landing().join("a.csv"), "x").unwrap();
    settle_files(&ftp.landing());
    let spec = "version: 1\nname: t\nstores:\n  ftp: { url: \"${FTP_URL}\", ftp: { password: \"${FTP_PASSWORD}\" } }\n  out: { url: file://./out }\nnodes:\n  list: { kind: list, store: ftp, delete_after_success: true }\n  fetch: { kind: fetch, input: list }\n  write: { kind: put, input: fetch, store: out, key: \"{{ name }}\" }\n";
    std::fs::write(dir.path().join("p.yaml"), spec).unwrap();
    let url = ftp.url().replace("anonymous@", "nobody@");
    let ran = TestRun::new(dir.path(), "p.yaml").env("FTP_URL", &url).env("FTP_PASSWORD", "s3cret-pw-123").run();
    assert_eq!(ran.code(), Some(1), "{}", ran.stderr());
    assert!(ran.stderr().contains("logging in to 127.0.0.1"), "{}", ran.stderr());
    assert!(!ran.stderr().contains("s3cret-pw-123"), "{}", ran.stderr());
    assert_eq!(files_under(&ftp.landing()), ["a.csv"]);
    let to_ftp = spec.replace("store: out, key", "store: ftp, key");
    std::fs::write(dir.path().join("p.yaml"), to_ftp).unwrap();
    let out =
        dqpipe(dir.path()).args(["validate", "p.yaml"]).env("FTP_URL", &url).env("FTP_PASSWORD", "x").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("nodes.write.store: store `ftp`") && stderr(&out).contains("cannot be written to"),
        "{}",
        stderr(&out)
    );
}

/// FTPS (explicit TLS) against vsftpd requiring it for logins and data: with the server's
/// CA trusted, files are listed, read and deleted; without it the certificate is refused
/// before anything moves; plain FTP is refused by the server.
#[test]
fn ftps_reads_and_moves_files_and_refuses_a_certificate_it_cannot_trust() {
    let ftp = Vsftpd::start_tls();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(ftp.landing().join("a.csv"), "x,y\n").unwrap();
    settle_files(&ftp.landing());
    let spec = |tls: &str| {
        format!(
            "version: 1\nname: t\nstores:\n  ftp: {{ url: \"{}\", ftp: {{ password: x, {tls} }} }}\n  out: {{ url: file://./out }}\nnodes:\n  list: {{ kind: list, store: ftp, delete_after_success: true }}\n  fetch: {{ kind: fetch, input: list }}\n  write: {{ kind: put, input: fetch, store: out, key: \"{{{{ name }}}}\" }}\n",
            ftp.url()
        )
    };
    for (tls, what) in [("tls: explicit", "certificate"), ("tls: none", "530")] {
        std::fs::write(dir.path().join("p.yaml"), spec(tls)).unwrap();
        let ran = TestRun::new(dir.path(), "p.yaml").run();
        assert_eq!(ran.code(), Some(1), "{tls}: {}", ran.stderr());
        assert!(ran.stderr().to_lowercase().contains(what), "{tls}: {}", ran.stderr());
        assert_eq!(files_under(&ftp.landing()), ["a.csv"]);
    }
    std::fs::write(dir.path().join("p.yaml"), spec(&format!("tls: explicit, ca_bundle: \"{}\"", ftp.ca()))).unwrap();
    let ran = TestRun::new(dir.path(), "p.yaml").run();
    assert_eq!(ran.code(), Some(0), "{}", ran.stderr());
    assert_eq!(std::fs::read_to_string(dir.path().join("out/a.csv")).unwrap(), "x,y\n");
    assert!(files_under(&ftp.landing()).is_empty(), "moved");
}

/// A server that takes 2 connections from one client (vsftpd's `max_per_ip`, answered
/// 421 past it) and a fetch that wants 16 at once: with `max_connections: 2` the store
/// waits for its own connections, so 30 files move with no refusal and no retry.
#[test]
fn the_store_keeps_within_the_servers_connection_limit() {
    let ftp = Vsftpd::start_limited(2);
    let dir = tempfile::tempdir().unwrap();
    for n in 0..30 {
        std::fs::write(ftp.landing().join(format!("f{n:02}.csv")), format!("row,{n}\n")).unwrap();
    }
    settle_files(&ftp.landing());
    let spec = format!(
        "version: 1\nname: t\nstores:\n  ftp: {{ url: \"{}\", ftp: {{ password: x, max_connections: 2 }} }}\n  out: {{ url: file://./out }}\nnodes:\n  list: {{ kind: list, store: ftp, delete_after_success: true }}\n  fetch: {{ kind: fetch, input: list, concurrency: 16 }}\n  write: {{ kind: put, input: fetch, store: out, key: \"{{{{ name }}}}\" }}\n",
        ftp.url()
    );
    std::fs::write(dir.path().join("p.yaml"), spec).unwrap();
    let ran = TestRun::new(dir.path(), "p.yaml").report("r.json").run();
    assert_eq!(ran.code(), Some(0), "{}", ran.stderr());
    assert_eq!(node(&ran.report, "fetch")["retries"], 0, "{}", ran.stderr());
    assert_eq!(files_under(&dir.path().join("out")).len(), 30);
    assert_eq!(std::fs::read_to_string(dir.path().join("out/f07.csv")).unwrap(), "row,7\n");
    assert!(files_under(&ftp.landing()).is_empty(), "moved");
}
