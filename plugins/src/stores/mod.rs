//! Stores by URL scheme: `file://` (a local folder), `s3://` (a bucket and prefix),
//! `sftp://` (a folder on an SFTP server) and `ftp://` (a folder on an FTP server, as a
//! source).
//!
//! A store entry has its URL and one settings table per scheme, `file:`, `s3:` and `sftp:`.
//! Only the table of the URL's scheme is used (every table present is checked), so one
//! spec can hold several and be switched between a laptop's folders and S3 by the URL
//! alone (an environment variable). A scheme is registered in one place, [`Opener::new`]:
//! its name, its settings type and its `open`.

pub mod ftp;
pub mod local;
pub mod rate;
pub mod s3;
pub mod sftp;

use std::sync::Arc;

use dqpipe_engine::api::store::Store;
use dqpipe_engine::api::{parse_config, ConfigError, StoreOpener};
use dqpipe_engine::spec::StoreSpec;
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

/// A setting's value, or `None` when it is unset or empty (`${VAR:-}` leaves it empty).
pub(crate) fn non_empty(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// A server store's URL, `scheme://user@host[:port]/folder`, read: user, host, port (or
/// `default_port`), and the folder as an absolute path. A password in the URL is refused
/// (`where_secret` says where it goes instead).
pub(crate) fn server_url(
    url: &str,
    scheme: &str,
    default_port: u16,
    where_secret: &str,
) -> Result<(String, String, u16, String), ConfigError> {
    let bad = || {
        ConfigError::at(
            "url",
            format!("`{url}`: write `{scheme}://user@host:port/folder` (the port defaults to {default_port})"),
        )
    };
    let rest = url.strip_prefix(&format!("{scheme}://")).ok_or_else(bad)?;
    let (authority, dir) = rest.split_once('/').unwrap_or((rest, ""));
    let (user, hostport) = authority.rsplit_once('@').ok_or_else(bad)?;
    if user.contains(':') {
        return Err(ConfigError::at("url", format!("put no password in a {scheme}:// URL: {where_secret}")));
    }
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) => (h, p.parse::<u16>().map_err(|_| bad())?),
        None => (hostport, default_port),
    };
    if user.is_empty() || host.is_empty() {
        return Err(bad());
    }
    Ok((user.to_string(), host.to_string(), port, format!("/{}", dir.trim_matches('/'))))
}

/// One URL scheme: the name of its settings table and how it opens a store.
trait Scheme: Send + Sync {
    fn name(&self) -> &'static str;
    fn schema(&self) -> Value;
    /// Checks a settings table (no I/O).
    fn check(&self, table: Value) -> Result<(), ConfigError>;
    fn open(&self, url: &str, table: Value) -> Result<Arc<dyn Store>, ConfigError>;
}

struct SchemeOf<O, S> {
    name: &'static str,
    open: fn(&str, O) -> Result<S, ConfigError>,
}

impl<O, S> Scheme for SchemeOf<O, S>
where
    O: DeserializeOwned + JsonSchema + Default + Send + Sync + 'static,
    S: Store + 'static,
{
    fn name(&self) -> &'static str {
        self.name
    }
    fn schema(&self) -> Value {
        let mut s = dqpipe_engine::spec::schema::config_schema::<O>().to_value();
        if let Some(o) = s.as_object_mut() {
            o.remove("$schema");
            o.insert("description".into(), json!(format!("Settings used when the URL is `{}://`.", self.name)));
        }
        s
    }
    fn check(&self, table: Value) -> Result<(), ConfigError> {
        parse_config::<O>(table).map(|_| ())
    }
    /// Errors of `open` name their place themselves (`url`, `s3.sse`).
    fn open(&self, url: &str, table: Value) -> Result<Arc<dyn Store>, ConfigError> {
        let options = match table {
            Value::Null => O::default(),
            t => parse_config::<O>(t).map_err(|e| nested(self.name, e))?,
        };
        Ok(Arc::new((self.open)(url, options)?))
    }
}

/// The schemes this build knows.
pub struct Opener {
    schemes: Vec<Box<dyn Scheme>>,
}

/// A scheme named `name`, read with settings type `O`, opened by `open`.
fn scheme<O, S>(name: &'static str, open: fn(&str, O) -> Result<S, ConfigError>) -> Box<dyn Scheme>
where
    O: DeserializeOwned + JsonSchema + Default + Send + Sync + 'static,
    S: Store + 'static,
{
    Box::new(SchemeOf { name, open })
}

impl Opener {
    pub fn new() -> Self {
        Self {
            schemes: vec![
                scheme("file", local::LocalStore::open),
                scheme("s3", s3::S3Store::open),
                scheme("sftp", sftp::SftpStore::open),
                scheme("ftp", ftp::FtpStore::open),
            ],
        }
    }

    fn names(&self) -> Vec<&'static str> {
        self.schemes.iter().map(|s| s.name()).collect()
    }
}

impl Default for Opener {
    fn default() -> Self {
        Self::new()
    }
}

impl StoreOpener for Opener {
    fn open(&self, spec: &StoreSpec) -> Result<Arc<dyn Store>, ConfigError> {
        // Every table present must belong to a scheme, and is checked.
        for (key, table) in &spec.options {
            let Some(s) = self.schemes.iter().find(|s| s.name() == key) else {
                return Err(ConfigError::at(
                    key.clone(),
                    format!("unknown field `{key}`, expected `url` or a scheme's table: {}", self.names().join(", ")),
                ));
            };
            s.check(table.clone()).map_err(|e| nested(key, e))?;
        }
        let url_scheme = spec.url.split_once("://").map(|(s, _)| s);
        let Some(s) = self.schemes.iter().find(|s| Some(s.name()) == url_scheme) else {
            let known: Vec<String> = self.names().iter().map(|n| format!("`{n}://`")).collect();
            return Err(ConfigError::at(
                "url",
                match url_scheme {
                    Some(other) => format!("unsupported store scheme `{other}://`; this build knows {}", known.join(", ")),
                    None => format!(
                        "`{}` is not a store URL; write `file://./folder`, `file:///abs/folder` or `s3://bucket/prefix`",
                        spec.url
                    ),
                },
            ));
        };
        let table = spec.options.get(s.name()).cloned().unwrap_or(Value::Null);
        let store = s.open(&spec.url, table)?;
        Ok(match spec.max_requests_per_second {
            Some(rate) => Arc::new(rate::RateLimited::new(store, rate)),
            None => store,
        })
    }

    fn schema(&self) -> schemars::Schema {
        let mut properties = serde_json::Map::new();
        properties.insert(
            "url".into(),
            json!({"type": "string", "description": "`file://./relative/folder`, `file:///absolute/folder`, `s3://bucket/prefix`, `sftp://user@host:port/folder`."}),
        );
        for s in &self.schemes {
            properties.insert(s.name().into(), s.schema());
        }
        let schema =
            json!({"type": "object", "properties": properties, "required": ["url"], "additionalProperties": false});
        schemars::Schema::try_from(schema).unwrap_or_default()
    }
}

/// An error in a scheme's table, placed under the table (`s3.endpoint`).
fn nested(table: &str, e: ConfigError) -> ConfigError {
    let path = if e.path.is_empty() { table.to_string() } else { format!("{table}.{}", e.path) };
    ConfigError { path, ..e }
}
