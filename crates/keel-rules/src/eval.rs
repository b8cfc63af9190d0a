//! Evaluating a rule set against one incoming profile.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cel::common::types::{CelBool, CelList};
use cel::{Context, Env, ExecutionError, Value};
use keel_profile::{diff, Change, DiffOptions, Profile};
use serde::{Deserialize, Serialize};

use cel::common::ast::IdedExpr;

use crate::compile::{compile_rule, CompiledRule, Needs, Segment, TICK};
use crate::error::{Part, RuleError};
use crate::rule::{Rule, Severity};
use crate::values::{item_key, val_text, Prepared};

/// The host a profile belongs to, as the server knows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HostInfo {
    /// The host's name.
    pub name: String,
    /// Labels the administrator gave the host (`role = "db"`).
    pub labels: BTreeMap<String, String>,
}

/// What one evaluation looks at.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    /// The profile that just arrived.
    pub profile: &'a Profile,
    /// The host's profile before it, if any.
    pub previous: Option<&'a Profile>,
    /// The changes from `previous` to `profile` (empty when there is no previous profile).
    /// Volatile changes are left out of every variable.
    pub changes: &'a [Change],
    /// The host.
    pub host: &'a HostInfo,
}

/// Time limits of an evaluation. The CEL crate cannot estimate an expression's cost, so the
/// limits are enforced while it runs (see the crate documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The most one rule may take; a rule that takes longer fails with
    /// [`RuleError::Timeout`], and the next rule runs.
    pub rule_timeout: Duration,
    /// The most all rules together may take for one profile; rules whose turn comes after it
    /// fail with [`RuleError::Skipped`].
    pub profile_budget: Duration,
    /// The most firings one rule may produce for one profile; the rest are dropped and an
    /// error reports it.
    pub max_firings_per_rule: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            rule_timeout: Duration::from_millis(50),
            profile_budget: Duration::from_millis(250),
            max_firings_per_rule: 1000,
        }
    }
}

/// One alert-to-be: a rule that fired, for one item when it has `for_each`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Firing {
    /// The rule's name.
    pub rule: String,
    /// The rule's severity.
    pub severity: Severity,
    /// The rule's labels, plus `rule` and `severity`.
    pub labels: BTreeMap<String, String>,
    /// The rendered message.
    pub message: String,
    /// A stable identity of the `for_each` element, for the alert fingerprint: a row's
    /// natural key, a change's `section.table:key[#field]`, a scalar's text, or a digest.
    /// `None` for rules without `for_each`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item_key: Option<String>,
}

/// The outcome of evaluating a rule set against one profile.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Evaluation {
    /// Every firing, in rule order, then `for_each` order.
    pub firings: Vec<Firing>,
    /// Rules that could not be evaluated, with the reason: they neither fired nor are known
    /// not to fire.
    pub errors: Vec<(String, RuleError)>,
}

/// A set of compiled rules, ready to evaluate against many profiles. It is `Send + Sync`:
/// a server compiles it once and shares it between workers.
#[derive(Clone)]
pub struct RuleSet {
    rules: Vec<CompiledRule>,
    env: Arc<Env>,
    needs: Needs,
    limits: Limits,
}

impl std::fmt::Debug for RuleSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuleSet")
            .field(
                "rules",
                &self.rules.iter().map(|c| &c.rule.name).collect::<Vec<_>>(),
            )
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

fn new_env() -> Arc<Env> {
    Arc::new(Env::stdlib())
}

impl RuleSet {
    /// Compiles `rules`, refusing the whole set at the first broken rule.
    pub fn compile(rules: Vec<Rule>) -> Result<RuleSet, RuleError> {
        let (set, mut errors) = RuleSet::compile_each(rules);
        if errors.is_empty() {
            Ok(set)
        } else {
            Err(errors.swap_remove(0))
        }
    }

    /// Compiles every rule it can: the set holds the good rules, and each broken one is
    /// returned with its reason (a repeated name is broken the second time).
    pub fn compile_each(rules: Vec<Rule>) -> (RuleSet, Vec<RuleError>) {
        let env = new_env();
        let mut compiled: Vec<CompiledRule> = Vec::with_capacity(rules.len());
        let mut errors = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for rule in rules {
            if !seen.insert(rule.name.clone()) {
                errors.push(RuleError::DuplicateName {
                    rule: rule.name.clone(),
                });
                continue;
            }
            match compile_rule(&env, rule) {
                Ok(c) => compiled.push(c),
                Err(e) => errors.push(e),
            }
        }
        let mut needs = Needs::default();
        for c in compiled.iter().filter(|c| c.rule.enabled) {
            needs.merge(&c.needs);
        }
        (
            RuleSet {
                rules: compiled,
                env,
                needs,
                limits: Limits::default(),
            },
            errors,
        )
    }

    /// The same rules with other time limits.
    #[must_use]
    pub fn with_limits(mut self, limits: Limits) -> RuleSet {
        self.limits = limits;
        self
    }

    /// The time limits in force.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// The rules, in order.
    pub fn rules(&self) -> impl Iterator<Item = &Rule> {
        self.rules.iter().map(|c| &c.rule)
    }

    /// How many rules the set holds.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether the set holds no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Checks `rule` the way a server does when a rule is saved: it must compile, and evaluate
    /// without error against `sample` as given, as the host's first profile (no `previous`),
    /// with everything in `sample.profile` newly added, and with everything removed. The CEL
    /// crate has no type checker, so an unknown field, a misspelt table or a `when` that gives
    /// a string is only found by running the rule; running it against a real stored profile
    /// finds them. A field of `changed` entries is only exercised when `sample.changes` has
    /// such changes.
    pub fn check_against(rule: &Rule, sample: &Input<'_>) -> Result<(), RuleError> {
        let mut rule = rule.clone();
        rule.enabled = true;
        let set = RuleSet::compile(vec![rule])?;
        let empty = Profile::default();
        let opts = DiffOptions::default();
        let all_added = diff(&empty, sample.profile, opts);
        let all_removed = diff(sample.profile, &empty, opts);
        let passes = [
            *sample,
            Input {
                previous: None,
                changes: &[],
                ..*sample
            },
            Input {
                previous: Some(&empty),
                changes: &all_added,
                ..*sample
            },
            Input {
                profile: &empty,
                previous: Some(sample.profile),
                changes: &all_removed,
                host: sample.host,
            },
        ];
        for input in &passes {
            if let Some((_, e)) = set.evaluate(input).errors.into_iter().next() {
                return Err(e);
            }
        }
        Ok(())
    }

    /// Evaluates every enabled rule against `input`. Variables are built once, and only those
    /// (down to the profile tables) that some enabled rule mentions.
    pub fn evaluate(&self, input: &Input<'_>) -> Evaluation {
        let mut out = Evaluation::default();
        if !self.rules.iter().any(|r| r.rule.enabled) {
            return out;
        }
        let prepared = Prepared::new(input, &self.needs);
        let clock = Arc::new(Clock::new());
        let mut ctx = Context::with_env(Arc::clone(&self.env));
        let tick_clock = Arc::clone(&clock);
        // `@tick` cannot clash with a standard overload: `@` is not valid in CEL names.
        let _ = ctx.add_function(TICK, move || -> Result<Value, ExecutionError> {
            if tick_clock.check() {
                Ok(Value::Bool(true))
            } else {
                Err(ExecutionError::function_error(
                    "deadline",
                    "the rule's time limit was reached",
                ))
            }
        });
        prepared.bind(&mut ctx, input, &self.needs);

        let start = Instant::now();
        let budget = self.limits.profile_budget;
        for c in self.rules.iter().filter(|c| c.rule.enabled) {
            let spent = start.elapsed();
            if spent >= budget {
                out.errors.push((
                    c.rule.name.clone(),
                    RuleError::Skipped {
                        rule: c.rule.name.clone(),
                        budget,
                    },
                ));
                continue;
            }
            let limit = self.limits.rule_timeout.min(budget.saturating_sub(spent));
            clock.arm(limit);
            let mut run = RuleRun {
                rule: c,
                clock: &clock,
                limit,
                max_firings: self.limits.max_firings_per_rule,
                firings: Vec::new(),
                overflow: None,
            };
            match run.run(&ctx) {
                Ok(()) => out.firings.append(&mut run.firings),
                Err(e) => out.errors.push((c.rule.name.clone(), e)),
            }
            if let Some(e) = run.overflow {
                out.errors.push((c.rule.name.clone(), e));
            }
        }
        out
    }
}

/// The deadline the `@tick` function enforces, re-armed for each rule.
#[derive(Debug)]
struct Clock {
    origin: Instant,
    /// Nanoseconds after `origin` at which time is up.
    deadline_ns: AtomicU64,
    expired: AtomicBool,
}

impl Clock {
    fn new() -> Self {
        Clock {
            origin: Instant::now(),
            deadline_ns: AtomicU64::new(u64::MAX),
            expired: AtomicBool::new(false),
        }
    }

    fn arm(&self, limit: Duration) {
        let now = self.origin.elapsed();
        let deadline = now.saturating_add(limit).as_nanos();
        self.deadline_ns.store(
            u64::try_from(deadline).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        self.expired.store(false, Ordering::Relaxed);
    }

    /// False, from then on, once the deadline has passed.
    fn check(&self) -> bool {
        if self.expired.load(Ordering::Relaxed) {
            return false;
        }
        let now = u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX);
        if now >= self.deadline_ns.load(Ordering::Relaxed) {
            self.expired.store(true, Ordering::Relaxed);
            return false;
        }
        true
    }

    fn expired(&self) -> bool {
        self.expired.load(Ordering::Relaxed)
    }
}

/// One rule's evaluation.
struct RuleRun<'r> {
    rule: &'r CompiledRule,
    clock: &'r Clock,
    limit: Duration,
    max_firings: usize,
    firings: Vec<Firing>,
    /// Set when `for_each` gave more elements than may fire; the first ones still fire.
    overflow: Option<RuleError>,
}

impl RuleRun<'_> {
    fn name(&self) -> String {
        self.rule.rule.name.clone()
    }

    fn timeout(&self, part: Part) -> RuleError {
        RuleError::Timeout {
            rule: self.name(),
            part,
            limit: self.limit,
        }
    }

    /// Evaluates `expr`. A clock failure anywhere, even one an `||` or `&&` absorbed, turns
    /// the result into a timeout: the value may be wrong.
    fn eval<'e, 'v>(
        &self,
        expr: &'e IdedExpr,
        ctx: &'e Context<'_, 'v>,
        part: Part,
    ) -> Result<cel::common::value::CowVal<'e, 'v>, RuleError> {
        let result = Value::resolve_val(expr, ctx);
        if self.clock.expired() || !self.clock.check() {
            return Err(self.timeout(part));
        }
        result.map_err(|e| RuleError::Eval {
            rule: self.name(),
            part,
            message: e.to_string(),
        })
    }

    fn run(&mut self, ctx: &Context<'_, '_>) -> Result<(), RuleError> {
        let when = self.eval(&self.rule.when, ctx, Part::When)?;
        let Some(fire) = when.downcast_ref::<CelBool>().map(|b| *b.inner()) else {
            return Err(RuleError::WrongType {
                rule: self.name(),
                part: Part::When,
                want: "bool",
                got: when.get_type().name().to_string(),
                hint: "compare with ==, !=, <, in or has(), or test a list with .size() > 0 or .exists()",
            });
        };
        if !fire {
            return Ok(());
        }
        let Some(for_each) = &self.rule.for_each else {
            let message = self.render(ctx)?;
            self.push(message, None);
            return Ok(());
        };
        let list = self.eval(for_each, ctx, Part::ForEach)?;
        let Some(items) = list.downcast_ref::<CelList>() else {
            return Err(RuleError::WrongType {
                rule: self.name(),
                part: Part::ForEach,
                want: "list",
                got: list.get_type().name().to_string(),
                hint: "give a list, such as added[\"packages.packages\"] or profile.users.users.filter(u, u.uid == 0)",
            });
        };
        for (i, item) in items.inner().iter().enumerate() {
            if i == self.max_firings {
                self.overflow = Some(RuleError::TooManyFirings {
                    rule: self.name(),
                    count: items.inner().len(),
                    max: self.max_firings,
                });
                break;
            }
            let mut scope = ctx.new_inner_scope();
            scope.add_variable_as_val("item", item.clone_as_boxed());
            let message = self.render(&scope)?;
            self.push(message, Some(item_key(item.as_ref())));
        }
        Ok(())
    }

    fn render(&self, ctx: &Context<'_, '_>) -> Result<String, RuleError> {
        let mut out = String::new();
        let mut n = 0;
        for seg in &self.rule.message {
            match seg {
                Segment::Text(t) => out.push_str(t),
                Segment::Expr(e) => {
                    n += 1;
                    let v = self.eval(e, ctx, Part::Placeholder(n))?;
                    val_text(v.as_ref(), &mut out);
                }
            }
        }
        Ok(out)
    }

    fn push(&mut self, message: String, item_key: Option<String>) {
        let r = &self.rule.rule;
        let mut labels = r.labels.clone();
        labels.insert("rule".into(), r.name.clone());
        labels.insert("severity".into(), r.severity.as_str().into());
        self.firings.push(Firing {
            rule: r.name.clone(),
            severity: r.severity,
            labels,
            message,
            item_key,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_set_is_send_and_sync() {
        fn assert<T: Send + Sync>() {}
        assert::<RuleSet>();
    }

    #[test]
    fn builtin_pack_builds_only_small_parts_of_the_profiles() {
        use crate::compile::{ProfileNeeds, TableNeeds};
        let set = RuleSet::compile(crate::builtin_rules()).unwrap();
        let ProfileNeeds::Parts(profile) = &set.needs.profile else {
            panic!("{:?}", set.needs.profile);
        };
        assert_eq!(
            profile.keys().map(String::as_str).collect::<Vec<_>>(),
            ["collectors", "meta", "security"]
        );
        assert_eq!(
            profile["security"],
            TableNeeds::Some(["sshd".to_string()].into())
        );
        let ProfileNeeds::Parts(previous) = &set.needs.previous else {
            panic!("{:?}", set.needs.previous);
        };
        assert_eq!(previous.keys().collect::<Vec<_>>(), ["meta"]);
        assert!(!set.needs.host);
    }

    #[test]
    fn clock_expires_and_rearms() {
        let c = Clock::new();
        c.arm(Duration::ZERO);
        assert!(!c.check());
        assert!(c.expired());
        c.arm(Duration::from_secs(60));
        assert!(!c.expired());
        assert!(c.check());
    }
}
