//! Adding a node kind: one type for its settings (which also names the kind and its
//! ports), one for its running part, and one registration line. This one upper-cases
//! each item's bytes; the test runs it between the real `list` and `put` kinds.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use dqpipe_engine::api::body::Body;
use dqpipe_engine::api::{
    kind, BuildContext, Built, ConfigError, Context, Emitter, Item, ItemError, KindConfig, PortDecl, Processor, Role,
};
use serde::Deserialize;

/// Settings of an `upper` node: none but how large an item may be.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct UpperConfig {
    #[serde(default = "a_mebibyte")]
    max_bytes: u64,
}

fn a_mebibyte() -> u64 {
    1 << 20
}

impl KindConfig for UpperConfig {
    const NAME: &'static str = "upper";
    const SUMMARY: &'static str = "Upper-cases each item's bytes.";
    const ROLE: Role = Role::Processor;
    const PORTS: &'static [PortDecl] = &[PortDecl::out("out", "upper-cased")];
    const EXAMPLE: &'static str = "upper: { kind: upper, input: fetch }\n";
    fn build(self, _ctx: &BuildContext) -> Result<Built, ConfigError> {
        Ok(Built::Processor(Arc::new(Upper { max_bytes: self.max_bytes })))
    }
}

struct Upper {
    max_bytes: u64,
}

#[async_trait]
impl Processor for Upper {
    async fn process(&self, mut item: Item, out: &Emitter, _cx: &Context) -> Result<(), ItemError> {
        let body = item.body.take().ok_or_else(|| ItemError::new("no bytes: fetch first"))?;
        let bytes = body.to_bytes(self.max_bytes).await.map_err(|e| ItemError::new(e.to_string()))?;
        item.body = Some(Body::Memory(Bytes::from(bytes.to_ascii_uppercase())));
        out.emit("out", item).await.map_err(ItemError::from)
    }
    async fn preview(&self, item: Item, out: &Emitter, _cx: &Context, _deep: bool) -> Result<(), ItemError> {
        out.emit("out", item).await.map_err(ItemError::from)
    }
}

#[tokio::test]
async fn a_new_kind_is_one_type_and_one_registration_line() {
    let mut registry = dqpipe_plugins::registry();
    registry.kinds.push(kind::<UpperConfig>()); // the registration line

    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("in")).unwrap();
    std::fs::write(dir.path().join("in/a.txt"), "hello").unwrap();
    let spec = format!(
        "version: 1\nname: t\nstores:\n  src: {{ url: \"file://{0}/in\" }}\n  dst: {{ url: \"file://{0}/out\" }}\nnodes:\n  list: {{ kind: list, store: src }}\n  fetch: {{ kind: fetch, input: list }}\n  upper: {{ kind: upper, input: fetch }}\n  write: {{ kind: put, input: upper, store: dst, key: \"{{{{ name }}}}\" }}\n",
        dir.path().display()
    );
    let p = dqpipe_engine::spec::load::load_pipeline_str(std::path::Path::new("t.yaml"), &spec, &registry, &|_| None)
        .unwrap_or_else(|e| panic!("{e}"));
    let r = dqpipe_engine::run::executor::run(&p, Default::default()).await.unwrap();
    assert_eq!(r.items.complete, 1);
    assert_eq!(std::fs::read_to_string(dir.path().join("out/a.txt")).unwrap(), "HELLO");
    // The kind is in the schema like the others, with its settings.
    let schema = dqpipe_engine::spec::schema::spec_schema(&registry);
    let kinds = schema["properties"]["nodes"]["additionalProperties"]["allOf"].as_array().unwrap();
    assert!(kinds
        .iter()
        .map(|b| &b["then"])
        .any(|k| k["title"] == "upper" && k["properties"]["max_bytes"].is_object()));
}
