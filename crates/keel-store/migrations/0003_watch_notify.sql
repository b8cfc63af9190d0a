-- Keel store, schema version 3: the missing-profile watch and alert delivery.

-- Silence counts from the newest profile or from `watch_from` (enrollment, or the end of a
-- pause), whichever is later. `missing_at` is when the host counts as missing; it is computed
-- from the schedule whenever a profile arrives or the schedule or the pause changes.
ALTER TABLE hosts ADD COLUMN watch_from INTEGER NOT NULL DEFAULT 0;
ALTER TABLE hosts ADD COLUMN missing_at INTEGER;
UPDATE hosts SET watch_from = created_at;
CREATE INDEX hosts_missing ON hosts(missing_at) WHERE paused = 0 AND retired = 0;
CREATE INDEX alerts_host_rule ON alerts(host_id, rule) WHERE status = 'firing';

-- Every change of an alert's status, in order: what receivers are told. Written by triggers,
-- so an alert cannot change without its notification being queued in the same transaction.
CREATE TABLE notifications (
    id          INTEGER PRIMARY KEY,
    alert_id    INTEGER NOT NULL REFERENCES alerts(id),
    status      TEXT NOT NULL,              -- firing | resolved
    created_at  INTEGER NOT NULL
) STRICT;

CREATE TRIGGER alert_fired AFTER INSERT ON alerts
BEGIN
    INSERT INTO notifications (alert_id, status, created_at) VALUES (NEW.id, NEW.status, NEW.starts_at);
END;

CREATE TRIGGER alert_resolved AFTER UPDATE OF status ON alerts
WHEN OLD.status = 'firing' AND NEW.status = 'resolved'
BEGIN
    INSERT INTO notifications (alert_id, status, created_at) VALUES (NEW.id, 'resolved', coalesce(NEW.ends_at, 0));
END;

-- How far each receiver has been told.
CREATE TABLE receiver_cursors (
    receiver    TEXT PRIMARY KEY,
    last_id     INTEGER NOT NULL
) STRICT;

-- Every delivery attempt, successful or not.
CREATE TABLE deliveries (
    id           INTEGER PRIMARY KEY,
    receiver     TEXT NOT NULL,
    group_key    TEXT NOT NULL,
    status       TEXT NOT NULL,             -- firing | resolved
    fingerprints TEXT NOT NULL,             -- JSON array
    attempt      INTEGER NOT NULL,
    at           INTEGER NOT NULL,
    ok           INTEGER NOT NULL,
    outcome      TEXT NOT NULL              -- JSON: the status code or the error
) STRICT;
