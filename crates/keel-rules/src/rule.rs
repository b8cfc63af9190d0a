//! The rule model and how rules are read from TOML and JSON.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::RuleError;

/// How urgent a firing is.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth knowing; no action expected.
    Info,
    /// Someone should look.
    #[default]
    Warning,
    /// Someone should act now.
    Critical,
}

impl Severity {
    /// The lowercase name, as used in labels and files.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One rule: a CEL condition over a profile, its predecessor and their changes, and the alert
/// it raises.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Unique identifier, `[a-z0-9_-]+`: it names the alert.
    pub name: String,
    /// What the rule is about, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// How urgent a firing is.
    pub severity: Severity,
    /// Labels every firing carries (besides `rule` and `severity`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// A CEL expression that must evaluate to a bool; the rule fires when it is true.
    /// Defaults to `true`, which suits rules whose `for_each` decides on its own.
    #[serde(default = "always")]
    pub when: String,
    /// A CEL expression evaluating to a list: the rule fires once per element, bound as `item`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub for_each: Option<String>,
    /// The alert text: literal text with `{{ expression }}` placeholders.
    pub message: String,
    /// A disabled rule is checked but never evaluated.
    #[serde(default = "enabled")]
    pub enabled: bool,
}

fn always() -> String {
    "true".into()
}

fn enabled() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    #[serde(default)]
    rule: Vec<Rule>,
}

/// Reads rules from a TOML document made of `[[rule]]` tables. `origin` (a path, say) names
/// the document in errors.
pub fn rules_from_toml(text: &str, origin: &str) -> Result<Vec<Rule>, RuleError> {
    toml::from_str::<RulesFile>(text)
        .map(|f| f.rule)
        .map_err(|e| RuleError::Load {
            origin: origin.to_string(),
            message: e.to_string().trim_end().to_string(),
        })
}

/// Reads rules from JSON: an array of rule objects, or one rule object.
pub fn rules_from_json(text: &str, origin: &str) -> Result<Vec<Rule>, RuleError> {
    let result = if text.trim_start().starts_with('[') {
        serde_json::from_str::<Vec<Rule>>(text)
    } else {
        serde_json::from_str::<Rule>(text).map(|r| vec![r])
    };
    result.map_err(|e| RuleError::Load {
        origin: origin.to_string(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_defaults() {
        let rules = rules_from_toml(
            r#"
[[rule]]
name = "x"
severity = "info"
message = "hello"
"#,
            "t",
        )
        .unwrap();
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0].when, "true");
        assert!(rules[0].enabled);
        assert!(rules[0].labels.is_empty());
    }

    #[test]
    fn toml_rejects_unknown_keys_with_position() {
        let err = rules_from_toml(
            "[[rule]]\nname = \"x\"\nseverity = \"info\"\nmessage = \"m\"\nwhen_ = \"true\"\n",
            "rules.toml",
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("rules.toml"), "{text}");
        assert!(text.contains("when_"), "{text}");
        assert!(text.contains("hint:"), "{text}");
    }

    #[test]
    fn toml_rejects_unknown_severity() {
        let err = rules_from_toml(
            "[[rule]]\nname = \"x\"\nseverity = \"fatal\"\nmessage = \"m\"\n",
            "rules.toml",
        )
        .unwrap_err();
        assert!(err.to_string().contains("fatal"), "{err}");
    }

    #[test]
    fn json_one_or_many() {
        let one = r#"{"name":"a","severity":"critical","when":"1 == 1","message":"m"}"#;
        assert_eq!(rules_from_json(one, "body").unwrap().len(), 1);
        let many = format!("[{one},{one}]");
        assert_eq!(rules_from_json(&many, "body").unwrap().len(), 2);
        let bad = r#"{"name":"a","severity":"critical","message":"m","colour":"red"}"#;
        let err = rules_from_json(bad, "body").unwrap_err().to_string();
        assert!(err.contains("colour"), "{err}");
    }
}
