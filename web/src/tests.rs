//! Handler tests in-process with a fake query service.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;
use tracelight_model::auth::{Auth, Grant, Scope, Tenants};
use tracelight_model::correlate::{
    ExemplarRef, LogHistogram, LogList, LogQuery, LogRecord, MetricCatalog, MetricChart, MetricInfo, MetricQuery,
    ServiceBucket, ServiceEdge, ServiceMap, ServiceSeries, ServiceStats, SpanEvent, SpanLink, SpanRecord, TraceDetail,
    TraceList, TraceQuery, TraceSummary,
};
use tracelight_model::metrics::{Aggregation, SeriesValues};
use tracelight_model::{Column, QueryError, QueryRequest, QueryResult, QueryService, Tenant};

use super::*;

/// Answers by the SQL text and remembers the last request.
static FAILS_LATER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

#[derive(Default)]
struct Fake(std::sync::Mutex<Option<QueryRequest>>, std::sync::Mutex<String>);

impl Fake {
    fn last_call(&self) -> String {
        self.1.lock().unwrap().clone()
    }
}

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

    async fn trace(&self, tenant: &Tenant, trace_id: &str) -> Result<TraceDetail, QueryError> {
        *self.1.lock().unwrap() = format!("trace {tenant} {trace_id}");
        if trace_id.starts_with("ff") {
            return Err(QueryError::NotFound(format!("no trace {trace_id}")));
        }
        Ok(xss_trace(trace_id))
    }

    async fn traces(&self, q: TraceQuery) -> Result<TraceList, QueryError> {
        *self.1.lock().unwrap() = format!("{q:?}");
        let summary = |id: &str, offset: i64, errors: u64| TraceSummary {
            trace_id: id.into(),
            root_service: Some(format!("front{XSS}")),
            root_name: Some(format!("GET /{XSS}")),
            start_ns: q.start_ns + offset,
            duration_ns: 250_000_000 + offset / 1000,
            span_count: 4,
            error_count: errors,
            services: vec![format!("front{XSS}"), "checkout".into()],
        };
        Ok(TraceList {
            traces: vec![
                summary("5b8efff798038103d269b633813fc60c", 60_000_000_000, 1),
                summary("javascript:alert(1)", 120_000_000_000, 0),
                summary("0af7651916cd43dd8448eb211c80319c", 900_000_000_000, 0),
            ],
            next_cursor: Some("next-page".into()),
            stats: Default::default(),
        })
    }

    async fn logs(&self, q: LogQuery) -> Result<LogList, QueryError> {
        *self.1.lock().unwrap() = format!("{q:?}");
        if q.q.starts_with('"') && !q.q[1..].contains('"') {
            return Err(QueryError::Invalid(format!("unclosed quote in {:?}", q.q)));
        }
        // Answers once, then fails: an error in the middle of a live tail.
        if q.q == "fails-later" && FAILS_LATER.fetch_add(1, std::sync::atomic::Ordering::SeqCst) > 0 {
            return Err(QueryError::Internal("index went away".into()));
        }
        let mut logs = xss_trace("5b8efff798038103d269b633813fc60c").logs;
        logs[0].time_ns = q.end_ns - 5_000_000_000;
        logs.push(LogRecord { trace_id: Some(format!("javascript:{XSS}")), severity_number: 9, ..logs[0].clone() });
        Ok(LogList { logs, next_cursor: Some("abc".into()), stats: Default::default() })
    }

    async fn log_histogram(&self, q: LogQuery, step_ns: i64) -> Result<LogHistogram, QueryError> {
        let n = ((q.end_ns - q.start_ns + step_ns - 1) / step_ns) as usize;
        let counts: Vec<u64> = (0..n as u64).map(|i| i % 7).collect();
        Ok(LogHistogram {
            start_ns: q.start_ns,
            step_ns,
            total: counts.iter().sum(),
            counts,
            stats: Default::default(),
        })
    }

    async fn service_series(
        &self,
        _: &Tenant,
        start_ns: i64,
        _end_ns: i64,
        step_ns: i64,
    ) -> Result<ServiceSeries, QueryError> {
        let buckets = (0..30)
            .map(|i| ServiceBucket {
                service: if i % 2 == 0 { "checkout".into() } else { format!("front{XSS}") },
                bucket: i,
                requests: 10 + i as u64,
                errors: (i % 3) as u64,
                p50_ms: 5.0 + i as f64,
                p95_ms: 20.0 + i as f64,
                p99_ms: 40.0 + 2.0 * i as f64,
            })
            .collect();
        Ok(ServiceSeries { start_ns, step_ns, buckets, stats: Default::default() })
    }

    async fn metric_catalog(&self, _: &Tenant, _: i64, _: i64) -> Result<MetricCatalog, QueryError> {
        Ok(MetricCatalog { metrics: vec![latency_info(), counter_info()], stats: Default::default() })
    }

    async fn metric_chart(&self, q: MetricQuery) -> Result<MetricChart, QueryError> {
        *self.1.lock().unwrap() = format!("{q:?}");
        if q.name != "http.latency" {
            return Err(QueryError::NotFound(format!("metric {:?} has no points in this window", q.name)));
        }
        let n = ((q.end_ns - q.start_ns + q.step_ns - 1) / q.step_ns) as usize;
        let line = |group: &str, k: f64| SeriesValues {
            group: group.into(),
            values: (0..n).map(|i| if i % 5 == 4 { None } else { Some(k * (1.0 + i as f64 / 10.0)) }).collect(),
        };
        Ok(MetricChart {
            info: latency_info(),
            aggregation: q.aggregation.unwrap_or(Aggregation::P95),
            start_ns: q.start_ns,
            step_ns: q.step_ns,
            series: vec![line("/checkout", 20.0), line(&format!("/x{XSS}"), 35.0)],
            attribute_keys: vec!["http.route".into(), "service.name".into()],
            exemplars: vec![ExemplarRef {
                metric: "http.latency".into(),
                service_name: "checkout".into(),
                time_ns: q.start_ns + q.step_ns * 3,
                value: Some(61.5),
                trace_id: "5b8efff798038103d269b633813fc60c".into(),
                span_id: None,
                attributes: Default::default(),
            }],
            stats: Default::default(),
        })
    }

    async fn services(&self, tenant: &Tenant, start_ns: i64, end_ns: i64) -> Result<ServiceMap, QueryError> {
        *self.1.lock().unwrap() = format!("services {tenant} {}", end_ns - start_ns);
        if end_ns - start_ns >= 7 * 86_400 * 1_000_000_000 {
            return Ok(ServiceMap { start_ns, end_ns, services: vec![], edges: vec![], stats: Default::default() });
        }
        let stats = |name: &str, errors: u64| ServiceStats {
            service: name.into(),
            requests: 100,
            rate_per_sec: 1.5,
            errors,
            error_ratio: errors as f64 / 100.0,
            p50_ms: 0.5,
            p95_ms: 12.25,
            p99_ms: 80.0,
        };
        let front = format!("front{XSS}");
        Ok(ServiceMap {
            start_ns,
            end_ns,
            services: vec![stats("checkout", 3), stats(&front, 0)],
            edges: vec![ServiceEdge { parent: front.clone(), child: "checkout".into(), calls: 100, errors: 3 }],
            stats: Default::default(),
        })
    }
}

fn latency_info() -> MetricInfo {
    MetricInfo {
        name: "http.latency".into(),
        kind: "histogram".into(),
        unit: "ms".into(),
        description: format!("request latency {XSS}"),
        monotonic: false,
        points: 120,
        services: vec!["checkout".into()],
    }
}

fn counter_info() -> MetricInfo {
    MetricInfo {
        name: format!("requests{XSS}"),
        kind: "sum".into(),
        unit: "1".into(),
        description: "requests handled".into(),
        monotonic: true,
        points: 60,
        services: vec!["checkout".into()],
    }
}

struct Ready(bool);
impl Readiness for Ready {
    fn ready(&self) -> Result<(), String> {
        if self.0 { Ok(()) } else { Err("WAL failed".into()) }
    }
}

/// An app whose `tokens` read and administer every tenant (the deprecated flat list).
fn app(tokens: Vec<String>, ready: bool) -> (Router, Arc<Fake>) {
    let grants = tokens
        .into_iter()
        .map(|token| Grant { token, tenants: Tenants::All, scopes: vec![Scope::Read, Scope::Admin] })
        .collect();
    app_with(Auth::new(grants), Vec::new(), ready)
}

fn app_with(auth: Auth, slos: Vec<tracelight_model::slo::SloSpec>, ready: bool) -> (Router, Arc<Fake>) {
    let fake = Arc::new(Fake::default());
    let state = AppState {
        query: fake.clone(),
        registry: Registry::new(),
        readiness: Arc::new(Ready(ready)),
        auth: Arc::new(auth),
        slos: Arc::new(tracelight_alerts::SloEngine::new(slos, None, fake.clone(), Vec::new(), String::new())),
        allowed_hosts: Arc::new(vec!["tracelight.internal".into()]),
        cluster: Arc::new(cluster::TwoNodes),
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

fn get(uri: &str) -> Request<Body> {
    Request::builder().uri(uri).body(Body::empty()).unwrap()
}

#[tokio::test]
async fn trace_ids_are_checked_and_lower_cased() {
    let (app, fake) = app(vec![], true);
    let (status, body) = call(&app, get("/api/v1/traces/5B8EFFF798038103D269B633813FC60C")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(fake.last_call(), "trace default 5b8efff798038103d269b633813fc60c");
    for bad in ["xyz", "5b8efff798038103d269b633813fc60", "00000000000000000000000000000000"] {
        let (status, body) = call(&app, get(&format!("/api/v1/traces/{bad}"))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        assert!(body["error"].as_str().unwrap().contains("malformed trace ID"), "{body}");
    }
    let (status, body) = call(&app, get(&format!("/api/v1/traces/{}", "ff".repeat(16)))).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
}

#[tokio::test]
async fn trace_search_parameters_are_parsed_strictly() {
    let (app, fake) = app(vec![], true);
    let uri = "/api/v1/traces?service=checkout&name=POST%20/checkout&min_duration=300ms&status=Error\
               &attr.http.response.status_code=503&start=1000&end=2000&limit=5";
    let (status, body) = call(&app, get(uri)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let q = fake.last_call();
    for part in [
        "service: Some(\"checkout\")",
        "name: Some(\"POST /checkout\")",
        "min_duration_ns: Some(300000000)",
        "status: Some(\"ERROR\")",
        "attributes: [(\"http.response.status_code\", \"503\")]",
        "start_ns: 1000, end_ns: 2000, limit: 5",
    ] {
        assert!(q.contains(part), "{part} not in {q}");
    }
    for (uri, msg) in [
        ("/api/v1/traces?servce=x", "unknown parameter \"servce\""),
        ("/api/v1/traces?status=broken", "status must be"),
        ("/api/v1/traces?min_duration=fast", "min_duration"),
        ("/api/v1/traces?limit=0", "limit must be a positive integer"),
        ("/api/v1/traces?cursor=%21%21", "invalid cursor"),
        ("/api/v1/traces?start=2000&end=1000", "end must be after start"),
        ("/api/v1/traces?start=1000&since=1h", "either start or since"),
        ("/api/v1/logs?trace_id=abc", "malformed trace ID"),
        ("/api/v1/services?window=soon", "window"),
    ] {
        let (status, body) = call(&app, get(uri)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {body}");
        assert!(body["error"].as_str().unwrap().contains(msg), "{uri}: {body}");
    }
}

#[tokio::test]
async fn log_search_takes_lists_and_relative_ranges() {
    let (app, fake) = app(vec![], true);
    let uri = "/api/v1/logs?q=payment%20AND%20timeout&service=checkout,cart&severity=error&since=15m\
               &trace_id=5B8EFFF798038103D269B633813FC60C";
    let (status, body) = call(&app, get(uri)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["next_cursor"], "abc");
    let q = fake.last_call();
    assert!(q.contains("q: \"payment AND timeout\""), "{q}");
    assert!(q.contains("services: [\"checkout\", \"cart\"]"), "{q}");
    assert!(q.contains("severities: [\"ERROR\"]"), "{q}");
    assert!(q.contains("trace_id: Some(\"5b8efff798038103d269b633813fc60c\")"), "{q}");
    let (status, _) = call(&app, get("/api/v1/services?window=15m")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(fake.last_call(), format!("services default {}", 15 * 60 * 1_000_000_000i64));
}

#[tokio::test]
async fn search_routes_need_the_token() {
    let (app, _) = app(vec!["secret-token".into()], true);
    for uri in ["/api/v1/traces", "/api/v1/logs", "/api/v1/services", "/api/v1/traces/5b8efff798038103d269b633813fc60c"]
    {
        let (status, _) = call(&app, get(uri)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{uri}");
    }
}

const XSS: &str = "<script>alert(1)</script>\"><img src=x onerror=alert(2)>";

fn span(id: &str, parent: Option<&str>, start: i64) -> SpanRecord {
    SpanRecord {
        trace_id: "t".into(),
        span_id: id.into(),
        parent_span_id: parent.map(String::from),
        name: format!("op {id} {XSS}"),
        kind: "SERVER".into(),
        service_name: format!("svc-{id}{XSS}"),
        start_ns: start,
        end_ns: start + 1_000_000,
        duration_ns: 1_000_000,
        status_code: if id == "00000000000000c2" { "ERROR".into() } else { "UNSET".into() },
        status_message: Some(XSS.into()),
        attributes: [(format!("key{XSS}"), format!("javascript:alert(3){XSS}"))].into_iter().collect(),
        resource_attributes: Default::default(),
        scope_name: None,
        events: vec![SpanEvent { time_ns: start + 10, name: format!("event{XSS}"), attributes: Default::default() }],
        links: vec![SpanLink {
            trace_id: format!("javascript:{XSS}"),
            span_id: "x".into(),
            attributes: Default::default(),
        }],
    }
}

/// A trace whose every name, key, value and body carries script payloads.
fn xss_trace(trace_id: &str) -> TraceDetail {
    let spans = vec![
        span("00000000000000a1", None, 0),
        span("00000000000000b1", Some("00000000000000a1"), 100),
        span("00000000000000c2", Some("00000000000000a1"), 50),
        span("00000000000000d1", Some("00000000000000c2"), 60),
    ];
    TraceDetail {
        trace_id: trace_id.into(),
        summary: None,
        spans,
        logs: vec![LogRecord {
            time_ns: 5,
            trace_id: Some(trace_id.into()),
            span_id: Some("00000000000000c2".into()),
            severity_number: 17,
            severity_text: Some(format!("ERROR{XSS}")),
            body: Some(format!("body {XSS}")),
            service_name: format!("svc{XSS}"),
            attributes: Default::default(),
            resource_attributes: Default::default(),
        }],
        exemplars: vec![],
        stats: Default::default(),
    }
}

async fn page(app: &Router, uri: &str) -> (StatusCode, axum::http::HeaderMap, String) {
    let res = app.clone().oneshot(get(uri)).await.unwrap();
    let (status, headers) = (res.status(), res.headers().clone());
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8(bytes.to_vec()).unwrap())
}

#[tokio::test]
async fn the_waterfall_nests_spans_and_escapes_every_payload() {
    let (app, _) = app(vec![], true);
    let id = "5b8efff798038103d269b633813fc60c";
    let (status, headers, html) = page(&app, &format!("/traces/{}", id.to_uppercase())).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"), "{csp}");
    // One row per span, children under their parent by start time: a1, c2, d1, b1.
    let order: Vec<usize> =
        ["span-00000000000000a1", "span-00000000000000c2", "span-00000000000000d1", "span-00000000000000b1"]
            .iter()
            .map(|id| html.find(&format!("id=\"{id}\"")).unwrap_or_else(|| panic!("{id} missing")))
            .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}");
    assert_eq!(html.matches("<details class=\"span").count(), 4);
    assert!(html.contains("<details class=\"span error\" id=\"span-00000000000000c2\""));
    // No payload survives unescaped, in text or attributes: no element but ours, no way out of
    // a quoted attribute.
    assert_inert(&html);
    assert!(html.contains("&#60;script&#62;alert(1)&#60;/script&#62;&#34;&#62;&#60;img src=x onerror=alert(2)&#62;"));
    assert!(!html.contains("href=\"javascript"), "links only from well-formed trace IDs");
    assert!(html.contains("rendered on the server in"));
    // The log is listed under the trace and under its span.
    assert_eq!(html.matches("body &#60;script&#62;").count(), 2);
    // The critical path: a1, then c2 (ends last, 50+1ms) before b1 (100+1ms)? b1 ends last.
    assert!(html.contains("<details class=\"span critical\" id=\"span-00000000000000a1\""), "{html}");
    assert!(html.contains("<details class=\"span critical\" id=\"span-00000000000000b1\""), "{html}");
    assert!(html.contains("href=\"/logs?trace_id=5b8efff798038103d269b633813fc60c&#38;start="), "{html}");
}

#[tokio::test]
async fn page_errors_are_pages_with_the_reason() {
    let (app, _) = app(vec![], true);
    let (status, headers, html) = page(&app, "/traces/not-a-trace").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(headers["content-type"].to_str().unwrap().starts_with("text/html"));
    assert!(html.contains("32 hexadecimal digits"), "{html}");
    let (status, _, html) = page(&app, &format!("/traces/{}", "ff".repeat(16))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(html.contains("no trace ffff"), "{html}");
    let res = app.clone().oneshot(get("/trace?id=5B8EFFF798038103D269B633813FC60C")).await.unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(res.headers()["location"], "/traces/5b8efff798038103d269b633813fc60c");
    let (status, _, html) = page(&app, "/?since=7d").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        html.contains("No spans in this window (last 7d)") && html.contains("OTEL_EXPORTER_OTLP_ENDPOINT"),
        "{html}"
    );
    let (status, _, html) = page(&app, "/?since=soon").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(html.contains("since"), "{html}");
    let (status, _, html) = page(&app, "/?window=1h").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(html.contains("unknown parameter"), "{html}");
    let (status, headers, css) = page(&app, "/static/style.css").await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers["content-type"].to_str().unwrap().starts_with("text/css") && css.contains("prefers-color-scheme"));
}

#[tokio::test]
async fn the_services_page_shows_red_numbers_and_the_map() {
    let (app, fake) = app(vec![], true);
    let (status, headers, html) = page(&app, "/?since=6h").await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(headers.contains_key("content-security-policy"));
    assert_eq!(fake.last_call(), format!("services default {}", 6 * 3600 * 1_000_000_000i64));
    assert!(html.contains("<a href=\"/?since=6h\" class=\"on\">6h</a>"), "the chosen window is marked");
    assert!(
        html.contains(
            "<td><a href=\"#svc-checkout\">checkout</a></td><td class=\"num\">100</td><td class=\"num\">1.50</td><td class=\"num err\">3.00%</td>"
        ),
        "{html}"
    );
    assert!(html.contains("<td class=\"num\">500µs</td><td class=\"num\">12.2ms</td><td class=\"num\">80.0ms</td>"));
    assert_eq!(html.matches("r=\"26\"").count(), 2, "two services on the map");
    assert!(html.contains("class=\"edge failing\"") && html.contains("100 calls, 3 errors"));
    // A chart per service and measure, with a line per percentile.
    assert_eq!(html.matches("<figure class=\"chart\">").count(), 6);
    assert!(html.contains("<li><span class=\"swatch c2\"></span>p99</li>"), "{html}");
    assert!(html.contains("href=\"/traces?service=checkout&#38;since=6h\""), "{html}");
    assert_inert(&html);
}

/// Nothing from the telemetry became markup: the only script is ours, no injected element,
/// no `javascript:` link.
fn assert_inert(html: &str) {
    assert_eq!(html.matches("<script").count(), 1, "{html}");
    assert!(html.contains("<script src=\"/static/app.js\" defer></script>"));
    assert!(!html.contains("<img"), "{html}");
    assert!(!html.contains("href=\"javascript") && !html.contains("src=\"javascript"), "{html}");
}

const WINDOW: &str = "start=2026-11-29T10:00:00Z&end=2026-11-29T11:00:00Z";

#[tokio::test]
async fn the_trace_search_page_plots_and_lists_traces() {
    let (app, fake) = app(vec![], true);
    let uri = format!(
        "/traces?service=checkout&min_duration=200ms&status=error&attrs=http.route%3D/pay,%20user.id%3D42&{WINDOW}"
    );
    let (status, _, html) = page(&app, &uri).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    let q = fake.last_call();
    assert!(q.contains("attributes: [(\"http.route\", \"/pay\"), (\"user.id\", \"42\")]"), "{q}");
    assert!(q.contains("min_duration_ns: Some(200000000)") && q.contains("limit: 100"), "{q}");
    // Two well-formed traces become dots and rows; the malformed ID becomes neither.
    assert_eq!(html.matches("<a href=\"/traces/5b8efff798038103d269b633813fc60c\"><circle").count(), 1, "{html}");
    assert_eq!(html.matches("class=\"dot link c8\"").count(), 1, "the error trace is red");
    assert_eq!(html.matches("<tr class=\"failing\">").count(), 1);
    assert_eq!(html.matches("<time datetime=").count(), 2);
    assert!(html.contains("value=\"http.route=/pay, user.id=42\""), "the form keeps its values");
    assert!(html.contains("cursor=next-page") && html.contains("Older traces"), "{html}");
    assert_inert(&html);
    let (status, _, html) = page(&app, "/traces?attrs=novalue").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(html.contains("must look like key=value"), "{html}");
}

#[tokio::test]
async fn the_log_page_has_a_histogram_severity_colours_links_and_tail() {
    let (app, fake) = app(vec![], true);
    let (status, _, html) = page(&app, &format!("/logs?q=payment%20timeout&severity=error&{WINDOW}")).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(fake.last_call().contains("q: \"payment timeout\""));
    // One bar per non-empty minute, each narrowing the window to itself.
    assert!(html.contains("<a href=\"/logs?q=payment%20timeout&#38;severity=ERROR&#38;start="), "{html}");
    assert!(html.matches("class=\"col\"").count() > 40);
    assert!(html.contains("<td class=\"sev error\">") && html.contains("<td class=\"sev info\">"));
    assert_eq!(html.matches("class=\"trace-link\" href=\"/traces/5b8efff798038103d269b633813fc60c\"").count(), 1);
    assert!(html.contains("Search syntax") && html.contains("attributes.user.id:42"));
    assert!(html.contains("data-src=\"/logs/tail?q=payment%20timeout&#38;severity=ERROR&#38;from="), "{html}");
    assert_inert(&html);
}

#[tokio::test]
async fn live_tail_streams_new_records_as_events() {
    let (app, _) = app(vec![], true);
    let res = app.clone().oneshot(get("/logs/tail?q=payment")).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let mut body = res.into_body();
    let mut text = String::new();
    while text.matches("event: log").count() < 2 {
        let frame = tokio::time::timeout(std::time::Duration::from_secs(5), body.frame()).await.unwrap();
        text.push_str(&String::from_utf8_lossy(&frame.unwrap().unwrap().into_data().unwrap()));
    }
    let data: Vec<serde_json::Value> =
        text.lines().filter_map(|l| l.strip_prefix("data: ")).map(|d| serde_json::from_str(d).unwrap()).collect();
    let ids: Vec<&str> = data.iter().map(|d| d["trace_id"].as_str().unwrap()).collect();
    assert!(ids.contains(&"5b8efff798038103d269b633813fc60c"), "{ids:?}");
    assert!(ids.contains(&""), "a malformed trace ID is not passed on: {ids:?}");
    assert!(data[0]["body"].as_str().unwrap().contains("<script>"), "raw in JSON; the script sets it as text");
    let (status, _) = call(&app, get("/logs/tail?from=yesterday")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn live_tail_refuses_bad_input_and_ends_on_an_error() {
    let (app, _) = app(vec![], true);
    // A bad query once streamed 76,000 notices in 3 s; an absurd `from` overflowed.
    for uri in [
        "/logs/tail?q=%22unclosed",
        "/logs/tail?from=-9223372036854775808",
        "/logs/tail?from=9223372036854775807",
        "/logs/tail?from=0",
    ] {
        let (status, body) = call(&app, get(uri)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {body}");
    }
    // An error after the stream started: one notice, then the stream ends.
    let res = app.clone().oneshot(get("/logs/tail?q=fails-later")).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body = tokio::time::timeout(std::time::Duration::from_secs(10), res.into_body().collect())
        .await
        .expect("the stream ends after the error")
        .unwrap()
        .to_bytes();
    let text = String::from_utf8_lossy(&body);
    assert_eq!(text.matches("tail stopped").count(), 1, "{text}");
}

#[tokio::test]
async fn the_metrics_explorer_lists_charts_and_links_exemplars() {
    let (app, fake) = app(vec![], true);
    let (status, _, html) = page(&app, &format!("/metrics/explore?{WINDOW}")).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(html.contains("<td>histogram</td><td>ms</td>") && html.contains("<td>counter</td>"), "{html}");
    assert_inert(&html);
    let uri = format!("/metrics/explore?metric=http.latency&agg=p99&group_by=http.route&{WINDOW}");
    let (status, _, html) = page(&app, &uri).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    let q = fake.last_call();
    assert!(q.contains("aggregation: Some(P99)") && q.contains("group_by: Some(\"http.route\")"), "{q}");
    assert!(html.contains("<option selected>p99</option>") && html.contains("<option>rate</option>"));
    assert!(html.contains("<li><span class=\"swatch c0\"></span>/checkout</li>"), "{html}");
    assert_eq!(html.matches("<a href=\"/traces/5b8efff798038103d269b633813fc60c\"><circle").count(), 1);
    assert!(html.contains("1 exemplar shown"));
    assert_inert(&html);
    let (status, _, html) = page(&app, "/metrics/explore?metric=nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(html.contains("no points in this window"));
    let (status, _, html) = page(&app, "/metrics/explore?metric=http.latency&agg=median").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(html.contains("p99"), "the valid aggregations are listed: {html}");
}

/// A trace of 50,000 spans: a root with 50 children of 999 descendants each, in chains and
/// fans. The page draws at most ROW_BUDGET rows and says how much is collapsed where.
#[test]
fn huge_traces_collapse_to_a_bounded_page() {
    let mut spans = vec![span("0000000000000000", None, 0)];
    for c in 0..50u64 {
        let child = format!("{:016x}", 1 + c * 1000);
        spans.push(span(&child, Some("0000000000000000"), c as i64 * 10));
        for d in 1..1000u64 {
            // Every tenth span hangs under the previous one (depth), the rest fan out.
            let parent = if d % 10 == 0 { format!("{:016x}", 1 + c * 1000 + d - 1) } else { child.clone() };
            spans.push(span(&format!("{:016x}", 1 + c * 1000 + d), Some(&parent), (c * 1000 + d) as i64));
        }
    }
    assert_eq!(spans.len(), 50_001);
    let detail = TraceDetail {
        trace_id: "5b8efff798038103d269b633813fc60c".into(),
        summary: None,
        spans,
        logs: vec![],
        exemplars: vec![],
        stats: Default::default(),
    };
    let p = ui::trace::build(&detail, None);
    // The documented bound (README: at most 1,500 rows), not the implementation's constant.
    assert!(p.rows.len() <= 1500, "{}", p.rows.len());
    // Root and its 50 children are drawn, and the budget is used: the first child's 900 direct
    // children fit and open, and so do the 99 spans chained below them (1 + 50 + 900 + 99).
    let drawn: std::collections::HashSet<&str> = p.rows.iter().map(|r| r.span_id.as_str()).collect();
    assert!(drawn.contains("0000000000000000"));
    assert!((0..50u64).all(|c| drawn.contains(format!("{:016x}", 1 + c * 1000).as_str())));
    assert_eq!(p.rows.len(), 1050);
    // What is not drawn is counted on a collapsed row.
    assert_eq!(p.rows.len() + p.not_drawn, 50_001);
    let hidden: usize = p.rows.iter().map(|r| r.hidden).sum();
    assert_eq!(hidden, p.not_drawn);
    assert!(p.rows.iter().filter(|r| r.hidden > 0).all(|r| r.focus_href.contains("?focus=")));
    let html = askama::Template::render(&p).unwrap();
    assert!(html.len() < 8 << 20, "{} bytes", html.len());
    // Focused on one child's subtree: 1,000 spans, all drawn.
    let f = ui::trace::build(&detail, Some("00000000000003e9"));
    assert_eq!((f.rows.len(), f.not_drawn), (1000, 0));
    assert!(f.focus.is_some());
}

/// Rendered pages compared with reviewed files in `web/snapshots/`; `UPDATE_SNAPSHOTS=1`
/// rewrites them (then review the diff).
#[tokio::test]
async fn rendered_pages_match_their_snapshots() {
    let (app, _) = app(vec![], true);
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("snapshots");
    let pages = [
        ("services", format!("/?{WINDOW}")),
        ("traces", format!("/traces?service=checkout&{WINDOW}")),
        ("trace", "/traces/5b8efff798038103d269b633813fc60c".to_string()),
        ("logs", format!("/logs?q=payment&{WINDOW}")),
        ("metrics", format!("/metrics/explore?metric=http.latency&group_by=http.route&{WINDOW}")),
        ("error", "/traces/nope".to_string()),
    ];
    let mut changed = Vec::new();
    for (name, uri) in pages {
        let (_, _, html) = page(&app, &uri).await;
        let html = normalize(&html);
        let path = dir.join(format!("{name}.html"));
        if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &html).unwrap();
        } else if std::fs::read_to_string(&path).ok().as_deref() != Some(html.as_str()) {
            changed.push(name);
        }
    }
    assert!(
        changed.is_empty(),
        "pages differ from web/snapshots: {changed:?}; rerun with UPDATE_SNAPSHOTS=1 and review"
    );
}

/// Takes out what changes between runs: render times and the tail's start.
fn normalize(html: &str) -> String {
    let mut s = html.to_string();
    for (marker, stop) in [("rendered on the server in ", ' '), ("from=", '"')] {
        let mut out = String::new();
        let mut rest = s.as_str();
        while let Some(i) = rest.find(marker) {
            out.push_str(&rest[..i + marker.len()]);
            out.push('N');
            rest = &rest[i + marker.len()..];
            rest = &rest[rest.find(stop).unwrap_or(rest.len())..];
        }
        out.push_str(rest);
        s = out;
    }
    s
}

#[tokio::test]
async fn without_slos_the_pages_say_how_to_declare_one() {
    let (app, _) = app(vec![], true);
    let (status, _, html) = page(&app, "/slos").await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("No SLOs are declared") && html.contains("[[slo]]"), "{html}");
    let (status, json) = call(&app, get("/api/v1/slos")).await;
    assert_eq!((status, json), (StatusCode::OK, serde_json::json!({"slos": []})));
    let (status, json) = call(&app, get("/api/v1/slos/nope")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{json}");
    let (status, _, html) = page(&app, "/slos/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(html.contains("no SLO named"), "{html}");
}

mod auth;
mod cluster;

/// What an answer may be missing is shown above it, escaped like every other value.
#[test]
fn warnings_are_shown_above_the_answer() {
    let mut stats = tracelight_model::ScanStats::default();
    stats.warn("ingester i2 (10.0.0.7:4319) did not answer (<script>alert(1)</script>)");
    stats.warn("ingester i2 (10.0.0.7:4319) did not answer (<script>alert(1)</script>)");
    let detail = TraceDetail {
        trace_id: "5b8efff798038103d269b633813fc60c".into(),
        summary: None,
        spans: vec![],
        logs: vec![],
        exemplars: vec![],
        stats,
    };
    let html = askama::Template::render(&ui::trace::build(&detail, None)).unwrap();
    assert!(html.contains("This answer may be incomplete."), "{html}");
    assert_eq!(html.matches("ingester i2 (10.0.0.7:4319)").count(), 1, "each warning once");
    assert!(html.contains("&#60;script&#62;") && !html.contains("<script>alert"), "escaped: {html}");
    let quiet = TraceDetail { stats: Default::default(), ..detail };
    let html = askama::Template::render(&ui::trace::build(&quiet, None)).unwrap();
    assert!(!html.contains("may be incomplete"));
}
