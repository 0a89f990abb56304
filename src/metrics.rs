//! The run's figures pushed to a Prometheus Pushgateway at its end (`metrics:
//! { pushgateway: URL }`), in Prometheus' text format: objects by state, items and bytes
//! per port, retries per node, duration, exit code, and the time of the last complete run
//! (exit 0 or 3).
//!
//! Pushed with POST, which replaces only the metrics it names in the group: the time of
//! the last success (sent only by a complete run) stays while later runs fail, which is
//! what an alert on "no success for a day" reads. Hand-written: the format is a few lines
//! of text, and the `prometheus` crate brings a registry this one-shot push does not need.

use std::fmt::Write as _;
use std::time::Duration;

use dqpipe_engine::api::Shard;
use dqpipe_engine::run::report::RunReport;

/// Pushes `r`'s figures; a failure is logged and never changes the run's exit code.
pub async fn push(url: &str, r: &RunReport) {
    send(url, &r.pipeline, r.shard, text(r)).await;
}

/// A run that could not start (exit 1): its exit code only; the figures of the last run
/// that ran, and the time of the last success, stay.
pub async fn push_not_started(url: &str, pipeline: &str, shard: Option<Shard>) {
    let help = "# HELP dqpipe_run_exit_code The last run's exit code (0 complete, 3 problems, 4 incomplete).";
    send(url, pipeline, shard, format!("{help}\n# TYPE dqpipe_run_exit_code gauge\ndqpipe_run_exit_code 1\n")).await;
}

async fn send(url: &str, pipeline: &str, shard: Option<Shard>, body: String) {
    let mut group = format!("{}/metrics/job/{}", url.trim_end_matches('/'), segment(pipeline));
    if let Some(shard) = shard {
        group.push_str(&format!("/shard/{}", shard.index));
    }
    dqpipe_plugins::tls::use_ring();
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build();
    let sent = match client {
        Ok(c) => c.post(&group).body(body).send().await.and_then(|resp| resp.error_for_status()),
        Err(e) => Err(e),
    };
    match sent {
        Ok(_) => tracing::info!("metrics pushed to the Pushgateway"),
        // without_url: a Pushgateway URL may hold credentials.
        Err(e) => {
            tracing::warn!(error = %e.without_url(), "metrics not pushed to the Pushgateway (the run's outcome stands)")
        }
    }
}

/// A grouping-key value in a URL path segment (percent-encoded where needed).
fn segment(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A label value, escaped as the text format asks.
fn label(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// The figures in Prometheus' text format.
pub fn text(r: &RunReport) -> String {
    let mut t = String::new();
    let mut gauge = |name: &str, help: &str, rows: &[(String, f64)]| {
        let _ = writeln!(t, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (labels, v) in rows {
            let _ = writeln!(t, "{name}{labels} {v}");
        }
    };
    let i = &r.items;
    let states = [
        ("listed", i.from_sources),
        ("complete", i.complete),
        ("failed", i.failed),
        ("refused", i.refused),
        ("skipped_done", i.skipped_done),
        ("dropped", i.dropped),
        ("problems", i.problems),
    ];
    let rows: Vec<(String, f64)> = states.iter().map(|(s, n)| (format!("{{state=\"{s}\"}}"), *n as f64)).collect();
    gauge("dqpipe_objects", "Objects of the last run, by state.", &rows);
    let mut items = Vec::new();
    let mut bytes = Vec::new();
    for n in &r.nodes {
        for (port, p) in &n.ports {
            let l = format!("{{node=\"{}\",port=\"{}\"}}", label(&n.name), label(port));
            items.push((l.clone(), p.items as f64));
            bytes.push((l, p.bytes as f64));
        }
    }
    gauge("dqpipe_port_items", "Items sent out of each port in the last run.", &items);
    gauge("dqpipe_port_bytes", "Bytes sent out of each port in the last run.", &bytes);
    let retries: Vec<(String, f64)> =
        r.nodes.iter().map(|n| (format!("{{node=\"{}\"}}", label(&n.name)), n.retries as f64)).collect();
    gauge("dqpipe_node_retries", "Retries of transient failures in the last run.", &retries);
    // The limit each node ended at, and its highest: fixed, or adaptive within its range.
    let limits: Vec<(String, f64)> = r
        .nodes
        .iter()
        .filter(|n| !n.source)
        .flat_map(|n| {
            let (last, highest) =
                n.adaptive.as_ref().map_or((n.concurrency as u64, n.concurrency as u64), |a| (a.last, a.highest));
            let node = label(&n.name);
            [
                (format!("{{node=\"{node}\",at=\"end\"}}"), last as f64),
                (format!("{{node=\"{node}\",at=\"highest\"}}"), highest as f64),
            ]
        })
        .collect();
    let help = "How many items a node could work on at once in the last run (adaptive nodes: where the limit ended, and its highest).";
    gauge("dqpipe_node_concurrency_limit", help, &limits);
    let figures: Vec<(String, f64)> = r
        .nodes
        .iter()
        .flat_map(|n| {
            n.counters
                .iter()
                .map(|(name, v)| (format!("{{node=\"{}\",counter=\"{}\"}}", label(&n.name), label(name)), *v as f64))
        })
        .collect();
    let help = "A node's own figures in the last run (a scanner's database_age_seconds, its verdicts by version).";
    gauge("dqpipe_node_counter", help, &figures);
    gauge("dqpipe_run_duration_seconds", "How long the last run took.", &[(String::new(), r.duration_seconds)]);
    gauge(
        "dqpipe_run_exit_code",
        "The last run's exit code (0 complete, 3 problems, 4 incomplete).",
        &[(String::new(), f64::from(r.exit_code))],
    );
    // Complete, with or without problems (0 or 3): every object reached the end of its path.
    if matches!(r.exit_code, 0 | 3) {
        let now = chrono::Utc::now().timestamp() as f64;
        let help = "When a run last completed (exit 0 or 3).";
        gauge("dqpipe_run_last_success_timestamp_seconds", help, &[(String::new(), now)]);
    }
    t
}
