//! One test case: the spec loaded with stores in memory and stubbed scanners and alerts
//! (`dqpipe_plugins::testing`), its objects put in the first source's store, one run, and
//! what became of each object read from the items the nodes sent (the run's tap).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dqpipe_engine::run::options::{RunOptions, Tap};
use dqpipe_engine::spec::load::{load_pipeline, Pipeline};
use dqpipe_plugins::testing::{Answer, InMemory, Stubs};
use serde_json::Value;

use super::compare::{compare, Got, Written};
use super::{Case, Object, Suite};

/// Runs `case` of `suite`: an empty list when it passes, else what differs, one entry per
/// difference, ready to print.
pub async fn run_case(suite: &Suite, case: &Case) -> Vec<String> {
    let started = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    let (stubs, mut problems) = stubs_of(case);
    let alerts = dqpipe_plugins::slack::Captured::default();
    let stores = Arc::new(InMemory::default());
    let registry = dqpipe_plugins::testing::registry(Arc::new(stubs), alerts.clone(), stores.clone());
    let env = |name: &str| case.env.get(name).cloned();
    let p = match load_pipeline(&suite.spec, &registry, &env) {
        Ok(p) => p,
        Err(e) => return vec![format!("the spec does not load with this case's `env`:\n{e}")],
    };
    for node in case.stubs.keys().filter(|n| !p.nodes.iter().any(|x| &x.spec.name == *n)) {
        problems.push(format!("stubs: the spec has no node `{node}`"));
    }
    let Some(source) = p.nodes.iter().find(|n| n.spec.kind == "list") else {
        return vec!["the spec has no `list` node to put the objects in".into()];
    };
    let source_store = stores.store(source.spec.config.get("store").and_then(Value::as_str).unwrap_or_default());
    for o in &case.objects {
        match body_of(o, suite) {
            Ok(bytes) => match &o.last_modified {
                Some(t) if chrono::DateTime::parse_from_rfc3339(t).is_err() => {
                    problems.push(format!("objects: `{}`: last_modified: {t:?} is not an RFC 3339 time", o.key))
                }
                Some(t) => source_store.insert_modified(&o.key, bytes, t),
                None => source_store.insert_modified(&o.key, bytes, &started),
            },
            Err(e) => problems.push(format!("objects: `{}`: {e}", o.key)),
        }
    }
    if !problems.is_empty() {
        return problems;
    }
    let got = match run(&p, &stores).await {
        Ok(got) => got,
        Err(e) => return vec![e],
    };
    let sent: Vec<String> = alerts
        .lock()
        .map(|a| a.iter().map(|m| m["text"].as_str().unwrap_or_default().to_string()).collect())
        .unwrap_or_default();
    compare(case, &got, &sent)
}

/// The scanners' answers from the case, and any it gets wrong.
fn stubs_of(case: &Case) -> (Stubs, Vec<String>) {
    let mut stubs = Stubs::default();
    let mut problems = Vec::new();
    for (node, answer) in &case.stubs {
        if answer.trim() == "capture" {
            continue;
        }
        match answer.parse::<Answer>() {
            Ok(a) => drop(stubs.scan.insert(node.clone(), a)),
            Err(e) => problems.push(format!("stubs.{node}: {e}")),
        }
    }
    for o in &case.objects {
        if let Some(answer) = &o.scan {
            match answer.parse::<Answer>() {
                Ok(a) => drop(stubs.per_object.insert(o.key.clone(), a)),
                Err(e) => problems.push(format!("objects: `{}`: scan: {e}", o.key)),
            }
        }
    }
    (stubs, problems)
}

/// An input's bytes: inline JSON (written compactly), text, or a file.
fn body_of(o: &Object, suite: &Suite) -> Result<Vec<u8>, String> {
    match (&o.json, &o.text, &o.file) {
        (Some(v), None, None) => serde_json::to_vec(v).map_err(|e| e.to_string()),
        (None, Some(t), None) => Ok(t.clone().into_bytes()),
        (None, None, Some(f)) => {
            let path = suite.base.join(f);
            std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))
        }
        _ => Err("give the body as one of `json`, `text` or `file`".into()),
    }
}

/// An item a node sent: node, port, source key, the item's fields.
type Sent = (String, String, String, dqpipe_engine::api::Meta);

/// One run in memory; what each object became.
async fn run(p: &Pipeline, stores: &InMemory) -> Result<Got, String> {
    // The `put`, `stamp` and `batch` nodes, and the store each writes to.
    let puts: BTreeMap<String, String> = p
        .nodes
        .iter()
        .filter(|n| ["put", "stamp", "batch"].contains(&n.spec.kind.as_str()))
        .map(|n| {
            let store = n.spec.config.get("store").and_then(Value::as_str).unwrap_or_default();
            (n.spec.name.clone(), store.to_string())
        })
        .collect();
    let deletes: Vec<String> =
        p.nodes.iter().filter(|n| n.spec.kind == "delete").map(|n| n.spec.name.clone()).collect();
    let seen: Arc<Mutex<Vec<Sent>>> = Arc::default();
    let tap = {
        let seen = seen.clone();
        Tap(Arc::new(move |node: &str, port: &str, item: &dqpipe_engine::api::Item| {
            if let Ok(mut s) = seen.lock() {
                s.push((node.to_string(), port.to_string(), item.source_key().to_string(), item.meta.clone()));
            }
        }))
    };
    let opts = RunOptions {
        tap: Some(tap),
        run_id: "dqpipe-test".into(),
        grace: Duration::from_secs(5),
        ..RunOptions::default()
    };
    let report =
        dqpipe_engine::run::executor::run(p, opts).await.map_err(|e| format!("the run could not start: {e}"))?;
    let mut got = Got::default();
    for (node, port, key, meta) in seen.lock().map(|s| s.clone()).unwrap_or_default() {
        let entry = got.objects.entry(key.clone()).or_default();
        entry.listed = true;
        let reason = meta.get("reason").and_then(Value::as_str).map(String::from);
        if reason.is_some() {
            entry.reason = reason.clone();
        }
        // A `delete` node's deleted item is its route too, the object gone from its store.
        if port == "deleted" && deletes.contains(&node) {
            entry.written.push(Written { node, key, body: None });
            continue;
        }
        let (Some(store), "out") = (puts.get(&node), port.as_str()) else { continue };
        let dest =
            meta.get("dest_key").or(meta.get("batch_key")).and_then(Value::as_str).unwrap_or_default().to_string();
        // A file's records gathered into one batch object are one write of it.
        if entry.written.iter().any(|w| w.node == node && w.key == dest) {
            continue;
        }
        let body = stores.store(store).objects().get(&dest).map(|b| b.to_vec());
        entry.written.push(Written { node, key: dest, body });
    }
    for f in &report.failures {
        let entry = got.objects.entry(f.key.clone()).or_default();
        entry.listed = true;
        entry.reason.get_or_insert_with(|| format!("{} (at `{}`)", f.reason, f.node));
    }
    Ok(got)
}
