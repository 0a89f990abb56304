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

/// `812/s  1.2 MB/s  64%`: rates since the start, rounded as people read them, and the
/// share of the objects listed so far that this node has received.
fn rates(s: &StatsSnapshot, i: usize, secs: f64) -> String {
    let n = &s.nodes[i];
    let per_sec = n.items as f64 / secs.max(0.001);
    let mb = n.bytes as f64 / 1e6 / secs.max(0.001);
    let listed: u64 = s.nodes.iter().filter(|x| x.source).map(|x| x.items).sum();
    let share = match (n.source, listed) {
        (false, l) if l > 0 => format!("  {:>3}%", (n.items * 100 / l).min(100)),
        _ => String::new(),
    };
    format!("{per_sec:>6.0}/s {mb:>6.1} MB/s{share}")
}

/// Log lines written while bars are drawn go above them, never through them.
static BARS: std::sync::Mutex<Option<indicatif::MultiProgress>> = std::sync::Mutex::new(None);

/// The log's writer: stderr, or, while bars are drawn, stderr with the bars lifted.
pub struct LogWriter;

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let bars = BARS.lock().ok().and_then(|b| b.clone());
        match bars {
            Some(multi) => multi.suspend(|| std::io::stderr().write_all(buf)).map(|()| buf.len()),
            None => std::io::stderr().write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

async fn bars(stats: Arc<LiveStats>, mut done: tokio::sync::oneshot::Receiver<()>) {
    let multi = indicatif::MultiProgress::new();
    if let Ok(mut b) = BARS.lock() {
        *b = Some(multi.clone());
    }
    let first = stats.snapshot();
    let width = first.nodes.iter().map(|n| n.name.len()).max().unwrap_or(8).min(24);
    // `wide_msg` takes what is left of the terminal's width and is cut there: no line wraps.
    let template = format!("{{prefix:>{width}}} {{spinner}} {{pos:>9}} {{wide_msg}}");
    let style = indicatif::ProgressStyle::with_template(&template)
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner());
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
    let started = std::time::Instant::now();
    let draw = |s: &StatsSnapshot| {
        let secs = started.elapsed().as_secs_f64();
        for (i, b) in bars.iter().enumerate() {
            b.set_position(s.nodes[i].items);
            b.set_message(format!("{}  {}", rates(s, i, secs), detail(s, i)));
        }
    };
    loop {
        draw(&stats.snapshot());
        bars.iter().for_each(|b| b.tick());
        tokio::select! {
            _ = &mut done => break,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
    // The last frame shows the final counts, the summary's.
    draw(&stats.snapshot());
    bars.iter().for_each(|b| b.finish());
    if let Ok(mut b) = BARS.lock() {
        *b = None;
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
