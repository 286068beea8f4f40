//! The janitor: deletes the objects of segments no query can need any more, then their
//! catalog rows. It is the only code that deletes segment data.
//!
//! - *Retired* segments (replaced by a merge, or expired by retention) are kept for `grace`
//!   after they stopped being listed, longer than the longest query, so a query that listed
//!   them just before still reads them.
//! - *Staged* segments are writes that never published: a flush or merge that failed, or a
//!   node killed in the middle of one. They are kept for [`STAGED_GRACE`], far longer than
//!   any upload takes, so a slow writer is never robbed of its files; if the janitor does
//!   claim one first, the writer's publish fails and it writes again under new names.
//! - A janitor killed mid-way leaves rows in `deleting`; they are claimed again after
//!   `grace`. Deleting a missing object is not an error, so nothing is done twice wrongly.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracelight_model::telemetry::{Counter, Gauge, Registry};
use tracelight_model::time::now_ns;

use crate::catalog::{Catalog, Leadership};
use crate::compact::RemovedFn;
use crate::error::StorageError;
use crate::segment::SegmentStore;

/// How long a staged segment may stay unpublished before the janitor deletes it.
pub const STAGED_GRACE: Duration = Duration::from_secs(3600);

/// Segments claimed per catalog round trip.
const CLAIM: usize = 256;
/// Rounds per pass (a backlog is worked off over several passes, each bounded).
const ROUNDS: usize = 64;

/// What one pass deleted.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct JanitorStats {
    pub segments: usize,
    pub bytes: u64,
    /// Segments whose objects could not be deleted (retried after the grace period).
    pub failed: usize,
}

pub struct Janitor {
    catalog: Catalog,
    store: SegmentStore,
    grace: Duration,
    staged_grace: Duration,
    on_removed: RemovedFn,
    deleted: Arc<Counter>,
    deleted_bytes: Arc<Counter>,
    failures: Arc<Counter>,
    waiting: Arc<Gauge>,
    leadership: Leadership,
}

impl Janitor {
    /// `grace`: how long retired segments stay (longer than the longest query).
    pub fn new(catalog: Catalog, store: SegmentStore, grace: Duration, registry: &Registry) -> Janitor {
        Janitor {
            catalog,
            store,
            grace,
            staged_grace: STAGED_GRACE,
            leadership: Leadership::always("compact"),
            on_removed: Arc::new(|_| {}),
            deleted: registry
                .counter("tracelight_janitor_segments_deleted_total", "Segments whose data the janitor deleted."),
            deleted_bytes: registry
                .counter("tracelight_janitor_bytes_deleted_total", "Bytes of segment data (and indexes) deleted."),
            failures: registry
                .counter("tracelight_janitor_failures_total", "Segments whose deletion failed (retried later)."),
            waiting: registry.gauge(
                "tracelight_segments_awaiting_deletion",
                "Staged, retired and claimed segments not yet deleted, at the last janitor pass.",
            ),
        }
    }

    /// Called with the paths of deleted segments (the engine forgets their index readers).
    pub fn with_on_removed(mut self, f: RemovedFn) -> Janitor {
        self.on_removed = f;
        self
    }

    /// Passes run only while this node leads the `compact` job.
    pub fn with_leadership(mut self, l: Leadership) -> Janitor {
        self.leadership = l;
        self
    }

    /// How long staged segments stay (tests shorten it).
    pub fn with_staged_grace(mut self, d: Duration) -> Janitor {
        self.staged_grace = d;
        self
    }

    /// A pass every `interval` until `shutdown` turns true.
    pub async fn run(self: Arc<Self>, interval: Duration, mut shutdown: watch::Receiver<bool>) {
        loop {
            let pass = if self.leadership.is_leader() { self.pass().await } else { Ok(JanitorStats::default()) };
            match pass {
                Ok(s) if s.segments > 0 || s.failed > 0 => {
                    tracing::info!(
                        segments = s.segments,
                        bytes = s.bytes,
                        failed = s.failed,
                        "janitor deleted segments"
                    )
                }
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "janitor pass failed; retrying at the next pass"),
            }
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// Claims due segments, deletes their objects, then their rows.
    pub async fn pass(&self) -> Result<JanitorStats, StorageError> {
        let mut stats = JanitorStats::default();
        let ns = |d: Duration| d.as_nanos().min(i64::MAX as u128) as i64;
        for _ in 0..ROUNDS {
            let now = now_ns();
            let claimed = self
                .catalog
                .claim_garbage(now.saturating_sub(ns(self.grace)), now.saturating_sub(ns(self.staged_grace)), CLAIM)
                .await?;
            let n = claimed.len();
            let mut results = Vec::with_capacity(n);
            for s in claimed {
                let r = self.store.delete_segment(&s.path).await;
                if r.is_ok()
                    && let Some((dir, _)) = s.path.rsplit_once('/')
                {
                    self.store.remove_empty_dirs(dir);
                }
                results.push((s, r));
            }
            let mut gone = Vec::with_capacity(n);
            let mut paths = Vec::with_capacity(n);
            for (s, r) in results {
                match r {
                    Ok(()) => {
                        stats.segments += 1;
                        stats.bytes += s.bytes + s.index_bytes;
                        self.deleted.inc();
                        self.deleted_bytes.add(s.bytes + s.index_bytes);
                        gone.push(s.id);
                        paths.push(s.path);
                    }
                    Err(e) => {
                        stats.failed += 1;
                        self.failures.inc();
                        tracing::warn!(error = %e, path = %s.path, "cannot delete segment; retried after the grace period");
                    }
                }
            }
            self.catalog.forget_deleted(&gone).await?;
            (self.on_removed)(&paths);
            if n < CLAIM {
                break;
            }
        }
        let g = self.catalog.garbage().await?;
        self.waiting.set((g.staged + g.retired + g.deleting) as i64);
        Ok(stats)
    }
}
