-- Keel store, schema version 1.

CREATE TABLE tokens (
    hash        BLOB PRIMARY KEY,           -- BLAKE3 of the token; the token itself is never stored
    kind        TEXT NOT NULL,              -- admin | readonly | enroll
    label       TEXT NOT NULL,
    created_at  INTEGER NOT NULL
) STRICT;

CREATE TABLE hosts (
    id              INTEGER PRIMARY KEY,
    name            TEXT NOT NULL UNIQUE,
    machine_id      TEXT NOT NULL,
    labels          TEXT NOT NULL DEFAULT '{}',
    created_at      INTEGER NOT NULL,
    last_profile_id INTEGER,
    last_seen_at    INTEGER,
    paused          INTEGER NOT NULL DEFAULT 0,
    retired         INTEGER NOT NULL DEFAULT 0,
    schedule        TEXT NOT NULL DEFAULT '{"kind":"interval","expr":"1h","tz":"UTC","grace_s":3600}'
) STRICT;

CREATE TABLE agents (
    id          TEXT PRIMARY KEY,
    host_id     INTEGER NOT NULL REFERENCES hosts(id),
    public_key  BLOB NOT NULL,
    created_at  INTEGER NOT NULL,
    revoked     INTEGER NOT NULL DEFAULT 0
) STRICT;

CREATE TABLE profiles (
    id           INTEGER PRIMARY KEY,
    host_id      INTEGER NOT NULL REFERENCES hosts(id),
    hash         BLOB NOT NULL UNIQUE,
    previous     BLOB,
    captured_at  INTEGER NOT NULL,
    received_at  INTEGER NOT NULL,
    agent_version TEXT NOT NULL,
    size         INTEGER NOT NULL,          -- bytes of the uncompressed profile
    changes      INTEGER NOT NULL,          -- number of non-volatile changes against its predecessor
    body         BLOB NOT NULL              -- zstd of the profile's canonical CBOR
) STRICT;
CREATE INDEX profiles_host ON profiles(host_id, id);

CREATE TABLE blobs (
    hash  BLOB PRIMARY KEY,
    data  BLOB NOT NULL
) STRICT;

CREATE TABLE changes (
    profile_id  INTEGER NOT NULL REFERENCES profiles(id),
    seq         INTEGER NOT NULL,
    change      TEXT NOT NULL,              -- the change as JSON
    PRIMARY KEY (profile_id, seq)
) STRICT, WITHOUT ROWID;
