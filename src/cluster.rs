//! This node in the catalog's registry: a heartbeat every 10 s, and the registry as the web
//! crate reads it (`/api/v1/cluster`).

use std::time::Duration;

use tracelight_model::cluster::{ClusterView, HEARTBEAT_EVERY_NS, NodeStatus, is_up};
use tracelight_model::time::now_ns;
use tracelight_storage::{Catalog, NodeInfo};

/// Nodes silent this long are removed from the registry (a node that comes back registers
/// again); looked for once an hour, not at every beat.
const FORGET_AFTER_NS: i64 = 7 * 24 * 3_600_000_000_000;
const FORGET_EVERY_BEATS: u64 = 360;

pub struct Registry(pub Catalog);

#[async_trait::async_trait]
impl ClusterView for Registry {
    async fn nodes(&self, now_ns: i64) -> Result<Vec<NodeStatus>, String> {
        let nodes = self.0.nodes().await.map_err(|e| e.to_string())?;
        Ok(nodes
            .into_iter()
            .map(|n| NodeStatus {
                roles: n.roles.split(',').map(str::to_string).collect(),
                up: is_up(now_ns, n.heartbeat_ns),
                node: n.node,
                advertise: n.advertise,
                version: n.version,
                started_at_ns: n.started_at_ns,
                heartbeat_ns: n.heartbeat_ns,
            })
            .collect())
    }
}

/// Registers `node` and refreshes its heartbeat until `stop`; a failed beat is logged and
/// tried again at the next tick (the catalog may be briefly unreachable).
pub async fn heartbeat(catalog: Catalog, mut node: NodeInfo, stop: impl std::future::Future<Output = ()>) {
    tokio::pin!(stop);
    let mut tick = tokio::time::interval(Duration::from_nanos(HEARTBEAT_EVERY_NS as u64));
    for beat in 0u64.. {
        tokio::select! {
            _ = &mut stop => return,
            _ = tick.tick() => {}
        }
        node.heartbeat_ns = now_ns();
        if let Err(e) = catalog.heartbeat(&node).await {
            tracing::warn!(error = %e, "node heartbeat failed; retrying in 10 s");
            continue;
        }
        if beat % FORGET_EVERY_BEATS != 0 {
            continue;
        }
        if let Err(e) = catalog.forget_nodes_before(node.heartbeat_ns - FORGET_AFTER_NS).await {
            tracing::warn!(error = %e, "cannot forget long-gone nodes");
        }
    }
}
