//! `GET /api/v1/slos[/{name}]`: the SLOs of the caller's tenant as the evaluator last saw
//! them (see the alerts crate).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use serde_json::{Value, json};
use tracelight_alerts::SloEngine;
use tracelight_model::slo::{SloSpec, window_label};

use crate::api::authorize;
use crate::{AppError, AppState};

/// `GET /api/v1/slos`: every SLO's latest evaluation.
pub async fn list(State(state): State<AppState>, headers: HeaderMap) -> Result<Json<Value>, AppError> {
    let tenant = authorize(&state, &headers)?;
    let slos: Vec<Value> = state.slos.specs_of(&tenant).map(|s| describe(&state.slos, s)).collect();
    Ok(Json(json!({ "slos": slos })))
}

/// `GET /api/v1/slos/{name}`.
pub async fn one(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<Value>, AppError> {
    let tenant = authorize(&state, &headers)?;
    let spec = state
        .slos
        .specs_of(&tenant)
        .find(|s| s.name == name)
        .ok_or_else(|| AppError::NotFound(format!("no SLO named {name:?}; GET /api/v1/slos lists them")))?;
    Ok(Json(describe(&state.slos, spec)))
}

fn describe(engine: &SloEngine, spec: &SloSpec) -> Value {
    let mut v = match engine.status(&spec.name) {
        Some(s) => serde_json::to_value(&s).unwrap_or(Value::Null),
        None => json!({
            "name": spec.name,
            "service": spec.service,
            "objective": spec.objective,
            "window": window_label(spec.window_ns),
            "sli": null,
            "budget_remaining": null,
            "burn_rates": {},
            "alerts": [],
            "evaluated_at_ns": null,
        }),
    };
    if let Some(o) = v.as_object_mut() {
        o.insert("notify".into(), json!(spec.notify));
        o.insert("error".into(), json!(engine.error(&spec.name)));
        o.insert("url".into(), json!(engine.slo_url(&spec.name)));
    }
    v
}
