//! `/api/v1/cluster` and the `/cluster` page over a fake registry.

use super::*;

/// A registry of two nodes: one that beat just now, one silent for a minute.
pub(super) struct TwoNodes;

#[async_trait::async_trait]
impl tracelight_model::cluster::ClusterView for TwoNodes {
    async fn nodes(&self, now_ns: i64) -> Result<Vec<tracelight_model::cluster::NodeStatus>, String> {
        let node = |name: &str, beat: i64| tracelight_model::cluster::NodeStatus {
            node: name.into(),
            roles: vec!["all".into()],
            advertise: format!("{name}:4319"),
            version: "0.1.0".into(),
            started_at_ns: 0,
            heartbeat_ns: beat,
            up: tracelight_model::cluster::is_up(now_ns, beat),
        };
        Ok(vec![node("a", now_ns), node("b", now_ns - 60_000_000_000)])
    }
}

#[tokio::test]
async fn the_cluster_lists_nodes_up_and_down_to_admins_only() {
    let (open, _) = app(vec![], true);
    let (status, body) = call(&open, get("/api/v1/cluster")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let nodes = body["nodes"].as_array().unwrap();
    let up: Vec<_> = nodes.iter().map(|n| (n["node"].as_str().unwrap(), n["up"].as_bool().unwrap())).collect();
    assert_eq!(up, [("a", true), ("b", false)]);
    assert_eq!(nodes[0]["advertise"], "a:4319");

    let (guarded, _) = app(vec!["tok".into()], true);
    let (status, _) = call(&guarded, get("/api/v1/cluster")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let with = |token: &str| {
        Request::get("/api/v1/cluster").header("authorization", format!("Bearer {token}")).body(Body::empty()).unwrap()
    };
    let (status, _) = call(&guarded, with("tok")).await;
    assert_eq!(status, StatusCode::OK);
    let reader = Grant { token: "reader".into(), tenants: Tenants::All, scopes: vec![Scope::Read] };
    let (read_only, _) = app_with(Auth::new(vec![reader]), Vec::new(), true);
    let (status, _) = call(&read_only, with("reader")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // The page: both nodes, the silent one marked down; the same scope.
    let (status, _, html) = page(&open, "/cluster").await;
    assert_eq!(status, StatusCode::OK);
    let row = |name: &str| html.split("<tr").find(|r| r.contains(&format!("<td>{name}</td>"))).unwrap().to_string();
    assert!(row("a").contains("a:4319") && row("a").contains("<td>up</td>"), "{html}");
    assert!(row("b").contains("class=\"failing\"") && row("b").contains("down"), "{html}");
    let req = Request::get("/cluster").header("authorization", "Bearer reader").body(Body::empty()).unwrap();
    assert_eq!(read_only.clone().oneshot(req).await.unwrap().status(), StatusCode::FORBIDDEN);
}
