//! Field-level differences between two profiles, keyed by natural keys.
//!
//! A table whose collector did not succeed in either profile is *unknown* and is not compared:
//! a failed collector never shows up as "everything removed". The change of the collector's own
//! state is reported instead, in `meta.collectors`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::{CollectorState, Profile};
use crate::table::Volatility;

/// What happened to a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    /// The row is new.
    Added,
    /// The row is gone.
    Removed,
    /// One field of the row changed.
    Changed,
}

impl ChangeKind {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Added => "added",
            ChangeKind::Removed => "removed",
            ChangeKind::Changed => "changed",
        }
    }
}

/// One change. For `added` and `removed`, `old`/`new` hold the whole row (or null) and `field`
/// is null; for `changed`, they hold the field's two values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// Section name.
    pub section: String,
    /// Table name.
    pub table: String,
    /// Natural key of the row.
    pub key: String,
    /// What happened.
    pub kind: ChangeKind,
    /// The field that changed (only for `changed`).
    pub field: Option<String>,
    /// Old value (row or field).
    pub old: Value,
    /// New value (row or field).
    pub new: Value,
    /// Volatility of the field, or of the row's most stable field for added/removed rows.
    pub volatility: Volatility,
}

/// What to compare.
#[derive(Debug, Clone, Copy, Default)]
pub struct DiffOptions {
    /// Report changes to volatile fields too.
    pub include_volatile: bool,
}

/// The changes from `old` to `new`, in section, table, key and field order.
pub fn diff(old: &Profile, new: &Profile, opts: DiffOptions) -> Vec<Change> {
    let mut out = Vec::new();
    for (section, ot, nt) in old.differing_tables(new) {
        {
            debug_assert_eq!(ot.name, nt.name);
            if section != "meta"
                && !(comparable(old, section, ot.name) && comparable(new, section, ot.name))
            {
                continue;
            }
            let vol = ot.volatility;
            let old_rows: BTreeMap<String, Value> = ot.rows.into_iter().collect();
            let new_rows: BTreeMap<String, Value> = nt.rows.into_iter().collect();
            let mut push = |key: &str, kind, field: Option<String>, o: Value, n: Value, v| {
                if v == Volatility::Volatile && !opts.include_volatile {
                    return;
                }
                out.push(Change {
                    section: section.to_string(),
                    table: ot.name.to_string(),
                    key: key.to_string(),
                    kind,
                    field,
                    old: o,
                    new: n,
                    volatility: v,
                });
            };
            let mut keys: Vec<&String> = old_rows.keys().chain(new_rows.keys()).collect();
            keys.sort();
            keys.dedup();
            for key in keys {
                match (old_rows.get(key), new_rows.get(key)) {
                    (Some(o), None) => {
                        push(
                            key,
                            ChangeKind::Removed,
                            None,
                            o.clone(),
                            Value::Null,
                            row_volatility(o, vol),
                        );
                    }
                    (None, Some(n)) => {
                        push(
                            key,
                            ChangeKind::Added,
                            None,
                            Value::Null,
                            n.clone(),
                            row_volatility(n, vol),
                        );
                    }
                    (Some(o), Some(n)) if o != n => {
                        let empty = serde_json::Map::new();
                        let om = o.as_object().unwrap_or(&empty);
                        let nm = n.as_object().unwrap_or(&empty);
                        let mut fields: Vec<&String> = om.keys().chain(nm.keys()).collect();
                        fields.sort();
                        fields.dedup();
                        for f in fields {
                            let ov = om.get(f).unwrap_or(&Value::Null);
                            let nv = nm.get(f).unwrap_or(&Value::Null);
                            if ov != nv {
                                push(
                                    key,
                                    ChangeKind::Changed,
                                    Some(f.clone()),
                                    ov.clone(),
                                    nv.clone(),
                                    vol(f),
                                );
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    out
}

/// A table can be compared when its collector succeeded, or when no collector claims it (a
/// profile from a build that did not know the table). A table that does not apply to one of
/// the two roots (live facts of an offline root) is not compared either.
fn comparable(p: &Profile, section: &str, table: &str) -> bool {
    match p.collector_for(section, table) {
        Some(c) => c.state == CollectorState::Ok,
        None => true,
    }
}

/// The most stable class among a row's fields: a new disk is an identity change even though its
/// free space is volatile.
fn row_volatility(row: &Value, vol: fn(&str) -> Volatility) -> Volatility {
    row.as_object()
        .and_then(|m| m.keys().map(|k| vol(k)).min())
        .unwrap_or(Volatility::Config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Collector, Package, Usage};

    fn pkg(name: &str, version: &str) -> Package {
        Package {
            name: name.into(),
            arch: "amd64".into(),
            version: version.into(),
            manager: "dpkg".into(),
            status: "installed".into(),
            ..Package::default()
        }
    }

    fn with_packages(state: CollectorState, pkgs: Vec<Package>) -> Profile {
        let mut p = Profile::default();
        p.collectors.push(Collector {
            name: "packages".into(),
            state,
            tables: vec!["packages.packages".into()],
            ..Collector::default()
        });
        p.packages.packages = pkgs;
        p
    }

    #[test]
    fn field_level_changes_keyed_by_natural_key() {
        let old = with_packages(CollectorState::Ok, vec![pkg("a", "1"), pkg("b", "1")]);
        let new = with_packages(CollectorState::Ok, vec![pkg("b", "2"), pkg("c", "1")]);
        let d = diff(&old, &new, DiffOptions::default());
        let summary: Vec<(&str, ChangeKind, Option<&str>)> = d
            .iter()
            .map(|c| (c.key.as_str(), c.kind, c.field.as_deref()))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("a:amd64", ChangeKind::Removed, None),
                ("b:amd64", ChangeKind::Changed, Some("version")),
                ("c:amd64", ChangeKind::Added, None),
            ]
        );
        assert_eq!(d[1].old, serde_json::json!("1"));
        assert_eq!(d[1].new, serde_json::json!("2"));
        assert_eq!(d[2].new["name"], "c", "an added row carries the whole row");
    }

    #[test]
    fn failed_collector_is_unknown_not_everything_removed() {
        let old = with_packages(CollectorState::Ok, vec![pkg("a", "1"), pkg("b", "1")]);
        let mut new = with_packages(CollectorState::Error, vec![]);
        new.collectors[0].message = Some("cannot read /var/lib/dpkg/status".into());
        let d = diff(&old, &new, DiffOptions::default());
        assert!(d.iter().all(|c| c.table != "packages"), "{d:?}");
        assert!(d
            .iter()
            .any(|c| c.table == "collectors" && c.field.as_deref() == Some("state")));
    }

    #[test]
    fn volatile_fields_hidden_unless_asked() {
        let mut old = Profile::default();
        old.storage.usage.push(Usage {
            mountpoint: "/".into(),
            size_bytes: 10,
            used_bytes: 5,
            inodes_used: 1,
        });
        let mut new = old.clone();
        new.storage.usage[0].used_bytes = 6;
        assert!(diff(&old, &new, DiffOptions::default()).is_empty());
        let all = diff(
            &old,
            &new,
            DiffOptions {
                include_volatile: true,
            },
        );
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].volatility, Volatility::Volatile);
    }

    #[test]
    fn identical_profiles_have_no_changes() {
        let p = with_packages(CollectorState::Ok, vec![pkg("a", "1")]);
        assert!(diff(
            &p,
            &p,
            DiffOptions {
                include_volatile: true
            }
        )
        .is_empty());
    }
}
