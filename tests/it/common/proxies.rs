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
    let mut head = http_head(r)?;
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

/// Which requests a proxy answers itself, without forwarding them: `request head -> swallow`.
pub type Swallow = dyn Fn(&str) -> bool + Send + Sync;

impl HttpProxy {
    pub fn start(
        upstream: u16,
        alter: impl Fn(&str, &mut String, &mut Vec<u8>) -> bool + Send + Sync + 'static,
    ) -> HttpProxy {
        HttpProxy::start_with(upstream, alter, Arc::new(|_: &str| false))
    }

    /// A proxy that answers the requests `swallow` picks with `200 OK` and forwards
    /// nothing of them (a broken gateway that loses writes); `altered` counts them.
    pub fn swallowing(upstream: u16, swallow: impl Fn(&str) -> bool + Send + Sync + 'static) -> HttpProxy {
        HttpProxy::start_with(upstream, |_: &str, _: &mut String, _: &mut Vec<u8>| false, Arc::new(swallow))
    }

    fn start_with(
        upstream: u16,
        alter: impl Fn(&str, &mut String, &mut Vec<u8>) -> bool + Send + Sync + 'static,
        swallow: Arc<Swallow>,
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
                let (counter, alter, swallow) = (counter.clone(), alter.clone(), swallow.clone());
                std::thread::spawn(move || {
                    let Ok(server) = std::net::TcpStream::connect(("127.0.0.1", upstream)) else { return };
                    let (Ok(mut client_w), Ok(mut server_w)) = (client.try_clone(), server.try_clone()) else {
                        return;
                    };
                    let (mut from_client, mut from_server) = (BufReader::new(client), BufReader::new(server));
                    while let Some((head, body)) = http_message(&mut from_client) {
                        if swallow(&head) {
                            counter.fetch_add(1, Ordering::SeqCst);
                            let ok = "HTTP/1.1 200 OK\r\netag: \"swallowed\"\r\ncontent-length: 0\r\n\r\n";
                            if client_w.write_all(ok.as_bytes()).is_err() {
                                return;
                            }
                            continue;
                        }
                        if server_w.write_all(head.as_bytes()).and_then(|_| server_w.write_all(&body)).is_err() {
                            return;
                        }
                        let head_only = head.starts_with("HEAD ");
                        let Some((mut rhead, mut rbody)) = (if head_only {
                            http_head(&mut from_server).map(|h| (h, Vec::new()))
                        } else {
                            http_message(&mut from_server)
                        }) else {
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

/// A message's head: its lines up to the empty one (for a HEAD request's answer, all of
/// it: its `content-length` names a body not sent).
fn http_head(r: &mut impl std::io::BufRead) -> Option<String> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        head.push_str(&line);
        if line == "\r\n" {
            return Some(head);
        }
    }
}

/// A proxy in front of the S3 server that hands every listing page (`list-type=2`) to
/// `cut`, which returns the page to send instead, or `None` to pass it on.
pub fn listing_proxy_with(upstream: u16, cut: impl Fn(&str) -> Option<String> + Send + Sync + 'static) -> HttpProxy {
    HttpProxy::start(upstream, move |request, _, body| {
        let listing = request.starts_with("GET ") && request.lines().next().is_some_and(|l| l.contains("list-type=2"));
        match listing.then(|| cut(&String::from_utf8_lossy(body))).flatten() {
            Some(page) => {
                *body = page.into_bytes();
                true
            }
            None => false,
        }
    })
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
        // An empty page says so in its KeyCount too (or it would be taken for a cut one).
        if let (true, Some(a), Some(b)) = (empty, cut.find("<KeyCount>"), cut.find("</KeyCount>")) {
            cut.replace_range(a + "<KeyCount>".len()..b, "0");
        }
        *body = cut.into_bytes();
        true
    })
}
