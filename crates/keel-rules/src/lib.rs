//! Keel's alert rules: CEL expressions evaluated on each incoming profile, raising firings that
//! the server turns into alerts.
//!
//! A [`Rule`] has a name, a [`Severity`], labels, a `when` condition, an optional `for_each`
//! list (one firing per element, bound as `item`) and a message template whose `{{ … }}`
//! placeholders are CEL expressions too. Rules load from TOML (`[[rule]]` tables, see
//! [`rules_from_toml`]) or JSON ([`rules_from_json`]); [`builtin_rules`] is the pack Keel
//! ships, also in `rules/builtin.toml`. [`RuleSet::compile`] parses them once;
//! [`RuleSet::evaluate`] runs them against an [`Input`]; [`RuleSet::check_against`] is what
//! the server runs when a rule is saved.
//!
//! # Variables
//!
//! | name | value |
//! |---|---|
//! | `profile` | the new profile: `profile.meta` (agent version, hostname, …), `profile.collectors` (each collector's `name`, `state`, `message`, `tables`), and each section as a map of tables, each a list of rows: `profile.packages.packages`, `profile.security.sshd`, … |
//! | `previous` | the host's profile before it, the same shape, or `null` on its first profile: guard with `previous != null` |
//! | `changes` | the list of changes from `previous` to `profile`, each a map with `section`, `table`, `key`, `kind` (`added`, `removed`, `changed`), `field` (for `changed`, else `null`), `old`, `new` (whole rows for added and removed, field values for changed) and `volatility`; changes to volatile fields are left out |
//! | `added` | map from `"section.table"` to the list of rows added, e.g. `added["packages.packages"]`; every table is present, empty when nothing was added |
//! | `removed` | the same for removed rows (as they were) |
//! | `changed` | the same for changed fields: lists of change maps, e.g. `changed["security.sshd"]` |
//! | `host` | `host.name` and `host.labels` (a map of strings) |
//! | `item` | in `message`, with `for_each`: the current element |
//!
//! Rows are the JSON shape of the profile's tables, plus `_key`, the row's natural key (the
//! one diffs use: `nano:amd64`, a disk's WWN). Integers compare as written (`item.uid == 0`).
//!
//! # Guardrails
//!
//! The `cel` crate has no type checker and no cost estimator, so:
//! - expressions are capped in length ([`MAX_EXPR_LEN`]) and depth ([`MAX_DEPTH`]);
//! - a broken rule (a misspelt field, a `when` that gives a string) shows only when evaluated:
//!   [`RuleSet::check_against`] evaluates a new rule against a stored profile before it is
//!   accepted, and [`Evaluation::errors`] reports rules that fail later;
//! - time is bounded cooperatively: every comprehension checks a per-rule deadline before each
//!   step and stops the whole expression once it has passed (no worker thread, nothing left
//!   running). A rule that runs out of time is an error, and the next rule runs; see
//!   [`Limits`]. Memory is bounded only through time: a rule can allocate for as long as its
//!   time limit lets it.
//!
//! Building CEL values costs more than evaluating most rules, so an evaluation builds only the
//! variables some enabled rule mentions, and of `profile` and `previous` only the sections and
//! tables named (`profile.security.sshd` builds that table alone; bare `profile` builds all).
//!
//! # Example
//!
//! ```
//! use keel_profile::{diff, DiffOptions, Package, Profile};
//! use keel_rules::{rules_from_toml, HostInfo, Input, RuleSet};
//!
//! let rules = rules_from_toml(r#"
//! [[rule]]
//! name = "telnet-installed"
//! severity = "critical"
//! labels = { team = "security" }
//! for_each = 'added["packages.packages"].filter(p, p.name.startsWith("telnet"))'
//! message = "{{ item.name }} {{ item.version }} installed on {{ host.name }}"
//! "#, "example").unwrap();
//! let set = RuleSet::compile(rules).unwrap();
//!
//! let old = Profile::default();
//! let mut new = old.clone();
//! new.packages.packages.push(Package { name: "telnetd".into(), arch: "amd64".into(),
//!     version: "0.17-44".into(), ..Package::default() });
//! let changes = diff(&old, &new, DiffOptions::default());
//! let host = HostInfo { name: "web1".into(), ..HostInfo::default() };
//!
//! let out = set.evaluate(&Input { profile: &new, previous: Some(&old), changes: &changes,
//!     host: &host });
//! assert!(out.errors.is_empty());
//! assert_eq!(out.firings.len(), 1);
//! assert_eq!(out.firings[0].message, "telnetd 0.17-44 installed on web1");
//! assert_eq!(out.firings[0].item_key.as_deref(), Some("telnetd:amd64"));
//! assert_eq!(out.firings[0].labels["severity"], "critical");
//! ```

mod compile;
mod error;
mod eval;
mod rule;
mod values;

pub use compile::{MAX_DEPTH, MAX_EXPR_LEN, MAX_PLACEHOLDERS};
pub use error::{Part, RuleError};
pub use eval::{Evaluation, Firing, HostInfo, Input, Limits, RuleSet};
pub use rule::{rules_from_json, rules_from_toml, Rule, Severity};

/// The built-in pack as TOML, as shipped in `rules/builtin.toml`: a starting point to copy.
pub const BUILTIN_TOML: &str = include_str!("../rules/builtin.toml");

/// The built-in rules: new or removed packages, services, listening ports, disks and network
/// adapters; package version and service enablement changes; other hardware changes; a new
/// uid-0 account; an agent version change; a failed collector (an incomplete profile); and
/// one compliance rule, sshd permitting root login.
pub fn builtin_rules() -> Vec<Rule> {
    // The file is part of the crate and a unit test parses and compiles it.
    rules_from_toml(BUILTIN_TOML, "builtin.toml").unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn builtin_pack_parses_and_compiles() {
        let rules = super::rules_from_toml(super::BUILTIN_TOML, "builtin.toml").unwrap();
        assert!(rules.len() >= 15, "{}", rules.len());
        let set = super::RuleSet::compile(rules).unwrap();
        assert_eq!(set.len(), super::builtin_rules().len());
    }
}
