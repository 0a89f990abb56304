//! `dqpipe run` between local folders: many files byte-identical, and per-node concurrency
//! as observed by a real HTTP listener (in-flight counts, not timings).

use crate::common::*;

#[test]
fn copies_ten_thousand_files_byte_identical() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    for i in 0..10_000u32 {
        let sub = input.join(format!("d{}", i % 7));
        std::fs::create_dir_all(&sub).unwrap();
        // Names like the archive's, with characters object stores like to encode.
        std::fs::write(
            sub.join(format!("[f;=%zz{i}] é.json")),
            format!("{{\"i\": {i}, \"pad\": \"{}\"}}", "x".repeat((i % 50) as usize)),
        )
        .unwrap();
    }
    std::fs::write(input.join("skip.txt"), "not json").unwrap();
    let out = dqpipe(dir.path())
        .args(["run", &repo().join("pipelines/examples/copy.yaml").to_string_lossy(), "--report", "report.json"])
        .env("SRC_URL", "file://./in")
        .env("DST_URL", "file://./out")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let copied = files_under(&dir.path().join("out/copied"));
    assert_eq!(copied.len(), 10_000);
    for i in 0..10_000u32 {
        let name = format!("[f;=%zz{i}] é.json");
        let a = std::fs::read(input.join(format!("d{}", i % 7)).join(&name)).unwrap();
        let b = std::fs::read(dir.path().join("out/copied").join(&name)).unwrap();
        assert_eq!(a, b, "{name}");
    }
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("report.json")).unwrap()).unwrap();
    assert_eq!(report["items"]["from_sources"], 10_000);
    assert_eq!(report["items"]["complete"], 10_000);
    assert_eq!(report["outcome"], "complete");
    assert!(stderr(&out).contains("Objects: 10000 listed, 10000 complete, 0 failed"), "{}", stderr(&out));
}

/// list -> fetch -> json_check -> slack (each file is not JSON: a problem, alerted), where
/// the webhook holds each request until `target` are open at once: the listener sees
/// exactly how many calls the node makes concurrently.
fn observed_concurrency(node_concurrency: usize, target: usize, hold_ms: u64) -> (usize, serde_json::Value) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("in")).unwrap();
    for i in 0..48 {
        std::fs::write(dir.path().join(format!("in/{i:03}.json")), format!("not json {i}")).unwrap();
    }
    let listener = Listener::start(Answer::Barrier { n: target, hold_ms });
    let spec = format!(
        "version: 1\nname: conc\nstores:\n  src: {{ url: \"file://./in\" }}\nnodes:\n  list: {{ kind: list, store: src }}\n  fetch: {{ kind: fetch, input: list }}\n  check: {{ kind: json_check, input: fetch }}\n  alert: {{ kind: slack, input: check.failed, webhook_url: \"${{HOOK}}\", max_messages: 1000, alert_on_unclean_run: false, concurrency: {node_concurrency} }}\n"
    );
    std::fs::write(dir.path().join("conc.yaml"), spec).unwrap();
    let out = dqpipe(dir.path())
        .args(["run", "conc.yaml", "--report", "r.json"])
        .env("HOOK", &listener.url)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    // Retried deliveries may repeat a message; every item was alerted at least once.
    let distinct: std::collections::BTreeSet<String> = listener.received().iter().map(|b| b.to_string()).collect();
    assert_eq!(distinct.len(), 48);
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.path().join("r.json")).unwrap()).unwrap();
    let alert = report["nodes"].as_array().unwrap().iter().find(|n| n["name"] == "alert").unwrap().clone();
    let max = *listener.max_open.lock().unwrap();
    (max, alert)
}

#[test]
fn concurrency_one_is_never_exceeded() {
    // Each call is held open 100 ms: a second call made meanwhile would be seen.
    let (max, node) = observed_concurrency(1, 2, 100);
    assert_eq!(max, 1);
    assert_eq!(node["max_in_flight"], 1);
}

#[test]
fn concurrency_sixteen_is_reached() {
    // Calls are held until 16 are open at once (released then; 20 s at most).
    let (max, node) = observed_concurrency(16, 16, 20_000);
    assert_eq!(max, 16);
    assert_eq!(node["max_in_flight"], 16);
}

#[test]
fn the_webhook_url_never_appears_in_output() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("in")).unwrap();
    std::fs::write(dir.path().join("in/a.json"), "not json").unwrap();
    let listener = Listener::start(Answer::Status500);
    std::fs::write(
        dir.path().join("s.yaml"),
        "version: 1\nname: s\nstores:\n  src: { url: \"file://./in\" }\nnodes:\n  list: { kind: list, store: src }\n  fetch: { kind: fetch, input: list }\n  check: { kind: json_check, input: fetch }\n  alert: { kind: slack, input: check.failed, webhook_url: \"${HOOK}\", alert_on_unclean_run: false, retry: { attempts: 2, initial_delay_ms: 10 } }\n",
    )
    .unwrap();
    let out =
        dqpipe(dir.path()).args(["run", "s.yaml", "--report", "r.json"]).env("HOOK", &listener.url).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "a failing webhook never fails the run: {}", stderr(&out));
    assert!(stderr(&out).contains("Slack alert not delivered"), "{}", stderr(&out));
    assert!(!stderr(&out).contains("/services/T000/B000/XXXX"), "{}", stderr(&out));
    // Counted, in the summary and the report: an alert that did not reach anyone is seen.
    assert!(stderr(&out).contains("delivered=0  not_delivered=1  suppressed=0"), "{}", stderr(&out));
    let alert = |r: &serde_json::Value| r["nodes"].as_array().unwrap().iter().find(|n| n["name"] == "alert").cloned();
    let counters = alert(&read_json(&dir.path().join("r.json"))).unwrap()["counters"].clone();
    assert_eq!(counters, serde_json::json!({"delivered": 0, "not_delivered": 1, "suppressed": 0}));

    let listener = Listener::start(Answer::Ok);
    let out =
        dqpipe(dir.path()).args(["run", "s.yaml", "--report", "r.json"]).env("HOOK", &listener.url).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let counters = alert(&read_json(&dir.path().join("r.json"))).unwrap()["counters"].clone();
    assert_eq!(counters["delivered"], listener.received().len() as u64, "{counters}");
    assert_eq!(counters["not_delivered"], 0);
}

/// `defaults.max_bytes_in_flight` bounds the objects in the pipeline by their listed size,
/// whatever the nodes' concurrency: with 100 KB files (not JSON: each alerted) and a
/// 300 KiB budget, the webhook (concurrency 32, each call held 300 ms) never sees more
/// than 3 objects at once. A 1 MB
/// file, larger than the whole budget, still goes through on its own.
#[test]
fn max_bytes_in_flight_bounds_the_objects_in_the_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("in")).unwrap();
    for i in 0..24 {
        std::fs::write(dir.path().join(format!("in/{i:03}.json")), vec![b' '; 100_000]).unwrap();
    }
    std::fs::write(dir.path().join("in/big.json"), vec![b' '; 1_000_000]).unwrap();
    let listener = Listener::start(Answer::Barrier { n: 4, hold_ms: 300 });
    std::fs::write(
        dir.path().join("b.yaml"),
        "version: 1\nname: budget\ndefaults: { concurrency: 32, max_bytes_in_flight: 307200 }\nstores:\n  src: { url: \"file://./in\" }\nnodes:\n  list: { kind: list, store: src }\n  fetch: { kind: fetch, input: list }\n  check: { kind: json_check, input: fetch, concurrency: 32 }\n  alert: { kind: slack, input: check.failed, webhook_url: \"${HOOK}\", max_messages: 1000, alert_on_unclean_run: false }\n",
    )
    .unwrap();
    let out = dqpipe(dir.path()).args(["run", "b.yaml"]).env("HOOK", &listener.url).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let distinct: std::collections::BTreeSet<String> = listener.received().iter().map(|b| b.to_string()).collect();
    assert_eq!(distinct.len(), 25);
    assert_eq!(*listener.max_open.lock().unwrap(), 3);
}

/// `metrics: { pushgateway: URL }`: at the end of a run its figures are pushed to Debian's
/// real Pushgateway, and a scrape reads them; the time of the last complete run stays
/// when a later run fails.
#[test]
fn a_run_pushes_its_figures_to_a_pushgateway() {
    let gateway = Pushgateway::start();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("in")).unwrap();
    for i in 0..3 {
        std::fs::write(dir.path().join(format!("in/f{i}.json")), b"{}").unwrap();
    }
    let spec = "version: 1\nname: pushed\nmetrics: { pushgateway: \"${PUSHGATEWAY_URL}\" }\nstores:\n  src: { url: \"file://./in\" }\n  dst: { url: \"file://./out\" }\nnodes:\n  list: { kind: list, store: src }\n  fetch: { kind: fetch, input: list }\n  write: { kind: put, input: fetch, store: dst, key: \"{{ key }}\" }\n";
    std::fs::write(dir.path().join("p.yaml"), spec).unwrap();
    let ran = TestRun::new(dir.path(), "p.yaml").env("PUSHGATEWAY_URL", &gateway.url()).run();
    assert_eq!(ran.code(), Some(0), "{}", ran.stderr());
    let scraped = gateway.scrape();
    let value = |metric: &str, labels: &[&str]| scraped_value(&scraped, metric, labels);
    assert_eq!(value("dqpipe_objects", &["state=\"complete\""]), Some(3.0), "{scraped}");
    assert_eq!(value("dqpipe_objects", &["state=\"failed\""]), Some(0.0), "{scraped}");
    assert_eq!(value("dqpipe_port_items", &["node=\"write\"", "port=\"out\""]), Some(3.0), "{scraped}");
    assert_eq!(value("dqpipe_run_exit_code", &[]), Some(0.0), "{scraped}");
    let success = value("dqpipe_run_last_success_timestamp_seconds", &[]).expect("a last success time");

    // A run that cannot start (its destination is a file, not a folder: the preflight
    // check fails) says so; the time of the last success stays.
    std::fs::remove_dir_all(dir.path().join("out")).unwrap();
    std::fs::write(dir.path().join("out"), b"not a folder").unwrap();
    let ran = TestRun::new(dir.path(), "p.yaml").env("PUSHGATEWAY_URL", &gateway.url()).run();
    assert_eq!(ran.code(), Some(1), "{}", ran.stderr());
    let scraped = gateway.scrape();
    let value = |metric: &str, labels: &[&str]| scraped_value(&scraped, metric, labels);
    assert_eq!(value("dqpipe_run_exit_code", &[]), Some(1.0), "{scraped}");
    assert_eq!(value("dqpipe_run_last_success_timestamp_seconds", &[]), Some(success), "{scraped}");
}

/// The value of `metric` in the `pushed` job's group of a scrape, on the line with `labels`.
fn scraped_value(scraped: &str, metric: &str, labels: &[&str]) -> Option<f64> {
    scraped
        .lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")) && labels.iter().all(|x| l.contains(x)))
        .find(|l| l.contains("job=\"pushed\""))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// `--report STORE:KEY` writes the report into one of the spec's stores (here S3, with
/// that store's settings), named by the run id, so it outlives the pod; the alert says
/// where it is.
#[test]
fn the_report_can_go_to_a_store_of_the_spec() {
    let s3 = S3Server::start(&["dst"]);
    let hook = Listener::start(Answer::Ok);
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("in")).unwrap();
    std::fs::write(dir.path().join("in/a.json"), b"{}").unwrap();
    // A name S3 refuses (a TAB): the run ends with exit 3, and alerts.
    std::fs::write(dir.path().join("in/tab\there.json"), b"{}").unwrap();
    let spec = "version: 1\nname: reported\nstores:\n  src: { url: \"file://./in\" }\n  dst: { url: \"s3://dst/out\", s3: { endpoint: \"${S3_ENDPOINT}\" } }\nnodes:\n  list: { kind: list, store: src }\n  fetch: { kind: fetch, input: list }\n  write: { kind: put, input: fetch, store: dst, key: \"{{ key }}\" }\n  alert: { kind: slack, input: write, webhook_url: \"${HOOK}\" }\n";
    std::fs::write(dir.path().join("p.yaml"), spec).unwrap();
    let out = dqpipe(dir.path())
        .args([
            "run",
            "p.yaml",
            "--progress",
            "off",
            "--report",
            "dst:_dqpipe/reports/{{ pipeline }}-{{ run_id }}.json",
        ])
        .env("S3_ENDPOINT", s3.endpoint())
        .env("AWS_ACCESS_KEY_ID", S3_KEY_ID)
        .env("AWS_SECRET_ACCESS_KEY", S3_SECRET)
        .env("HOOK", &hook.url)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let reports = files_under(&s3.bucket_dir("dst").join("out/_dqpipe/reports"));
    assert_eq!(reports.len(), 1, "{reports:?}");
    let report = read_json(&s3.bucket_dir("dst").join("out/_dqpipe/reports").join(&reports[0]));
    assert_eq!(reports[0], format!("reported-{}.json", report["run_id"].as_str().unwrap()));
    assert_eq!(report["items"]["complete"], 1);
    let alerts = hook.received();
    let text = alerts.last().map(|a| a["attachments"][0]["text"].to_string()).unwrap_or_default();
    assert!(text.contains(&format!("Report: dst:_dqpipe/reports/{} (s3://dst/out)", reports[0])), "{alerts:?}");
}

/// `run --tap NODE.PORT`: a sample of the items passing a port, one JSON line each on
/// stdout with the key and fields (the first `--tap-limit`, then one in `--tap-every`),
/// the run itself unchanged; a port the spec does not have is refused before anything
/// runs, with the nearest name.
#[test]
fn run_tap_prints_a_sample_of_a_ports_items_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("in")).unwrap();
    for i in 0..8 {
        std::fs::write(dir.path().join(format!("in/f{i}.json")), b"{}").unwrap();
    }
    let spec = "version: 1\nname: tapped\nstores:\n  src: { url: \"file://./in\" }\n  dst: { url: \"file://./out\" }\nnodes:\n  list: { kind: list, store: src }\n  fetch: { kind: fetch, input: list }\n  write: { kind: put, input: fetch, store: dst, key: \"{{ key }}\" }\n";
    std::fs::write(dir.path().join("p.yaml"), spec).unwrap();
    let out = dqpipe(dir.path())
        .args(["run", "p.yaml", "--progress", "off", "--tap", "write.out", "--tap-limit", "2", "--tap-every", "3"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(files_under(&dir.path().join("out")).len(), 8);
    let lines: Vec<serde_json::Value> = stdout(&out).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let counted: Vec<u64> = lines.iter().map(|l| l["n"].as_u64().unwrap()).collect();
    assert_eq!(counted, [1, 2, 3, 6], "{lines:?}");
    for l in &lines {
        assert_eq!((&l["node"], &l["port"]), (&"write".into(), &"out".into()));
        let key = l["key"].as_str().unwrap();
        assert_eq!(l["fields"]["dest_key"], key, "{l}");
        assert!(key.starts_with('f') && key.ends_with(".json"), "{l}");
    }

    let out = dqpipe(dir.path()).args(["run", "p.yaml", "--tap", "fetch.outt"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("`fetch` has no port `outt` (did you mean `out`?)"), "{}", stderr(&out));
}
