//! How a run ended, as end-of-run hooks (`Processor::finish`) and the report see it.

use serde::Serialize;

/// How a run ended. The exit code contract (README, "Exit codes") follows from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Every object reached the end of its path; none was a problem.
    Complete,
    /// Every object reached the end of its path; some went to a problem port
    /// (quarantine, dead letter), or were refused for good with nowhere to go (left at
    /// their source; a rerun cannot help until someone acts).
    CompleteWithProblems,
    /// Some objects were not processed (a node failed them, a source failed, or the run
    /// was stopped). A rerun picks them up.
    Incomplete,
}

impl Outcome {
    pub fn exit_code(self) -> i32 {
        match self {
            Outcome::Complete => 0,
            Outcome::CompleteWithProblems => 3,
            Outcome::Incomplete => 4,
        }
    }
}

/// An expectation of a source's listing that did not hold.
#[derive(Debug, Clone, Serialize)]
pub struct UnmetExpectation {
    pub node: String,
    pub reason: String,
}

/// An entry a source's listing met that is not an object it can give (a link, a socket,
/// a name that is not UTF-8): not processed, and named rather than skipped in silence.
#[derive(Debug, Clone, Serialize)]
pub struct NotListed {
    pub node: String,
    pub path: String,
    pub why: String,
}

/// Objects that failed at one node for one reason.
#[derive(Debug, Clone, Serialize)]
pub struct Cause {
    /// The node (empty for the run itself).
    pub node: String,
    /// The reason, with quoted values (keys, names) shown as `"…"`.
    pub reason: String,
    pub count: u64,
    /// Up to three of the objects' keys.
    pub examples: Vec<String>,
}
