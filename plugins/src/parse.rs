//! The first half of every kind that parses content (`json_check`, `nats_message`): read
//! the item's bytes up to a limit, and parse them on a blocking thread (CPU work, kept off
//! the I/O threads), with a panic turned into a reason rather than a crash.

use bytes::Bytes;
use dqpipe_engine::api::{Item, ItemError};

/// `work`'s result on the item's bytes, or why they could not be parsed (the reason for
/// the kind's `failed` port). An item without bytes is an error of the pipeline's wiring.
pub(crate) async fn parse_body<T: Send + 'static>(
    item: &Item,
    kind: &str,
    max_bytes: u64,
    work: impl FnOnce(Bytes) -> Result<T, String> + Send + 'static,
) -> Result<Result<T, String>, ItemError> {
    let body = item
        .body
        .clone()
        .ok_or_else(|| ItemError::new(format!("the item has no bytes: {kind} needs a fetch upstream")))?;
    Ok(match body.to_bytes(max_bytes).await {
        Err(e) => Err(format!("not parsed: {e}")),
        Ok(bytes) => tokio::task::spawn_blocking(move || work(bytes))
            .await
            .unwrap_or_else(|_| Err(format!("internal error: the {kind} parser panicked"))),
    })
}

/// The default `max_bytes` of the kinds that parse: 64 MiB.
pub(crate) fn default_max_bytes() -> u64 {
    64 * 1024 * 1024
}
