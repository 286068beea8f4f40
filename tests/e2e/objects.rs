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
