//! HTTP listeners: a webhook receiver (Slack) and Debian's prometheus-pushgateway.

use super::*;

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

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
