//! Retries with exponential backoff and jitter (backon), bounded in attempts and in total
//! time. Callers say what is transient; nothing else is retried.
//!
//! Each node's policy also has a breaker: once `BREAKER_AFTER` operations in a row have
//! used up their retries on transient failures (clamd or a bucket down for good), later
//! ones are tried once, without retries, until one succeeds. A dead dependency then fails
//! the remaining items in moments rather than spending the whole retry budget on each; they
//! are reported unprocessed either way.

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use schemars::JsonSchema;
use serde::Deserialize;

/// How a node retries transient failures (timeouts, resets, 5xx, throttling).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    #[schemars(range(min = 1, max = 100))]
    pub attempts: usize,
    /// Delay before the first retry, doubled each time, with jitter.
    #[schemars(range(min = 0, max = 3600000))]
    pub initial_delay_ms: u64,
    /// The longest delay between two attempts.
    #[schemars(range(min = 0, max = 3600000))]
    pub max_delay_ms: u64,
    /// Give up after this long in all, whatever the attempts left.
    #[schemars(range(min = 1, max = 86400))]
    pub deadline_secs: u64,
    /// Operations in a row that used up their retries (shared by the node's tasks).
    #[serde(skip)]
    #[schemars(skip)]
    pub(crate) exhausted_in_a_row: Arc<AtomicU32>,
}

/// How long one preflight attempt may wait for an answer (connect and first byte). A
/// server that accepts connections and never answers is retried, within the policy's
/// `deadline_secs`, instead of holding the run for a whole request timeout per attempt.
pub const PREFLIGHT_ATTEMPT: Duration = Duration::from_secs(10);

/// After this many operations in a row failed for good, the breaker opens.
pub const BREAKER_AFTER: u32 = 8;

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 6,
            initial_delay_ms: 200,
            max_delay_ms: 5_000,
            deadline_secs: 120,
            exhausted_in_a_row: Arc::default(),
        }
    }
}

/// An operation that failed for good or ran out of retries: the message for the report,
/// and the last error, which says what kind of failure it was (`None` when the deadline
/// ended it).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct GaveUp<E> {
    pub message: String,
    pub last: Option<E>,
}

impl GaveUp<dqpipe_engine::api::store::StoreError> {
    /// A store failure as an item's: a key the store refuses, or will not let us read or
    /// write, is refused for good (exit 3); anything else may pass, and a rerun tries again
    /// (exit 4).
    pub fn into_item_error(self) -> dqpipe_engine::api::ItemError {
        use dqpipe_engine::api::store::StoreErrorKind::{AccessDenied, InvalidKey};
        match self.last.map(|e| e.kind) {
            Some(InvalidKey | AccessDenied) => dqpipe_engine::api::ItemError::refused(self.message),
            _ => dqpipe_engine::api::ItemError::new(self.message),
        }
    }
}

impl From<GaveUp<dqpipe_engine::api::store::StoreError>> for dqpipe_engine::api::store::StoreError {
    /// Given up: the message says what was tried; the kind is the last failure's.
    fn from(e: GaveUp<dqpipe_engine::api::store::StoreError>) -> Self {
        let kind = e.last.map(|l| l.kind).unwrap_or(dqpipe_engine::api::store::StoreErrorKind::Transient);
        dqpipe_engine::api::store::StoreError::new(kind, e.message)
    }
}

/// Callers that only report the failure use its message.
impl<E> From<GaveUp<E>> for String {
    fn from(e: GaveUp<E>) -> String {
        e.message
    }
}

impl RetryPolicy {
    /// The delays between attempts, for loops that retry by hand (a listing resumed after
    /// its last key): exponential with jitter, `attempts - 1` of them.
    pub fn delays(&self) -> impl Iterator<Item = Duration> {
        use backon::BackoffBuilder;
        self.backoff().build()
    }

    fn backoff(&self) -> ExponentialBuilder {
        self.backoff_with(self.attempts)
    }

    fn backoff_with(&self, attempts: usize) -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(self.initial_delay_ms))
            .with_max_delay(Duration::from_millis(self.max_delay_ms.max(self.initial_delay_ms)))
            .with_max_times(attempts.saturating_sub(1))
            .with_jitter()
    }

    /// As [`RetryPolicy::run`] for a preflight check: each attempt has
    /// [`PREFLIGHT_ATTEMPT`] to answer, and one that does not is retried.
    pub async fn preflight<T, E, F, Fut>(
        &self,
        mut op: F,
        transient: impl Fn(&E) -> bool,
        describe: impl Fn(&E) -> String,
    ) -> Result<T, dqpipe_engine::api::NodeError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let attempt = || {
            let f = op();
            async move { tokio::time::timeout(PREFLIGHT_ATTEMPT, f).await.map_err(|_| None)?.map_err(Some) }
        };
        self.run(
            attempt,
            |e: &Option<E>| e.as_ref().is_none_or(&transient),
            |e| match e {
                Some(e) => describe(e),
                None => format!("no answer within {} s", PREFLIGHT_ATTEMPT.as_secs()),
            },
            || {},
        )
        .await
        .map_err(|e| String::from(e).into())
    }

    /// Runs `op` until it succeeds, fails with a non-transient error, runs out of attempts
    /// or passes the deadline. `describe` turns the last error into the message returned;
    /// `on_retry` is called before each retry (the report counts them).
    pub async fn run<T, E, F, Fut>(
        &self,
        mut op: F,
        transient: impl Fn(&E) -> bool,
        describe: impl Fn(&E) -> String,
        on_retry: impl Fn(),
    ) -> Result<T, GaveUp<E>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let open = self.exhausted_in_a_row.load(Ordering::Relaxed) >= BREAKER_AFTER;
        let backoff = self.backoff_with(if open { 1 } else { self.attempts });
        let retries = std::sync::atomic::AtomicUsize::new(0);
        let attempt = (|| op()).retry(backoff).when(|e| transient(e)).notify(|_, _| {
            retries.fetch_add(1, Ordering::Relaxed);
            on_retry();
        });
        let result = tokio::time::timeout(Duration::from_secs(self.deadline_secs.max(1)), attempt).await;
        match result {
            Ok(Ok(value)) => {
                self.exhausted_in_a_row.store(0, Ordering::Relaxed);
                Ok(value)
            }
            Ok(Err(e)) => {
                if transient(&e) {
                    self.exhausted_in_a_row.fetch_add(1, Ordering::Relaxed);
                }
                let n = retries.load(Ordering::Relaxed);
                let message = if open && transient(&e) {
                    format!("{} (not retried: the last {BREAKER_AFTER} operations failed the same way)", describe(&e))
                } else if n > 0 {
                    format!("{} (after {} retries)", describe(&e), n)
                } else {
                    describe(&e)
                };
                Err(GaveUp { message, last: Some(e) })
            }
            Err(_) => {
                self.exhausted_in_a_row.fetch_add(1, Ordering::Relaxed);
                Err(GaveUp { message: format!("gave up after {} s of retries", self.deadline_secs), last: None })
            }
        }
    }
}

impl RetryPolicy {
    /// One store operation on `key` (`what`: "writing", "deleting") with these retries,
    /// each counted in the node's report; given up, its failure as the item's, permanent
    /// unless the store's error was transient.
    pub async fn on_store<T, Fut>(
        &self,
        store: &dyn dqpipe_engine::api::store::Store,
        what: &str,
        key: &str,
        cx: &dqpipe_engine::api::Context,
        op: impl FnMut() -> Fut,
    ) -> Result<T, dqpipe_engine::api::ItemError>
    where
        Fut: Future<Output = Result<T, dqpipe_engine::api::store::StoreError>>,
    {
        self.run(op, is_transient, |e| format!("{what} {key:?} in {}: {e}", store.display_url()), || cx.retried(1))
            .await
            .map_err(GaveUp::into_item_error)
    }

    /// One store operation with these retries, outside an item (done markers, a source's
    /// delete once its outputs are durable, an inventory's data files), so not counted in
    /// a node's report; given up, the last failure's kind with `describe`'s message.
    pub async fn store_op<T, Fut>(
        &self,
        describe: impl Fn(&dqpipe_engine::api::store::StoreError) -> String,
        op: impl FnMut() -> Fut,
    ) -> Result<T, dqpipe_engine::api::store::StoreError>
    where
        Fut: Future<Output = Result<T, dqpipe_engine::api::store::StoreError>>,
    {
        Ok(self.run(op, is_transient, describe, || {}).await?)
    }
}

/// A store failure worth retrying: timeouts, resets, 5xx, throttling.
fn is_transient(e: &dqpipe_engine::api::store::StoreError) -> bool {
    e.kind == dqpipe_engine::api::store::StoreErrorKind::Transient
}

/// A store's listing that survives transient failures: after one, it lists again from
/// the last key it gave, after the policy's next delay. A run of failures ends it with the
/// last error once the attempts are used up or `deadline_secs` has passed since the run of
/// failures began; a success starts afresh. Any other error ends it at once.
pub fn resumable_listing<'a>(
    store: &'a dyn dqpipe_engine::api::store::Store,
    prefix: &'a str,
    start_after: Option<String>,
    policy: &'a RetryPolicy,
    on_retry: impl Fn() + Send + Sync + 'a,
) -> futures::stream::BoxStream<'a, Result<dqpipe_engine::api::store::ObjectInfo, dqpipe_engine::api::store::StoreError>>
{
    use dqpipe_engine::api::store::StoreErrorKind;
    use futures::StreamExt;
    struct Walk<'a> {
        listing: Option<
            futures::stream::BoxStream<
                'a,
                Result<dqpipe_engine::api::store::ObjectInfo, dqpipe_engine::api::store::StoreError>,
            >,
        >,
        after: Option<String>,
        /// The delays left in the current run of failures, and when it began.
        failing: Option<(Box<dyn Iterator<Item = Duration> + Send + 'a>, tokio::time::Instant)>,
        over: bool,
    }
    let start = Walk { listing: None, after: start_after, failing: None, over: false };
    let deadline = Duration::from_secs(policy.deadline_secs.max(1));
    let on_retry = Arc::new(on_retry);
    futures::stream::unfold(start, move |mut w| {
        let on_retry = on_retry.clone();
        async move {
            loop {
                if w.over {
                    return None;
                }
                let listing = w.listing.get_or_insert_with(|| store.list(prefix, w.after.clone()));
                match listing.next().await {
                    None => return None,
                    Some(Ok(o)) => {
                        w.after = Some(o.key.clone());
                        w.failing = None;
                        return Some((Ok(o), w));
                    }
                    Some(Err(e)) if e.kind == StoreErrorKind::Transient => {
                        let (delays, since) = w
                            .failing
                            .get_or_insert_with(|| (Box::new(policy.delays()), tokio::time::Instant::now()));
                        match delays.next().filter(|_| since.elapsed() < deadline) {
                            Some(d) => {
                                tracing::warn!(store = %store.display_url(), error = %e, "listing failed; retrying after the last key seen");
                                on_retry();
                                w.listing = None;
                                tokio::time::sleep(d).await;
                            }
                            None => {
                                w.over = true;
                                return Some((Err(e), w));
                            }
                        }
                    }
                    Some(Err(e)) => {
                        w.over = true;
                        return Some((Err(e), w));
                    }
                }
            }
        }
    })
    .boxed()
}
