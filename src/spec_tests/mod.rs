//! Test cases written beside a spec, for `dqpipe test`: a `tests:` section in the spec, or
//! `SPEC.tests.yaml` beside it (`nats-historical.tests.yaml` for `nats-historical.yaml`).
//!
//! ```yaml
//! tests:
//!   - name: an infected file is quarantined and alerted
//!     objects:                       # put in the first source's store before the run
//!       - { key: a.json, json: {"FPL": {}} }      # or `text: "..."`, or `file: path`
//!     stubs: { scan: infected Eicar-Test-Signature }   # per scanner node; per object: `scan:`
//!     expect:
//!       a.json: { route: quarantine, key: a.json, reason: Eicar }
//!     alerts: ["Virus detected: a.json quarantined", ...]   # every message, any order
//! ```
//!
//! An expectation says whether the source lists the object (`listed`, true by default),
//! names the `put` nodes that wrote the object (`route`, `none` when none
//! did), the key written (`key`), the body (`body`: exact JSON; `body_contains`: these
//! fields at least) and the reason (`reason`: a part of it). `alerts`, when given, is
//! every message the alert nodes sent (their headlines); when left out, none may be sent.

mod compare;
mod load;
mod run;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use serde::Deserialize;
use serde_json::Value;

pub use load::{check, suite};
pub use run::run_case;

/// One test case.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Case {
    pub name: String,
    /// The variables the spec reads; nothing else of the environment is seen.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    pub objects: Vec<Object>,
    /// Per node: a scanner's answer (`clean`, `infected SIGNATURE`, `error REASON`), or
    /// `capture` for an alert node (what every alert node does in tests).
    #[serde(default)]
    pub stubs: BTreeMap<String, String>,
    /// Per input key, what should become of it.
    #[serde(default)]
    pub expect: IndexMap<String, Expect>,
    /// Every alert message sent (headlines), in any order; none when left out.
    #[serde(default)]
    pub alerts: Option<Vec<String>>,
}

/// An input object.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Object {
    pub key: String,
    /// The body as JSON written inline.
    #[serde(default)]
    pub json: Option<Value>,
    /// The body as text (for what is not JSON).
    #[serde(default)]
    pub text: Option<String>,
    /// The body from a file, relative to the file holding the tests.
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// This object's scanner answer, over the case's `stubs` (every scanner node).
    #[serde(default)]
    pub scan: Option<String>,
    /// When the listing says it was last modified (RFC 3339); default: when the case
    /// starts, just before the spec is loaded (so `min_age: 0s` takes it, `min_age: 1m`
    /// does not).
    #[serde(default)]
    pub last_modified: Option<String>,
}

/// What should become of one object.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// `false`: the source leaves it out (prefix, suffix, regex, limit).
    #[serde(default)]
    pub listed: Option<bool>,
    /// The `put` node(s) that wrote it, or `delete` node(s) that deleted it; `none` when
    /// none did.
    #[serde(default)]
    pub route: Option<Routes>,
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default)]
    pub body: Option<Value>,
    #[serde(default)]
    pub body_contains: Option<Value>,
    #[serde(default)]
    pub reason: Option<String>,
}

/// `route: write` or `route: [deliver_dq, deliver_secure]`.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum Routes {
    One(String),
    Many(Vec<String>),
}

impl Routes {
    pub fn names(&self) -> Vec<String> {
        let mut v = match self {
            Routes::One(s) if s == "none" => Vec::new(),
            Routes::One(s) => vec![s.clone()],
            Routes::Many(v) => v.clone(),
        };
        v.sort();
        v
    }
}

/// The JSON Schema of a tests file (`SPEC.tests.yaml`): `tests:`, a list of cases.
pub fn tests_schema() -> Value {
    #[derive(schemars::JsonSchema)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    /// Test cases for `dqpipe test`, beside the spec they test.
    struct TestsFile {
        tests: Vec<Case>,
    }
    let mut s = dqpipe_engine::spec::schema::config_schema::<TestsFile>().to_value();
    s["$schema"] = Value::from("https://json-schema.org/draft/2020-12/schema");
    s["title"] = Value::from("dqpipe tests file");
    s
}

/// The cases of one spec, and the folder their `file:` paths are relative to.
pub struct Suite {
    pub spec: PathBuf,
    pub cases: Vec<Case>,
    pub base: PathBuf,
    /// Where each case was written, for errors at their place.
    pub origins: Vec<load::Origin>,
}

/// `SPEC.tests.yaml` for `SPEC.yaml` (or `.yml`, `.toml`).
pub fn tests_file(spec: &Path) -> PathBuf {
    let stem = spec.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    spec.with_file_name(format!("{stem}.tests.yaml"))
}

/// True for files that hold tests, not a spec.
pub fn is_tests_file(path: &Path) -> bool {
    path.file_name().is_some_and(|n| n.to_string_lossy().ends_with(".tests.yaml"))
}
