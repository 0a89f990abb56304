//! dqpipe's engine: the spec model, environment interpolation, validation, the DAG, the
//! planner and the executor.
//!
//! The engine knows node kinds and stores only through the traits in [`api`] and
//! [`store`]; the concrete kinds (listing, fetch, scanning, transforms, sinks, alerts) live
//! in the `dqpipe-plugins` crate. It never prints: the CLI shows what it returns and what
//! [`stats`] counts. Reading order for a newcomer:
//!
//! 1. [`spec`]: what a pipeline file says, and how it is read ([`load`]).
//! 2. [`api`]: the contract a node kind implements (config -> build -> run), and [`store`].
//! 3. [`dag`]: how nodes are wired and checked.
//! 4. [`executor`]: how items flow, with bounded channels and per-node concurrency, and
//!    [`runtime`]: the output ports, byte budget and tracker it wires nodes with.
//! 5. [`plan`], [`plan_file`] and [`report`]: what is printed before and after a run.

pub mod api;
pub mod body;
pub mod dag;
pub mod error;
pub mod executor;
mod fields;
mod hints;
pub mod interpolate;
pub mod load;
pub mod locate;
pub mod options;
pub mod plan;
pub mod plan_file;
pub mod redact;
pub mod report;
pub mod runtime;
pub mod schema;
pub mod selection;
pub mod spec;
pub mod stats;
pub mod store;
mod store_specs;
pub mod suggest;
pub mod template;
pub mod testing;
mod trust;

pub use api::{Item, NodeKind, Registry};
pub use error::{SpecError, SpecErrors};
pub use load::{load_pipeline, Pipeline};
