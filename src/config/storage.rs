//! `[storage]` (how to reach an S3-compatible bucket when `storage_url` is `s3://…`),
//! `[cache]` (the local disk cache of index bundles and Parquet footers read from it) and
//! `[janitor]` (when replaced, expired and abandoned segment data is deleted).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use tracelight_storage::objstore::{Location, S3Options};

use super::Config;

/// `[storage]`: every field empty or false leaves the standard AWS environment variable
/// (`AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
/// `AWS_SESSION_TOKEN`, `AWS_ALLOW_HTTP`) in charge.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StorageSection {
    /// `http(s)://host:port` of an S3-compatible server; empty: AWS itself (or `AWS_ENDPOINT_URL`).
    pub endpoint: String,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: String,
    /// Allow a plain `http://` endpoint (a server on the same network).
    pub allow_http: bool,
    /// `https://BUCKET.endpoint/key` instead of path-style `https://endpoint/BUCKET/key`.
    pub virtual_hosted_style: bool,
    /// Bound on one request to the bucket, retries included.
    pub request_timeout: String,
}

impl Default for StorageSection {
    fn default() -> Self {
        StorageSection {
            endpoint: String::new(),
            region: String::new(),
            access_key_id: String::new(),
            secret_access_key: String::new(),
            session_token: String::new(),
            allow_http: false,
            virtual_hosted_style: false,
            request_timeout: "30s".into(),
        }
    }
}

impl std::fmt::Debug for StorageSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // One Debug for both: the S3 options mask their secrets.
        match self.s3_options() {
            Ok(o) => o.fmt(f),
            Err(_) => f.write_str("StorageSection { invalid request_timeout }"),
        }
    }
}

impl StorageSection {
    pub fn s3_options(&self) -> anyhow::Result<S3Options> {
        let request_timeout = humantime::parse_duration(&self.request_timeout).with_context(|| {
            format!("storage.request_timeout = {:?} is not a duration like 30s", self.request_timeout)
        })?;
        if request_timeout.is_zero() {
            bail!("storage.request_timeout must be positive");
        }
        Ok(S3Options {
            endpoint: self.endpoint.clone(),
            region: self.region.clone(),
            access_key_id: self.access_key_id.clone(),
            secret_access_key: self.secret_access_key.clone(),
            session_token: self.session_token.clone(),
            allow_http: self.allow_http,
            virtual_hosted_style: self.virtual_hosted_style,
            request_timeout,
        })
    }
}

/// `[cache]`: local copies of what queries read from object storage again and again.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CacheSection {
    /// Directory of the cache. Empty: `<data_dir>/cache`.
    pub dir: String,
    /// Most bytes the cache keeps on disk; the least recently used entries go first.
    pub max_bytes: u64,
}

impl Default for CacheSection {
    fn default() -> Self {
        CacheSection { dir: String::new(), max_bytes: 4 << 30 }
    }
}

/// `[janitor]`: segment data that no query can need any more is deleted in the background.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct JanitorSection {
    /// Time between passes.
    pub interval: String,
    /// Segments replaced by compaction or expired by retention stay readable for
    /// `query.timeout` plus this, so a query that listed them just before still reads them.
    pub grace_after_queries: String,
    /// Segments staged but never published (a flush or merge cut short by a crash) are
    /// deleted after this; far longer than any upload takes.
    pub staged_grace: String,
}

impl Default for JanitorSection {
    fn default() -> Self {
        JanitorSection { interval: "30s".into(), grace_after_queries: "30s".into(), staged_grace: "1h".into() }
    }
}

/// The janitor's timings, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JanitorTimes {
    pub interval: Duration,
    /// How long retired segments stay: `query.timeout` + `grace_after_queries`.
    pub grace: Duration,
    pub staged_grace: Duration,
}

impl Config {
    pub fn janitor_times(&self) -> anyhow::Result<JanitorTimes> {
        let j = &self.janitor;
        let parse = |key: &str, v: &str| {
            humantime::parse_duration(v).with_context(|| format!("janitor.{key} = {v:?} is not a duration like 30s"))
        };
        let interval = parse("interval", &j.interval)?;
        let after = parse("grace_after_queries", &j.grace_after_queries)?;
        let staged_grace = parse("staged_grace", &j.staged_grace)?;
        if interval.is_zero() || after.is_zero() {
            bail!("janitor.interval and janitor.grace_after_queries must be positive");
        }
        if staged_grace < Duration::from_secs(1) {
            bail!("janitor.staged_grace must be at least 1s (an upload in flight must not be deleted)");
        }
        Ok(JanitorTimes { interval, grace: self.query_timeout()? + after, staged_grace })
    }

    /// Where segments live, parsed: `storage_url`, or `<data_dir>/segments` when empty.
    pub fn storage_location(&self) -> anyhow::Result<Location> {
        let url = self.storage_url();
        Location::parse(&url).map_err(|e| anyhow::anyhow!("{e}"))
    }

    pub fn cache_dir(&self) -> PathBuf {
        if self.cache.dir.is_empty() { self.data_dir.join("cache") } else { PathBuf::from(&self.cache.dir) }
    }

    pub(super) fn validate_storage(&self) -> anyhow::Result<()> {
        self.storage_location()?;
        self.storage.s3_options()?;
        self.janitor_times()?;
        if self.cache.max_bytes < 64 << 20 {
            bail!("cache.max_bytes must be at least 64 MiB (67108864)");
        }
        Ok(())
    }
}
