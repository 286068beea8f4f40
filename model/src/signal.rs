//! Signals, tenants and the batch that carries one signal's rows for one tenant.

use std::fmt;

use arrow::record_batch::RecordBatch;

/// One of the three kinds of telemetry. Each has its own table, time column and directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Signal {
    Spans,
    Logs,
    Metrics,
}

impl Signal {
    pub const ALL: [Signal; 3] = [Signal::Spans, Signal::Logs, Signal::Metrics];

    /// The SQL table name, which is also the storage directory name.
    pub fn table(self) -> &'static str {
        match self {
            Signal::Spans => "spans",
            Signal::Logs => "logs",
            Signal::Metrics => "metrics",
        }
    }

    /// The column that places a row in a time partition and that time-range filters prune on.
    pub fn time_column(self) -> &'static str {
        match self {
            Signal::Spans => "start_time",
            Signal::Logs => "time",
            Signal::Metrics => "time",
        }
    }

    /// Stable one-byte code used in the WAL.
    pub fn code(self) -> u8 {
        match self {
            Signal::Spans => 1,
            Signal::Logs => 2,
            Signal::Metrics => 3,
        }
    }

    pub fn from_code(code: u8) -> Option<Signal> {
        match code {
            1 => Some(Signal::Spans),
            2 => Some(Signal::Logs),
            3 => Some(Signal::Metrics),
            _ => None,
        }
    }

    pub fn from_table(name: &str) -> Option<Signal> {
        Signal::ALL.into_iter().find(|s| s.table() == name)
    }

    pub fn schema(self) -> arrow::datatypes::SchemaRef {
        match self {
            Signal::Spans => crate::schema::spans_schema(),
            Signal::Logs => crate::schema::logs_schema(),
            Signal::Metrics => crate::schema::metrics_schema(),
        }
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.table())
    }
}

/// The request header (HTTP) or metadata key (gRPC) that selects a tenant, on every port.
pub const TENANT_HEADER: &str = "x-tracelight-tenant";

/// A validated tenant name. Tenant names end up in storage paths and catalog rows, so they are
/// restricted to `[a-z0-9_-]{1,64}` and never start with `-` or `_`: no `..`, no `/`, no `%`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Tenant(String);

impl TryFrom<String> for Tenant {
    type Error = TenantError;
    fn try_from(s: String) -> Result<Tenant, TenantError> {
        Tenant::new(&s)
    }
}

impl From<Tenant> for String {
    fn from(t: Tenant) -> String {
        t.0
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "invalid tenant name {0:?}: use 1 to 64 characters from a-z, 0-9, '-' and '_', starting with a letter or digit"
)]
pub struct TenantError(pub String);

impl Tenant {
    pub const DEFAULT: &'static str = "default";

    pub fn new(name: &str) -> Result<Tenant, TenantError> {
        let ok = !name.is_empty()
            && name.len() <= 64
            && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
            && name.as_bytes()[0].is_ascii_alphanumeric();
        if ok { Ok(Tenant(name.to_string())) } else { Err(TenantError(name.chars().take(80).collect())) }
    }

    /// The tenant a request names in [`TENANT_HEADER`]: absent or empty means the default.
    pub fn from_header(value: Option<&str>) -> Result<Tenant, TenantError> {
        match value {
            None | Some("") => Ok(Tenant::default_tenant()),
            Some(v) => Tenant::new(v),
        }
    }

    pub fn default_tenant() -> Tenant {
        Tenant(Self::DEFAULT.to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for Tenant {
    fn default() -> Self {
        Tenant::default_tenant()
    }
}

impl fmt::Display for Tenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Rows of one signal for one tenant, in that signal's schema.
#[derive(Debug, Clone)]
pub struct SignalBatch {
    pub tenant: Tenant,
    pub signal: Signal,
    pub batch: RecordBatch,
}

impl SignalBatch {
    pub fn num_rows(&self) -> usize {
        self.batch.num_rows()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_names_that_could_escape_a_path_are_refused() {
        for bad in ["", "..", "../etc", "a/b", "%2e%2e%2f", "%252e", "A", "-x", "_x", "a b", &"a".repeat(65)] {
            assert!(Tenant::new(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["default", "team-a", "t_1", "0abc"] {
            assert_eq!(Tenant::new(good).unwrap().as_str(), good);
        }
    }

    #[test]
    fn signal_codes_round_trip() {
        for s in Signal::ALL {
            assert_eq!(Signal::from_code(s.code()), Some(s));
            assert_eq!(Signal::from_table(s.table()), Some(s));
        }
        assert_eq!(Signal::from_code(0), None);
    }
}
