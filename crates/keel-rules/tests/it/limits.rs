//! Costly rules are stopped by their deadline: an error, never a hang, and the other rules
//! still run.

use std::time::{Duration, Instant};

use keel_profile::{File, Profile};
use keel_rules::{Limits, Part, Rule, RuleError, RuleSet, Severity};

use crate::support::{base, one, run};

fn with_files(n: usize) -> Profile {
    let mut p = base();
    p.files.files = (0..n)
        .map(|i| File {
            path: format!("/etc/app/conf.d/{i:05}.conf"),
            kind: "file".into(),
            mode: 0o644,
            size: 100,
            ..File::default()
        })
        .collect();
    p
}

fn r(name: &str, when: &str) -> Rule {
    Rule {
        name: name.into(),
        description: None,
        severity: Severity::Warning,
        labels: std::collections::BTreeMap::default(),
        when: when.into(),
        for_each: None,
        message: name.into(),
        enabled: true,
    }
}

const QUADRATIC: &str =
    "profile.files.files.map(a, profile.files.files.map(b, a.path + b.path)).size() > 0";

#[test]
fn quadratic_rule_is_cut_off_and_the_next_rule_runs() {
    let p = with_files(3000);
    let set = RuleSet::compile(vec![r("quadratic", QUADRATIC), r("cheap", "true")])
        .unwrap()
        .with_limits(Limits {
            rule_timeout: Duration::from_millis(50),
            ..Limits::default()
        });
    let t = Instant::now();
    let e = run(&set, None, &p);
    let took = t.elapsed();
    assert!(took < Duration::from_secs(3), "took {took:?}");
    assert!(
        matches!(&e.errors[..], [(n, RuleError::Timeout { part: Part::When, limit, .. })] if n == "quadratic" && *limit == Duration::from_millis(50)),
        "{:?}",
        e.errors
    );
    let text = e.errors[0].1.to_string();
    assert!(text.contains("stopped after 50 ms"), "{text}");
    assert_eq!(
        e.firings
            .iter()
            .map(|f| (f.rule.clone(), f.item_key.clone(), f.message.clone()))
            .collect::<Vec<_>>(),
        vec![one("cheap", None, "cheap")]
    );
}

#[test]
fn deadline_reaches_every_kind_of_loop() {
    let p = with_files(3000);
    for when in [
        "profile.files.files.exists(a, profile.files.files.exists(b, a.path + b.path == 'x'))",
        "profile.files.files.all(a, profile.files.files.all(b, a.path != b.path + 'x'))",
        "profile.files.files.filter(a, profile.files.files.filter(b, a.path == b.path + 'x').size() > 0).size() > 0",
        "profile.files.files.exists_one(a, profile.files.files.exists_one(b, a.path == b.path))",
        "profile.files.files.map(a, profile.files.files.exists(b, b.path == a.path)).size() > 0",
        // An error absorbed by `||` must not turn a stopped rule into a firing.
        "profile.files.files.map(a, profile.files.files.map(b, a.path + b.path)).size() > 0 || true",
    ] {
        let set = RuleSet::compile(vec![r("slow", when)]).unwrap().with_limits(Limits {
            rule_timeout: Duration::from_millis(20),
            ..Limits::default()
        });
        let t = Instant::now();
        let e = run(&set, None, &p);
        assert!(t.elapsed() < Duration::from_secs(3), "{when}: {:?}", t.elapsed());
        assert!(e.firings.is_empty(), "{when}");
        assert!(
            matches!(&e.errors[..], [(_, RuleError::Timeout { .. })]),
            "{when}: {:?}",
            e.errors
        );
    }
}

#[test]
fn deadline_in_for_each_and_messages() {
    let p = with_files(3000);
    let mut rule = r("msg", "true");
    rule.for_each = Some("[1]".into());
    rule.message =
        "{{ profile.files.files.map(a, profile.files.files.map(b, a.path + b.path)).size() }}"
            .into();
    let set = RuleSet::compile(vec![rule]).unwrap().with_limits(Limits {
        rule_timeout: Duration::from_millis(20),
        ..Limits::default()
    });
    let t = Instant::now();
    let e = run(&set, None, &p);
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert!(
        matches!(
            &e.errors[..],
            [(
                _,
                RuleError::Timeout {
                    part: Part::Placeholder(1),
                    ..
                }
            )]
        ),
        "{:?}",
        e.errors
    );
}

#[test]
fn profile_budget_skips_the_rest() {
    let p = with_files(3000);
    let set = RuleSet::compile(vec![
        r("slow1", QUADRATIC),
        r("slow2", QUADRATIC),
        r("late", "true"),
    ])
    .unwrap()
    .with_limits(Limits {
        rule_timeout: Duration::from_millis(30),
        profile_budget: Duration::from_millis(50),
        ..Limits::default()
    });
    let e = run(&set, None, &p);
    let kinds: Vec<(&str, &str)> = e
        .errors
        .iter()
        .map(|(n, e)| {
            (
                n.as_str(),
                match e {
                    RuleError::Timeout { .. } => "timeout",
                    RuleError::Skipped { .. } => "skipped",
                    _ => "other",
                },
            )
        })
        .collect();
    // slow2 runs out of time, or of budget before it starts on a busy machine.
    assert_eq!(kinds[0], ("slow1", "timeout"));
    assert!(
        matches!(kinds[1], ("slow2", "timeout" | "skipped")),
        "{kinds:?}"
    );
    assert_eq!(kinds[2], ("late", "skipped"));
    assert_eq!(kinds.len(), 3);
    assert!(e.firings.is_empty());
}

#[test]
fn fast_rules_are_not_slowed_down_by_the_clock() {
    // A linear scan of 3000 rows, well inside the limit, completes and fires.
    let p = with_files(3000);
    let set = RuleSet::compile(vec![r(
        "linear",
        "profile.files.files.filter(f, f.path.endsWith('.conf')).size() == 3000",
    )])
    .unwrap();
    let e = run(&set, None, &p);
    assert!(e.errors.is_empty(), "{:?}", e.errors);
    assert_eq!(e.firings.len(), 1);
}

#[test]
fn too_many_firings_are_capped_with_an_error() {
    let p = with_files(1500);
    let mut rule = r("every-file", "true");
    rule.for_each = Some("profile.files.files".into());
    rule.message = "{{ item.path }}".into();
    let set = RuleSet::compile(vec![rule]).unwrap().with_limits(Limits {
        max_firings_per_rule: 1000,
        ..Limits::default()
    });
    let e = run(&set, None, &p);
    assert_eq!(e.firings.len(), 1000);
    assert_eq!(
        e.firings[0].item_key.as_deref(),
        Some("/etc/app/conf.d/00000.conf")
    );
    assert!(
        matches!(
            &e.errors[..],
            [(
                _,
                RuleError::TooManyFirings {
                    count: 1500,
                    max: 1000,
                    ..
                }
            )]
        ),
        "{:?}",
        e.errors
    );
}

#[test]
fn deadline_reaches_copies_without_loops() {
    let p = with_files(3000);
    let repeated = format!(
        "[profile.files.files].map(f, [{}].size()).size() > 0",
        vec!["f"; 1300].join(", ")
    );
    let mapped = format!(
        "[profile.files.files].map(f, {{{}}}.size()).size() > 0",
        (0..400)
            .map(|i| format!("{i}: f"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let chained = format!(
        "[profile.files.files].map(f, ({}).size()).size() > 0",
        vec!["f"; 40].join(" + ")
    );
    for when in [repeated, mapped, chained] {
        let set = RuleSet::compile(vec![r("copies", &when)])
            .unwrap()
            .with_limits(Limits {
                rule_timeout: Duration::from_millis(20),
                ..Limits::default()
            });
        let t = Instant::now();
        let e = run(&set, None, &p);
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
        assert!(
            matches!(&e.errors[..], [(_, RuleError::Timeout { .. })]),
            "{:?}",
            e.errors
        );
    }
}
