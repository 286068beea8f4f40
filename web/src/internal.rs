//! Node-to-node endpoints: `POST /internal/v1/head`, this node's head for a query node (see
//! [`tracelight_model::peers`]). Behind the cluster token, not an API token.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use tracelight_model::peers::{self, HeadRequest};

use crate::{AppError, AppState};

/// Head answers built at once; more wait (a query node gives up at its `peer_timeout`). Each
/// copies up to the head's size, so this bounds what querying nodes can make an ingester hold.
const CONCURRENT: usize = 4;

pub async fn head(State(s): State<AppState>, headers: HeaderMap, body: Body) -> Result<Response, AppError> {
    static SLOTS: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    s.auth.check_cluster(headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()))?;
    let body = axum::body::to_bytes(body, peers::MAX_REQUEST_BYTES)
        .await
        .map_err(|_| AppError::BadRequest(format!("a head request is at most {} bytes", peers::MAX_REQUEST_BYTES)))?;
    let request: HeadRequest =
        serde_json::from_slice(&body).map_err(|e| AppError::BadRequest(format!("not a head request: {e}")))?;
    let schema = request.answer_schema().map_err(AppError::BadRequest)?;
    let _slot = SLOTS
        .get_or_init(|| tokio::sync::Semaphore::new(CONCURRENT))
        .acquire()
        .await
        .map_err(|e| AppError::Internal(e.to_string()))?;
    let answer = s.query.head(request).await?;
    // Encoding copies every row: off the runtime that serves ingest and probes.
    let batches = answer.batches;
    let bytes = tokio::task::spawn_blocking(move || peers::encode(&schema, &batches))
        .await
        .map_err(|e| AppError::Internal(e.to_string()))?
        .map_err(AppError::Internal)?;
    let mut res = Response::new(Body::from(bytes));
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/vnd.apache.arrow.stream"));
    h.insert(peers::NODE_HEADER, HeaderValue::from_str(&answer.node).map_err(|e| AppError::Internal(e.to_string()))?);
    h.insert(peers::OVERLAP_HEADER, HeaderValue::from(answer.overlap_from_lsn));
    Ok(res.into_response())
}
