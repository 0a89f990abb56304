//! CPU per message of the NATS transform, without any I/O:
//!   cargo run --release --example transform_cpu -- FOLDER [ROUNDS]
//! Prints the time per file and per MB over every `.json` file in FOLDER.
fn main() {
    let mut args = std::env::args().skip(1);
    let dir = args.next().expect("usage: transform_cpu FOLDER [ROUNDS]");
    let rounds: usize = args.next().map(|r| r.parse().expect("ROUNDS is a number")).unwrap_or(3);
    let files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .expect("readable folder")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
        .map(|e| (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).expect("readable file")))
        .collect();
    let bytes: usize = files.iter().map(|(_, b)| b.len()).sum();
    let started = std::time::Instant::now();
    let mut out = 0;
    for _ in 0..rounds {
        for (name, body) in &files {
            out += dqpipe_plugins::nats_message::transform(body, name).map(|t| t.json.len()).unwrap_or(0);
        }
    }
    let took = started.elapsed().as_secs_f64() / rounds as f64;
    println!(
        "{} files, {:.1} MB in, {:.1} MB out: {:.3} ms per file, {:.0} MB/s",
        files.len(),
        bytes as f64 / 1e6,
        out as f64 / rounds as f64 / 1e6,
        took * 1e3 / files.len() as f64,
        bytes as f64 / 1e6 / took
    );
}
