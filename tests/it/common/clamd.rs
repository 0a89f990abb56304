//! Debian's clamd, started by the test with the project's signatures, and a fake clamd that
//! misbehaves on purpose.

use super::*;

use std::net::TcpListener;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

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
        let version = version.to_string();
        let listener = TcpListener::bind("127.0.0.1:0").expect("fake clamd");
        let address = format!("tcp://{}", listener.local_addr().unwrap());
        let scans = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = scans.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let (scanner, counter, version) = (scanner.clone(), counter.clone(), version.clone());
                std::thread::spawn(move || serve(conn, &scanner, &counter, &version));
            }
        });
        FakeClamd { address, scans }
    }
}

/// One connection: commands until it closes, or the first one outside a session.
fn serve(mut conn: std::net::TcpStream, scanner: &Scanner, counter: &std::sync::atomic::AtomicUsize, version: &str) {
    use std::io::{Read, Write};
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
            b"zPING" | b"zVERSION" => {
                number += u64::from(session);
                let reply = if cmd == b"zPING" { "PONG" } else { version };
                let _ = conn.write_all(format!("{}{reply}\0", prefix(number)).as_bytes());
            }
            b"zIDSESSION" => {
                session = true;
                continue;
            }
            b"zINSTREAM" => {
                number += 1;
                let nth = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if !instream(&mut conn, scanner, nth, &prefix(number)) {
                    return;
                }
            }
            _ => return,
        }
        if !session {
            return;
        }
    }
}

/// One INSTREAM scan, the `nth`: reads the chunks and answers as `scanner` does; false
/// when the connection is done with.
fn instream(conn: &mut std::net::TcpStream, scanner: &Scanner, nth: usize, prefix: &str) -> bool {
    use std::io::{Read, Write};
    let mut stream = Vec::new();
    let mut answered = false;
    loop {
        let mut len = [0u8; 4];
        if conn.read_exact(&mut len).is_err() {
            return false;
        }
        let n = u32::from_be_bytes(len) as usize;
        if n == 0 {
            break;
        }
        let mut chunk = vec![0u8; n];
        if conn.read_exact(&mut chunk).is_err() {
            return false;
        }
        stream.extend_from_slice(&chunk);
        if let Scanner::EarlyOk { hang_up } = scanner {
            if stream.len() >= 64 * 1024 && !answered {
                let _ = conn.write_all(format!("{prefix}stream: OK\0").as_bytes());
                answered = true;
                if *hang_up {
                    let _ = conn.shutdown(std::net::Shutdown::Both);
                    return false;
                }
            }
        }
    }
    let eicar = dqpipe_plugins::clamav::eicar();
    let found = stream.windows(eicar.len()).any(|w| w == eicar.as_bytes());
    let blind = matches!(scanner, Scanner::Blind { detects } if nth >= *detects);
    if found && !blind && !answered {
        let _ = conn.write_all(format!("{prefix}stream: Eicar-Test-Signature FOUND\0").as_bytes());
        answered = true;
    }
    if let Scanner::Hook(hook) = scanner {
        if !answered {
            hook();
        }
    }
    if !answered {
        let _ = conn.write_all(format!("{prefix}stream: OK\0").as_bytes());
    }
    true
}

/// clamd's `VERSION` as it prints it, for a database built `ago` (`date -d` words) ago.
pub fn clamd_version(ago: &str) -> String {
    let out = std::process::Command::new("date").args(["-u", "-d", ago, "+%a %b %e %H:%M:%S %Y"]).output().unwrap();
    format!("ClamAV 1.4.6/27500/{}", stdout(&out).trim())
}
