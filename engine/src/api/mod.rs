//! What a plugin author reads: the contract between the engine and a node kind.
//!
//! A kind ([`NodeKind`], in `kind.rs`) is registered once; for each node of that kind in a
//! spec, the engine hands it the node's settings and gets back something that runs: a
//! [`Source`] (`source.rs`) that lists objects and starts one [`Item`] (`item.rs`) each, or a
//! [`Processor`] (`processor.rs`) that takes one item at a time and sends it on through
//! named output ports ([`Emitter::emit`]), with a [`Context`] (`context.rs`: spool,
//! retries, plan mode). An item that cannot be processed is an
//! [`ItemError`]: the object is then reported unprocessed and nothing is sent on.

pub mod body;
pub mod build;
pub mod context;
pub mod held;
pub mod item;
pub mod kind;
pub mod outcome;
pub mod processor;
pub mod selection;
pub mod source;
pub mod store;
pub mod suggest;
pub mod template;

// What a kind sees of the run and of the spec: its output ports, the shared settings and
// the stores' specs it is built with.
pub use crate::run::outputs::{Emitter, PortStats};
pub use crate::spec::{Defaults, StoreSpec};
pub use build::BuildContext;
pub use context::{Context, Stop};
pub use held::Held;
pub use item::{
    Closed, Finished, Item, ItemError, ItemFailure, Meta, NodeError, PlannedWrite, Problem, ProblemObject, Trail,
};
pub use kind::{
    kind, kind_built_by, parse_config, Built, ConfigError, KindConfig, NodeKind, PortDecl, Registry, Role, StoreOpener,
};
pub use outcome::{Cause, Outcome};
pub use processor::{Processor, RunFacts};
pub use selection::{Planned, Shard};
pub use source::Source;
