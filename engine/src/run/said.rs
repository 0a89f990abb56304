//! Failures in the log by cause, not by object: the first object a node fails for a cause
//! is logged whole (node, key, reason); the next ones for the same cause (the reason with
//! its quoted values left out, as the report groups them) are counted and said in one
//! line at most every 10 s, and at the end of the run. A scanner that dies mid-run is a
//! few lines, not one per object.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// How often the count of further failures for one cause is said.
pub(crate) const EVERY: Duration = Duration::from_secs(10);

/// One node's failures said so far, by cause.
#[derive(Debug, Default)]
pub struct FailuresSaid {
    causes: Mutex<HashMap<(String, bool), Unsaid>>,
}

#[derive(Debug)]
struct Unsaid {
    count: u64,
    since: Instant,
}

fn what(permanent: bool) -> &'static str {
    if permanent {
        "refused"
    } else {
        "not processed"
    }
}

impl FailuresSaid {
    /// Logs that `node` failed the object `key` for `reason`, or counts it.
    pub(crate) fn note(&self, node: &str, key: &str, reason: &str, permanent: bool) {
        let cause = (crate::run::report::unquoted(reason), permanent);
        let Ok(mut causes) = self.causes.lock() else { return };
        let now = Instant::now();
        match causes.get_mut(&cause) {
            None => {
                causes.insert(cause, Unsaid { count: 0, since: now });
                tracing::warn!(
                    node = %node,
                    key = %key.escape_debug(),
                    reason = %reason.escape_debug(),
                    "item {} (more for this cause are counted, a line every {} s)",
                    what(permanent),
                    EVERY.as_secs()
                );
            }
            Some(unsaid) => {
                unsaid.count += 1;
                if now.duration_since(unsaid.since) >= EVERY {
                    say(node, &cause, unsaid.count, now.duration_since(unsaid.since));
                    *unsaid = Unsaid { count: 0, since: now };
                }
            }
        }
    }

    /// Says the counts not said yet (at the end of the run).
    pub(crate) fn flush(&self, node: &str) {
        let Ok(mut causes) = self.causes.lock() else { return };
        let now = Instant::now();
        for (cause, unsaid) in causes.iter_mut().filter(|(_, u)| u.count > 0) {
            say(node, cause, unsaid.count, now.duration_since(unsaid.since));
            *unsaid = Unsaid { count: 0, since: now };
        }
    }
}

fn say(node: &str, (reason, permanent): &(String, bool), count: u64, over: Duration) {
    tracing::warn!(
        node = %node,
        reason = %reason.escape_debug(),
        "{count} more objects {} for this cause in the last {} s",
        what(*permanent),
        over.as_secs().max(1)
    );
}
