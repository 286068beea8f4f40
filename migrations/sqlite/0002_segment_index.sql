-- Bytes of the tantivy index written beside each segment (0 when the signal has none).
ALTER TABLE segments ADD COLUMN index_bytes BIGINT NOT NULL DEFAULT 0;
