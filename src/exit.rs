//! The exit codes of `dqpipe`, in one place (README, "Exit codes"). The Kubernetes Job's
//! `podFailurePolicy` (kube/base/) depends on them.

use std::process::ExitCode;

use dqpipe_engine::api::Outcome;

/// How the command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Complete: every object reached the end of its path (`plan --detailed-exitcode`:
    /// nothing to do).
    Ok = 0,
    /// The run could not start (a preflight check failed) or a file could not be written.
    Error = 1,
    /// Invalid spec or command line; nothing ran. (`plan --detailed-exitcode`: work to do.)
    Invalid = 2,
    /// Complete, but some objects were quarantined or dead-lettered.
    Problems = 3,
    /// Incomplete: some objects were not processed; rerun.
    Incomplete = 4,
    /// Another run of the pipeline (and shard) holds its lease; nothing ran.
    Busy = 5,
}

impl Exit {
    /// `plan --detailed-exitcode`'s "there is work to do", which shares its number with
    /// `Invalid` as terraform's does.
    pub const WORK_TO_DO: Exit = Exit::Invalid;

    /// The exit of a run that ended as `outcome`.
    pub fn of_run(outcome: Outcome) -> Exit {
        match outcome {
            Outcome::Complete => Exit::Ok,
            Outcome::CompleteWithProblems => Exit::Problems,
            Outcome::Incomplete => Exit::Incomplete,
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e as u8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The process exits with the code the report, metrics and alerts give.
    #[test]
    fn a_runs_exit_is_the_code_its_report_gives() {
        for outcome in [Outcome::Complete, Outcome::CompleteWithProblems, Outcome::Incomplete] {
            assert_eq!(Exit::of_run(outcome) as i32, outcome.exit_code());
        }
    }
}
