-- The node registry: each running node's roles, the address other nodes and users reach its
-- API at, and when it last said it was alive (`/api/v1/cluster`).
CREATE TABLE nodes (
    node          TEXT PRIMARY KEY,
    roles         TEXT NOT NULL,
    advertise     TEXT NOT NULL,
    version       TEXT NOT NULL,
    started_at_ns BIGINT NOT NULL,
    heartbeat_ns  BIGINT NOT NULL
);
