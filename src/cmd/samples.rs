//! `dqpipe samples`: sample NATS archive files (deterministic for a seed), for trials,
//! tests and the benchmark.

use std::path::PathBuf;

use crate::exit::Exit;

#[derive(clap::Args)]
pub struct Args {
    /// Folder to write into.
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 100)]
    count: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// How many hold the EICAR test string (they must end in quarantine).
    #[arg(long, default_value_t = 0)]
    infected: usize,
    /// How many are malformed (they must end in the dead letter).
    #[arg(long, default_value_t = 0)]
    malformed: usize,
    /// Pad clean files to about this many bytes (benchmarks).
    #[arg(long, default_value_t = 0)]
    size: usize,
    /// Also write the list of files and their classes (JSON) here.
    #[arg(long)]
    manifest: Option<PathBuf>,
}

pub fn run(a: Args) -> Exit {
    let written = crate::samples::generate(&a.out, a.count, a.seed, a.infected, a.malformed, a.size)
        .map_err(|e| e.to_string())
        .and_then(|samples| {
            if let Some(m) = &a.manifest {
                let json = serde_json::to_vec_pretty(&samples).map_err(|e| e.to_string())?;
                std::fs::write(m, json).map_err(|e| format!("{}: {e}", m.display()))?;
            }
            Ok(samples)
        });
    match written {
        Ok(s) => {
            let (n, out) = (s.len(), a.out.display());
            println!("wrote {n} files to {out} ({} infected, {} malformed)", a.infected, a.malformed);
            Exit::Ok
        }
        Err(e) => {
            crate::say::error(e);
            Exit::Error
        }
    }
}
