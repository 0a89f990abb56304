//! Proxies in front of the servers: faults per connection, recording, and altering answers.

use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

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

/// Reads a request's head and answers it `500 InternalError`, closing the connection.
fn answer_500(client: &mut std::net::TcpStream) {
    use std::io::{Read, Write};
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
                        Fault::Http500 => return answer_500(&mut client),
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
