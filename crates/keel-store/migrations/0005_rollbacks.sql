-- Keel store, schema version 5: rollback jobs.

-- A rollback backs out selected changes of a host: from_profile shows them, to_profile is the
-- state they return to. The plan (keel-rollback's JSON) is shown and must be decided on:
-- proposed → approved (→ running → done | failed) or rejected. decided_by/decided_at record
-- who approved or rejected it and when; reason says why a job was rejected or failed.
CREATE TABLE rollbacks (
    id              INTEGER PRIMARY KEY,
    host_id         INTEGER NOT NULL REFERENCES hosts(id),
    from_profile    INTEGER NOT NULL REFERENCES profiles(id),
    to_profile      INTEGER NOT NULL REFERENCES profiles(id),
    selection       TEXT NOT NULL,
    plan            TEXT NOT NULL,
    status          TEXT NOT NULL DEFAULT 'proposed'
                    CHECK (status IN ('proposed', 'approved', 'rejected', 'running', 'done', 'failed')),
    reason          TEXT,
    created_by      TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    decided_by      TEXT,
    decided_at      INTEGER,
    started_at      INTEGER,
    finished_at     INTEGER,
    result_profile  INTEGER REFERENCES profiles(id),
    output          TEXT
);
CREATE INDEX rollbacks_host_status ON rollbacks(host_id, status);
