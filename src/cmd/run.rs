//! `dqpipe run`: runs the pipeline to the end, prints the summary, writes the report.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use dqpipe_engine::api::{Planned, Stop};
use dqpipe_engine::run::executor;
use dqpipe_engine::run::stats::LiveStats;
use dqpipe_engine::Pipeline;

use crate::exit::Exit;
use crate::options::{load_with, Tuning};
use crate::progress;
use crate::report_target::Target;

#[derive(clap::Args)]
pub struct Args {
    spec: PathBuf,
    #[command(flatten)]
    tuning: Tuning,
    /// Write the run report (JSON) to this file, or to `STORE:KEY`, a key in one of the
    /// spec's stores (`internal:_dqpipe/reports/{{ run_id }}.json`).
    #[arg(long, value_name = "FILE|STORE:KEY")]
    report: Option<String>,
    /// Progress display: bars on a terminal, log lines otherwise.
    #[arg(long, value_enum, default_value_t = progress::Mode::Auto)]
    progress: progress::Mode,
    /// After SIGTERM or Ctrl-C, how long items in flight may take before they are
    /// abandoned (unprocessed, nothing partial written; a rerun does them).
    #[arg(long, value_name = "SECONDS", env = "DQPIPE_GRACE_SECS", default_value_t = 20)]
    grace_secs: u64,
    /// Process exactly the objects of this saved plan (`plan --out`). Refused if the spec
    /// or its variables changed; objects changed since planning are reported, not processed.
    #[arg(long, value_name = "FILE")]
    plan: Option<PathBuf>,
    /// Exit 0, not 3, when the run completed with problems (objects quarantined,
    /// dead-lettered or refused). For schedulers that must tell a problem night from a
    /// failed run (the Kubernetes CronJobs): the report, the metrics
    /// (`dqpipe_run_exit_code` 3) and the alerts still say it.
    #[arg(long, env = "DQPIPE_EXIT_ZERO_ON_PROBLEMS")]
    exit_zero_on_problems: bool,
    /// Print items passing this port (`NODE.PORT`, repeatable) as JSON lines on stdout,
    /// with their fields, as `vector tap` does; the run is unchanged.
    #[arg(long, value_name = "NODE.PORT")]
    tap: Vec<String>,
    /// With --tap: print the first N items of each tapped port...
    #[arg(long, value_name = "N", default_value_t = 20)]
    tap_limit: u64,
    /// ...then one in every N.
    #[arg(long, value_name = "N", default_value_t = 100)]
    tap_every: u64,
    /// Not a run: `dqpipe plan SPEC` says what a run would do (hidden; it says so).
    #[arg(long, hide = true)]
    dry_run: bool,
}

/// Sets the run's tap from `--tap`, or says why a tapped port is not the spec's.
fn tapped(args: &Args, p: &Pipeline, opts: &mut executor::RunOptions) -> Result<(), Exit> {
    if args.tap.is_empty() {
        return Ok(());
    }
    let sample = crate::tap::Sample { limit: args.tap_limit, every: args.tap_every };
    let tap = crate::tap::tap(p, &args.tap, sample).map_err(|e| {
        crate::say::error(e);
        Exit::Invalid
    })?;
    opts.tap = Some(tap);
    Ok(())
}

pub async fn run(args: Args) -> Exit {
    if args.dry_run {
        crate::say::error(format!(
            "`run` has no --dry-run: `dqpipe plan {}` prints what a run would do, object by object, \
             and checks what the run needs, without scanning, writing, deleting or alerting",
            args.spec.display()
        ));
        return Exit::Invalid;
    }
    let (p, mut opts) = match load_with(&args.spec, &args.tuning) {
        Ok(x) => x,
        Err(e) => return e,
    };
    if let Err(e) = tapped(&args, &p, &mut opts) {
        return e;
    }
    if let Err(e) = planned(&args, &p, &mut opts) {
        return e;
    }
    opts.grace = std::time::Duration::from_secs(args.grace_secs);
    let report = args.report.as_deref().map(|r| Target::parse(r, &p, &opts.run_id));
    opts.report_location = report.as_ref().map(|t| t.describe(&p));
    let stats = LiveStats::new(&p);
    opts.stats = Some(stats.clone());
    stop_on_signals(opts.stop.clone());
    let display = progress::Display::start(stats, args.progress);
    // Every log line of the run carries the pipeline, the run id and the shard.
    let shard = opts.shard;
    let shard_text = shard.map(|s| s.to_string()).unwrap_or_default();
    let span = tracing::info_span!("run", pipeline = %p.name, run_id = %opts.run_id, shard = %shard_text);
    let result = tracing::Instrument::instrument(executor::run(&p, opts), span).await;
    if let Some(d) = display {
        d.finish().await;
    }
    let gateway = p.metrics.pushgateway.trim();
    let r = match result {
        Ok(r) => r,
        // Another run is doing the work, and pushing its figures: this one says why it
        // did nothing and exits 5.
        Err(e @ executor::RunError::Busy(_)) => {
            crate::say::error(e);
            return Exit::Busy;
        }
        Err(e) => {
            crate::say::error(e);
            if !gateway.is_empty() {
                crate::metrics::push_not_started(gateway, &p.name, shard).await;
            }
            return Exit::Error;
        }
    };
    crate::say::summary(&r);
    if !gateway.is_empty() {
        crate::metrics::push(gateway, &r).await;
    }
    if let Some(target) = &report {
        // The exit code says what the run did, whether or not its report could be kept:
        // a run that quarantined files must not turn into "retry" because a disk was full.
        if let Err(e) = target.write(&p, &r).await {
            tracing::error!(report = %target.describe(&p), error = format!("{e:#}"), "the run report could not be written");
        }
    }
    match Exit::of_run(r.outcome) {
        Exit::Problems if args.exit_zero_on_problems => {
            crate::say::note(
                "exiting 0 for a run with problems (--exit-zero-on-problems): the report, metrics and alerts say 3",
            );
            Exit::Ok
        }
        exit => exit,
    }
}

/// `run --plan FILE`: only the objects the saved plan names.
fn planned(args: &Args, p: &Pipeline, opts: &mut executor::RunOptions) -> Result<(), Exit> {
    let Some(file) = &args.plan else { return Ok(()) };
    match read_plan(file, p) {
        Ok(planned) => {
            // A plan made with --reprocess planned finished objects too: run them.
            opts.reprocess |= planned.reprocess;
            opts.only = Some(Arc::new(planned));
            Ok(())
        }
        Err(e) => {
            crate::say::error(format!("{}: {e:#}", file.display()));
            Err(Exit::Invalid)
        }
    }
}

/// Reads a saved plan for `run --plan` (streamed), refusing one made from another spec.
fn read_plan(file: &Path, p: &Pipeline) -> anyhow::Result<Planned> {
    let f = std::fs::File::open(file)?;
    Ok(dqpipe_engine::plan::file::read_plan(f, &p.spec_hash)?)
}

/// SIGINT and SIGTERM stop the listing; items in flight finish and the summary is printed.
fn stop_on_signals(stop: Stop) {
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
