//! The on-call path against the real server: an SLO declared in the config burns, chat (a
//! local receiver standing in for Slack, allowed by `alerts.allow_destinations`) gets one
//! message per firing rule with a link to the SLO page; the page lists the failing traces,
//! whose waterfall shows the error and its log. A restart sends nothing twice.

use std::sync::Arc;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use serde_json::Value;

use crate::harness::Server;
use crate::otlp;
use crate::transport;

/// Records every POST body it gets and answers 200.
pub async fn chat_receiver() -> (String, Arc<parking_lot::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/services/T0/B0/x", listener.local_addr().unwrap());
    let seen = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 8192];
            loop {
                let n = sock.read(&mut chunk).await.unwrap_or(0);
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf).to_string();
                if let Some(i) = text.find("\r\n\r\n") {
                    let len: usize = text[..i]
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if buf.len() >= i + 4 + len {
                        log.lock().push(String::from_utf8_lossy(&buf[i + 4..i + 4 + len]).to_string());
                        break;
                    }
                }
            }
            let _ = sock.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok").await;
        }
    });
    (url, seen)
}

fn now_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
}

#[tokio::test]
async fn a_burning_slo_reaches_chat_and_leads_to_the_failing_trace_and_its_log() {
    let (url, chat) = chat_receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tracelight.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[alerts]
eval_interval = "1s"
allow_destinations = ["127.0.0.1/32"]
public_url = "http://ui.test"

[[slo]]
name = "checkout-avail"
service = "checkout"
objective = 99.0
sli = {{ kind = "error_ratio", filter = "name = 'POST /checkout'" }}
notify = ["chat"]

[[notify]]
name = "chat"
kind = "slack"
url = "{url}"
"#
        ),
    )
    .unwrap();
    let mut server = Server::start(dir.path(), &[("TRACELIGHT_CONFIG", config.to_str().unwrap())]);
    let ch = transport::channel(&server).await;
    // The last hour: 10 checkouts a minute, 2 of them failing (20% against a 1% budget).
    let minute = 60_000_000_000u64;
    let t0 = (now_ns() / minute - 60) * minute;
    let mut spans = Vec::new();
    for m in 0..60u64 {
        for k in 0..10u64 {
            let n = m * 10 + k;
            let mut sp = otlp::span(9000 + n, n, None, "POST /checkout", 0, k < 2);
            sp.start_time_unix_nano = t0 + m * minute + k * 1_000_000_000;
            sp.end_time_unix_nano = sp.start_time_unix_nano + 5_000_000;
            spans.push(sp);
        }
    }
    transport::grpc_traces(&ch, otlp::traces("checkout", spans), false).await.unwrap();
    // The newest failing checkout logged why.
    let failing = 9000 + 59 * 10;
    let log = LogRecord {
        time_unix_nano: t0 + 59 * minute + 1_000_000,
        severity_number: 17,
        severity_text: "ERROR".into(),
        body: Some(AnyValue { value: Some(any_value::Value::StringValue("card declined by issuer 7731".into())) }),
        trace_id: otlp::trace_id(failing),
        span_id: otlp::span_id(590),
        ..Default::default()
    };
    let logs = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: otlp::resource("checkout"),
            scope_logs: vec![ScopeLogs { scope: otlp::scope(), log_records: vec![log], ..Default::default() }],
            ..Default::default()
        }],
    };
    transport::grpc_logs(&ch, logs, false).await.unwrap();

    // Chat gets one message per firing rule (all four burn at 20×).
    let deadline = Instant::now() + Duration::from_secs(60);
    while chat.lock().len() < 4 {
        assert!(Instant::now() < deadline, "chat got {:?}; log:\n{}", chat.lock(), server.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let messages: Vec<Value> = chat.lock().iter().map(|b| serde_json::from_str(b).unwrap()).collect();
    let texts: Vec<&str> = messages.iter().map(|m| m["text"].as_str().unwrap()).collect();
    let page = texts.iter().find(|t| t.contains("over 1h and")).unwrap();
    assert!(
        page.starts_with("[PAGE] SLO checkout-avail is burning its error budget: 20.00× over 1h and 20.00× over 5m"),
        "{page}"
    );
    assert!(page.contains("<http://ui.test/slos/checkout-avail|Open the SLO>"), "{page}");
    assert_eq!(texts.iter().filter(|t| t.starts_with("[TICKET]")).count(), 2, "{texts:?}");
    assert!(!server.log().contains(&url), "the channel URL never reaches the log");

    // The API and the SLO page: burning, with the failing traces one click away.
    let api: Value =
        server.http_client().get(server.api("/api/v1/slos/checkout-avail")).send().await.unwrap().json().await.unwrap();
    assert_eq!(api["alerts"][0]["state"], "firing", "{api}");
    assert!((api["burn_rates"]["1h"].as_f64().unwrap() - 20.0).abs() < 1e-9, "{api}");
    assert!(!api.to_string().contains(&url), "no channel URL in API answers");
    let html = server.http_client().get(server.api("/slos/checkout-avail")).send().await.unwrap().text().await.unwrap();
    let trace: String = otlp::trace_id(failing).iter().map(|b| format!("{b:02x}")).collect();
    assert!(html.contains("4 alerts firing"), "{html}");
    assert!(html.contains(&format!("href=\"/traces/{trace}\"")), "the newest failing trace is linked: {html}");
    let waterfall =
        server.http_client().get(server.api(&format!("/traces/{trace}"))).send().await.unwrap().text().await.unwrap();
    assert!(waterfall.contains("card declined by issuer 7731") && waterfall.contains("span error"), "{waterfall}");

    // A restart re-evaluates from the catalog's state: nothing is sent twice. Wait for an
    // evaluation after the restart (not a clock), then for the outbox to be read twice more.
    let restarted_ns = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as i64;
    server.restart();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let v: Value = server.http_client().get(server.api("/api/v1/slos")).send().await.unwrap().json().await.unwrap();
        if v["slos"][0]["evaluated_at_ns"].as_i64().is_some_and(|t| t > restarted_ns) {
            break;
        }
        assert!(Instant::now() < deadline, "no evaluation after the restart: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(chat.lock().len(), 4, "{:?}", chat.lock());
}
