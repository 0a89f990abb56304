//! S3 servers (s3s-fs, pinned; moto's), a TLS front for them, and reading metadata back.

use super::*;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

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

/// Debian's stunnel4 terminating TLS in front of `upstream` on 127.0.0.1, with a server
/// certificate for `127.0.0.1` signed by a CA the test made with openssl (`ca`: the PEM a
/// client trusts). Stopped on drop.
/// A test CA (`ca.pem`) and a server certificate for 127.0.0.1 signed by it
/// (`server.pem`, `server.key`), made by openssl in `d`.
pub fn test_certificates(d: &Path) {
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
        let out =
            Command::new("openssl").args(&args).current_dir(d).output().expect("openssl (scripts/test installs it)");
        assert!(out.status.success(), "openssl {args:?}: {}", stderr(&out));
    }
}

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
        test_certificates(d);
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

/// Starts a server and waits for the line it logs once it accepts connections, 30 s at
/// most: an event, not a fixed wait. Its stderr is read to the end, so its log never fills
/// the pipe and blocks it.
pub(super) fn start_server(mut cmd: Command, ready: &str, what: &str) -> std::process::Child {
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
