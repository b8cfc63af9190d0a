//! What a rule sees, and how messages render it.

use keel_profile::{diff, Change, ChangeKind, DiffOptions, Usage, Volatility};
use keel_rules::{HostInfo, Input, RuleError};

use crate::support::{base, fired, host, one, pkg, rule, run};

#[test]
fn profile_has_sections_tables_rows_meta_and_collectors() {
    let set = rule(
        r#"name = "shape"
severity = "info"
when = '''
profile.meta.hostname == "web1" && profile.meta.agent_version == "0.1.0"
&& profile.packages.packages.size() == 3
&& profile.packages.packages.exists(p, p.name == "nano" && p.version == "7.2-1" && p._key == "nano:amd64")
&& profile.users.users.filter(u, u.uid == 0).map(u, u.name) == ["root"]
&& profile.collectors.all(c, c.state == "ok")
&& profile.storage.disks[0].size_bytes > 1000
'''
message = "ok""#,
    );
    assert_eq!(
        fired(&run(&set, None, &base())),
        vec![one("shape", None, "ok")]
    );
}

#[test]
fn bare_profile_holds_every_section() {
    let set = rule(
        r#"name = "all"
severity = "info"
when = '["meta", "collectors", "hardware", "storage", "os", "packages", "users", "security", "network", "services", "schedules", "kernel", "files"].all(s, s in profile)'
message = "{{ size(profile) }}""#,
    );
    assert_eq!(
        fired(&run(&set, None, &base())),
        vec![one("all", None, "13")]
    );
}

#[test]
fn previous_is_null_on_a_first_profile() {
    let set = rule(
        r#"name = "prev"
severity = "info"
when = "true"
message = "{{ previous == null ? 'first' : previous.meta.hostname }}""#,
    );
    assert_eq!(
        fired(&run(&set, None, &base())),
        vec![one("prev", None, "first")]
    );
    assert_eq!(
        fired(&run(&set, Some(&base()), &base())),
        vec![one("prev", None, "web1")]
    );
    // Unguarded, `previous` on a first profile is an error, not a silent false.
    let set = rule(
        r#"name = "unguarded"
severity = "info"
when = 'previous.meta.hostname != profile.meta.hostname'
message = "x""#,
    );
    let e = run(&set, None, &base());
    assert!(e.firings.is_empty());
    assert!(
        matches!(&e.errors[..], [(n, RuleError::Eval { .. })] if n == "unguarded"),
        "{e:?}"
    );
}

#[test]
fn changes_added_removed_changed() {
    let old = base();
    let mut new = old.clone();
    new.packages.packages.push(pkg("vim", "9.0"));
    new.packages.packages.retain(|p| p.name != "bash");
    new.packages.packages[0].version = "7.3".into();
    let set = rule(
        r#"name = "c"
severity = "info"
when = '''
changes.size() == 3
&& changes.exists(c, c.kind == "added" && c.section == "packages" && c.table == "packages" && c.key == "vim:amd64" && c.field == null && c.new.version == "9.0" && c.old == null && c.volatility == "config")
&& added["packages.packages"].map(p, p.name) == ["vim"]
&& removed["packages.packages"].map(p, p._key) == ["bash:amd64"]
&& changed["packages.packages"].map(c, [c.key, c.field, c.old, c.new]) == [["nano:amd64", "version", "7.2-1", "7.3"]]
&& added["storage.disks"] == [] && removed["meta.collectors"] == [] && changed["files.files"] == []
'''
message = "ok""#,
    );
    assert_eq!(
        fired(&run(&set, Some(&old), &new)),
        vec![one("c", None, "ok")]
    );
}

#[test]
fn volatile_changes_are_left_out_even_when_given() {
    let mut old = base();
    old.storage.usage = vec![Usage {
        mountpoint: "/".into(),
        size_bytes: 10,
        used_bytes: 1,
        inodes_used: 1,
    }];
    let mut new = old.clone();
    new.storage.usage[0].used_bytes = 2;
    let changes = diff(
        &old,
        &new,
        DiffOptions {
            include_volatile: true,
        },
    );
    assert_eq!(changes.len(), 1);
    let set = rule(
        r#"name = "v"
severity = "info"
when = 'changes.size() > 0 || changed["storage.usage"].size() > 0'
message = "volatile leaked""#,
    );
    let h = host();
    let e = set.evaluate(&Input {
        profile: &new,
        previous: Some(&old),
        changes: &changes,
        host: &h,
    });
    assert_eq!(fired(&e), vec![]);
}

#[test]
fn unknown_tables_of_a_newer_agent_still_appear() {
    let p = base();
    let changes = vec![Change {
        section: "packages".into(),
        table: "snaps".into(),
        key: "lxd".into(),
        kind: ChangeKind::Added,
        field: None,
        old: serde_json::Value::Null,
        new: serde_json::json!({"name": "lxd"}),
        volatility: Volatility::Config,
    }];
    let set = rule(
        r#"name = "snap"
severity = "info"
for_each = 'added["packages.snaps"]'
message = "{{ item.name }}""#,
    );
    let h = host();
    let e = set.evaluate(&Input {
        profile: &p,
        previous: Some(&p),
        changes: &changes,
        host: &h,
    });
    assert_eq!(fired(&e), vec![one("snap", Some("lxd"), "lxd")]);
}

#[test]
fn host_name_and_labels() {
    let set = rule(
        r#"name = "h"
severity = "info"
when = 'host.labels.role == "web" && !("db" in host.labels)'
message = "{{ host.name }} is {{ host.labels.role }}""#,
    );
    assert_eq!(
        fired(&run(&set, None, &base())),
        vec![one("h", None, "web1 is web")]
    );
    let p = base();
    let h = HostInfo::default();
    let e = set.evaluate(&Input {
        profile: &p,
        previous: None,
        changes: &[],
        host: &h,
    });
    assert_eq!(e.errors.len(), 1, "a missing label is an error: {e:?}");
}

#[test]
fn messages_render_every_kind_of_value() {
    let set = rule(
        r#"name = "r"
severity = "info"
message = "s={{ 'x' }} i={{ -3 }} u={{ 3u }} d={{ 1.5 }} b={{ true }} n={{ null }} l={{ [1, 'a'] }} m={{ {'b': 1, 'a': [null]} }} t={{ type(1) }} {{ '{' }}literal""#,
    );
    assert_eq!(
        fired(&run(&set, None, &base())),
        vec![one(
            "r",
            None,
            r#"s=x i=-3 u=3 d=1.5 b=true n=null l=[1,"a"] m={"a":[null],"b":1} t="<type>" {literal"#
        )]
    );
}

#[test]
fn for_each_item_keys() {
    let set = rule(
        r#"name = "k"
severity = "warning"
for_each = '[profile.packages.packages[0], "text", 42, {"no": "key"}, changes]'
message = "-""#,
    );
    let e = run(&set, Some(&base()), &base());
    let keys: Vec<Option<String>> = e.firings.iter().map(|f| f.item_key.clone()).collect();
    assert_eq!(keys[0].as_deref(), Some("bash:amd64"));
    assert_eq!(keys[1].as_deref(), Some("text"));
    assert_eq!(keys[2].as_deref(), Some("42"));
    let digest = keys[3].clone().unwrap();
    assert_eq!(digest.len(), 16);
    assert!(digest.chars().all(|c| c.is_ascii_hexdigit()));
    assert_ne!(keys[3], keys[4]);
    // Stable: the same item has the same key in another evaluation.
    assert_eq!(
        run(&set, Some(&base()), &base()).firings[3].item_key,
        keys[3]
    );
}

#[test]
fn when_gates_for_each_and_an_empty_list_fires_nothing() {
    let set = rule(
        r#"name = "g"
severity = "info"
when = 'host.name == "other"'
for_each = '[1, 2]'
message = "{{ item }}""#,
    );
    assert_eq!(fired(&run(&set, None, &base())), vec![]);
    let set = rule(
        r#"name = "g"
severity = "info"
for_each = '[1, 2].filter(x, x > 5)'
message = "{{ item }}""#,
    );
    assert_eq!(fired(&run(&set, None, &base())), vec![]);
}

#[test]
fn disabled_rules_are_compiled_but_not_evaluated() {
    let set = rule(
        r#"name = "off"
severity = "info"
enabled = false
when = 'profile.nonexistent.size() > 0'
message = "x""#,
    );
    let e = run(&set, None, &base());
    assert!(e.firings.is_empty() && e.errors.is_empty(), "{e:?}");
}

#[test]
fn labels_carry_rule_and_severity() {
    let set = rule(
        r#"name = "lab"
severity = "critical"
labels = { team = "ops", page = "yes" }
message = "x""#,
    );
    let e = run(&set, None, &base());
    let labels = &e.firings[0].labels;
    assert_eq!(
        labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>(),
        ["page=yes", "rule=lab", "severity=critical", "team=ops"]
    );
}

#[test]
fn firings_serialize_for_the_api() {
    let set = rule(
        r#"name = "j"
severity = "warning"
for_each = '["a"]'
message = "m {{ item }}""#,
    );
    let e = run(&set, None, &base());
    let json = serde_json::to_value(&e.firings).unwrap();
    assert_eq!(
        json,
        serde_json::json!([{
            "rule": "j", "severity": "warning", "message": "m a", "item_key": "a",
            "labels": {"rule": "j", "severity": "warning"}
        }])
    );
}

#[test]
fn regex_matches_works() {
    let set = rule(
        r#"name = "re"
severity = "info"
for_each = 'profile.packages.packages.filter(p, p.name.matches("^open"))'
message = "{{ item.name }}""#,
    );
    assert_eq!(
        fired(&run(&set, None, &base())),
        vec![one("re", Some("openssh-server:amd64"), "openssh-server")]
    );
}
