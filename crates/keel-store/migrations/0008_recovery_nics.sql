-- Keel store, schema version 8: the NIC map planned with a recovery.

-- Which of the machine's NICs takes the place of each of the profile's, shown with the plan
-- before it starts: {"map": [mapping...], "unmapped": [the profile's NICs left without one]}.
ALTER TABLE recoveries ADD COLUMN nics TEXT NOT NULL DEFAULT '{}';
