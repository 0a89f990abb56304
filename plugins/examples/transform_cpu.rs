//! CPU per message of the NATS transform, without any I/O:
//!   cargo run --release -p dqpipe-plugins --example transform_cpu -- FOLDER [ROUNDS]
//! Prints the time per file and the throughput of each style (`compact`, `python`) over
//! every `.json` file in FOLDER (make
//! some with `dqpipe samples --out FOLDER --count 200 --size 1000000`).
fn main() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().ok_or("usage: transform_cpu FOLDER [ROUNDS]")?;
    let rounds: usize = match args.next() {
        Some(r) => r.parse().map_err(|_| format!("ROUNDS {r:?} is not a number"))?,
        None => 3,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(&dir).map_err(|e| format!("{dir}: {e}"))? {
        let path = entry.map_err(|e| format!("{dir}: {e}"))?.path();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if name.ends_with(".json") {
            files.push((name, std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?));
        }
    }
    let bytes: usize = files.iter().map(|(_, b)| b.len()).sum();
    type Transform =
        fn(&[u8], &str) -> Result<dqpipe_plugins::nats_message::Transformed, dqpipe_plugins::invalid::Invalid>;
    let styles: [(&str, Transform); 2] = [
        ("compact", dqpipe_plugins::nats_message::transform),
        ("python", dqpipe_plugins::nats_message::transform_python),
    ];
    for (style, transform) in styles {
        let started = std::time::Instant::now();
        let mut out = 0;
        for _ in 0..rounds.max(1) {
            for (name, body) in &files {
                out += transform(body, name).map(|t| t.json.len()).unwrap_or(0);
            }
        }
        let took = started.elapsed().as_secs_f64() / rounds.max(1) as f64;
        println!(
            "{style:>7}: {} files, {:.1} MB in, {:.1} MB out: {:.3} ms per file, {:.0} MB/s",
            files.len(),
            bytes as f64 / 1e6,
            out as f64 / rounds.max(1) as f64 / 1e6,
            took * 1e3 / files.len().max(1) as f64,
            bytes as f64 / 1e6 / took
        );
    }
    Ok(())
}
