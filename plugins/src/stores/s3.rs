//! `s3://bucket/prefix` stores, through object_store's S3 client.
//!
//! One code path per operation: list (ListObjectsV2, page by page), get (streamed into a
//! body that spools to disk past the threshold), put (one PUT, or a multipart upload above
//! `multipart_threshold_bytes`), head (HEAD, with the object's user metadata).
//!
//! object_store retries nothing here (`max_retries: 0`): the nodes retry transient errors
//! with their own policy, so that each retry is counted in the run report, and so that a
//! request is never retried twice over.

use std::borrow::Cow;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use dqpipe_engine::api::ConfigError;
use dqpipe_engine::body::{Body, Spool};
use dqpipe_engine::store::{ObjectInfo, Origin, PutOptions, Store, StoreError, StoreErrorKind};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path;
use object_store::{
    Attribute, Attributes, ClientOptions, GetOptions, ObjectStore, PutMultipartOptions, PutPayload, RetryConfig,
    WriteMultipart,
};
use schemars::JsonSchema;
use serde::Deserialize;
use tokio::io::AsyncReadExt;

use super::non_empty;

/// Settings of an `s3://` store, under `s3:` in the store's entry. Empty strings count as
/// unset, so that `${VAR:-}` can leave a setting to its default.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct S3Options {
    /// AWS region. Default: `AWS_REGION`, then `AWS_DEFAULT_REGION`, then `us-east-1`.
    pub region: Option<String>,
    /// Endpoint of an S3-compatible server (`http://127.0.0.1:9000`). Default: AWS.
    pub endpoint: Option<String>,
    /// Path-style requests (`endpoint/bucket/key`). Default: true when `endpoint` is set.
    pub path_style: Option<bool>,
    /// Access key id for this store. When unset, the default AWS chain is used:
    /// `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, web identity (IRSA), container
    /// credentials (EKS Pod Identity, ECS), then instance metadata.
    pub access_key_id: Option<String>,
    /// Secret access key matching `access_key_id`.
    pub secret_access_key: Option<String>,
    /// Session token, for temporary credentials.
    pub session_token: Option<String>,
    /// Server-side encryption of written objects: `AES256` or `aws:kms`.
    pub sse: Option<String>,
    /// KMS key id or ARN, with `sse: aws:kms`. Default: the bucket's AWS-managed key.
    pub sse_kms_key_id: Option<String>,
    /// Objects larger than this are written with a multipart upload. Default 16 MiB.
    #[schemars(range(min = 0, max = 5497558138880u64))]
    pub multipart_threshold_bytes: Option<u64>,
    /// Part size of multipart uploads, at least 5 MiB. Default 8 MiB.
    #[schemars(range(min = 5242880, max = 5368709120u64))]
    pub multipart_part_bytes: Option<u64>,
    /// PEM file of extra CA certificates to trust. Default: `AWS_CA_BUNDLE` when set.
    pub ca_bundle: Option<String>,
    /// Time limit of one request. Default 60 s.
    #[schemars(range(min = 1, max = 86400))]
    pub request_timeout_secs: Option<u64>,
}

const MIB: u64 = 1024 * 1024;

#[derive(Debug)]
pub struct S3Store {
    url: String,
    bucket: String,
    /// Key prefix of the store's root, `""` or ending in `/`.
    root: String,
    endpoint: String,
    /// `endpoint/bucket` (path style) or `bucket.host` (virtual-hosted style).
    bucket_url: String,
    region: String,
    client: AmazonS3,
    /// For listings (see `list_page`).
    http: reqwest::Client,
    multipart_threshold: u64,
    part_size: usize,
}

/// What went wrong with a request, before it becomes a message.
struct Fault {
    status: Option<u16>,
    code: Option<String>,
    unreachable: Option<String>,
    text: String,
}

struct ListPage {
    objects: Vec<ObjectInfo>,
    /// The continuation token (`None`: the last page), or why the listing cannot go on.
    next: Result<Option<String>, StoreError>,
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
/// The user metadata (`x-amz-meta-...`) that holds a written object's [`Origin`].
const META_SOURCE_KEY: &str = "dqpipe-source-key";
const META_RUN: &str = "dqpipe-run";

const QUERY: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

fn xml_tag(body: &str, tag: &str) -> Option<String> {
    let start = body.find(&format!("<{tag}>"))? + tag.len() + 2;
    let end = body[start..].find(&format!("</{tag}>"))? + start;
    Some(body[start..end].to_string())
}

impl S3Store {
    pub fn open(url: &str, opts: S3Options) -> Result<Self, ConfigError> {
        let rest = url.strip_prefix("s3://").unwrap_or(url);
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if !(3..=63).contains(&bucket.len()) || !bucket.chars().all(|c| c.is_ascii_alphanumeric() || ".-_".contains(c))
        {
            return Err(ConfigError::at(
                "url",
                format!(
                    "`{url}`: write `s3://bucket` or `s3://bucket/prefix` (bucket names are letters, digits, `.`, `-`)"
                ),
            ));
        }
        let prefix = prefix.trim_matches('/');
        let root = if prefix.is_empty() { String::new() } else { format!("{prefix}/") };

        let mut builder = match (non_empty(&opts.access_key_id), non_empty(&opts.secret_access_key)) {
            (Some(id), Some(secret)) => {
                let mut b = AmazonS3Builder::new().with_access_key_id(id).with_secret_access_key(secret);
                if let Some(token) = non_empty(&opts.session_token) {
                    b = b.with_token(token);
                }
                b
            }
            (None, None) => AmazonS3Builder::from_env(),
            (Some(_), None) => {
                return Err(ConfigError::at(
                    "s3.secret_access_key",
                    "`access_key_id` is set but `secret_access_key` is not",
                ))
            }
            (None, Some(_)) => {
                return Err(ConfigError::at(
                    "s3.access_key_id",
                    "`secret_access_key` is set but `access_key_id` is not",
                ))
            }
        };
        let region = non_empty(&opts.region)
            .map(String::from)
            .or_else(|| env_set("AWS_REGION"))
            .or_else(|| env_set("AWS_DEFAULT_REGION"))
            .unwrap_or_else(|| "us-east-1".to_string());
        builder = builder.with_bucket_name(bucket).with_region(&region);
        let path_style = opts.path_style.unwrap_or(non_empty(&opts.endpoint).is_some());
        let endpoint = match non_empty(&opts.endpoint) {
            Some(e) => {
                if !(e.starts_with("http://") || e.starts_with("https://")) {
                    return Err(ConfigError::at(
                        "s3.endpoint",
                        format!("`{e}` is not an http(s):// URL; write for example `http://127.0.0.1:9000`"),
                    ));
                }
                builder = builder.with_endpoint(e.trim_end_matches('/'));
                e.trim_end_matches('/').to_string()
            }
            None => format!("https://s3.{region}.amazonaws.com"),
        };
        builder = builder.with_virtual_hosted_style_request(!path_style);
        let bucket_url = if path_style {
            format!("{endpoint}/{bucket}")
        } else {
            let (scheme, host) = endpoint.split_once("://").unwrap_or(("https", &endpoint));
            format!("{scheme}://{bucket}.{host}")
        };
        // The encryption key type is not exported by object_store; its documented name is.
        let sse_key = "aws_server_side_encryption"
            .parse::<AmazonS3ConfigKey>()
            .map_err(|e| ConfigError::at("s3.sse", format!("object_store: {e}")))?;
        match non_empty(&opts.sse) {
            None => {}
            Some("AES256") => builder = builder.with_config(sse_key, "AES256"),
            Some("aws:kms") => {
                builder = builder.with_config(sse_key, "aws:kms");
                if let Some(key) = non_empty(&opts.sse_kms_key_id) {
                    builder = builder.with_sse_kms_encryption(key);
                }
            }
            Some(other) => {
                return Err(ConfigError::at(
                    "s3.sse",
                    format!("`{other}`: server-side encryption is `AES256` or `aws:kms`"),
                ))
            }
        }
        if non_empty(&opts.sse_kms_key_id).is_some() && non_empty(&opts.sse) != Some("aws:kms") {
            return Err(ConfigError::at("s3.sse_kms_key_id", "a KMS key id needs `sse: aws:kms`"));
        }

        // Client options replace the builder's whole set: allow_http goes here, not there.
        let timeout = Duration::from_secs(opts.request_timeout_secs.unwrap_or(60).max(1));
        let mut client = ClientOptions::new()
            .with_allow_http(endpoint.starts_with("http://"))
            .with_timeout(timeout)
            .with_connect_timeout(Duration::from_secs(10))
            .with_pool_max_idle_per_host(256);
        let mut http = reqwest::Client::builder().timeout(timeout).connect_timeout(Duration::from_secs(10));
        let (ca_path, ca_field) = match non_empty(&opts.ca_bundle) {
            Some(p) => (Some(p.to_string()), "s3.ca_bundle"),
            None => (env_set("AWS_CA_BUNDLE"), "s3.ca_bundle (from AWS_CA_BUNDLE)"),
        };
        if let Some(path) = ca_path {
            let pem = std::fs::read(&path)
                .map_err(|e| ConfigError::at(ca_field, format!("cannot read CA bundle `{path}`: {e}")))?;
            let bad = |e: String| ConfigError::at(ca_field, format!("CA bundle `{path}` is not PEM certificates: {e}"));
            for c in object_store::Certificate::from_pem_bundle(&pem).map_err(|e| bad(e.to_string()))? {
                client = client.with_root_certificate(c);
            }
            for c in reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| bad(e.to_string()))? {
                http = http.add_root_certificate(c);
            }
        }
        let http = http
            .build()
            .map_err(|e| ConfigError::at("url", format!("cannot set up the HTTP client for `{url}`: {e}")))?;
        let retry = RetryConfig { max_retries: 0, ..RetryConfig::default() };
        let client = builder
            .with_client_options(client)
            .with_retry(retry)
            .build()
            .map_err(|e| ConfigError::at("url", format!("cannot set up the S3 client for `{url}`: {e}")))?;

        let part = opts.multipart_part_bytes.unwrap_or(8 * MIB);
        if part < 5 * MIB {
            return Err(ConfigError::at("s3.multipart_part_bytes", "S3 parts are at least 5 MiB (5242880 bytes)"));
        }
        Ok(Self {
            url: url.to_string(),
            bucket: bucket.to_string(),
            root,
            endpoint,
            bucket_url,
            region,
            client,
            http,
            multipart_threshold: opts.multipart_threshold_bytes.unwrap_or(16 * MIB),
            part_size: part as usize,
        })
    }

    fn path(&self, key: &str) -> Result<Path, StoreError> {
        if key.is_empty() {
            return Err(StoreError::new(StoreErrorKind::InvalidKey, "an empty key"));
        }
        if key.len() > 1024 {
            return Err(StoreError::new(StoreErrorKind::InvalidKey, format!("key {key:?} is over S3's 1024 bytes")));
        }
        // Path::parse keeps the key as it is (no percent-encoding of its own) and refuses
        // empty, `.` and `..` segments and control characters; but it drops a leading or
        // trailing `/`, so `/a.json` would address `a.json`, another object. A key the
        // client cannot address exactly is refused, never read or written as another one.
        let full = format!("{}{key}", self.root);
        let path =
            Path::parse(&full).map_err(|e| StoreError::new(StoreErrorKind::InvalidKey, format!("key {key:?}: {e}")))?;
        if path.as_ref() != full {
            return Err(StoreError::new(
                StoreErrorKind::InvalidKey,
                format!(
                    "key {key:?} cannot be addressed exactly through the S3 client (a leading or trailing `/`, \
                     or an empty, `.` or `..` segment): it would reach {:?} instead",
                    path.as_ref()
                ),
            ));
        }
        Ok(path)
    }

    fn info(&self, meta: object_store::ObjectMeta) -> ObjectInfo {
        let full = meta.location.as_ref();
        ObjectInfo {
            key: full.strip_prefix(&self.root).unwrap_or(full).to_string(),
            size: meta.size,
            etag: meta.e_tag,
            last_modified: Some(meta.last_modified.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        }
    }

    /// A store error with the kind the nodes need and a message an operator can act on.
    fn error(&self, what: &str, e: object_store::Error) -> StoreError {
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

    fn describe(&self, what: &str, f: Fault) -> StoreError {
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
    async fn list_page(
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
        object_store::aws::AwsAuthorizer::new(&credential, "s3", &self.region).authorize(&mut req, None);
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
    fn parse_page(&self, what: &str, body: String) -> Result<ListPage, StoreError> {
        // XML parsers turn a raw CR into LF (XML 1.0, end-of-line handling); a character
        // reference keeps it, so a key holding CR is listed as it is.
        let body = if body.contains('\r') { body.replace('\r', "&#13;") } else { body };
        let page: ListBucketResult = quick_xml::de::from_str(&body).map_err(|e| {
            StoreError::new(StoreErrorKind::Transient, format!("{what}: the server's answer is not a listing: {e}"))
        })?;
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

    async fn put_multipart(&self, path: &Path, body: &Body, attributes: Attributes) -> object_store::Result<()> {
        let opts = PutMultipartOptions { attributes, ..Default::default() };
        let upload = self.client.put_multipart_opts(path, opts).await?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, self.part_size);
        let result: object_store::Result<()> = async {
            let mut reader = body.reader().await.map_err(generic)?;
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                // At most 4 parts in flight: memory stays near 4 x part size.
                writer.wait_for_capacity(4).await?;
                let n = reader.read(&mut buf).await.map_err(generic)?;
                if n == 0 {
                    return Ok(());
                }
                writer.write(&buf[..n]);
            }
        }
        .await;
        match result {
            Ok(()) => writer.finish().await.map(|_| ()),
            Err(e) => {
                let _ = writer.abort().await;
                Err(e)
            }
        }
    }
}

fn generic(e: std::io::Error) -> object_store::Error {
    object_store::Error::Generic { store: "S3", source: Box::new(e) }
}

fn env_set(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
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

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut last = e;
    while let Some(next) = last.source() {
        last = next;
    }
    last.to_string()
}

#[async_trait]
impl Store for S3Store {
    fn display_url(&self) -> String {
        self.url.clone()
    }

    fn list<'a>(
        &'a self,
        prefix: &'a str,
        start_after: Option<String>,
    ) -> BoxStream<'a, Result<ObjectInfo, StoreError>> {
        // Page by page: the next page is asked for when this one is used up.
        struct State {
            token: Option<String>,
            first: bool,
            start_after: Option<String>,
            /// A page that could not be followed: its error comes after its objects.
            broken: Option<StoreError>,
        }
        let state = State { token: None, first: true, start_after, broken: None };
        futures::stream::try_unfold(state, move |mut st| async move {
            if let Some(e) = st.broken.take() {
                return Err(e);
            }
            if !st.first && st.token.is_none() {
                return Ok(None);
            }
            let page = self.list_page(prefix, st.start_after.as_deref(), st.token.as_deref()).await?;
            st.first = false;
            match page.next {
                Ok(token) => st.token = token,
                Err(e) => st.broken = Some(e),
            }
            Ok(Some((futures::stream::iter(page.objects.into_iter().map(Ok)), st)))
        })
        .try_flatten()
        .boxed()
    }

    async fn get(&self, key: &str, spool: &Spool) -> Result<Body, StoreError> {
        let path = self.path(key)?;
        let what = format!("reading {key:?}");
        let got = self.client.get_opts(&path, GetOptions::default()).await.map_err(|e| self.error(&what, e))?;
        let size = got.meta.size;
        let stream = got.into_stream();
        Body::from_stream(stream, Some(size), spool).await.map_err(|e| match e {
            dqpipe_engine::body::BodyError::Source(e) => self.error(&what, e),
            spool_error => StoreError::new(StoreErrorKind::Other, format!("{what}: {spool_error}")),
        })
    }

    async fn put(&self, key: &str, body: &Body, options: &PutOptions) -> Result<(), StoreError> {
        let path = self.path(key)?;
        let mut attributes = Attributes::new();
        if let Some(ct) = &options.content_type {
            attributes.insert(Attribute::ContentType, ct.clone().into());
        }
        for (k, v) in &options.metadata {
            attributes.insert(Attribute::Metadata(Cow::Owned(k.clone())), v.clone().into());
        }
        if let Some(o) = &options.origin {
            // User metadata travels in HTTP headers: ASCII only, so the key is
            // percent-encoded.
            let source = percent_encoding::utf8_percent_encode(&o.source_key, QUERY).to_string();
            attributes.insert(Attribute::Metadata(Cow::Borrowed(META_SOURCE_KEY)), source.into());
            attributes.insert(Attribute::Metadata(Cow::Borrowed(META_RUN)), o.run.clone().into());
        }
        let what = format!("writing {key:?}");
        if body.len() > self.multipart_threshold {
            return self.put_multipart(&path, body, attributes).await.map_err(|e| self.error(&what, e));
        }
        let bytes: Bytes = body
            .to_bytes(self.multipart_threshold)
            .await
            .map_err(|e| StoreError::new(StoreErrorKind::Other, format!("{what}: {e}")))?;
        let opts = object_store::PutOptions { attributes, ..Default::default() };
        self.client.put_opts(&path, PutPayload::from(bytes), opts).await.map(|_| ()).map_err(|e| self.error(&what, e))
    }

    async fn origin(&self, key: &str) -> Result<Option<Origin>, StoreError> {
        let path = self.path(key)?;
        let opts = GetOptions { head: true, ..Default::default() };
        match self.client.get_opts(&path, opts).await {
            Ok(r) => {
                let meta = |name| r.attributes.get(&Attribute::Metadata(Cow::Borrowed(name))).map(|v| v.to_string());
                Ok(meta(META_SOURCE_KEY).map(|k| Origin {
                    source_key: percent_encoding::percent_decode_str(&k).decode_utf8_lossy().into_owned(),
                    run: meta(META_RUN).unwrap_or_default(),
                }))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.error(&format!("checking {key:?}"), e)),
        }
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, StoreError> {
        let path = self.path(key)?;
        let opts = GetOptions { head: true, ..Default::default() };
        match self.client.get_opts(&path, opts).await {
            Ok(r) => Ok(Some(self.info(r.meta))),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.error(&format!("checking {key:?}"), e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> S3Store {
        store_at("s3://bucket/root")
    }

    fn store_at(url: &str) -> S3Store {
        let opts = S3Options {
            endpoint: Some("http://127.0.0.1:1".into()),
            access_key_id: Some("id".into()),
            secret_access_key: Some("secret".into()),
            ..Default::default()
        };
        S3Store::open(url, opts).unwrap()
    }

    #[test]
    fn keys_the_client_cannot_address_exactly_are_refused() {
        let s = store();
        assert_eq!(s.path("conf/a.json").unwrap().as_ref(), "root/conf/a.json");
        for bad in ["/conf/a.json", "conf/a.json/", "conf//a.json", "./a.json", "a/../b"] {
            let e = s.path(bad).unwrap_err();
            assert_eq!(e.kind, StoreErrorKind::InvalidKey, "{bad:?}");
        }
        // Without a root prefix object_store would quietly read `conf/a.json` instead.
        let e = store_at("s3://bucket").path("/conf/a.json").unwrap_err();
        assert!(e.message.contains("cannot be addressed exactly"), "{}", e.message);
    }

    #[test]
    fn listed_keys_keep_their_cr_and_a_truncated_page_without_token_is_an_error() {
        let s = store();
        let page = "<ListBucketResult><IsTruncated>false</IsTruncated><Contents><Key>root/a\rb.json</Key><Size>1</Size></Contents></ListBucketResult>";
        let p = s.parse_page("listing", page.to_string()).unwrap();
        assert_eq!(p.objects[0].key, "a\rb.json");
        assert!(matches!(p.next, Ok(None)));
        let page = "<ListBucketResult><IsTruncated>true</IsTruncated><Contents><Key>root/a</Key><Size>1</Size></Contents></ListBucketResult>";
        let p = s.parse_page("listing", page.to_string()).unwrap();
        assert_eq!(p.objects.len(), 1);
        assert_eq!(p.next.unwrap_err().kind, StoreErrorKind::Transient);
    }
}
