//! Object storage against a real S3-compatible server: moto (`moto[server]`, pinned in
//! `tests/s3/requirements.txt`, installed into `.venv` by `scripts/test`), started here on
//! 127.0.0.1. First `object_store`'s own conformance checks, so that a server bug is not
//! mistaken for ours; then what tracelight relies on (create-only puts).

#[path = "../../../tests/support/moto.rs"]
mod moto;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use object_store::integration;
use object_store::{ObjectStore, ObjectStoreExt};

use moto::{Moto, create_bucket, moto, options};
use tracelight_storage::objstore::{self, Location, S3Options};

fn store(moto: &Moto, url: &str) -> std::sync::Arc<dyn ObjectStore> {
    let Location::S3 { bucket, prefix } = Location::parse(url).unwrap() else { panic!("{url} is not s3") };
    objstore::s3_store(&bucket, &prefix, &options(&moto.endpoint)).unwrap()
}

#[tokio::test]
async fn moto_passes_object_stores_own_conformance_checks() {
    let Some(moto) = moto("moto_passes_object_stores_own_conformance_checks") else { return };
    create_bucket(&moto.endpoint, "conformance");
    // The checks object_store runs against S3 itself (its `s3_test`), with our client settings.
    let s = objstore::s3_builder("conformance", &options(&moto.endpoint)).build().unwrap();
    integration::put_get_delete_list(&s).await;
    integration::list_with_offset_exclusivity(&s).await;
    integration::get_opts(&s).await;
    integration::list_uses_directories_correctly(&s).await;
    integration::list_with_delimiter(&s).await;
    integration::rename_and_copy(&s).await;
    integration::stream_get(&s).await;
    integration::multipart(&s, &s).await;
    integration::multipart_race_condition(&s, true).await;
    integration::multipart_out_of_order(&s).await;
    integration::put_get_attributes(&s).await;
    integration::list_paginated(&s, &s).await;
    // Conditional puts (create-only and update-if-ETag-matches): what publishing relies on.
    integration::put_opts(&s, true).await;
    let missing = integration::get_nonexistent_object(&s, None).await.unwrap_err();
    assert!(matches!(missing, object_store::Error::NotFound { .. }), "{missing}");
}

#[tokio::test]
async fn create_only_puts_are_honoured_and_prefixes_keep_deployments_apart() {
    let Some(moto) = moto("create_only_puts_are_honoured_and_prefixes_keep_deployments_apart") else { return };
    create_bucket(&moto.endpoint, "segments");
    let a = store(&moto, "s3://segments/cluster-a");
    let b = store(&moto, "s3://segments/cluster-b/");
    objstore::probe(a.as_ref(), "n1").await.unwrap();

    // One name under two prefixes: two objects.
    let p = object_store::path::Path::from("default/spans/x.parquet");
    a.put(&p, b"from a".to_vec().into()).await.unwrap();
    b.put(&p, b"from b".to_vec().into()).await.unwrap();
    assert_eq!(a.get(&p).await.unwrap().bytes().await.unwrap().as_ref(), b"from a");
    assert_eq!(b.get(&p).await.unwrap().bytes().await.unwrap().as_ref(), b"from b");
    let whole = store(&moto, "s3://segments");
    let got = whole.get(&"cluster-a/default/spans/x.parquet".into()).await.unwrap().bytes().await.unwrap();
    assert_eq!(got.as_ref(), b"from a");
    // Ranged reads, as Parquet footers and pages are read.
    assert_eq!(a.get_range(&p, 2..6).await.unwrap().as_ref(), b"om a");

    // A bucket that does not exist and a server that does not answer are clear errors.
    let missing = store(&moto, "s3://no-such-bucket");
    let e = objstore::probe(missing.as_ref(), "n1").await.unwrap_err().to_string();
    assert!(e.contains("create-only put"), "{e}");
    let dead_port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let quick =
        S3Options { request_timeout: Duration::from_secs(2), ..options(&format!("http://127.0.0.1:{dead_port}")) };
    let dead = objstore::s3_store("segments", "", &quick).unwrap();
    let started = Instant::now();
    assert!(objstore::probe(dead.as_ref(), "n1").await.is_err());
    assert!(started.elapsed() < Duration::from_secs(20), "gave up after {:?}", started.elapsed());
}
