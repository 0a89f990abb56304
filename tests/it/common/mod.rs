//! Helpers shared by the integration tests: the binary, a real clamd, a real HTTP listener.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

mod clamd;
mod ftp;
mod http_proxy;
mod listeners;
mod proxies;
mod servers;
mod sshd;

pub use clamd::*;
pub use ftp::*;
pub use http_proxy::*;
pub use listeners::*;
pub use proxies::*;
pub use servers::*;
pub use sshd::*;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The dqpipe binary, run in `dir`, with a clean environment for the pipeline variables.
pub fn dqpipe(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_dqpipe"));
    c.current_dir(dir);
    // The tests' clamd has local signatures only (scripts/clamd-local), which name no
    // database version: the shipped specs refuse such a scanner unless this says so.
    c.env("CLAMAV_ALLOW_UNVERSIONED_DB", "true");
    for v in [
        "ARCHIVE_URL",
        "ARCHIVE_PREFIX",
        "INTERNAL_URL",
        "INTERNAL_PREFIX",
        "QUARANTINE_URL",
        "DEADLETTER_URL",
        "CLAMD_ADDRESS",
        "SLACK_WEBHOOK",
        "SRC_URL",
        "DST_URL",
        "S3_ENDPOINT",
        "S3_SRC_BUCKET_NAME",
        "S3_SRC_KEY_PREFIX",
        "S3_SRC_ACCESS_KEY_ID",
        "S3_SRC_SECRET_ACCESS_KEY",
        "S3_DST_BUCKET_LOCATION",
        "S3_DST_ACCESS_KEY_ID",
        "S3_DST_SECRET_ACCESS_KEY",
        "S3_REGION_NAME",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_ENDPOINT",
        "AWS_PROFILE",
    ] {
        c.env_remove(v);
    }
    c
}

/// `dqpipe run SPEC --progress off --report r.json` in a folder: the one way the tests
/// run a pipeline. Settings are added with [`TestRun::env`], [`TestRun::arg`] and
/// [`TestRun::report`] (another report file); [`TestRun::run`] waits for it and reads its
/// report; [`TestRun::into_command`] gives the command to tests that spawn and signal it.
pub struct TestRun {
    cmd: Command,
    dir: PathBuf,
    report: String,
}

impl TestRun {
    pub fn new(dir: &Path, spec: &str) -> TestRun {
        let mut cmd = dqpipe(dir);
        cmd.args(["run", spec, "--progress", "off"]);
        TestRun { cmd, dir: dir.to_path_buf(), report: "r.json".into() }
    }
    /// `pipelines/nats-historical.yaml` on the local folders under `dir/var`, scanning
    /// with the clamd at `clamd`.
    pub fn nats(dir: &Path, clamd: &str) -> TestRun {
        TestRun::new(dir, &nats_pipeline()).env("CLAMD_ADDRESS", clamd)
    }
    /// `pipelines/nats-historical.yaml` with the original job's Secret for the test S3
    /// server ([`nats_s3_env`]), through `endpoint`.
    pub fn nats_s3(dir: &Path, endpoint: &str, clamd: &str) -> TestRun {
        let mut run = TestRun::new(dir, &nats_pipeline());
        nats_s3_env(&mut run.cmd, endpoint, clamd);
        run
    }
    /// `pipelines/nats-sftp-ingest.yaml` from `sshd`'s landing folder, logging in with
    /// its key file `key`, to the local folders under `dir/var` unless told otherwise.
    pub fn sftp_ingest(dir: &Path, sshd: &Sshd, key: &str, clamd: &str) -> TestRun {
        TestRun::new(dir, &repo().join("pipelines/nats-sftp-ingest.yaml").to_string_lossy())
            .env("SFTP_URL", &sshd.url())
            .env("SFTP_KEY_PATH", &sshd.file(key))
            .env("SFTP_KNOWN_HOSTS", &sshd.file("known_hosts"))
            .env("CLAMD_ADDRESS", clamd)
    }
    /// The test S3 server's endpoint and keys, for the spec's S3 stores.
    pub fn s3(self, s3: &S3Server) -> TestRun {
        self.env("S3_ENDPOINT", &s3.endpoint())
            .env("AWS_ACCESS_KEY_ID", S3_KEY_ID)
            .env("AWS_SECRET_ACCESS_KEY", S3_SECRET)
    }
    pub fn env(mut self, name: &str, value: &str) -> TestRun {
        self.cmd.env(name, value);
        self
    }
    pub fn arg(mut self, arg: &str) -> TestRun {
        self.cmd.arg(arg);
        self
    }
    pub fn args(self, args: &[&str]) -> TestRun {
        args.iter().fold(self, |run, a| run.arg(a))
    }
    /// The report file, in the run's folder (`r.json` unless set).
    pub fn report(mut self, file: &str) -> TestRun {
        self.report = file.to_string();
        self
    }
    pub fn into_command(mut self) -> Command {
        self.cmd.args(["--report", &self.report]);
        self.cmd
    }
    pub fn run(self) -> Ran {
        let (dir, report) = (self.dir.clone(), self.report.clone());
        let out = self.into_command().output().unwrap();
        let report = std::fs::read(dir.join(report))
            .ok()
            .map(|b| serde_json::from_slice(&b).expect("the report is JSON"))
            .unwrap_or(serde_json::Value::Null);
        Ran { out, report }
    }
}

/// What a [`TestRun`] printed, its exit code and its report (`null` if none was written).
pub struct Ran {
    pub out: Output,
    pub report: serde_json::Value,
}

impl Ran {
    pub fn code(&self) -> Option<i32> {
        self.out.status.code()
    }
    pub fn stderr(&self) -> String {
        stderr(&self.out)
    }
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Whether the server `child` started accepts connections on 127.0.0.1:`port`: true as
/// soon as it does; false once it has exited, or after 10 s (polled every 100 ms).
pub fn listening(child: &mut std::process::Child, port: u16) -> bool {
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        if matches!(child.try_wait(), Ok(Some(_))) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free loopback port")
}

/// Every data file under `dir`, as paths relative to it; done markers (`_dqpipe/`) are
/// left out (see `markers_under`).
pub fn files_under(dir: &Path) -> Vec<String> {
    all_files_under(dir).into_iter().filter(|f| !is_marker(f)).collect()
}

/// The objects recorded as done by the markers under `dir` (one JSON line per object in
/// each marker file), as `key@version`.
pub fn done_under(dir: &Path) -> Vec<String> {
    let mut done = Vec::new();
    // Done markers only: not a run's lease (`_dqpipe/leases/`) or a batch's manifests.
    for f in all_files_under(dir).into_iter().filter(|f| is_marker(f) && f.contains("_dqpipe/done/")) {
        for line in std::fs::read_to_string(dir.join(&f)).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            done.push(format!("{}@{}", v["key"].as_str().unwrap(), v["version"].as_str().unwrap()));
        }
    }
    done
}

pub fn is_marker(path: &str) -> bool {
    path.split('/').any(|seg| seg == "_dqpipe")
}

pub fn all_files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(root: &Path, d: &Path, out: &mut Vec<String>) {
        let Ok(rd) = std::fs::read_dir(d) else { return };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(root, &p, out);
            } else if let Ok(rel) = p.strip_prefix(root) {
                out.push(rel.to_string_lossy().into_owned());
            }
        }
    }
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// The original job's Secret for nats-historical.yaml against the test S3 server (or a
/// proxy in front of it at `endpoint`): archive `archive/nats/`, output `internal`,
/// quarantine and dead letter in `ops`.
pub fn nats_s3_env(c: &mut Command, endpoint: &str, clamd: &str) {
    c.env("S3_ENDPOINT", endpoint)
        .env("S3_REGION_NAME", "eu-west-2")
        .env("S3_SRC_BUCKET_NAME", "archive")
        .env("S3_SRC_KEY_PREFIX", "nats/")
        .env("S3_SRC_ACCESS_KEY_ID", S3_KEY_ID)
        .env("S3_SRC_SECRET_ACCESS_KEY", S3_SECRET)
        .env("S3_DST_BUCKET_LOCATION", "internal")
        .env("S3_DST_ACCESS_KEY_ID", S3_KEY_ID)
        .env("S3_DST_SECRET_ACCESS_KEY", S3_SECRET)
        .env("QUARANTINE_URL", "s3://ops/quarantine")
        .env("DEADLETTER_URL", "s3://ops/dead-letter")
        .env("CLAMD_ADDRESS", clamd);
}

pub fn nats_pipeline() -> String {
    repo().join("pipelines/nats-historical.yaml").to_string_lossy().into_owned()
}

/// Generated archive files in `dir/samples`, and the stores a local run of the NATS
/// pipeline makes of them (`dir/var/...`): the reference other runs are compared with.
pub fn samples_and_reference(dir: &Path, count: usize, infected: usize, malformed: usize, clamd: &str) -> PathBuf {
    let samples = dir.join("samples");
    let gen = dqpipe(dir)
        .args(["samples", "--out", &samples.to_string_lossy(), "--count", &count.to_string()])
        .args(["--infected", &infected.to_string(), "--malformed", &malformed.to_string()])
        .output()
        .unwrap();
    assert!(gen.status.success(), "{}", stderr(&gen));
    let local = dqpipe(dir)
        .args(["run", &nats_pipeline(), "--progress", "off"])
        .env("ARCHIVE_URL", format!("file://{}", samples.display()))
        .env("CLAMD_ADDRESS", clamd)
        .output()
        .unwrap();
    assert_eq!(local.status.code(), Some(if infected + malformed > 0 { 3 } else { 0 }), "{}", stderr(&local));
    samples
}

/// Copies the samples into the S3 server's archive bucket under `nats/`.
pub fn upload_samples(s3: &S3Server, samples: &Path) {
    let archive = s3.bucket_dir("archive").join("nats");
    std::fs::create_dir_all(&archive).unwrap();
    for f in files_under(samples) {
        std::fs::copy(samples.join(&f), archive.join(&f)).unwrap();
    }
}

/// Asserts two folders hold the same data files with the same bytes.
pub fn assert_same_files(expected: &Path, got: &Path) {
    assert_same_files_but(expected, got, |_| false);
}

/// Asserts two folders hold the same files, with the same bytes except for the files
/// `names_only` picks, whose names only are compared (reasons hold run-specific metadata).
pub fn assert_same_files_but(expected: &Path, got: &Path, names_only: impl Fn(&str) -> bool) {
    let fe = files_under(expected);
    let fg = files_under(got);
    let missing: Vec<_> = fe.iter().filter(|f| !fg.contains(f)).take(5).collect();
    let extra: Vec<_> = fg.iter().filter(|f| !fe.contains(f)).take(5).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{} vs {}: missing {missing:?}, extra {extra:?}",
        expected.display(),
        got.display()
    );
    for f in fe.iter().filter(|f| !names_only(f)) {
        assert!(std::fs::read(expected.join(f)).unwrap() == std::fs::read(got.join(f)).unwrap(), "{f} differs");
    }
}

pub fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// An archive file of `size` bytes that starts with the EICAR test signature.
pub fn infected_file(path: &Path, size: usize) {
    let mut bytes = dqpipe_plugins::clamav::eicar().into_bytes();
    bytes.resize(size, b' ');
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// `count` randomly built archive files under `dir/archive` (scripts/golden-nats-python
/// `random`, seed 20261128: unicode raw and escaped, lone surrogates, number spellings,
/// repeated keys, wrong types), with Python's own records and failures beside them.
pub fn random_archive(dir: &Path, count: usize) {
    let generated = Command::new("python3")
        .arg(repo().join("scripts/golden-nats-python"))
        .args(["random", &count.to_string(), "20261128"])
        .arg(dir)
        .output()
        .expect("python3 runs scripts/golden-nats-python");
    assert!(generated.status.success(), "{}", stderr(&generated));
}

/// The part of a run report about node `name`.
pub fn node<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["nodes"].as_array().unwrap().iter().find(|n| n["name"] == name).unwrap_or_else(|| panic!("no node {name}"))
}
