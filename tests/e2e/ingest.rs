//! Every signal over every transport is stored with its fields, and survives restarts.

use serde_json::{Value, json};

use crate::harness::Server;
use crate::otlp;
use crate::transport::{self, Body};

#[tokio::test]
async fn every_signal_over_every_transport_is_stored_exactly_and_survives_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &[("TRACELIGHT_HEAD_FLUSH_INTERVAL", "300ms")]);
    let ch = transport::channel(&server).await;

    // gRPC, plain and gzip.
    for (svc, gz) in [("grpc-plain", false), ("grpc-gzip", true)] {
        let r = transport::grpc_traces(&ch, otlp::seq_traces(svc, 0, 30), gz).await.unwrap();
        assert_eq!(r.partial_success, None);
        transport::grpc_logs(&ch, otlp::logs(svc, 0, 20), gz).await.unwrap();
        transport::grpc_metrics(&ch, otlp::metrics(svc), gz).await.unwrap();
    }
    // HTTP: protobuf, JSON, each plain and gzip.
    for (svc, body, gz) in [
        ("http-proto", Body::Protobuf, false),
        ("http-proto-gzip", Body::Protobuf, true),
        ("http-json", Body::Json, false),
        ("http-json-gzip", Body::Json, true),
    ] {
        for res in [
            transport::http_export(&server, "/v1/traces", &otlp::seq_traces(svc, 0, 30), body, gz).await,
            transport::http_export(&server, "/v1/logs", &otlp::logs(svc, 0, 20), body, gz).await,
            transport::http_export(&server, "/v1/metrics", &otlp::metrics(svc), body, gz).await,
        ] {
            assert_eq!(res.status(), 200);
            let ct = res.headers()["content-type"].to_str().unwrap().to_string();
            assert_eq!(
                ct,
                match body {
                    Body::Protobuf => "application/x-protobuf",
                    Body::Json => "application/json",
                }
            );
        }
    }
    transport::grpc_traces(&ch, otlp::traces("rich", vec![otlp::rich_span()]), false).await.unwrap();
    transport::grpc_logs(&ch, otlp::array_log("rich"), false).await.unwrap();

    let per_service = "SELECT service_name, count(*) FROM spans GROUP BY 1 \
                       UNION ALL SELECT concat('logs:', service_name), count(*) FROM logs GROUP BY 1 \
                       UNION ALL SELECT concat('metrics:', service_name), count(*) FROM metrics GROUP BY 1 ORDER BY 1";
    let mut expected = Vec::new();
    for svc in ["grpc-gzip", "grpc-plain", "http-json", "http-json-gzip", "http-proto", "http-proto-gzip"] {
        expected.push(json!([svc, 30]));
        expected.push(json!([format!("logs:{svc}"), 20]));
        expected.push(json!([format!("metrics:{svc}"), 5]));
    }
    expected.push(json!(["logs:rich", 1]));
    expected.push(json!(["rich", 1]));
    expected.sort_by_key(|v| v[0].as_str().unwrap().to_string());
    let expected: Vec<Vec<Value>> = expected.into_iter().map(|v| v.as_array().unwrap().clone()).collect();

    // Queryable at once (head), then from Parquet after a flush, after SIGTERM, after kill -9.
    assert_eq!(server.sql(per_service).await, expected);
    check_fields(&server).await;
    // Wait on the flush itself, not a clock.
    let started = std::time::Instant::now();
    let v = loop {
        let v = server.query_json(json!({ "sql": "SELECT count(*) FROM spans" })).await;
        if v["stats"]["segments"].as_u64().unwrap_or(0) > 0 || started.elapsed() > std::time::Duration::from_secs(30) {
            break v;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(v["stats"]["segments"].as_u64().unwrap() > 0, "flushed to Parquet: {v}");
    assert_eq!(server.sql(per_service).await, expected);
    server.restart();
    assert_eq!(server.sql(per_service).await, expected);
    check_fields(&server).await;
    // Some rows only in the WAL (no flush before the kill).
    let ch = transport::channel(&server).await;
    transport::grpc_traces(&ch, otlp::seq_traces("late", 0, 7), false).await.unwrap();
    server.restart_after_kill9();
    assert_eq!(server.count("SELECT count(*) FROM spans WHERE service_name = 'late'").await, 7);
    assert_eq!(server.count("SELECT count(*) FROM spans").await, 6 * 30 + 1 + 7);
}

async fn check_fields(server: &Server) {
    let rows = server
        .sql(
            "SELECT trace_id, span_id, parent_span_id, name, kind, status_code, status_message, duration_ns, \
             attributes['http.route'], resource_attributes['host.name'], scope_name, scope_version, \
             events[1]['name'], events[1]['attributes']['exception.type'], links[1]['trace_id'] \
             FROM spans WHERE service_name = 'rich'",
        )
        .await;
    assert_eq!(
        rows,
        vec![vec![
            json!("abababababababab0000000000000007"),
            json!("0000000000000047"),
            json!("0000000000000046"),
            json!("POST /checkout"),
            json!("SERVER"),
            json!("ERROR"),
            json!("boom"),
            json!(250000),
            json!("/checkout/{id}"),
            json!("e2e"),
            json!("e2e-scope"),
            json!("1.2.3"),
            json!("exception"),
            json!("Timeout"),
            json!("abababababababab0000000000000008"),
        ]]
    );
    // Attribute filters work in WHERE; a missing key is NULL.
    assert_eq!(
        server.count("SELECT count(*) FROM spans WHERE attributes['http.route'] = '/checkout/{id}'").await,
        6 * 30 + 1
    );
    assert_eq!(server.count("SELECT count(*) FROM spans WHERE attributes['nope'] IS NULL").await, 6 * 30 + 1);

    let rows = server
        .sql("SELECT body, severity_number, severity_text, trace_id, span_id, attributes['seq'] FROM logs WHERE service_name = 'http-json' AND attributes['seq'] = '3'")
        .await;
    assert_eq!(
        rows,
        vec![vec![
            json!(r#"{"msg":"payment timeout","attempt":3}"#),
            json!(17),
            json!("ERROR"),
            json!("abababababababab0000000000000007"),
            json!("0000000000000047"),
            json!("3"),
        ]]
    );
    assert_eq!(server.sql("SELECT body FROM logs WHERE service_name = 'rich'").await, vec![vec![json!(r#"["a",2]"#)]]);

    let rows = server
        .sql(
            "SELECT name, kind, temporality, is_monotonic, value, value_int, count, sum, bucket_counts, explicit_bounds, \
             exemplars[1]['trace_id'], exp_scale, exp_zero_count, exp_positive_offset, exp_positive_bucket_counts, \
             quantiles[1]['quantile'], quantiles[1]['value'] \
             FROM metrics WHERE service_name = 'grpc-gzip' ORDER BY name",
        )
        .await;
    let null = Value::Null;
    assert_eq!(
        rows,
        vec![
            vec![
                json!("latency"),
                json!("histogram"),
                json!("delta"),
                null.clone(),
                null.clone(),
                null.clone(),
                json!(6),
                json!(1.5),
                json!([1, 2, 3]),
                json!([0.1, 0.5]),
                json!("abababababababab0000000000000007"),
                null.clone(),
                null.clone(),
                null.clone(),
                null.clone(),
                null.clone(),
                null.clone()
            ],
            vec![
                json!("latency_exp"),
                json!("exponential_histogram"),
                json!("delta"),
                null.clone(),
                null.clone(),
                null.clone(),
                json!(3),
                null.clone(),
                null.clone(),
                null.clone(),
                null.clone(),
                json!(2),
                json!(1),
                json!(1),
                json!([1, 1]),
                null.clone(),
                null.clone()
            ],
            vec![
                json!("requests"),
                json!("sum"),
                json!("cumulative"),
                json!(true),
                json!(42.0),
                json!(42),
                null.clone(),
                null.clone(),
                null.clone(),
                null.clone(),
                null.clone(),
                null.clone(),
                null.clone(),
                null.clone(),
                null.clone(),
                null.clone(),
                null.clone()
            ],
            vec![
                json!("rpc_summary"),
                json!("summary"),
                null.clone(),
                null.clone(),
                null.clone(),
                null.clone(),
                json!(10),
                json!(5.0),
                null.clone(),
                null.clone(),
                null.clone(),
                null.clone(),
                null.clone(),
                null.clone(),
                null.clone(),
                json!(0.99),
                json!(0.9)
            ],
            vec![
                json!("temperature"),
                json!("gauge"),
                null.clone(),
                null.clone(),
                json!("NaN"),
                null.clone(),
                null.clone(),
                null.clone(),
                null.clone(),
                null.clone(),
                null.clone(),
                null.clone(),
                null.clone(),
                null.clone(),
                null.clone(),
                null.clone(),
                null.clone()
            ],
        ]
    );
}

#[tokio::test]
async fn the_published_otlp_json_examples_load_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/otlp-json");
    for (file, path) in [("trace.json", "/v1/traces"), ("logs.json", "/v1/logs"), ("metrics.json", "/v1/metrics")] {
        let bytes = std::fs::read(format!("{fixtures}/{file}")).unwrap();
        let res = transport::post_raw(&server, path, "application/json", bytes, false).await;
        assert_eq!(res.status(), 200, "{file}");
        let v: Value = res.json().await.unwrap();
        assert!(v["partialSuccess"].is_null(), "{file}: {v}");
    }
    assert_eq!(
        server.sql("SELECT trace_id, span_id, name, kind, service_name FROM spans").await,
        vec![vec![
            json!("5b8efff798038103d269b633813fc60c"),
            json!("eee19b7ec3c1b174"),
            json!("I'm a server span"),
            json!("SERVER"),
            json!("my.service")
        ]]
    );
    assert_eq!(server.count("SELECT count(*) FROM logs WHERE body = 'Example log record'").await, 1);
    assert_eq!(
        server.sql("SELECT name FROM metrics ORDER BY 1").await,
        vec![vec![json!("my.counter")], vec![json!("my.gauge")], vec![json!("my.histogram")]]
    );
}

/// A failed fsync on the real binary (injected on the third group commit): that export is
/// refused, readiness turns false with the reason while the process stays alive, every later
/// export is refused although the disk works again, and what was acknowledged before is kept.
/// A restart without the fault is ready again.
#[tokio::test]
async fn a_failed_fsync_turns_readiness_false_and_stops_acknowledgements() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &[("TRACELIGHT_FAULT_FAIL_FSYNC_GROUP", "2")]);
    let ch = transport::channel(&server).await;
    let c = server.http_client().clone();
    assert_eq!(c.get(server.api("/readyz")).send().await.unwrap().status(), 200);
    for k in 0..2 {
        transport::grpc_traces(&ch, otlp::seq_traces("fsync", k * 10, 10), false).await.unwrap();
    }
    for k in 2..4 {
        let refused = transport::grpc_traces(&ch, otlp::seq_traces("fsync", k * 10, 10), false).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    }
    let http = transport::http_export(&server, "/v1/logs", &otlp::logs("fsync", 0, 3), Body::Protobuf, false).await;
    assert_eq!(http.status(), 503);
    let ready = c.get(server.api("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let why = ready.text().await.unwrap();
    assert!(why.contains("write-ahead log failed"), "{why}");
    assert_eq!(c.get(server.api("/healthz")).send().await.unwrap().status(), 200, "alive, only not ready");
    assert!(server.log().contains("injected fsync failure"), "the reason is in the log");
    // The acknowledged spans are queryable now and after a restart without the fault. The
    // refused third export was written before its fsync failed: it may come back or not, but
    // whole (all or nothing).
    assert_eq!(server.count("SELECT count(*) FROM spans").await, 20);
    server.kill9();
    drop(server);
    let server = Server::start(dir.path(), &[]);
    assert_eq!(server.http_client().get(server.api("/readyz")).send().await.unwrap().status(), 200);
    let n = server.count("SELECT count(*) FROM spans").await;
    assert!(n == 20 || n == 30, "acknowledged spans kept, the refused export whole or absent: {n}");
}

/// SIGTERM while an export is still arriving: the OTLP listener drains it, and meanwhile the
/// API (which stops last) answers `/readyz` with 503 "shutting down", so a load balancer sees
/// the node leave instead of a refused connection. Then the server exits cleanly.
#[tokio::test]
async fn readiness_is_false_while_shutting_down() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &[]);
    let c = server.http_client().clone();
    assert_eq!(c.get(server.api("/readyz")).send().await.unwrap().status(), 200);
    // An export in flight: `100 Continue` comes back once the handler reads the body, which
    // the client then sends only in part.
    let mut sock = tokio::net::TcpStream::connect(server.otlp("").trim_start_matches("http://")).await.unwrap();
    sock.write_all(
        b"POST /v1/logs HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-protobuf\r\n\
          content-length: 1000\r\nexpect: 100-continue\r\n\r\n",
    )
    .await
    .unwrap();
    let mut got = [0u8; 64];
    let n = sock.read(&mut got).await.unwrap();
    assert!(String::from_utf8_lossy(&got[..n]).starts_with("HTTP/1.1 100"), "{:?}", String::from_utf8_lossy(&got[..n]));
    sock.write_all(&[0u8; 10]).await.unwrap();

    server.terminate();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(4);
    loop {
        let res = c.get(server.api("/readyz")).send().await.expect("the API still answers while OTLP drains");
        if res.status() == 503 {
            assert_eq!(res.text().await.unwrap(), "not ready: shutting down\n");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "/readyz stayed 200 after SIGTERM");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    drop(sock);
    server.stop();
    assert!(server.log().contains("stopped"), "{}", server.log());
}

/// The hour directories of a signal's segments under the data directory.
fn hour_dirs(dir: &std::path::Path, signal: &str) -> usize {
    let root = dir.join("data").join("segments").join("default").join(signal);
    let Ok(days) = std::fs::read_dir(root) else { return 0 };
    days.flatten().filter_map(|d| std::fs::read_dir(d.path()).ok()).map(|hours| hours.count()).sum()
}

/// Retention end to end through `retention.period`: a partition goes once all of its hour is
/// older than the period. With a period of 1 h, the span in the last nanosecond of the hour
/// that ended before the previous hour began goes; the span in the first nanosecond of the
/// previous hour stays. Queries stop seeing them first; the janitor deletes the files only
/// after the grace (`query.timeout` + `janitor.grace_after_queries`).
#[tokio::test]
async fn retention_removes_whole_hours_past_the_period_rows_first_then_files() {
    const HOUR: u64 = 3_600_000_000_000;
    let now = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    // The expected partitions move when the hour turns: keep the test inside one hour.
    let to_next_hour = HOUR - now() % HOUR;
    if to_next_hour < 150_000_000_000 {
        tokio::time::sleep(std::time::Duration::from_nanos(to_next_hour + 1_000_000_000)).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &[
            ("TRACELIGHT_RETENTION_PERIOD", "1h"),
            ("TRACELIGHT_RETENTION_CHECK_INTERVAL", "1s"),
            ("TRACELIGHT_HEAD_FLUSH_INTERVAL", "200ms"),
            ("TRACELIGHT_QUERY_TIMEOUT", "2s"),
            ("TRACELIGHT_JANITOR_INTERVAL", "500ms"),
            ("TRACELIGHT_JANITOR_GRACE_AFTER_QUERIES", "3s"),
        ],
    );
    let h0 = now() / HOUR * HOUR;
    let boundary = h0 - HOUR;
    let spans = [("old", h0 - 3 * HOUR + 1), ("edge-out", boundary - 1), ("edge-in", boundary), ("now", now() - 1)]
        .iter()
        .enumerate()
        .map(|(k, (name, t))| {
            let mut sp = otlp::span(70 + k as u64, 1, None, name, 0, false);
            sp.start_time_unix_nano = *t;
            sp.end_time_unix_nano = *t + 1;
            sp
        })
        .collect();
    let ch = transport::channel(&server).await;
    let r = transport::grpc_traces(&ch, otlp::traces("kept", spans), false).await.unwrap();
    assert_eq!(r.partial_success, None);

    let names = "SELECT name FROM spans ORDER BY name";
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let got: Vec<String> = server.sql(names).await.iter().map(|r| r[0].as_str().unwrap().to_string()).collect();
        if got == ["edge-in", "now"] {
            break;
        }
        assert!(
            got.len() == 4 || got.is_empty() || got == ["edge-in", "now"],
            "a partition goes whole, never in part: {got:?}"
        );
        assert!(std::time::Instant::now() < deadline, "the expired hours are still queryable: {got:?}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // The rows went first; the files of the two expired hours are still on disk for the grace.
    assert_eq!(hour_dirs(dir.path(), "spans"), 4, "files outlive their rows by the grace");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while hour_dirs(dir.path(), "spans") != 2 {
        assert!(std::time::Instant::now() < deadline, "the expired files were never removed");
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    assert_eq!(server.count("SELECT count(*) FROM spans").await, 2);
    assert!(server.log().contains("retention retired expired partitions"), "{}", server.log());
    assert!(server.log().contains("janitor deleted segments"), "{}", server.log());
}
