//! Selecting changes: `SECTION:KEY` names rows of a diff.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use keel_profile::Change;
use serde::{Deserialize, Serialize};

use crate::error::RollbackError;

/// One `--only` argument: `SECTION:KEY`, where SECTION is a section (`users`), a table
/// (`sysctl`) or both (`kernel.sysctl`), and KEY a row's natural key as `keel diff` prints it.
/// A package may be named without its architecture (`packages:tree`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Selector {
    /// Section, table or `section.table`.
    pub scope: String,
    /// The row's key.
    pub key: String,
}

impl FromStr for Selector {
    type Err = RollbackError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once(':') {
            Some((scope, key)) if !scope.is_empty() && !key.is_empty() => Ok(Selector {
                scope: scope.to_string(),
                key: key.to_string(),
            }),
            _ => Err(RollbackError::BadSelector(s.to_string())),
        }
    }
}

impl TryFrom<String> for Selector {
    type Error = RollbackError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Selector> for String {
    fn from(s: Selector) -> String {
        s.to_string()
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.scope, self.key)
    }
}

/// A row of a profile table: what one selected change is about.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RowRef {
    /// Section.
    pub section: String,
    /// Table.
    pub table: String,
    /// Natural key.
    pub key: String,
}

impl fmt::Display for RowRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}:{}", self.section, self.table, self.key)
    }
}

impl Selector {
    /// True when `change` is one this selector names.
    pub fn matches(&self, change: &Change) -> bool {
        let scope_ok = self.scope == change.section
            || self.scope == change.table
            || self.scope == format!("{}.{}", change.section, change.table);
        let key_ok = change.key == self.key
            || (change.table == "packages"
                && change
                    .key
                    .strip_prefix(self.key.as_str())
                    .is_some_and(|rest| rest.starts_with(':') && !rest[1..].contains(':')));
        scope_ok && key_ok && change.section != "meta"
    }
}

/// The rows the selectors name among `changes`, in diff order. Every selector must match at
/// least one change.
pub fn select(changes: &[Change], selectors: &[Selector]) -> Result<Vec<RowRef>, RollbackError> {
    if selectors.is_empty() {
        return Err(RollbackError::EmptySelection);
    }
    let mut out: Vec<RowRef> = Vec::new();
    let mut seen = BTreeSet::new();
    for s in selectors {
        let mut any = false;
        for c in changes.iter().filter(|c| s.matches(c)) {
            any = true;
            let r = RowRef {
                section: c.section.clone(),
                table: c.table.clone(),
                key: c.key.clone(),
            };
            if seen.insert(r.clone()) {
                out.push(r);
            }
        }
        if !any {
            let near: Vec<String> = changes
                .iter()
                .filter(|c| c.section != "meta")
                .filter(|c| {
                    c.key.contains(s.key.as_str())
                        || s.key.contains(c.key.as_str())
                        || c.section == s.scope
                        || c.table == s.scope
                })
                .map(|c| format!("{}:{}", c.section, c.key))
                .collect::<BTreeSet<_>>()
                .into_iter()
                .take(5)
                .collect();
            return Err(RollbackError::NoMatch {
                selector: s.to_string(),
                near: if near.is_empty() {
                    String::new()
                } else {
                    format!(" (changes that look alike: {})", near.join(", "))
                },
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_profile::{ChangeKind, Volatility};

    fn change(section: &str, table: &str, key: &str) -> Change {
        Change {
            section: section.into(),
            table: table.into(),
            key: key.into(),
            kind: ChangeKind::Added,
            field: None,
            old: serde_json::Value::Null,
            new: serde_json::Value::Null,
            volatility: Volatility::Config,
        }
    }

    #[test]
    fn section_table_and_package_without_arch() {
        let changes = vec![
            change("users", "users", "mallory"),
            change("users", "groups", "mallory"),
            change("packages", "packages", "tree:amd64"),
            change("kernel", "sysctl", "vm.swappiness"),
        ];
        let sel = |s: &str| vec![s.parse::<Selector>().unwrap()];
        assert_eq!(select(&changes, &sel("users:mallory")).unwrap().len(), 2);
        assert_eq!(
            select(&changes, &sel("users.groups:mallory"))
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            select(&changes, &sel("packages:tree")).unwrap()[0].key,
            "tree:amd64"
        );
        assert_eq!(
            select(&changes, &sel("sysctl:vm.swappiness"))
                .unwrap()
                .len(),
            1
        );
        let err = select(&changes, &sel("users:eve")).unwrap_err().to_string();
        assert!(err.contains("users:mallory"), "{err}");
        assert!("nocolon".parse::<Selector>().is_err());
        assert!(matches!(
            select(&changes, &[]),
            Err(RollbackError::EmptySelection)
        ));
    }
}
