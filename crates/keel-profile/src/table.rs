//! The machinery every profile table shares: natural keys, volatility classes and a generic view
//! for diffing.

use serde::{Deserialize, Serialize};

/// How a field is expected to change, which decides whether a change to it raises an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Volatility {
    /// Changes rarely; a change signals a different machine (serial numbers, machine-id).
    Identity,
    /// Persisted configuration: a change is what change management is about.
    Config,
    /// Live state that should follow the configuration (running kernel, live addresses).
    Runtime,
    /// Changes all the time (free space, link state): never alerts unless asked.
    Volatile,
}

impl Volatility {
    /// The lowercase name used in JSON and text output.
    pub fn as_str(self) -> &'static str {
        match self {
            Volatility::Identity => "identity",
            Volatility::Config => "config",
            Volatility::Runtime => "runtime",
            Volatility::Volatile => "volatile",
        }
    }
}

/// A row type of a profile table.
pub trait Record: Serialize {
    /// The table's name, unique within its section.
    const TABLE: &'static str;
    /// The natural key: stable across captures for the same thing (a package name, a disk WWN).
    fn key(&self) -> String;
    /// The volatility class of a field.
    fn volatility(field: &str) -> Volatility;
}

/// A table seen generically: its rows as JSON objects keyed by natural key.
#[derive(Debug)]
pub struct TableView {
    /// Table name.
    pub name: &'static str,
    /// `(key, row)` pairs in the table's order.
    pub rows: Vec<(String, serde_json::Value)>,
    /// Volatility of each field.
    pub volatility: fn(&str) -> Volatility,
}

impl TableView {
    /// A view of `rows`.
    pub fn of<T: Record>(rows: &[T]) -> Self {
        TableView {
            name: T::TABLE,
            rows: rows
                .iter()
                .map(|r| {
                    (
                        r.key(),
                        serde_json::to_value(r).unwrap_or(serde_json::Value::Null),
                    )
                })
                .collect(),
            volatility: T::volatility,
        }
    }
}

/// A group of tables that one part of the system fills.
pub trait Section {
    /// The section's name as used in diffs and `keel show --section`.
    const NAME: &'static str;
    /// Every table of the section, in declaration order.
    fn tables(&self) -> Vec<TableView>;
    /// Sorts each table by key so equal content encodes identically.
    fn normalize(&mut self);
    /// Views of the tables that differ between `self` and `other`, as `(self, other)` pairs:
    /// equal tables are skipped without converting a row.
    fn differing_tables(&self, other: &Self) -> Vec<(TableView, TableView)>;
    /// A view of one table.
    fn table(&self, name: &str) -> Option<TableView>;
    /// Replaces one table with rows given as JSON.
    fn set_table(
        &mut self,
        name: &str,
        rows: Vec<serde_json::Value>,
    ) -> Result<(), serde_json::Error>;
}

/// Defines a record type: a struct with `serde(default)` so that fields added in later format
/// versions decode from older files, plus its [`Record`] implementation.
macro_rules! record {
    (
        $(#[$meta:meta])*
        $name:ident in $table:literal, key($s:ident) => $key:expr;
        {
            $( $(#[$fmeta:meta])* $vol:ident $field:ident : $ty:ty ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
        #[serde(default)]
        pub struct $name {
            $( $(#[$fmeta])* pub $field: $ty, )*
        }

        impl $crate::table::Record for $name {
            const TABLE: &'static str = $table;
            fn key(&self) -> String {
                let $s = self;
                $key
            }
            fn volatility(field: &str) -> $crate::table::Volatility {
                match field {
                    $( stringify!($field) => $crate::table::Volatility::$vol, )*
                    _ => $crate::table::Volatility::Config,
                }
            }
        }
    };
}

/// Defines a section: a struct of tables (each a `Vec` of records) and its [`Section`]
/// implementation.
macro_rules! section {
    (
        $(#[$meta:meta])*
        $name:ident $sname:literal {
            $( $(#[$fmeta:meta])* $field:ident : $ty:ty ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
        #[serde(default)]
        pub struct $name {
            $( $(#[$fmeta])* pub $field: Vec<$ty>, )*
        }

        impl $crate::table::Section for $name {
            const NAME: &'static str = $sname;
            fn tables(&self) -> Vec<$crate::table::TableView> {
                vec![ $( $crate::table::TableView::of(&self.$field), )* ]
            }
            fn normalize(&mut self) {
                $(
                    self.$field.sort_by_cached_key($crate::table::Record::key);
                )*
            }
            fn differing_tables(&self, other: &Self) -> Vec<($crate::table::TableView, $crate::table::TableView)> {
                let mut out = Vec::new();
                $(
                    if self.$field != other.$field {
                        out.push(($crate::table::TableView::of(&self.$field), $crate::table::TableView::of(&other.$field)));
                    }
                )*
                out
            }
            fn table(&self, name: &str) -> Option<$crate::table::TableView> {
                $(
                    if name == <$ty as $crate::table::Record>::TABLE {
                        return Some($crate::table::TableView::of(&self.$field));
                    }
                )*
                None
            }
            fn set_table(&mut self, name: &str, rows: Vec<serde_json::Value>) -> Result<(), serde_json::Error> {
                $(
                    if name == <$ty as $crate::table::Record>::TABLE {
                        self.$field = rows
                            .into_iter()
                            .map(serde_json::from_value)
                            .collect::<Result<Vec<$ty>, _>>()?;
                        return Ok(());
                    }
                )*
                Err(<serde_json::Error as serde::de::Error>::custom(format!("unknown table {name}")))
            }
        }

        impl $name {
            /// The names of this section's tables.
            pub const TABLES: &'static [&'static str] =
                &[ $( <$ty as $crate::table::Record>::TABLE, )* ];
        }
    };
}

pub(crate) use record;
pub(crate) use section;
