//! The UI in a real browser: headless Chromium driven over WebDriver (chromedriver), against
//! the real server with data ingested over OTLP. `.ci/run` installs Debian's `chromium` and
//! `chromium-driver`; elsewhere the tests say they are skipped when the driver is missing.
//!
//! - the waterfall shows one row per span in depth-first nesting order;
//! - a log search finds a needle, and its trace link opens that trace;
//! - live tail shows a record sent after the page opened;
//! - telemetry carrying script payloads in every field renders as text on every page: no
//!   alert opens, no element is injected, the only script is ours.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::trace::v1::Span;
use serde_json::{Value, json};

use crate::harness::Server;
use crate::otlp::{self, kv, s};
use crate::transport;

const DRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

/// A WebDriver session on a chromedriver of our own (loopback, a free port).
struct Browser {
    http: reqwest::Client,
    base: String,
    driver: Child,
}

impl Browser {
    /// `None` (the test is skipped) when Chromium is not installed, except under CI, where
    /// `.ci/run` installs it and its absence is a failure.
    async fn start(test: &str) -> Option<Browser> {
        if !std::path::Path::new(DRIVER).exists() || !std::path::Path::new(CHROMIUM).exists() {
            assert!(std::env::var_os("CI").is_none(), "{DRIVER} or {CHROMIUM} missing under CI; .ci/run installs them");
            eprintln!("SKIPPED {test}: {DRIVER} not installed (apt-get install chromium chromium-driver)");
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let driver = Command::new(DRIVER)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
        let root = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while http.get(format!("{root}/status")).send().await.is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1400,1000"]
            }
        }}});
        let res: Value = http.post(format!("{root}/session")).json(&caps).send().await.unwrap().json().await.unwrap();
        let id = res["value"]["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {res}")).to_string();
        Some(Browser { http, base: format!("{root}/session/{id}"), driver })
    }

    async fn cmd(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req.json(&b);
        }
        req.send().await.unwrap().json().await.unwrap()
    }

    async fn goto(&self, url: &str) {
        let v = self.cmd(reqwest::Method::POST, "/url", Some(json!({ "url": url }))).await;
        assert!(v["value"].is_null(), "navigating to {url}: {v}");
    }

    /// Runs a script in the page and returns its value; panics on a WebDriver error (an
    /// unexpected alert among them).
    async fn eval(&self, script: &str) -> Value {
        let v = self.cmd(reqwest::Method::POST, "/execute/sync", Some(json!({ "script": script, "args": [] }))).await;
        assert!(v["value"].get("error").is_none(), "{script}: {v}");
        v["value"].clone()
    }

    /// Polls `script` until it returns something truthy.
    async fn wait_for(&self, script: &str, what: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let v = self.eval(script).await;
            if !(v.is_null() || v == json!(false) || v == json!("") || v == json!(0)) {
                return v;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The text of an open JavaScript dialog, if one opened.
    async fn alert(&self) -> Option<String> {
        let v = self.cmd(reqwest::Method::GET, "/alert/text", None).await;
        v["value"].as_str().map(String::from)
    }

    async fn quit(mut self) {
        self.cmd(reqwest::Method::DELETE, "", None).await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
    }
}

fn now_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
}

fn log_record(time: u64, body: &str, trace: Option<u64>, severity: i32) -> LogRecord {
    LogRecord {
        time_unix_nano: time,
        severity_number: severity,
        severity_text: if severity >= 17 { "ERROR".into() } else { "INFO".into() },
        body: Some(AnyValue { value: Some(any_value::Value::StringValue(body.into())) }),
        trace_id: trace.map(otlp::trace_id).unwrap_or_default(),
        span_id: trace.map(|_| otlp::span_id(1)).unwrap_or_default(),
        ..Default::default()
    }
}

fn logs_request(service: &str, records: Vec<LogRecord>) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: otlp::resource(service),
            scope_logs: vec![ScopeLogs { scope: otlp::scope(), log_records: records, ..Default::default() }],
            ..Default::default()
        }],
    }
}

/// A span of trace `t` starting `offset_ms` after `t0` and lasting `ms`.
fn span_at(t: u64, id: u64, parent: Option<u64>, name: &str, t0: u64, offset_ms: u64, ms: u64) -> Span {
    let mut sp = otlp::span(t, id, parent, name, 0, false);
    sp.start_time_unix_nano = t0 + offset_ms * 1_000_000;
    sp.end_time_unix_nano = sp.start_time_unix_nano + ms * 1_000_000;
    sp
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn the_ui_in_a_browser_waterfall_needle_tail_and_trace_link() {
    let Some(browser) = Browser::start("the_ui_in_a_browser_waterfall_needle_tail_and_trace_link").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let ch = transport::channel(&server).await;
    let t0 = now_ns() - 60_000_000_000;
    // Trace 41: root 1 → (2 → 4, 3), sent out of order; the page must nest them.
    let spans = vec![
        span_at(41, 3, Some(1), "charge card", t0, 60, 30),
        span_at(41, 4, Some(2), "SELECT orders", t0, 12, 20),
        span_at(41, 1, None, "POST /checkout", t0, 0, 100),
        span_at(41, 2, Some(1), "load cart", t0, 10, 40),
    ];
    transport::grpc_traces(&ch, otlp::traces("checkout", spans), false).await.unwrap();
    let mut records: Vec<LogRecord> =
        (0..200).map(|i| log_record(t0 + i * 1_000_000, &format!("routine message {i}"), None, 9)).collect();
    records.push(log_record(t0 + 70_000_000, "card declined zqneedle7 by issuer", Some(41), 17));
    transport::grpc_logs(&ch, logs_request("checkout", records), false).await.unwrap();
    let trace = hex(&otlp::trace_id(41));

    // The waterfall: one row per span, depth first, children by start.
    browser.goto(&server.api(&format!("/traces/{trace}"))).await;
    let ids = browser.eval("return Array.from(document.querySelectorAll('details.span')).map(d => d.id)").await;
    let want: Vec<String> = [1u64, 2, 4, 3].iter().map(|n| format!("span-{}", hex(&otlp::span_id(*n)))).collect();
    assert_eq!(ids, json!(want));
    let labels = browser
        .eval("return Array.from(document.querySelectorAll('details.span .label')).map(l => l.textContent.trim())")
        .await;
    assert!(labels[2].as_str().unwrap().contains("│  └─ checkout SELECT orders"), "{labels}");
    // A row opens to its attributes on click.
    browser.eval("document.querySelector('details.span summary').click(); return 1").await;
    assert_eq!(browser.eval("return document.querySelector('details.span').open").await, json!(true));

    // The needle: exactly one row of 201, with a link to its trace that opens it.
    browser.goto(&server.api("/logs?q=zqneedle7&since=15m")).await;
    let bodies =
        browser.eval("return Array.from(document.querySelectorAll('#log-rows td.body')).map(t => t.textContent)").await;
    assert_eq!(bodies, json!(["card declined zqneedle7 by issuer"]));
    browser.eval("document.querySelector('a.trace-link').click(); return 1").await;
    browser.wait_for(&format!("return location.pathname === '/traces/{trace}'"), "the trace page").await;
    let h1 =
        browser.wait_for("return document.querySelector('h1') && document.querySelector('h1').textContent", "h1").await;
    assert!(h1.as_str().unwrap().contains(&trace), "{h1}");
    assert_eq!(browser.eval("return document.querySelectorAll('details.span').length").await, json!(4));

    // Live tail: a record sent after the page opened appears without a reload.
    browser.goto(&server.api("/logs?q=tailneedle&since=15m")).await;
    assert_eq!(browser.eval("return document.querySelectorAll('#log-rows tbody tr').length").await, json!(0));
    browser.eval("document.getElementById('tail-toggle').click(); return 1").await;
    browser.wait_for("return document.getElementById('tail-status').textContent", "the tail to start").await;
    let late = log_record(now_ns(), "late tailneedle arrives", Some(41), 13);
    transport::grpc_logs(&ch, logs_request("checkout", vec![late]), false).await.unwrap();
    let row = browser
        .wait_for(
            "const r = document.querySelector('#log-rows tbody tr.tailed'); return r && r.textContent",
            "the tailed row",
        )
        .await;
    assert!(row.as_str().unwrap().contains("late tailneedle arrives"), "{row}");
    assert_eq!(browser.eval("return document.querySelectorAll('#log-rows tbody tr').length").await, json!(1));
    let link = browser
        .eval("return document.querySelector('#log-rows tbody tr.tailed a.trace-link').getAttribute('href')")
        .await;
    assert_eq!(link, json!(format!("/traces/{trace}")));
    browser.quit().await;
}

const XSS: &str = "<script>alert(1)</script>\"><img src=x onerror=alert(2)>";

#[tokio::test]
async fn script_payloads_in_telemetry_stay_text_in_the_browser() {
    let Some(browser) = Browser::start("script_payloads_in_telemetry_stay_text_in_the_browser").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let evil = format!("svc{XSS}");
    // An SLO on the evil service: its pages show the service and its failing spans.
    let config = dir.path().join("tracelight.toml");
    std::fs::write(
        &config,
        format!(
            "[alerts]\neval_interval = \"1s\"\n\n[[slo]]\nname = \"xss-slo\"\nservice = '{evil}'\n\
             objective = 99.0\nsli = {{ kind = \"error_ratio\" }}\n"
        ),
    )
    .unwrap();
    let server = Server::start(dir.path(), &[("TRACELIGHT_CONFIG", config.to_str().unwrap())]);
    let ch = transport::channel(&server).await;
    // 90 s back: the SLO counts whole minutes only, so the span's minute is over already.
    let t0 = now_ns() - 90_000_000_000;
    let mut root = span_at(77, 1, None, &format!("GET /{XSS}"), t0, 0, 50);
    root.status = otlp::span(0, 0, None, "", 0, true).status;
    root.attributes = vec![kv(&format!("key{XSS}"), s(&format!("javascript:alert(3){XSS}")))];
    root.events = vec![opentelemetry_proto::tonic::trace::v1::span::Event {
        time_unix_nano: t0 + 5_000_000,
        name: format!("event{XSS}"),
        ..Default::default()
    }];
    let mut child = span_at(77, 2, Some(1), &format!("child{XSS}"), t0, 10, 20);
    child.kind = opentelemetry_proto::tonic::trace::v1::span::SpanKind::Client as i32;
    transport::grpc_traces(&ch, otlp::traces(&evil, vec![root, child]), false).await.unwrap();
    transport::grpc_traces(
        &ch,
        otlp::traces("frontend", vec![span_at(77, 3, Some(2), "downstream", t0, 12, 5)]),
        false,
    )
    .await
    .unwrap();
    let mut rec = log_record(t0 + 1_000_000, &format!("body{XSS} xssneedle"), Some(77), 17);
    rec.attributes = vec![kv(&format!("attr{XSS}"), s(&format!("javascript:alert(4){XSS}")))];
    rec.severity_text = format!("ERROR{XSS}");
    transport::grpc_logs(&ch, logs_request(&evil, vec![rec]), false).await.unwrap();
    let mut m = otlp::metrics(&evil);
    for rm in &mut m.resource_metrics {
        for sm in &mut rm.scope_metrics {
            for metric in &mut sm.metrics {
                metric.description = format!("desc{XSS}");
                metric.unit = format!("u{XSS}");
                for p in now_points(metric) {
                    *p = now_ns() - 20_000_000_000;
                }
            }
        }
    }
    transport::grpc_metrics(&ch, m, false).await.unwrap();
    let trace = hex(&otlp::trace_id(77));
    let metric = {
        let rows = server.sql("SELECT DISTINCT name FROM metrics WHERE kind = 'histogram'").await;
        rows[0][0].as_str().unwrap().to_string()
    };
    // The SLO has counted the failing span.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v: Value =
            server.http_client().get(server.api("/api/v1/slos/xss-slo")).send().await.unwrap().json().await.unwrap();
        if v["sli"].is_number() {
            break;
        }
        assert!(Instant::now() < deadline, "the SLO was never evaluated: {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let pages = [
        "/slos".to_string(),
        "/slos/xss-slo".to_string(),
        "/?since=15m".to_string(),
        "/traces?since=15m".to_string(),
        format!("/traces/{trace}"),
        "/logs?q=xssneedle&since=15m".to_string(),
        "/metrics/explore?since=15m".to_string(),
        format!("/metrics/explore?since=15m&metric={metric}&group_by=route"),
    ];
    for page in pages {
        browser.goto(&server.api(&page)).await;
        assert_eq!(browser.alert().await, None, "{page}: a payload ran");
        assert_payloads_are_text(&browser, &page).await;
    }
    // Live tail: rows the script adds from the stream stay text too.
    browser.goto(&server.api("/logs?q=xssneedle&since=15m")).await;
    browser.eval("document.getElementById('tail-toggle').click(); return 1").await;
    browser.wait_for("return document.getElementById('tail-status').textContent", "the tail to start").await;
    let mut late = log_record(now_ns(), &format!("tailed{XSS} xssneedle"), Some(77), 17);
    late.attributes = vec![kv(&format!("attr{XSS}"), s(&format!("javascript:alert(5){XSS}")))];
    late.severity_text = format!("ERROR{XSS}");
    transport::grpc_logs(&ch, logs_request(&evil, vec![late]), false).await.unwrap();
    let row = browser
        .wait_for(
            "const r = document.querySelector('#log-rows tbody tr.tailed'); return r && r.textContent",
            "the tailed row",
        )
        .await;
    assert!(row.as_str().unwrap().contains(&format!("tailed{XSS}")), "{row}");
    assert_eq!(browser.alert().await, None, "live tail: a payload ran");
    assert_payloads_are_text(&browser, "live tail").await;
    browser.quit().await;
}

/// No payload became markup on the current page, even with every `<details>` open: one
/// script (ours), no images, the payload shown as text, no `javascript:` links, no alert.
async fn assert_payloads_are_text(browser: &Browser, page: &str) {
    let v = browser
        .eval(
            "document.querySelectorAll('details').forEach(d => d.open = true);
             return [document.images.length, document.scripts.length, document.scripts[0].getAttribute('src'),
                     document.body.textContent.includes('<script>alert(1)</script>'),
                     Array.from(document.querySelectorAll('a[href]')).filter(a => a.getAttribute('href').trim().toLowerCase().startsWith('javascript')).length]",
        )
        .await;
    assert_eq!(v, json!([0, 1, "/static/app.js", true, 0]), "{page}");
    assert_eq!(browser.alert().await, None, "{page}: a payload ran after expanding");
}

/// The time fields of every point of a metric, to move them to now.
fn now_points(m: &mut opentelemetry_proto::tonic::metrics::v1::Metric) -> Vec<&mut u64> {
    use opentelemetry_proto::tonic::metrics::v1::metric::Data;
    match m.data.as_mut() {
        Some(Data::Gauge(g)) => g.data_points.iter_mut().map(|p| &mut p.time_unix_nano).collect(),
        Some(Data::Sum(s)) => s.data_points.iter_mut().map(|p| &mut p.time_unix_nano).collect(),
        Some(Data::Histogram(h)) => h.data_points.iter_mut().map(|p| &mut p.time_unix_nano).collect(),
        Some(Data::ExponentialHistogram(h)) => h.data_points.iter_mut().map(|p| &mut p.time_unix_nano).collect(),
        Some(Data::Summary(s)) => s.data_points.iter_mut().map(|p| &mut p.time_unix_nano).collect(),
        None => Vec::new(),
    }
}
