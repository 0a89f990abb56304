//! `json_check`: passes files that are well-formed JSON, unchanged; the rest go to
//! `failed` with the parser's reason. The live ingest flow delivers files as they are and
//! moves unreadable ones to a failed-to-parse place.

use std::sync::Arc;

use async_trait::async_trait;
use dqpipe_engine::api::{
    BuildContext, Built, ConfigError, Context, Emitter, Item, ItemError, KindConfig, PortDecl, Problem, Processor, Role,
};
use schemars::JsonSchema;

use crate::parse::parse_body;
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
    const CPU_BOUND: bool = true;
    const READS_WHOLE_BODY: bool = true;
    fn build(self, _ctx: &BuildContext) -> Result<Built, ConfigError> {
        Ok(Built::Processor(Arc::new(JsonCheck { cfg: self })))
    }
}

struct JsonCheck {
    cfg: JsonCheckConfig,
}

#[async_trait]
impl Processor for JsonCheck {
    async fn process(&self, mut item: Item, out: &Emitter, _cx: &Context) -> Result<(), ItemError> {
        let verdict = parse_body(&item, "json_check", self.cfg.max_bytes, |bytes| {
            serde_json::from_slice::<serde::de::IgnoredAny>(&bytes).map(|_| ()).map_err(|e| format!("not JSON: {e}"))
        })
        .await?;
        match verdict {
            Ok(()) => out.emit("ok", item).await,
            Err(reason) => {
                item.set_problem(Problem::Unparseable { reason });
                out.emit("failed", item).await
            }
        }
        .map_err(ItemError::from)
    }

    /// Checks in `--deep` plans (the bytes were read); otherwise assumes well-formed.
    async fn preview(&self, item: Item, out: &Emitter, cx: &Context, deep: bool) -> Result<(), ItemError> {
        if deep && item.body.is_some() {
            return self.process(item, out, cx).await;
        }
        out.emit("ok", item).await.map_err(ItemError::from)
    }
}
