//! clamd's protocol: `zPING`, and `zINSTREAM` in session mode (`zIDSESSION`), with the
//! proof that clamd read the whole stream before its `OK` counts.

use std::time::Duration;

use dqpipe_engine::api::body::Body;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::rest::scan_rest;

/// Where and how to scan.
#[derive(Debug, Clone)]
pub enum Scanner {
    Tcp(String),
    Unix(std::path::PathBuf),
    Rest { url: String, client: reqwest::Client },
}

/// What a scan found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Clean,
    Infected {
        signature: String,
    },
    /// The scanner answered, but not with a verdict: the item was not scanned.
    Error {
        reason: String,
    },
}

/// The scanner could not be reached, hung up or timed out without answering: worth
/// retrying.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct Unreachable(pub String);

trait Conn: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Conn for T {}

impl Scanner {
    pub fn parse(address: &str) -> Result<Self, crate::invalid::Invalid> {
        if let Some(hp) = address.strip_prefix("tcp://") {
            if !hp.contains(':') {
                return Err(format!("{address:?} needs a port: `tcp://127.0.0.1:3310`").into());
            }
            Ok(Scanner::Tcp(hp.trim_end_matches('/').to_string()))
        } else if let Some(p) = address.strip_prefix("unix://") {
            Ok(Scanner::Unix(p.into()))
        } else if address.starts_with("http://") || address.starts_with("https://") {
            crate::tls::use_ring();
            let client = reqwest::Client::builder().build().map_err(|e| format!("HTTP client: {e}"))?;
            Ok(Scanner::Rest { url: address.to_string(), client })
        } else {
            Err(format!("{address:?} is not a scanner address: use `tcp://host:port`, `unix:///path` or `http://host:port/scan`").into())
        }
    }

    fn describe(&self) -> String {
        match self {
            Scanner::Tcp(hp) => format!("clamd at tcp://{hp}"),
            Scanner::Unix(p) => format!("clamd at unix://{}", p.display()),
            Scanner::Rest { url, .. } => format!("the ClamAV REST service at {url}"),
        }
    }

    async fn connect(&self) -> Result<Box<dyn Conn>, Unreachable> {
        let r: std::io::Result<Box<dyn Conn>> = match self {
            Scanner::Tcp(hp) => tokio::net::TcpStream::connect(hp).await.map(|s| {
                let _ = s.set_nodelay(true);
                Box::new(s) as Box<dyn Conn>
            }),
            Scanner::Unix(p) => tokio::net::UnixStream::connect(p).await.map(|s| Box::new(s) as Box<dyn Conn>),
            Scanner::Rest { .. } => return Err(Unreachable("REST scanners have no socket".into())),
        };
        r.map_err(|e| Unreachable(format!("cannot connect to {}: {e}", self.describe())))
    }

    /// `zPING` must answer `PONG`.
    pub async fn ping(&self, timeout: Duration) -> Result<(), Unreachable> {
        if let Scanner::Rest { .. } = self {
            return Ok(());
        }
        let talk = async {
            let mut c = self.connect().await?;
            let io = |e: std::io::Error| Unreachable(format!("{}: {e}", self.describe()));
            c.write_all(b"zPING\0").await.map_err(io)?;
            let reply = Replies::default().next(&mut c).await.map_err(io)?;
            match reply.as_deref() {
                Some("PONG") => Ok(()),
                Some(other) => Err(Unreachable(format!("{} answered PING with {other:?}, not PONG", self.describe()))),
                None => Err(Unreachable(format!("{} closed the connection before answering PING", self.describe()))),
            }
        };
        tokio::time::timeout(timeout, talk)
            .await
            .map_err(|_| Unreachable(format!("{} did not answer PING in {} s", self.describe(), timeout.as_secs())))?
    }

    /// `zVERSION`: what the scanner runs (`ClamAV 1.4.6/27500/Tue Dec  1 08:21:02 2026`);
    /// `None` from the REST front end, which does not say.
    pub async fn version(&self, timeout: Duration) -> Result<Option<String>, Unreachable> {
        if let Scanner::Rest { .. } = self {
            return Ok(None);
        }
        let talk = async {
            let mut c = self.connect().await?;
            let io = |e: std::io::Error| Unreachable(format!("{}: {e}", self.describe()));
            c.write_all(b"zVERSION\0").await.map_err(io)?;
            let reply = Replies::default().next(&mut c).await.map_err(io)?;
            let closed = || Unreachable(format!("{} closed the connection before answering VERSION", self.describe()));
            reply.map(Some).ok_or_else(closed)
        };
        tokio::time::timeout(timeout, talk).await.map_err(|_| {
            Unreachable(format!("{} did not answer VERSION in {} s", self.describe(), timeout.as_secs()))
        })?
    }

    /// Scans a body once.
    pub async fn scan(
        &self,
        sessions: &Sessions,
        name: &str,
        body: &Body,
        chunk: usize,
        timeout: Duration,
    ) -> Result<Verdict, Unreachable> {
        let scan = async {
            match self {
                Scanner::Rest { url, client } => scan_rest(client, url, name, body).await,
                _ => self.scan_in_session(sessions, body, chunk).await,
            }
        };
        tokio::time::timeout(timeout, scan)
            .await
            .map_err(|_| Unreachable(format!("{} did not answer within {} s", self.describe(), timeout.as_secs())))?
    }

    /// Scans on an idle session, or a new one. A reused session that fails before clamd
    /// answers may simply have been closed while idle (clamd's IdleTimeout): the scan is
    /// tried once more on a new connection before it counts as a failure.
    async fn scan_in_session(&self, sessions: &Sessions, body: &Body, chunk: usize) -> Result<Verdict, Unreachable> {
        if let Some(session) = sessions.take() {
            if let Ok(verdict) = self.scan_instream(sessions, session, body, chunk).await {
                return Ok(verdict);
            }
        }
        let mut conn = self.connect().await?;
        conn.write_all(b"zIDSESSION\0")
            .await
            .map_err(|e| Unreachable(format!("starting a session with {}: {e}", self.describe())))?;
        self.scan_instream(sessions, Session { conn, sent: 0 }, body, chunk).await
    }

    /// One `zINSTREAM` on a session. The session goes back to the pool only after a clean
    /// or infected reply carrying the number of this command; after anything else it is
    /// closed.
    async fn scan_instream(&self, pool: &Sessions, session: Session, body: &Body, chunk: usize) -> Verdicted {
        let number = session.sent + 1;
        // A reply that arrives before the last byte was even sent is believed only when it
        // is not OK (infected, the size limit): the scanner did not see the whole item.
        let sent_all = std::sync::atomic::AtomicBool::new(false);
        let mut replies = Replies::default();
        let (mut rd, mut wr) = tokio::io::split(session.conn);
        let (sent, first, early) = {
            let send = async {
                send_stream(&mut wr, body, chunk).await?;
                sent_all.store(true, std::sync::atomic::Ordering::SeqCst);
                Ok::<(), std::io::Error>(())
            };
            let recv = async {
                let verdict = replies.next(&mut rd).await;
                (verdict, !sent_all.load(std::sync::atomic::Ordering::SeqCst))
            };
            tokio::pin!(send, recv);
            tokio::select! {
                biased;
                sent = &mut send => { let (v, _) = recv.await; (sent, v, false) }
                (v, early) = &mut recv => (Ok(()), v, early),
            }
        };
        let describe = self.describe();
        let first = match (first, sent) {
            (Ok(Some(v)), Ok(())) => v,
            (_, Err(e)) => {
                return Err(Unreachable(format!("{describe} closed the connection while the item was sent: {e}")))
            }
            (Ok(None), Ok(())) => {
                return Err(Unreachable(format!("{describe} closed the connection before a complete reply")))
            }
            (Err(e), Ok(())) => return Err(Unreachable(format!("reading {describe}'s reply: {e}"))),
        };
        // In a session every reply is `<command number>: <reply>`.
        let Some(r) = numbered(&first, number) else {
            return Err(Unreachable(format!(
                "{describe} answered {first:?} to command {number}: out of step, not a verdict"
            )));
        };
        match parse_reply(&r) {
            Verdict::Clean if early => Err(Unreachable(format!(
                "{describe} answered {r:?} before the whole item was sent: not a verdict on it"
            ))),
            // An error about the item itself (over StreamMaxLength) is a verdict on it:
            // quarantine. Any other error is clamd's trouble (shutting down, out of
            // memory): retried, then left unprocessed for a rerun, never passed on.
            Verdict::Error { reason } if !r.contains("size limit exceeded") => {
                Err(Unreachable(format!("{describe} could not scan: {reason}")))
            }
            verdict @ Verdict::Error { .. } => Ok(verdict),
            verdict if early => Ok(verdict),
            verdict => {
                // Then a `zPING`: clamd reads a session's commands in order, so its `PONG`
                // proves it read the whole stream, terminator included. Bytes the socket
                // accepted prove nothing (a 1 MiB item fits in the kernel's buffers of a
                // scanner that stopped reading after 64 KiB). An OK counts only with that
                // proof. (Sent after the verdict, not with the stream: two replies back to
                // back meet clamd's Nagle and our delayed ACK, 40 ms a scan.)
                let mut conn = rd.unsplit(wr);
                match (pong(&mut conn, &mut replies, number + 1).await, verdict) {
                    (true, v) => {
                        pool.put(Session { conn, sent: number + 1 });
                        Ok(v)
                    }
                    (false, Verdict::Clean) => Err(Unreachable(format!(
                        "{describe} answered {r:?} without having read the whole item (no answer to the command \
                         sent after it): not a verdict on it"
                    ))),
                    (false, v) => Ok(v),
                }
            }
        }
    }
}

/// A scan's outcome: a verdict, or a scanner that could not give one.
type Verdicted = Result<Verdict, Unreachable>;

/// Writes `zINSTREAM`, the body in chunks of `chunk` bytes, and the terminator.
async fn send_stream(wr: &mut (impl AsyncWrite + Unpin), body: &Body, chunk: usize) -> std::io::Result<()> {
    wr.write_all(b"zINSTREAM\0").await?;
    let mut reader = body.reader().await?;
    let mut buf = vec![0u8; chunk];
    loop {
        let n = reader.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        wr.write_all(&(n as u32).to_be_bytes()).await?;
        wr.write_all(&buf[..n]).await?;
    }
    wr.write_all(&[0, 0, 0, 0]).await?;
    wr.flush().await
}

/// Sends `zPING` as command `number` of the session: whether clamd answered its `PONG`.
async fn pong(conn: &mut (impl AsyncRead + AsyncWrite + Unpin), replies: &mut Replies, number: u64) -> bool {
    if conn.write_all(b"zPING\0").await.is_err() {
        return false;
    }
    matches!(replies.next(conn).await, Ok(Some(p)) if numbered(&p, number).as_deref() == Some("PONG"))
}

/// `<n>: <reply>` when the reply is numbered `n` (every reply in a session is).
fn numbered(reply: &str, n: u64) -> Option<String> {
    match reply.split_once(": ") {
        Some((k, rest)) if k.parse::<u64>() == Ok(n) => Some(rest.to_string()),
        _ => None,
    }
}

/// The longest reply read: clamd's longest are a signature name or an error message.
const MAX_REPLY: usize = 64 * 1024;

/// Reads NUL-terminated replies one at a time, keeping what was read past one for the
/// next (replies to pipelined commands arrive together).
#[derive(Default)]
struct Replies {
    buf: Vec<u8>,
}

impl Replies {
    /// The next reply; `None` when the connection ended before its NUL: a cut reply is a
    /// connection failure (retried), never a verdict.
    async fn next(&mut self, conn: &mut (impl AsyncRead + Unpin + ?Sized)) -> std::io::Result<Option<String>> {
        let mut chunk = [0u8; 256];
        loop {
            if let Some(end) = self.buf.iter().position(|&b| b == 0) {
                let reply = String::from_utf8_lossy(&self.buf[..end]).trim_end_matches('\n').to_string();
                self.buf.drain(..=end);
                return Ok(Some(reply));
            }
            if self.buf.len() > MAX_REPLY {
                // No clamd reply is this long: a scanner (or something posing as one) that
                // is not speaking the protocol. Not a verdict; said as it is.
                return Err(std::io::Error::other(format!(
                    "the reply ran past {} KiB without its end: not a clamd reply",
                    MAX_REPLY / 1024
                )));
            }
            let n = conn.read(&mut chunk).await?;
            if n == 0 {
                return Ok(None);
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// clamd connections kept open between scans in `zIDSESSION` mode. Each carries one scan
/// at a time, so a reply always answers the command just sent, and its number is checked.
/// A session saves clamd a connection and a thread hand-off per scan: about a third of its
/// CPU with 1 KB files (scripts/bench, W1).
#[derive(Default)]
pub struct Sessions(std::sync::Mutex<Vec<Session>>);

struct Session {
    conn: Box<dyn Conn>,
    /// Commands sent on it so far: clamd numbers its replies from 1.
    sent: u64,
}

impl Sessions {
    /// Sessions open and waiting for a scan.
    pub fn idle(&self) -> usize {
        self.0.lock().map(|v| v.len()).unwrap_or(0)
    }
    fn take(&self) -> Option<Session> {
        self.0.lock().ok().and_then(|mut v| v.pop())
    }
    fn put(&self, session: Session) {
        if let Ok(mut v) = self.0.lock() {
            v.push(session);
        }
    }
}

/// Strict reading of clamd's answer: only the exact `stream: OK` is clean.
pub fn parse_reply(reply: &str) -> Verdict {
    if reply == "stream: OK" {
        return Verdict::Clean;
    }
    if let Some(sig) = reply.strip_prefix("stream: ").and_then(|r| r.strip_suffix(" FOUND")) {
        if !sig.is_empty() && !sig.contains('\n') {
            return Verdict::Infected { signature: printable(sig) };
        }
    }
    Verdict::Error { reason: format!("clamd answered {:?}", printable(reply)) }
}

/// A name or message from the scanner as reports, `.error.json` files, metadata and alerts
/// show it: control characters (escape codes, CR) written as `\u{..}`, at most 256
/// characters. A scanner's text reaches terminals and Slack; it must not drive them.
pub fn printable(text: &str) -> String {
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        if i == 256 {
            out.push('…');
            break;
        }
        match c.is_control() {
            true => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            false => out.push(c),
        }
    }
    out
}

#[cfg(test)]
#[path = "protocol_tests.rs"]
mod tests;
