//! Where `run --report` writes the report: a local file, or `STORE:KEY`, a key in one of
//! the spec's stores (`internal:_dqpipe/reports/{{ run_id }}.json`), written with that
//! store's settings and credentials, so that the report outlives a pod's scratch space.
//! `{{ run_id }}` and `{{ pipeline }}` in the key are replaced.

use std::path::PathBuf;

use bytes::Bytes;
use dqpipe_engine::api::body::Body;
use dqpipe_engine::api::store::PutOptions;
use dqpipe_engine::run::report::RunReport;
use dqpipe_engine::Pipeline;

pub enum Target {
    File(PathBuf),
    Store { name: String, key: String },
}

impl Target {
    /// `STORE:KEY` when STORE is one of the spec's stores; a file path otherwise.
    pub fn parse(arg: &str, p: &Pipeline, run_id: &str) -> Target {
        match arg.split_once(':') {
            Some((name, key)) if p.stores.contains_key(name) => Target::Store {
                name: name.to_string(),
                key: key.replace("{{ run_id }}", run_id).replace("{{ pipeline }}", &p.name),
            },
            _ => Target::File(std::path::absolute(arg).unwrap_or_else(|_| PathBuf::from(arg))),
        }
    }

    /// Where it goes, for alerts and logs (a store's URL without its secrets).
    pub fn describe(&self, p: &Pipeline) -> String {
        match self {
            Target::File(path) => path.display().to_string(),
            Target::Store { name, key } => {
                let url = p.stores.get(name).map(|(_, s)| s.display_url()).unwrap_or_default();
                format!("{name}:{key} ({url})")
            }
        }
    }

    pub async fn write(&self, p: &Pipeline, r: &RunReport) -> anyhow::Result<()> {
        let json = serde_json::to_vec_pretty(r)?;
        match self {
            Target::File(path) => Ok(std::fs::write(path, json)?),
            Target::Store { name, key } => {
                let Some((_, store)) = p.stores.get(name) else { anyhow::bail!("no store `{name}`") };
                let options = PutOptions { content_type: Some("application/json".into()), ..Default::default() };
                Ok(store.put(key, &Body::Memory(Bytes::from(json)), &options).await?)
            }
        }
    }
}
