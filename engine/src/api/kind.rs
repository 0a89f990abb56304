//! A node kind: its name, ports and settings, and how it builds a runnable node from a
//! spec's settings ([`NodeKind::build`]); the registry of kinds and store schemes.

use std::sync::Arc;

use serde::de::DeserializeOwned;

use super::build::BuildContext;
use super::StoreSpec;
use crate::api::processor::Processor;
use crate::api::source::Source;
use crate::api::store::Store;

/// An output port as a kind declares it.
#[derive(Debug, Clone, Copy)]
pub struct PortDecl {
    pub name: &'static str,
    /// Items on this port may never be dropped silently: validation requires a consumer.
    pub must_route: bool,
    /// Items on this port are problems (infected, unparseable): a run that routed any
    /// ends with the "complete with problems" exit code.
    pub problem: bool,
    /// The item fields this port's items have that they did not have before (`msg_date`,
    /// `reason`): `validate` checks every template against the fields that reach it.
    pub sets: &'static [&'static str],
    pub doc: &'static str,
    /// Items on this port were dropped on purpose (a filter's no): unrouted, their
    /// objects are complete and counted `dropped`.
    pub drops: bool,
}

impl PortDecl {
    /// A port whose items go on as usual; unrouted, they are complete where they are.
    pub const fn out(name: &'static str, doc: &'static str) -> PortDecl {
        PortDecl { name, must_route: false, problem: false, sets: &[], doc, drops: false }
    }
    /// Where a filter sends what it does not keep: unrouted (the usual case), the item is
    /// done, its object complete and counted `dropped` in the summary, report and metrics;
    /// never a problem, never an alert. Routed, its items go on as on any port.
    pub const fn dropped(name: &'static str, doc: &'static str) -> PortDecl {
        PortDecl { name, must_route: false, problem: false, sets: &[], doc, drops: true }
    }
    /// A problem port (infected, unparseable): it must be routed, and a run that routed
    /// any item on it ends "complete with problems" (exit 3). `sets` as in [`PortDecl::setting`].
    pub const fn problem(name: &'static str, sets: &'static [&'static str], doc: &'static str) -> PortDecl {
        PortDecl { name, must_route: true, problem: true, sets, doc, drops: false }
    }
    /// The fields this port's items have that they did not have before.
    pub const fn setting(self, sets: &'static [&'static str]) -> PortDecl {
        PortDecl { sets, ..self }
    }
    /// A port that must be routed though its items are no problem (a `route`'s routes).
    pub const fn required(self) -> PortDecl {
        PortDecl { must_route: true, ..self }
    }
    /// A problem port that may be left unrouted: its items' objects then stay at their
    /// source (`put`'s `refused`).
    pub const fn optional(self) -> PortDecl {
        PortDecl { must_route: false, ..self }
    }
}

/// Whether a kind produces items or processes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Source,
    Processor,
}

/// A node kind: its name, its ports, its settings' schema, and how to build a node.
pub trait NodeKind: Send + Sync {
    fn name(&self) -> &'static str;
    /// One line for `--help`, the schema and the README.
    fn summary(&self) -> &'static str;
    fn role(&self) -> Role;
    fn ports(&self) -> &'static [PortDecl];
    /// A node's ports: the kind's, and those its settings name (a `route`'s routes).
    /// Read from the node's settings as the spec gives them, before they are checked.
    fn ports_for(&self, _config: &serde_json::Map<String, serde_json::Value>) -> Vec<PortDecl> {
        self.ports().to_vec()
    }
    /// True for kinds whose work is CPU, not waiting (parsing, transforming): unless the
    /// spec sets the node's `concurrency`, it runs at most one item per CPU core, since
    /// more would only hold more items in memory.
    fn cpu_bound(&self) -> bool {
        false
    }
    /// True for kinds whose work is waiting on requests to a store (`fetch`, `put`): unless
    /// the spec or the command line gives the node a number, its concurrency adapts, from
    /// `defaults.concurrency` up to `defaults.max_concurrency`, to how long its items take
    /// and whether its requests are throttled (`run/adaptive.rs`).
    fn adaptive(&self) -> bool {
        false
    }
    /// True for kinds that read an item's whole body into memory (a parse): then the
    /// run's byte budget (`max_bytes_in_flight`) counts each object at its full size, not
    /// at most `spool_threshold_bytes` (what a node that streams from the spool holds).
    fn reads_whole_body(&self) -> bool {
        false
    }
    /// The most bytes of body this node sends on per byte it received: 1 for a node that
    /// passes bodies through, 2 for `nats_message` (its record quotes the message twice).
    /// With [`reads_whole_body`](Self::reads_whole_body), the byte budget counts each object
    /// at its size times the largest growth in the pipeline, what its item holds in memory
    /// after that node.
    fn body_growth(&self) -> u32 {
        1
    }
    /// The port a bare `input: node` refers to: the only port, or else the one named `out`
    /// (a `put`'s written items, beside its `refused`); none when the spec must name one
    /// (`scan.clean`).
    fn default_port(&self) -> Option<&'static str> {
        match self.ports() {
            [one] => Some(one.name),
            ports => ports.iter().find(|p| p.name == "out").map(|p| p.name),
        }
    }
    /// The port on which a scanner sends what it found clean: the only way into a store
    /// marked `trusted`. None for kinds that do not scan.
    fn clean_port(&self) -> Option<&'static str> {
        None
    }
    /// Nodes of a spec's `nodes:` that show the kind at work (YAML; the plugins keep theirs in
    /// `plugins/src/kind_examples/`), for `dqpipe explain`
    /// and `docs/kinds/`. Shown nodes may read from `list` or `fetch` and use the stores
    /// `landing`, `internal`, `quarantine` and `failed`: a test validates each kind's
    /// example in such a spec.
    fn example(&self) -> &'static str {
        ""
    }
    /// JSON Schema of the kind's own settings (see [`config_schema`]).
    fn schema(&self) -> schemars::Schema;
    /// Checks the settings and builds a runnable node. Does no I/O: plans build too.
    fn build(&self, ctx: &BuildContext, config: serde_json::Value) -> Result<Built, ConfigError>;
}

/// A kind written as its config type and its running part: the config type names the
/// kind, its ports and role, and builds the running node from itself. Registered with
/// [`kind`]; the schema and the parsing of settings come from the type. (Kinds that need
/// state of their own beside the settings implement [`NodeKind`] directly.)
pub trait KindConfig: DeserializeOwned + schemars::JsonSchema + Send + Sync + 'static {
    const NAME: &'static str;
    /// One line for `--help`, the schema and the README.
    const SUMMARY: &'static str;
    const ROLE: Role;
    const PORTS: &'static [PortDecl];
    /// See [`NodeKind::example`].
    const EXAMPLE: &'static str;
    /// Ports named by a node's settings, after [`KindConfig::PORTS`] (a `route`'s routes):
    /// see [`NodeKind::ports_for`]. None by default.
    fn ports_named(_config: &serde_json::Map<String, serde_json::Value>) -> Vec<PortDecl> {
        Vec::new()
    }
    /// See [`NodeKind::cpu_bound`].
    const CPU_BOUND: bool = false;
    /// See [`NodeKind::adaptive`].
    const ADAPTIVE: bool = false;
    /// See [`NodeKind::reads_whole_body`].
    const READS_WHOLE_BODY: bool = false;
    /// See [`NodeKind::body_growth`].
    const BODY_GROWTH: u32 = 1;
    /// See [`NodeKind::clean_port`].
    const CLEAN_PORT: Option<&'static str> = None;
    /// Checks the settings and builds a runnable node. Does no I/O: plans build too.
    fn build(self, ctx: &BuildContext) -> Result<Built, ConfigError>;
}

/// A schema for one config type, with sub-schemas inlined so it can be merged into the
/// spec's (`spec/schema.rs`).
pub fn config_schema<T: schemars::JsonSchema>() -> schemars::Schema {
    let settings = schemars::generate::SchemaSettings::draft2020_12().with(|s| {
        s.inline_subschemas = true;
        s.meta_schema = None;
    });
    settings.into_generator().into_root_schema_for::<T>()
}

/// The kind whose config type is `C`, for a [`Registry`].
pub fn kind<C: KindConfig>() -> Arc<dyn NodeKind> {
    Arc::new(Kind::<C> { build: None })
}

/// The kind `C` with another running part: the same name, ports, settings and schema, the
/// node made by `build` from the checked settings. For test doubles (`dqpipe test`'s
/// scanner that answers as a case says, its alerts that are kept, not posted).
pub fn kind_built_by<C: KindConfig>(
    build: impl Fn(C, &BuildContext) -> Result<Built, ConfigError> + Send + Sync + 'static,
) -> Arc<dyn NodeKind> {
    Arc::new(Kind::<C> { build: Some(Box::new(build)) })
}

type BuildFn<C> = Box<dyn Fn(C, &BuildContext) -> Result<Built, ConfigError> + Send + Sync>;

struct Kind<C> {
    /// Replaces `C::build` ([`kind_built_by`]).
    build: Option<BuildFn<C>>,
}

impl<C: KindConfig> NodeKind for Kind<C> {
    fn name(&self) -> &'static str {
        C::NAME
    }
    fn summary(&self) -> &'static str {
        C::SUMMARY
    }
    fn role(&self) -> Role {
        C::ROLE
    }
    fn ports(&self) -> &'static [PortDecl] {
        C::PORTS
    }
    fn ports_for(&self, config: &serde_json::Map<String, serde_json::Value>) -> Vec<PortDecl> {
        // A named port replaces the kind's port of the same name (a `route` that drops `else`).
        let named = C::ports_named(config);
        let kept: Vec<PortDecl> =
            C::PORTS.iter().copied().filter(|p| !named.iter().any(|n| n.name == p.name)).collect();
        named.into_iter().chain(kept).collect()
    }
    fn cpu_bound(&self) -> bool {
        C::CPU_BOUND
    }
    fn adaptive(&self) -> bool {
        C::ADAPTIVE
    }
    fn reads_whole_body(&self) -> bool {
        C::READS_WHOLE_BODY
    }
    fn body_growth(&self) -> u32 {
        C::BODY_GROWTH
    }
    fn clean_port(&self) -> Option<&'static str> {
        C::CLEAN_PORT
    }
    fn example(&self) -> &'static str {
        C::EXAMPLE
    }
    fn schema(&self) -> schemars::Schema {
        config_schema::<C>()
    }
    fn build(&self, ctx: &BuildContext, config: serde_json::Value) -> Result<Built, ConfigError> {
        let config = parse_config::<C>(config)?;
        match &self.build {
            Some(build) => build(config, ctx),
            None => config.build(ctx),
        }
    }
}

/// What [`NodeKind::build`] returns.
#[derive(Clone)]
pub enum Built {
    Source(Arc<dyn Source>),
    Processor(Arc<dyn Processor>),
}

/// A problem in a node's or store's settings, at a path relative to the node or store.
#[derive(Debug, Clone)]
pub struct ConfigError {
    /// Dotted path below the node (`key`, `retry.attempts`); empty for the node itself.
    pub path: String,
    pub message: String,
    /// Follows from an error already reported (a store that failed to open): not shown.
    pub consequential: bool,
    /// A place inside the value: its text, and a 0-based line and column in it (a jq
    /// program's syntax error), so the error points at the mistake, not at the key.
    pub within: Option<(String, usize, usize)>,
}

impl ConfigError {
    pub fn at(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self { path: path.into(), message: message.into(), consequential: false, within: None }
    }
    /// An error at `line` and `column` (0-based) of the string value `text` at `path`.
    pub fn inside(path: impl Into<String>, text: &str, line: usize, column: usize, message: impl Into<String>) -> Self {
        Self { within: Some((text.to_string(), line, column)), ..Self::at(path, message) }
    }
}

/// Deserializes a kind's settings, keeping the path of the first bad value.
pub fn parse_config<T: DeserializeOwned>(config: serde_json::Value) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(config).map_err(|e| {
        let path = e.path().to_string();
        let message = e.inner().to_string();
        // For an unknown field, point at the field itself.
        let path = match (path.as_str(), unknown_field(&message)) {
            (".", Some(f)) => f,
            (p, Some(f)) if p == f || p.ends_with(&format!(".{f}")) => p.to_string(),
            (p, Some(f)) => format!("{p}.{f}"),
            (".", None) => String::new(),
            (p, None) => p.to_string(),
        };
        ConfigError { path, message, consequential: false, within: None }
    })
}

pub(crate) fn unknown_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    Some(rest.split('`').next()?.to_string())
}

/// Opens stores by URL scheme. Implemented by `dqpipe-plugins`.
pub trait StoreOpener: Send + Sync {
    /// Checks the store's settings and returns a handle. No I/O.
    fn open(&self, spec: &StoreSpec) -> Result<Arc<dyn Store>, ConfigError>;
    /// JSON Schema of a store entry.
    fn schema(&self) -> schemars::Schema;
}

/// Every kind and store scheme the binary knows.
pub struct Registry {
    pub kinds: Vec<Arc<dyn NodeKind>>,
    pub stores: Arc<dyn StoreOpener>,
}

impl Registry {
    pub fn kind(&self, name: &str) -> Option<&Arc<dyn NodeKind>> {
        self.kinds.iter().find(|k| k.name() == name)
    }
    pub fn kind_names(&self) -> Vec<&'static str> {
        self.kinds.iter().map(|k| k.name()).collect()
    }
}
