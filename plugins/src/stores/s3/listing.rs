//! Listing, page by page, with keys exactly as stored (see `S3Store::list_page`).

use dqpipe_engine::api::store::{ObjectInfo, StoreError, StoreErrorKind};
use serde::Deserialize;

use super::errors::{root_cause, Fault};
use super::S3Store;

pub(super) struct ListPage {
    pub(super) objects: Vec<ObjectInfo>,
    /// The continuation token (`None`: the last page), or why the listing cannot go on.
    pub(super) next: Result<Option<String>, StoreError>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListBucketResult {
    #[serde(default)]
    contents: Vec<ListContents>,
    #[serde(default)]
    is_truncated: bool,
    next_continuation_token: Option<String>,
    encoding_type: Option<String>,
    /// How many keys the page holds (no delimiter is sent, so no common prefixes).
    key_count: Option<usize>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListContents {
    key: String,
    size: u64,
    e_tag: Option<String>,
    last_modified: Option<String>,
}

/// Query values: everything but unreserved characters is percent-encoded (SigV4's rule).
pub(super) const QUERY: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

fn xml_tag(body: &str, tag: &str) -> Option<String> {
    let start = body.find(&format!("<{tag}>"))? + tag.len() + 2;
    let end = body[start..].find(&format!("</{tag}>"))? + start;
    Some(body[start..end].to_string())
}

impl S3Store {
    /// One ListObjectsV2 page, signed with object_store's credentials and signer.
    ///
    /// Listing is done here rather than by object_store's `list`, which turns every key into
    /// its `Path` and fails the whole listing on a key it cannot represent (a control
    /// character, an empty or `..` segment). Here keys come back exactly as stored, and a
    /// hostile key fails only its own item, where a store refuses it.
    ///
    /// Keys are asked for unencoded, as object_store does: s3s-fs answers
    /// `encoding-type=url` without encoding, which would corrupt keys holding `%`. A key
    /// that XML 1.0 cannot carry (control characters below 0x20 other than tab and newline)
    /// makes its page unreadable; the error says so.
    pub(super) async fn list_page(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        token: Option<&str>,
    ) -> Result<ListPage, StoreError> {
        let what = "listing";
        let credential = self.client.credentials().get_credential().await.map_err(|e| self.error(what, e))?;
        let enc = |v: &str| percent_encoding::utf8_percent_encode(v, QUERY).to_string();
        let mut url = format!("{}?list-type=2&prefix={}", self.bucket_url, enc(&format!("{}{prefix}", self.root)));
        if let Some(t) = token {
            url.push_str(&format!("&continuation-token={}", enc(t)));
        } else if let Some(a) = start_after {
            url.push_str(&format!("&start-after={}", enc(&format!("{}{a}", self.root))));
        }
        let mut req: object_store::client::HttpRequest = http::Request::builder()
            .method("GET")
            .uri(&url)
            .body(object_store::client::HttpRequestBody::empty())
            .map_err(|e| StoreError::new(StoreErrorKind::Other, format!("{what}: {e}")))?;
        object_store::aws::AwsAuthorizer::new(&credential, "s3", &self.region)
            .try_authorize(&mut req, None)
            .map_err(|e| StoreError::new(StoreErrorKind::Other, format!("{what}: signing: {e}")))?;
        let (parts, _) = req.into_parts();
        let req = http::Request::from_parts(parts, reqwest::Body::from(Vec::<u8>::new()));
        let req = reqwest::Request::try_from(req)
            .map_err(|e| StoreError::new(StoreErrorKind::Other, format!("{what}: {e}")))?;
        let unreachable = |e: reqwest::Error| {
            self.describe(
                what,
                Fault { status: None, code: None, unreachable: Some(root_cause(&e)), text: e.to_string() },
            )
        };
        let resp = self.http.execute(req).await.map_err(unreachable)?;
        let status = resp.status().as_u16();
        let body = resp.text().await.map_err(unreachable)?;
        if status >= 300 {
            let code = xml_tag(&body, "Code");
            return Err(self.describe(
                what,
                Fault { status: Some(status), code, unreachable: None, text: format!("HTTP {status}") },
            ));
        }
        self.parse_page(what, body)
    }

    /// A ListObjectsV2 answer: its objects (keys relative to the store's root) and how the
    /// listing goes on.
    pub(super) fn parse_page(&self, what: &str, body: String) -> Result<ListPage, StoreError> {
        // XML parsers turn a raw CR into LF (XML 1.0, end-of-line handling); a character
        // reference keeps it, so a key holding CR is listed as it is.
        let body = if body.contains('\r') { body.replace('\r', "&#13;") } else { body };
        let page: ListBucketResult = quick_xml::de::from_str(&body).map_err(|e| {
            StoreError::new(StoreErrorKind::Transient, format!("{what}: the server's answer is not a listing: {e}"))
        })?;
        // A page cut short on the way can still be a well-formed document: fewer
        // `<Contents>` than its `KeyCount` say so. Its objects, then a transient error, so
        // that the listing is retried after the last key it holds.
        let cut = page.key_count.filter(|n| *n != page.contents.len()).map(|n| {
            StoreError::new(
                StoreErrorKind::Transient,
                format!(
                    "{what}: the page holds {} objects of the {n} its KeyCount gives (cut short)",
                    page.contents.len()
                ),
            )
        });
        let url_encoded = page.encoding_type.as_deref() == Some("url");
        let decode = |k: String| -> String {
            if url_encoded {
                percent_encoding::percent_decode_str(&k).decode_utf8_lossy().into_owned()
            } else {
                k
            }
        };
        let objects = page
            .contents
            .into_iter()
            .map(|c| {
                let full = decode(c.key);
                ObjectInfo {
                    key: full.strip_prefix(&self.root).unwrap_or(&full).to_string(),
                    size: c.size,
                    etag: c.e_tag,
                    last_modified: c.last_modified,
                }
            })
            .collect();
        if let Some(e) = cut {
            return Ok(ListPage { objects, next: Err(e) });
        }
        let next = match (page.is_truncated, page.next_continuation_token.filter(|t| !t.is_empty())) {
            (false, _) => None,
            (true, Some(t)) => Some(t),
            // Not the end of the listing: this page's objects, then an error, so that the
            // listing is retried after the last key seen.
            (true, None) => {
                return Ok(ListPage {
                    objects,
                    next: Err(StoreError::new(
                        StoreErrorKind::Transient,
                        format!("{what}: the server marked a page truncated but gave no continuation token"),
                    )),
                })
            }
        };
        Ok(ListPage { objects, next: Ok(next) })
    }
}
