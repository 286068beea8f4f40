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

/// What a node does (`--role`, `TRACELIGHT_ROLE`): any of `ingest` (OTLP receivers, WAL,
/// head, flush), `query` (API, UI, SQL, search), `compact` (compaction, retention, janitor)
/// and `alert` (SLO evaluation and delivery); `all` is every one (a single node).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    pub ingest: bool,
    pub query: bool,
    pub compact: bool,
    pub alert: bool,
}

impl Roles {
    pub const ALL: Roles = Roles { ingest: true, query: true, compact: true, alert: true };

    /// Parses flags as given: each may be comma-separated, repeats are allowed.
    pub fn parse<S: AsRef<str>>(given: &[S]) -> anyhow::Result<Roles> {
        let mut r = Roles { ingest: false, query: false, compact: false, alert: false };
        for word in given.iter().flat_map(|g| g.as_ref().split(',')).map(str::trim).filter(|w| !w.is_empty()) {
            match word {
                "all" => r = Roles::ALL,
                "ingest" => r.ingest = true,
                "query" => r.query = true,
                "compact" => r.compact = true,
                "alert" => r.alert = true,
                other => anyhow::bail!(
                    "unknown role {:?}: use all, ingest, query, compact or alert (comma-separated or repeated)",
                    other.chars().take(40).collect::<String>()
                ),
            }
        }
        if r == (Roles { ingest: false, query: false, compact: false, alert: false }) {
            return Ok(Roles::ALL);
        }
        Ok(r)
    }
}

impl std::fmt::Display for Roles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if *self == Roles::ALL {
            return f.write_str("all");
        }
        let names: Vec<&str> =
            [(self.ingest, "ingest"), (self.query, "query"), (self.compact, "compact"), (self.alert, "alert")]
                .into_iter()
                .filter_map(|(on, n)| on.then_some(n))
                .collect();
        f.write_str(&names.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::Roles;

    #[test]
    fn roles_parse_from_repeated_and_comma_separated_flags() {
        assert_eq!(Roles::parse::<&str>(&[]).unwrap(), Roles::ALL);
        assert_eq!(Roles::parse(&["all"]).unwrap().to_string(), "all");
        let r = Roles::parse(&["ingest", "query, alert"]).unwrap();
        assert_eq!((r.ingest, r.query, r.compact, r.alert), (true, true, false, true));
        assert_eq!(r.to_string(), "ingest,query,alert");
        assert_eq!(Roles::parse(&["compact,compact"]).unwrap().to_string(), "compact");
        assert_eq!(Roles::parse(&["ingest,query,compact,alert"]).unwrap().to_string(), "all");
        let e = Roles::parse(&["ingest,writer"]).unwrap_err().to_string();
        assert!(e.contains("\"writer\"") && e.contains("ingest, query"), "{e}");
    }
}
