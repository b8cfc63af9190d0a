//! Parsing a rule's expressions, with the guardrails the CEL crate lacks.
//!
//! - Size: each expression and the message are capped ([`MAX_EXPR_LEN`]), and so is the depth
//!   of the parsed tree ([`MAX_DEPTH`]), which also bounds the interpreter's recursion.
//! - Time: the crate has no cost estimator and no way to interrupt an evaluation, so every
//!   comprehension (`all`, `exists`, `exists_one`, `map`, `filter`) is rewritten to call a
//!   clock function, `@tick()`, before each step, and so is every `+` and every non-constant
//!   element of a list or map literal (each copies its operands, so chains and repetitions
//!   of a large table add up without any loop). Once the rule's deadline has passed the
//!   clock fails, which ends every loop within one step, however deeply nested. `@` cannot be
//!   written in CEL source, so no rule can call or shadow it. The rewrite keeps the shapes
//!   the interpreter optimises (`@result + [x]` for `map`/`filter`, `@result && x` for
//!   `all`/`exists`), so guarded rules run nearly as fast as unguarded ones.
//! - Cost of inputs: [`Needs`] records which variables, and which profile sections and tables,
//!   a rule mentions, so an evaluation builds only those.

use std::collections::{BTreeMap, BTreeSet};

use cel::common::ast::{operators, CallExpr, ComprehensionExpr, Expr, IdedExpr, LiteralValue};
use cel::Env;

use crate::error::{Part, RuleError};
use crate::rule::Rule;

/// The longest expression, and the longest message, in bytes.
pub const MAX_EXPR_LEN: usize = 4096;
/// The deepest expression tree, counted after macro expansion.
pub const MAX_DEPTH: usize = 48;
/// The most `{{ … }}` placeholders in one message.
pub const MAX_PLACEHOLDERS: usize = 16;
/// The name of the clock function the rewrite inserts.
pub(crate) const TICK: &str = "@tick";

/// The parser's own recursion limit, a first line of defence before [`MAX_DEPTH`].
const PARSER_RECURSION: u16 = 64;

/// A piece of a message template.
#[derive(Debug, Clone)]
pub(crate) enum Segment {
    Text(String),
    Expr(IdedExpr),
}

/// A rule ready to evaluate.
#[derive(Debug, Clone)]
pub(crate) struct CompiledRule {
    pub rule: crate::Rule,
    pub when: IdedExpr,
    pub for_each: Option<IdedExpr>,
    pub message: Vec<Segment>,
    pub needs: Needs,
}

/// Which tables of a section are needed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TableNeeds {
    All,
    Some(BTreeSet<String>),
}

/// Which parts of `profile` (or `previous`) are needed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) enum ProfileNeeds {
    #[default]
    None,
    /// Section (or `meta`, `collectors`) → tables.
    Parts(BTreeMap<String, TableNeeds>),
    All,
}

impl ProfileNeeds {
    fn add(&mut self, path: &[&str]) {
        match (path.first(), &mut *self) {
            (_, ProfileNeeds::All) => {}
            (None, _) => *self = ProfileNeeds::All,
            (Some(section), ProfileNeeds::None) => {
                *self = ProfileNeeds::Parts(BTreeMap::new());
                self.add_part(section, path.get(1).copied());
            }
            (Some(section), ProfileNeeds::Parts(_)) => {
                self.add_part(section, path.get(1).copied());
            }
        }
    }

    /// Bound, but with no content needed.
    fn touch(&mut self) {
        if *self == ProfileNeeds::None {
            *self = ProfileNeeds::Parts(BTreeMap::new());
        }
    }

    fn add_part(&mut self, section: &str, table: Option<&str>) {
        let ProfileNeeds::Parts(parts) = self else {
            return;
        };
        let entry = parts
            .entry(section.to_string())
            .or_insert_with(|| TableNeeds::Some(BTreeSet::new()));
        match (table, &mut *entry) {
            (None, _) => *entry = TableNeeds::All,
            (Some(_), TableNeeds::All) => {}
            (Some(t), TableNeeds::Some(set)) => {
                set.insert(t.to_string());
            }
        }
    }

    fn merge(&mut self, other: &ProfileNeeds) {
        match other {
            ProfileNeeds::None => {}
            ProfileNeeds::All => *self = ProfileNeeds::All,
            ProfileNeeds::Parts(parts) => {
                for (section, tables) in parts {
                    match tables {
                        TableNeeds::All => self.add(&[section]),
                        TableNeeds::Some(set) => {
                            for t in set {
                                self.add(&[section, t]);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The variables a set of rules mentions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Needs {
    pub profile: ProfileNeeds,
    pub previous: ProfileNeeds,
    pub changes: bool,
    pub added: bool,
    pub removed: bool,
    pub changed: bool,
    pub host: bool,
}

impl Needs {
    pub(crate) fn merge(&mut self, other: &Needs) {
        self.profile.merge(&other.profile);
        self.previous.merge(&other.previous);
        self.changes |= other.changes;
        self.added |= other.added;
        self.removed |= other.removed;
        self.changed |= other.changed;
        self.host |= other.host;
    }

    fn mention(&mut self, name: &str, path: &[&str]) {
        match name {
            "profile" => self.profile.add(path),
            "previous" => self.previous.add(path),
            "profile?" => self.profile.touch(),
            "previous?" => self.previous.touch(),
            "changes" => self.changes = true,
            "added" => self.added = true,
            "removed" => self.removed = true,
            "changed" => self.changed = true,
            "host" => self.host = true,
            _ => {}
        }
    }

    /// Records every variable `e` mentions. A mention of `profile.section.table` needs that
    /// table, of `profile.section` the whole section, of bare `profile` everything.
    fn visit(&mut self, e: &IdedExpr) {
        match &e.expr {
            Expr::Ident(name) => self.mention(name, &[]),
            Expr::Select(_) => {
                let mut path = Vec::new();
                let mut cur = e;
                while let Expr::Select(s) = &cur.expr {
                    path.push(s.field.as_str());
                    cur = &s.operand;
                }
                path.reverse();
                if let Expr::Ident(name) = &cur.expr {
                    self.mention(name, &path);
                } else {
                    self.visit(cur);
                }
            }
            Expr::Call(c) => {
                if let Some(name) = null_test(c) {
                    // `previous != null` needs the variable bound, not its content.
                    self.mention(name, &[]);
                    return;
                }
                if let Some(t) = &c.target {
                    self.visit(t);
                }
                for a in &c.args {
                    self.visit(a);
                }
            }
            Expr::Comprehension(c) => {
                for part in [
                    &c.iter_range,
                    &c.accu_init,
                    &c.loop_cond,
                    &c.loop_step,
                    &c.result,
                ] {
                    self.visit(part);
                }
            }
            Expr::List(l) => {
                for el in &l.elements {
                    self.visit(el);
                }
            }
            Expr::Map(m) => {
                for entry in &m.entries {
                    if let cel::common::ast::EntryExpr::MapEntry(me) = &entry.expr {
                        self.visit(&me.key);
                        self.visit(&me.value);
                    }
                }
            }
            Expr::Struct(s) => {
                for entry in &s.entries {
                    if let cel::common::ast::EntryExpr::StructField(f) = &entry.expr {
                        self.visit(&f.value);
                    }
                }
            }
            Expr::Literal(_) | Expr::Unspecified => {}
        }
    }
}

/// `profile == null`, `null != previous` and the like: the name tested, marked with `?`.
fn null_test(c: &CallExpr) -> Option<&'static str> {
    if c.target.is_some()
        || c.args.len() != 2
        || !(c.func_name == operators::EQUALS || c.func_name == operators::NOT_EQUALS)
    {
        return None;
    }
    let is_null = |e: &IdedExpr| matches!(e.expr, Expr::Literal(LiteralValue::Null));
    let var = |e: &IdedExpr| match &e.expr {
        Expr::Ident(n) if n == "profile" => Some("profile?"),
        Expr::Ident(n) if n == "previous" => Some("previous?"),
        _ => None,
    };
    match (&c.args[0], &c.args[1]) {
        (a, b) if is_null(b) => var(a),
        (a, b) if is_null(a) => var(b),
        _ => None,
    }
}

fn depth(e: &IdedExpr) -> usize {
    let children: Vec<&IdedExpr> = match &e.expr {
        Expr::Select(s) => vec![&s.operand],
        Expr::Call(c) => c.target.iter().map(AsRef::as_ref).chain(&c.args).collect(),
        Expr::Comprehension(c) => vec![
            &c.iter_range,
            &c.accu_init,
            &c.loop_cond,
            &c.loop_step,
            &c.result,
        ],
        Expr::List(l) => l.elements.iter().collect(),
        Expr::Map(m) => m
            .entries
            .iter()
            .flat_map(|en| match &en.expr {
                cel::common::ast::EntryExpr::MapEntry(me) => vec![&me.key, &me.value],
                cel::common::ast::EntryExpr::StructField(f) => vec![&f.value],
            })
            .collect(),
        Expr::Struct(s) => s
            .entries
            .iter()
            .flat_map(|en| match &en.expr {
                cel::common::ast::EntryExpr::MapEntry(me) => vec![&me.key, &me.value],
                cel::common::ast::EntryExpr::StructField(f) => vec![&f.value],
            })
            .collect(),
        Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => Vec::new(),
    };
    1 + children.into_iter().map(depth).max().unwrap_or(0)
}

fn node(expr: Expr) -> IdedExpr {
    IdedExpr { id: 0, expr }
}

/// `@tick() ? e : null`: the clock runs first, and fails once time is up.
fn guarded(e: IdedExpr) -> IdedExpr {
    let tick = node(Expr::Call(CallExpr {
        func_name: TICK.to_string(),
        target: None,
        args: Vec::new(),
    }));
    node(Expr::Call(CallExpr {
        func_name: operators::CONDITIONAL.to_string(),
        target: None,
        args: vec![tick, e, node(Expr::Literal(LiteralValue::Null))],
    }))
}

fn is_ident(e: &IdedExpr, name: &str) -> bool {
    matches!(&e.expr, Expr::Ident(n) if n == name)
}

fn is_guarded(e: &IdedExpr) -> bool {
    matches!(&e.expr, Expr::Call(c) if c.func_name == operators::CONDITIONAL
        && matches!(c.args.first().map(|a| &a.expr), Some(Expr::Call(t)) if t.func_name == TICK))
}

/// Guards `e` unless it is a constant or already guarded.
fn guard_in_place(e: &mut IdedExpr) {
    if !matches!(e.expr, Expr::Literal(_)) && !is_guarded(e) {
        let inner = std::mem::take(e);
        *e = guarded(inner);
    }
}

/// Puts a clock check wherever time can pile up: before each step of every comprehension,
/// before each `+` (which copies whole lists: a chain of them is quadratic), and before each
/// non-constant element of a list or map literal (`[t, t, t, …]` copies `t` each time).
fn add_ticks(e: &mut IdedExpr) {
    match &mut e.expr {
        Expr::Select(s) => add_ticks(&mut s.operand),
        Expr::Call(c) => {
            if let Some(t) = &mut c.target {
                add_ticks(t);
            }
            c.args.iter_mut().for_each(add_ticks);
            // `@result + [x]` is a comprehension's own append: `guard_step` handles it, and
            // must still recognise it.
            let accumulates = c
                .args
                .first()
                .is_some_and(|a| matches!(&a.expr, Expr::Ident(n) if n.starts_with('@')));
            if c.func_name == operators::ADD && c.args.len() == 2 && !accumulates {
                // The left operand is evaluated first, then the right: a check in front of the
                // right one runs after the left side's copying and before this one's.
                guard_in_place(&mut c.args[1]);
            }
        }
        Expr::List(l) => {
            l.elements.iter_mut().for_each(add_ticks);
            l.elements.iter_mut().for_each(guard_in_place);
        }
        Expr::Map(m) => {
            for entry in &mut m.entries {
                match &mut entry.expr {
                    cel::common::ast::EntryExpr::MapEntry(me) => {
                        add_ticks(&mut me.key);
                        add_ticks(&mut me.value);
                        guard_in_place(&mut me.value);
                    }
                    cel::common::ast::EntryExpr::StructField(f) => add_ticks(&mut f.value),
                }
            }
        }
        Expr::Struct(s) => {
            for entry in &mut s.entries {
                if let cel::common::ast::EntryExpr::StructField(f) = &mut entry.expr {
                    add_ticks(&mut f.value);
                }
            }
        }
        Expr::Comprehension(c) => {
            add_ticks(&mut c.iter_range);
            add_ticks(&mut c.accu_init);
            add_ticks(&mut c.loop_cond);
            add_ticks(&mut c.loop_step);
            add_ticks(&mut c.result);
            guard_step(c);
        }
        Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => {}
    }
}

fn guard_step(c: &mut ComprehensionExpr) {
    let accu = c.accu_var.clone();
    let step = &mut c.loop_step;
    if let Expr::Call(call) = &mut step.expr {
        let name = call.func_name.as_str();
        let two = call.args.len() == 2 && call.target.is_none();
        // map / filter: `@result + [x]` — guard the element, keep the append shape.
        if two && name == operators::ADD && is_ident(&call.args[0], &accu) {
            if let Expr::List(list) = &mut call.args[1].expr {
                for el in &mut list.elements {
                    if !is_guarded(el) {
                        let inner = std::mem::take(el);
                        *el = guarded(inner);
                    }
                }
                return;
            }
        }
        // all / exists: `@result && p`, `@result || p` — guard the predicate.
        if two
            && (name == operators::LOGICAL_AND || name == operators::LOGICAL_OR)
            && is_ident(&call.args[0], &accu)
        {
            let p = std::mem::take(&mut call.args[1]);
            call.args[1] = guarded(p);
            return;
        }
        // filter, map with a filter, exists_one: `p ? … : @result` — guard the condition.
        if call.args.len() == 3
            && call.target.is_none()
            && name == operators::CONDITIONAL
            && is_ident(&call.args[2], &accu)
        {
            let p = std::mem::take(&mut call.args[0]);
            call.args[0] = guarded(p);
            return;
        }
    }
    let s = std::mem::take(step);
    *step = guarded(s);
}

fn parse(env: &Env, rule: &str, part: Part, source: &str) -> Result<IdedExpr, RuleError> {
    if source.len() > MAX_EXPR_LEN {
        return Err(RuleError::TooLong {
            rule: rule.to_string(),
            part,
            len: source.len(),
            max: MAX_EXPR_LEN,
        });
    }
    let expr = env
        .parser()
        .max_recursion_depth(PARSER_RECURSION)
        .parse(source)
        .map_err(|e| RuleError::Syntax {
            rule: rule.to_string(),
            part,
            message: e.to_string(),
        })?;
    let d = depth(&expr);
    if d > MAX_DEPTH {
        return Err(RuleError::TooDeep {
            rule: rule.to_string(),
            part,
            depth: d,
            max: MAX_DEPTH,
        });
    }
    Ok(expr)
}

/// Splits a message into text and `{{ expression }}` placeholders.
fn split_template(rule: &str, message: &str) -> Result<Vec<(Option<Part>, String)>, RuleError> {
    let mut out = Vec::new();
    let mut rest = message;
    let mut n = 0;
    while let Some(open) = rest.find("{{") {
        if open > 0 {
            out.push((None, rest[..open].to_string()));
        }
        let after = &rest[open + 2..];
        let Some(close) = after.find("}}") else {
            return Err(RuleError::Syntax {
                rule: rule.to_string(),
                part: Part::Message,
                message: format!(
                    "the `{{{{` at byte {} is never closed by `}}}}`",
                    message.len() - rest.len() + open
                ),
            });
        };
        n += 1;
        let expr = after[..close].trim();
        if expr.is_empty() {
            return Err(RuleError::Syntax {
                rule: rule.to_string(),
                part: Part::Placeholder(n),
                message: "the placeholder is empty".into(),
            });
        }
        out.push((Some(Part::Placeholder(n)), expr.to_string()));
        rest = &after[close + 2..];
    }
    if !rest.is_empty() {
        out.push((None, rest.to_string()));
    }
    if n > MAX_PLACEHOLDERS {
        return Err(RuleError::Syntax {
            rule: rule.to_string(),
            part: Part::Message,
            message: format!("{n} placeholders, more than the {MAX_PLACEHOLDERS} allowed"),
        });
    }
    Ok(out)
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

fn valid_label(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Checks a rule's settings and parses its expressions.
pub(crate) fn compile_rule(env: &Env, rule: Rule) -> Result<CompiledRule, RuleError> {
    let name = rule.name.as_str();
    if !valid_name(name) {
        return Err(RuleError::InvalidName {
            rule: name.to_string(),
        });
    }
    for label in rule.labels.keys() {
        let reason = if !valid_label(label) {
            "is not a valid label name"
        } else if label == "rule" || label == "severity" {
            "is reserved"
        } else {
            continue;
        };
        return Err(RuleError::InvalidLabel {
            rule: name.to_string(),
            label: label.clone(),
            reason,
        });
    }
    if rule.message.len() > MAX_EXPR_LEN {
        return Err(RuleError::TooLong {
            rule: name.to_string(),
            part: Part::Message,
            len: rule.message.len(),
            max: MAX_EXPR_LEN,
        });
    }
    let mut needs = Needs::default();
    let mut prepare = |part: Part, source: &str| -> Result<IdedExpr, RuleError> {
        let mut e = parse(env, name, part, source)?;
        needs.visit(&e);
        add_ticks(&mut e);
        Ok(e)
    };
    let when = prepare(Part::When, &rule.when)?;
    let for_each = match &rule.for_each {
        Some(src) => Some(prepare(Part::ForEach, src)?),
        None => None,
    };
    let mut message = Vec::new();
    for (part, text) in split_template(name, &rule.message)? {
        message.push(match part {
            Some(part) => Segment::Expr(prepare(part, &text)?),
            None => Segment::Text(text),
        });
    }
    Ok(CompiledRule {
        rule,
        when,
        for_each,
        message,
        needs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn needs_of(src: &str) -> Needs {
        let e = parse(&Env::stdlib(), "t", Part::When, src).unwrap();
        let mut n = Needs::default();
        n.visit(&e);
        n
    }

    #[test]
    fn needs_down_to_tables() {
        let n = needs_of(
            r#"profile.security.sshd.exists(s, s.name == "x") && added["packages.packages"].size() > 0"#,
        );
        assert!(n.added && !n.changes && !n.removed && !n.host);
        assert_eq!(n.previous, ProfileNeeds::None);
        let ProfileNeeds::Parts(parts) = &n.profile else {
            panic!("{n:?}");
        };
        assert_eq!(
            parts.get("security"),
            Some(&TableNeeds::Some(BTreeSet::from(["sshd".to_string()])))
        );
        assert_eq!(parts.len(), 1);
    }

    #[test]
    fn bare_profile_needs_everything() {
        assert_eq!(needs_of("size(profile) > 0").profile, ProfileNeeds::All);
        let guarded = needs_of(r#"previous != null && previous.meta.agent_version != "" "#);
        assert!(
            matches!(guarded.previous, ProfileNeeds::Parts(ref p) if p.len() == 1 && p.contains_key("meta")),
            "a null test does not need the whole profile: {guarded:?}"
        );
        assert_eq!(
            needs_of("previous != null").previous,
            ProfileNeeds::Parts(BTreeMap::new())
        );
        assert_eq!(needs_of("previous == profile").previous, ProfileNeeds::All);
        let n = needs_of("profile.meta.hostname == host.name");
        assert!(n.host);
        assert!(matches!(n.profile, ProfileNeeds::Parts(ref p) if p.contains_key("meta")));
    }

    #[test]
    fn templates_split() {
        let parts = split_template("r", "a {{ x }} b {{y}}").unwrap();
        assert_eq!(
            parts,
            vec![
                (None, "a ".to_string()),
                (Some(Part::Placeholder(1)), "x".to_string()),
                (None, " b ".to_string()),
                (Some(Part::Placeholder(2)), "y".to_string()),
            ]
        );
        assert!(split_template("r", "a {{ x").is_err());
        assert!(split_template("r", "a {{ }}").is_err());
        assert_eq!(split_template("r", "no placeholders").unwrap().len(), 1);
    }

    #[test]
    fn names_and_labels() {
        assert!(valid_name("new-package_1"));
        assert!(!valid_name("New"));
        assert!(!valid_name(""));
        assert!(!valid_name(&"a".repeat(65)));
        assert!(valid_label("team_1"));
        assert!(!valid_label("1team"));
        assert!(!valid_label("a-b"));
    }

    #[test]
    fn depth_is_capped() {
        let deep = format!("{}1{}", "[".repeat(60), "]".repeat(60));
        let err = parse(&Env::stdlib(), "t", Part::When, &deep).unwrap_err();
        assert!(
            matches!(err, RuleError::TooDeep { .. } | RuleError::Syntax { .. }),
            "{err}"
        );
        let long_chain = vec!["1"; 200].join(" + ");
        let err = parse(&Env::stdlib(), "t", Part::When, &long_chain).unwrap_err();
        assert!(
            matches!(err, RuleError::TooDeep { .. } | RuleError::Syntax { .. }),
            "{err}"
        );
    }
}
