//! The Kubernetes manifests: valid for 1.30 and 1.33 (kubernetes-validate --strict, every
//! overlay rendered by kustomize), the ConfigMap's spec equal to the repository's, every
//! container within the restricted Pod Security Standard; and sharding: four processes on
//! one S3 source share it exactly; checkov's policies pass apart from commented skips.

use crate::common::*;

use std::path::PathBuf;
use std::process::Command;

const OVERLAYS: &[&str] = &["not-prod", "prod", "prod-scale-out"];

/// An overlay rendered by `kubectl kustomize`, written to a file.
fn render(overlay: &str, dir: &std::path::Path) -> PathBuf {
    let out = Command::new("kubectl")
        .args(["kustomize", &repo().join("kube/overlays").join(overlay).to_string_lossy()])
        .output()
        .expect("kubectl runs (scripts/test installs it)");
    assert!(out.status.success(), "{overlay}: {}", stderr(&out));
    let path = dir.join(format!("{overlay}.yaml"));
    std::fs::write(&path, &out.stdout).unwrap();
    path
}

fn documents(path: &std::path::Path) -> Vec<serde_json::Value> {
    use serde::Deserialize;
    let text = std::fs::read_to_string(path).unwrap();
    serde_norway::Deserializer::from_str(&text).map(|d| serde_json::Value::deserialize(d).unwrap()).collect()
}

#[test]
fn manifests_and_rendered_overlays_pass_strict_validation_for_1_30_and_1_33() {
    let dir = tempfile::tempdir().unwrap();
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join("kube/base"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml") && !p.ends_with("kustomization.yaml"))
        .collect();
    files.extend(OVERLAYS.iter().map(|o| render(o, dir.path())));
    assert!(files.len() >= 7);
    let validator = std::env::var("KUBERNETES_VALIDATE").unwrap_or_else(|_| "kubernetes-validate".into());
    for version in ["1.30.0", "1.33.0"] {
        let out = Command::new(&validator)
            .args(["--strict", "--kubernetes-version", version])
            .args(&files)
            .output()
            .unwrap_or_else(|e| panic!("{validator}: {e} (scripts/test installs it)"));
        let text = format!("{}{}", stdout(&out), stderr(&out));
        assert!(out.status.success() && !text.contains("ERROR"), "{version}:\n{text}");
        assert!(text.matches("passed").count() >= 13, "{version}: fewer resources than expected:\n{text}");
    }
}

#[test]
fn the_configmaps_hold_the_pipeline_specs_unchanged() {
    for (pipeline, file) in [("nats-historical", "configmap.yaml"), ("nats-sftp-ingest", "configmap-sftp-ingest.yaml")]
    {
        let docs = documents(&repo().join("kube/base").join(file));
        let in_cluster = docs[0]["data"][format!("{pipeline}.yaml")].as_str().unwrap();
        let in_repo = std::fs::read_to_string(repo().join(format!("pipelines/{pipeline}.yaml"))).unwrap();
        assert!(in_cluster == in_repo, "kube/base/{file} is out of date: run scripts/kube-sync-spec");
    }
}

#[test]
fn every_container_meets_the_restricted_standard() {
    let dir = tempfile::tempdir().unwrap();
    for overlay in OVERLAYS {
        let docs = documents(&render(overlay, dir.path()));
        let crons: Vec<&serde_json::Value> = docs.iter().filter(|d| d["kind"] == "CronJob").collect();
        assert_eq!(crons.len(), 2, "{overlay}: nats-historical and nats-sftp-ingest");
        // Least privilege: each CronJob has its own identity (and IAM role).
        let accounts: std::collections::BTreeSet<String> = crons
            .iter()
            .map(|c| c["spec"]["jobTemplate"]["spec"]["template"]["spec"]["serviceAccountName"].to_string())
            .collect();
        assert_eq!(accounts.len(), 2, "{overlay}: {accounts:?}");
        for cron in crons {
            let job = &cron["spec"]["jobTemplate"]["spec"];
            let pod = &job["template"]["spec"];
            assert_eq!(cron["spec"]["concurrencyPolicy"], "Forbid");
            assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{overlay}");
            assert_eq!(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault", "{overlay}");
            let containers: Vec<&serde_json::Value> =
                pod["containers"].as_array().unwrap().iter().chain(pod["initContainers"].as_array().unwrap()).collect();
            assert_eq!(containers.len(), 2);
            for c in containers {
                let name = c["name"].as_str().unwrap();
                let sc = &c["securityContext"];
                assert_eq!(sc["allowPrivilegeEscalation"], false, "{overlay}/{name}");
                assert_eq!(sc["readOnlyRootFilesystem"], true, "{overlay}/{name}");
                assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]), "{overlay}/{name}");
                assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault", "{overlay}/{name}");
                assert_eq!(sc["runAsNonRoot"], true, "{overlay}/{name}");
                assert!(sc["runAsUser"].as_u64().is_some_and(|u| u > 0), "{overlay}/{name}: a numeric non-root UID");
                assert!(c["resources"]["requests"]["memory"].is_string(), "{overlay}/{name}: memory request");
                assert!(c["resources"]["limits"]["memory"].is_string(), "{overlay}/{name}: memory limit");
                // Secrets are mounted as files (DQPIPE_ENV_DIR), never put in the
                // environment (checkov CKV_K8S_35).
                let from = c["envFrom"].as_array().into_iter().flatten();
                assert!(from.clone().all(|f| f.get("secretRef").is_none()), "{overlay}/{name}: secret in env");
            }
            // clamd is a native sidecar that must answer PING before dqpipe starts.
            let clamd = &pod["initContainers"][0];
            assert_eq!(clamd["restartPolicy"], "Always");
            // Rebuilt nightly under one tag for fresh signatures: always pulled.
            assert_eq!(clamd["imagePullPolicy"], "Always");
            assert!(clamd["startupProbe"]["exec"]["command"].to_string().contains("--ping"));
        }
    }
    // Sizes: the original's not-prod and prod requests and limits.
    let prod = documents(&render("prod", dir.path()));
    let cron = prod.iter().find(|d| d["kind"] == "CronJob" && d["metadata"]["name"] == "nats-historical").unwrap();
    let r = &cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["resources"];
    assert_eq!((r["requests"]["cpu"].as_str(), r["requests"]["memory"].as_str()), (Some("2"), Some("3Gi")));
    assert_eq!((r["limits"]["cpu"].as_str(), r["limits"]["memory"].as_str()), (Some("2500m"), Some("4Gi")));
    let scale = documents(&render("prod-scale-out", dir.path()));
    let job = &scale.iter().find(|d| d["kind"] == "CronJob" && d["metadata"]["name"] == "nats-historical").unwrap()
        ["spec"]["jobTemplate"]["spec"];
    assert_eq!(
        (job["completionMode"].as_str(), job["completions"].as_u64(), job["parallelism"].as_u64()),
        (Some("Indexed"), Some(4), Some(4))
    );
    assert!(job["template"]["spec"]["containers"][0]["args"].to_string().contains("--shard=/4"));
    // One shard exiting 3 (problems, alerted) ends its index only; the others finish.
    let rules = job["podFailurePolicy"]["rules"].as_array().unwrap();
    let action = |code: u64| {
        rules
            .iter()
            .find(|r| r["onExitCodes"]["values"].as_array().unwrap().contains(&code.into()))
            .map(|r| &r["action"])
    };
    assert_eq!(action(3), Some(&serde_json::json!("FailIndex")));
    assert_eq!(action(2), Some(&serde_json::json!("FailJob")));
    // Another run holds the shard's lease: tried again, not counted as a failure.
    assert_eq!(action(5), Some(&serde_json::json!("Ignore")));
}

#[test]
fn four_shards_at_once_share_twenty_thousand_objects_exactly() {
    let s3 = S3Server::start(&["archive", "out"]);
    let folder = s3.bucket_dir("archive").join("in");
    std::fs::create_dir_all(&folder).unwrap();
    for i in 0..20_000 {
        std::fs::write(folder.join(format!("m{i:05}.json")), format!("{{\"n\":{i}}}")).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("copy.yaml");
    std::fs::write(
        &spec,
        r#"version: 1
name: shard-copy
stores:
  src: { url: "s3://archive/in", s3: { endpoint: "${S3_ENDPOINT}" } }
  dst: { url: "s3://out/copied", s3: { endpoint: "${S3_ENDPOINT}" } }
nodes:
  list: { kind: list, store: src, resume: { store: dst } }
  fetch: { kind: fetch, input: list }
  write: { kind: put, input: fetch, store: dst, key: "{{ key }}" }
"#,
    )
    .unwrap();
    // As in an Indexed Job: the same command, the index from JOB_COMPLETION_INDEX.
    let children: Vec<_> = (0..4)
        .map(|i| {
            dqpipe(dir.path())
                .args(["run", &spec.to_string_lossy(), "--shard", "/4", "--progress", "off"])
                .arg(format!("--report=r{i}.json"))
                .env("JOB_COMPLETION_INDEX", i.to_string())
                .env("S3_ENDPOINT", s3.endpoint())
                .env("AWS_ACCESS_KEY_ID", S3_KEY_ID)
                .env("AWS_SECRET_ACCESS_KEY", S3_SECRET)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    }
    let mut counts = Vec::new();
    for i in 0..4 {
        let r = read_json(&dir.path().join(format!("r{i}.json")));
        assert_eq!(r["shard"], serde_json::json!({ "index": i, "count": 4 }));
        assert_eq!(r["items"]["failed"], 0);
        counts.push(r["items"]["complete"].as_u64().unwrap());
    }
    // Every object exactly once: the counts add up to the whole and the outputs are the
    // whole, so no object was taken by two shards.
    assert_eq!(counts.iter().sum::<u64>(), 20_000, "{counts:?}");
    let written = files_under(&s3.bucket_dir("out").join("copied"));
    assert_eq!(written.len(), 20_000);
    assert_eq!(done_under(&s3.bucket_dir("out").join("copied")).len(), 20_000);
    for f in ["m00000.json", "m12345.json", "m19999.json"] {
        let n: u32 = f[1..6].parse().unwrap();
        assert_eq!(
            std::fs::read_to_string(s3.bucket_dir("out").join("copied").join(f)).unwrap(),
            format!("{{\"n\":{n}}}")
        );
    }
    let mean = 20_000.0 / 4.0;
    assert!(counts.iter().all(|&c| (c as f64) < 1.5 * mean), "unfair shares: {counts:?}");
}

/// checkov's Kubernetes policies on every rendered overlay: nothing fails apart from the
/// checks kube/checkov.yaml skips, each with a comment saying why.
#[test]
fn checkov_passes_on_the_rendered_overlays_apart_from_the_commented_skips() {
    let dir = tempfile::tempdir().unwrap();
    // Files, not `-d`: checkov skips folders whose name starts with `.` (`.tmpXXXX`).
    let files: Vec<String> = OVERLAYS
        .iter()
        .flat_map(|o| ["-f".to_string(), render(o, dir.path()).to_string_lossy().into_owned()])
        .collect();
    let config = repo().join("kube/checkov.yaml");
    let text = std::fs::read_to_string(&config).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate().filter(|(_, l)| l.trim_start().starts_with("- CKV_")) {
        let id = line.trim_start().trim_start_matches("- ");
        assert!(
            i > 0 && lines[i - 1].trim_start().starts_with('#') && lines[..i].iter().any(|l| l.contains(id)),
            "{id} is skipped without a comment naming it and saying why"
        );
    }
    let checkov = std::env::var("CHECKOV").unwrap_or_else(|_| "checkov".into());
    let out = Command::new(&checkov)
        .args(["--config-file", &config.to_string_lossy()])
        .args(&files)
        .args(["--skip-download", "--compact", "--quiet", "-o", "json"])
        .output()
        .unwrap_or_else(|e| panic!("{checkov}: {e} (scripts/test installs it)"));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("checkov's JSON: {e}\n{}{}", stdout(&out), stderr(&out)));
    let summary = &report["summary"];
    let failed: Vec<String> = report["results"]["failed_checks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| format!("{} {} ({})", c["check_id"], c["check_name"], c["resource"]))
        .collect();
    assert_eq!(summary["failed"], 0, "{failed:#?}");
    assert_eq!(summary["parsing_errors"], 0, "{summary}");
    // Every resource of the three overlays was read and checked.
    assert!(summary["resource_count"].as_u64() >= Some(21), "{summary}");
    assert!(summary["passed"].as_u64() >= Some(500), "{summary}");
}

/// The alert rules (kube/monitoring/rules.yml) pass Debian's promtool, check and unit
/// tests against series shaped as a run pushes them; the PrometheusRule holds the same
/// groups.
#[test]
fn the_alert_rules_pass_promtool_and_the_prometheus_rule_holds_the_same() {
    let promtool = std::env::var("PROMTOOL").unwrap_or_else(|_| "promtool".into());
    let dir = repo().join("kube/monitoring");
    for args in [&["check", "rules", "rules.yml"][..], &["test", "rules", "rules.test.yml"][..]] {
        let out = std::process::Command::new(&promtool)
            .args(args)
            .current_dir(&dir)
            .output()
            .unwrap_or_else(|e| panic!("cannot run `{promtool}` ({e}); scripts/test installs Debian's prometheus"));
        assert!(out.status.success(), "promtool {args:?}:\n{}{}", stdout(&out), stderr(&out));
    }
    let read = |f: &str| -> serde_json::Value {
        serde_norway::from_str(&std::fs::read_to_string(dir.join(f)).unwrap()).unwrap()
    };
    assert_eq!(read("rules.yml")["groups"], read("prometheusrule.yaml")["spec"]["groups"]);
}

/// The Grafana dashboard and the alert rules read only metrics a run pushes: a run with a
/// scan node pushes to Debian's Pushgateway, and every metric name in the dashboard's
/// queries and the rules' expressions is in the scrape (the scanner's database age too,
/// an hour old as the fake scanner's VERSION says).
#[test]
fn the_dashboard_and_the_rules_read_metrics_a_run_pushes() {
    let gateway = Pushgateway::start();
    let scanner = FakeClamd::start_as(Scanner::Blind { detects: usize::MAX }, &clamd_version("1 hour ago"));
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("in")).unwrap();
    std::fs::write(dir.path().join("in/a.json"), b"{}").unwrap();
    let spec = "version: 1\nname: pushed\nmetrics: { pushgateway: \"${PUSHGATEWAY_URL}\" }\nstores:\n  src: { url: \"file://./in\" }\n  dst: { url: \"file://./out\" }\n  quarantine: { url: \"file://./q\" }\nnodes:\n  list: { kind: list, store: src }\n  fetch: { kind: fetch, input: list }\n  scan: { kind: clamav, input: fetch, address: \"${CLAMD_ADDRESS}\" }\n  write: { kind: put, input: scan.clean, store: dst, key: \"{{ key }}\" }\n  quarantine: { kind: put, input: [scan.infected, scan.error], store: quarantine, key: \"{{ key }}\" }\n";
    std::fs::write(dir.path().join("p.yaml"), spec).unwrap();
    let ran = TestRun::new(dir.path(), "p.yaml")
        .env("PUSHGATEWAY_URL", &gateway.url())
        .env("CLAMD_ADDRESS", &scanner.address)
        .run();
    assert_eq!(ran.code(), Some(0), "{}", ran.stderr());
    let scraped = gateway.scrape();
    let age = scraped
        .lines()
        .find(|l| l.starts_with("dqpipe_node_counter{") && l.contains("counter=\"database_age_seconds\""))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no database age in the scrape:\n{scraped}"));
    assert!(age >= 3600.0, "the database is an hour old: {age}");

    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo().join("kube/monitoring/dashboard.json")).unwrap()).unwrap();
    let mut queries: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().iter().map(|t| t["expr"].as_str().unwrap().to_string()))
        .collect();
    let rules: serde_json::Value =
        serde_norway::from_str(&std::fs::read_to_string(repo().join("kube/monitoring/rules.yml")).unwrap()).unwrap();
    queries.extend(rules["groups"][0]["rules"].as_array().unwrap().iter().map(|r| r["expr"].as_str().unwrap().into()));
    assert!(queries.len() >= 8 + 5, "{queries:?}");
    for q in &queries {
        let names = q.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).filter(|w| w.starts_with("dqpipe_"));
        for name in names {
            assert!(scraped.contains(&format!("\n{name}{{")), "`{q}` reads {name}, which no run pushes:\n{scraped}");
        }
    }
}
