-- Publishing a segment: its row is written 'staged' before any of its objects, turns
-- 'published' (visible to queries) in the transaction that advances the WAL checkpoint or
-- swaps in a merge, and 'retired' when a merge replaced it or retention expired it. The
-- janitor claims staged and retired rows older than their grace period ('deleting'),
-- deletes their objects, then the rows. Rows from before this migration are published.
ALTER TABLE segments ADD COLUMN state TEXT NOT NULL DEFAULT 'published';
ALTER TABLE segments ADD COLUMN state_at_ns BIGINT NOT NULL DEFAULT 0;
CREATE INDEX segments_by_state ON segments (state, state_at_ns);
