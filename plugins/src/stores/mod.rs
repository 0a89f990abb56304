//! Stores by URL scheme: `file://` (a local folder), `s3://` (a bucket and prefix) and
//! `sftp://` (a folder on an SFTP server, as a source).
//!
//! A store entry has its URL and one settings table per scheme, `file:` and `s3:`. Only the
//! table of the URL's scheme is used, so one spec can hold both and be switched between a
//! laptop's folders and S3 by the URL alone (an environment variable).

pub mod local;
pub mod s3;
pub mod sftp;

use std::sync::Arc;

use dqpipe_engine::api::{parse_config, ConfigError, StoreOpener};
use dqpipe_engine::spec::StoreSpec;
use dqpipe_engine::store::Store;
use schemars::JsonSchema;
use serde::Deserialize;

pub struct Opener;

/// A setting's value, or `None` when it is unset or empty (`${VAR:-}` leaves it empty).
pub(crate) fn non_empty(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// A store entry in a spec: a URL and the settings of each scheme.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct StoreEntry {
    /// `file://./relative/folder`, `file:///absolute/folder`, `s3://bucket/prefix`.
    #[serde(default)]
    #[allow(dead_code)] // read through `StoreSpec`; here for the schema
    url: String,
    /// Settings used when the URL is `file://`.
    #[serde(default)]
    file: local::LocalOptions,
    /// Settings used when the URL is `s3://`.
    #[serde(default)]
    s3: s3::S3Options,
    /// Settings used when the URL is `sftp://`.
    #[serde(default)]
    sftp: sftp::SftpOptions,
}

impl StoreOpener for Opener {
    fn open(&self, spec: &StoreSpec) -> Result<Arc<dyn Store>, ConfigError> {
        let entry: StoreEntry = parse_config(serde_json::Value::Object(spec.options.clone()))?;
        match spec.url.split_once("://").map(|(s, _)| s) {
            Some("file") => Ok(Arc::new(local::LocalStore::open(&spec.url, entry.file)?)),
            Some("s3") => Ok(Arc::new(s3::S3Store::open(&spec.url, entry.s3)?)),
            Some("sftp") => Ok(Arc::new(sftp::SftpStore::open(&spec.url, entry.sftp)?)),
            Some(other) => Err(ConfigError::at(
                "url",
                format!("unsupported store scheme `{other}://`; this build knows `file://`, `s3://` and `sftp://`"),
            )),
            None => Err(ConfigError::at(
                "url",
                format!(
                    "`{}` is not a store URL; write `file://./folder`, `file:///abs/folder` or `s3://bucket/prefix`",
                    spec.url
                ),
            )),
        }
    }

    fn schema(&self) -> schemars::Schema {
        dqpipe_engine::schema::config_schema::<StoreEntry>()
    }
}
