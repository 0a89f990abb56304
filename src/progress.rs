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

/// A node's row after its count, most useful first, so that a narrow terminal cuts the
/// least useful (indicatif cuts `wide_msg` at the width): errors and retries when there
/// are any (trouble shows at once), the ports' counts (problems among them), the rate over
/// the last seconds, the share of the objects listed so far, bytes per second, in flight
/// (and of how many, when the node's concurrency adapts).
/// `errors=3 retries=12  clean=120 infected=1 error=0  812/s  64%  1.2 MB/s  in flight 3`
fn row(s: &StatsSnapshot, w: &Window, i: usize) -> String {
    let n = &s.nodes[i];
    let mut parts = Vec::new();
    if n.errors > 0 || n.retries > 0 {
        parts.push(format!("errors={} retries={}", n.errors, n.retries));
    }
    parts.push(n.ports.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" "));
    let (items, bytes) = w.rates(s, i);
    parts.push(format!("{items:.0}/s"));
    let listed = s.listed();
    if !n.source && listed > 0 {
        parts.push(format!("{}%", (n.items * 100 / listed).min(100)));
    }
    parts.push(format!("{:.1} MB/s", bytes / 1e6));
    match n.adaptive {
        true => parts.push(format!("in flight {} of {} (adaptive)", n.in_flight, n.limit)),
        false => parts.push(format!("in flight {}", n.in_flight)),
    }
    parts.join("  ")
}

/// Rates over the last seconds, not since the start: a dependency that fails shows as a
/// falling rate within [`Window::SPAN`], not after minutes of averaging.
#[derive(Default)]
struct Window {
    /// Oldest first.
    seen: std::collections::VecDeque<Seen>,
}

/// When, the items and bytes of each node, and the objects finished.
type Seen = (std::time::Instant, Vec<(u64, u64)>, u64);

impl Window {
    const SPAN: Duration = Duration::from_secs(5);

    fn push(&mut self, s: &StatsSnapshot) {
        let now = std::time::Instant::now();
        self.seen.push_back((now, s.nodes.iter().map(|n| (n.items, n.bytes)).collect(), s.finished()));
        while self.seen.len() > 2 && self.seen.front().is_some_and(|(t, _, _)| now - *t > Self::SPAN) {
            self.seen.pop_front();
        }
    }

    fn secs(&self) -> f64 {
        match (self.seen.front(), self.seen.back()) {
            (Some((a, _, _)), Some((b, _, _))) => (*b - *a).as_secs_f64().max(0.001),
            _ => 0.001,
        }
    }

    /// Items and bytes per second at node `i` over the window.
    fn rates(&self, s: &StatsSnapshot, i: usize) -> (f64, f64) {
        let Some((_, first, _)) = self.seen.front() else { return (0.0, 0.0) };
        let (items, bytes) = first.get(i).copied().unwrap_or_default();
        let n = &s.nodes[i];
        (n.items.saturating_sub(items) as f64 / self.secs(), n.bytes.saturating_sub(bytes) as f64 / self.secs())
    }

    /// Objects finished per second over the window.
    fn finished_rate(&self, s: &StatsSnapshot) -> f64 {
        let first = self.seen.front().map(|(_, _, f)| *f).unwrap_or_default();
        s.finished().saturating_sub(first) as f64 / self.secs()
    }
}

/// The run as a whole: `4990 of 5000  99%  ETA 3s  812/s  failed=0 refused=0`. The total
/// is known once every listing has ended; until then it is what was listed so far, and
/// there is no ETA. A run stopped before its listings ended (a halt, SIGTERM) says so:
/// what was never listed is in no count, and a rerun takes it.
fn overall(s: &StatsSnapshot, w: &Window) -> String {
    let (done, listed) = (s.finished(), s.listed());
    let per_sec = w.finished_rate(s);
    let counts = format!("failed={} refused={}", s.failed, s.refused);
    if s.listing_cut() || s.halted.is_some() {
        let state = if s.halted.is_some() { "HALTED" } else { "stopping" };
        let rest = if s.listing_cut() { "the rest never listed" } else { "the rest left" };
        let why = s.halted.as_deref().map(|h| format!(": {h}")).unwrap_or_default();
        return format!("of {listed} listed  {state}: {rest} for a rerun  {counts}{why}");
    }
    let of = if s.listing_done() { format!("of {listed}") } else { format!("of {listed} listed so far") };
    let share = (done * 100).checked_div(listed).map(|p| format!("  {:>3}%", p.min(100))).unwrap_or_default();
    let eta = match (s.listing_done(), per_sec > 0.0) {
        (true, true) => format!("  ETA {}", clock((listed.saturating_sub(done)) as f64 / per_sec)),
        (true, false) if done >= listed => "  ETA 0s".to_string(),
        _ => String::new(),
    };
    format!("{of}{share}{eta}  {per_sec:.0}/s  {counts}")
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
    // Nothing is drawn until the run's checks have passed: a run that cannot start shows
    // only why, not a frame of zeros.
    tokio::select! {
        _ = &mut done => return,
        () = stats.started() => {}
    }
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
    let mut window = Window::default();
    let mut draw = |s: &StatsSnapshot| {
        window.push(s);
        for (i, b) in bars.iter().enumerate() {
            b.set_position(s.nodes[i].items);
            b.set_message(row(s, &window, i));
        }
        total.set_position(s.finished());
        total.set_message(overall(s, &window));
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
    let mut window = Window::default();
    window.push(&stats.snapshot());
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
                let trouble = match n.errors + n.retries {
                    0 => String::new(),
                    _ => format!(" errors={} retries={}", n.errors, n.retries),
                };
                format!("{} {}{trouble} {}", n.name, n.items, ports.join(" "))
            })
            .collect();
        window.push(&s);
        tracing::info!(
            finished = s.finished(),
            listed = s.listed(),
            listing_done = s.listing_done(),
            "progress: objects {}; {}",
            overall(&s, &window),
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
