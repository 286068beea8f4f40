//! The on-call path against the real server: an SLO declared in the config burns, chat (a
//! local receiver standing in for Slack, allowed by `alerts.allow_destinations`) gets one
//! message per firing rule with a link to the SLO page; the page lists the failing traces,
//! whose waterfall shows the error and its log. A restart sends nothing twice; a kill -9 between
//! a delivery and its mark sends that one message again, with the same id.

use std::sync::Arc;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use serde_json::Value;

use crate::harness::Server;
use crate::otlp;
use crate::transport;

/// One request a receiver got: its head (request line and headers) and body.
#[derive(Debug, Clone)]
pub struct Received {
    pub head: String,
    pub body: String,
}

impl Received {
    /// A header's value (names compare without case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Records every POST it gets and answers 200.
pub async fn chat_receiver() -> (String, Arc<parking_lot::Mutex<Vec<Received>>>) {
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
                        log.lock().push(Received {
                            head: text[..i].to_string(),
                            body: String::from_utf8_lossy(&buf[i + 4..i + 4 + len]).to_string(),
                        });
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

/// The last hour of `checkout`: 10 `POST /checkout` spans a minute, 2 of them failing (20%
/// against a 1% budget, so every default rule fires). Returns the first minute and a minute.
pub(crate) async fn send_burning_checkouts(ch: &tonic::transport::Channel) -> (u64, u64) {
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
    transport::grpc_traces(ch, otlp::traces("checkout", spans), false).await.unwrap();
    (t0, minute)
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
    let (t0, minute) = send_burning_checkouts(&ch).await;
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
    let messages: Vec<Value> = chat.lock().iter().map(|r| serde_json::from_str(&r.body).unwrap()).collect();
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

/// One SLO on `checkout` (error ratio against 99%, evaluated every second) and a signed webhook
/// to `url`.
fn webhook_config(url: &str) -> String {
    format!(
        "[alerts]\neval_interval = \"1s\"\nallow_destinations = [\"127.0.0.1/32\"]\n\n\
         [[slo]]\nname = \"checkout-avail\"\nservice = \"checkout\"\nobjective = 99.0\n\
         sli = {{ kind = \"error_ratio\" }}\nnotify = [\"hook\"]\n\n\
         [[notify]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"{url}\"\nsecret = \"s3cret\"\n"
    )
}

/// Delivery is at least once. A SIGKILL between the receiver's 2xx and the delivered mark
/// (held open by a fault hook) sends that message again after the restart, with the same id
/// in the `webhook-id` header and in the body, so the receiver can drop the repeat. Nothing
/// else is sent twice and nothing is lost.
#[tokio::test]
async fn a_message_cut_off_by_kill9_is_sent_again_with_the_same_id() {
    let (url, hook) = chat_receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tracelight.toml");
    std::fs::write(&config, webhook_config(&url)).unwrap();
    let env = [("TRACELIGHT_CONFIG", config.to_str().unwrap()), ("TRACELIGHT_FAULT_PAUSE_AFTER_DELIVERY_MS", "3000")];
    let mut server = Server::start(dir.path(), &env);
    send_burning_checkouts(&transport::channel(&server).await).await;

    // The first message arrives; the sender now waits 3 s before marking it delivered.
    let deadline = Instant::now() + Duration::from_secs(60);
    while hook.lock().is_empty() {
        assert!(Instant::now() < deadline, "nothing delivered; log:\n{}", server.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.kill9();
    let cut_off = hook.lock()[0].clone();
    assert_eq!(hook.lock().len(), 1, "one message per pause");

    // After the restart, the outbox drains: all four rules' messages, the cut-off one again.
    server.restart_after_kill9();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let delivered = server.metric("tracelight_notifications_delivered_total").await;
        let pending = server.metric("tracelight_notifications_pending").await;
        if delivered == Some(4.0) && pending == Some(0.0) {
            break;
        }
        assert!(Instant::now() < deadline, "outbox not drained ({delivered:?}, {pending:?}); log:\n{}", server.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let got = hook.lock().clone();
    assert_eq!(got.len(), 5, "{got:?}");
    let id_of = |r: &Received| {
        let body: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(body["id"].as_str(), r.header("webhook-id"), "the header and the body carry the same id");
        body["id"].as_str().unwrap().to_string()
    };
    let first = id_of(&cut_off);
    let again: Vec<&Received> = got.iter().filter(|r| id_of(r) == first).collect();
    assert_eq!(again.len(), 2, "the cut-off message is sent again, once: {got:?}");
    assert_eq!(again[0].body, again[1].body, "the same message, byte for byte");
    let mut ids: Vec<String> = got.iter().map(id_of).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 4, "every other message exactly once: {ids:?}");
}

/// Two alert nodes of a cluster (PostgreSQL catalog, spans from an ingester): the one that
/// leads the `alert` job is killed by SIGKILL between a receiver's 2xx and the delivered mark;
/// the other takes over within seconds and drains the outbox. Every firing rule reaches the
/// receiver once, the cut-off message a second time with the same id (which the receiver
/// drops), and nothing is sent by two leaders.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_alert_leader_is_replaced_and_every_alert_arrives_once() {
    let test = "a_killed_alert_leader_is_replaced_and_every_alert_arrives_once";
    let Some((db, moto)) = crate::cluster::catalog_and_bucket(test).await else { return };
    let (url, hook) = chat_receiver().await;
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let config = dirs[0].path().join("alerts.toml");
    std::fs::write(&config, webhook_config(&url)).unwrap();
    let alerting = |node, pause: bool| {
        let mut env = crate::cluster::shared(&db, &moto, node, "alert");
        env.push(("TRACELIGHT_CONFIG", config.to_str().unwrap().to_string()));
        if pause {
            env.push(("TRACELIGHT_FAULT_PAUSE_AFTER_DELIVERY_MS", "3000".to_string()));
        }
        env
    };
    // The first alert node leads before the second starts.
    let mut first = crate::cluster::start(dirs[0].path(), &alerting("a1", true));
    let started = Instant::now();
    while !crate::cluster::leads(&first, "alert") {
        assert!(started.elapsed() < Duration::from_secs(20), "a1 does not lead:\n{}", first.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut second = crate::cluster::start(dirs[1].path(), &alerting("a2", false));
    let mut ingester = crate::cluster::start(dirs[2].path(), &crate::cluster::shared(&db, &moto, "i1", "ingest"));
    send_burning_checkouts(&transport::channel(&ingester).await).await;

    // The leader delivers the first message and pauses before marking it delivered.
    let deadline = Instant::now() + Duration::from_secs(60);
    while hook.lock().is_empty() {
        assert!(Instant::now() < deadline, "nothing delivered; log:\n{}", first.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.kill9();
    let killed = Instant::now();
    let cut_off = hook.lock()[0].clone();
    assert_eq!(hook.lock().len(), 1, "one message per pause, and none from the follower");
    while !crate::cluster::leads(&second, "alert") {
        assert!(killed.elapsed() < Duration::from_secs(30), "a2 did not take over:\n{}", second.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("the alert job moved to a2 {:?} after the kill", killed.elapsed());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let pending = second.metric("tracelight_notifications_pending").await;
        if hook.lock().len() >= 5 && pending == Some(0.0) {
            break;
        }
        assert!(Instant::now() < deadline, "outbox not drained ({pending:?}, {:?}):\n{}", hook.lock(), second.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A few more evaluations and outbox reads: nothing else arrives.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let got = hook.lock().clone();
    assert_eq!(got.len(), 5, "{got:?}");
    let id_of = |r: &Received| r.header("webhook-id").unwrap().to_string();
    let again = got.iter().filter(|r| id_of(r) == id_of(&cut_off)).count();
    assert_eq!(again, 2, "the cut-off message is sent again, once");
    let mut ids: Vec<String> = got.iter().map(id_of).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 4, "each of the four firing rules once, after the receiver drops the repeat: {ids:?}");
    for s in [&mut second, &mut ingester] {
        s.stop();
    }
    db.drop().await;
}
