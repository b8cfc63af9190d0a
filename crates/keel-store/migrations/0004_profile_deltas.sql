-- Keel store, schema version 4: profiles stored as patches against the host's previous profile.

-- When base_id is set, body is zstd of the CBOR patch from profile base_id to this one, and
-- depth counts the patches down to a whole profile (base_id NULL, depth 0). A whole profile is
-- stored again when the chain gets long or a patch is not much smaller than the profile.
ALTER TABLE profiles ADD COLUMN base_id INTEGER REFERENCES profiles(id);
ALTER TABLE profiles ADD COLUMN depth INTEGER NOT NULL DEFAULT 0;
