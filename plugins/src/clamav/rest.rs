//! The ClamAV REST front end the original job used.

use std::sync::Arc;

use dqpipe_engine::api::body::Body;
use futures::StreamExt;

use super::protocol::{Unreachable, Verdict};

/// The original's REST front end: `POST` multipart `name` and `file`; the body says
/// `Everything ok : true` or `Everything ok : false`.
pub(super) async fn scan_rest(
    client: &reqwest::Client,
    url: &str,
    name: &str,
    body: &Body,
) -> Result<Verdict, Unreachable> {
    let bytes = body.to_bytes(u64::MAX).await.map_err(|e| Unreachable(e.to_string()))?;
    // The file goes as a stream that notes when the HTTP client has taken its last byte:
    // an answer given before that is about a file the scanner did not receive whole.
    let taken = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let len = bytes.len() as u64;
    let chunks: Vec<bytes::Bytes> =
        (0..bytes.len()).step_by(64 * 1024).map(|i| bytes.slice(i..(i + 64 * 1024).min(bytes.len()))).collect();
    let t = taken.clone();
    let end = futures::stream::once(async move {
        t.store(true, std::sync::atomic::Ordering::SeqCst);
        None
    })
    .filter_map(|x: Option<bytes::Bytes>| async move { x.map(Ok) });
    let stream = futures::stream::iter(chunks.into_iter().map(Ok::<_, std::io::Error>)).chain(end);
    let file = reqwest::multipart::Part::stream_with_length(reqwest::Body::wrap_stream(stream), len)
        .file_name(name.to_string());
    let form = reqwest::multipart::Form::new().text("name", name.to_string()).part("file", file);
    let resp = client
        .post(url)
        .multipart(form)
        .send()
        .await
        .map_err(|e| Unreachable(format!("scanner request failed: {}", e.without_url())))?;
    // Whether the file was all sent when the answer's head arrived (not later, once the
    // answer was read: by then the rest may have gone to a scanner that no longer looked).
    // HTTP gives no proof that the scanner read the whole file: hyper finishes sending a
    // body before it reads an early answer whenever the peer keeps reading. clamd's own
    // protocol has that proof (see `scan_instream`), and is the one to prefer.
    let sent_before_answer = taken.load(std::sync::atomic::Ordering::SeqCst);
    let status = resp.status();
    if status.is_server_error() || status.as_u16() == 429 {
        return Err(Unreachable(format!("scanner answered HTTP {status}")));
    }
    let text =
        resp.text().await.map_err(|e| Unreachable(format!("reading the scanner's answer: {}", e.without_url())))?;
    let normalized: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    Ok(if !status.is_success() {
        Verdict::Error {
            reason: format!("scanner answered HTTP {status}: {}", normalized.chars().take(200).collect::<String>()),
        }
    } else if normalized.contains("Everything ok : true") {
        if !sent_before_answer {
            return Err(Unreachable("the scanner answered before the whole file was sent: not a verdict on it".into()));
        }
        Verdict::Clean
    } else if normalized.contains("Everything ok : false") {
        Verdict::Infected { signature: "reported by the REST scanner".into() }
    } else {
        Verdict::Error {
            reason: format!("unexpected scanner answer: {}", normalized.chars().take(200).collect::<String>()),
        }
    })
}
