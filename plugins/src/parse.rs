//! The first half of every kind that parses content (`json_check`, `nats_message`): read
//! the item's bytes up to a limit, and parse them on a blocking thread (CPU work, kept off
//! the I/O threads), with a panic turned into a reason rather than a crash.

use async_trait::async_trait;
use bytes::Bytes;
use dqpipe_engine::api::{Context, Emitter, Item, ItemError, Problem, Processor};

use crate::invalid::Invalid;

pub(crate) use crate::map::budget::{default_memory_limit, run_bounded, Limits};

/// `work`'s result on the item's bytes, or why they could not be parsed (the reason for
/// the kind's `failed` port). An item without bytes is an error of the pipeline's wiring.
pub(crate) async fn parse_body<T: Send + 'static, E: Into<Invalid> + Send + 'static>(
    item: &Item,
    kind: &str,
    max_bytes: u64,
    work: impl FnOnce(Bytes) -> Result<T, E> + Send + 'static,
) -> Result<Result<T, Invalid>, ItemError> {
    Ok(match read_body(item, kind, max_bytes).await? {
        Err(e) => Err(Invalid(e)),
        Ok(bytes) => tokio::task::spawn_blocking(move || work(bytes).map_err(Into::into))
            .await
            .unwrap_or_else(|_| Err(Invalid(format!("internal error: the {kind} parser panicked")))),
    })
}

/// The item's bytes, at most `max_bytes`, or why not (the reason for `failed`); no bytes
/// at all is an error of the pipeline's wiring.
async fn read_body(item: &Item, kind: &str, max_bytes: u64) -> Result<Result<Bytes, String>, ItemError> {
    let body = item
        .body
        .clone()
        .ok_or_else(|| ItemError::new(format!("the item has no bytes: {kind} needs a fetch upstream")))?;
    Ok(body.to_bytes(max_bytes).await.map_err(|e| format!("not parsed: {e}")))
}

/// As [`parse_body`], within `limits` of time and memory: a jq program that never ends
/// (`def f: f; f`, `last(range(infinite))`) or builds without end (`[range(1e9)]`) fails
/// its item for good with the reason, and the run goes on (see [`crate::map::budget`]).
pub(crate) async fn parse_body_within<T: Send + 'static, E: Into<Invalid> + Send + 'static>(
    item: &Item,
    kind: &str,
    max_bytes: u64,
    limits: Limits,
    work: impl FnOnce(Bytes) -> Result<T, E> + Send + 'static,
) -> Result<Result<T, Invalid>, ItemError> {
    Ok(match read_body(item, kind, max_bytes).await? {
        Err(e) => Err(Invalid(e)),
        Ok(bytes) => run_bounded(limits, move || work(bytes)).await,
    })
}

/// The default `time_limit_secs` of the kinds that run jq programs: 10 s, a thousand times
/// what a program takes on a document of a few MB, short enough that a runaway program
/// costs a night's run seconds per item.
pub(crate) fn default_time_limit() -> u64 {
    10
}

/// The default `max_bytes` of the kinds that parse: 64 MiB.
pub(crate) fn default_max_bytes() -> u64 {
    64 * 1024 * 1024
}

/// The running part of a kind that checks a format and passes bodies on unchanged
/// (`json_check`, `xml_check`): `ok` when `check` accepts the bytes, else `failed` with
/// its reason.
pub(crate) struct Check {
    pub kind: &'static str,
    pub max_bytes: u64,
    pub check: fn(&[u8]) -> Result<(), crate::invalid::Invalid>,
}

#[async_trait]
impl Processor for Check {
    async fn process(&self, mut item: Item, out: &Emitter, _cx: &Context) -> Result<(), ItemError> {
        let check = self.check;
        match parse_body(&item, self.kind, self.max_bytes, move |bytes| check(&bytes)).await? {
            Ok(()) => out.emit("ok", item).await,
            Err(reason) => {
                item.set_problem(Problem::Unparseable { reason: reason.0 });
                out.emit("failed", item).await
            }
        }
        .map_err(ItemError::from)
    }

    /// Checks in `--deep` plans (the bytes were read); otherwise assumes well-formed.
    async fn preview(&self, item: Item, out: &Emitter, cx: &Context, deep: bool) -> Result<(), ItemError> {
        if deep && item.body.is_some() {
            return self.process(item, out, cx).await;
        }
        out.emit("ok", item).await.map_err(ItemError::from)
    }
}
