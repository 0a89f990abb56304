//! Why content is not what a kind reads: not JSON, no message date, a jq program that
//! failed on it, XML that is not well-formed, an inventory manifest of another shape, a
//! scanner's reply of another form. Permanent: no rerun reads it otherwise, so kinds
//! route it with its reason (dead letter, `failed`). One type for every parser at its
//! boundary, so that a caller knows from the type, not from the text, that retrying
//! cannot help; inside a parser, plain messages (`String`) convert with `?`.

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

impl From<String> for Invalid {
    fn from(reason: String) -> Self {
        Invalid(reason)
    }
}

impl From<&str> for Invalid {
    fn from(reason: &str) -> Self {
        Invalid(reason.to_string())
    }
}

/// Where the reason becomes an item's `reason` field.
impl From<Invalid> for String {
    fn from(e: Invalid) -> String {
        e.0
    }
}
