//! S3 failures as operators read them: the kind the nodes retry on, and a message that
//! names the bucket, the endpoint and what to check.

use dqpipe_engine::api::store::{StoreError, StoreErrorKind};

use super::S3Store;

/// What went wrong with a request, before it becomes a message.
pub(super) struct Fault {
    pub(super) status: Option<u16>,
    pub(super) code: Option<String>,
    pub(super) unreachable: Option<String>,
    pub(super) text: String,
}

impl S3Store {
    /// A store error with the kind the nodes need and a message an operator can act on.
    pub(super) fn error(&self, what: &str, e: object_store::Error) -> StoreError {
        let (status, code, connect) = inspect(&e);
        let fault = Fault {
            status: status.or(match e {
                object_store::Error::NotFound { .. } => Some(404),
                object_store::Error::PermissionDenied { .. } => Some(403),
                object_store::Error::Unauthenticated { .. } => Some(401),
                _ => None,
            }),
            code,
            unreachable: connect.then(|| root_cause(&e)),
            text: e.to_string(),
        };
        self.describe(what, fault)
    }

    pub(super) fn describe(&self, what: &str, f: Fault) -> StoreError {
        let place = format!("s3://{}/{}", self.bucket, self.root);
        let lead = if what.is_empty() { String::new() } else { format!("{what}: ") };
        let code = f.code.clone();
        let (kind, message) = match code.as_deref() {
            Some("NoSuchBucket") => (
                StoreErrorKind::NotFound,
                format!("{lead}bucket `{}` does not exist at {}", self.bucket, self.endpoint),
            ),
            Some(c @ ("InvalidAccessKeyId" | "NotSignedUp")) => (
                StoreErrorKind::AccessDenied,
                format!("{lead}the server does not know this store's access key id ({c}); check the credentials of {place}"),
            ),
            Some("SignatureDoesNotMatch") => (
                StoreErrorKind::AccessDenied,
                format!("{lead}the secret access key does not match the access key id (SignatureDoesNotMatch); check the credentials of {place}"),
            ),
            _ if f.status == Some(404) => (StoreErrorKind::NotFound, format!("{lead}not found")),
            _ if matches!(f.status, Some(401 | 403)) => (
                StoreErrorKind::AccessDenied,
                format!(
                    "{lead}access denied ({}); check the credentials and policy of {place}",
                    code.unwrap_or_else(|| format!("HTTP {}", f.status.unwrap_or(403)))
                ),
            ),
            _ if f.unreachable.is_some() => (
                StoreErrorKind::Transient,
                format!("{lead}cannot reach {}: {}", self.endpoint, f.unreachable.unwrap_or_default()),
            ),
            _ if f.status.is_some_and(|s| s >= 500 || s == 429) => (
                StoreErrorKind::Transient,
                format!("{lead}server error {}{}", f.status.unwrap_or(0), code.map(|c| format!(" ({c})")).unwrap_or_default()),
            ),
            _ => (StoreErrorKind::Other, format!("{lead}{}", f.text)),
        };
        StoreError::new(kind, message)
    }
}

/// The HTTP status, the S3 error code of the response body (`<Code>NoSuchBucket</Code>`)
/// and whether the server could not be reached at all.
///
/// object_store keeps its `RetryError` (which has the status) crate-private, so status and
/// code are read from the error's text, which carries both ("non-2xx status code: 503 ...:
/// <body>"). Connection failures are its public `HttpError`, found among the causes.
fn inspect(e: &object_store::Error) -> (Option<u16>, Option<String>, bool) {
    let mut text = String::new();
    let mut connect = false;
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        text.push_str(&c.to_string());
        text.push('\n');
        if let Some(h) = c.downcast_ref::<object_store::client::HttpError>() {
            use object_store::client::HttpErrorKind as K;
            connect |= matches!(h.kind(), K::Connect | K::Request | K::Timeout | K::Interrupted);
        }
        cause = c.source();
    }
    let status = text.find("status code: ").and_then(|i| text.get(i + 13..i + 16)).and_then(|s| s.parse().ok());
    let code = text.find("<Code>").and_then(|i| {
        let rest = &text[i + 6..];
        rest.find("</Code>").map(|end| rest[..end].to_string())
    });
    (status, code, connect)
}

pub(super) fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut last = e;
    while let Some(next) = last.source() {
        last = next;
    }
    last.to_string()
}
