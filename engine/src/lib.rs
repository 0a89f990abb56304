//! dqpipe's engine: the spec model, environment interpolation, validation, the DAG, the
//! planner and the executor.
//!
//! The engine knows node kinds and stores only through the traits in [`api`]; the concrete
//! kinds (listing, fetch, scanning, transforms, sinks, alerts) live in the
//! `dqpipe-plugins` crate. It never prints: the CLI shows what it returns and what
//! [`run::stats`] counts. Four folders, each importing only from those before it
//! (ARCHITECTURE.md draws them):
//!
//! 1. [`api`]: what a plugin author reads: the contract a node kind implements (config ->
//!    build -> run), items, stores, bodies, key templates.
//! 2. [`spec`]: what a pipeline file says, how it is read ([`spec::load`]), located,
//!    interpolated and checked, and how nodes are wired ([`spec::dag`]).
//! 3. [`run`]: how items flow ([`run::executor`]), with bounded channels, per-node
//!    concurrency, output ports, the tracker and acknowledgements, and the report.
//! 4. [`plan`]: what a dry run prints, and the plan file.
//!
//! [`testing`]: in-memory stores and kinds for `dqpipe test` and the engine's own tests.

pub mod api;
pub mod plan;
pub mod run;
pub mod spec;
pub mod testing;

pub use api::{Item, NodeKind, Registry};
pub use spec::errors::{SpecError, SpecErrors};
pub use spec::load::{load_pipeline, Pipeline};
