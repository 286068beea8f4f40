//! The catalog on PostgreSQL: the same end-to-end storage checks as on SQLite, against the
//! PostgreSQL named by TRACELIGHT_TEST_POSTGRES_URL (set by scripts/test and .ci/run).

use sqlx::Connection;

use crate::harness::Server;
use crate::otlp;
use crate::transport;

/// A fresh database for one test, dropped afterwards.
pub(crate) struct TempDb {
    admin_url: String,
    name: String,
    pub url: String,
}

impl TempDb {
    pub(crate) async fn create(admin_url: &str) -> TempDb {
        let name = format!("tracelight_e2e_{}_{}", std::process::id(), rand::random::<u32>());
        let mut conn = sqlx::PgConnection::connect(admin_url).await.expect("connect to TRACELIGHT_TEST_POSTGRES_URL");
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut conn).await.unwrap();
        let (base, _) = admin_url.rsplit_once('/').unwrap();
        TempDb { admin_url: admin_url.to_string(), url: format!("{base}/{name}"), name }
    }

    pub(crate) async fn drop(self) {
        let mut conn = sqlx::PgConnection::connect(&self.admin_url).await.unwrap();
        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)))
            .execute(&mut conn)
            .await;
    }
}

#[tokio::test]
async fn catalog_on_postgresql_keeps_everything_across_restarts() {
    let Ok(admin) = std::env::var("TRACELIGHT_TEST_POSTGRES_URL") else {
        assert!(std::env::var_os("CI").is_none(), "TRACELIGHT_TEST_POSTGRES_URL unset under CI; .ci/run sets it");
        eprintln!(
            "SKIPPED catalog_on_postgresql_keeps_everything_across_restarts: TRACELIGHT_TEST_POSTGRES_URL is not set"
        );
        return;
    };
    let db = TempDb::create(&admin).await;

    // `tracelight migrate` creates the schema from migrations/postgres.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tracelight"))
        .args(["migrate", "--catalog-url", &db.url])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("0001_segments") && stdout.contains("0004_slo_late_data"), "{stdout}");
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let (n,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM _tracelight_migrations").fetch_one(&mut conn).await.unwrap();
    assert_eq!(n, 6);

    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(
        dir.path(),
        &[("TRACELIGHT_CATALOG_URL", db.url.as_str()), ("TRACELIGHT_HEAD_FLUSH_INTERVAL", "200ms")],
    );
    assert!(server.log().contains("postgres://"), "the start-up line names the catalog");
    // The node registers itself in the catalog: /api/v1/cluster lists it, up, at its address.
    let started = std::time::Instant::now();
    let nodes = loop {
        let v: serde_json::Value =
            server.http_client().get(server.api("/api/v1/cluster")).send().await.unwrap().json().await.unwrap();
        let nodes = v["nodes"].as_array().cloned().unwrap_or_default();
        if !nodes.is_empty() || started.elapsed() > std::time::Duration::from_secs(10) {
            break nodes;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(nodes.len(), 1, "{nodes:?}");
    assert_eq!(nodes[0]["up"], true);
    assert_eq!(nodes[0]["roles"], serde_json::json!(["all"]));
    assert_eq!(nodes[0]["advertise"].as_str().unwrap(), server.api("").trim_start_matches("http://"));
    let ch = transport::channel(&server).await;
    transport::grpc_traces(&ch, otlp::seq_traces("pg", 0, 40), false).await.unwrap();
    transport::grpc_logs(&ch, otlp::logs("pg", 0, 15), false).await.unwrap();
    // Wait on the condition, not a clock: the flush runs every 200 ms.
    let started = std::time::Instant::now();
    let segments = loop {
        let (segments,): (i64,) = sqlx::query_as("SELECT count(*) FROM segments").fetch_one(&mut conn).await.unwrap();
        if segments >= 2 || started.elapsed() > std::time::Duration::from_secs(30) {
            break segments;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(segments >= 2, "flushed segments are recorded in PostgreSQL: {segments}");
    transport::grpc_traces(&ch, otlp::seq_traces("pg", 40, 5), false).await.unwrap();
    server.restart_after_kill9();
    assert_eq!(server.count("SELECT count(*) FROM spans WHERE service_name = 'pg'").await, 45);
    assert_eq!(server.count("SELECT count(*) FROM logs WHERE service_name = 'pg'").await, 15);
    server.restart();
    assert_eq!(server.count("SELECT count(*) FROM spans").await, 45);
    let (checkpoint,): (i64,) =
        sqlx::query_as("SELECT wal_lsn FROM wal_checkpoints WHERE node = 'local'").fetch_one(&mut conn).await.unwrap();
    assert!(checkpoint >= 3, "{checkpoint}");
    drop(server);
    conn.close().await.unwrap();
    db.drop().await;
}
