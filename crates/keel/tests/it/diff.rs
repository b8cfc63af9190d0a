//! `keel diff`: a scripted set of changes to a real Debian root is reported, each one, and
//! nothing else.

use std::fs;

use serde_json::Value;

use crate::support::{
    keel, s, sh, show_json, DebianRoot, Keel, DISABLED_UNIT, EXTRA_PACKAGE, PURGE_PACKAGE,
};

/// One scripted change to the root: what it may legitimately show in a diff, and the change
/// it must show.
struct Action {
    name: &'static str,
    allows: Box<dyn Fn(&Value) -> bool>,
    produced: Box<dyn Fn(&Value) -> bool>,
}

fn is(c: &Value, section: &str, table: &str) -> bool {
    c["section"] == section && c["table"] == table
}

fn key(c: &Value) -> &str {
    s(c, "key")
}

/// The row a change added (`new`) or removed (`old`).
fn row<'a>(c: &'a Value, side: &str) -> &'a Value {
    &c[side]
}

/// The account databases `useradd` rewrites, with the backups (`passwd-`) it leaves.
const ACCOUNT_FILES: &[&str] = &[
    "/etc/passwd",
    "/etc/group",
    "/etc/shadow",
    "/etc/gshadow",
    "/etc/subuid",
    "/etc/subgid",
];

fn account_file(path: &str) -> bool {
    ACCOUNT_FILES
        .iter()
        .any(|f| path == *f || path.strip_suffix('-') == Some(f))
}

const USER: &str = "keeltest";
const CRON_FILE: &str = "/etc/cron.d/keel-backup";
const CRON_COMMAND: &str = "/usr/local/bin/keel-backup --quiet";
const SYSCTL_FILE: &str = "/etc/sysctl.d/60-keel.conf";

/// Applies the scripted changes to `root` and returns them with their predicates.
fn script(root: &DebianRoot) -> Vec<Action> {
    let mut actions = Vec::new();

    // A new user, with a home directory (outside /etc) and its own group.
    root.chroot(&[
        "useradd",
        "--create-home",
        "--shell",
        "/bin/bash",
        "--comment",
        "Keel Test",
        USER,
    ]);
    actions.push(Action {
        name: "useradd",
        allows: Box::new(|c| {
            ((is(c, "users", "users") || is(c, "users", "groups")) && key(c) == USER)
                || ((is(c, "files", "files") || is(c, "files", "ignored_files"))
                    && account_file(key(c)))
                || (is(c, "security", "secrets") && account_file(key(c)))
        }),
        produced: Box::new(|c| {
            let u = row(c, "new");
            is(c, "users", "users")
                && c["kind"] == "added"
                && key(c) == USER
                && u["uid"].as_u64().is_some_and(|uid| uid >= 1000)
                && u["home"] == "/home/keeltest"
                && u["shell"] == "/bin/bash"
        }),
    });

    // An edited sshd_config.
    let sshd = root.read("/etc/ssh/sshd_config");
    assert!(
        sshd.contains("\nX11Forwarding yes\n"),
        "unexpected stock sshd_config"
    );
    root.write(
        "/etc/ssh/sshd_config",
        sshd.replace("\nX11Forwarding yes\n", "\nX11Forwarding no\n"),
    );
    let is_x11 =
        |c: &Value| is(c, "security", "sshd") && key(c).eq_ignore_ascii_case("x11forwarding");
    actions.push(Action {
        name: "edit sshd_config",
        allows: Box::new(move |c| {
            (is(c, "files", "files") && key(c) == "/etc/ssh/sshd_config") || is_x11(c)
        }),
        produced: Box::new(move |c| {
            is_x11(c)
                && ((c["kind"] == "changed"
                    && c["field"] == "value"
                    && c["old"] == "yes"
                    && c["new"] == "no")
                    || (c["kind"] == "added" && c["new"]["value"] == "no"))
        }),
    });

    // A new cron job.
    root.write(
        CRON_FILE,
        format!("# nightly\n17 3 * * * root {CRON_COMMAND}\n"),
    );
    actions.push(Action {
        name: "new /etc/cron.d file",
        allows: Box::new(|c| {
            (is(c, "files", "files") && key(c) == CRON_FILE)
                || (is(c, "schedules", "cron")
                    && (key(c).contains("keel-backup")
                        || s(row(c, "new"), "source").contains("keel-backup")))
        }),
        produced: Box::new(|c| {
            let j = row(c, "new");
            is(c, "schedules", "cron")
                && c["kind"] == "added"
                && j["command"] == CRON_COMMAND
                && j["schedule"] == "17 3 * * *"
                && j["user"] == "root"
                && s(j, "source").contains(CRON_FILE)
        }),
    });

    // A new sysctl setting.
    root.write(SYSCTL_FILE, "# less swapping\nvm.swappiness = 10\n");
    actions.push(Action {
        name: "new /etc/sysctl.d file",
        allows: Box::new(|c| {
            (is(c, "files", "files") && key(c) == SYSCTL_FILE)
                || (is(c, "kernel", "sysctl") && key(c) == "vm.swappiness")
        }),
        produced: Box::new(|c| {
            is(c, "kernel", "sysctl")
                && c["kind"] == "added"
                && key(c) == "vm.swappiness"
                && c["new"]["value"] == "10"
                && c["new"]["file"] == SYSCTL_FILE
        }),
    });

    // A package installed with dpkg in the chroot.
    let deb = root.extra_deb().to_str().expect("utf-8").to_string();
    let fields = sh(
        "dpkg-deb",
        &[
            "--show",
            "--showformat=${Package}:${Architecture} ${Version}",
            &deb,
        ],
    );
    let (installed_key, installed_version) =
        fields.trim().split_once(' ').expect("dpkg-deb fields");
    let (installed_key, installed_version) =
        (installed_key.to_string(), installed_version.to_string());
    assert!(installed_key.starts_with(&format!("{EXTRA_PACKAGE}:")));
    fs::copy(root.extra_deb(), root.join("/tmp/extra.deb")).expect("copy .deb into the root");
    root.chroot(&["dpkg", "--install", "/tmp/extra.deb"]);
    fs::remove_file(root.join("/tmp/extra.deb")).expect("remove .deb");
    let k = installed_key.clone();
    actions.push(Action {
        name: "dpkg --install",
        allows: Box::new(move |c| is(c, "packages", "packages") && key(c) == k),
        produced: Box::new(move |c| {
            is(c, "packages", "packages")
                && c["kind"] == "added"
                && key(c) == installed_key
                && c["new"]["version"] == installed_version.as_str()
        }),
    });

    // A package purged with dpkg in the chroot.
    let arch = sh("dpkg", &["--print-architecture"]).trim().to_string();
    let purged_key = format!("{PURGE_PACKAGE}:{arch}");
    root.chroot(&["dpkg", "--purge", PURGE_PACKAGE]);
    let k = purged_key.clone();
    actions.push(Action {
        name: "dpkg --purge",
        allows: Box::new(move |c| is(c, "packages", "packages") && key(c) == k),
        produced: Box::new(move |c| {
            is(c, "packages", "packages") && c["kind"] == "removed" && key(c) == purged_key
        }),
    });

    // A service enabled.
    let root_arg = format!("--root={}", root.str());
    sh("systemctl", &[&root_arg, "enable", DISABLED_UNIT]);
    actions.push(Action {
        name: "systemctl enable",
        allows: Box::new(|c| {
            (is(c, "services", "units") && key(c) == DISABLED_UNIT)
                || (is(c, "files", "files")
                    && key(c).starts_with("/etc/systemd/system/")
                    && key(c).ends_with(&format!("/{DISABLED_UNIT}")))
        }),
        produced: Box::new(|c| {
            is(c, "services", "units")
                && key(c) == DISABLED_UNIT
                && c["kind"] == "changed"
                && c["field"] == "unit_file_state"
                && c["old"] == "disabled"
                && c["new"] == "enabled"
        }),
    });

    actions
}

/// Every change must have exactly the documented keys and a consistent shape.
fn check_shape(c: &Value) {
    let obj = c
        .as_object()
        .unwrap_or_else(|| panic!("a change is not an object: {c}"));
    let keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    let mut expected = [
        "section",
        "table",
        "key",
        "kind",
        "field",
        "old",
        "new",
        "volatility",
    ];
    expected.sort_unstable();
    assert_eq!(keys, expected, "change has the wrong keys: {c}");
    for k in ["section", "table", "key"] {
        assert!(
            c[k].as_str().is_some_and(|v| !v.is_empty()),
            "{k} must be a non-empty string: {c}"
        );
    }
    assert!(
        matches!(
            s(c, "volatility"),
            "identity" | "config" | "runtime" | "volatile"
        ),
        "{c}"
    );
    match s(c, "kind") {
        "added" => assert!(
            c["field"].is_null() && c["old"].is_null() && c["new"].is_object(),
            "{c}"
        ),
        "removed" => assert!(
            c["field"].is_null() && c["new"].is_null() && c["old"].is_object(),
            "{c}"
        ),
        "changed" => assert!(c["field"].is_string() && c["old"] != c["new"], "{c}"),
        other => panic!("unknown change kind {other:?}: {c}"),
    }
}

fn diff_json(old: &std::path::Path, new: &std::path::Path, extra: &[&str]) -> (Option<i32>, Value) {
    let mut args = vec![
        "diff",
        old.to_str().unwrap(),
        new.to_str().unwrap(),
        "--format",
        "json",
    ];
    args.extend_from_slice(extra);
    let run = keel(&args);
    assert_ne!(run.code, Some(2), "`{}` failed: {}", run.what, run.stderr);
    (run.code, run.json())
}

#[test]
fn scripted_changes_are_reported_and_nothing_else() {
    let Some(root) = DebianRoot::new() else {
        return;
    };
    let keel_state = Keel::new();
    let out = tempfile::tempdir().unwrap();
    let before = out.path().join("before.keel");
    let after = out.path().join("after.keel");

    keel_state.capture_file(root.path(), &before, &[]);
    let actions = script(&root);
    keel_state.capture_file(
        root.path(),
        &after,
        &["--previous", before.to_str().unwrap()],
    );

    let (code, changes) = diff_json(&before, &after, &[]);
    assert_eq!(
        code,
        Some(1),
        "keel diff must exit 1 when there are changes"
    );
    let changes = changes
        .as_array()
        .expect("diff --format json prints an array")
        .clone();
    for c in &changes {
        check_shape(c);
    }
    let unexplained: Vec<&Value> = changes
        .iter()
        .filter(|c| !actions.iter().any(|a| (a.allows)(c)))
        .collect();
    assert!(
        unexplained.is_empty(),
        "changes no scripted action explains:\n{}",
        unexplained
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    );
    let all = changes
        .iter()
        .map(|c| format!("  {c}"))
        .collect::<Vec<_>>()
        .join("\n");
    for a in &actions {
        assert!(
            changes.iter().any(|c| (a.produced)(c)),
            "`{}` is not reported as expected; the diff was:\n{all}",
            a.name
        );
    }

    // The same changes through the JSON form of the old profile.
    let before_json = out.path().join("before.json");
    let shown = keel(&["show", before.to_str().unwrap(), "--format", "json"]);
    shown.expect_ok();
    fs::write(&before_json, &shown.stdout).unwrap();
    let (code, via_json) = diff_json(&before_json, &after, &[]);
    assert_eq!(code, Some(1));
    assert_eq!(
        via_json,
        Value::Array(changes.clone()),
        "JSON and binary profiles diff differently"
    );

    // The text form tells a person the same story.
    let text = keel(&["diff", before.to_str().unwrap(), after.to_str().unwrap()]);
    assert_eq!(text.code, Some(1), "{}", text.stderr);
    let text_out = text.stdout_str();
    for needle in [
        USER,
        EXTRA_PACKAGE,
        PURGE_PACKAGE,
        DISABLED_UNIT,
        "vm.swappiness",
        CRON_FILE,
    ] {
        assert!(
            text_out.contains(needle),
            "text diff does not mention {needle}:\n{text_out}"
        );
    }

    // The new profile chains to the old one.
    let old_doc = show_json(&before);
    let new_doc = show_json(&after);
    assert!(old_doc["hash"].is_string());
    assert_eq!(new_doc["profile"]["meta"]["previous"], old_doc["hash"]);
    assert!(old_doc["profile"]["meta"]["previous"].is_null());
}

#[test]
fn unchanged_root_diffs_empty_and_volatile_fields_only_with_the_flag() {
    let Some(root) = DebianRoot::new() else {
        return;
    };
    let keel_state = Keel::new();
    let out = tempfile::tempdir().unwrap();
    let a = out.path().join("a.keel");
    let b = out.path().join("b.keel");
    keel_state.capture_file(root.path(), &a, &[]);
    keel_state.capture_file(root.path(), &b, &[]);

    // The same file against itself.
    let (code, same) = diff_json(&a, &a, &[]);
    assert_eq!((code, same), (Some(0), Value::Array(vec![])));
    let text = keel(&["diff", a.to_str().unwrap(), a.to_str().unwrap()]);
    assert_eq!(text.code, Some(0), "{}", text.stderr);

    // Two captures of an unchanged root.
    let (code, changes) = diff_json(&a, &b, &[]);
    assert_eq!(
        (code, &changes),
        (Some(0), &Value::Array(vec![])),
        "two captures of an unchanged root differ"
    );

    // --include-volatile adds only volatile changes (collector durations at least).
    let (_, with_volatile) = diff_json(&a, &b, &["--include-volatile"]);
    let with_volatile = with_volatile.as_array().expect("array");
    for c in with_volatile {
        check_shape(c);
        assert_eq!(c["volatility"], "volatile", "{c}");
    }
    assert!(
        with_volatile.iter().any(|c| c["table"] == "collectors" && c["field"] == "duration_us"),
        "collector durations differ between two captures, and --include-volatile shows them: {with_volatile:?}"
    );
}

#[test]
fn a_failed_collector_diffs_as_unknown_not_as_everything_removed() {
    let root = crate::support::tiny_root();
    let state = Keel::new();
    let out = tempfile::tempdir().unwrap();
    let before = out.path().join("before.keel");
    let after = out.path().join("after.keel");
    state.capture_file(root.path(), &before, &[]);
    // The account database becomes unreadable: the users collector fails.
    fs::remove_file(root.path().join("etc/passwd")).unwrap();
    state.capture_file(root.path(), &after, &[]);

    let (code, changes) = diff_json(&before, &after, &[]);
    assert_eq!(
        code,
        Some(1),
        "a collector that stopped working is a change"
    );
    let changes = changes.as_array().unwrap();
    for c in changes {
        check_shape(c);
        assert!(
            c["section"] != "users",
            "users are unknown after the collector failed, not removed: {c}"
        );
    }
    let users = changes
        .iter()
        .find(|c| c["table"] == "collectors" && c["key"] == "users" && c["field"] == "state")
        .unwrap_or_else(|| panic!("the users collector's failure is not reported: {changes:?}"));
    assert_eq!(
        (&users["old"], &users["new"]),
        (&Value::from("ok"), &Value::from("error"))
    );
}
