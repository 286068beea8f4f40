//! The real binary on object storage (moto on 127.0.0.1): `storage_url = "s3://…"`. Segments,
//! trace-ID indexes and index bundles go to the bucket and nowhere else; after a restart
//! (nothing left in the head) SQL, log search and trace lookups answer from the bucket exactly
//! as they did from the head; compaction merges on the bucket and changes no answer; the
//! janitor deletes the replaced objects.

use std::time::{Duration, Instant};

use crate::compaction::{answers, load, segments};
use crate::harness::Server;
use crate::moto;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_server_stores_and_queries_segments_on_object_storage() {
    let Some(moto) = moto::moto("the_server_stores_and_queries_segments_on_object_storage") else { return };
    moto::create_bucket(&moto.endpoint, "telemetry");
    let dir = tempfile::tempdir().unwrap();
    let s3 = [
        ("TRACELIGHT_STORAGE_URL", "s3://telemetry/prod"),
        ("TRACELIGHT_STORAGE_ENDPOINT", moto.endpoint.as_str()),
        ("TRACELIGHT_STORAGE_REGION", "us-east-1"),
        ("TRACELIGHT_STORAGE_ACCESS_KEY_ID", "test"),
        ("TRACELIGHT_STORAGE_SECRET_ACCESS_KEY", "test"),
        ("TRACELIGHT_STORAGE_ALLOW_HTTP", "true"),
        ("TRACELIGHT_HEAD_FLUSH_INTERVAL", "100ms"),
    ];
    let mut env = s3.to_vec();
    env.push(("TRACELIGHT_COMPACTION_ENABLED", "false"));
    let mut server = Server::start(dir.path(), &env);
    assert!(server.log().contains("s3://telemetry/prod"), "{}", server.log());
    load(&server).await;
    let from_head_and_bucket = answers(&server).await;
    server.stop();
    assert!(
        !dir.path().join("data").join("segments").exists(),
        "no segment is written to the local disk when storage is s3://"
    );

    // Everything now comes from the bucket: the head is empty after a clean stop.
    let mut server = Server::start(dir.path(), &env);
    assert_eq!(answers(&server).await, from_head_and_bucket, "answers from the bucket");
    // The first run fetched them; the disk cache outlives a restart.
    let hits = server.metric("tracelight_disk_cache_hits_total").await.unwrap_or(0.0);
    assert!(hits > 0.0, "trace-ID indexes and index bundles came from the disk cache");
    assert_eq!(server.metric("tracelight_disk_cache_misses_total").await.unwrap_or(0.0), 0.0, "warm after a restart");
    server.stop();

    // Compaction merges on the bucket; the janitor deletes what it replaced.
    let mut env = s3.to_vec();
    env.extend([
        ("TRACELIGHT_COMPACTION_INTERVAL", "200ms"),
        ("TRACELIGHT_COMPACTION_MIN_AGE", "0s"),
        ("TRACELIGHT_COMPACTION_MIN_INPUTS", "2"),
        ("TRACELIGHT_QUERY_TIMEOUT", "5s"),
        ("TRACELIGHT_JANITOR_INTERVAL", "200ms"),
        ("TRACELIGHT_JANITOR_GRACE_AFTER_QUERIES", "1s"),
    ]);
    let server = Server::start(dir.path(), &env);
    let started = Instant::now();
    while segments(&server).await != vec![1, 1, 1] {
        assert!(started.elapsed() < Duration::from_secs(60), "not compacted in 60 s:\n{}", server.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(answers(&server).await, from_head_and_bucket, "compaction on the bucket changed an answer");
    let started = Instant::now();
    loop {
        let deleted = server.metric("tracelight_janitor_segments_deleted_total").await.unwrap_or(0.0);
        let replaced = server.metric("tracelight_compaction_segments_replaced_total").await.unwrap_or(0.0);
        if replaced > 0.0 && deleted >= replaced {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "replaced {replaced}, deleted {deleted}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(answers(&server).await, from_head_and_bucket, "after the janitor");
}

/// A TCP proxy in front of moto that can cut the bucket off (an outage): while down, open
/// connections are dropped and new ones are closed at once.
struct Outage {
    addr: std::net::SocketAddr,
    down: std::sync::Arc<std::sync::atomic::AtomicBool>,
    conns: std::sync::Arc<parking_lot::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Outage {
    async fn start(upstream: &str) -> Outage {
        let upstream = upstream.strip_prefix("http://").unwrap().to_string();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let down = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let conns = std::sync::Arc::new(parking_lot::Mutex::new(Vec::new()));
        let (d, c) = (down.clone(), conns.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if d.load(std::sync::atomic::Ordering::SeqCst) {
                    continue; // dropped: the connection closes at once
                }
                let upstream = upstream.clone();
                c.lock().push(tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                }));
            }
        });
        Outage { addr, down, conns }
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn set_down(&self, down: bool) {
        self.down.store(down, std::sync::atomic::Ordering::SeqCst);
        if down {
            for t in self.conns.lock().drain(..) {
                t.abort();
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_object_storage_outage_loses_nothing_acknowledged() {
    let Some(moto) = moto::moto("an_object_storage_outage_loses_nothing_acknowledged") else { return };
    moto::create_bucket(&moto.endpoint, "outage");
    let proxy = Outage::start(&moto.endpoint).await;
    let endpoint = proxy.endpoint();
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("TRACELIGHT_STORAGE_URL", "s3://outage/p"),
        ("TRACELIGHT_STORAGE_ENDPOINT", endpoint.as_str()),
        ("TRACELIGHT_STORAGE_REGION", "us-east-1"),
        ("TRACELIGHT_STORAGE_ACCESS_KEY_ID", "test"),
        ("TRACELIGHT_STORAGE_SECRET_ACCESS_KEY", "test"),
        ("TRACELIGHT_STORAGE_ALLOW_HTTP", "true"),
        ("TRACELIGHT_STORAGE_REQUEST_TIMEOUT", "2s"),
        ("TRACELIGHT_HEAD_FLUSH_INTERVAL", "100ms"),
        ("TRACELIGHT_COMPACTION_ENABLED", "false"),
    ];
    let mut server = Server::start(dir.path(), &env);
    let ch = crate::transport::channel(&server).await;
    let send = |first: i64| {
        let ch = ch.clone();
        async move {
            let r = crate::transport::grpc_traces(&ch, crate::otlp::seq_traces("outage", first, 50), false).await;
            assert!(r.unwrap().partial_success.is_none());
            let r = crate::transport::grpc_logs(&ch, crate::otlp::logs("outage", first, 50), false).await;
            assert!(r.unwrap().partial_success.is_none());
        }
    };
    let written = || async { server.metric("tracelight_segments_written_total").await.unwrap_or(0.0) };
    send(0).await;
    let started = Instant::now();
    while written().await < 2.0 {
        assert!(started.elapsed() < Duration::from_secs(30), "no flush:\n{}", server.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The bucket goes away for 30 s: ingest still acknowledges (into the WAL and the head),
    // flushes fail and are retried, and readiness says why after three failures.
    proxy.set_down(true);
    let cut = Instant::now();
    let before = written().await;
    for k in 1..=10 {
        send(k * 50).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let started = Instant::now();
    loop {
        let r = server.http_client().get(server.api("/readyz")).send().await.unwrap();
        if r.status() == 503 {
            let why = r.text().await.unwrap();
            assert!(why.contains("flushes in a row failed"), "{why}");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "readiness never turned false:\n{}", server.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(written().await, before, "nothing was flushed while the bucket was away");
    // A query answers from what it can reach (the head: the 500 spans sent since) and says
    // what it could not, promptly.
    let asked = Instant::now();
    let v = server.query_json(serde_json::json!({ "sql": "SELECT count(*) FROM spans" })).await;
    assert_eq!(v["rows"][0][0], 500, "{v}");
    let warning = v["stats"]["warnings"][0].as_str().unwrap_or_default();
    assert!(warning.contains("object storage could not be read"), "{v}");
    assert!(asked.elapsed() < Duration::from_secs(15), "{:?}", asked.elapsed());
    // So do log search and trace lookups: they leave out the segment they cannot fetch (the
    // first 50 records, flushed before the cut) and say so.
    let get = |path: String| {
        let (client, url) = (server.http_client().clone(), server.api(&path));
        async move {
            let r = client.get(url).send().await.unwrap();
            (r.status().as_u16(), r.json::<serde_json::Value>().await.unwrap())
        }
    };
    let t0 = crate::otlp::T0;
    let (status, v) = get(format!("/api/v1/logs?q=payment&start={t0}&end={}&limit=1000", t0 + 1_000_000_000)).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["logs"].as_array().map(Vec::len), Some(500), "the head's records, none of the bucket's: {v}");
    assert!(v["stats"]["warnings"][0].as_str().unwrap_or_default().contains("could not be read"), "{v}");
    let hex = |n: u64| format!("abababababababab{n:016x}");
    // Trace 7: its 10 spans were sent during the outage; every log record carries it.
    let (status, v) = get(format!("/api/v1/traces/{}", hex(7))).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["spans"].as_array().map(Vec::len), Some(10), "{v}");
    assert_eq!(v["logs"].as_array().map(Vec::len), Some(500), "{v}");
    assert!(v["stats"]["warnings"][0].as_str().unwrap_or_default().contains("could not be read"), "{v}");
    // Trace 2 is only in the bucket: not found, and the answer says where it may be.
    let (status, v) = get(format!("/api/v1/traces/{}", hex(2))).await;
    assert_eq!(status, 404, "{v}");
    assert!(v.to_string().contains("could not be read"), "{v}");
    assert!(asked.elapsed() < Duration::from_secs(30), "{:?}", asked.elapsed());
    // Ingest goes on for the rest of the 30 s.
    let mut sent = 550;
    while cut.elapsed() < Duration::from_secs(30) {
        send(sent).await;
        sent += 50;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // It comes back: the flush resumes, readiness returns, and every acknowledged span is
    // there once, before and after a restart.
    proxy.set_down(false);
    let started = Instant::now();
    while server.http_client().get(server.api("/readyz")).send().await.unwrap().status() != 200 {
        assert!(started.elapsed() < Duration::from_secs(60), "no recovery:\n{}", server.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(written().await > before);
    assert_eq!(server.count("SELECT count(*) FROM spans").await, sent);
    assert_eq!(server.count("SELECT count(*) FROM logs").await, sent);
    server.restart();
    assert_eq!(server.count("SELECT count(DISTINCT CAST(attributes['seq'] AS BIGINT)) FROM spans").await, sent);
    assert_eq!(server.count("SELECT count(*) FROM spans").await, sent);
}
