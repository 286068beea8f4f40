//! Segments on object storage (moto on 127.0.0.1): what the flush, compaction, search and
//! the janitor do with a [`SegmentStore`] whose files are S3 objects. Create-only puts, point
//! reads with range requests, indexes fetched whole into the disk cache, bundles, large
//! uploads in parts, and deletion.

mod fixture;
#[path = "../../../tests/support/moto.rs"]
mod moto;

use std::io::Read;
use std::sync::Arc;

use arrow::array::{Array, AsArray, BooleanArray, Int64Array, RecordBatch};
use object_store::ObjectStoreExt;
use tracelight_model::telemetry::Registry;
use tracelight_storage::diskcache::DiskCache;
use tracelight_storage::objstore::Location;
use tracelight_storage::{IndexFiles, SegmentStore, index_dir};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segments_round_trip_through_object_storage() {
    let Some(moto) = moto::moto("segments_round_trip_through_object_storage") else { return };
    moto::create_bucket(&moto.endpoint, "segs");
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::default();
    let disk = Arc::new(DiskCache::open(&dir.path().join("cache"), 1 << 30, &registry).unwrap());
    let location = Location::parse("s3://segs/team/a").unwrap();
    let store =
        SegmentStore::open_location(&location, &moto::options(&moto.endpoint), &dir.path().join("scratch"), disk)
            .unwrap()
            .with_cache(8 << 20, &registry);
    store.probe("n1").await.unwrap();
    assert_eq!(store.describe(), "s3://segs/team/a");
    let (url, objects) = store.object_store().unwrap();
    assert_eq!(url, "s3://segs");

    let rel = "default/logs/2026-12-07/10/n1-a.parquet";
    assert_eq!(store.table_url(rel), format!("s3://segs/team/a/{rel}"));
    let n = 50_000;
    let bytes = fixture::parquet(n, 1024);
    let put = {
        let (store, bytes) = (store.clone(), bytes.clone());
        tokio::task::spawn_blocking(move || store.put(rel, &bytes)).await.unwrap()
    };
    put.unwrap();
    let again = store.put(rel, b"other");
    assert!(again.unwrap_err().to_string().contains("put"), "a name is written once");
    let head = objects.head(&format!("team/a/{rel}").into()).await.unwrap();
    assert_eq!(head.size, bytes.len() as u64, "under the prefix, whole");

    // Point reads from a worker thread of the runtime (as the query pool runs them).
    let rows = [0u64, 1, 1023, 1024, 30_000, 49_999];
    let got = store.read_rows(rel, &rows).unwrap();
    let col = got.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
    assert_eq!(col.values().iter().map(|v| *v as u64).collect::<Vec<_>>(), rows);
    let cols = store.read_columns(rel, &[5, 6, 40_000], &["s"]).unwrap();
    assert_eq!(cols.num_columns(), 1);
    assert_eq!(cols.column(0).as_string::<i32>().value(2), "row 40000");
    let hits = store.rows_where(rel, &[0, 29], "s", |s| s.ends_with('7')).unwrap();
    assert_eq!(hits.len(), 102 + 103, "{hits:?}");
    assert!(hits.iter().all(|r| r % 10 == 7 && (*r < 1024 || (29 * 1024..30 * 1024).contains(r))));
    let kept = store
        .read_blocks_where(rel, &[3], "s", |b: &RecordBatch| {
            let s = b.column(0).as_string::<i32>();
            (0..s.len()).map(|i| Some(s.value(i).ends_with("00"))).collect::<BooleanArray>()
        })
        .unwrap();
    let n_col = kept.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
    assert_eq!(n_col.values().to_vec(), [3100, 3200, 3300, 3400, 3500, 3600, 3700, 3800, 3900, 4000]);
    // Those reads left the chunks they touched in the disk cache: reading the same pages
    // again fetches nothing.
    let cache = |name: &str| fixture::series(&registry, &format!("tracelight_disk_cache_{name}_total"));
    let (fetched, hits) = (cache("misses"), cache("hits"));
    assert!(fetched > 0 && fetched < bytes.len() as u64 / (128 << 10) + 2, "{fetched} chunks");
    let again = store
        .read_blocks_where(rel, &[3], "s", |b: &RecordBatch| {
            let s = b.column(0).as_string::<i32>();
            (0..s.len()).map(|i| Some(s.value(i).ends_with("00"))).collect::<BooleanArray>()
        })
        .unwrap();
    assert_eq!(again, kept);
    assert_eq!(cache("misses"), fetched, "nothing fetched again");
    assert!(cache("hits") > hits);
    assert!(store.read_rows(rel, &[50_000]).is_err(), "past the end");
    assert!(store.read_rows("default/logs/none.parquet", &[1]).is_err(), "a missing segment is an error");
    // Compaction reads a whole segment (downloaded first, nothing left in scratch).
    let all: usize = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || store.read_all(rel, 4096).unwrap().map(|b| b.unwrap().num_rows()).sum())
            .await
            .unwrap()
    };
    assert_eq!(all, n as usize);
    assert_eq!(std::fs::read_dir(dir.path().join("scratch")).unwrap().count(), 0);

    // The trace-ID index and the index bundle come whole into the disk cache, once.
    let tid = tracelight_storage::traceidx::path_for(rel);
    store.put(&tid, b"trace ids").unwrap();
    let read_tid = || {
        let mut s = String::new();
        store.open_file(&tid).unwrap().unwrap().read_to_string(&mut s).unwrap();
        s
    };
    let (misses, hits) = (cache("misses"), cache("hits"));
    assert_eq!(read_tid(), "trace ids");
    assert_eq!(read_tid(), "trace ids");
    assert_eq!((cache("misses"), cache("hits")), (misses + 1, hits + 1));
    assert!(store.open_file("default/logs/none.tid").unwrap().is_none());
    let bundle_bytes = store
        .put_dir(&index_dir(rel), |d| {
            std::fs::write(d.join("meta.json"), b"{}").unwrap();
            std::fs::write(d.join("seg.idx"), vec![1u8; 5000]).map_err(|e| e.to_string())
        })
        .unwrap();
    let Some(IndexFiles::Bundle(mut file)) = store.index_files(rel).unwrap() else { panic!("no bundle") };
    let mut bundle = Vec::new();
    file.read_to_end(&mut bundle).unwrap();
    assert_eq!(bundle.len() as u64, bundle_bytes);
    let names: Vec<String> =
        tracelight_storage::bundle::entries(&bundle).unwrap().into_iter().map(|e| e.name).collect();
    assert_eq!(names, ["meta.json", "seg.idx"]);
    let failed = store.put_dir(&index_dir("default/logs/b.parquet"), |_| Err("the build failed".into()));
    assert!(failed.unwrap_err().to_string().contains("the build failed"));
    assert!(store.index_files("default/logs/b.parquet").unwrap().is_none(), "a failed build uploads nothing");

    // A file above the single-request limit goes up in parts.
    let big = "default/spans/2026-12-07/10/n1-big.parquet";
    let size = (tracelight_storage::MULTIPART_BYTES + (3 << 20)) as usize;
    let written = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || {
            store.put_with(big, |f| {
                use std::io::Write;
                let chunk: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
                for _ in 0..size >> 20 {
                    f.write_all(&chunk).map_err(|e| tracelight_storage::StorageError::SegmentWrite(e.to_string()))?;
                }
                Ok(())
            })
        })
        .await
        .unwrap()
        .unwrap()
    };
    assert_eq!(written as usize, size);
    let tail = objects.get_range(&format!("team/a/{big}").into(), (size as u64 - 10)..size as u64).await.unwrap();
    assert_eq!(tail.to_vec(), ((size - 10)..size).map(|i| ((i % (1 << 20)) % 251) as u8).collect::<Vec<_>>());

    // Deleting a segment removes its data, trace-ID index, bundle and cached copies.
    store.delete_segment(rel).await.unwrap();
    store.delete_segment(rel).await.unwrap();
    assert!(store.open_file(&tid).unwrap().is_none());
    assert!(store.index_files(rel).unwrap().is_none());
    assert!(store.read_rows(rel, &[1]).is_err());
    store.delete_segment(big).await.unwrap();
    let left: Vec<_> = {
        use futures::TryStreamExt;
        objects.list(Some(&"team".into())).try_collect::<Vec<_>>().await.unwrap()
    };
    assert!(left.is_empty(), "{left:?}");
}
