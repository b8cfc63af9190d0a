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
    let old_sections = old.sections();
    let new_sections = new.sections();
    for (os, ns) in old_sections.into_iter().zip(new_sections) {
        debug_assert_eq!(os.name, ns.name);
        for (ot, nt) in os.tables.into_iter().zip(ns.tables) {
            debug_assert_eq!(ot.name, nt.name);
            if os.name != "meta"
                && !(comparable(old, os.name, ot.name) && comparable(new, os.name, ot.name))
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
                    section: os.name.to_string(),
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
