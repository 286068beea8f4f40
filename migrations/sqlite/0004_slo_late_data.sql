-- SLO counts stay exact however late data arrives: each SLO remembers up to which segment
-- creation time it has recounted the minutes that new segments cover.
ALTER TABLE slo_builds ADD COLUMN segments_through_ns BIGINT NOT NULL DEFAULT 0;
