//! The settings of an `s3://` store and the clients made of them.

use std::time::Duration;

use dqpipe_engine::api::ConfigError;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey, Checksum};
use object_store::{ClientOptions, RetryConfig};
use schemars::JsonSchema;
use serde::Deserialize;

use super::S3Store;
use crate::stores::non_empty;

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
    /// Create new objects with a conditional PUT (`If-None-Match: *`): one request, and
    /// two writers can never both create one key. Default true (AWS S3 and most
    /// S3-compatible servers); false for a server that ignores the condition, which would
    /// then overwrite: dqpipe checks the key with a HEAD first instead.
    pub conditional_put: Option<bool>,
}

const MIB: u64 = 1024 * 1024;

/// The URL's bucket, and the prefix its keys are under (`""` or ending in `/`).
fn bucket_and_root(url: &str) -> Result<(&str, String), ConfigError> {
    let rest = url.strip_prefix("s3://").unwrap_or(url);
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if !(3..=63).contains(&bucket.len()) || !bucket.chars().all(|c| c.is_ascii_alphanumeric() || ".-_".contains(c)) {
        return Err(ConfigError::at(
            "url",
            format!(
                "`{url}`: write `s3://bucket` or `s3://bucket/prefix` (bucket names are letters, digits, `.`, `-`)"
            ),
        ));
    }
    let prefix = prefix.trim_matches('/');
    Ok((bucket, if prefix.is_empty() { String::new() } else { format!("{prefix}/") }))
}

impl S3Store {
    pub fn open(url: &str, opts: S3Options) -> Result<Self, ConfigError> {
        let (bucket, root) = bucket_and_root(url)?;
        let mut builder = credentials(&opts)?;
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
        builder = with_sse(builder, &opts)?;

        // Client options replace the builder's whole set: allow_http goes here, not there.
        let (client, http) = http_clients(&opts, &endpoint, url)?;
        let retry = RetryConfig { max_retries: 0, ..RetryConfig::default() };
        // Over TLS, bodies are checked by S3 with a CRC64NVME instead of being hashed with
        // SHA-256 for the signature (`UNSIGNED-PAYLOAD`, as the AWS SDKs do over TLS: TLS
        // protects the bytes in transit, the checksum what S3 stores). Over plain HTTP the
        // signed payload stays: there it is the only check.
        if endpoint.starts_with("https://") {
            builder = builder.with_unsigned_payload(true).with_checksum_algorithm(Checksum::CRC64NVME);
        }
        // One key is deleted at a time (an object whose outputs are durable): a plain
        // DELETE, as object_store sent before 0.14, not a one-key `POST /?delete`, which
        // some S3-compatible servers lack and which answers 200 with the error inside.
        let client = builder
            .with_client_options(client)
            .with_disable_bulk_delete(true)
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
            conditional_put: opts.conditional_put.unwrap_or(true),
            part_size: part as usize,
        })
    }
}

/// The builder with the store's keys, or the environment's credential chain when it sets none.
fn credentials(opts: &S3Options) -> Result<AmazonS3Builder, ConfigError> {
    Ok(match (non_empty(&opts.access_key_id), non_empty(&opts.secret_access_key)) {
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
            return Err(ConfigError::at("s3.access_key_id", "`secret_access_key` is set but `access_key_id` is not"))
        }
    })
}

/// Server-side encryption (`sse`, `sse_kms_key_id`) on the builder.
fn with_sse(mut builder: AmazonS3Builder, opts: &S3Options) -> Result<AmazonS3Builder, ConfigError> {
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
    Ok(builder)
}

/// The HTTP clients (object_store's and reqwest's for listings): timeouts, and the CA
/// bundle of `ca_bundle` or `AWS_CA_BUNDLE`.
fn http_clients(opts: &S3Options, endpoint: &str, url: &str) -> Result<(ClientOptions, reqwest::Client), ConfigError> {
    let timeout = Duration::from_secs(opts.request_timeout_secs.unwrap_or(60).max(1));
    crate::tls::use_ring();
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
    let http =
        http.build().map_err(|e| ConfigError::at("url", format!("cannot set up the HTTP client for `{url}`: {e}")))?;
    Ok((client, http))
}

fn env_set(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}
