//! `s3://bucket/prefix` stores, through object_store's S3 client.
//!
//! One code path per operation: list (ListObjectsV2, page by page: `listing.rs`), get
//! (streamed into a body that spools to disk past the threshold), put (one PUT, or a
//! multipart upload above `multipart_threshold_bytes`), head (HEAD, with the object's user
//! metadata, which records its origin). Settings and client set-up are in `config.rs`,
//! errors as operators read them in `errors.rs`; over HTTPS, PUT bodies carry a CRC64NVME
//! instead of a signed SHA-256 (object_store's `Checksum::CRC64NVME`, set in `config.rs`).
//!
//! object_store retries nothing here (`max_retries: 0`): the nodes retry transient errors
//! with their own policy, so that each retry is counted in the run report, and so that a
//! request is never retried twice over.

mod config;
mod errors;
mod listing;

use std::borrow::Cow;

use async_trait::async_trait;
use bytes::Bytes;
use dqpipe_engine::api::body::{Body, Spool};
use dqpipe_engine::api::store::{check_read, ObjectInfo, Origin, PutOptions, Store, StoreError, StoreErrorKind};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3;
use object_store::path::Path;
use object_store::{Attribute, Attributes, GetOptions, ObjectStore, PutMultipartOptions, PutPayload, WriteMultipart};
use tokio::io::AsyncReadExt;

pub use config::S3Options;
use listing::QUERY;

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
    /// `s3.conditional_put`: new objects are created with `If-None-Match: *`.
    conditional_put: bool,
}

/// The user metadata (`x-amz-meta-...`) that holds a written object's [`Origin`].
const META_SOURCE_KEY: &str = "dqpipe-source-key";
const META_RUN: &str = "dqpipe-run";

impl S3Store {
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

    /// One GET. For a listed object, the answer's length and ETag are compared with the
    /// listing's before its body is read, and the body's length after.
    async fn read(&self, key: &str, listed: Option<&ObjectInfo>, spool: &Spool) -> Result<Body, StoreError> {
        let path = self.path(key)?;
        let what = format!("reading {key:?}");
        let got = self.client.get_opts(&path, GetOptions::default()).await.map_err(|e| self.error(&what, e))?;
        if let Some(listed) = listed {
            check_read(listed, got.meta.size, got.meta.e_tag.as_deref())?;
        }
        let size = got.meta.size;
        let body = Body::from_stream(got.into_stream(), Some(size), spool).await.map_err(|e| match e {
            dqpipe_engine::api::body::BodyError::Source(e) => self.error(&what, e),
            spool_error => StoreError::new(StoreErrorKind::Other, format!("{what}: {spool_error}")),
        })?;
        if let Some(listed) = listed {
            check_read(listed, body.len(), None)?;
        }
        Ok(body)
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

    /// One write: with `PutMode::Create`, only if the key is free (`Ok(false)` if not).
    /// Bodies above the multipart threshold go up in parts, unconditionally.
    async fn write(
        &self,
        key: &str,
        body: &Body,
        options: &PutOptions,
        mode: object_store::PutMode,
    ) -> Result<bool, StoreError> {
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
            return self.put_multipart(&path, body, attributes).await.map(|()| true).map_err(|e| self.error(&what, e));
        }
        let bytes: Bytes = body
            .to_bytes(self.multipart_threshold)
            .await
            .map_err(|e| StoreError::new(StoreErrorKind::Other, format!("{what}: {e}")))?;
        let opts = object_store::PutOptions { attributes, mode, ..Default::default() };
        match self.client.put_opts(&path, PutPayload::from(bytes), opts).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(self.error(&what, e)),
        }
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

#[async_trait]
impl Store for S3Store {
    /// ListObjectsV2 returns keys in UTF-8 binary order.
    fn lists_in_key_order(&self) -> bool {
        true
    }
    fn etag_follows_content(&self) -> bool {
        true
    }
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
        self.read(key, None, spool).await
    }

    async fn get_listed(&self, listed: &ObjectInfo, spool: &Spool) -> Result<Body, StoreError> {
        self.read(&listed.key, Some(listed), spool).await
    }

    async fn put(&self, key: &str, body: &Body, options: &PutOptions) -> Result<(), StoreError> {
        self.write(key, body, options, object_store::PutMode::Overwrite).await.map(|_| ())
    }

    /// One PUT with `If-None-Match: *` (S3 answers 412 when the key exists). Multipart
    /// uploads carry no such condition in object_store: above the multipart threshold, and
    /// with `conditional_put: false`, the key is checked first.
    async fn put_new(&self, key: &str, body: &Body, options: &PutOptions) -> Result<bool, StoreError> {
        if body.len() > self.multipart_threshold || !self.conditional_put {
            if self.head(key).await?.is_some() {
                return Ok(false);
            }
            return self.put(key, body, options).await.map(|()| true);
        }
        self.write(key, body, options, object_store::PutMode::Create).await
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

    /// One HEAD: the object's `dqpipe-*` user metadata but its origin.
    async fn metadata(&self, key: &str) -> Result<Vec<(String, String)>, StoreError> {
        let path = self.path(key)?;
        let opts = GetOptions { head: true, ..Default::default() };
        match self.client.get_opts(&path, opts).await {
            Ok(r) => Ok(r
                .attributes
                .iter()
                .filter_map(|(k, v)| match k {
                    Attribute::Metadata(name)
                        if name.starts_with("dqpipe-") && name != META_SOURCE_KEY && name != META_RUN =>
                    {
                        Some((name.to_string(), v.to_string()))
                    }
                    _ => None,
                })
                .collect()),
            Err(object_store::Error::NotFound { .. }) => Ok(Vec::new()),
            Err(e) => Err(self.error(&format!("reading the metadata of {key:?}"), e)),
        }
    }

    /// One DeleteObject. S3 answers 204 for a key that is gone already, which is fine: a
    /// move that was cut after its delete, then rerun, deletes nothing twice. That the
    /// object is still the one listed is checked first by [`Store::delete_listed`] (a
    /// HEAD: object_store sends no `If-Match` on a delete).
    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let path = self.path(key)?;
        object_store::ObjectStoreExt::delete(&self.client, &path)
            .await
            .map_err(|e| self.error(&format!("deleting {key:?}"), e))
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
