//! The progress display of `dqpipe run`: bars on a terminal, a log line every 10 s
//! otherwise. It reads the engine's live counters ([`LiveStats::snapshot`]); the engine
//! itself never prints.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use dqpipe_engine::run::stats::{LiveStats, StatsSnapshot};

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

/// The run as a whole: `4990 of 5000  99%  812/s  ETA 3s`. The total is known once every
/// listing has ended; until then it is what was listed so far, and there is no ETA.
fn overall(s: &StatsSnapshot, secs: f64) -> String {
    let (done, listed) = (s.finished(), s.listed());
    let per_sec = done as f64 / secs.max(0.001);
    let of = if s.listing_done() { format!("of {listed}") } else { format!("of {listed} listed so far") };
    let share = (done * 100).checked_div(listed).map(|p| format!("  {:>3}%", p.min(100))).unwrap_or_default();
    let eta = match (s.listing_done(), per_sec > 0.0) {
        (true, true) => format!("  ETA {}", clock((listed.saturating_sub(done)) as f64 / per_sec)),
        _ => String::new(),
    };
    format!("{of}{share}{eta}  {per_sec:.0}/s  failed={} refused={}", s.failed, s.refused)
}

/// `45s`, `2m05s`, `1h02m`: as long as it needs to be.
fn clock(secs: f64) -> String {
    let s = secs.ceil() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
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
    let width = first.nodes.iter().map(|n| n.name.len()).max().unwrap_or(8).clamp(7, 24);
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
    // A last row for the run as a whole: objects finished of the total, ETA.
    let total = multi.add(indicatif::ProgressBar::new_spinner());
    total.set_style(style.clone());
    total.set_prefix("objects");
    let started = std::time::Instant::now();
    let draw = |s: &StatsSnapshot| {
        let secs = started.elapsed().as_secs_f64();
        for (i, b) in bars.iter().enumerate() {
            b.set_position(s.nodes[i].items);
            b.set_message(format!("{}  {}", rates(s, i, secs), detail(s, i)));
        }
        total.set_position(s.finished());
        total.set_message(overall(s, secs));
    };
    loop {
        draw(&stats.snapshot());
        bars.iter().chain([&total]).for_each(|b| b.tick());
        tokio::select! {
            _ = &mut done => break,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
    // The last frame shows the final counts, the summary's.
    draw(&stats.snapshot());
    bars.iter().chain([&total]).for_each(|b| b.finish());
    if let Ok(mut b) = BARS.lock() {
        *b = None;
    }
}

/// One line every 10 s with the bars' figures: the run as a whole, then each node's items
/// and ports (`objects 4990 of 5000 99% ETA 3s 812/s ...; fetch 4990 out=4982; ...`).
async fn log_lines(stats: Arc<LiveStats>, mut done: tokio::sync::oneshot::Receiver<()>) {
    let started = std::time::Instant::now();
    loop {
        tokio::select! {
            _ = &mut done => break,
            _ = tokio::time::sleep(Duration::from_secs(10)) => {}
        }
        let s = stats.snapshot();
        let nodes: Vec<String> = s
            .nodes
            .iter()
            .map(|n| {
                let ports: Vec<String> = n.ports.iter().map(|(k, v)| format!("{k}={v}")).collect();
                format!("{} {} {}", n.name, n.items, ports.join(" "))
            })
            .collect();
        tracing::info!(
            finished = s.finished(),
            listed = s.listed(),
            listing_done = s.listing_done(),
            "progress: objects {}; {}",
            overall(&s, started.elapsed().as_secs_f64()),
            nodes.join("; ")
        );
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn time_left_reads_as_a_clock() {
        assert_eq!(super::clock(0.2), "1s");
        assert_eq!(super::clock(45.0), "45s");
        assert_eq!(super::clock(125.0), "2m05s");
        assert_eq!(super::clock(3720.0), "1h02m");
    }
}
