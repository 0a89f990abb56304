//! `dqpipe plan`: what a run would do. Lists for real, previews every node (no scan,
//! write, delete or alert), prints the objects and totals, and saves the plan with `--out`.

use std::io::Write;

use anyhow::Context as _;
use std::path::{Path, PathBuf};

use dqpipe_engine::plan::file::PlanWriter;
use dqpipe_engine::plan::{PlanHeader, PlanTotals, PlannedObject, StaticPlan, PLAN_FORMAT};
use dqpipe_engine::run::executor::{self, Mode, RunOptions};
use dqpipe_engine::Pipeline;

use crate::exit::Exit;
use crate::options::{load_with, Tuning};

#[derive(clap::Args)]
pub struct Args {
    spec: PathBuf,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
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
    /// Check only that the sources can be listed, not what the run needs besides (the
    /// scanner, each written store with its own credentials).
    #[arg(long)]
    no_preflight: bool,
    /// Exit 0 when there is nothing to do, 2 when there is work to do, 1 on any error.
    #[arg(long)]
    detailed_exitcode: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    Text,
    Json,
}

pub async fn run(args: Args) -> Exit {
    let (p, opts) = match load_with(&args.spec, &args.tuning) {
        Ok(x) => x,
        Err(_) if args.detailed_exitcode => return Exit::Error,
        Err(e) => return e,
    };
    match plan(&p, opts, &args).await {
        Ok(totals) if args.detailed_exitcode => {
            if totals.to_process + totals.to_delete > 0 {
                Exit::WORK_TO_DO
            } else {
                Exit::Ok
            }
        }
        Ok(_) => Exit::Ok,
        Err(e) => {
            crate::say::error(format!("{e:#}"));
            Exit::Error
        }
    }
}

/// Where the plan goes: the screen (text, or JSON of the objects shown) and the file.
struct Emitter<'a> {
    shown: usize,
    count: usize,
    notes: Vec<String>,
    screen: Screen<'a>,
    file: Option<PlanWriter<std::io::BufWriter<std::fs::File>>>,
}

enum Screen<'a> {
    Text(std::io::StdoutLock<'a>),
    Json(PlanWriter<std::io::StdoutLock<'a>>),
}

impl Emitter<'_> {
    fn object(&mut self, o: &PlannedObject) -> anyhow::Result<()> {
        for n in &o.notes {
            if !self.notes.contains(n) {
                self.notes.push(n.clone());
            }
        }
        if let Some(f) = self.file.as_mut() {
            f.object(o).context("writing the plan file")?;
        }
        if self.count < self.shown {
            match &mut self.screen {
                Screen::Json(w) => w.object(o).context("writing the plan")?,
                Screen::Text(w) => writeln!(w, "{}", o.render_text()).context("writing the plan")?,
            }
        }
        self.count += 1;
        Ok(())
    }
}

/// Plans a run: lists for real, previews every node, prints (and saves) the result.
async fn plan(p: &Pipeline, mut opts: RunOptions, args: &Args) -> anyhow::Result<PlanTotals> {
    let static_plan = StaticPlan::new(p, &p.effective_concurrency(&opts), &p.env_vars);
    let header = PlanHeader {
        format: PLAN_FORMAT,
        pipeline: &p.name,
        spec: args.spec.display().to_string(),
        spec_hash: &p.spec_hash,
        created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        deep: args.deep,
        reprocess: opts.reprocess,
        shard: opts.shard,
        stores: &static_plan.stores,
        nodes: &static_plan.nodes,
    };
    let mut screen = std::io::stdout().lock();
    let screen = match args.format {
        Format::Text => {
            let shard = opts.shard.map(|s| format!(" (shard {s})")).unwrap_or_default();
            let deep = if args.deep { ", read and transformed in memory (--deep)" } else { "" };
            let checked = if args.no_preflight {
                "Checked: the listings only (--no-preflight).\n".to_string()
            } else {
                checks(p)
            };
            write!(screen, "{}\n{checked}Objects{shard}{deep}:\n", static_plan.render_text())
                .context("writing the plan")?;
            Screen::Text(screen)
        }
        Format::Json => Screen::Json(PlanWriter::start(screen, &header).context("writing the plan")?),
    };
    let mut out = Emitter {
        shown: if args.all { usize::MAX } else { args.limit },
        count: 0,
        notes: Vec::new(),
        screen,
        file: args.out.as_deref().map(|path| start_file(path, &header)).transpose()?,
    };

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    opts.mode = Mode::Plan { deep: args.deep, preflight: !args.no_preflight };
    opts.plan_sink = Some(tx);
    let mut totals = PlanTotals::default();
    let consume = async {
        while let Some(o) = rx.recv().await {
            totals.add(&o);
            out.object(&o)?;
        }
        Ok::<(), anyhow::Error>(())
    };
    let (report, consumed) = tokio::join!(executor::run(p, opts), consume);
    let report = report?;
    consumed?;
    finish(out, &totals).context("writing the plan")?;
    if let Some(e) = report.source_errors.first() {
        anyhow::bail!("listing failed, the plan is incomplete: {}: {}", e.node, e.error);
    }
    Ok(totals)
}

fn start_file(path: &Path, header: &PlanHeader) -> anyhow::Result<PlanWriter<std::io::BufWriter<std::fs::File>>> {
    let context = || format!("writing the plan to {}", path.display());
    let f = std::fs::File::create(path).with_context(context)?;
    PlanWriter::start(std::io::BufWriter::new(f), header).with_context(context)
}

/// The totals, on the screen and at the end of the file.
fn finish(mut out: Emitter, totals: &PlanTotals) -> std::io::Result<()> {
    if let Some(f) = out.file.take() {
        f.finish(totals, out.count as u64)?;
    }
    let shown = out.count.min(out.shown);
    match out.screen {
        Screen::Json(w) => {
            let mut screen = w.finish(totals, shown as u64)?;
            writeln!(screen)?;
            screen.flush()
        }
        Screen::Text(mut screen) => {
            if out.count > shown {
                writeln!(screen, "  ... and {} more (--all shows them)", out.count - shown)?;
            }
            for n in &out.notes {
                writeln!(screen, "Note: {n}")?;
            }
            writeln!(screen, "\n{}", totals.render())?;
            screen.flush()
        }
    }
}

/// What the plan's preflight checked, as this pipeline has it: its listings, the stores
/// it writes (each with its own credentials), its scanners.
fn checks(p: &Pipeline) -> String {
    let has = |kinds: &[&str]| p.nodes.iter().any(|n| kinds.contains(&n.spec.kind.as_str()));
    let mut checked = vec!["every listing"];
    if has(&["put", "batch", "stamp", "delete"]) {
        checked.push("every store written to, with its own credentials");
    }
    if has(&["clamav"]) {
        checked.push("the scanner (PING, VERSION, canary)");
    }
    format!("Checks, as a run makes them (read-only): {}.\n", checked.join(", "))
}
