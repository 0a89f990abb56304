//! A full disk loses nothing: a real file system that fills part way through a run (a
//! tmpfs the test mounts; CI runs as root). Every write that did not fit fails, leaves
//! nothing visible and is transient (exit 4); once there is room again a rerun completes,
//! so no object was marked done whose output is short or missing.

use crate::common::*;

use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs of `size` mounted at `at`, unmounted on drop.
struct SmallDisk {
    at: PathBuf,
}

impl SmallDisk {
    fn mount(at: &Path, size: &str) -> SmallDisk {
        std::fs::create_dir_all(at).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .expect("mount runs");
        assert!(out.status.success(), "mounting a tmpfs needs root (CI runs as root): {}", stderr(&out));
        SmallDisk { at: at.to_path_buf() }
    }
    /// Gives the file system room again, keeping what it holds.
    fn grow(&self, size: &str) {
        let out = Command::new("mount").args(["-o", &format!("remount,size={size}")]).arg(&self.at).output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.at).status();
    }
}

/// The NATS pipeline from `samples` into the internal, quarantine and dead-letter folders
/// (done markers included) of `var`, all on the one small disk.
fn run_on(dir: &Path, samples: &Path, clamd: &Clamd) -> Ran {
    TestRun::nats(dir, &clamd.tcp())
        .env("ARCHIVE_URL", &format!("file://{}", samples.display()))
        .env("INTERNAL_URL", &format!("file://{}", dir.join("var/internal").display()))
        .env("QUARANTINE_URL", &format!("file://{}", dir.join("var/quarantine").display()))
        .env("DEADLETTER_URL", &format!("file://{}", dir.join("var/dead-letter").display()))
        .arg("--concurrency")
        .arg("4")
        .report("../r.json")
        .run()
}

#[test]
fn a_disk_that_fills_fails_the_writes_that_did_not_fit_and_a_rerun_completes() {
    let clamd = Clamd::start("25M");
    let dir = tempfile::tempdir().unwrap();
    // 120 archive files (627 B to a few KB each) of which 6 infected and 6 malformed: the
    // reference is a run on the ordinary disk.
    let samples = samples_and_reference(dir.path(), 120, 6, 6, &clamd.tcp());
    let reference = dir.path().join("var");
    let run_dir = dir.path().join("run");
    std::fs::create_dir_all(&run_dir).unwrap();
    // tmpfs counts pages: 96 KiB holds about 24 files of one page each, folders included,
    // so the disk fills a fifth of the way in: in the outputs, the reasons beside the
    // problem files and the done markers alike.
    let disk = SmallDisk::mount(&run_dir.join("var"), "96k");

    let full = run_on(&run_dir, &samples, &clamd);
    assert_eq!(full.code(), Some(4), "a write that did not fit is transient: {}", full.stderr());
    let failed = full.report["items"]["failed"].as_u64().unwrap();
    assert!(failed > 0, "objects whose write failed are counted failed: {}", full.report);
    let reasons = full.report["failures"].to_string() + &full.report["causes"].to_string();
    assert!(reasons.contains("No space left on device"), "the reason names the full disk: {reasons}");
    // Whatever is visible is whole: byte for byte the reference's file.
    for store in ["internal", "quarantine", "dead-letter"] {
        for f in files_under(&run_dir.join("var").join(store)) {
            if f.ends_with(".error.json") {
                assert!(read_json(&run_dir.join("var").join(store).join(&f)).is_object(), "{store}/{f} is whole");
                continue;
            }
            let got = std::fs::read(run_dir.join("var").join(store).join(&f)).unwrap();
            let want = std::fs::read(reference.join(store).join(&f)).unwrap();
            assert!(got == want, "{store}/{f}: {} bytes visible, the whole file is {}", got.len(), want.len());
        }
        let names: Vec<String> = all_files_under(&run_dir.join("var").join(store));
        assert!(!names.iter().any(|n| n.contains(".dqpipe-tmp-")), "no temporary file left: {names:?}");
    }

    // Room again: the rerun completes, and nothing was taken for done that was not.
    disk.grow("16m");
    let rerun = run_on(&run_dir, &samples, &clamd);
    assert_eq!(rerun.code(), Some(3), "quarantined and dead-lettered files only: {}", rerun.stderr());
    assert_same_files(&reference.join("internal"), &run_dir.join("var/internal"));
    let reason = |f: &str| f.ends_with(".error.json");
    assert_same_files_but(&reference.join("quarantine"), &run_dir.join("var/quarantine"), reason);
    assert_same_files_but(&reference.join("dead-letter"), &run_dir.join("var/dead-letter"), reason);
    let done = done_under(&run_dir.join("var/internal"));
    assert_eq!(done.len(), 120, "every archive file is done once: {done:?}");
}

/// The live SFTP ingest deletes each file from the server once its copies are durable: on
/// a disk that fills, a file is deleted only if both its copies are whole, and every file
/// left on the server is delivered by the rerun.
#[test]
fn the_sftp_ingest_deletes_only_files_whose_copies_are_whole_on_a_disk_that_fills() {
    let clamd = Clamd::start("25M");
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().unwrap();
    let samples = dir.path().join("samples");
    let gen =
        dqpipe(dir.path()).args(["samples", "--out", &samples.to_string_lossy(), "--count", "60"]).output().unwrap();
    assert!(gen.status.success(), "{}", stderr(&gen));
    for f in files_under(&samples) {
        std::fs::copy(samples.join(&f), sshd.landing().join(&f)).unwrap();
    }
    settle_files(&sshd.landing());
    // Both copies (`var/dq`, `var/secure`) and the done markers on one disk of 192 KiB:
    // about 48 one-page files of the 120 copies, so it fills part way through.
    let run_dir = dir.path().join("run");
    let disk = SmallDisk::mount(&run_dir.join("var"), "192k");
    let ingest = || TestRun::sftp_ingest(&run_dir, &sshd, "id_ed25519", &clamd.tcp()).report("../r.json").run();
    let copies = |store: &str| -> Vec<(String, Vec<u8>)> {
        let root = run_dir.join("var").join(store);
        let name = |f: &str| f.rsplit('/').next().unwrap_or(f).to_string();
        files_under(&root).into_iter().map(|f| (name(&f), std::fs::read(root.join(&f)).unwrap())).collect()
    };

    let full = ingest();
    assert_eq!(full.code(), Some(4), "a write that did not fit is transient: {}", full.stderr());
    let (dq, secure) = (copies("dq"), copies("secure"));
    assert!(!dq.is_empty() && full.report["items"]["failed"].as_u64() > Some(0), "the disk filled part way");
    // Every visible copy is whole; every file deleted from the server has both its copies,
    // whole. (The objects' done markers are written in one batch at the end of so short a
    // run: when that did not fit, no file was deleted at all.)
    for (store, held) in [("dq", &dq), ("secure", &secure)] {
        for (name, bytes) in held.iter() {
            assert!(*bytes == std::fs::read(samples.join(name)).unwrap(), "{store}/{name} is short");
        }
    }
    let left = files_under(&sshd.landing());
    for f in files_under(&samples).into_iter().filter(|f| !left.contains(f)) {
        for (store, held) in [("dq", &dq), ("secure", &secure)] {
            assert!(
                held.iter().any(|(name, _)| *name == f),
                "{f} was deleted from the server without its {store} copy"
            );
        }
    }

    disk.grow("16m");
    let rerun = ingest();
    assert_eq!(rerun.code(), Some(0), "{}", rerun.stderr());
    assert!(files_under(&sshd.landing()).is_empty(), "every file delivered and deleted");
    let (dq, secure) = (copies("dq"), copies("secure"));
    for f in files_under(&samples) {
        let original = std::fs::read(samples.join(&f)).unwrap();
        assert!(dq.iter().any(|(n, b)| *n == f && *b == original), "{f}: dq copy");
        assert!(secure.iter().any(|(n, b)| *n == f && *b == original), "{f}: secure copy");
    }
}
