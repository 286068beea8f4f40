//! Interop with the real OpenTelemetry Python SDK over gRPC and HTTP (docs/TESTING.md §A9).
//! `scripts/test` installs the SDK into `.venv` and sets TRACELIGHT_TEST_PYTHON.

use std::process::Command;

use serde_json::{Value, json};

use crate::harness::Server;

#[tokio::test]
async fn the_python_sdk_exports_all_three_signals_over_grpc_and_http() {
    let Ok(python) = std::env::var("TRACELIGHT_TEST_PYTHON") else {
        assert!(std::env::var_os("CI").is_none(), "TRACELIGHT_TEST_PYTHON unset under CI; scripts/test sets it");
        eprintln!(
            "SKIPPED the_python_sdk_exports_all_three_signals_over_grpc_and_http: TRACELIGHT_TEST_PYTHON is not set (scripts/test sets it)"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk/send.py");
    for (service, endpoint, protocol) in [
        ("sdk-grpc", format!("http://{}", server.grpc), "grpc"),
        ("sdk-http", format!("http://{}", server.otlp_http), "http/protobuf"),
    ] {
        let out = Command::new(&python)
            .args([script, service, "20"])
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
            .env("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
            .env("OTEL_BSP_SCHEDULE_DELAY", "100")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{service}: {stderr}");
        assert!(!stderr.contains("Failed to export"), "{service}: {stderr}");
        let report: Value = serde_json::from_slice(out.stdout.trim_ascii()).unwrap();
        let svc = format!("service_name = '{service}'");

        assert_eq!(server.count(&format!("SELECT count(*) FROM spans WHERE {svc}")).await, 60);
        assert_eq!(server.count(&format!("SELECT count(*) FROM logs WHERE {svc}")).await, 60);
        // Every log record carries the trace and span of the span it was emitted in.
        let orphans = format!(
            "SELECT count(*) FROM logs l LEFT JOIN spans s ON l.trace_id = s.trace_id AND l.span_id = s.span_id \
             WHERE l.{svc} AND s.span_id IS NULL"
        );
        assert_eq!(server.count(&orphans).await, 0);
        assert_eq!(
            server.sql(&format!("SELECT severity_text, count(*) FROM logs WHERE {svc} GROUP BY 1 ORDER BY 1")).await,
            vec![vec![json!("ERROR"), json!(4)], vec![json!("INFO"), json!(56)]]
        );
        // Metrics are cumulative and exported at flush and again at shutdown: every exported
        // point holds the final totals.
        assert_eq!(
            server.sql(&format!("SELECT DISTINCT value_int, kind, temporality, is_monotonic FROM metrics WHERE {svc} AND name = 'sdk.requests'")).await,
            vec![vec![json!(20), json!("sum"), json!("cumulative"), json!(true)]]
        );
        assert_eq!(
            server.sql(&format!("SELECT DISTINCT count, kind FROM metrics WHERE {svc} AND name = 'sdk.latency'")).await,
            vec![vec![json!(20), json!("histogram")]]
        );
        // Error spans are found by trace ID, with their parent in the same trace.
        let ids = report["error_trace_ids"].as_array().unwrap();
        assert_eq!(ids.len(), 4);
        for id in ids {
            let id = id.as_str().unwrap();
            let rows = server
                .sql(&format!(
                    "SELECT name, status_code, status_message, parent_span_id IS NOT NULL FROM spans \
                     WHERE trace_id = '{id}' AND status_code = 'ERROR'"
                ))
                .await;
            assert_eq!(rows, vec![vec![json!("charge card"), json!("ERROR"), json!("card declined"), json!(true)]]);
            assert_eq!(server.count(&format!("SELECT count(*) FROM spans WHERE trace_id = '{id}'")).await, 3);
        }
    }
}
