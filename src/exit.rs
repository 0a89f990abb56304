//! The exit codes of `dqpipe`, in one place (README, "Exit codes"). The Kubernetes Job's
//! `podFailurePolicy` (kube/base/) depends on them.

use std::process::ExitCode;

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
}

impl Exit {
    /// `plan --detailed-exitcode`'s "there is work to do", which shares its number with
    /// `Invalid` as terraform's does.
    pub const WORK_TO_DO: Exit = Exit::Invalid;

    /// The exit of a run whose report says `code` (0, 3 or 4).
    pub fn of_run(code: i32) -> Exit {
        match code {
            0 => Exit::Ok,
            3 => Exit::Problems,
            _ => Exit::Incomplete,
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e as u8)
    }
}
