//! The executor, in-process: test kinds (`dqpipe_engine::testing`), no server, no
//! process, tokio's paused time. Each test states the bound it checks and where it comes
//! from in the settings.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use dqpipe_engine::run::executor::{self, RunError, RunOptions};
use dqpipe_engine::run::report::{Outcome, RunReport};
use dqpipe_engine::run::stats::LiveStats;
use dqpipe_engine::spec::load::load_pipeline_str;
use dqpipe_engine::testing::{registry, Probe};
use dqpipe_engine::Pipeline;

/// A pipeline `numbers -> gate` with these settings.
fn pipeline(probe: &Arc<Probe>, defaults: &str, numbers: &str, gate: &str) -> Pipeline {
    let yaml = format!(
        "version: 1\nname: t\ndefaults: {{ {defaults} }}\nnodes:\n  src: {{ kind: numbers, {numbers} }}\n  gate: {{ kind: gate, input: src, {gate} }}\n"
    );
    match load_pipeline_str(Path::new("t.yaml"), &yaml, &registry(probe.clone()), &|_| None) {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    }
}

/// Yields until `cond` holds (the other tasks run meanwhile; paused time never sleeps).
async fn until(cond: impl Fn() -> bool) {
    while !cond() {
        tokio::task::yield_now().await;
    }
}

async fn run(p: &Pipeline, opts: RunOptions) -> RunReport {
    executor::run(p, opts).await.expect("the run starts")
}

#[tokio::test(start_paused = true)]
async fn every_object_completes_and_is_acknowledged_once() {
    let probe = Arc::new(Probe::default());
    let p = pipeline(&probe, "concurrency: 8", "count: 500", "");
    let r = run(&p, RunOptions::default()).await;
    assert_eq!(r.outcome, Outcome::Complete);
    assert_eq!((r.items.from_sources, r.items.complete, r.items.failed), (500, 500, 0));
    let mut acked = probe.acked();
    acked.sort();
    acked.dedup();
    assert_eq!(acked.len(), 500);
}

#[tokio::test(start_paused = true)]
async fn a_node_works_on_at_most_its_concurrency() {
    let probe = Arc::new(Probe::default());
    let p = pipeline(&probe, "concurrency: 8", "count: 100", "hold: true, concurrency: 4");
    let running = tokio::spawn({
        let p = Arc::new(p);
        async move { run(&p, RunOptions::default()).await }
    });
    until(|| probe.open.load(Ordering::SeqCst) == 4).await;
    // More time passes; no fifth item enters while four are held.
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(probe.entered.load(Ordering::SeqCst), 4);
    probe.release(100);
    let r = running.await.unwrap();
    assert_eq!(r.items.complete, 100);
    assert_eq!(probe.max_open.load(Ordering::SeqCst), 4);
}

#[tokio::test(start_paused = true)]
async fn a_slow_node_holds_back_the_source() {
    let probe = Arc::new(Probe::default());
    let p = Arc::new(pipeline(&probe, "channel_capacity: 2", "count: 1000", "hold: true, concurrency: 1"));
    let stats = LiveStats::new(&p);
    let opts = RunOptions { stats: Some(stats.clone()), ..RunOptions::default() };
    let running = tokio::spawn({
        let p = p.clone();
        async move { run(&p, opts).await }
    });
    until(|| probe.open.load(Ordering::SeqCst) == 1).await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    // Sent by the source while the gate holds one item: that one, the channel's 2, and
    // the one the source waits to send (counted when sent): at most 1 + 2 + 1.
    let sent = stats.snapshot().nodes[0].items;
    assert!(sent <= 4, "the source sent {sent} items past a held node");
    probe.release(1000);
    assert_eq!(running.await.unwrap().items.complete, 1000);
}

/// Runs `p` (its source sends 64 items to a gate that holds them) and checks that no more
/// than `in_flight` ever reach the gate at once, though it takes 32.
async fn at_most_in_flight(probe: &Arc<Probe>, p: Pipeline, in_flight: usize) {
    let p = Arc::new(p);
    let running = tokio::spawn({
        let p = p.clone();
        async move { run(&p, RunOptions::default()).await }
    });
    until(|| probe.open.load(Ordering::SeqCst) == in_flight).await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(probe.entered.load(Ordering::SeqCst), in_flight);
    probe.release(64);
    assert_eq!(running.await.unwrap().items.complete, 64);
    assert_eq!(probe.max_open.load(Ordering::SeqCst), in_flight);
}

#[tokio::test(start_paused = true)]
async fn the_byte_budget_bounds_the_objects_in_flight() {
    let probe = Arc::new(Probe::default());
    // 4 KiB of 1 KiB objects: 4 in the pipeline at once, though the gate takes 32.
    let p = pipeline(&probe, "max_bytes_in_flight: 4096", "count: 64, size: 1024", "hold: true, concurrency: 32");
    at_most_in_flight(&probe, p, 4).await;
}

/// Behind a node that parses whole bodies into an output twice their size, an object
/// counts twice: 8 KiB of 1 KiB objects is 4 in flight.
#[tokio::test(start_paused = true)]
async fn the_byte_budget_counts_what_a_parse_makes_of_an_object() {
    let probe = Arc::new(Probe::default());
    let yaml = "version: 1\nname: t\ndefaults: { max_bytes_in_flight: 8192 }\nnodes:\n  src: { kind: numbers, count: 64, size: 1024 }\n  gate: { kind: parse_gate, input: src, hold: true, concurrency: 32 }\n";
    let p = match load_pipeline_str(Path::new("t.yaml"), yaml, &registry(probe.clone()), &|_| None) {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    };
    at_most_in_flight(&probe, p, 4).await;
}

#[tokio::test(start_paused = true)]
async fn failed_and_panicking_items_are_reported_and_never_acknowledged() {
    let probe = Arc::new(Probe::default());
    let p = pipeline(&probe, "", "count: 10", "fail: [k3], panic: [k7]");
    let r = run(&p, RunOptions::default()).await;
    assert_eq!(r.outcome, Outcome::Incomplete);
    assert_eq!((r.items.complete, r.items.failed), (8, 2));
    let reasons: Vec<(String, String)> = r.failures.iter().map(|f| (f.key.clone(), f.reason.clone())).collect();
    assert_eq!(
        reasons,
        vec![
            ("k3".to_string(), "told to fail \"k3\"".to_string()),
            ("k7".to_string(), "internal error: the node panicked".to_string())
        ]
    );
    let acked = probe.acked();
    assert!(!acked.contains(&"k3".to_string()) && !acked.contains(&"k7".to_string()), "{acked:?}");
    assert_eq!(acked.len(), 8);
}

#[tokio::test(start_paused = true)]
async fn refused_items_end_the_run_with_problems_and_stay_at_their_source() {
    let probe = Arc::new(Probe::default());
    let p = pipeline(&probe, "", "count: 10", "refuse: [k2, k5]");
    let r = run(&p, RunOptions::default()).await;
    // Refused for good: no rerun helps, so not "incomplete" (exit 4, retried by the Job)
    // but problems (exit 3); their objects are not acknowledged.
    assert_eq!((r.outcome, r.exit_code), (Outcome::CompleteWithProblems, 3));
    assert_eq!((r.items.complete, r.items.failed, r.items.refused), (8, 0, 2));
    assert!(r.failures.iter().all(|f| f.permanent && f.reason.starts_with("told to refuse")), "{:?}", r.failures);
    let acked = probe.acked();
    assert!(!acked.contains(&"k2".to_string()) && !acked.contains(&"k5".to_string()), "{acked:?}");
    assert_eq!(acked.len(), 8);

    // With a transient failure beside them, the run is incomplete: a rerun is worth it.
    let p = pipeline(&probe, "", "count: 10", "refuse: [k2], fail: [k3]");
    let r = run(&p, RunOptions::default()).await;
    assert_eq!((r.outcome, r.items.failed, r.items.refused), (Outcome::Incomplete, 1, 1));
}

#[tokio::test(start_paused = true)]
async fn a_node_that_fails_every_object_stops_the_run_early() {
    let probe = Arc::new(Probe::default());
    // The first 100 of 10,000 fail (a dependency down): the 50th failure in a row stops the
    // listing, so the run ends long before the source's end, incomplete, saying why.
    let failing: Vec<String> = (0..100).map(|i| format!("k{i}")).collect();
    let p = pipeline(&probe, "channel_capacity: 4", "count: 10000", &format!("fail: [{}]", failing.join(", ")));
    let r = run(&p, RunOptions::default()).await;
    assert_eq!(r.outcome, Outcome::Incomplete);
    assert!(!r.interrupted, "stopped by itself, not by a signal");
    let halted = r.halted.clone().unwrap_or_default();
    assert!(halted.starts_with("50 objects in a row failed at `gate`, the last one: told to fail \"k"), "{halted}");
    // What was listed is accounted for: the failures, and the ones that got through.
    assert!(r.items.from_sources < 10_000, "{:?}", r.items);
    assert_eq!(r.items.complete + r.items.failed, r.items.from_sources);
    assert_eq!(r.causes[0].reason, format!("stopped early: {halted}"));
    assert_eq!(r.causes[1].node, "gate");
    assert!(r.causes[1].count >= 50 && r.causes[1].examples.len() == 3, "{:?}", r.causes);
}

/// `defaults.halt`: failures scattered among successes never make 50 in a row, but stop
/// the run at `failures` in all, or past `percent` of the finished objects.
#[tokio::test(start_paused = true)]
async fn a_run_that_fails_more_than_its_halt_policy_tolerates_stops_itself() {
    // Every tenth of 10,000 fails: one in ten, never two in a row.
    let failing: Vec<String> = (0..1000).map(|i| format!("k{}", i * 10)).collect();
    let fail = format!("fail: [{}]", failing.join(", "));
    for (policy, says) in [
        ("halt: { failures: 30 }", "objects failed (defaults.halt.failures: 30)"),
        ("halt: { percent: 5 }", "finished objects failed, over defaults.halt.percent (5%)"),
    ] {
        let probe = Arc::new(Probe::default());
        let p = pipeline(&probe, &format!("channel_capacity: 4, {policy}"), "count: 10000", &fail);
        let r = run(&p, RunOptions::default()).await;
        assert_eq!(r.outcome, Outcome::Incomplete, "{policy}");
        let halted = r.halted.clone().unwrap_or_default();
        assert!(halted.contains(says), "{policy}: {halted}");
        assert!(r.items.from_sources < 10_000, "{policy}: {:?}", r.items);
        assert!(r.halt_policy.starts_with("50 objects failed in a row at one node; or "), "{}", r.halt_policy);
    }
    // Within the policy (the default: 50 in a row), the same run goes to its end.
    let probe = Arc::new(Probe::default());
    let p = pipeline(&probe, "channel_capacity: 4", "count: 10000", &fail);
    let r = run(&p, RunOptions::default()).await;
    assert_eq!((r.items.complete, r.items.failed, r.halted), (9000, 1000, None));
}

#[tokio::test(start_paused = true)]
async fn a_stop_gives_items_in_flight_the_grace_period_then_abandons_them() {
    let probe = Arc::new(Probe::default());
    let p = Arc::new(pipeline(&probe, "", "count: 1000", "hold: true, concurrency: 5"));
    let opts = RunOptions { grace: Duration::from_secs(20), ..RunOptions::default() };
    let stop = opts.stop.clone();
    let running = tokio::spawn({
        let p = p.clone();
        async move { run(&p, opts).await }
    });
    until(|| probe.open.load(Ordering::SeqCst) == 5).await;
    let stopped_at = tokio::time::Instant::now();
    stop.stop();
    let r = running.await.unwrap();
    // Paused time: the run ended exactly when the grace period was over.
    assert_eq!(stopped_at.elapsed(), Duration::from_secs(20));
    assert!(r.interrupted);
    assert_eq!(r.outcome, Outcome::Incomplete);
    assert_eq!(r.items.complete, 0);
    assert!(probe.acked().is_empty(), "an abandoned item was acknowledged");
    assert!(r.failures.iter().any(|f| f.reason.contains("abandoned at shutdown")), "{:?}", r.failures);
}

/// A node that holds every item until its input ends (a batch): held items give back
/// their share of the byte budget, so 64 objects of 1 MiB pass a budget of 4 MiB (had
/// they kept it, the source would wait for the fifth forever, and the input never end);
/// nothing is acknowledged before the end of the input; a held item dropped unwritten is
/// failed, never taken for done.
#[tokio::test(start_paused = true)]
async fn held_items_free_the_byte_budget_wait_for_the_end_of_input_and_fail_closed() {
    let probe = Arc::new(Probe::default());
    let p = pipeline(
        &probe,
        "max_bytes_in_flight: 4194304",
        "count: 64, size: 1048576",
        "keep: true, lose: [k7, k40], concurrency: 4",
    );
    // Paused time: a run that can never end (its source waiting for budget) times out at
    // once, as nothing else is left to run.
    let r = tokio::time::timeout(Duration::from_secs(3600), run(&p, RunOptions::default()))
        .await
        .expect("the source waited for byte budget that held items kept");
    assert_eq!((r.items.complete, r.items.failed), (62, 2), "{:?}", r.failures);
    let mut lost: Vec<&str> = r.failures.iter().map(|f| f.key.as_str()).collect();
    lost.sort();
    assert_eq!(lost, ["k40", "k7"]);
    assert!(r.failures.iter().all(|f| f.reason.contains("dropped before it was written")), "{:?}", r.failures);
    let acked = probe.acked();
    assert_eq!(acked.len(), 62);
    assert!(!acked.contains(&"k7".to_string()) && !acked.contains(&"k40".to_string()));
}

#[tokio::test(start_paused = true)]
async fn a_preflight_check_that_panics_fails_the_run() {
    let probe = Arc::new(Probe::default());
    let p = pipeline(&probe, "", "count: 1, panic_in_preflight: true", "");
    match executor::run(&p, RunOptions::default()).await {
        Err(RunError::Preflight(failed)) => {
            assert_eq!(failed, vec![("src".to_string(), "internal error: the check panicked".to_string())])
        }
        Ok(r) => panic!("the run went on: {:?}", r.outcome),
        Err(other) => panic!("not the preflight: {other}"),
    }
    assert!(probe.acked().is_empty());
}

#[tokio::test(start_paused = true)]
async fn shards_and_saved_plans_are_applied_by_the_engine_for_any_source() {
    use dqpipe_engine::api::{Planned, Shard};
    // The test source knows nothing of shards: four shards still split its objects.
    let mut all = Vec::new();
    for index in 0..4 {
        let probe = Arc::new(Probe::default());
        let p = pipeline(&probe, "", "count: 200", "");
        let opts = RunOptions { shard: Some(Shard { index, count: 4 }), ..RunOptions::default() };
        let r = run(&p, opts).await;
        assert_eq!(r.items.complete as usize, probe.acked().len());
        all.extend(probe.acked());
    }
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 200, "the shards overlap or leave objects out");

    // A saved plan: k1 as planned, k2 changed since (another size), k999 gone.
    let probe = Arc::new(Probe::default());
    let p = pipeline(&probe, "", "count: 10, size: 5", "");
    let mut planned = Planned::default();
    let objects = planned.objects.entry("src".to_string()).or_default();
    objects.insert("k1".to_string(), (5, None));
    objects.insert("k2".to_string(), (6, None));
    objects.insert("k999".to_string(), (5, None));
    let r = run(&p, RunOptions { only: Some(Arc::new(planned)), ..RunOptions::default() }).await;
    assert_eq!(probe.acked(), vec!["k1".to_string()]);
    let reasons: Vec<(&str, &str)> = r.failures.iter().map(|f| (f.key.as_str(), f.reason.as_str())).collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(
        reasons[0].0 == "k2" && reasons[0].1.starts_with("changed since the plan was made (size 6 -> 5"),
        "{reasons:?}"
    );
    assert!(reasons[1].0 == "k999" && reasons[1].1.starts_with("planned, but no longer listed"), "{reasons:?}");
}
