//! `/cluster`: the nodes registered in the catalog, their roles, addresses and whether they
//! are up. Deployment details, not tenant data: the `admin` scope, as `/api/v1/cluster`.

use askama::Template;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use tracelight_model::cluster::DOWN_AFTER_NS;
use tracelight_model::time::now_ns;

use super::{Clock, PageError, Stamp, render};
use crate::{AppError, AppState};

pub struct NodeRow {
    pub node: String,
    pub roles: String,
    pub advertise: String,
    pub version: String,
    pub started: Stamp,
    pub heartbeat: Stamp,
    pub up: bool,
}

#[derive(Template)]
#[template(path = "cluster.html")]
pub struct ClusterPage {
    pub nodes: Vec<NodeRow>,
    pub down_after: String,
    pub render_ms: String,
}

pub async fn page(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, PageError> {
    let clock = Clock::start();
    super::login::authorize_admin_page(&state, &headers)?;
    let nodes = state.cluster.nodes(now_ns()).await.map_err(AppError::Internal)?;
    let nodes = nodes
        .into_iter()
        .map(|n| NodeRow {
            roles: n.roles.join(", "),
            started: Stamp::new(n.started_at_ns),
            heartbeat: Stamp::new(n.heartbeat_ns),
            up: n.up,
            node: n.node,
            advertise: n.advertise,
            version: n.version,
        })
        .collect();
    let mut page =
        ClusterPage { nodes, down_after: format!("{} s", DOWN_AFTER_NS / 1_000_000_000), render_ms: String::new() };
    page.render_ms = clock.ms();
    Ok(render(&page))
}
