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

/// `POST /internal/v1/head` takes the cluster token only (never an API token), reads a
/// bounded body, and refuses what is not a head request before any query runs.
#[tokio::test]
async fn the_head_endpoint_wants_the_cluster_token_and_a_bounded_request() {
    let post = |token: Option<&str>, body: Vec<u8>| {
        let mut r = Request::post(tracelight_model::peers::HEAD_PATH).header("content-type", "application/json");
        if let Some(t) = token {
            r = r.header("authorization", format!("Bearer {t}"));
        }
        r.body(Body::from(body)).unwrap()
    };
    let valid = serde_json::to_vec(&tracelight_model::peers::HeadRequest::new(
        &Tenant::default_tenant(),
        tracelight_model::Signal::Spans,
        0,
        10,
        tracelight_model::peers::HeadKind::Rows { columns: None },
    ))
    .unwrap();
    // Open (no token anywhere): as open as the API. The fake keeps no head: 404.
    let (open, _) = app(vec![], true);
    let (status, body) = call(&open, post(None, valid.clone())).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    // API tokens but no cluster token: refused, even with an admin token, and told why.
    let (guarded, _) = app(vec!["admin-token".into()], true);
    let (status, body) = call(&guarded, post(Some("admin-token"), valid.clone())).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body["error"].as_str().unwrap().contains("cluster.token"), "{body}");
    // With a cluster token: that token only.
    let secret = "cluster-secret-123";
    let (node, _) = app_with(Auth::default().with_cluster_token(secret), Vec::new(), true);
    for wrong in [None, Some("admin-token"), Some("cluster-secret-12")] {
        assert_eq!(call(&node, post(wrong, valid.clone())).await.0, StatusCode::UNAUTHORIZED, "{wrong:?}");
    }
    assert_eq!(call(&node, post(Some(secret), valid.clone())).await.0, StatusCode::NOT_FOUND);
    // Garbage, unknown fields, a huge body: 400 before any query.
    let huge = format!(r#"{{"pad":"{}"}}"#, "x".repeat(300 << 10)).into_bytes();
    let unknown = String::from_utf8(valid.clone()).unwrap().replace(r#""v":1"#, r#""v":1,"evil":true"#).into_bytes();
    for bad in [b"{".to_vec(), unknown, huge, b"{\"v\":1}".to_vec()] {
        let (status, body) = call(&node, post(Some(secret), bad)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    }
}
