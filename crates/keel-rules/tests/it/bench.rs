//! Evaluation time of the built-in pack, on a real captured profile when given one:
//!
//! ```text
//! KEEL_RULES_BENCH_PROFILE=/tmp/x.keel KEEL_RULES_BENCH_PREVIOUS=/tmp/y.keel \
//!     cargo test --release -p keel-rules --test it -- --ignored --nocapture bench
//! ```
//!
//! Without a profile it uses a synthetic one of the same order of size (800 packages, 50 users,
//! 300 units, 400 files).

#![allow(clippy::print_stderr)]

use std::time::Instant;

use keel_profile::{diff, DiffOptions, File, Profile, ProfileFile};
use keel_rules::{Input, RuleSet};

use crate::support::{base, builtin, host, pkg, unit, user};

fn load(var: &str) -> Option<Profile> {
    let path = std::env::var_os(var)?;
    let bytes = std::fs::read(&path).expect("read profile");
    Some(ProfileFile::decode(&bytes).expect("decode profile").profile)
}

fn synthetic() -> Profile {
    let mut p = base();
    p.packages.packages = (0..800).map(|i| pkg(&format!("lib{i}"), "1.0-1")).collect();
    p.users.users = (0..50).map(|i| user(&format!("u{i}"), 1000 + i)).collect();
    p.services.units = (0..300)
        .map(|i| unit(&format!("s{i}.service"), "enabled"))
        .collect();
    p.files.files = (0..400)
        .map(|i| File {
            path: format!("/etc/f{i}"),
            kind: "file".into(),
            ..File::default()
        })
        .collect();
    p
}

fn time(set: &RuleSet, input: &Input<'_>, n: u32) -> f64 {
    let t = Instant::now();
    for _ in 0..n {
        let e = set.evaluate(input);
        assert!(e.errors.is_empty(), "{:?}", e.errors);
    }
    t.elapsed().as_secs_f64() * 1e6 / f64::from(n)
}

#[test]
#[ignore = "a measurement, not a check: run with --ignored --nocapture"]
fn bench_builtin_pack() {
    let new = load("KEEL_RULES_BENCH_PROFILE").unwrap_or_else(synthetic);
    let mut old = load("KEEL_RULES_BENCH_PREVIOUS").unwrap_or_else(|| new.clone());
    if old == new {
        // A typical steady-state change: a package upgraded, one installed.
        old.packages.packages.pop();
        if let Some(p) = old.packages.packages.first_mut() {
            p.version.push_str("~old");
        }
    }
    let set = builtin();
    let h = host();
    let n = 2000;
    let changes = diff(&old, &new, DiffOptions::default());
    let t = Instant::now();
    for _ in 0..20 {
        std::hint::black_box(diff(&old, &new, DiffOptions::default()));
    }
    let diff_us = t.elapsed().as_secs_f64() * 1e6 / 20.0;
    let steady = Input {
        profile: &new,
        previous: Some(&old),
        changes: &changes,
        host: &h,
    };
    let first = Input {
        profile: &new,
        previous: None,
        changes: &[],
        host: &h,
    };
    let same = Input {
        profile: &new,
        previous: Some(&new),
        changes: &[],
        host: &h,
    };
    let fired = set.evaluate(&steady).firings.len();
    eprintln!(
        "profile: {} packages, {} users, {} units, {} files, {} changes (diff took {diff_us:.0} µs)",
        new.packages.packages.len(),
        new.users.users.len(),
        new.services.units.len(),
        new.files.files.len(),
        changes.len()
    );
    eprintln!(
        "built-in pack ({} rules), {fired} firings, per profile:",
        set.len()
    );
    eprintln!("  with changes:  {:.1} µs", time(&set, &steady, n));
    eprintln!("  no changes:    {:.1} µs", time(&set, &same, n));
    eprintln!("  first profile: {:.1} µs", time(&set, &first, n));
    for (label, when) in [
        ("nothing", "true"),
        ("changes", "changes.size() >= 0"),
        ("added", "added.size() > 0"),
        ("changed", "changed.size() > 0"),
        ("profile.collectors", "profile.collectors.size() > 0"),
        ("profile.security.sshd", "profile.security.sshd.size() >= 0"),
        (
            "previous.meta",
            "previous != null && previous.meta.agent_version != ''",
        ),
    ] {
        let one = crate::support::rule(&format!(
            "name = \"x\"\nseverity = \"info\"\nwhen = \"{when}\"\nmessage = \"x\""
        ));
        eprintln!(
            "    one rule reading {label}: {:.1} µs",
            time(&one, &same, n)
        );
    }
    let all = crate::support::rule(
        r#"name = "whole"
severity = "info"
when = "size(profile) > 0 && size(previous) > 0"
message = "x""#,
    );
    eprintln!(
        "  a rule reading whole profile and previous: {:.1} µs",
        time(&all, &steady, 200)
    );
}
