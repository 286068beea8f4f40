//! The life of a segment's catalog row, which is what makes publishing safe on a shared
//! object store: no object is written before its row is `staged`, so every object the store
//! holds has a row saying whose it is and whether it counts.
//!
//! ```text
//! staged ──publish (flush commit / merge swap)──▶ published ──merge / retention──▶ retired
//!    │                                                                                │
//!    └──────────── older than its grace: the janitor claims it ──▶ deleting ◀────────┘
//!                                                     objects deleted, then the row
//! ```
//!
//! A claim is one conditional `UPDATE`, so a slow flush that publishes a staged row and the
//! janitor that claims it cannot both win: the publish finds the row no longer staged and
//! fails (the flush retries under new names), or the claim finds it published and passes.

use sqlx::Row;

use super::{ALL_COLUMNS, Catalog, IntoMeta, Pool, RawSegment, SegmentMeta};
use crate::error::StorageError;

/// Where a segment's row is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentState {
    /// Its objects may be being written; invisible to queries.
    Staged,
    /// Visible to queries.
    Published,
    /// Replaced by a merge or expired; invisible to new queries, kept for running ones.
    Retired,
    /// Claimed by the janitor, its objects being deleted.
    Deleting,
}

impl SegmentState {
    pub fn as_str(self) -> &'static str {
        match self {
            SegmentState::Staged => "staged",
            SegmentState::Published => "published",
            SegmentState::Retired => "retired",
            SegmentState::Deleting => "deleting",
        }
    }
}

/// Rows waiting for the janitor, by state.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct GarbageStats {
    pub staged: u64,
    pub retired: u64,
    pub deleting: u64,
}

impl Catalog {
    /// Records `segments` as staged, before any of their objects is written. Their figures
    /// (rows, bytes, times) may be placeholders: publishing sets the real ones.
    pub async fn stage_segments(&self, segments: &[SegmentMeta]) -> Result<(), StorageError> {
        let now = tracelight_model::time::now_ns();
        on_pool!(self, pool => {
            let mut tx = pool.begin().await.map_err(|e| StorageError::catalog("begin staging", e))?;
            for s in segments {
                insert_segment!(tx, s, SegmentState::Staged, now);
            }
            tx.commit().await.map_err(|e| StorageError::catalog("commit staging", e))?;
        });
        Ok(())
    }

    /// Claims at most `limit` rows for deletion: retired ones that changed state before
    /// `retired_before_ns`, staged ones before `staged_before_ns`, and claims of a janitor
    /// that died before `retired_before_ns`. Their objects may be deleted once this returns;
    /// then [`Catalog::forget_deleted`] removes the rows.
    pub async fn claim_garbage(
        &self,
        retired_before_ns: i64,
        staged_before_ns: i64,
        limit: usize,
    ) -> Result<Vec<SegmentMeta>, StorageError> {
        // The conditions are on the UPDATE itself too: PostgreSQL re-checks them against a
        // row that a concurrent publish changed, and then leaves it.
        let due = "((state = 'retired' OR state = 'deleting') AND state_at_ns < $2)
                   OR (state = 'staged' AND state_at_ns < $3)";
        // On PostgreSQL the pick is a materialized CTE: a LIMIT … SKIP LOCKED subquery inside
        // `IN (…)` may be evaluated again per row and return other rows each time.
        let pick = if self.is_postgres() {
            format!(
                "WITH picked AS MATERIALIZED (SELECT id FROM segments WHERE {due} ORDER BY state_at_ns LIMIT $4 FOR UPDATE SKIP LOCKED) "
            )
        } else {
            format!("WITH picked AS (SELECT id FROM segments WHERE {due} ORDER BY state_at_ns LIMIT $4) ")
        };
        let sql = format!(
            "{pick}UPDATE segments SET state = 'deleting', state_at_ns = $1
             WHERE id IN (SELECT id FROM picked) AND ({due})
             RETURNING {ALL_COLUMNS}"
        );
        let rows: Vec<RawSegment> = on_pool!(self, pool => {
            sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(tracelight_model::time::now_ns())
                .bind(retired_before_ns)
                .bind(staged_before_ns)
                .bind(limit.min(i64::MAX as usize) as i64)
                .fetch_all(pool).await.map_err(|e| StorageError::catalog("claim segments for deletion", e))?
                .iter().map(raw_segment!()).collect()
        });
        rows.into_iter().map(RawSegment::into_meta).collect()
    }

    /// Removes the rows of claimed segments whose objects are gone.
    pub async fn forget_deleted(&self, ids: &[String]) -> Result<u64, StorageError> {
        let mut n = 0;
        on_pool!(self, pool => {
            let mut tx = pool.begin().await.map_err(|e| StorageError::catalog("begin forgetting segments", e))?;
            for id in ids {
                n += sqlx::query("DELETE FROM segments WHERE id = $1 AND state = 'deleting'")
                    .bind(id).execute(&mut *tx).await
                    .map_err(|e| StorageError::catalog("forget deleted segment", e))?.rows_affected();
            }
            tx.commit().await.map_err(|e| StorageError::catalog("commit forgetting segments", e))?;
        });
        Ok(n)
    }

    /// How many rows wait for the janitor, by state (for `/metrics`).
    pub async fn garbage(&self) -> Result<GarbageStats, StorageError> {
        let rows: Vec<(String, i64)> = on_pool!(self, pool => {
            sqlx::query("SELECT state, COUNT(*) FROM segments WHERE state <> 'published' GROUP BY state")
                .fetch_all(pool).await.map_err(|e| StorageError::catalog("count unpublished segments", e))?
                .into_iter().map(|r| (r.get::<String, _>(0), r.get::<i64, _>(1))).collect()
        });
        let mut g = GarbageStats::default();
        for (state, n) in rows {
            let n = n.max(0) as u64;
            match state.as_str() {
                "staged" => g.staged = n,
                "retired" => g.retired = n,
                "deleting" => g.deleting = n,
                _ => {}
            }
        }
        Ok(g)
    }

    /// The state of segment `id`, if it has a row (for tests and diagnostics).
    pub async fn segment_state(&self, id: &str) -> Result<Option<String>, StorageError> {
        Ok(on_pool!(self, pool => {
            sqlx::query("SELECT state FROM segments WHERE id = $1").bind(id).fetch_optional(pool).await
                .map_err(|e| StorageError::catalog("read segment state", e))?
                .map(|r| r.get::<String, _>(0))
        }))
    }
}
