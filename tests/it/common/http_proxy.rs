//! An HTTP/1.1 proxy in front of the S3 server that reads each request and answer whole:
//! to alter answers, to answer some requests itself (lost writes, `503 SlowDown`), and
//! to cut listing pages.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

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

/// Which requests a proxy answers itself, without forwarding them, and how:
/// `request head -> the whole answer`.
pub type OwnAnswer = dyn Fn(&str) -> Option<String> + Send + Sync;

impl HttpProxy {
    pub fn start(
        upstream: u16,
        alter: impl Fn(&str, &mut String, &mut Vec<u8>) -> bool + Send + Sync + 'static,
    ) -> HttpProxy {
        HttpProxy::start_with(upstream, alter, Arc::new(|_: &str| None), Duration::ZERO)
    }

    /// A proxy that answers the requests `swallow` picks with `200 OK` and forwards
    /// nothing of them (a broken gateway that loses writes); `altered` counts them.
    pub fn swallowing(upstream: u16, swallow: impl Fn(&str) -> bool + Send + Sync + 'static) -> HttpProxy {
        let ok = "HTTP/1.1 200 OK\r\netag: \"swallowed\"\r\ncontent-length: 0\r\n\r\n";
        HttpProxy::answering(upstream, move |head| swallow(head).then(|| ok.to_string()))
    }

    /// A proxy that answers `503 SlowDown` to the first `method` request (`"GET"`,
    /// `"DELETE"`) of each target that `pick` takes, and forwards the rest: a store busy
    /// for a moment. `altered` counts the refusals.
    pub fn slowing_first(
        upstream: u16,
        method: &str,
        pick: impl Fn(&str) -> bool + Send + Sync + 'static,
    ) -> HttpProxy {
        let (method, refused) = (format!("{method} "), std::sync::Mutex::new(std::collections::HashSet::new()));
        HttpProxy::answering(upstream, move |head| {
            let target = head.strip_prefix(method.as_str())?.split(' ').next()?.to_string();
            (pick(&target) && refused.lock().unwrap().insert(target)).then(slow_down)
        })
    }

    /// A proxy that answers the requests `answer` picks itself (`Some(the whole answer)`)
    /// and forwards the rest; `altered` counts the answers it gave.
    pub fn answering(upstream: u16, answer: impl Fn(&str) -> Option<String> + Send + Sync + 'static) -> HttpProxy {
        HttpProxy::start_with(
            upstream,
            |_: &str, _: &mut String, _: &mut Vec<u8>| false,
            Arc::new(answer),
            Duration::ZERO,
        )
    }

    /// S3 far away and throttling, as a prefix over its request rate: every request waits
    /// `latency` before it is forwarded (or answered), and a PUT made when the proxy's
    /// bucket of `per_second` tokens a second (holding a tenth of a second's) is empty is
    /// answered `503 SlowDown`, as S3 answers. `altered` counts those.
    pub fn throttling(upstream: u16, per_second: f64, latency: Duration) -> HttpProxy {
        let bucket = std::sync::Mutex::new((per_second / 10.0, std::time::Instant::now()));
        let answer = move |head: &str| {
            if !head.starts_with("PUT ") {
                return None;
            }
            let mut b = bucket.lock().unwrap();
            let now = std::time::Instant::now();
            b.0 = (b.0 + (now - b.1).as_secs_f64() * per_second).min(per_second / 10.0);
            b.1 = now;
            if b.0 >= 1.0 {
                b.0 -= 1.0;
                return None;
            }
            Some(slow_down())
        };
        HttpProxy::start_with(upstream, |_: &str, _: &mut String, _: &mut Vec<u8>| false, Arc::new(answer), latency)
    }

    fn start_with(
        upstream: u16,
        alter: impl Fn(&str, &mut String, &mut Vec<u8>) -> bool + Send + Sync + 'static,
        answer: Arc<OwnAnswer>,
        latency: Duration,
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
                let (counter, alter, answer) = (counter.clone(), alter.clone(), answer.clone());
                std::thread::spawn(move || {
                    let Ok(server) = std::net::TcpStream::connect(("127.0.0.1", upstream)) else { return };
                    let (Ok(mut client_w), Ok(mut server_w)) = (client.try_clone(), server.try_clone()) else {
                        return;
                    };
                    let (mut from_client, mut from_server) = (BufReader::new(client), BufReader::new(server));
                    while let Some((head, body)) = http_message(&mut from_client) {
                        std::thread::sleep(latency);
                        if let Some(answer) = answer(&head) {
                            counter.fetch_add(1, Ordering::SeqCst);
                            if client_w.write_all(answer.as_bytes()).is_err() {
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

/// S3's answer to a request over its rate: `503 SlowDown`.
fn slow_down() -> String {
    let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>";
    let head = "HTTP/1.1 503 Slow Down\r\ncontent-type: application/xml";
    format!("{head}\r\ncontent-length: {}\r\n\r\n{body}", body.len())
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
