-- Keel store, schema version 2: rules and alerts.

CREATE TABLE rules (
    name        TEXT PRIMARY KEY,
    body        TEXT NOT NULL,              -- the rule as JSON
    updated_at  INTEGER NOT NULL
) STRICT;

CREATE TABLE alerts (
    id           INTEGER PRIMARY KEY,
    fingerprint  TEXT NOT NULL,
    host_id      INTEGER NOT NULL REFERENCES hosts(id),
    rule         TEXT NOT NULL,
    severity     TEXT NOT NULL,
    status       TEXT NOT NULL,             -- firing | resolved
    labels       TEXT NOT NULL,
    annotations  TEXT NOT NULL,
    starts_at    INTEGER NOT NULL,
    ends_at      INTEGER,
    profile_id   INTEGER REFERENCES profiles(id),
    acked_by     TEXT,
    acked_at     INTEGER
) STRICT;
CREATE UNIQUE INDEX alerts_open ON alerts(fingerprint) WHERE status = 'firing';
CREATE INDEX alerts_host ON alerts(host_id, id);
CREATE INDEX alerts_status ON alerts(status, id);
