//! What can go wrong with a rule, and where.
//!
//! Every error names the rule and the part of it at fault (`when`, `for_each`, a `message`
//! placeholder), says what happened, and ends with a `hint:` line telling the rule's author
//! what to do. A rules file that cannot be read at all names the file instead.

use std::fmt;
use std::time::Duration;

/// The part of a rule an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The rule as a whole: its name, labels or other settings.
    Rule,
    /// The `when` condition.
    When,
    /// The `for_each` list.
    ForEach,
    /// The `message` template as a whole (an unclosed `{{`).
    Message,
    /// The `n`-th `{{ … }}` placeholder of the message, counting from 1.
    Placeholder(usize),
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Part::Rule => f.write_str("rule"),
            Part::When => f.write_str("`when`"),
            Part::ForEach => f.write_str("`for_each`"),
            Part::Message => f.write_str("`message`"),
            Part::Placeholder(n) => write!(f, "`message` placeholder {n}"),
        }
    }
}

/// An error loading, compiling, checking or evaluating a rule.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum RuleError {
    /// A rules file or document could not be parsed (bad syntax, a missing or unknown key).
    #[error("cannot read rules from {origin}: {message}\nhint: each rule is a [[rule]] table with name, severity, when and message; see docs/rules.md")]
    Load {
        /// Where the rules came from: a path, or a description such as "request body".
        origin: String,
        /// The parser's message, with line and column.
        message: String,
    },
    /// The rule's name is not a valid identifier.
    #[error(
        "rule name {rule:?} is not valid\nhint: use 1 to 64 characters from a-z, 0-9, `_` and `-`"
    )]
    InvalidName {
        /// The offending name.
        rule: String,
    },
    /// Two rules share a name.
    #[error(
        "rule `{rule}` is defined twice\nhint: rule names identify alerts, so each must be unique"
    )]
    DuplicateName {
        /// The repeated name.
        rule: String,
    },
    /// A label key is not valid or is reserved.
    #[error("rule `{rule}`: label {label:?} {reason}\nhint: label names match [a-zA-Z_][a-zA-Z0-9_]*; `rule` and `severity` are set by Keel")]
    InvalidLabel {
        /// The rule.
        rule: String,
        /// The label key.
        label: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// An expression or the message is longer than allowed.
    #[error("rule `{rule}`: {part} is {len} bytes long, more than the {max} allowed\nhint: split the rule in two, or move constant lists into host labels")]
    TooLong {
        /// The rule.
        rule: String,
        /// Which part.
        part: Part,
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// An expression nests deeper than allowed.
    #[error("rule `{rule}`: {part} nests {depth} levels deep, more than the {max} allowed\nhint: simplify the expression, or split the rule in two")]
    TooDeep {
        /// The rule.
        rule: String,
        /// Which part.
        part: Part,
        /// Its depth.
        depth: usize,
        /// The limit.
        max: usize,
    },
    /// An expression is not valid CEL, or the message template is malformed.
    #[error("rule `{rule}`: {part} does not parse: {message}\nhint: expressions are CEL (https://cel.dev); placeholders are written {{{{ expression }}}}")]
    Syntax {
        /// The rule.
        rule: String,
        /// Which part.
        part: Part,
        /// The parser's message, with position and a pointer to the error.
        message: String,
    },
    /// Evaluating an expression failed: an unknown field or variable, a type mismatch, …
    #[error("rule `{rule}`: {part} failed: {message}\nhint: check field and table names against `keel show --format json`; guard uses of `previous` with `previous != null`")]
    Eval {
        /// The rule.
        rule: String,
        /// Which part.
        part: Part,
        /// The interpreter's message.
        message: String,
    },
    /// An expression evaluated to a value of the wrong type.
    #[error("rule `{rule}`: {part} must evaluate to a {want}, but gave a {got}\nhint: {hint}")]
    WrongType {
        /// The rule.
        rule: String,
        /// Which part.
        part: Part,
        /// The type it must have.
        want: &'static str,
        /// The type it had.
        got: String,
        /// What to do about it.
        hint: &'static str,
    },
    /// The rule ran past its time budget and was stopped.
    #[error("rule `{rule}`: {part} was stopped after {} ms, its time limit\nhint: the expression is too costly: avoid nested loops over large tables such as files.files or packages.packages", .limit.as_millis())]
    Timeout {
        /// The rule.
        rule: String,
        /// Which part was running.
        part: Part,
        /// The limit that was reached.
        limit: Duration,
    },
    /// `for_each` gave more elements than one rule may fire for; the first ones fired.
    #[error("rule `{rule}`: `for_each` gave {count} elements, more than the {max} one rule may fire for; the rest were dropped\nhint: narrow the list with .filter(), or fire once with a count in the message")]
    TooManyFirings {
        /// The rule.
        rule: String,
        /// How many elements `for_each` gave.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// The profile's time budget was used up before the rule's turn came.
    #[error("rule `{rule}` was not evaluated: the {} ms budget for this profile was used up by earlier rules\nhint: find the slow rules in the other errors of this evaluation", .budget.as_millis())]
    Skipped {
        /// The rule.
        rule: String,
        /// The per-profile budget.
        budget: Duration,
    },
}

impl RuleError {
    /// The name of the rule the error is about, when it is about one rule.
    pub fn rule(&self) -> Option<&str> {
        match self {
            RuleError::Load { .. } => None,
            RuleError::InvalidName { rule }
            | RuleError::DuplicateName { rule }
            | RuleError::InvalidLabel { rule, .. }
            | RuleError::TooLong { rule, .. }
            | RuleError::TooDeep { rule, .. }
            | RuleError::Syntax { rule, .. }
            | RuleError::Eval { rule, .. }
            | RuleError::WrongType { rule, .. }
            | RuleError::Timeout { rule, .. }
            | RuleError::TooManyFirings { rule, .. }
            | RuleError::Skipped { rule, .. } => Some(rule),
        }
    }
}
