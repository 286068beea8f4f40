-- Parquet segments: one row per file, written in the same transaction as the WAL checkpoint
-- of the flush that produced it.
CREATE TABLE segments (
    id             TEXT PRIMARY KEY,
    node           TEXT NOT NULL,
    tenant         TEXT NOT NULL,
    signal         TEXT NOT NULL,
    partition_hour BIGINT NOT NULL,
    path           TEXT NOT NULL UNIQUE,
    min_time_ns    BIGINT NOT NULL,
    max_time_ns    BIGINT NOT NULL,
    row_count      BIGINT NOT NULL,
    byte_size      BIGINT NOT NULL,
    flush_lsn      BIGINT NOT NULL,
    created_at_ns  BIGINT NOT NULL
);
CREATE INDEX segments_by_time ON segments (tenant, signal, partition_hour);

-- Per ingest node: every WAL record with an LSN at or below wal_lsn is in a segment above.
CREATE TABLE wal_checkpoints (
    node    TEXT PRIMARY KEY,
    wal_lsn BIGINT NOT NULL
);
