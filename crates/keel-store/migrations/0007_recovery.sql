-- Keel store, schema version 7: recovery machines and recovery jobs.

-- A machine booted into a rescue system (`keel rescue --server`) registers with its hardware
-- inventory and waits for a recovery. It authenticates with the token issued at registration
-- (only its hash is kept). seen_at is the last time it asked for work.
CREATE TABLE machines (
    id              INTEGER PRIMARY KEY,
    name            TEXT NOT NULL,
    token_hash      BLOB NOT NULL UNIQUE,
    inventory       TEXT NOT NULL,
    registered_at   INTEGER NOT NULL,
    seen_at         INTEGER NOT NULL
);

-- A recovery rebuilds a host's profile onto a machine: planned (the plan is shown) → queued
-- (started by an admin, who typed the host's name) → running (the machine took it) → done or
-- failed; or cancelled before it ran. progress is a JSON array of the phases as the machine
-- reported them; report is the machine's recovery report, with the verification.
CREATE TABLE recoveries (
    id              INTEGER PRIMARY KEY,
    host_id         INTEGER NOT NULL REFERENCES hosts(id),
    profile_id      INTEGER NOT NULL REFERENCES profiles(id),
    machine_id      INTEGER NOT NULL REFERENCES machines(id),
    plan            TEXT NOT NULL,
    status          TEXT NOT NULL DEFAULT 'planned'
                    CHECK (status IN ('planned', 'queued', 'running', 'done', 'failed', 'cancelled')),
    phase           TEXT,
    progress        TEXT NOT NULL DEFAULT '[]',
    report          TEXT,
    reason          TEXT,
    created_by      TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    started_by      TEXT,
    started_at      INTEGER,
    taken_at        INTEGER,
    finished_at     INTEGER
);
CREATE INDEX recoveries_machine_status ON recoveries(machine_id, status);
