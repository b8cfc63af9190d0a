//! Row-level patches between two profiles: what an agent sends when the server already holds
//! the profile it last acknowledged. When nothing changed, a patch carries little more than
//! the capture's metadata and timings.
//!
//! A patch is checked by its result: the receiver applies it to the base it names and the
//! result must hash to the profile hash the agent signed, so a wrong or forged patch can only
//! be refused, never stored as something else.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::envelope::profile_hash;
use crate::hash::Hash;
use crate::model::{Meta, Profile};

/// Changes to one table.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct TablePatch {
    /// Rows added or changed, whole, with their keys.
    #[serde(default)]
    pub upsert: Vec<(String, Value)>,
    /// Keys of rows removed.
    #[serde(default)]
    pub delete: Vec<String>,
}

/// The difference from a base profile to a new one, row by row.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Patch {
    /// The base profile's hash.
    pub base: Hash,
    /// The new profile's metadata.
    pub meta: Meta,
    /// Changed tables, by `section.table`.
    pub tables: BTreeMap<String, TablePatch>,
}

/// Why a patch could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    /// The patch names a table this build does not know.
    #[error("patch names unknown table {0}")]
    UnknownTable(String),
    /// The patched profile does not form a valid profile.
    #[error("patched profile is malformed: {0}")]
    Malformed(String),
    /// The result does not hash to what was promised.
    #[error("patched profile hashes to {found}, not the expected {expected}")]
    HashMismatch {
        /// Promised.
        expected: Hash,
        /// Obtained.
        found: Hash,
    },
}

/// The patch that turns `base` into `new`.
pub fn make_patch(base: &Profile, new: &Profile) -> Result<Patch, PatchError> {
    let base_hash = profile_hash(base).map_err(|e| PatchError::Malformed(e.to_string()))?;
    let mut tables = BTreeMap::new();
    for (section, bt, nt) in base.differing_tables(new) {
        let old: BTreeMap<String, Value> = bt.rows.into_iter().collect();
        let mut tp = TablePatch::default();
        let mut seen = std::collections::BTreeSet::new();
        for (k, row) in nt.rows {
            if old.get(&k) != Some(&row) {
                tp.upsert.push((k.clone(), row));
            }
            seen.insert(k);
        }
        tp.delete = old.into_keys().filter(|k| !seen.contains(k)).collect();
        if !tp.upsert.is_empty() || !tp.delete.is_empty() {
            tables.insert(format!("{section}.{}", bt.name), tp);
        }
    }
    Ok(Patch {
        base: base_hash,
        meta: new.meta.clone(),
        tables,
    })
}

/// Applies `patch` to `base` and checks the result hashes to `expected`; returns the profile
/// and its canonical CBOR bytes.
pub fn apply_patch(
    base: &Profile,
    patch: &Patch,
    expected: Hash,
) -> Result<(Profile, Vec<u8>), PatchError> {
    let mut profile = base.clone();
    for (name, tp) in &patch.tables {
        let (section, table) = name
            .split_once('.')
            .ok_or_else(|| PatchError::UnknownTable(name.clone()))?;
        let view = base
            .table(section, table)
            .ok_or_else(|| PatchError::UnknownTable(name.clone()))?;
        let mut rows: BTreeMap<String, Value> = view.rows.into_iter().collect();
        for k in &tp.delete {
            rows.remove(k);
        }
        for (k, v) in &tp.upsert {
            rows.insert(k.clone(), v.clone());
        }
        profile
            .set_table(section, table, rows.into_values().collect())
            .map_err(|e| PatchError::Malformed(format!("{name}: {e}")))?;
    }
    profile.meta = patch.meta.clone();
    // No normalising: rows come back in key order, which is the order `normalize` gives; a
    // patch that lies about a key changes the order, and so the hash, and is refused.
    let bytes = crate::envelope::profile_bytes(&profile)
        .map_err(|e| PatchError::Malformed(e.to_string()))?;
    let found = Hash::of(&bytes);
    if found != expected {
        return Err(PatchError::HashMismatch { expected, found });
    }
    Ok((profile, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Collector, Package};

    fn sample() -> Profile {
        let mut p = Profile::default();
        p.meta.hostname = "web1".into();
        p.collectors.push(Collector {
            name: "packages".into(),
            duration_us: 10,
            ..Collector::default()
        });
        for (n, v) in [("a", "1"), ("b", "1"), ("c", "1")] {
            p.packages.packages.push(Package {
                name: n.into(),
                arch: "amd64".into(),
                version: v.into(),
                ..Package::default()
            });
        }
        p
    }

    #[test]
    fn patch_round_trip() {
        let base = sample();
        let mut new = base.clone();
        new.meta.started_at_ms = 42;
        new.collectors[0].duration_us = 11;
        new.packages.packages.remove(0);
        new.packages.packages[0].version = "2".into();
        new.packages.packages.push(Package {
            name: "d".into(),
            arch: "amd64".into(),
            ..Package::default()
        });
        new.normalize();
        let patch = make_patch(&base, &new).unwrap();
        assert_eq!(patch.tables["packages.packages"].delete, vec!["a:amd64"]);
        assert_eq!(patch.tables["packages.packages"].upsert.len(), 2);
        let (back, bytes) = apply_patch(&base, &patch, profile_hash(&new).unwrap()).unwrap();
        assert_eq!(back, new);
        assert_eq!(Hash::of(&bytes), profile_hash(&new).unwrap());
    }

    #[test]
    fn wrong_result_is_refused() {
        let base = sample();
        let mut new = base.clone();
        new.packages.packages[0].version = "9".into();
        let mut patch = make_patch(&base, &new).unwrap();
        patch.tables.get_mut("packages.packages").unwrap().upsert[0].1["version"] = "8".into();
        assert!(matches!(
            apply_patch(&base, &patch, profile_hash(&new).unwrap()),
            Err(PatchError::HashMismatch { .. })
        ));
        patch
            .tables
            .insert("nope.nothing".into(), TablePatch::default());
        assert!(matches!(
            apply_patch(&base, &patch, Hash::default()),
            Err(PatchError::UnknownTable(_))
        ));
    }

    #[test]
    fn unchanged_profile_patch_is_small() {
        let base = sample();
        let mut new = base.clone();
        new.meta.started_at_ms = 1;
        let patch = make_patch(&base, &new).unwrap();
        assert!(patch.tables.is_empty());
    }
}
