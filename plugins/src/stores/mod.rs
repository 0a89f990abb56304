//! Stores by URL scheme: `file://` (a local folder). `s3://` is the next to come.

pub mod local;

use std::sync::Arc;

use dqpipe_engine::node::{parse_config, ConfigError, StoreOpener};
use dqpipe_engine::spec::StoreSpec;
use dqpipe_engine::store::Store;
use schemars::JsonSchema;
use serde::Deserialize;

pub struct Opener;

/// A store entry in a spec: a URL and the settings of its scheme.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // read through `StoreSpec`; this type documents the schema
struct StoreEntry {
    /// `file://./relative/folder`, `file:///absolute/folder`.
    url: String,
    #[serde(flatten)]
    file: local::LocalOptions,
}

impl StoreOpener for Opener {
    fn open(&self, spec: &StoreSpec) -> Result<Arc<dyn Store>, ConfigError> {
        let options = serde_json::Value::Object(spec.options.clone());
        match spec.url.split_once("://").map(|(s, _)| s) {
            Some("file") => {
                let opts: local::LocalOptions = parse_config(options)?;
                Ok(Arc::new(local::LocalStore::open(&spec.url, opts)?))
            }
            Some(other) => Err(ConfigError::at(
                "url",
                format!("unsupported store scheme `{other}://`; this build knows `file://`"),
            )),
            None => Err(ConfigError::at(
                "url",
                format!("`{}` is not a store URL; write `file://./folder` (or `file:///abs/folder`)", spec.url),
            )),
        }
    }

    fn schema(&self) -> schemars::Schema {
        dqpipe_engine::schema::config_schema::<StoreEntry>()
    }
}
