//! Where segments live: a local directory (`file://PATH`) or an S3-compatible bucket
//! (`s3://BUCKET/PREFIX`), both as an [`ObjectStore`].
//!
//! S3 settings come from the standard AWS environment variables (`AWS_ENDPOINT_URL`,
//! `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`,
//! `AWS_ALLOW_HTTP`), overridden by the non-empty fields of [`S3Options`] (the config file's
//! `[storage]` section). Requests are path-style (`http://endpoint/bucket/key`, what MinIO,
//! SeaweedFS and moto expect) unless `virtual_hosted_style` is set.
//!
//! Segments are published with create-only puts (`If-None-Match: *`): a store that silently
//! overwrites instead would let two writers of one name both believe they won. [`probe`]
//! checks this at start-up and refuses such a store.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path as ObjectPath;
use object_store::prefix::PrefixStore;
use object_store::{ClientConfigKey, ObjectStore, ObjectStoreExt, PutMode, PutOptions, RetryConfig};

use crate::StorageError;

/// S3 settings from the config file; an empty string leaves the environment's value.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct S3Options {
    pub endpoint: String,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: String,
    /// Plain `http://` endpoints (a local test server). Also `AWS_ALLOW_HTTP=true`.
    pub allow_http: bool,
    /// `https://BUCKET.endpoint/key` instead of `https://endpoint/BUCKET/key`.
    pub virtual_hosted_style: bool,
    /// Bound on one request, retries included.
    pub request_timeout: Duration,
}

impl std::fmt::Debug for S3Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secret = |s: &str| if s.is_empty() { "" } else { "***" };
        f.debug_struct("S3Options")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &secret(&self.secret_access_key))
            .field("session_token", &secret(&self.session_token))
            .field("allow_http", &self.allow_http)
            .field("virtual_hosted_style", &self.virtual_hosted_style)
            .field("request_timeout", &self.request_timeout)
            .finish()
    }
}

/// A parsed storage URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// `file://PATH` or a plain path.
    Local(PathBuf),
    /// `s3://BUCKET/PREFIX` (the prefix may be empty).
    S3 { bucket: String, prefix: String },
}

impl Location {
    pub fn parse(url: &str) -> Result<Location, StorageError> {
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            // S3 bucket names: 3–63 characters of lower-case letters, digits, '.' and '-'.
            let valid = (3..=63).contains(&bucket.len())
                && bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-');
            if !valid {
                return Err(StorageError::Config(format!(
                    "storage URL {url:?}: {bucket:?} is not an S3 bucket name (3–63 lower-case letters, digits, '.', '-')"
                )));
            }
            let prefix = prefix.trim_matches('/');
            if prefix.split('/').any(|p| p == "." || p == "..") || prefix.contains("//") {
                return Err(StorageError::Config(format!("storage URL {url:?}: the prefix must be a plain path")));
            }
            return Ok(Location::S3 { bucket: bucket.into(), prefix: prefix.into() });
        }
        if let Some(path) = url.strip_prefix("file://") {
            return Ok(Location::Local(PathBuf::from(path)));
        }
        if url.contains("://") {
            return Err(StorageError::Config(format!(
                "storage URL {url:?} is not supported: use file://PATH or s3://BUCKET/PREFIX"
            )));
        }
        Ok(Location::Local(PathBuf::from(url)))
    }
}

/// The object store of an S3 location (the bucket, narrowed to the prefix).
pub fn s3_store(bucket: &str, prefix: &str, options: &S3Options) -> Result<Arc<dyn ObjectStore>, StorageError> {
    let store = s3_builder(bucket, options).build().map_err(|e| StorageError::Config(format!("s3://{bucket}: {e}")))?;
    Ok(if prefix.is_empty() { Arc::new(store) } else { Arc::new(PrefixStore::new(store, prefix)) })
}

/// The client of one bucket: the environment's settings, then `options`, then timeouts and
/// retries bounded by `options.request_timeout` (30 s when zero).
pub fn s3_builder(bucket: &str, options: &S3Options) -> AmazonS3Builder {
    let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
    let set = |v: &str| (!v.is_empty()).then(|| v.to_string());
    if let Some(v) = set(&options.endpoint) {
        builder = builder.with_endpoint(v);
    }
    if let Some(v) = set(&options.region) {
        builder = builder.with_region(v);
    }
    if let Some(v) = set(&options.access_key_id) {
        builder = builder.with_access_key_id(v);
    }
    if let Some(v) = set(&options.secret_access_key) {
        builder = builder.with_secret_access_key(v);
    }
    if let Some(v) = set(&options.session_token) {
        builder = builder.with_token(v);
    }
    if options.allow_http {
        builder = builder.with_allow_http(true);
    }
    if options.virtual_hosted_style {
        builder = builder.with_virtual_hosted_style_request(true);
    }
    let timeout = if options.request_timeout.is_zero() { Duration::from_secs(30) } else { options.request_timeout };
    let retry = RetryConfig { max_retries: 5, retry_timeout: timeout, ..Default::default() };
    // Set key by key: `with_client_options` would replace what the environment set
    // (AWS_ALLOW_HTTP among it).
    let client = |k| AmazonS3ConfigKey::Client(k);
    builder
        .with_config(client(ClientConfigKey::Timeout), format!("{}ms", timeout.as_millis()))
        .with_config(client(ClientConfigKey::ConnectTimeout), "5s")
        .with_retry(retry)
}

/// Checks that `store` refuses a second create-only put of one name (`If-None-Match: *`), the
/// guarantee publishing relies on. Writes and then deletes `_tracelight/probe-<node>-<random>`.
pub async fn probe(store: &dyn ObjectStore, node: &str) -> Result<(), StorageError> {
    let path = ObjectPath::from(format!("_tracelight/probe-{node}-{:016x}", rand::random::<u64>()));
    let create = || PutOptions { mode: PutMode::Create, ..Default::default() };
    let fail = |what: &str, e: object_store::Error| StorageError::Config(format!("object store probe: {what}: {e}"));
    store.put_opts(&path, b"first".to_vec().into(), create()).await.map_err(|e| fail("create-only put", e))?;
    let second = store.put_opts(&path, b"second".to_vec().into(), create()).await;
    let kept =
        store.get(&path).await.map_err(|e| fail("read back", e))?.bytes().await.map_err(|e| fail("read back", e))?;
    let _ = store.delete(&path).await;
    match second {
        Err(object_store::Error::AlreadyExists { .. }) if kept.as_ref() == b"first" => Ok(()),
        Err(e) => Err(fail("second create-only put of the same name", e)),
        Ok(_) => Err(StorageError::Config(
            "the object store accepted a second create-only put of the same name (If-None-Match: * is not \
             honoured); segments cannot be published safely on it"
                .into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_or_say_why_not() {
        assert_eq!(
            Location::parse("s3://my-bucket/a/b/").unwrap(),
            Location::S3 { bucket: "my-bucket".into(), prefix: "a/b".into() }
        );
        assert_eq!(Location::parse("s3://bkt").unwrap(), Location::S3 { bucket: "bkt".into(), prefix: "".into() });
        assert_eq!(Location::parse("file:///x/y").unwrap(), Location::Local("/x/y".into()));
        assert_eq!(Location::parse("rel/dir").unwrap(), Location::Local("rel/dir".into()));
        for bad in ["s3://", "s3://UPPER/x", "s3://a/x", "s3://bkt/../x", "s3://bkt/a//b", "gs://b/x"] {
            let e = Location::parse(bad).unwrap_err().to_string();
            assert!(e.contains(bad), "{bad}: {e}");
        }
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let o = S3Options { access_key_id: "AKIA".into(), secret_access_key: "hush".into(), ..Default::default() };
        let d = format!("{o:?}");
        assert!(d.contains("AKIA") && !d.contains("hush"), "{d}");
    }
}
