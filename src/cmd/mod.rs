//! One file per command of the CLI.

pub mod completions;
pub mod docs;
pub mod explain;
pub mod graph;
pub mod kinds;
pub mod map;
pub mod plan;
pub mod run;
pub mod samples;
pub mod schema;
pub mod test;
pub mod validate;
