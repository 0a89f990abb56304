//! The `dqpipe` command: parses flags and calls the engine. Nothing else lives here.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use dqpipe_engine::executor::{self, Progress, RunOptions};
use dqpipe_engine::plan::{PlanHeader, PlanTotals, StaticPlan, PLAN_FORMAT};
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
    /// Print what a run would do: nodes in order with their resolved settings (secrets
    /// redacted) and concurrency, then every listed object with where it would be written,
    /// and the totals. Lists for real; never scans, writes, deletes or alerts.
    Plan {
        spec: PathBuf,
        #[arg(long, value_enum, default_value_t = PlanFormat::Text)]
        format: PlanFormat,
        #[command(flatten)]
        tuning: Tuning,
        /// Also read each object and transform it in memory, to resolve destination keys
        /// that depend on content (`msg_date`). Still never scans, writes or deletes.
        #[arg(long)]
        deep: bool,
        /// Show at most this many objects (the totals count all of them).
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Show every object.
        #[arg(long)]
        all: bool,
        /// Also write the whole plan (every object) to this file, for `run --plan`.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Exit 0 when there is nothing to do, 2 when there is work to do, 1 on any error.
        #[arg(long)]
        detailed_exitcode: bool,
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
        /// Process exactly the objects of this saved plan (`plan --out`). Refused if the spec
        /// or its variables changed; objects changed since planning are reported, not processed.
        #[arg(long, value_name = "FILE")]
        plan: Option<PathBuf>,
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
    use dqpipe_engine::spec::MAX_CONCURRENCY;
    let in_range = |n: &str| n.parse::<u64>().ok().filter(|n| (1..=MAX_CONCURRENCY).contains(n)).map(|n| n as usize);
    for c in &tuning.concurrency {
        let parsed = match c.split_once('=') {
            Some((node, n)) => in_range(n).map(|n| {
                nodes.insert(node.to_string(), n);
            }),
            None => in_range(c).map(|n| opts.default_concurrency = Some(n)),
        };
        if parsed.is_none() {
            eprintln!("error: --concurrency {c:?}: expected a whole number from 1 to {MAX_CONCURRENCY}, or NODE=N");
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
        Command::Plan { spec, format, tuning, deep, limit, all, out, detailed_exitcode } => {
            let fail = if detailed_exitcode { ExitCode::from(exit::ERROR) } else { ExitCode::from(exit::INVALID) };
            let (p, opts) = match load(&spec).and_then(|p| run_options(&tuning).map(|o| (p, o))) {
                Ok(x) => x,
                Err(_) => return fail,
            };
            let shown = if all { usize::MAX } else { limit };
            match plan(&p, opts, &spec, format, deep, shown, out.as_deref()).await {
                Ok(totals) if detailed_exitcode => {
                    ExitCode::from(if totals.to_process + totals.to_delete > 0 { 2 } else { 0 })
                }
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(exit::ERROR)
                }
            }
        }
        Command::Run { spec, tuning, report, progress, grace_secs, plan } => {
            let (p, mut opts) = match load(&spec).and_then(|p| run_options(&tuning).map(|o| (p, o))) {
                Ok(x) => x,
                Err(code) => return code,
            };
            if let Some(file) = plan {
                match read_plan(&file, &p) {
                    Ok(planned) => opts.only = Some(std::sync::Arc::new(planned)),
                    Err(e) => {
                        eprintln!("error: {}: {e}", file.display());
                        return ExitCode::from(exit::INVALID);
                    }
                }
            }
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

/// Plans a run: lists for real, previews every node, prints (and saves) the result.
async fn plan(
    p: &Pipeline,
    mut opts: RunOptions,
    spec: &Path,
    format: PlanFormat,
    deep: bool,
    shown: usize,
    out: Option<&Path>,
) -> Result<PlanTotals, String> {
    use std::io::Write as _;
    let static_plan = StaticPlan::new(p, &opts, &p.env_vars);
    let header = PlanHeader {
        format: PLAN_FORMAT,
        pipeline: &p.name,
        spec: spec.display().to_string(),
        spec_hash: &p.spec_hash,
        created_at: chrono_now(),
        deep,
        shard: opts.shard,
        stores: &static_plan.stores,
        nodes: &static_plan.nodes,
    };
    // `{"format":...,"nodes":[...]` then `,"objects":[` ... `],"totals":{...}}`.
    let head = serde_json::to_string(&header).map_err(|e| e.to_string())?;
    let head = format!("{},\"objects\":[", head.trim_end_matches('}'));
    let mut file = match out {
        Some(path) => {
            let mut f = std::io::BufWriter::new(
                std::fs::File::create(path).map_err(|e| format!("writing the plan to {}: {e}", path.display()))?,
            );
            f.write_all(head.as_bytes()).map_err(|e| e.to_string())?;
            Some(f)
        }
        None => None,
    };
    let stdout = std::io::stdout();
    let mut screen = std::io::BufWriter::new(stdout.lock());
    let shard = opts.shard.map(|s| format!(" (shard {s})")).unwrap_or_default();
    match format {
        PlanFormat::Text => {
            let _ = write!(screen, "{}", static_plan.render_text());
            let _ = writeln!(
                screen,
                "\nObjects{shard}{}:",
                if deep { ", read and transformed in memory (--deep)" } else { "" }
            );
        }
        PlanFormat::Json => {
            let _ = screen.write_all(head.as_bytes());
        }
    }

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    opts.mode = executor::Mode::Plan { deep };
    opts.plan_sink = Some(tx);
    opts.progress = Progress::Off;
    let mut totals = PlanTotals::default();
    let mut notes: Vec<String> = Vec::new();
    let mut count = 0usize;
    let consume = async {
        while let Some(o) = rx.recv().await {
            totals.add(&o);
            for n in &o.notes {
                if !notes.contains(n) {
                    notes.push(n.clone());
                }
            }
            let json = serde_json::to_string(&o).unwrap_or_default();
            if let Some(f) = file.as_mut() {
                let _ = f.write_all(if count == 0 { b"" } else { b"," });
                let _ = f.write_all(json.as_bytes());
            }
            if count < shown {
                match format {
                    PlanFormat::Text => {
                        let _ = writeln!(screen, "{}", o.render_text());
                    }
                    PlanFormat::Json => {
                        let _ = screen.write_all(if count == 0 { b"" } else { b"," });
                        let _ = screen.write_all(json.as_bytes());
                    }
                }
            }
            count += 1;
        }
    };
    let (report, ()) = tokio::join!(executor::run(p, opts), consume);
    let report = report.map_err(|e| e.to_string())?;
    let totals_json = serde_json::to_string(&totals).map_err(|e| e.to_string())?;
    let tail = |shown: usize| format!("],\"totals\":{totals_json},\"objects_shown\":{shown}}}");
    if let Some(mut f) = file {
        f.write_all(tail(count).as_bytes()).and_then(|_| f.flush()).map_err(|e| format!("writing the plan: {e}"))?;
    }
    match format {
        PlanFormat::Text => {
            if count > shown {
                let _ = writeln!(screen, "  ... and {} more (--all shows them)", count - shown);
            }
            for n in &notes {
                let _ = writeln!(screen, "Note: {n}");
            }
            let _ = writeln!(screen, "\n{}", totals.render());
        }
        PlanFormat::Json => {
            let _ = writeln!(screen, "{}", tail(count.min(shown)));
        }
    }
    let _ = screen.flush();
    if let Some(e) = report.source_errors.first() {
        return Err(format!("listing failed, the plan is incomplete: {}: {}", e.node, e.error));
    }
    Ok(totals)
}

fn chrono_now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Reads a saved plan for `run --plan` (streamed), refusing one made from another spec.
fn read_plan(file: &Path, p: &Pipeline) -> Result<dqpipe_engine::node::Planned, String> {
    let f = std::fs::File::open(file).map_err(|e| e.to_string())?;
    dqpipe_engine::plan_file::read_plan(f, &p.spec_hash).map_err(|e| e.to_string())
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
