//! Helpers shared by the integration tests: the binary, a real clamd, a real HTTP listener.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

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

/// A real clamd (Debian's clamav-daemon) started by scripts/clamd-local, stopped on drop.
pub struct Clamd {
    pub dir: tempfile::TempDir,
    pub port: u16,
}

impl Clamd {
    pub fn start(stream_max: &str) -> Clamd {
        let clamd = Clamd { dir: tempfile::tempdir().expect("temp dir"), port: free_port() };
        clamd.start_again(stream_max);
        clamd
    }
    /// Starts clamd (again, after `stop`) in the same folder, on the same port.
    pub fn start_again(&self, stream_max: &str) {
        let out = Command::new(repo().join("scripts/clamd-local"))
            .arg("start")
            .env("CLAMD_DIR", self.dir.path())
            .env("CLAMD_PORT", self.port.to_string())
            .env("CLAMD_STREAM_MAX", stream_max)
            .output()
            .expect("scripts/clamd-local runs");
        assert!(out.status.success(), "clamd did not start: {}{}", stdout(&out), stderr(&out));
    }
    pub fn tcp(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.port)
    }
    pub fn unix(&self) -> String {
        format!("unix://{}", self.dir.path().join("clamd.sock").display())
    }
    pub fn stop(&self) {
        let _ = Command::new(repo().join("scripts/clamd-local")).arg("stop").env("CLAMD_DIR", self.dir.path()).output();
        // Wait until the port is closed.
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Clamd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// How the webhook listener answers.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Ok,
    Status500,
    /// Never answers (until the test ends).
    Hang,
    /// Holds each request until `n` are open at once (or `hold_ms` have passed); once `n`
    /// were open together, stops holding. A test observes how many requests a node
    /// really has in flight.
    Barrier {
        n: usize,
        hold_ms: u64,
    },
}

/// A real HTTP listener on 127.0.0.1 (tiny_http) recording every request body.
pub struct Listener {
    pub url: String,
    pub bodies: Arc<Mutex<Vec<serde_json::Value>>>,
    /// The most requests open at once.
    pub max_open: Arc<Mutex<usize>>,
}

impl Listener {
    pub fn start(answer: Answer) -> Listener {
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").expect("listener"));
        let port = server.server_addr().to_ip().map(|a| a.port()).unwrap_or(0);
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let max_open = Arc::new(Mutex::new(0usize));
        // (requests open now, whether the barrier was reached), and its condition variable.
        let open = Arc::new((Mutex::new((0usize, false)), Condvar::new()));
        let (b, m) = (bodies.clone(), max_open.clone());
        std::thread::spawn(move || {
            for mut req in server.incoming_requests() {
                let (b, m, open) = (b.clone(), m.clone(), open.clone());
                std::thread::spawn(move || {
                    let mut text = String::new();
                    let _ = req.as_reader().read_to_string(&mut text);
                    if let Ok(v) = serde_json::from_str(&text) {
                        b.lock().unwrap().push(v);
                    }
                    {
                        let (state, cv) = &*open;
                        let mut st = state.lock().unwrap();
                        st.0 += 1;
                        let mut mx = m.lock().unwrap();
                        *mx = (*mx).max(st.0);
                        drop(mx);
                        if let Answer::Barrier { n, hold_ms } = answer {
                            if st.0 >= n {
                                st.1 = true;
                            }
                            cv.notify_all();
                            st = cv.wait_timeout_while(st, Duration::from_millis(hold_ms), |s| !s.1).unwrap().0;
                        }
                        st.0 -= 1;
                    }
                    match answer {
                        Answer::Hang => std::thread::sleep(Duration::from_secs(600)),
                        Answer::Status500 => {
                            let _ = req.respond(tiny_http::Response::from_string("no").with_status_code(500));
                        }
                        _ => {
                            let _ = req.respond(tiny_http::Response::from_string("ok"));
                        }
                    }
                });
            }
        });
        Listener { url: format!("http://127.0.0.1:{port}/services/T000/B000/XXXX"), bodies, max_open }
    }

    pub fn received(&self) -> Vec<serde_json::Value> {
        self.bodies.lock().unwrap().clone()
    }
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
    for f in all_files_under(dir).into_iter().filter(|f| is_marker(f)) {
        for line in std::fs::read_to_string(dir.join(&f)).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            done.push(format!("{}@{}", v["key"].as_str().unwrap(), v["version"].as_str().unwrap()));
        }
    }
    done
}

fn is_marker(path: &str) -> bool {
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

/// The access key pair of the test S3 server. Test-only values, never real credentials.
pub const S3_KEY_ID: &str = "dqpipe-test-key";
pub const S3_SECRET: &str = "dqpipe-test-secret-0123456789";

/// A real S3-compatible server (s3s-fs, installed pinned by scripts/test) on 127.0.0.1,
/// serving buckets that are folders under `root`; stopped on drop.
pub struct S3Server {
    pub root: tempfile::TempDir,
    pub port: u16,
    child: std::process::Child,
}

impl S3Server {
    pub fn start(buckets: &[&str]) -> S3Server {
        let root = tempfile::tempdir().expect("temp dir");
        for b in buckets {
            std::fs::create_dir_all(root.path().join(b)).expect("bucket folder");
        }
        let port = free_port();
        let bin = std::env::var("S3S_FS").unwrap_or_else(|_| "s3s-fs".to_string());
        let mut child = Command::new(&bin)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", S3_KEY_ID, "--secret-key", S3_SECRET])
            .arg(root.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `{bin}` ({e}); scripts/test installs it (cargo install s3s-fs)"));
        if listening(&mut child, port) {
            return S3Server { root, port, child };
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("s3s-fs did not listen on 127.0.0.1:{port} (it exited, or not within 10 s)");
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The folder that holds a bucket's objects, one file per key.
    pub fn bucket_dir(&self, bucket: &str) -> PathBuf {
        self.root.path().join(bucket)
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What the fault proxy does to one connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Forwards both ways (and closes the connection after a second, so that clients
    /// keep opening new ones and meet the faults).
    Pass,
    /// Closes the connection as soon as the client has sent something.
    Reset,
    /// Waits this many milliseconds, then forwards.
    Delay(u64),
    /// Answers `HTTP/1.1 500` without forwarding (for HTTP upstreams).
    Http500,
    /// Forwards the request, then cuts the answer after a few bytes.
    Cut,
}

/// A fault-injecting TCP proxy on 127.0.0.1: connection `n` gets `pattern[n % len]`.
/// The pattern can be changed while it runs.
pub struct FaultProxy {
    pub port: u16,
    pub pattern: Arc<Mutex<Vec<Fault>>>,
}

impl FaultProxy {
    pub fn start(upstream: u16, pattern: Vec<Fault>) -> FaultProxy {
        use std::io::{Read, Write};
        use std::net::TcpStream;
        use std::sync::atomic::Ordering;
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy listener");
        let port = listener.local_addr().expect("proxy address").port();
        let pattern = Arc::new(Mutex::new(pattern));
        let conns = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let pat = pattern.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(mut client) = client else { continue };
                let n = conns.fetch_add(1, Ordering::SeqCst);
                let fault = {
                    let p = pat.lock().unwrap();
                    if p.is_empty() {
                        Fault::Pass
                    } else {
                        p[n % p.len()]
                    }
                };
                std::thread::spawn(move || {
                    let mut first = [0u8; 1];
                    match fault {
                        Fault::Reset => {
                            let _ = client.read(&mut first);
                            return;
                        }
                        Fault::Http500 => {
                            let mut head = Vec::new();
                            let mut buf = [0u8; 4096];
                            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                                match client.read(&mut buf) {
                                    Ok(0) | Err(_) => return,
                                    Ok(k) => head.extend_from_slice(&buf[..k]),
                                }
                            }
                            let body = "<Error><Code>InternalError</Code><Message>injected</Message></Error>";
                            let _ = write!(
                                client,
                                "HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                                body.len()
                            );
                            return;
                        }
                        Fault::Delay(ms) => std::thread::sleep(Duration::from_millis(ms)),
                        Fault::Pass | Fault::Cut => {}
                    }
                    let Ok(mut server) = TcpStream::connect(("127.0.0.1", upstream)) else { return };
                    let (Ok(mut c2), Ok(mut s2)) = (client.try_clone(), server.try_clone()) else { return };
                    let up = std::thread::spawn(move || {
                        let _ = std::io::copy(&mut c2, &mut s2);
                        let _ = s2.shutdown(std::net::Shutdown::Write);
                    });
                    if fault == Fault::Cut {
                        let mut buf = [0u8; 7];
                        if let Ok(k) = server.read(&mut buf) {
                            let _ = client.write_all(&buf[..k]);
                        }
                        let _ = client.shutdown(std::net::Shutdown::Both);
                        let _ = server.shutdown(std::net::Shutdown::Both);
                        let _ = up.join();
                        return;
                    }
                    if fault == Fault::Pass {
                        let (c3, s3) = (client.try_clone(), server.try_clone());
                        std::thread::spawn(move || {
                            std::thread::sleep(Duration::from_secs(1));
                            if let (Ok(c), Ok(s)) = (c3, s3) {
                                let _ = c.shutdown(std::net::Shutdown::Both);
                                let _ = s.shutdown(std::net::Shutdown::Both);
                            }
                        });
                    }
                    let _ = std::io::copy(&mut server, &mut client);
                    let _ = client.shutdown(std::net::Shutdown::Write);
                    let _ = up.join();
                });
            }
        });
        FaultProxy { port, pattern }
    }

    pub fn set(&self, pattern: Vec<Fault>) {
        *self.pattern.lock().unwrap() = pattern;
    }
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

/// The throwaway system user the test sshd lets in (created by the tests, as root).
pub const SFTP_USER: &str = "dqpipe-sftp";

/// Debian's OpenSSH `sshd` on a loopback port, SFTP only, chrooted; stopped on drop.
/// Keys in `base`: `id_ed25519` (OpenSSH format) and `id_rsa_pem` (PEM) are authorized,
/// `id_other` is not; `known_hosts` holds the server's host key, `known_hosts_other` a
/// different one. Files land in `landing()`.
pub struct Sshd {
    pub base: tempfile::TempDir,
    pub port: u16,
    child: std::process::Child,
}

impl Sshd {
    pub fn start() -> Sshd {
        use std::os::unix::fs::PermissionsExt;
        let run = |cmd: &mut Command| {
            let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
            assert!(out.status.success(), "{cmd:?}: {}{}", stdout(&out), stderr(&out));
        };
        if !Command::new("id").arg(SFTP_USER).output().is_ok_and(|o| o.status.success()) {
            run(Command::new("useradd").args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                SFTP_USER,
            ]));
        }
        // An unlocked account without a password: sshd (without PAM) refuses locked ones.
        run(Command::new("usermod").args(["-p", "*", SFTP_USER]));
        std::fs::create_dir_all("/run/sshd").expect("/run/sshd");
        // The chroot and every folder above it must be root's and not writable by others.
        let base = tempfile::Builder::new().prefix("dqpipe-sftp-").tempdir_in("/run").expect("a folder under /run");
        let b = base.path();
        std::fs::set_permissions(b, std::fs::Permissions::from_mode(0o755)).unwrap();
        let landing = b.join("chroot/landing");
        std::fs::create_dir_all(&landing).unwrap();
        std::fs::set_permissions(b.join("chroot"), std::fs::Permissions::from_mode(0o755)).unwrap();
        run(Command::new("chown").arg(format!("{SFTP_USER}:")).arg(&landing));
        for (name, args) in [
            ("host_ed25519", vec!["-t", "ed25519"]),
            ("other_host", vec!["-t", "ed25519"]),
            ("id_ed25519", vec!["-t", "ed25519"]),
            ("id_rsa_pem", vec!["-t", "rsa", "-b", "2048", "-m", "PEM"]),
            ("id_other", vec!["-t", "ed25519"]),
        ] {
            run(Command::new("ssh-keygen").args(["-q", "-N", "", "-f"]).arg(b.join(name)).args(args));
        }
        let pubkey = |n: &str| std::fs::read_to_string(b.join(format!("{n}.pub"))).unwrap();
        std::fs::write(b.join("authorized_keys"), pubkey("id_ed25519") + &pubkey("id_rsa_pem")).unwrap();
        let port = free_port();
        std::fs::write(b.join("known_hosts"), format!("[127.0.0.1]:{port} {}", pubkey("host_ed25519"))).unwrap();
        std::fs::write(b.join("known_hosts_other"), format!("[127.0.0.1]:{port} {}", pubkey("other_host"))).unwrap();
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {b}/host_ed25519\nPidFile {b}/sshd.pid\n\
             AuthorizedKeysFile {b}/authorized_keys\nStrictModes no\nPasswordAuthentication no\n\
             KbdInteractiveAuthentication no\nUsePAM no\nPermitRootLogin no\nAllowUsers {SFTP_USER}\n\
             Subsystem sftp internal-sftp\nChrootDirectory {b}/chroot\nForceCommand internal-sftp\n\
             AllowTcpForwarding no\nX11Forwarding no\nLogLevel VERBOSE\n",
            b = b.display()
        );
        std::fs::write(b.join("sshd_config"), config).unwrap();
        let mut child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(b.join("sshd_config"))
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(b.join("sshd.log")).unwrap())
            .spawn()
            .expect("/usr/sbin/sshd (scripts/test installs openssh-server)");
        if listening(&mut child, port) {
            return Sshd { base, port, child };
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("sshd did not listen: {}", std::fs::read_to_string(b.join("sshd.log")).unwrap_or_default());
    }

    pub fn landing(&self) -> PathBuf {
        self.base.path().join("chroot/landing")
    }

    pub fn url(&self) -> String {
        format!("sftp://{SFTP_USER}@127.0.0.1:{}/landing", self.port)
    }

    pub fn file(&self, name: &str) -> String {
        self.base.path().join(name).to_string_lossy().into_owned()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.base.path().join("sshd.log")).unwrap_or_default()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Dates every file in `dir` two minutes back: files that landed a while ago, past the
/// SFTP store's `min_age_secs` (60), which leaves younger ones for a later run.
pub fn settle_files(dir: &Path) {
    let then = std::time::SystemTime::now() - Duration::from_secs(120);
    for f in all_files_under(dir) {
        let file = std::fs::File::options().write(true).open(dir.join(&f)).expect("a landed file");
        file.set_modified(then).expect("setting a file's modification time");
    }
}

/// A TCP proxy that forwards everything and keeps a copy of what clients sent (request
/// lines and headers), to check what dqpipe asked a server for.
pub struct RecordingProxy {
    pub port: u16,
    pub sent: Arc<Mutex<Vec<u8>>>,
}

impl RecordingProxy {
    pub fn start(upstream: u16) -> RecordingProxy {
        RecordingProxy::start_altering(upstream, None)
    }

    /// A recording proxy that also changes every byte `from` the clients send into `to`
    /// before passing it on: the bytes of an object damaged on the way to the server.
    pub fn start_altering(upstream: u16, alter: Option<(u8, u8)>) -> RecordingProxy {
        use std::io::{Read, Write};
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy listener");
        let port = listener.local_addr().unwrap().port();
        let sent = Arc::new(Mutex::new(Vec::new()));
        let rec = sent.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(mut client) = client else { continue };
                let rec = rec.clone();
                std::thread::spawn(move || {
                    let Ok(mut server) = std::net::TcpStream::connect(("127.0.0.1", upstream)) else { return };
                    let (Ok(mut c2), Ok(mut s2)) = (client.try_clone(), server.try_clone()) else { return };
                    let up = std::thread::spawn(move || {
                        let mut buf = [0u8; 16 * 1024];
                        loop {
                            match c2.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => {
                                    rec.lock().unwrap().extend_from_slice(&buf[..n]);
                                    if let Some((from, to)) = alter {
                                        buf[..n].iter_mut().filter(|b| **b == from).for_each(|b| *b = to);
                                    }
                                    if s2.write_all(&buf[..n]).is_err() {
                                        break;
                                    }
                                }
                            }
                        }
                        let _ = s2.shutdown(std::net::Shutdown::Write);
                    });
                    let _ = std::io::copy(&mut server, &mut client);
                    let _ = client.shutdown(std::net::Shutdown::Write);
                    let _ = up.join();
                });
            }
        });
        RecordingProxy { port, sent }
    }

    /// How many times `needle` appears in what clients sent (case-insensitive).
    pub fn count(&self, needle: &str) -> usize {
        let text = String::from_utf8_lossy(&self.sent.lock().unwrap()).to_ascii_lowercase();
        text.matches(&needle.to_ascii_lowercase()).count()
    }
}

/// Debian's stunnel4 terminating TLS in front of `upstream` on 127.0.0.1, with a server
/// certificate for `127.0.0.1` signed by a CA the test made with openssl (`ca`: the PEM a
/// client trusts). Stopped on drop.
pub struct TlsFront {
    pub port: u16,
    pub ca: PathBuf,
    _dir: tempfile::TempDir,
    child: std::process::Child,
}

impl TlsFront {
    pub fn start(upstream: u16) -> TlsFront {
        let dir = tempfile::tempdir().expect("temp dir");
        let d = dir.path();
        std::fs::write(
            d.join("server.ext"),
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
        let steps: [Vec<&str>; 3] = [
            [
                &["req", "-x509"][..],
                &ec,
                &["-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=dqpipe test CA"],
            ]
            .concat(),
            [&["req"][..], &ec, &["-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1"]].concat(),
            vec![
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "server.pem",
                "-days",
                "2",
                "-extfile",
                "server.ext",
            ],
        ];
        for args in steps {
            let out = Command::new("openssl")
                .args(&args)
                .current_dir(d)
                .output()
                .expect("openssl (scripts/test installs it)");
            assert!(out.status.success(), "openssl {args:?}: {}", stderr(&out));
        }
        let port = free_port();
        let conf = format!(
            "foreground = yes\npid =\noutput = {log}\n[s3]\naccept = 127.0.0.1:{port}\nconnect = 127.0.0.1:{upstream}\ncert = {cert}\nkey = {key}\n",
            log = d.join("stunnel.log").display(),
            cert = d.join("server.pem").display(),
            key = d.join("server.key").display(),
        );
        std::fs::write(d.join("stunnel.conf"), conf).unwrap();
        let mut child = Command::new("stunnel4")
            .arg(d.join("stunnel.conf"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("stunnel4 (scripts/test installs Debian's stunnel4)");
        if listening(&mut child, port) {
            return TlsFront { port, ca: d.join("ca.pem"), _dir: dir, child };
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("stunnel4 did not listen on 127.0.0.1:{port} (it exited, or not within 10 s)");
    }

    pub fn endpoint(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the fake scanner does with a scan.
#[derive(Clone)]
pub enum Scanner {
    /// Answers `stream: OK` once 64 KiB of the stream arrived, then hangs up (a proxy or a
    /// sidecar being killed), or keeps reading and discarding the rest.
    EarlyOk { hang_up: bool },
    /// Reads the whole stream; answers `Eicar-Test-Signature FOUND` when it holds EICAR
    /// (the canary included), else calls the hook and answers `stream: OK`.
    Hook(Arc<dyn Fn() + Send + Sync>),
    /// Reads the whole stream and answers `stream: OK` to everything: a scanner whose
    /// database detects nothing. After `detects` streams (0: from the first).
    Blind { detects: usize },
}

/// A fake clamd on 127.0.0.1 speaking just enough of its protocol (zPING, zVERSION,
/// zIDSESSION, zINSTREAM) to misbehave on purpose. Real clamd is used wherever behaviour is tested.
pub struct FakeClamd {
    pub address: String,
    pub scans: Arc<std::sync::atomic::AtomicUsize>,
}

impl FakeClamd {
    /// A fake that answers `VERSION` as clamd with local signatures only does
    /// (`ClamAV 1.4.6`, no database version).
    pub fn start(scanner: Scanner) -> FakeClamd {
        FakeClamd::start_as(scanner, "ClamAV 1.4.6")
    }

    /// A fake that answers `VERSION` with `version`.
    pub fn start_as(scanner: Scanner, version: &str) -> FakeClamd {
        use std::io::{Read, Write};
        let version = version.to_string();
        let listener = TcpListener::bind("127.0.0.1:0").expect("fake clamd");
        let address = format!("tcp://{}", listener.local_addr().unwrap());
        let scans = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = scans.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let (scanner, counter, version) = (scanner.clone(), counter.clone(), version.clone());
                std::thread::spawn(move || {
                    let mut number = 0u64;
                    let mut session = false;
                    loop {
                        // A command: `z<NAME>\0`.
                        let mut cmd = Vec::new();
                        let mut b = [0u8; 1];
                        while conn.read_exact(&mut b).is_ok() && b[0] != 0 {
                            cmd.push(b[0]);
                        }
                        let prefix = |n: u64| if session { format!("{n}: ") } else { String::new() };
                        match cmd.as_slice() {
                            b"zPING" => {
                                number += u64::from(session);
                                let _ = conn.write_all(format!("{}PONG\0", prefix(number)).as_bytes());
                                if !session {
                                    return;
                                }
                            }
                            b"zVERSION" => {
                                number += u64::from(session);
                                let _ = conn.write_all(format!("{}{version}\0", prefix(number)).as_bytes());
                                if !session {
                                    return;
                                }
                            }
                            b"zIDSESSION" => session = true,
                            b"zINSTREAM" => {
                                number += 1;
                                let nth = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                                let mut received = 0usize;
                                let mut stream = Vec::new();
                                let mut answered = false;
                                loop {
                                    let mut len = [0u8; 4];
                                    if conn.read_exact(&mut len).is_err() {
                                        return;
                                    }
                                    let n = u32::from_be_bytes(len) as usize;
                                    if n == 0 {
                                        break;
                                    }
                                    let mut chunk = vec![0u8; n];
                                    if conn.read_exact(&mut chunk).is_err() {
                                        return;
                                    }
                                    received += n;
                                    stream.extend_from_slice(&chunk);
                                    if let Scanner::EarlyOk { hang_up } = &scanner {
                                        if received >= 64 * 1024 && !answered {
                                            let _ =
                                                conn.write_all(format!("{}stream: OK\0", prefix(number)).as_bytes());
                                            answered = true;
                                            if *hang_up {
                                                let _ = conn.shutdown(std::net::Shutdown::Both);
                                                return;
                                            }
                                        }
                                    }
                                }
                                let eicar = dqpipe_plugins::samples::eicar();
                                let found = stream.windows(eicar.len()).any(|w| w == eicar.as_bytes());
                                let blind = matches!(&scanner, Scanner::Blind { detects } if nth >= *detects);
                                if found && !blind && !answered {
                                    let reply = format!("{}stream: Eicar-Test-Signature FOUND\0", prefix(number));
                                    let _ = conn.write_all(reply.as_bytes());
                                    answered = true;
                                }
                                if let Scanner::Hook(hook) = &scanner {
                                    if !answered {
                                        hook();
                                    }
                                }
                                if !answered {
                                    let _ = conn.write_all(format!("{}stream: OK\0", prefix(number)).as_bytes());
                                }
                                if !session {
                                    return;
                                }
                            }
                            _ => return,
                        }
                    }
                });
            }
        });
        FakeClamd { address, scans }
    }
}

/// An HTTP/1.1 proxy in front of the S3 server that hands each answer to `alter` (the
/// request's head, the answer's head and body) before passing it on; `alter` returns
/// whether it changed it, and `altered` counts those. A changed body gets its
/// `content-length` rewritten to match, as a proxy that means it would.
pub struct HttpProxy {
    pub port: u16,
    pub altered: Arc<std::sync::atomic::AtomicUsize>,
}

/// What a proxy may do to one answer: `(request head, answer head, answer body) -> changed`
/// (its status line and headers may be rewritten too).
pub type Alter = dyn Fn(&str, &mut String, &mut Vec<u8>) -> bool + Send + Sync;

/// Reads one HTTP message's head (lines up to the empty one) and its body, a chunked body
/// joined into one with a `content-length`.
fn http_message(r: &mut impl std::io::BufRead) -> Option<(String, Vec<u8>)> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        head.push_str(&line);
        if line == "\r\n" {
            break;
        }
    }
    let header = |name: &str| {
        head.lines()
            .find(|l| l.to_ascii_lowercase().starts_with(&format!("{name}:")))
            .map(|l| l[name.len() + 1..].trim().to_string())
    };
    let mut body = Vec::new();
    if header("transfer-encoding").is_some_and(|t| t.eq_ignore_ascii_case("chunked")) {
        loop {
            let mut size = String::new();
            r.read_line(&mut size).ok()?;
            let n = usize::from_str_radix(size.trim(), 16).ok()?;
            let mut chunk = vec![0u8; n + 2];
            r.read_exact(&mut chunk).ok()?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
        head = with_length(&head, body.len(), "transfer-encoding:");
    } else if let Some(n) = header("content-length").and_then(|n| n.parse::<usize>().ok()) {
        if !head.starts_with("HTTP/1.1 304") && !head.starts_with("HTTP/1.1 204") {
            body.resize(n, 0);
            r.read_exact(&mut body).ok()?;
        }
    }
    Some((head, body))
}

/// `head` with its `content-length` (and any header starting `drop`) replaced by `len`.
fn with_length(head: &str, len: usize, drop: &str) -> String {
    let mut out: String = head
        .lines()
        .filter(|l| !l.is_empty())
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            !l.starts_with("content-length:") && !l.starts_with(drop)
        })
        .map(|l| format!("{l}\r\n"))
        .collect();
    out.push_str(&format!("content-length: {len}\r\n\r\n"));
    out
}

impl HttpProxy {
    pub fn start(
        upstream: u16,
        alter: impl Fn(&str, &mut String, &mut Vec<u8>) -> bool + Send + Sync + 'static,
    ) -> HttpProxy {
        use std::io::{BufReader, Write};
        use std::sync::atomic::Ordering;
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy listener");
        let port = listener.local_addr().unwrap().port();
        let altered = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = altered.clone();
        let alter: Arc<Alter> = Arc::new(alter);
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let (counter, alter) = (counter.clone(), alter.clone());
                std::thread::spawn(move || {
                    let Ok(server) = std::net::TcpStream::connect(("127.0.0.1", upstream)) else { return };
                    let (Ok(mut client_w), Ok(mut server_w)) = (client.try_clone(), server.try_clone()) else {
                        return;
                    };
                    let (mut from_client, mut from_server) = (BufReader::new(client), BufReader::new(server));
                    while let Some((head, body)) = http_message(&mut from_client) {
                        if server_w.write_all(head.as_bytes()).and_then(|_| server_w.write_all(&body)).is_err() {
                            return;
                        }
                        let head_only = head.starts_with("HEAD ");
                        let Some((mut rhead, mut rbody)) =
                            (if head_only { http_head_only(&mut from_server) } else { http_message(&mut from_server) })
                        else {
                            return;
                        };
                        if !head_only && alter(&head, &mut rhead, &mut rbody) {
                            rhead = with_length(&rhead, rbody.len(), "content-md5:");
                            counter.fetch_add(1, Ordering::SeqCst);
                        }
                        if client_w.write_all(rhead.as_bytes()).and_then(|_| client_w.write_all(&rbody)).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        HttpProxy { port, altered }
    }

    pub fn altered(&self) -> usize {
        self.altered.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// The answer to a HEAD request: a head whose `content-length` names a body not sent.
fn http_head_only(r: &mut impl std::io::BufRead) -> Option<(String, Vec<u8>)> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        head.push_str(&line);
        if line == "\r\n" {
            return Some((head, Vec::new()));
        }
    }
}

/// A proxy in front of the S3 server that, for the listing pages marked truncated whose
/// number (from 0, in the order asked for) is in `broken`, removes the continuation token
/// (a server bug seen in the wild: the listing looks finished after one page), and with
/// `empty` their objects too (a listing that makes no progress).
pub fn listing_proxy(upstream: u16, broken: std::ops::Range<usize>, empty: bool) -> HttpProxy {
    let pages = std::sync::atomic::AtomicUsize::new(0);
    HttpProxy::start(upstream, move |request, _, body| {
        let listing = request.starts_with("GET ") && request.lines().next().is_some_and(|l| l.contains("list-type=2"));
        let text = String::from_utf8_lossy(body).into_owned();
        if !(listing && text.contains("<IsTruncated>true</IsTruncated>")) {
            return false;
        }
        if !broken.contains(&pages.fetch_add(1, std::sync::atomic::Ordering::SeqCst)) {
            return false;
        }
        let (Some(a), Some(b)) = (text.find("<NextContinuationToken>"), text.find("</NextContinuationToken>")) else {
            return false;
        };
        let mut cut = format!("{}{}", &text[..a], &text[b + "</NextContinuationToken>".len()..]);
        while let (true, Some(a), Some(b)) = (empty, cut.find("<Contents>"), cut.find("</Contents>")) {
            cut.replace_range(a..b + "</Contents>".len(), "");
        }
        *body = cut.into_bytes();
        true
    })
}

/// moto's S3 server (scripts/test installs it, pinned, and sets `MOTO_SERVER` and
/// `MOTO_PYTHON`): a second S3 implementation, for keys s3s-fs cannot store as files.
pub struct MotoServer {
    pub port: u16,
    child: std::process::Child,
}

impl MotoServer {
    pub fn start() -> MotoServer {
        let bin = std::env::var("MOTO_SERVER").unwrap_or_else(|_| "moto_server".to_string());
        let port = free_port();
        let mut cmd = Command::new(&bin);
        cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
        let child =
            start_server(cmd, "Running on http://127.0.0.1", &format!("`{bin}` (scripts/test installs moto[server])"));
        MotoServer { port, child }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Creates `bucket` and puts each (key, body) with boto3, keys exactly as given.
    pub fn put(&self, bucket: &str, objects: &[(&str, &str)]) {
        let python = std::env::var("MOTO_PYTHON").unwrap_or_else(|_| "python3".to_string());
        let script = r#"
import json, sys, boto3
endpoint, bucket, objects = sys.argv[1], sys.argv[2], json.loads(sys.stdin.read())
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                  aws_access_key_id="moto", aws_secret_access_key="moto")
s3.create_bucket(Bucket=bucket)
for key, body in objects:
    s3.put_object(Bucket=bucket, Key=key, Body=body.encode())
"#;
        let mut child = Command::new(&python)
            .args(["-c", script, &self.endpoint(), bucket])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run `{python}` ({e}); scripts/test installs boto3 with moto"));
        {
            use std::io::Write;
            let json = serde_json::to_string(objects).unwrap();
            child.stdin.take().unwrap().write_all(json.as_bytes()).unwrap();
        }
        assert!(child.wait().unwrap().success(), "putting objects into moto failed");
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// clamd's `VERSION` as it prints it, for a database built `ago` (`date -d` words) ago.
pub fn clamd_version(ago: &str) -> String {
    let out = std::process::Command::new("date").args(["-u", "-d", ago, "+%a %b %e %H:%M:%S %Y"]).output().unwrap();
    format!("ClamAV 1.4.6/27500/{}", stdout(&out).trim())
}

/// An object's user metadata (`x-amz-meta-*`, without the prefix) as an S3 client reads
/// it back: boto3 (installed with moto) against `endpoint`.
pub fn s3_metadata(endpoint: &str, bucket: &str, key: &str) -> serde_json::Value {
    let python = std::env::var("MOTO_PYTHON").unwrap_or_else(|_| "python3".to_string());
    let script = r#"
import json, sys, boto3
endpoint, bucket, key, id, secret = sys.argv[1:6]
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=id, aws_secret_access_key=secret)
print(json.dumps(s3.head_object(Bucket=bucket, Key=key)["Metadata"]))
"#;
    let out = Command::new(&python)
        .args(["-c", script, endpoint, bucket, key, S3_KEY_ID, S3_SECRET])
        .output()
        .unwrap_or_else(|e| panic!("cannot run `{python}` ({e}); scripts/test installs boto3 with moto"));
    assert!(out.status.success(), "head_object {bucket}/{key}: {}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// An archive file of `size` bytes that starts with the EICAR test signature.
pub fn infected_file(path: &Path, size: usize) {
    let mut bytes = dqpipe_plugins::samples::eicar().into_bytes();
    bytes.resize(size, b' ');
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// Debian's prometheus-pushgateway (scripts/test installs it) on a loopback port, its
/// data in memory; stopped on drop.
pub struct Pushgateway {
    pub port: u16,
    child: std::process::Child,
}

impl Pushgateway {
    pub fn start() -> Pushgateway {
        let bin = ["/usr/bin/prometheus-pushgateway", "prometheus-pushgateway"]
            .into_iter()
            .find(|b| Path::new(b).exists())
            .unwrap_or("prometheus-pushgateway");
        let port = free_port();
        let mut cmd = Command::new(bin);
        cmd.arg(format!("--web.listen-address=127.0.0.1:{port}"));
        let child = start_server(cmd, "msg=\"Listening on\"", &format!("`{bin}` (scripts/test installs it)"));
        Pushgateway { port, child }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// What a Prometheus scrape of it reads: `/metrics`, in the text format.
    pub fn scrape(&self) -> String {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        write!(s, "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).unwrap();
        body
    }
}

impl Drop for Pushgateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a server and waits for the line it logs once it accepts connections, 30 s at
/// most: an event, not a fixed wait. Its stderr is read to the end, so its log never fills
/// the pipe and blocks it.
fn start_server(mut cmd: Command, ready: &str, what: &str) -> std::process::Child {
    use std::io::BufRead;
    let mut child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let stderr = child.stderr.take().expect("stderr is piped");
    let (tx, rx) = std::sync::mpsc::channel();
    let ready = ready.to_string();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains(&ready) {
                let _ = tx.send(());
            }
        }
    });
    if rx.recv_timeout(Duration::from_secs(30)).is_err() {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{what} did not say it was ready within 30 s");
    }
    child
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
