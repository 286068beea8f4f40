//! `GET /api/v1/traces/{id}`, `/api/v1/traces`, `/api/v1/logs`, `/api/v1/services`: the
//! correlation queries over HTTP. Parameters are parsed here once, strictly (an unknown
//! parameter or a malformed ID is a 400 that says what is wrong), for the API and the UI.

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use tracelight_model::correlate::{
    Cursor, LogList, LogQuery, ServiceMap, TraceDetail, TraceList, TraceQuery, parse_trace_id,
};
use tracelight_model::time::{now_ns, parse_duration, parse_time_ns};

use crate::api::authorize;
use crate::{AppError, AppState};

/// Query-string parameters in order, repeats kept.
pub struct Params(Vec<(String, String)>);

impl Params {
    pub fn new(pairs: Vec<(String, String)>) -> Params {
        Params(pairs)
    }

    /// The same parameters without `key`.
    pub fn without(&self, key: &str) -> Params {
        Params(self.0.iter().filter(|(k, _)| k != key).cloned().collect())
    }

    /// Refuses parameters outside `known` (and outside `attr.*` when `attrs`).
    pub fn only(&self, known: &[&str], attrs: bool) -> Result<(), AppError> {
        for (k, _) in &self.0 {
            let attr = attrs && k.starts_with("attr.") && k.len() > 5;
            if !(known.contains(&k.as_str()) || attr) {
                let mut all = known.join(", ");
                if attrs {
                    all.push_str(", attr.<key>");
                }
                return Err(AppError::BadRequest(format!("unknown parameter {k:?}; this route takes {all}")));
            }
        }
        Ok(())
    }

    /// The last non-empty value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().rev().find(|(k, v)| k == key && !v.trim().is_empty()).map(|(_, v)| v.trim())
    }

    /// Every value of `key`, comma-separated lists split.
    pub fn all(&self, key: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .flat_map(|(_, v)| v.split(','))
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .collect()
    }

    pub fn attributes(&self) -> Vec<(String, String)> {
        self.0.iter().filter_map(|(k, v)| Some((k.strip_prefix("attr.")?.to_string(), v.clone()))).collect()
    }

    pub fn duration_ns(&self, key: &str) -> Result<Option<i64>, AppError> {
        self.get(key)
            .map(|v| {
                parse_duration(v)
                    .map(|d| d.as_nanos().min(i64::MAX as u128) as i64)
                    .map_err(|e| AppError::BadRequest(format!("{key}: {e}")))
            })
            .transpose()
    }

    /// `[start, end)`: `start`/`end` (RFC 3339 or Unix ns), or `since` (a duration back from
    /// `end`), or by default the last `default`.
    pub fn time_range(&self, since_key: &str, default: Duration) -> Result<(i64, i64), AppError> {
        let time = |key: &str| {
            self.get(key).map(|v| parse_time_ns(v).map_err(|e| AppError::BadRequest(format!("{key}: {e}")))).transpose()
        };
        let end = time("end")?.unwrap_or_else(|| now_ns() + 1);
        let start = match (time("start")?, self.duration_ns(since_key)?) {
            (Some(_), Some(_)) => {
                return Err(AppError::BadRequest(format!("give either start or {since_key}, not both")));
            }
            (Some(s), None) => s,
            (None, Some(d)) => end.saturating_sub(d),
            (None, None) => end.saturating_sub(default.as_nanos() as i64),
        };
        if end <= start {
            return Err(AppError::BadRequest("end must be after start".into()));
        }
        Ok((start, end))
    }

    pub fn limit(&self, default: usize) -> Result<usize, AppError> {
        match self.get("limit") {
            None => Ok(default),
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| AppError::BadRequest(format!("limit must be a positive integer, not {v:?}"))),
        }
    }

    pub fn cursor(&self) -> Result<Option<Cursor>, AppError> {
        self.get("cursor").map(|c| Cursor::decode(c).map_err(AppError::BadRequest)).transpose()
    }
}

fn id(s: &str) -> Result<String, AppError> {
    parse_trace_id(s).map_err(AppError::BadRequest)
}

/// Parses the trace search parameters (shared with the UI).
pub fn trace_query(p: &Params) -> Result<TraceQuery, AppError> {
    p.only(
        &["service", "name", "min_duration", "max_duration", "status", "start", "end", "since", "limit", "cursor"],
        true,
    )?;
    let (start_ns, end_ns) = p.time_range("since", Duration::from_secs(3600))?;
    let status = match p.get("status").map(|s| s.to_ascii_uppercase()) {
        None => None,
        Some(s) if ["ERROR", "OK", "UNSET"].contains(&s.as_str()) => Some(s),
        Some(s) => return Err(AppError::BadRequest(format!("status must be error, ok or unset, not {s:?}"))),
    };
    Ok(TraceQuery {
        service: p.get("service").map(String::from),
        name: p.get("name").map(String::from),
        min_duration_ns: p.duration_ns("min_duration")?,
        max_duration_ns: p.duration_ns("max_duration")?,
        status,
        attributes: p.attributes(),
        start_ns,
        end_ns,
        limit: p.limit(20)?,
        cursor: p.cursor()?,
        tenant: None,
    })
}

/// Parses the log search parameters (shared with the UI).
pub fn log_query(p: &Params) -> Result<LogQuery, AppError> {
    p.only(&["q", "service", "severity", "trace_id", "start", "end", "since", "limit", "cursor"], false)?;
    let (start_ns, end_ns) = p.time_range("since", Duration::from_secs(3600))?;
    Ok(LogQuery {
        q: p.get("q").unwrap_or("").to_string(),
        services: p.all("service"),
        severities: p.all("severity").into_iter().map(|s| s.to_ascii_uppercase()).collect(),
        trace_id: p.get("trace_id").map(id).transpose()?,
        start_ns,
        end_ns,
        limit: p.limit(50)?,
        cursor: p.cursor()?,
        tenant: None,
    })
}

pub async fn trace(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(trace_id): Path<String>,
) -> Result<Json<TraceDetail>, AppError> {
    let tenant = authorize(&state, &headers)?;
    Ok(Json(state.query.trace(&tenant, &id(&trace_id)?).await?))
}

pub async fn traces(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Json<TraceList>, AppError> {
    let tenant = authorize(&state, &headers)?;
    let mut q = trace_query(&Params::new(pairs))?;
    q.tenant = Some(tenant);
    Ok(Json(state.query.traces(q).await?))
}

pub async fn logs(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Json<LogList>, AppError> {
    let tenant = authorize(&state, &headers)?;
    let mut q = log_query(&Params::new(pairs))?;
    q.tenant = Some(tenant);
    Ok(Json(state.query.logs(q).await?))
}

pub async fn services(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Json<ServiceMap>, AppError> {
    let tenant = authorize(&state, &headers)?;
    let p = Params::new(pairs);
    p.only(&["window", "start", "end"], false)?;
    let (start, end) = p.time_range("window", Duration::from_secs(3600))?;
    Ok(Json(state.query.services(&tenant, start, end).await?))
}
