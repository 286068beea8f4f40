//! The node registry: each node's roles, advertised address and heartbeat.

use sqlx::Row;

use super::{Catalog, Pool};
use crate::error::StorageError;

/// Most nodes listed at once (a registry is a handful of rows; this bounds a damaged one).
const MAX_NODES: i64 = 10_000;

/// One node as it registered itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    pub node: String,
    /// Comma-separated roles (`all`, or some of `ingest,query,compact,alert`).
    pub roles: String,
    /// The address other nodes and users reach its HTTP API at.
    pub advertise: String,
    pub version: String,
    pub started_at_ns: i64,
    pub heartbeat_ns: i64,
}

impl Catalog {
    /// Registers `info`, or refreshes its row (roles, address, version and start time follow
    /// a restart), in one upsert.
    pub async fn heartbeat(&self, info: &NodeInfo) -> Result<(), StorageError> {
        on_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO nodes (node, roles, advertise, version, started_at_ns, heartbeat_ns)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (node) DO UPDATE SET roles = excluded.roles, advertise = excluded.advertise,
                     version = excluded.version, started_at_ns = excluded.started_at_ns,
                     heartbeat_ns = excluded.heartbeat_ns",
            )
            .bind(&info.node).bind(&info.roles).bind(&info.advertise).bind(&info.version)
            .bind(info.started_at_ns).bind(info.heartbeat_ns)
            .execute(pool).await.map_err(|e| StorageError::catalog("node heartbeat", e))?;
        });
        Ok(())
    }

    /// Every registered node, by name.
    pub async fn nodes(&self) -> Result<Vec<NodeInfo>, StorageError> {
        let rows = on_pool!(self, pool => {
            sqlx::query(
                "SELECT node, roles, advertise, version, started_at_ns, heartbeat_ns FROM nodes ORDER BY node LIMIT $1",
            )
            .bind(MAX_NODES)
            .fetch_all(pool).await.map_err(|e| StorageError::catalog("list nodes", e))?
            .iter()
            .map(|r| NodeInfo {
                node: r.get(0),
                roles: r.get(1),
                advertise: r.get(2),
                version: r.get(3),
                started_at_ns: r.get(4),
                heartbeat_ns: r.get(5),
            })
            .collect::<Vec<_>>()
        });
        Ok(rows)
    }

    /// Removes `node` from the registry (a clean stop).
    pub async fn forget_node(&self, node: &str) -> Result<(), StorageError> {
        on_pool!(self, pool => {
            sqlx::query("DELETE FROM nodes WHERE node = $1")
                .bind(node)
                .execute(pool).await.map_err(|e| StorageError::catalog("forget node", e))?;
        });
        Ok(())
    }

    /// Removes nodes whose last heartbeat is before `before_ns` (gone for good: a node that
    /// comes back registers again). Returns how many.
    pub async fn forget_nodes_before(&self, before_ns: i64) -> Result<u64, StorageError> {
        let n = on_pool!(self, pool => {
            sqlx::query("DELETE FROM nodes WHERE heartbeat_ns < $1")
                .bind(before_ns)
                .execute(pool).await.map_err(|e| StorageError::catalog("forget nodes", e))?
                .rows_affected()
        });
        Ok(n)
    }
}
