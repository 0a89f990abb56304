//! Over HTTPS, object bodies are checked by S3 with a CRC32C instead of being hashed with
//! SHA-256 for the request's signature.
//!
//! SigV4 signs a PUT's body by its SHA-256 (`x-amz-content-sha256`), which S3 then checks:
//! about 1 GB/s of one core, a fifth of the client's CPU when writing 1 MB objects. Over
//! TLS the AWS SDKs sign `UNSIGNED-PAYLOAD` instead (TLS protects the bytes in transit) and
//! send a checksum S3 verifies against what it stored: `x-amz-checksum-crc32c` (3 GB/s and
//! more with SSE 4.2). Over plain HTTP the signed payload stays: there it is the only check.
//!
//! Hand-written, as a layer under object_store's HTTP client, because object_store 0.13
//! offers only SHA-256 as an upload checksum: with `unsigned_payload` set it builds each
//! request as usual (conditions, encryption, metadata), and this layer adds the CRC32C to a
//! PutObject and signs the request again, so that the checksum header is signed too (S3
//! refuses `x-amz-*` headers that are not). An UploadPart is signed with its SHA-256, as
//! before: S3 takes a part's checksum only when the upload was created with that algorithm,
//! which object_store does not do.

use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use base64::Engine;
use http_body_util::BodyExt;
use object_store::aws::{AwsAuthorizer, AwsCredentialProvider};
use object_store::client::{
    HttpClient, HttpConnector, HttpError, HttpErrorKind, HttpRequest, HttpRequestBody, HttpResponse, HttpService,
    ReqwestConnector,
};
use object_store::ClientOptions;

/// The credentials and region requests are signed with, known once the client is built.
#[derive(Debug)]
pub(super) struct Signer {
    pub credentials: AwsCredentialProvider,
    pub region: String,
}

/// The connector object_store builds its HTTP client with, for `https://` endpoints.
#[derive(Debug, Default)]
pub(super) struct Crc32cPuts {
    pub signer: Arc<OnceLock<Signer>>,
}

impl HttpConnector for Crc32cPuts {
    fn connect(&self, options: &ClientOptions) -> object_store::Result<HttpClient> {
        let inner = ReqwestConnector::default().connect(options)?;
        Ok(HttpClient::new(Crc32cService { inner, signer: self.signer.clone() }))
    }
}

#[derive(Debug)]
struct Crc32cService {
    inner: HttpClient,
    signer: Arc<OnceLock<Signer>>,
}

const CONTENT_SHA256: &str = "x-amz-content-sha256";
const CHECKSUM_CRC32C: &str = "x-amz-checksum-crc32c";

/// What a request object_store signed with `UNSIGNED-PAYLOAD` gets before it is sent.
#[derive(Debug, PartialEq)]
enum Change {
    /// A PutObject: its CRC32C, signed.
    Crc32c,
    /// An UploadPart: signed with its SHA-256.
    SignedPayload,
    /// Anything else (reads, listings, copies, deletes, the multipart requests without a
    /// body of object bytes): as it is.
    None,
}

fn change(req: &HttpRequest) -> Change {
    let unsigned = req.headers().get(CONTENT_SHA256).is_some_and(|v| v.as_bytes() == b"UNSIGNED-PAYLOAD");
    if !unsigned || req.method() != http::Method::PUT || req.headers().contains_key("x-amz-copy-source") {
        return Change::None;
    }
    let query = req.uri().query().unwrap_or("");
    if query.split('&').any(|p| p.starts_with("partNumber=")) {
        Change::SignedPayload
    } else {
        Change::Crc32c
    }
}

#[async_trait]
impl HttpService for Crc32cService {
    async fn call(&self, mut req: HttpRequest) -> Result<HttpResponse, HttpError> {
        let how = change(&req);
        if how != Change::None {
            let signer = self.signer.get().ok_or_else(|| {
                HttpError::new(HttpErrorKind::Unknown, std::io::Error::other("the S3 signer was not set up"))
            })?;
            let credential =
                signer.credentials.get_credential().await.map_err(|e| HttpError::new(HttpErrorKind::Unknown, e))?;
            // object_store hands the body over in the chunks it was given; joined into one
            // (no copy for one chunk), it can be checked and signed.
            let (mut parts, body) = req.into_parts();
            let bytes = body.collect().await?.to_bytes();
            if how == Change::Crc32c {
                let crc = crc32c::crc32c(&bytes).to_be_bytes();
                let value = base64::engine::general_purpose::STANDARD.encode(crc);
                let value =
                    http::HeaderValue::try_from(value).map_err(|e| HttpError::new(HttpErrorKind::Unknown, e))?;
                parts.headers.insert(CHECKSUM_CRC32C, value);
            }
            req = HttpRequest::from_parts(parts, HttpRequestBody::from(bytes));
            AwsAuthorizer::new(&credential, "s3", &signer.region)
                .with_sign_payload(how == Change::SignedPayload)
                .authorize(&mut req, None);
        }
        self.inner.execute(req).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: &str, uri: &str, headers: &[(&str, &str)]) -> HttpRequest {
        let mut b = http::Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(HttpRequestBody::from(bytes::Bytes::from_static(b"{}"))).unwrap()
    }

    #[test]
    fn only_unsigned_puts_of_object_bytes_change() {
        let unsigned = (CONTENT_SHA256, "UNSIGNED-PAYLOAD");
        let u = "https://s3.eu-west-2.amazonaws.com/b/k.json";
        assert_eq!(change(&request("PUT", u, &[unsigned])), Change::Crc32c);
        let part = format!("{u}?partNumber=2&uploadId=x");
        assert_eq!(change(&request("PUT", &part, &[unsigned])), Change::SignedPayload);
        assert_eq!(change(&request("PUT", u, &[unsigned, ("x-amz-copy-source", "b/o")])), Change::None);
        assert_eq!(change(&request("GET", u, &[unsigned])), Change::None);
        assert_eq!(change(&request("PUT", u, &[(CONTENT_SHA256, "44136fa3")])), Change::None);
    }
}
