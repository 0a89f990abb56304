//! The `dqpipe` command: parses flags and calls the engine. Each command is its own file
//! under `cmd/`; exit codes are in `exit.rs`; the progress display in `progress.rs`.

mod cmd;
mod exit;
mod metrics;
mod options;
mod progress;
mod reference;
mod report_target;
mod samples;
mod say;
mod spec_tests;
mod tap;
mod terse_log;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::exit::Exit;

/// The system allocator, counting what each jq program allocates so that `map`, `filter`
/// and `route` hold `memory_limit_mb` (see `dqpipe_plugins::map::budget`).
#[global_allocator]
static ALLOC: dqpipe_plugins::map::budget::Budgeted = dqpipe_plugins::map::budget::Budgeted;

#[derive(Parser)]
#[command(name = "dqpipe", version, about = "A declarative data-pipeline engine", long_about = None)]
pub(crate) struct Cli {
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
    Validate(cmd::validate::Args),
    /// Print the pipeline's graph.
    Graph(cmd::graph::Args),
    /// Print what a run would do: nodes in order with their resolved settings (secrets
    /// redacted) and concurrency, then every listed object with where it would be written,
    /// and the totals. Lists for real; never scans, writes, deletes or alerts.
    Plan(cmd::plan::Args),
    /// Run the pipeline to the end and print a summary.
    Run(cmd::run::Args),
    /// Print the JSON Schema of pipeline specs (for editors' YAML language servers);
    /// `--tests`, of tests files.
    Schema(cmd::schema::Args),
    /// List every node kind with its role and what it does.
    Kinds(cmd::kinds::Args),
    /// Print a kind's settings, ports and an example (`explain clamav`), one setting
    /// (`explain put.key`), or the settings of `defaults` or `stores` (`explain stores.s3`).
    Explain(cmd::explain::Args),
    /// Write the generated reference (DIR/kinds/*.md, DIR/stores.md); `--check` fails when
    /// it differs from what is there.
    Docs(cmd::docs::Args),
    /// Print shell completions (`dqpipe completions bash > /etc/bash_completion.d/dqpipe`).
    Completions(cmd::completions::Args),
    /// Print the man page (`dqpipe man > dqpipe.1`).
    Man,
    /// Run the test cases beside specs (`tests:`, or SPEC.tests.yaml) in memory: no clamd,
    /// S3, SFTP or network. One line per case, a diff per failure; exit 1 on any failure.
    Test(cmd::test::Args),
    /// Try a jq program (a file, or a spec's `map` node) on JSON files: one output a line.
    Map(cmd::map::Args),
    /// Write sample NATS archive files (deterministic for a seed), for trials and tests.
    Samples(cmd::samples::Args),
}

fn main() -> ExitCode {
    return_large_buffers();
    let cli = Cli::parse();
    // `dqpipe test` prints its own lines; the runs it makes log only errors (a case's
    // empty listing is no warning: its objects are the case's).
    let quiet = matches!(cli.command, Command::Test(_));
    init_logging(cli.log_format, if quiet { "error" } else { "info" });
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            say::error(format!("cannot start the runtime: {e}"));
            return Exit::Error.into();
        }
    };
    let exit = runtime.block_on(async {
        match cli.command {
            Command::Validate(a) => cmd::validate::run(a),
            Command::Graph(a) => cmd::graph::run(a),
            Command::Plan(a) => cmd::plan::run(a).await,
            Command::Run(a) => cmd::run::run(a).await,
            Command::Schema(a) => cmd::schema::run(a),
            Command::Kinds(a) => cmd::kinds::run(a),
            Command::Explain(a) => cmd::explain::run(a),
            Command::Docs(a) => cmd::docs::run(a),
            Command::Completions(a) => cmd::completions::completions(a),
            Command::Man => cmd::completions::man(),
            Command::Samples(a) => cmd::samples::run(a),
            Command::Map(a) => cmd::map::run(a),
            Command::Test(a) => cmd::test::run(a).await,
        }
    });
    // A blocking task that never ends (a jq program past its time limit, which jaq cannot
    // interrupt) would hold the runtime's drop, and the process, forever: the run is over
    // and its report written, so wait for such tasks a moment only.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    exit.into()
}

/// glibc's malloc keeps an arena per thread and, once a large buffer is freed, raises its
/// mmap threshold up to 32 MiB, so large bodies parsed one after another on different
/// worker threads stay in the arenas: 24 archive files of 19 MB, one at a time, peaked at
/// 630 MB of RSS. A fixed threshold of 4 MiB maps each larger buffer on its own and
/// returns it when freed: 110 MB (scripts/bench W4). Smaller ones (1 MB messages) keep the
/// arenas' speed. A tunable of the allocator, not a second allocator to build.
fn return_large_buffers() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a tunable; this runs first in main, before any thread.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
    }
}

fn init_logging(format: LogFormat, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("DQPIPE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let terminal = std::io::stderr().is_terminal();
    let builder =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(|| progress::LogWriter).with_ansi(terminal);
    say::use_json(matches!(format, LogFormat::Json));
    match format {
        LogFormat::Text if terminal => builder.event_format(terse_log::Terse).init(),
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
