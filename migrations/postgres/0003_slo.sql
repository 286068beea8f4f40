-- SLOs: per-minute good/total counts of each SLO's SLI, how far they are built (and from
-- which definition), the state of every alert rule, and the notification outbox.
CREATE TABLE slo_builds (
    slo TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    built_through_minute BIGINT NOT NULL
);
CREATE TABLE slo_minutes (
    slo TEXT NOT NULL,
    minute BIGINT NOT NULL,
    good BIGINT NOT NULL,
    total BIGINT NOT NULL,
    PRIMARY KEY (slo, minute)
);
CREATE TABLE alert_states (
    alert_key TEXT PRIMARY KEY,
    slo TEXT NOT NULL,
    state TEXT NOT NULL,
    since_ns BIGINT NOT NULL
);
CREATE TABLE notify_outbox (
    id TEXT PRIMARY KEY,
    alert_key TEXT NOT NULL,
    channel TEXT NOT NULL,
    state TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at_ns BIGINT NOT NULL,
    attempts BIGINT NOT NULL,
    next_attempt_ns BIGINT NOT NULL,
    delivered_at_ns BIGINT,
    last_error TEXT
);
CREATE INDEX notify_outbox_due ON notify_outbox (delivered_at_ns, next_attempt_ns);
