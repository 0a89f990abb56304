//! `json_check`: passes files that are well-formed JSON, unchanged; the rest go to
//! `failed` with the parser's reason. The live ingest flow delivers files as they are and
//! moves unreadable ones to a failed-to-parse place.

use std::sync::Arc;

use dqpipe_engine::api::{BuildContext, Built, ConfigError, KindConfig, PortDecl, Role};
use schemars::JsonSchema;

use crate::parse::Check;
use serde::Deserialize;

/// Settings of a `json_check` node.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JsonCheckConfig {
    /// Files larger than this fail without being parsed.
    #[serde(default = "crate::parse::default_max_bytes")]
    #[schemars(range(min = 1, max = 4294967296u64))]
    pub max_bytes: u64,
}

const PORTS: &[PortDecl] = &[
    PortDecl::out("ok", "well-formed JSON, unchanged"),
    PortDecl::problem("failed", &["reason"], "anything else, with `reason`"),
];

impl KindConfig for JsonCheckConfig {
    const NAME: &'static str = "json_check";
    const SUMMARY: &'static str = "Passes well-formed JSON files unchanged; the rest go to `failed` with the reason.";
    const ROLE: Role = Role::Processor;
    const PORTS: &'static [PortDecl] = PORTS;
    const EXAMPLE: &'static str = include_str!("kind_examples/json_check.yaml");
    const CPU_BOUND: bool = true;
    const READS_WHOLE_BODY: bool = true;
    fn build(self, _ctx: &BuildContext) -> Result<Built, ConfigError> {
        Ok(Built::Processor(Arc::new(Check { kind: Self::NAME, max_bytes: self.max_bytes, check: json_ok })))
    }
}

/// Whether `bytes` is well-formed JSON.
fn json_ok(bytes: &[u8]) -> Result<(), crate::invalid::Invalid> {
    let parsed = serde_json::from_slice::<serde::de::IgnoredAny>(bytes);
    parsed.map(|_| ()).map_err(|e| crate::invalid::Invalid(format!("not JSON: {e}")))
}
