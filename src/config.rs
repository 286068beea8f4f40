//! One config tree: `tracelight.toml`, then `TRACELIGHT_<SECTION>_<KEY>` environment
//! variables, then flags. Unknown keys in the file are an error. Validation is a pure
//! function ([`Config::validate`]) separate from start-up.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

/// The whole configuration. Every field is documented in `deploy/tracelight.example.toml`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Directory for the WAL, local segments and the SQLite catalog.
    pub data_dir: PathBuf,
    /// Catalog database: `sqlite://PATH` or `postgres://USER@HOST/DB`. Empty: SQLite in data_dir.
    pub catalog_url: String,
    /// Segment storage: `file://PATH` or `s3://BUCKET/PREFIX`. Empty: `<data_dir>/segments`.
    pub storage_url: String,
    /// This node's name in the catalog (WAL checkpoints are per node).
    pub node_id: String,
    /// Log filter (`info`, `debug`, `tracelight=debug,info`); `RUST_LOG` wins when set.
    pub log_level: String,
    pub listen: Listen,
    pub ingest: Ingest,
    pub wal: WalSection,
    pub head: HeadSection,
    pub query: QuerySection,
    pub retention: RetentionSection,
    pub compaction: CompactionSection,
    pub cluster: ClusterSection,
    pub storage: StorageSection,
    pub cache: CacheSection,
    pub janitor: JanitorSection,
    pub api: Api,
    pub auth: AuthSection,
    pub alerts: AlertsSection,
    /// SLOs: `[[slo]]` tables (none by default).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub slo: Vec<SloConfig>,
    /// Notification channels: `[[notify]]` tables (none by default).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notify: Vec<NotifyConfig>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsSection {
    /// How often SLOs are evaluated and their per-minute counts brought up to date.
    pub eval_interval: String,
    /// CIDRs exempt from the SSRF guard (e.g. `127.0.0.1/32` for an on-prem relay).
    pub allow_destinations: Vec<String>,
    /// The UI's address as chat links should show it. Empty: `http://` + `listen.http`.
    pub public_url: String,
}

impl Default for AlertsSection {
    fn default() -> Self {
        AlertsSection { eval_interval: "30s".into(), allow_destinations: Vec::new(), public_url: String::new() }
    }
}

/// One `[[slo]]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SloConfig {
    /// Letters, digits, `.`, `_`, `-`; unique. Used in URLs and alert identities.
    pub name: String,
    /// The tenant whose data it counts; only tokens that cover it see the SLO.
    #[serde(default = "default_tenant")]
    pub tenant: String,
    pub service: String,
    /// Percent of good events, e.g. 99.9.
    pub objective: f64,
    #[serde(default = "default_slo_window")]
    pub window: String,
    pub sli: SliConfig,
    /// Names of `[[notify]]` channels.
    #[serde(default)]
    pub notify: Vec<String>,
    /// A window with fewer events reports "insufficient data" and never alerts.
    #[serde(default = "default_min_events")]
    pub min_events: u64,
    /// Burn-rate rules; empty: the SRE Workbook's four, scaled to the window.
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
}

fn default_tenant() -> String {
    tracelight_model::Tenant::default().to_string()
}

fn default_slo_window() -> String {
    "30d".into()
}

fn default_min_events() -> u64 {
    10
}

/// `sli = { kind = "error_ratio" | "latency" | "metric_ratio", ... }`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SliConfig {
    pub kind: String,
    /// SQL condition over `spans` (error_ratio, latency).
    #[serde(default)]
    pub filter: Option<String>,
    /// latency: slower than this is bad, e.g. `300ms`.
    #[serde(default)]
    pub threshold: Option<String>,
    /// metric_ratio: counter names of good and of all events.
    #[serde(default)]
    pub good: Option<String>,
    #[serde(default)]
    pub total: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// `page` or `ticket`.
    pub severity: String,
    pub long_window: String,
    pub short_window: String,
    pub factor: f64,
}

/// One `[[notify]]` channel. Its URL and secret are never printed (Debug masks them).
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    pub name: String,
    /// `slack`, `discord`, `webhook` (signed) or `alertmanager`.
    pub kind: String,
    pub url: String,
    /// `webhook`: the signing secret (Standard Webhooks; `whsec_<base64>` or raw text).
    #[serde(default)]
    pub secret: Option<String>,
}

impl std::fmt::Debug for NotifyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotifyConfig")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("url", &"***")
            .field("secret", &self.secret.as_ref().map(|_| "***"))
            .finish()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Listen {
    /// OTLP/gRPC address. Port 0 picks a free port.
    pub otlp_grpc: String,
    /// OTLP/HTTP address.
    pub otlp_http: String,
    /// UI, JSON API, /metrics, /healthz, /readyz.
    pub http: String,
}

#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Ingest {
    /// Largest export request, in bytes, after decompression.
    pub max_request_bytes: usize,
    /// Bytes that request bodies being received, decompressed and logged may hold at once,
    /// across all connections; past it, requests are refused as retryable (503 / UNAVAILABLE).
    /// At least 3 × `max_request_bytes` + 4 MiB, so that one request of the largest size fits.
    pub max_receiving_bytes: usize,
    /// Longest one request body may take to arrive (HTTP 408, gRPC DEADLINE_EXCEEDED): a slow
    /// sender cannot hold its share of `max_receiving_bytes` for long.
    pub receive_timeout: String,
    /// Attribute keys longer than this are dropped (and counted as dropped).
    pub max_attribute_key_bytes: usize,
    /// Attribute values longer than this are cut at a character boundary.
    pub max_attribute_value_bytes: usize,
    /// At most this many attributes per span, log record or point; the rest are dropped.
    pub max_attributes: usize,
    /// Log bodies longer than this are cut at a character boundary.
    pub max_log_body_bytes: usize,
    /// Items whose time is further than this before the receive time are rejected (partial
    /// success, reason `too_old`): a collector's retry queue or a backfill fits; a timestamp of
    /// 0 or 1970 does not. Bounds how many hour partitions one request can touch.
    pub accept_past: String,
    /// Items whose time is further than this after the receive time are rejected (`too_new`);
    /// allows for clock skew.
    pub accept_future: String,
    /// Bearer tokens accepted on 4317/4318. Empty: no authentication.
    pub tokens: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WalSection {
    /// A new WAL segment file starts past this size.
    pub segment_bytes: u64,
    /// Ingest is refused (retryably) while the WAL holds more than this.
    pub max_bytes: u64,
    /// fsync before acknowledging. Turning it off loses acknowledged data on power loss.
    pub fsync: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HeadSection {
    /// Memory for acknowledged rows not yet in Parquet; past it ingest is refused retryably.
    pub max_bytes: usize,
    /// Flush the head to Parquet this often...
    pub flush_interval: String,
    /// ...or once it holds this many rows, whichever comes first.
    pub flush_rows: usize,
    /// Most (tenant, signal, hour) partitions one flush writes; a request that would add more
    /// waits (retryably) for the flush, and one that alone spans more hours is refused.
    pub max_partitions: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct QuerySection {
    /// A query running longer is cancelled.
    pub timeout: String,
    /// Memory all running queries may hold together.
    pub memory_limit_bytes: usize,
    /// Rows returned at most; the response says when it was cut.
    pub max_result_rows: usize,
    /// Bytes (as JSON) a SQL result returns at most; rows past it are cut (the response says
    /// so), and a single row over it is an error.
    pub max_result_bytes: usize,
    /// Decoded segment rows kept for reads that come back (search hits a dashboard refreshes,
    /// a page a user returns to); 0 turns the cache off.
    pub row_cache_bytes: usize,
    /// Threads of the query pool (kept apart from ingest).
    pub threads: usize,
    /// Widest time range of a trace search, log search or services query.
    pub max_search_range: String,
    /// Largest page (`limit`) of a list route.
    pub max_page: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionSection {
    /// Delete whole hour partitions (Parquet and index together) older than this. `0s` keeps
    /// everything.
    pub period: String,
    /// How often to look for expired partitions.
    pub check_interval: String,
}

impl Default for RetentionSection {
    fn default() -> Self {
        RetentionSection { period: "0s".into(), check_interval: "5m".into() }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CompactionSection {
    /// Merge the small segments of each hour partition into large ones in the background.
    pub enabled: bool,
    /// Time between compaction passes.
    pub interval: String,
    /// Segments younger than this are not merged; an hour is merged whole once it ended this
    /// long ago (until then, only when `min_inputs` segments of similar size are there).
    pub min_age: String,
    /// Most bytes of segments one merge reads (the merged segment is about this size).
    pub target_bytes: u64,
    /// Most rows of one merged segment.
    pub target_rows: u64,
    /// Most segments one merge reads at once.
    pub max_inputs: usize,
    /// In the current hour, merge once this many segments of similar size are there.
    pub min_inputs: usize,
}

impl Default for CompactionSection {
    fn default() -> Self {
        CompactionSection {
            enabled: true,
            interval: "60s".into(),
            min_age: "2m".into(),
            target_bytes: 256 << 20,
            target_rows: 8_000_000,
            max_inputs: 64,
            min_inputs: 8,
        }
    }
}

#[derive(Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Api {
    /// Deprecated: bearer tokens with the `read` and `admin` scopes on every tenant. Use
    /// `[[auth.tokens]]`.
    pub tokens: Vec<String>,
    /// Host names the UI and API answer to while no token is configured (IP addresses and
    /// `localhost` always pass): a guard against DNS rebinding. Add the name users type.
    pub allowed_hosts: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./tracelight-data"),
            catalog_url: String::new(),
            storage_url: String::new(),
            node_id: "local".into(),
            log_level: "info".into(),
            listen: Listen::default(),
            ingest: Ingest::default(),
            wal: WalSection::default(),
            head: HeadSection::default(),
            query: QuerySection::default(),
            retention: RetentionSection::default(),
            compaction: CompactionSection::default(),
            cluster: ClusterSection::default(),
            storage: StorageSection::default(),
            cache: CacheSection::default(),
            janitor: JanitorSection::default(),
            api: Api::default(),
            auth: AuthSection::default(),
            alerts: AlertsSection::default(),
            slo: Vec::new(),
            notify: Vec::new(),
        }
    }
}

impl Default for Listen {
    fn default() -> Self {
        Listen { otlp_grpc: "127.0.0.1:4317".into(), otlp_http: "127.0.0.1:4318".into(), http: "127.0.0.1:4319".into() }
    }
}

impl Default for Ingest {
    fn default() -> Self {
        Ingest {
            max_request_bytes: 4 << 20,
            max_receiving_bytes: 64 << 20,
            receive_timeout: "30s".into(),
            max_attribute_key_bytes: 1024,
            max_attribute_value_bytes: 64 << 10,
            max_attributes: 1024,
            max_log_body_bytes: 1 << 20,
            accept_past: "7d".into(),
            accept_future: "1h".into(),
            tokens: Vec::new(),
        }
    }
}

impl Default for WalSection {
    fn default() -> Self {
        WalSection { segment_bytes: 64 << 20, max_bytes: 4 << 30, fsync: true }
    }
}

impl Default for HeadSection {
    fn default() -> Self {
        HeadSection { max_bytes: 256 << 20, flush_interval: "5s".into(), flush_rows: 1_000_000, max_partitions: 1024 }
    }
}

impl Default for QuerySection {
    fn default() -> Self {
        QuerySection {
            timeout: "30s".into(),
            memory_limit_bytes: 1 << 30,
            max_result_rows: 10_000,
            max_result_bytes: 16 << 20,
            row_cache_bytes: tracelight_storage::segment::ROW_CACHE_BYTES,
            threads: 2,
            max_search_range: "7d".into(),
            max_page: 1_000,
        }
    }
}

/// Flags that override the file and the environment.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub data_dir: Option<PathBuf>,
    pub catalog_url: Option<String>,
    pub storage_url: Option<String>,
    pub otlp_grpc: Option<String>,
    pub otlp_http: Option<String>,
    pub http: Option<String>,
}

const ENV_PREFIX: &str = "TRACELIGHT_";

impl Config {
    /// File (if given), then environment, then flags.
    pub fn load(file: Option<&Path>, env: &[(String, String)], flags: &Overrides) -> anyhow::Result<Config> {
        let mut value = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read config file {}", path.display()))?;
                text.parse::<toml::Table>().with_context(|| format!("{} is not valid TOML", path.display()))?
            }
            None => toml::Table::new(),
        };
        apply_env(&mut value, env)?;
        let mut config: Config = toml::Value::Table(value)
            .try_into()
            .map_err(|e: toml::de::Error| anyhow::anyhow!("invalid configuration: {}", e.message()))?;
        if let Some(d) = &flags.data_dir {
            config.data_dir = d.clone();
        }
        if let Some(v) = &flags.catalog_url {
            config.catalog_url = v.clone();
        }
        if let Some(v) = &flags.storage_url {
            config.storage_url = v.clone();
        }
        if let Some(v) = &flags.otlp_grpc {
            config.listen.otlp_grpc = v.clone();
        }
        if let Some(v) = &flags.otlp_http {
            config.listen.otlp_http = v.clone();
        }
        if let Some(v) = &flags.http {
            config.listen.http = v.clone();
        }
        config.validate()?;
        Ok(config)
    }

    /// Checks values that parse but make no sense.
    pub fn validate(&self) -> anyhow::Result<()> {
        for (name, addr) in [
            ("listen.otlp_grpc", &self.listen.otlp_grpc),
            ("listen.otlp_http", &self.listen.otlp_http),
            ("listen.http", &self.listen.http),
        ] {
            addr.parse::<SocketAddr>().with_context(|| format!("{name} = {addr:?} is not an IP:PORT address"))?;
        }
        self.validate_storage()?;
        self.flush_interval()?;
        self.query_timeout()?;
        self.max_search_range()?;
        self.retention_period()?;
        if self.retention_check_interval()?.is_zero() {
            bail!("retention.check_interval must be positive");
        }
        if self.query.max_page == 0 || self.query.max_page > tracelight_model::peers::MAX_LIST {
            bail!("query.max_page must be between 1 and {}", tracelight_model::peers::MAX_LIST);
        }
        self.compaction_config()?;
        if self.eval_interval()?.is_zero() {
            bail!("alerts.eval_interval must be positive");
        }
        self.slo_specs()?;
        self.allow_destinations()?;
        if self.ingest.max_request_bytes < 1024 {
            bail!("ingest.max_request_bytes must be at least 1024");
        }
        let one_request = self.ingest.max_request_bytes.saturating_mul(3).saturating_add(4 << 20);
        if self.ingest.max_receiving_bytes < one_request {
            bail!(
                "ingest.max_receiving_bytes ({}) must be at least 3 × ingest.max_request_bytes + 4 MiB ({one_request}), \
                 or a request of the largest size could never be received",
                self.ingest.max_receiving_bytes
            );
        }
        if self.wal.max_bytes < 2 * self.wal.segment_bytes {
            // The active segment is only deleted after it is closed; a smaller bound could be
            // filled by it alone and refuse ingest for good.
            bail!("wal.max_bytes must be at least twice wal.segment_bytes");
        }
        self.accept_window()?;
        self.receive_timeout()?;
        if self.head.max_partitions == 0 {
            bail!("head.max_partitions must be positive");
        }
        if self.head.max_bytes < 1 << 20 {
            bail!("head.max_bytes must be at least 1 MiB");
        }
        if self.head.flush_rows == 0 || self.query.threads == 0 || self.query.max_result_rows == 0 {
            bail!("head.flush_rows, query.threads and query.max_result_rows must be positive");
        }
        if self.node_id.is_empty() || !self.node_id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            bail!("node_id must be non-empty and use only letters, digits, '-' and '_'");
        }
        self.cluster.validate()?;
        self.auth()?;
        Ok(())
    }

    pub fn catalog_url(&self) -> String {
        if self.catalog_url.is_empty() {
            format!("sqlite://{}", self.data_dir.join("catalog.db").display())
        } else {
            self.catalog_url.clone()
        }
    }

    pub fn storage_url(&self) -> String {
        if self.storage_url.is_empty() {
            format!("file://{}", self.data_dir.join("segments").display())
        } else {
            self.storage_url.clone()
        }
    }

    /// `ingest.accept_past` and `ingest.accept_future`.
    pub fn accept_window(&self) -> anyhow::Result<(Duration, Duration)> {
        let parse = |name: &str, v: &str| {
            humantime::parse_duration(v).with_context(|| format!("ingest.{name} = {v:?} is not a duration like 7d"))
        };
        Ok((parse("accept_past", &self.ingest.accept_past)?, parse("accept_future", &self.ingest.accept_future)?))
    }

    pub fn receive_timeout(&self) -> anyhow::Result<Duration> {
        let d = humantime::parse_duration(&self.ingest.receive_timeout).with_context(|| {
            format!("ingest.receive_timeout = {:?} is not a duration like 30s", self.ingest.receive_timeout)
        })?;
        anyhow::ensure!(!d.is_zero(), "ingest.receive_timeout must be positive");
        Ok(d)
    }

    pub fn flush_interval(&self) -> anyhow::Result<Duration> {
        humantime::parse_duration(&self.head.flush_interval)
            .with_context(|| format!("head.flush_interval = {:?} is not a duration like 5s", self.head.flush_interval))
    }

    pub fn query_timeout(&self) -> anyhow::Result<Duration> {
        humantime::parse_duration(&self.query.timeout)
            .with_context(|| format!("query.timeout = {:?} is not a duration like 30s", self.query.timeout))
    }

    pub fn max_search_range(&self) -> anyhow::Result<Duration> {
        humantime::parse_duration(&self.query.max_search_range).with_context(|| {
            format!("query.max_search_range = {:?} is not a duration like 7d", self.query.max_search_range)
        })
    }

    /// `None` keeps data forever.
    pub fn retention_period(&self) -> anyhow::Result<Option<Duration>> {
        let d = humantime::parse_duration(&self.retention.period)
            .with_context(|| format!("retention.period = {:?} is not a duration like 14d", self.retention.period))?;
        Ok((!d.is_zero()).then_some(d))
    }

    pub fn eval_interval(&self) -> anyhow::Result<Duration> {
        humantime::parse_duration(&self.alerts.eval_interval).with_context(|| {
            format!("alerts.eval_interval = {:?} is not a duration like 30s", self.alerts.eval_interval)
        })
    }

    /// The SLOs as the evaluator takes them, checked: names, objectives, windows, SLI kinds,
    /// rules, and that every channel they name exists and is well formed.
    pub fn slo_specs(&self) -> anyhow::Result<Vec<tracelight_model::slo::SloSpec>> {
        use tracelight_model::slo::{MINUTE_NS, Rule, Severity, Sli, SloSpec, default_rules};
        let dur = |what: &str, v: &str| -> anyhow::Result<i64> {
            let d =
                humantime::parse_duration(v).with_context(|| format!("{what} = {v:?} is not a duration like 1h"))?;
            let ns = d.as_nanos().min(i64::MAX as u128) as i64;
            if ns < MINUTE_NS || ns % MINUTE_NS != 0 {
                bail!("{what} = {v:?} must be whole minutes");
            }
            Ok(ns)
        };
        let mut channels = std::collections::BTreeSet::new();
        for n in &self.notify {
            let what = format!("notify {:?}", n.name);
            if !channels.insert(n.name.as_str()) || n.name.is_empty() {
                bail!("{what}: channel names must be non-empty and unique");
            }
            if let Err(e) = n.kind.parse::<tracelight_alerts::ChannelKind>() {
                bail!("{what}: {e}");
            }
            if !(n.url.starts_with("https://") || n.url.starts_with("http://")) {
                bail!("{what}: url must be an http:// or https:// URL");
            }
            match (n.kind.as_str(), &n.secret) {
                ("webhook", None) => bail!("{what}: a webhook needs a signing secret"),
                ("webhook", Some(_)) | (_, None) => {}
                (_, Some(_)) => bail!("{what}: only kind = \"webhook\" takes a secret"),
            }
        }
        let mut names = std::collections::BTreeSet::new();
        let mut out = Vec::new();
        for c in &self.slo {
            let what = format!("slo {:?}", c.name);
            let name_ok =
                !c.name.is_empty() && c.name.chars().all(|ch| ch.is_ascii_alphanumeric() || "._-".contains(ch));
            if !name_ok || !names.insert(c.name.as_str()) {
                bail!("{what}: names must be unique and use only letters, digits, '.', '_' and '-'");
            }
            if c.service.is_empty() {
                bail!("{what}: service is required");
            }
            if !(c.objective > 0.0 && c.objective < 100.0) {
                bail!("{what}: objective is a percentage between 0 and 100 (exclusive), e.g. 99.9");
            }
            let window_ns = dur(&format!("{what} window"), &c.window)?;
            let sli = match c.sli.kind.as_str() {
                "error_ratio" => Sli::ErrorRatio { filter: c.sli.filter.clone() },
                "latency" => {
                    let t = c
                        .sli
                        .threshold
                        .as_deref()
                        .with_context(|| format!("{what}: a latency SLI needs a threshold"))?;
                    let d = humantime::parse_duration(t)
                        .with_context(|| format!("{what}: threshold {t:?} is not a duration"))?;
                    Sli::Latency { threshold_ns: d.as_nanos() as i64, filter: c.sli.filter.clone() }
                }
                "metric_ratio" => match (&c.sli.good, &c.sli.total) {
                    (Some(g), Some(t)) if !g.is_empty() && !t.is_empty() => {
                        Sli::MetricRatio { good: g.clone(), total: t.clone() }
                    }
                    _ => bail!("{what}: a metric_ratio SLI needs good and total counter names"),
                },
                k => bail!("{what}: sli.kind must be error_ratio, latency or metric_ratio, not {k:?}"),
            };
            if matches!(sli, Sli::MetricRatio { .. }) && c.sli.filter.is_some() {
                bail!("{what}: a metric_ratio SLI takes no filter");
            }
            let rules = if c.rules.is_empty() {
                default_rules(window_ns)
            } else {
                c.rules
                    .iter()
                    .map(|r| {
                        let severity = match r.severity.as_str() {
                            "page" => Severity::Page,
                            "ticket" => Severity::Ticket,
                            s => bail!("{what}: rule severity must be page or ticket, not {s:?}"),
                        };
                        let long_ns = dur(&format!("{what} rule long_window"), &r.long_window)?;
                        let short_ns = dur(&format!("{what} rule short_window"), &r.short_window)?;
                        if short_ns >= long_ns || r.factor.is_nan() || r.factor <= 0.0 {
                            bail!("{what}: a rule's short window must be shorter than its long one, and its factor positive");
                        }
                        Ok(Rule { severity, long_ns, short_ns, factor: r.factor })
                    })
                    .collect::<anyhow::Result<Vec<_>>>()?
            };
            for ch in &c.notify {
                if !channels.contains(ch.as_str()) {
                    bail!("{what}: notify names channel {ch:?}, which no [[notify]] defines");
                }
            }
            out.push(SloSpec {
                name: c.name.clone(),
                tenant: tracelight_model::Tenant::new(&c.tenant)
                    .map_err(|e| anyhow::anyhow!("{what}: tenant {:?}: {e}", c.tenant))?,
                service: c.service.clone(),
                objective: c.objective,
                window_ns,
                sli,
                rules,
                min_events: c.min_events,
                notify: c.notify.clone(),
            });
        }
        Ok(out)
    }

    /// `alerts.allow_destinations`, parsed.
    pub fn allow_destinations(&self) -> anyhow::Result<Vec<tracelight_alerts::Cidr>> {
        self.alerts
            .allow_destinations
            .iter()
            .map(|c| tracelight_alerts::Cidr::parse(c).map_err(|e| anyhow::anyhow!("alerts.allow_destinations: {e}")))
            .collect()
    }

    /// The UI's address for links in notifications.
    pub fn public_url(&self) -> String {
        if self.alerts.public_url.is_empty() {
            format!("http://{}", self.listen.http)
        } else {
            self.alerts.public_url.trim_end_matches('/').to_string()
        }
    }

    /// Compaction settings.
    pub fn compaction_config(&self) -> anyhow::Result<tracelight_storage::CompactionConfig> {
        let c = &self.compaction;
        let interval = humantime::parse_duration(&c.interval)
            .with_context(|| format!("compaction.interval = {:?} is not a duration like 60s", c.interval))?;
        let min_age = humantime::parse_duration(&c.min_age)
            .with_context(|| format!("compaction.min_age = {:?} is not a duration like 2m", c.min_age))?;
        if interval.is_zero() {
            bail!("compaction.interval must be positive");
        }
        if c.target_bytes < 1 << 20 || c.target_rows < 1000 {
            bail!("compaction.target_bytes must be at least 1 MiB and compaction.target_rows at least 1000");
        }
        if !(2..=1024).contains(&c.max_inputs) || !(2..=1024).contains(&c.min_inputs) {
            bail!("compaction.max_inputs and compaction.min_inputs must be between 2 and 1024");
        }
        Ok(tracelight_storage::CompactionConfig {
            interval,
            min_age,
            target_bytes: c.target_bytes,
            target_rows: c.target_rows,
            max_inputs: c.max_inputs,
            min_inputs: c.min_inputs,
        })
    }

    pub fn retention_check_interval(&self) -> anyhow::Result<Duration> {
        humantime::parse_duration(&self.retention.check_interval).with_context(|| {
            format!("retention.check_interval = {:?} is not a duration like 5m", self.retention.check_interval)
        })
    }

    /// Every key path, e.g. `["listen", "http"]`, as the default config has them.
    pub fn key_paths() -> Vec<Vec<String>> {
        let v = toml::Value::try_from(Config::default()).expect("default config serialises");
        let mut out = Vec::new();
        collect_paths(&v, &mut Vec::new(), &mut out);
        out
    }
}

fn collect_paths(v: &toml::Value, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t {
                prefix.push(k.clone());
                collect_paths(v, prefix, out);
                prefix.pop();
            }
        }
        _ => out.push(prefix.clone()),
    }
}

/// Applies `TRACELIGHT_<SECTION>_<KEY>` variables: `TRACELIGHT_CATALOG_URL`,
/// `TRACELIGHT_LISTEN_HTTP`, `TRACELIGHT_INGEST_TOKENS` (comma-separated), ...
fn apply_env(table: &mut toml::Table, env: &[(String, String)]) -> anyhow::Result<()> {
    let defaults = toml::Value::try_from(Config::default()).expect("default config serialises");
    for path in Config::key_paths() {
        let name = format!("{ENV_PREFIX}{}", path.join("_").to_ascii_uppercase());
        let Some((_, raw)) = env.iter().find(|(k, _)| *k == name) else { continue };
        let mut default = &defaults;
        for p in &path {
            default = &default[p.as_str()];
        }
        let value = match default {
            toml::Value::String(_) => toml::Value::String(raw.clone()),
            toml::Value::Integer(_) => {
                toml::Value::Integer(raw.trim().parse().with_context(|| format!("{name}={raw:?} is not an integer"))?)
            }
            toml::Value::Boolean(_) => toml::Value::Boolean(
                raw.trim().parse().with_context(|| format!("{name}={raw:?} is not true or false"))?,
            ),
            toml::Value::Array(_) => toml::Value::Array(
                raw.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| toml::Value::String(s.to_string()))
                    .collect(),
            ),
            other => bail!("{name}: unsupported type {}", other.type_str()),
        };
        let mut t = &mut *table;
        for p in &path[..path.len() - 1] {
            t = t
                .entry(p.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                .as_table_mut()
                .with_context(|| format!("{p} must be a table"))?;
        }
        t.insert(path.last().unwrap().clone(), value);
    }
    Ok(())
}

mod auth;
mod cluster;
mod storage;
pub use auth::AuthSection;
pub use cluster::ClusterSection;
pub use storage::{CacheSection, JanitorSection, StorageSection};

#[cfg(test)]
mod tests;
