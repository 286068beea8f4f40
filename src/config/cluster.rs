//! `[cluster]`: how this node is reached by the others, and how a query node reads the heads
//! of the ingesters (rows acknowledged but not yet in object storage).

use std::time::Duration;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterSection {
    /// The address other nodes and users reach this node's API at. Empty: the bound
    /// `listen.http` address.
    pub advertise: String,
    /// The secret nodes present to each other's internal endpoint (`/internal/v1/head`): the
    /// same on every node (`TRACELIGHT_CLUSTER_TOKEN`). Required for query nodes to read
    /// ingesters' heads once API tokens are configured; while none are, the endpoint is as
    /// open as the API.
    pub token: String,
    /// How long a query waits for an ingester's head before answering without it (and saying so).
    pub peer_timeout: String,
    /// Largest head answer a query node reads from one ingester; past it, that ingester counts
    /// as not answering.
    pub max_answer_bytes: usize,
}

impl Default for ClusterSection {
    fn default() -> Self {
        ClusterSection {
            advertise: String::new(),
            token: String::new(),
            peer_timeout: "5s".into(),
            max_answer_bytes: 512 << 20,
        }
    }
}

impl std::fmt::Debug for ClusterSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterSection")
            .field("advertise", &self.advertise)
            .field("token", &if self.token.is_empty() { "" } else { "***" })
            .field("peer_timeout", &self.peer_timeout)
            .field("max_answer_bytes", &self.max_answer_bytes)
            .finish()
    }
}

impl ClusterSection {
    pub fn validate(&self) -> anyhow::Result<()> {
        let advertise = &self.advertise;
        if advertise.len() > 256 || advertise.chars().any(|c| c.is_whitespace() || c.is_control()) {
            bail!("cluster.advertise must be an address like host:4319 (no spaces, at most 256 characters)");
        }
        let token = &self.token;
        if !token.is_empty() && (token.len() < 16 || token.chars().any(|c| c.is_whitespace() || c.is_control())) {
            bail!("cluster.token must be at least 16 characters, without spaces or control characters");
        }
        self.peer_timeout()?;
        if self.max_answer_bytes < 1 << 20 {
            bail!("cluster.max_answer_bytes must be at least 1 MiB");
        }
        Ok(())
    }

    pub fn peer_timeout(&self) -> anyhow::Result<Duration> {
        let d = humantime::parse_duration(&self.peer_timeout)
            .with_context(|| format!("cluster.peer_timeout {:?} is not a duration like 5s", self.peer_timeout))?;
        if d < Duration::from_millis(100) || d > Duration::from_secs(300) {
            bail!("cluster.peer_timeout must be between 100ms and 5m");
        }
        Ok(d)
    }
}
