//! Broken rules are refused with their name, the part at fault and the reason.

use keel_profile::{diff, DiffOptions};
use keel_rules::{
    builtin_rules, rules_from_toml, Input, Part, Rule, RuleError, RuleSet, Severity, MAX_EXPR_LEN,
};

use crate::support::{base, host, pkg};

fn r(name: &str, when: &str, message: &str) -> Rule {
    Rule {
        name: name.into(),
        description: None,
        severity: Severity::Warning,
        labels: std::collections::BTreeMap::default(),
        when: when.into(),
        for_each: None,
        message: message.into(),
        enabled: true,
    }
}

/// `check_against` on a sample like the server's: the host's last profile and its changes.
fn check(rule: &Rule) -> Result<(), RuleError> {
    let old = base();
    let mut new = old.clone();
    new.packages.packages.push(pkg("vim", "9.0"));
    new.packages.packages[0].version = "5.3".into();
    let changes = diff(&old, &new, DiffOptions::default());
    let h = host();
    RuleSet::check_against(
        rule,
        &Input {
            profile: &new,
            previous: Some(&old),
            changes: &changes,
            host: &h,
        },
    )
}

#[test]
fn syntax_error_is_refused_at_compile_with_the_rule_name() {
    let err = RuleSet::compile(vec![
        r("ok", "true", "m"),
        r("broken-rule", "profile.packages.exists(p, ", "m"),
    ])
    .unwrap_err();
    assert!(
        matches!(
            err,
            RuleError::Syntax {
                part: Part::When,
                ..
            }
        ),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(text.contains("rule `broken-rule`"), "{text}");
    assert!(text.contains("`when`"), "{text}");
    assert!(text.contains("<input>:1:"), "the parser's position: {text}");
    assert!(text.contains("\nhint: "), "{text}");

    let mut fe = r("fe", "true", "m");
    fe.for_each = Some("[1, 2".into());
    let err = RuleSet::compile(vec![fe]).unwrap_err();
    assert!(
        matches!(
            err,
            RuleError::Syntax {
                part: Part::ForEach,
                ..
            }
        ),
        "{err:?}"
    );

    let err = RuleSet::compile(vec![r("msg", "true", "a {{ 1 + }} b")]).unwrap_err();
    assert!(
        matches!(
            err,
            RuleError::Syntax {
                part: Part::Placeholder(1),
                ..
            }
        ),
        "{err:?}"
    );
    let err = RuleSet::compile(vec![r("msg", "true", "a {{ 1 }} b {{ x")]).unwrap_err();
    assert!(
        matches!(
            err,
            RuleError::Syntax {
                part: Part::Message,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("never closed"), "{err}");
}

#[test]
fn compile_each_keeps_the_good_rules() {
    let (set, errors) = RuleSet::compile_each(vec![
        r("a", "true", "m"),
        r("b", "1 +", "m"),
        r("a", "true", "m"),
        r("Bad Name", "true", "m"),
        r("c", "false", "m"),
    ]);
    assert_eq!(
        set.rules().map(|r| r.name.as_str()).collect::<Vec<_>>(),
        ["a", "c"]
    );
    let names: Vec<Option<&str>> = errors.iter().map(RuleError::rule).collect();
    assert_eq!(names, [Some("b"), Some("a"), Some("Bad Name")]);
    assert!(matches!(errors[1], RuleError::DuplicateName { .. }));
    assert!(matches!(errors[2], RuleError::InvalidName { .. }));
}

#[test]
fn labels_must_be_valid_and_not_reserved() {
    for (label, reason) in [
        ("severity", "reserved"),
        ("rule", "reserved"),
        ("a-b", "not a valid"),
    ] {
        let mut rule = r("l", "true", "m");
        rule.labels.insert(label.into(), "x".into());
        let err = RuleSet::compile(vec![rule]).unwrap_err();
        assert!(err.to_string().contains(reason), "{label}: {err}");
    }
}

#[test]
fn oversized_and_overdeep_expressions_are_refused() {
    let long = format!("{} == 1", "1 + ".repeat(MAX_EXPR_LEN / 4));
    let err = RuleSet::compile(vec![r("long", &long, "m")]).unwrap_err();
    assert!(
        matches!(
            err,
            RuleError::TooLong {
                part: Part::When,
                ..
            }
        ),
        "{err:?}"
    );
    let err =
        RuleSet::compile(vec![r("longmsg", "true", &"x".repeat(MAX_EXPR_LEN + 1))]).unwrap_err();
    assert!(
        matches!(
            err,
            RuleError::TooLong {
                part: Part::Message,
                ..
            }
        ),
        "{err:?}"
    );
    let deep = format!("{}true{}", "!(".repeat(100), ")".repeat(100));
    let err = RuleSet::compile(vec![r("deep", &deep, "m")]).unwrap_err();
    assert!(
        matches!(err, RuleError::TooDeep { .. } | RuleError::Syntax { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("rule `deep`"), "{err}");
}

#[test]
fn check_against_refuses_a_nonexistent_field() {
    for when in [
        r#"profile.packages.packages.exists(p, p.nmae == "telnetd")"#,
        "profile.packages.pakages.size() > 0",
        "profile.pakages.packages.size() > 0",
        r#"added["packages.pakages"].size() > 0"#,
        r#"changes.exists(c, c.kindd == "added")"#,
        r#"changed["packages.packages"].exists(c, c.fieldd == "version")"#,
    ] {
        let err = check(&r("typo", when, "m")).unwrap_err();
        assert!(
            matches!(
                err,
                RuleError::Eval {
                    part: Part::When,
                    ..
                }
            ),
            "{when}: {err:?}"
        );
        assert!(err.to_string().contains("rule `typo`"), "{err}");
        assert!(err.to_string().contains("hint:"), "{err}");
    }
}

#[test]
fn check_against_finds_typos_behind_empty_lists_and_guards() {
    // `added` is empty in steady state; the everything-added pass reaches the row.
    let err = check(&r(
        "guarded",
        r#"added["storage.disks"].exists(d, d.serail == "x")"#,
        "m",
    ));
    assert!(matches!(err, Err(RuleError::Eval { .. })), "{err:?}");
    // `previous` used without a guard breaks on a host's first profile.
    let err = check(&r(
        "unguarded",
        "profile.meta.agent_version != previous.meta.agent_version",
        "m",
    ));
    assert!(matches!(err, Err(RuleError::Eval { .. })), "{err:?}");
    // A placeholder only evaluated when the rule fires.
    let mut rule = r("msg", "true", "m");
    rule.for_each = Some(r#"added["packages.packages"]"#.into());
    rule.message = "{{ item.nmae }}".into();
    let err = check(&rule).unwrap_err();
    assert!(
        matches!(
            err,
            RuleError::Eval {
                part: Part::Placeholder(1),
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn check_against_refuses_wrong_types() {
    let err = check(&r("string", "profile.meta.hostname", "m")).unwrap_err();
    assert!(
        matches!(&err, RuleError::WrongType { part: Part::When, want: "bool", got, .. } if got == "string"),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("must evaluate to a bool, but gave a string"),
        "{err}"
    );
    let mut rule = r("map", "true", "m");
    rule.for_each = Some(r#"{"a": 1}"#.into());
    let err = check(&rule).unwrap_err();
    assert!(
        matches!(
            err,
            RuleError::WrongType {
                part: Part::ForEach,
                want: "list",
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn check_against_accepts_good_rules_even_disabled_ones() {
    for rule in builtin_rules() {
        check(&rule).unwrap_or_else(|e| panic!("{e}"));
    }
    let mut off = r("off", "profile.nope", "m");
    off.enabled = false;
    assert!(check(&off).is_err(), "a disabled rule is still checked");
}

#[test]
fn toml_loading_rejects_unknown_keys_and_names_the_file() {
    let err = rules_from_toml(
        "[[rule]]\nname = \"x\"\nseverity = \"info\"\nmessage = \"m\"\nfor-each = \"[]\"\n",
        "/etc/keel/rules.toml",
    )
    .unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with("cannot read rules from /etc/keel/rules.toml"),
        "{text}"
    );
    assert!(text.contains("for-each"), "{text}");
    assert!(text.contains("line 5"), "{text}");
    // A typo at the top level too.
    let err = rules_from_toml("[[rules]]\nname = \"x\"\n", "f").unwrap_err();
    assert!(err.to_string().contains("rules"), "{err}");
    // A missing required key.
    let err = rules_from_toml("[[rule]]\nname = \"x\"\nmessage = \"m\"\n", "f").unwrap_err();
    assert!(err.to_string().contains("severity"), "{err}");
}

#[test]
fn documented_examples_compile_and_pass_their_check() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/rules.md");
    let doc = std::fs::read_to_string(path).expect("docs/rules.md");
    let blocks: Vec<&str> = doc
        .split("```toml\n")
        .skip(1)
        .map(|b| b.split("```").next().unwrap_or(""))
        .collect();
    assert!(blocks.len() >= 2, "{}", blocks.len());
    for block in blocks {
        let rules = rules_from_toml(block, "docs/rules.md").unwrap_or_else(|e| panic!("{e}"));
        assert!(!rules.is_empty());
        for rule in &rules {
            check(rule).unwrap_or_else(|e| panic!("{e}"));
        }
    }
}

#[test]
fn builtin_toml_is_the_builtin_pack() {
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/rules/builtin.toml");
    let text = std::fs::read_to_string(file).unwrap();
    assert_eq!(text, keel_rules::BUILTIN_TOML);
    assert_eq!(
        rules_from_toml(&text, "builtin.toml").unwrap(),
        builtin_rules()
    );
}
