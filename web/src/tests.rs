//! Handler tests in-process with a fake query service.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;
use tracelight_model::{Column, QueryError, QueryRequest, QueryResult, QueryService};

use super::*;

/// Answers by the SQL text and remembers the last request.
struct Fake(std::sync::Mutex<Option<QueryRequest>>);

#[async_trait::async_trait]
impl QueryService for Fake {
    async fn sql(&self, request: QueryRequest) -> Result<QueryResult, QueryError> {
        let sql = request.sql.clone();
        *self.0.lock().unwrap() = Some(request);
        match sql.as_str() {
            "bad" => Err(QueryError::Invalid("syntax error near bad".into())),
            "boom" => Err(QueryError::Internal("disk /secret/path failed".into())),
            _ => Ok(QueryResult {
                columns: vec![Column { name: "n".into(), data_type: "Int64".into() }],
                rows: vec![vec![7.into()]],
                ..Default::default()
            }),
        }
    }
}

struct Ready(bool);
impl Readiness for Ready {
    fn ready(&self) -> Result<(), String> {
        if self.0 { Ok(()) } else { Err("WAL failed".into()) }
    }
}

fn app(tokens: Vec<String>, ready: bool) -> (Router, Arc<Fake>) {
    let fake = Arc::new(Fake(Default::default()));
    let state = AppState {
        query: fake.clone(),
        registry: Registry::new(),
        readiness: Arc::new(Ready(ready)),
        api_tokens: Arc::new(tokens),
    };
    (router(state), fake)
}

async fn call(app: &Router, req: Request<Body>) -> (StatusCode, serde_json::Value) {
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    let json =
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, json)
}

fn post(body: &str) -> Request<Body> {
    Request::post("/api/v1/query")
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

#[tokio::test]
async fn query_returns_columns_rows_and_passes_the_time_range() {
    let (app, fake) = app(vec![], true);
    let (status, json) =
        call(&app, post(r#"{"sql":"SELECT 1","start":"2023-11-14T22:13:20Z","end":1700000001000000000}"#)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json["columns"], serde_json::json!(["n"]));
    assert_eq!(json["rows"], serde_json::json!([[7]]));
    let seen = fake.0.lock().unwrap().clone().unwrap();
    assert_eq!((seen.start_ns, seen.end_ns), (Some(1_700_000_000_000_000_000), Some(1_700_000_001_000_000_000)));
    assert_eq!(seen.tenant.unwrap().as_str(), "default");
}

#[tokio::test]
async fn caller_mistakes_are_4xx_and_our_faults_do_not_leak() {
    let (app, _) = app(vec![], true);
    let (status, json) = call(&app, post(r#"{"sql":"bad"}"#)).await;
    assert_eq!((status, json["error"].as_str().unwrap()), (StatusCode::BAD_REQUEST, "syntax error near bad"));
    let (status, json) = call(&app, post(r#"{"sql":"boom"}"#)).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(!json.to_string().contains("secret"), "{json}");
    let (status, _) = call(&app, post(r#"{"sql":"x","start":"yesterday"}"#)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = call(&app, post(r#"{"sqll":"x"}"#)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = call(&app, post("not json")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = call(&app, Request::get("/nope").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let req = Request::post("/api/v1/query")
        .header("x-tracelight-tenant", "../etc")
        .header("content-type", "application/json");
    let (status, _) = call(&app, req.body(Body::from(r#"{"sql":"x"}"#)).unwrap()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn api_tokens_are_enforced() {
    let (app, _) = app(vec!["t0k3n".into()], true);
    let (status, _) = call(&app, post(r#"{"sql":"SELECT 1"}"#)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let mut req = post(r#"{"sql":"SELECT 1"}"#);
    req.headers_mut().insert("authorization", "Bearer t0k3n".parse().unwrap());
    let (status, _) = call(&app, req).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let (app, _) = app(vec![], false);
    let (status, _) = call(&app, Request::get("/healthz").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = call(&app, Request::get("/readyz").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.as_str().unwrap().contains("WAL failed"));
    let (status, _) = call(&app, Request::get("/metrics").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
}
