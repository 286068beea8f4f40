//! The nodes of a deployment as the catalog's registry lists them (`/api/v1/cluster`).

use serde::Serialize;

/// A node that is silent this long is shown as down (three missed heartbeats).
pub const HEARTBEAT_EVERY_NS: i64 = 10_000_000_000;
pub const DOWN_AFTER_NS: i64 = 3 * HEARTBEAT_EVERY_NS;

/// One registered node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeStatus {
    pub node: String,
    pub roles: Vec<String>,
    /// Where its HTTP API is reached.
    pub advertise: String,
    pub version: String,
    pub started_at_ns: i64,
    pub heartbeat_ns: i64,
    /// Its last heartbeat is at most [`DOWN_AFTER_NS`] old.
    pub up: bool,
}

/// Whether a node whose last heartbeat was at `heartbeat_ns` counts as up at `now_ns`.
pub fn is_up(now_ns: i64, heartbeat_ns: i64) -> bool {
    now_ns.saturating_sub(heartbeat_ns) <= DOWN_AFTER_NS
}

/// The registry, read by the web crate.
#[async_trait::async_trait]
pub trait ClusterView: Send + Sync {
    /// Every registered node, by name, with `up` judged at `now_ns`.
    async fn nodes(&self, now_ns: i64) -> Result<Vec<NodeStatus>, String>;
}
