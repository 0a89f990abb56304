//! The `dqpipe` command: parses flags and calls the engine. Nothing else lives here.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use dqpipe_engine::executor::{self, Progress, RunOptions};
use dqpipe_engine::plan::StaticPlan;
use dqpipe_engine::{load_pipeline, Pipeline, SpecErrors};

/// Exit codes (README, "Exit codes").
mod exit {
    pub const ERROR: u8 = 1;
    pub const INVALID: u8 = 2;
}

#[derive(Parser)]
#[command(name = "dqpipe", version, about = "A declarative data-pipeline engine", long_about = None)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Check a spec: syntax, fields, variables, kinds, wiring, routing, cycles.
    Validate {
        /// The pipeline spec (.yaml, .yml or .toml).
        spec: PathBuf,
    },
    /// Print the pipeline's graph.
    Graph {
        spec: PathBuf,
        #[arg(long, value_enum, default_value_t = GraphFormat::Dot)]
        format: GraphFormat,
    },
    /// Print what a run would do: nodes in order, resolved settings (secrets redacted),
    /// concurrency, stores. Reads nothing, writes nothing.
    Plan {
        spec: PathBuf,
        #[arg(long, value_enum, default_value_t = PlanFormat::Text)]
        format: PlanFormat,
        #[command(flatten)]
        tuning: Tuning,
    },
    /// Run the pipeline to the end and print a summary.
    Run {
        spec: PathBuf,
        #[command(flatten)]
        tuning: Tuning,
        /// Write the run report (JSON) to this file.
        #[arg(long)]
        report: Option<PathBuf>,
        /// Progress display: bars on a terminal, log lines otherwise.
        #[arg(long, value_enum, default_value_t = ProgressArg::Auto)]
        progress: ProgressArg,
        /// After SIGTERM or Ctrl-C, how long items in flight may take before they are
        /// abandoned (unprocessed, nothing partial written; a rerun does them).
        #[arg(long, value_name = "SECONDS", env = "DQPIPE_GRACE_SECS", default_value_t = 20)]
        grace_secs: u64,
    },
    /// Print the JSON Schema of pipeline specs (for editors' YAML language servers).
    Schema,
    /// Write sample NATS archive files (deterministic for a seed), for trials and tests.
    Samples {
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
    },
}

#[derive(clap::Args)]
struct Tuning {
    /// `N` replaces the spec's default concurrency; `NODE=N` sets one node's. Repeatable.
    #[arg(long, value_name = "N|NODE=N")]
    concurrency: Vec<String>,
    /// Take only this share of the objects, by a stable hash of each key: `2/4` is the
    /// third of four. `/4` takes INDEX from JOB_COMPLETION_INDEX (Kubernetes Indexed Jobs).
    #[arg(long, value_name = "INDEX/COUNT", env = "DQPIPE_SHARD")]
    shard: Option<String>,
    /// Process objects even when an earlier run recorded them as done.
    #[arg(long)]
    reprocess: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum GraphFormat {
    Dot,
    Mermaid,
}

#[derive(Clone, Copy, ValueEnum)]
enum PlanFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum ProgressArg {
    Auto,
    Bars,
    Log,
    Off,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(exit::ERROR);
        }
    };
    runtime.block_on(dispatch(cli.command))
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("DQPIPE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn load(spec: &Path) -> Result<Pipeline, ExitCode> {
    let registry = dqpipe_plugins::registry();
    load_pipeline(spec, &registry, &|name| std::env::var(name).ok()).map_err(|e: SpecErrors| {
        eprintln!("{e}");
        eprintln!("{} error{} in {}", e.0.len(), if e.0.len() == 1 { "" } else { "s" }, spec.display());
        ExitCode::from(exit::INVALID)
    })
}

fn run_options(tuning: &Tuning) -> Result<RunOptions, ExitCode> {
    let mut opts = RunOptions::default();
    let mut nodes = HashMap::new();
    for c in &tuning.concurrency {
        let parsed = match c.split_once('=') {
            Some((node, n)) => n.parse::<usize>().ok().filter(|n| *n > 0).map(|n| {
                nodes.insert(node.to_string(), n);
            }),
            None => c.parse::<usize>().ok().filter(|n| *n > 0).map(|n| opts.default_concurrency = Some(n)),
        };
        if parsed.is_none() {
            eprintln!("error: --concurrency {c:?}: expected a whole number of at least 1, or NODE=N");
            return Err(ExitCode::from(exit::INVALID));
        }
    }
    opts.node_concurrency = nodes;
    opts.reprocess = tuning.reprocess;
    if let Some(shard) = &tuning.shard {
        let spelled = match shard.strip_prefix('/') {
            Some(count) => match std::env::var("JOB_COMPLETION_INDEX") {
                Ok(i) => format!("{}/{count}", i.trim()),
                Err(_) => {
                    eprintln!("error: --shard /{count} takes its index from JOB_COMPLETION_INDEX, which is not set");
                    return Err(ExitCode::from(exit::INVALID));
                }
            },
            None => shard.clone(),
        };
        match spelled.parse() {
            Ok(s) => opts.shard = Some(s),
            Err(e) => {
                eprintln!("error: --shard {e}");
                return Err(ExitCode::from(exit::INVALID));
            }
        }
    }
    Ok(opts)
}

async fn dispatch(command: Command) -> ExitCode {
    match command {
        Command::Validate { spec } => match load(&spec) {
            Ok(p) => {
                println!("{}: valid ({} nodes, {} stores)", spec.display(), p.nodes.len(), p.stores.len());
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Graph { spec, format } => match load(&spec) {
            Ok(p) => {
                match format {
                    GraphFormat::Dot => println!("{}", p.dag.to_dot()),
                    GraphFormat::Mermaid => print!("{}", p.dag.to_mermaid()),
                }
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Plan { spec, format, tuning } => {
            let (p, opts) = match load(&spec).and_then(|p| run_options(&tuning).map(|o| (p, o))) {
                Ok(x) => x,
                Err(code) => return code,
            };
            let plan = StaticPlan::new(&p, &opts, &p.env_vars);
            match format {
                PlanFormat::Text => print!("{}", plan.render_text()),
                PlanFormat::Json => match serde_json::to_string_pretty(&plan) {
                    Ok(s) => println!("{s}"),
                    Err(e) => {
                        eprintln!("error: {e}");
                        return ExitCode::from(exit::ERROR);
                    }
                },
            }
            ExitCode::SUCCESS
        }
        Command::Run { spec, tuning, report, progress, grace_secs } => {
            let (p, mut opts) = match load(&spec).and_then(|p| run_options(&tuning).map(|o| (p, o))) {
                Ok(x) => x,
                Err(code) => return code,
            };
            opts.progress = match progress {
                ProgressArg::Auto => Progress::Auto,
                ProgressArg::Bars => Progress::Bars,
                ProgressArg::Log => Progress::Log,
                ProgressArg::Off => Progress::Off,
            };
            opts.grace = std::time::Duration::from_secs(grace_secs);
            stop_on_signals(opts.stop.clone());
            let r = match executor::run(&p, opts).await {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(exit::ERROR);
                }
            };
            eprint!("{}", r.render_text());
            if let Some(path) = report {
                let written = serde_json::to_vec_pretty(&r)
                    .map_err(|e| e.to_string())
                    .and_then(|j| std::fs::write(&path, j).map_err(|e| e.to_string()));
                if let Err(e) = written {
                    eprintln!("error: writing the report to {}: {e}", path.display());
                    return ExitCode::from(exit::ERROR);
                }
            }
            ExitCode::from(r.exit_code as u8)
        }
        Command::Samples { out, count, seed, infected, malformed, size, manifest } => {
            let written = dqpipe_plugins::samples::generate(&out, count, seed, infected, malformed, size)
                .map_err(|e| e.to_string())
                .and_then(|samples| {
                    if let Some(m) = &manifest {
                        let json = serde_json::to_vec_pretty(&samples).map_err(|e| e.to_string())?;
                        std::fs::write(m, json).map_err(|e| format!("{}: {e}", m.display()))?;
                    }
                    Ok(samples)
                });
            match written {
                Ok(s) => {
                    println!(
                        "wrote {} files to {} ({infected} infected, {malformed} malformed)",
                        s.len(),
                        out.display()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(exit::ERROR)
                }
            }
        }
        Command::Schema => {
            let registry = dqpipe_plugins::registry();
            match serde_json::to_string_pretty(&dqpipe_engine::schema::spec_schema(&registry)) {
                Ok(s) => {
                    println!("{s}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(exit::ERROR)
                }
            }
        }
    }
}

/// SIGINT and SIGTERM stop the listing; items in flight finish and the summary is printed.
fn stop_on_signals(stop: dqpipe_engine::node::Stop) {
    tokio::spawn(async move {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term => {}
        }
        tracing::warn!("stop requested: no new objects; finishing those in flight");
        stop.stop();
    });
}
