//! The catalog (metastore): which Parquet segments exist and up to which WAL record they
//! cover. SQLite by default, PostgreSQL by URL, through sqlx; the same SQL serves both
//! (`$N` placeholders work in SQLite too).
//!
//! Schema changes are numbered, append-only files in `migrations/sqlite/` and
//! `migrations/postgres/`, compiled into the binary and applied at start-up and by
//! `tracelight migrate`. A migration that changed after it was applied is refused.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, raw_sql};

use tracelight_model::slo::{MinuteCounts, Notification, SloStore, StoreError};
use tracelight_model::{Signal, Tenant};

use crate::error::StorageError;

struct Migration {
    version: i64,
    name: &'static str,
    sqlite: &'static str,
    postgres: &'static str,
}

macro_rules! migration {
    ($version:expr, $name:literal) => {
        Migration {
            version: $version,
            name: $name,
            sqlite: include_str!(concat!("../../../migrations/sqlite/", $name, ".sql")),
            postgres: include_str!(concat!("../../../migrations/postgres/", $name, ".sql")),
        }
    };
}

const MIGRATIONS: &[Migration] = &[
    migration!(1, "0001_segments"),
    migration!(2, "0002_segment_index"),
    migration!(3, "0003_slo"),
    migration!(4, "0004_slo_late_data"),
    migration!(5, "0005_nodes"),
    migration!(6, "0006_segment_states"),
];

/// One Parquet file as the catalog records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentMeta {
    pub id: String,
    pub node: String,
    pub tenant: Tenant,
    pub signal: Signal,
    /// Hours since the Unix epoch.
    pub partition_hour: i64,
    /// Path inside the storage root.
    pub path: String,
    pub min_time_ns: i64,
    pub max_time_ns: i64,
    pub rows: u64,
    pub bytes: u64,
    /// Bytes of the full-text / trace-ID index directory beside the file (0 when none).
    pub index_bytes: u64,
    /// The WAL checkpoint of the flush that wrote this segment.
    pub flush_lsn: u64,
    pub created_at_ns: i64,
}

#[derive(Clone)]
enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Handle to the catalog database; cheap to clone.
#[derive(Clone)]
pub struct Catalog {
    pool: Pool,
    url_for_display: String,
}

/// Runs the same body against whichever pool this is.
macro_rules! on_pool {
    ($self:expr, $pool:ident => $body:expr) => {
        match &$self.pool {
            Pool::Sqlite($pool) => $body,
            Pool::Postgres($pool) => $body,
        }
    };
}

const ALL_COLUMNS: &str = "id, node, tenant, signal, partition_hour, path, min_time_ns, max_time_ns, row_count,
    byte_size, flush_lsn, created_at_ns, index_bytes";

/// A `segments` row read with [`ALL_COLUMNS`], before its tenant and signal are checked.
type RawSegment = (String, String, String, String, i64, String, i64, i64, i64, i64, i64, i64, i64);

/// Reads a `segments` row selected with [`ALL_COLUMNS`] (a macro: the row type differs per
/// database).
macro_rules! raw_segment {
    () => {
        |r| -> RawSegment {
            (
                r.get(0),
                r.get(1),
                r.get(2),
                r.get(3),
                r.get(4),
                r.get(5),
                r.get(6),
                r.get(7),
                r.get(8),
                r.get(9),
                r.get(10),
                r.get(11),
                r.get(12),
            )
        }
    };
}

trait IntoMeta {
    fn into_meta(self) -> Result<SegmentMeta, StorageError>;
}

impl IntoMeta for RawSegment {
    fn into_meta(self) -> Result<SegmentMeta, StorageError> {
        let (id, node, tenant, signal, hour, path, min_t, max_t, rows, bytes, lsn, created, index_bytes) = self;
        Ok(SegmentMeta {
            id,
            node,
            tenant: Tenant::from_header(Some(&tenant)).map_err(|e| StorageError::Config(e.to_string()))?,
            signal: Signal::from_table(&signal)
                .ok_or_else(|| StorageError::Config(format!("unknown signal {signal:?} in the catalog")))?,
            partition_hour: hour,
            path,
            min_time_ns: min_t,
            max_time_ns: max_t,
            rows: rows as u64,
            bytes: bytes as u64,
            flush_lsn: lsn as u64,
            created_at_ns: created,
            index_bytes: index_bytes as u64,
        })
    }
}

/// Inserts one `segments` row in state `$state` inside the transaction `tx` (a macro: the
/// transaction type differs per database).
macro_rules! insert_segment {
    ($tx:expr, $s:expr, $state:expr, $at:expr) => {{
        let s: &SegmentMeta = $s;
        let state: SegmentState = $state;
        sqlx::query(
            "INSERT INTO segments (id, node, tenant, signal, partition_hour, path, min_time_ns, max_time_ns,
                row_count, byte_size, flush_lsn, created_at_ns, index_bytes, state, state_at_ns)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
        )
        .bind(&s.id)
        .bind(&s.node)
        .bind(s.tenant.as_str())
        .bind(s.signal.table())
        .bind(s.partition_hour)
        .bind(&s.path)
        .bind(s.min_time_ns)
        .bind(s.max_time_ns)
        .bind(s.rows as i64)
        .bind(s.bytes as i64)
        .bind(s.flush_lsn as i64)
        .bind(s.created_at_ns)
        .bind(s.index_bytes as i64)
        .bind(state.as_str())
        .bind($at)
        .execute(&mut *$tx)
        .await
        .map_err(|e| StorageError::catalog("insert segment", e))?;
    }};
}

/// Publishes the staged row of `s` with its final figures inside the transaction `tx`; the
/// number of rows changed (0 when the row is not staged: the janitor claimed it).
macro_rules! publish_segment {
    ($tx:expr, $s:expr, $at:expr) => {{
        let s: &SegmentMeta = $s;
        sqlx::query(
            "UPDATE segments SET state = 'published', state_at_ns = $2, min_time_ns = $3, max_time_ns = $4,
                row_count = $5, byte_size = $6, flush_lsn = $7, created_at_ns = $8, index_bytes = $9
             WHERE id = $1 AND state = 'staged'",
        )
        .bind(&s.id)
        .bind($at)
        .bind(s.min_time_ns)
        .bind(s.max_time_ns)
        .bind(s.rows as i64)
        .bind(s.bytes as i64)
        .bind(s.flush_lsn as i64)
        .bind(s.created_at_ns)
        .bind(s.index_bytes as i64)
        .execute(&mut *$tx)
        .await
        .map_err(|e| StorageError::catalog("publish segment", e))?
        .rows_affected()
    }};
}

mod leader;
mod lifecycle;
mod nodes;
pub use leader::{Leadership, leader_retry, lock_key};
pub use lifecycle::{GarbageStats, SegmentState};
pub use nodes::NodeInfo;

impl Catalog {
    /// Connects to `sqlite://path` (the file is created if missing) or `postgres://…`.
    pub async fn connect(url: &str) -> Result<Catalog, StorageError> {
        let display = redact(url);
        let pool = if url.starts_with("sqlite:") {
            let opts = SqliteConnectOptions::from_str(url)
                .map_err(|e| StorageError::Config(format!("invalid catalog URL {display}: {e}")))?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Full)
                .busy_timeout(Duration::from_secs(10));
            if let Some(parent) = opts.get_filename().parent()
                && !parent.as_os_str().is_empty()
            {
                std::fs::create_dir_all(parent)
                    .map_err(|e| StorageError::Config(format!("cannot create {}: {e}", parent.display())))?;
            }
            let pool = SqlitePoolOptions::new()
                .max_connections(4)
                .connect_with(opts)
                .await
                .map_err(|e| StorageError::catalog(format!("connect to {display}"), e))?;
            Pool::Sqlite(pool)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let pool = PgPoolOptions::new()
                .max_connections(8)
                .acquire_timeout(Duration::from_secs(10))
                .connect(url)
                .await
                .map_err(|e| StorageError::catalog(format!("connect to {display}"), e))?;
            Pool::Postgres(pool)
        } else {
            return Err(StorageError::Config(format!(
                "unsupported catalog URL {display}: use sqlite://PATH or postgres://USER@HOST/DB"
            )));
        };
        Ok(Catalog { pool, url_for_display: display })
    }

    /// The URL with any password removed, for logs.
    pub fn display_url(&self) -> &str {
        &self.url_for_display
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self.pool, Pool::Postgres(_))
    }

    /// Applies pending migrations; returns the names applied now.
    pub async fn migrate(&self) -> Result<Vec<String>, StorageError> {
        const CREATE: &str = "CREATE TABLE IF NOT EXISTS _tracelight_migrations (
            version BIGINT PRIMARY KEY, name TEXT NOT NULL, checksum BIGINT NOT NULL, applied_at_ns BIGINT NOT NULL)";
        let mut applied_now = Vec::new();
        on_pool!(self, pool => {
            let mut tx = pool.begin().await.map_err(|e| StorageError::catalog("begin migration", e))?;
            if self.is_postgres() {
                // Several nodes may start at once; one migrates, the others wait.
                raw_sql("SELECT pg_advisory_xact_lock(7302915)").execute(&mut *tx).await
                    .map_err(|e| StorageError::catalog("lock for migration", e))?;
            }
            raw_sql(CREATE).execute(&mut *tx).await.map_err(|e| StorageError::catalog("create migrations table", e))?;
            let rows = sqlx::query("SELECT version, checksum FROM _tracelight_migrations")
                .fetch_all(&mut *tx).await.map_err(|e| StorageError::catalog("read migrations", e))?;
            let done: Vec<(i64, i64)> = rows.iter().map(|r| (r.get::<i64, _>(0), r.get::<i64, _>(1))).collect();
            for m in MIGRATIONS {
                let sql = if self.is_postgres() { m.postgres } else { m.sqlite };
                let sum = checksum(sql);
                if let Some((_, stored)) = done.iter().find(|(v, _)| *v == m.version) {
                    if *stored != sum {
                        return Err(StorageError::Config(format!(
                            "migration {} changed after it was applied; migrations are append-only", m.name)));
                    }
                    continue;
                }
                raw_sql(sql).execute(&mut *tx).await.map_err(|e| StorageError::catalog(format!("apply migration {}", m.name), e))?;
                sqlx::query("INSERT INTO _tracelight_migrations (version, name, checksum, applied_at_ns) VALUES ($1, $2, $3, $4)")
                    .bind(m.version).bind(m.name).bind(sum).bind(tracelight_model::time::now_ns())
                    .execute(&mut *tx).await.map_err(|e| StorageError::catalog("record migration", e))?;
                applied_now.push(m.name.to_string());
            }
            tx.commit().await.map_err(|e| StorageError::catalog("commit migration", e))?;
        });
        Ok(applied_now)
    }

    /// The WAL checkpoint of `node`: every record at or below it is in Parquet.
    pub async fn wal_checkpoint(&self, node: &str) -> Result<u64, StorageError> {
        let lsn: Option<i64> = on_pool!(self, pool => {
            sqlx::query("SELECT wal_lsn FROM wal_checkpoints WHERE node = $1")
                .bind(node).fetch_optional(pool).await
                .map_err(|e| StorageError::catalog("read WAL checkpoint", e))?
                .map(|r| r.get::<i64, _>(0))
        });
        Ok(lsn.unwrap_or(0) as u64)
    }

    /// Publishes `segments` (staged before their objects were written, see
    /// [`Catalog::stage_segments`]) and moves the node's WAL checkpoint, atomically. Returns
    /// false (and changes nothing) when the checkpoint is already at or past `wal_lsn`: a retry
    /// of a commit that succeeded although its answer was lost, or a second process with this
    /// node name; the staged rows are then left to the janitor. An error, changing nothing,
    /// when one of them is no longer staged (the janitor took it after a very slow upload).
    pub async fn commit_flush(&self, node: &str, segments: &[SegmentMeta], wal_lsn: u64) -> Result<bool, StorageError> {
        on_pool!(self, pool => {
            let mut tx = pool.begin().await.map_err(|e| StorageError::catalog("begin flush commit", e))?;
            // Take the row lock first (PostgreSQL); SQLite serialises writers anyway.
            let lock = if self.is_postgres() {
                "SELECT wal_lsn FROM wal_checkpoints WHERE node = $1 FOR UPDATE"
            } else {
                "SELECT wal_lsn FROM wal_checkpoints WHERE node = $1"
            };
            let current: Option<i64> = sqlx::query(lock).bind(node).fetch_optional(&mut *tx).await
                .map_err(|e| StorageError::catalog("read WAL checkpoint", e))?.map(|r| r.get(0));
            if current.is_some_and(|c| c as u64 >= wal_lsn) {
                tx.rollback().await.map_err(|e| StorageError::catalog("roll back duplicate flush", e))?;
                return Ok(false);
            }
            let now = tracelight_model::time::now_ns();
            for s in segments {
                if publish_segment!(tx, s, now) != 1 {
                    tx.rollback().await.map_err(|e| StorageError::catalog("roll back flush commit", e))?;
                    return Err(StorageError::Unstaged(s.path.clone()));
                }
            }
            sqlx::query(
                "INSERT INTO wal_checkpoints (node, wal_lsn) VALUES ($1, $2)
                 ON CONFLICT (node) DO UPDATE SET wal_lsn = excluded.wal_lsn",
            )
            .bind(node).bind(wal_lsn as i64)
            .execute(&mut *tx).await.map_err(|e| StorageError::catalog("move WAL checkpoint", e))?;
            tx.commit().await.map_err(|e| StorageError::catalog("commit flush", e))?;
        });
        Ok(true)
    }

    /// Segments of `tenant`/`signal` whose time range overlaps `[start_ns, end_ns)`; the partition
    /// index prunes before the row's own min/max are compared.
    pub async fn segments(
        &self,
        tenant: &Tenant,
        signal: Signal,
        start_ns: Option<i64>,
        end_ns: Option<i64>,
    ) -> Result<Vec<SegmentMeta>, StorageError> {
        let start = start_ns.unwrap_or(i64::MIN);
        let end = end_ns.unwrap_or(i64::MAX);
        let (h0, h1) = (tracelight_model::time::hour_of(start), tracelight_model::time::hour_of(end.saturating_sub(1)));
        let sql = "SELECT id, node, partition_hour, path, min_time_ns, max_time_ns, row_count, byte_size,
                          flush_lsn, created_at_ns, index_bytes
                   FROM segments
                   WHERE tenant = $1 AND signal = $2 AND partition_hour BETWEEN $3 AND $4
                     AND max_time_ns >= $5 AND min_time_ns < $6 AND state = 'published'
                   ORDER BY partition_hour, id";
        let rows = on_pool!(self, pool => {
            sqlx::query(sql).bind(tenant.as_str()).bind(signal.table()).bind(h0).bind(h1).bind(start).bind(end)
                .fetch_all(pool).await.map_err(|e| StorageError::catalog("list segments", e))?
                .into_iter()
                .map(|r| SegmentMeta {
                    id: r.get(0), node: r.get(1), tenant: tenant.clone(), signal, partition_hour: r.get(2),
                    path: r.get(3), min_time_ns: r.get(4), max_time_ns: r.get(5), rows: r.get::<i64, _>(6) as u64,
                    bytes: r.get::<i64, _>(7) as u64, flush_lsn: r.get::<i64, _>(8) as u64, created_at_ns: r.get(9),
                    index_bytes: r.get::<i64, _>(10) as u64,
                })
                .collect::<Vec<_>>()
        });
        Ok(rows)
    }

    /// `(min_time_ns, max_time_ns, created_at_ns)` of the segments of `tenant`/`signal` created
    /// after `after_ns`: what a late-data recount must look at again.
    pub async fn segments_created_after(
        &self,
        tenant: &Tenant,
        signal: Signal,
        after_ns: i64,
    ) -> Result<Vec<(i64, i64, i64)>, StorageError> {
        let sql = "SELECT min_time_ns, max_time_ns, created_at_ns FROM segments
                   WHERE tenant = $1 AND signal = $2 AND created_at_ns > $3 AND state = 'published'";
        Ok(on_pool!(self, pool => {
            sqlx::query(sql).bind(tenant.as_str()).bind(signal.table()).bind(after_ns)
                .fetch_all(pool).await.map_err(|e| StorageError::catalog("list new segments", e))?
                .into_iter()
                .map(|r| (r.get::<i64, _>(0), r.get::<i64, _>(1), r.get::<i64, _>(2)))
                .collect::<Vec<_>>()
        }))
    }

    /// Retires every published segment in a partition before `before_hour` and returns them.
    /// Queries stop seeing them at once; the janitor deletes their objects after the grace
    /// period.
    pub async fn expire_before(&self, before_hour: i64) -> Result<Vec<SegmentMeta>, StorageError> {
        let sql = format!(
            "UPDATE segments SET state = 'retired', state_at_ns = $2 WHERE partition_hour < $1 AND state = 'published'
             RETURNING {ALL_COLUMNS}"
        );
        let rows: Vec<RawSegment> = on_pool!(self, pool => {
            sqlx::query(sqlx::AssertSqlSafe(sql.as_str())).bind(before_hour).bind(tracelight_model::time::now_ns())
                .fetch_all(pool).await.map_err(|e| StorageError::catalog("retire expired segments", e))?
                .iter().map(raw_segment!()).collect()
        });
        rows.into_iter().map(RawSegment::into_meta).collect()
    }

    /// Published segments (of every node, tenant and signal) smaller than `below_bytes` and
    /// created before `created_before_ns`: what compaction may merge. Ordered by partition, node, then
    /// creation, so the segments of one partition come together in flush order.
    pub async fn compaction_candidates(
        &self,
        below_bytes: u64,
        created_before_ns: i64,
    ) -> Result<Vec<SegmentMeta>, StorageError> {
        let sel = format!(
            "SELECT {ALL_COLUMNS} FROM segments
             WHERE byte_size < $1 AND created_at_ns < $2 AND state = 'published'
             ORDER BY tenant, signal, partition_hour, node, flush_lsn, created_at_ns, id"
        );
        let rows: Vec<RawSegment> = on_pool!(self, pool => {
            sqlx::query(sqlx::AssertSqlSafe(sel.as_str()))
                .bind(below_bytes.min(i64::MAX as u64) as i64).bind(created_before_ns)
                .fetch_all(pool).await.map_err(|e| StorageError::catalog("list compaction candidates", e))?
                .iter().map(raw_segment!()).collect()
        });
        rows.into_iter().map(RawSegment::into_meta).collect()
    }

    /// Replaces segments `old` by `new` (staged before its objects were written) in one
    /// transaction: a query lists either the old set or the new one, never both and never
    /// neither. The old ones are retired; the janitor deletes them after the grace period.
    /// Returns false, changing nothing, when one of `old` is no longer published (retention
    /// took its partition meanwhile) or `new` is no longer staged.
    pub async fn replace_segments(&self, old: &[SegmentMeta], new: &SegmentMeta) -> Result<bool, StorageError> {
        on_pool!(self, pool => {
            let mut tx = pool.begin().await.map_err(|e| StorageError::catalog("begin segment swap", e))?;
            let now = tracelight_model::time::now_ns();
            let mut retired = 0;
            for s in old {
                retired += sqlx::query(
                    "UPDATE segments SET state = 'retired', state_at_ns = $2 WHERE id = $1 AND state = 'published'",
                )
                .bind(&s.id).bind(now).execute(&mut *tx).await
                .map_err(|e| StorageError::catalog("retire replaced segment", e))?.rows_affected();
            }
            if retired != old.len() as u64 || publish_segment!(tx, new, now) != 1 {
                tx.rollback().await.map_err(|e| StorageError::catalog("roll back segment swap", e))?;
                return Ok(false);
            }
            tx.commit().await.map_err(|e| StorageError::catalog("commit segment swap", e))?;
        });
        Ok(true)
    }

    pub async fn close(&self) {
        on_pool!(self, pool => pool.close().await)
    }
}

fn store_err(what: &str) -> impl Fn(sqlx::Error) -> StoreError + '_ {
    move |e| StoreError(format!("catalog: {what}: {e}"))
}

#[async_trait::async_trait]
impl SloStore for Catalog {
    async fn slo_build(&self, slo: &str) -> Result<Option<(String, i64)>, StoreError> {
        Ok(on_pool!(self, pool => {
            sqlx::query("SELECT fingerprint, built_through_minute FROM slo_builds WHERE slo = $1")
                .bind(slo).fetch_optional(pool).await.map_err(store_err("read SLO build"))?
                .map(|r| (r.get::<String, _>(0), r.get::<i64, _>(1)))
        }))
    }

    async fn slo_reset(&self, slo: &str, fingerprint: &str) -> Result<(), StoreError> {
        on_pool!(self, pool => {
            let mut tx = pool.begin().await.map_err(store_err("begin SLO reset"))?;
            sqlx::query("DELETE FROM slo_minutes WHERE slo = $1").bind(slo).execute(&mut *tx).await
                .map_err(store_err("forget SLO counts"))?;
            sqlx::query(
                "INSERT INTO slo_builds (slo, fingerprint, built_through_minute, segments_through_ns) VALUES ($1, $2, 0, 0)
                 ON CONFLICT (slo) DO UPDATE SET fingerprint = excluded.fingerprint, built_through_minute = 0,
                 segments_through_ns = 0",
            )
            .bind(slo).bind(fingerprint).execute(&mut *tx).await.map_err(store_err("reset SLO build"))?;
            tx.commit().await.map_err(store_err("commit SLO reset"))?;
        });
        Ok(())
    }

    async fn slo_put(&self, slo: &str, minutes: &[MinuteCounts], built_through_minute: i64) -> Result<(), StoreError> {
        on_pool!(self, pool => {
            let mut tx = pool.begin().await.map_err(store_err("begin SLO counts"))?;
            for m in minutes {
                sqlx::query(
                    "INSERT INTO slo_minutes (slo, minute, good, total) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (slo, minute) DO UPDATE SET good = excluded.good, total = excluded.total",
                )
                .bind(slo).bind(m.minute).bind(m.good as i64).bind(m.total as i64)
                .execute(&mut *tx).await.map_err(store_err("write SLO counts"))?;
            }
            sqlx::query("UPDATE slo_builds SET built_through_minute = $2 WHERE slo = $1")
                .bind(slo).bind(built_through_minute).execute(&mut *tx).await
                .map_err(store_err("move SLO build mark"))?;
            tx.commit().await.map_err(store_err("commit SLO counts"))?;
        });
        Ok(())
    }

    async fn slo_segments_mark(&self, slo: &str) -> Result<i64, StoreError> {
        Ok(on_pool!(self, pool => {
            sqlx::query("SELECT segments_through_ns FROM slo_builds WHERE slo = $1")
                .bind(slo).fetch_optional(pool).await.map_err(store_err("read SLO segment mark"))?
                .map_or(0, |r| r.get::<i64, _>(0))
        }))
    }

    async fn slo_set_segments_mark(&self, slo: &str, through_ns: i64) -> Result<(), StoreError> {
        on_pool!(self, pool => {
            sqlx::query("UPDATE slo_builds SET segments_through_ns = $2 WHERE slo = $1")
                .bind(slo).bind(through_ns).execute(pool).await.map_err(store_err("move SLO segment mark"))?;
        });
        Ok(())
    }

    async fn slo_minutes(&self, slo: &str, from_minute: i64) -> Result<Vec<MinuteCounts>, StoreError> {
        Ok(on_pool!(self, pool => {
            sqlx::query("SELECT minute, good, total FROM slo_minutes WHERE slo = $1 AND minute >= $2 ORDER BY minute")
                .bind(slo).bind(from_minute).fetch_all(pool).await.map_err(store_err("read SLO counts"))?
                .into_iter()
                .map(|r| MinuteCounts { minute: r.get(0), good: r.get::<i64, _>(1) as u64, total: r.get::<i64, _>(2) as u64 })
                .collect()
        }))
    }

    async fn alert_states(&self, slo: &str) -> Result<BTreeMap<String, (String, i64)>, StoreError> {
        Ok(on_pool!(self, pool => {
            sqlx::query("SELECT alert_key, state, since_ns FROM alert_states WHERE slo = $1")
                .bind(slo).fetch_all(pool).await.map_err(store_err("read alert states"))?
                .into_iter()
                .map(|r| (r.get::<String, _>(0), (r.get::<String, _>(1), r.get::<i64, _>(2))))
                .collect()
        }))
    }

    async fn alert_transition(
        &self,
        slo: &str,
        alert_key: &str,
        state: &str,
        since_ns: i64,
        notifications: &[Notification],
    ) -> Result<(), StoreError> {
        on_pool!(self, pool => {
            let mut tx = pool.begin().await.map_err(store_err("begin alert transition"))?;
            sqlx::query(
                "INSERT INTO alert_states (alert_key, slo, state, since_ns) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (alert_key) DO UPDATE SET state = excluded.state, since_ns = excluded.since_ns",
            )
            .bind(alert_key).bind(slo).bind(state).bind(since_ns)
            .execute(&mut *tx).await.map_err(store_err("record alert state"))?;
            for n in notifications {
                sqlx::query(
                    "INSERT INTO notify_outbox (id, alert_key, channel, state, payload, created_at_ns, attempts, next_attempt_ns)
                     VALUES ($1, $2, $3, $4, $5, $6, 0, $7) ON CONFLICT (id) DO NOTHING",
                )
                .bind(&n.id).bind(&n.alert_key).bind(&n.channel).bind(&n.state).bind(&n.payload)
                .bind(n.created_at_ns).bind(n.next_attempt_ns)
                .execute(&mut *tx).await.map_err(store_err("queue notification"))?;
            }
            tx.commit().await.map_err(store_err("commit alert transition"))?;
        });
        Ok(())
    }

    async fn pending_notifications(&self, limit: usize) -> Result<Vec<Notification>, StoreError> {
        Ok(on_pool!(self, pool => {
            sqlx::query(
                "SELECT id, alert_key, channel, state, payload, created_at_ns, attempts, next_attempt_ns
                 FROM notify_outbox WHERE delivered_at_ns IS NULL
                 ORDER BY created_at_ns, id LIMIT $1",
            )
            .bind(limit as i64).fetch_all(pool).await.map_err(store_err("read outbox"))?
            .into_iter()
            .map(|r| Notification {
                id: r.get(0),
                alert_key: r.get(1),
                channel: r.get(2),
                state: r.get(3),
                payload: r.get(4),
                created_at_ns: r.get(5),
                attempts: r.get::<i64, _>(6) as u32,
                next_attempt_ns: r.get(7),
            })
            .collect()
        }))
    }

    async fn mark_delivered(&self, id: &str, now_ns: i64) -> Result<(), StoreError> {
        on_pool!(self, pool => {
            sqlx::query("UPDATE notify_outbox SET delivered_at_ns = $2, last_error = NULL WHERE id = $1")
                .bind(id).bind(now_ns).execute(pool).await.map_err(store_err("mark delivered"))?;
        });
        Ok(())
    }

    async fn mark_failed(&self, id: &str, attempts: u32, next_attempt_ns: i64, error: &str) -> Result<(), StoreError> {
        on_pool!(self, pool => {
            sqlx::query("UPDATE notify_outbox SET attempts = $2, next_attempt_ns = $3, last_error = $4 WHERE id = $1")
                .bind(id).bind(attempts as i64).bind(next_attempt_ns).bind(error)
                .execute(pool).await.map_err(store_err("mark failed"))?;
        });
        Ok(())
    }
}

/// FNV-1a of a migration's text, to notice edits to applied migrations.
fn checksum(sql: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in sql.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h as i64
}

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db`.
pub fn redact(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://")
        && let Some((creds, host)) = rest.split_once('@')
        && let Some((user, _)) = creds.split_once(':')
    {
        return format!("{scheme}://{user}:***@{host}");
    }
    url.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact("postgres://u:pw@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("sqlite://x.db"), "sqlite://x.db");
    }

    #[test]
    fn both_databases_have_the_same_migrations() {
        for m in MIGRATIONS {
            assert!(!m.sqlite.trim().is_empty() && !m.postgres.trim().is_empty(), "{}", m.name);
        }
        let versions: Vec<i64> = MIGRATIONS.iter().map(|m| m.version).collect();
        assert_eq!(versions, (1..=MIGRATIONS.len() as i64).collect::<Vec<_>>());
    }
}
