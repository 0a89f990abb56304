//! The progress display of `dqpipe run`: bars on a terminal, a log line every 10 s
//! otherwise. It reads the engine's live counters ([`LiveStats::snapshot`]); the engine
//! itself never prints.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use dqpipe_engine::stats::{LiveStats, StatsSnapshot};

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Bars when stderr is a terminal, log lines otherwise.
    Auto,
    Bars,
    Log,
    Off,
}

/// A running display; [`Display::finish`] draws the last frame and stops it.
pub struct Display {
    done: tokio::sync::oneshot::Sender<()>,
    handle: tokio::task::JoinHandle<()>,
}

impl Display {
    pub fn start(stats: Arc<LiveStats>, mode: Mode) -> Option<Display> {
        let mode = match mode {
            Mode::Auto if std::io::stderr().is_terminal() => Mode::Bars,
            Mode::Auto => Mode::Log,
            m => m,
        };
        let (done, done_rx) = tokio::sync::oneshot::channel();
        let handle = match mode {
            Mode::Off => return None,
            Mode::Bars => tokio::spawn(bars(stats, done_rx)),
            _ => tokio::spawn(log_lines(stats, done_rx)),
        };
        Some(Display { done, handle })
    }

    pub async fn finish(self) {
        let _ = self.done.send(());
        let _ = self.handle.await;
    }
}

/// `in flight 3  clean=120 infected=1 error=0`
fn detail(s: &StatsSnapshot, i: usize) -> String {
    let n = &s.nodes[i];
    let ports: Vec<String> = n.ports.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("in flight {}  {}", n.in_flight, ports.join(" "))
}

async fn bars(stats: Arc<LiveStats>, mut done: tokio::sync::oneshot::Receiver<()>) {
    let multi = indicatif::MultiProgress::new();
    let style = indicatif::ProgressStyle::with_template("{prefix:>16} {spinner} {pos:>9} items  {per_sec:>10}  {msg}")
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner());
    let first = stats.snapshot();
    let bars: Vec<indicatif::ProgressBar> = first
        .nodes
        .iter()
        .map(|n| {
            let b = multi.add(indicatif::ProgressBar::new_spinner());
            b.set_style(style.clone());
            b.set_prefix(n.name.clone());
            b
        })
        .collect();
    loop {
        let s = stats.snapshot();
        for (i, b) in bars.iter().enumerate() {
            b.set_position(s.nodes[i].items);
            b.set_message(detail(&s, i));
            b.tick();
        }
        tokio::select! {
            _ = &mut done => break,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
    // The last frame shows the final counts.
    let s = stats.snapshot();
    for (i, b) in bars.iter().enumerate() {
        b.set_position(s.nodes[i].items);
        b.set_message(detail(&s, i));
        b.finish();
    }
}

async fn log_lines(stats: Arc<LiveStats>, mut done: tokio::sync::oneshot::Receiver<()>) {
    loop {
        tokio::select! {
            _ = &mut done => break,
            _ = tokio::time::sleep(Duration::from_secs(10)) => {}
        }
        let s = stats.snapshot();
        for (i, n) in s.nodes.iter().enumerate() {
            tracing::info!(node = %n.name, items = n.items, "progress: {}", detail(&s, i));
        }
        tracing::info!(complete = s.complete, failed = s.failed, "progress: objects finished");
    }
}
