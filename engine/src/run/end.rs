//! The end of a run: its outcome, the end-of-run hooks (alerts) told of it, and the report.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use futures::FutureExt;

use crate::api::{Built, RunFacts};
use crate::run::options::{Mode, RunOptions};
use crate::run::preflight::RunError;
use crate::run::report::{causes, Cause, ItemCounts, Outcome, RunReport, SourceError, UnmetExpectation};
use crate::run::stats::LiveStats;
use crate::spec::load::Pipeline;

/// How the nodes' tasks ended.
pub(crate) struct Ended {
    pub(crate) source_errors: Vec<SourceError>,
    /// Why the run stopped itself early (a dependency down), if it did.
    pub(crate) halted: Option<String>,
    pub(crate) started: Instant,
    pub(crate) started_at: chrono::DateTime<chrono::Utc>,
}

/// The run's report, once the end-of-run hooks (alerts; runs only, not plans) were told.
pub(crate) async fn report(
    p: &Pipeline,
    opts: &RunOptions,
    stats: &LiveStats,
    concurrency: &[crate::spec::Concurrency],
    ended: Ended,
) -> RunReport {
    let tracker = &stats.tracker;
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let (nodes, problems) = stats.node_reports(p, concurrency);
    let items = ItemCounts {
        from_sources: load(&tracker.started),
        complete: load(&tracker.complete),
        failed: load(&tracker.failed),
        refused: load(&tracker.refused),
        problems,
        skipped_done: load(&tracker.skipped_done),
        dropped: load(&tracker.dropped),
    };
    let interrupted = opts.stop.is_stopped() && ended.halted.is_none();
    let outcome = if items.failed > 0
        || !ended.source_errors.is_empty()
        || opts.stop.is_stopped()
        || items.complete + items.failed + items.refused != items.from_sources
    {
        Outcome::Incomplete
    } else if problems > 0 || items.refused > 0 || !tracker.expectations().is_empty() {
        Outcome::CompleteWithProblems
    } else {
        Outcome::Complete
    };
    let mut failures = tracker.failures();
    failures.sort_by(|a, b| a.key.cmp(&b.key));
    let mut problem_objects = tracker.problems();
    problem_objects.sort_by(|a, b| a.key.cmp(&b.key));
    let expectations = tracker.expectations();
    let causes = all_causes(&failures, &expectations, &ended);
    let report = RunReport {
        format_version: crate::run::report::REPORT_FORMAT_VERSION,
        pipeline: p.name.clone(),
        run_id: opts.run_id.clone(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        spec_hash: p.spec_hash.clone(),
        started_at: ended.started_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        ended_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        outcome,
        exit_code: outcome.exit_code(),
        duration_seconds: ended.started.elapsed().as_secs_f64(),
        items,
        nodes,
        causes,
        failures,
        problem_objects,
        source_errors: ended.source_errors,
        expectations,
        not_listed: tracker.not_listed(),
        interrupted,
        halted: ended.halted,
        halt_policy: p.defaults.halt.describe(),
        shard: opts.shard,
        peak_rss_bytes: crate::run::report::peak_rss_bytes(),
    };
    let mut report = report;
    if !matches!(opts.mode, Mode::Plan { .. }) {
        tell_hooks(p, &facts_of(&report, opts)).await;
    }
    // Read after the hooks: an alert node's end-of-run alerts are counted too.
    for (n, r) in p.nodes.iter().zip(report.nodes.iter_mut()) {
        if let Built::Processor(x) = &n.built {
            r.counters = x.counters().into_iter().collect();
        }
    }
    report
}

/// Why objects were not done, grouped; first why the run stopped early, sources that
/// stopped and expectations unmet, each its own cause.
fn all_causes(failures: &[crate::api::ItemFailure], expectations: &[UnmetExpectation], ended: &Ended) -> Vec<Cause> {
    let mut causes = causes(failures);
    let one = |node: &str, reason: String| Cause { node: node.to_string(), reason, count: 1, examples: Vec::new() };
    for e in expectations {
        causes.insert(0, one(&e.node, e.reason.clone()));
    }
    for e in &ended.source_errors {
        causes.insert(0, one(&e.node, e.error.clone()));
    }
    if let Some(why) = &ended.halted {
        causes.insert(0, one("", format!("stopped early: {why}")));
    }
    causes
}

/// What the end-of-run hooks are told of a run that ran.
fn facts_of(report: &RunReport, opts: &RunOptions) -> RunFacts {
    let routes = report
        .nodes
        .iter()
        .flat_map(|n| n.ports.iter().map(move |(port, r)| (n, port, r)))
        .filter(|(_, _, r)| r.problem && r.items > 0 && !r.routed_to.is_empty())
        .map(|(n, port, r)| (format!("{}.{port}", n.name), r.items))
        .collect();
    RunFacts {
        pipeline: report.pipeline.clone(),
        source_items: report.items.from_sources,
        skipped_done: report.items.skipped_done,
        failed_items: report.items.failed,
        refused_items: report.items.refused,
        problem_items: report.items.problems,
        outcome: Some(report.outcome),
        exit_code: report.exit_code,
        problem_routes: routes,
        causes: report.causes.clone(),
        report: opts.report_location.clone(),
    }
}

/// A run that could not start (a preflight check failed, exit 1): the end-of-run hooks
/// are told, with the checks that failed as the causes, so that the alert goes out. (No
/// report is written for it.)
pub(crate) async fn did_not_start(p: &Pipeline, e: &RunError) {
    let failed = match e {
        RunError::Preflight(failed) => failed.clone(),
        RunError::Lease(why) => vec![("lease".to_string(), why.clone())],
        // Another run is doing the work (and alerting): nothing to tell.
        RunError::Busy(_) => return,
    };
    let facts = RunFacts {
        pipeline: p.name.clone(),
        exit_code: 1,
        causes: failed
            .iter()
            .map(|(node, reason)| Cause { node: node.clone(), reason: reason.clone(), count: 1, examples: vec![] })
            .collect(),
        ..RunFacts::default()
    };
    tell_hooks(p, &facts).await;
}

async fn tell_hooks(p: &Pipeline, facts: &RunFacts) {
    for n in &p.nodes {
        if let Built::Processor(x) = &n.built {
            // A hook that panics is logged; the run's outcome stands.
            if AssertUnwindSafe(x.finish(facts)).catch_unwind().await.is_err() {
                tracing::error!(node = %n.spec.name, "internal error: the end-of-run hook panicked");
            }
        }
    }
}
