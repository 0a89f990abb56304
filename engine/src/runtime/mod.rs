//! How a run works inside, out of plugins' sight: the preflight checks (`preflight.rs`),
//! the output ports and byte budget (`outputs.rs`), the tracker that counts objects as
//! they finish (`tracker.rs`) and their acknowledgement (`acks.rs`). The executor
//! (`crate::executor`) runs the phases with them.

pub mod acks;
pub mod end;
pub mod halt;
pub mod outputs;
pub mod preflight;
pub mod tracker;
