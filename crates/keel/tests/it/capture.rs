//! `keel capture` against ground truth: dpkg's own view of a real Debian root, its
//! `/etc/passwd`, and the live machine.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;

use crate::support::{rows, s, sh, DebianRoot, Keel};

/// `name:arch version` of every package dpkg knows in `root`, as `dpkg-query` prints them.
fn dpkg_query_packages(root: &Path) -> BTreeSet<String> {
    let admindir = format!("--admindir={}", root.join("var/lib/dpkg").display());
    sh(
        "dpkg-query",
        &[
            &admindir,
            "-W",
            "-f",
            "${Package}:${Architecture} ${Version}\\n",
        ],
    )
    .lines()
    .map(str::to_string)
    .collect()
}

fn keel_packages(doc: &Value) -> BTreeSet<String> {
    rows(doc, "packages", "packages")
        .iter()
        .map(|p| format!("{}:{} {}", s(p, "name"), s(p, "arch"), s(p, "version")))
        .collect()
}

#[test]
fn capture_lists_exactly_the_packages_dpkg_lists() {
    let Some(root) = DebianRoot::new() else {
        return;
    };
    let doc = Keel::new().capture_json(root.path(), &[]);

    let expected = dpkg_query_packages(root.path());
    assert!(
        expected.len() > 80,
        "the debootstrapped root has only {} packages",
        expected.len()
    );
    let found = keel_packages(&doc);
    assert_eq!(
        found.difference(&expected).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "keel lists packages dpkg-query does not"
    );
    assert_eq!(
        expected.difference(&found).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "keel misses packages dpkg-query lists"
    );
    for p in rows(&doc, "packages", "packages") {
        assert_eq!(s(p, "manager"), "dpkg", "{p}");
        assert_eq!(s(p, "status"), "installed", "{p}");
    }
    // debootstrap marks nothing as automatically installed and holds nothing; `apt-mark` does.
    let held: Vec<&Value> = rows(&doc, "packages", "packages")
        .iter()
        .filter(|p| p["hold"] == Value::Bool(true))
        .collect();
    assert!(
        held.is_empty(),
        "no package is held, yet keel says {held:?}"
    );
}

#[test]
fn capture_records_apt_marks_and_holds() {
    let Some(root) = DebianRoot::new() else {
        return;
    };
    root.chroot(&["apt-mark", "auto", "cron"]);
    root.chroot(&["apt-mark", "hold", "openssh-server"]);
    let doc = Keel::new().capture_json(root.path(), &[]);

    let pkg = |name: &str| {
        rows(&doc, "packages", "packages")
            .iter()
            .find(|p| s(p, "name") == name)
            .unwrap_or_else(|| panic!("{name} is not in the profile"))
            .clone()
    };
    assert_eq!(
        pkg("cron")["auto"],
        Value::Bool(true),
        "cron was marked auto with apt-mark"
    );
    assert_eq!(
        pkg("openssh-server")["hold"],
        Value::Bool(true),
        "openssh-server is held"
    );
    assert_eq!(pkg("openssh-server")["auto"], Value::Bool(false));
    assert_eq!(pkg("bash")["hold"], Value::Bool(false));
}

/// `(path, "modified" | "missing")` for every file under `/etc` that `dpkg --verify` reports.
fn dpkg_verify_etc(root: &Path) -> BTreeSet<(String, String)> {
    let root_arg = format!("--root={}", root.display());
    // dpkg --verify exits 1 when it finds problems; its output is what matters.
    let run = crate::support::run_with_timeout(
        crate::support::which("dpkg").expect("dpkg"),
        &[root_arg.as_str(), "--verify"],
        None,
        std::time::Duration::from_secs(300),
    );
    assert!(
        matches!(run.code, Some(0 | 1)),
        "dpkg --verify failed: {}",
        run.stderr
    );
    run.stdout_str()
        .lines()
        .filter_map(|line| {
            // `??5?????? c /etc/x` or `missing   c /etc/y`
            let at = line.find(" /")?;
            let path = line[at + 1..].to_string();
            let status = if line.starts_with("missing") {
                "missing"
            } else {
                "modified"
            };
            path.starts_with("/etc/")
                .then(|| (path, status.to_string()))
        })
        .collect()
}

#[test]
fn modified_config_files_match_dpkg_verify() {
    let Some(root) = DebianRoot::new() else {
        return;
    };
    // Two edited conffiles (one of them a cron job) and one deleted conffile.
    let cron_default = root.read("/etc/default/cron");
    root.write(
        "/etc/default/cron",
        format!("{cron_default}EXTRA_OPTS=\"-L 15\"\n"),
    );
    root.write(
        "/etc/adduser.conf",
        root.read("/etc/adduser.conf").replace("DSHELL", "#DSHELL"),
    );
    std::fs::remove_file(root.join("/etc/issue.net")).expect("delete a conffile");

    let expected = dpkg_verify_etc(root.path());
    assert!(
        expected.contains(&("/etc/default/cron".into(), "modified".into()))
            && expected.contains(&("/etc/issue.net".into(), "missing".into())),
        "dpkg --verify does not see the planted changes: {expected:?}"
    );

    let doc = Keel::new().capture_json(root.path(), &[]);
    let files = rows(&doc, "files", "files");
    let found: BTreeSet<(String, String)> = files
        .iter()
        .filter(|f| matches!(s(f, "status"), "modified" | "missing"))
        .filter(|f| s(f, "path").starts_with("/etc/"))
        .map(|f| (s(f, "path").to_string(), s(f, "status").to_string()))
        .collect();
    assert_eq!(
        found, expected,
        "keel's modified/missing files differ from dpkg --verify"
    );

    // A modified file's content travels with the profile, and it is the edited content.
    let edited = files
        .iter()
        .find(|f| s(f, "path") == "/etc/default/cron")
        .expect("row");
    assert_eq!(s(edited, "package"), "cron", "{edited}");
    assert_eq!(edited["content"], Value::Bool(true), "{edited}");
    let blob = &doc["blobs"][s(edited, "hash")];
    assert!(
        blob["text"]
            .as_str()
            .is_some_and(|t| t.contains("EXTRA_OPTS=\"-L 15\"")),
        "the modified file's content blob is missing or wrong: {blob}"
    );
    // Pristine files carry no content: their package pins it.
    let pristine = files
        .iter()
        .find(|f| s(f, "path") == "/etc/crontab")
        .expect("/etc/crontab");
    assert_eq!(s(pristine, "status"), "pristine", "{pristine}");
    assert_eq!(pristine["content"], Value::Bool(false), "{pristine}");
}

#[test]
fn users_and_groups_match_etc_passwd_and_group() {
    let Some(root) = DebianRoot::new() else {
        return;
    };
    let doc = Keel::new().capture_json(root.path(), &[]);

    let passwd: BTreeSet<(String, u64, u64, String, String, String)> = root
        .read("/etc/passwd")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (
                f[0].to_string(),
                f[2].parse().expect("uid"),
                f[3].parse().expect("gid"),
                f[4].to_string(),
                f[5].to_string(),
                f[6].to_string(),
            )
        })
        .collect();
    let users: BTreeSet<(String, u64, u64, String, String, String)> = rows(&doc, "users", "users")
        .iter()
        .map(|u| {
            (
                s(u, "name").to_string(),
                u["uid"].as_u64().unwrap_or(u64::MAX),
                u["gid"].as_u64().unwrap_or(u64::MAX),
                s(u, "gecos").to_string(),
                s(u, "home").to_string(),
                s(u, "shell").to_string(),
            )
        })
        .collect();
    assert!(passwd.len() >= 15, "{passwd:?}");
    assert_eq!(
        users, passwd,
        "users differ from /etc/passwd (name, uid, gid, gecos, home, shell)"
    );

    let group: BTreeSet<(String, u64)> = root
        .read("/etc/group")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f[0].to_string(), f[2].parse().expect("gid"))
        })
        .collect();
    let groups: BTreeSet<(String, u64)> = rows(&doc, "users", "groups")
        .iter()
        .map(|g| {
            (
                s(g, "name").to_string(),
                g["gid"].as_u64().unwrap_or(u64::MAX),
            )
        })
        .collect();
    assert_eq!(groups, group, "groups differ from /etc/group");

    // Password state is reported, the hash never is: root has `*` in a fresh debootstrap, so
    // no password can log in.
    let root_user = rows(&doc, "users", "users")
        .iter()
        .find(|u| s(u, "name") == "root")
        .unwrap();
    assert!(
        matches!(s(root_user, "password_status"), "locked" | "no_login"),
        "root's shadow entry is `*`: {root_user}"
    );
}

/// Collectors whose facts exist only on the running system.
const LIVE_TABLES: &[&str] = &[
    "hardware.system",
    "hardware.cpu",
    "hardware.nics",
    "os.running_kernel",
    "network.interfaces",
    "network.addresses",
    "network.routes",
    "network.listening",
    "kernel.modules",
    "kernel.sysctl_running",
];

fn collector_of<'a>(doc: &'a Value, table: &str) -> &'a Value {
    doc["profile"]["collectors"]
        .as_array()
        .expect("collectors")
        .iter()
        .find(|c| {
            c["tables"]
                .as_array()
                .is_some_and(|t| t.iter().any(|t| t == table))
        })
        .unwrap_or_else(|| panic!("no collector claims {table}"))
}

#[test]
fn offline_root_reports_no_live_state_of_the_host() {
    let Some(root) = DebianRoot::new() else {
        return;
    };
    let doc = Keel::new().capture_json(root.path(), &[]);

    assert_eq!(doc["profile"]["meta"]["live"], Value::Bool(false));
    for table in LIVE_TABLES {
        let c = collector_of(&doc, table);
        assert_eq!(
            c["state"], "not_applicable",
            "{table} of an offline root: {c}"
        );
        assert!(c["message"].as_str().is_some_and(|m| !m.is_empty()), "{c}");
        let (section, name) = table.split_once('.').unwrap();
        assert!(
            rows(&doc, section, name).is_empty(),
            "{table} describes the host: {doc:#}"
        );
    }
    // What the root itself configures is there.
    let release = &rows(&doc, "os", "release")[0];
    assert_eq!(s(release, "id"), "debian", "{release}");
    assert_eq!(s(release, "codename"), "bookworm", "{release}");
    let units = rows(&doc, "services", "units");
    let ssh = units
        .iter()
        .find(|u| s(u, "name") == "ssh.service")
        .expect("ssh.service");
    assert_eq!(s(ssh, "unit_file_state"), "enabled", "{ssh}");
    assert!(
        rows(&doc, "schedules", "cron")
            .iter()
            .any(|c| s(c, "source").contains("e2scrub_all")),
        "the e2scrub_all cron job of the root is missing"
    );
    let x11 = rows(&doc, "security", "sshd")
        .iter()
        .find(|r| s(r, "name").eq_ignore_ascii_case("X11Forwarding"))
        .expect("X11Forwarding from sshd_config");
    assert_eq!(s(x11, "value"), "yes");
}

#[test]
fn live_capture_succeeds_and_explains_every_collector_that_is_not_ok() {
    let keel = Keel::new();
    let doc = keel.capture_json(Path::new("/"), &[]);

    assert_eq!(doc["format"], "keel-profile");
    assert_eq!(doc["profile"]["meta"]["live"], Value::Bool(true));
    let collectors = doc["profile"]["collectors"].as_array().expect("collectors");
    assert!(collectors.len() >= 10, "{collectors:?}");
    let mut claimed = BTreeSet::new();
    for c in collectors {
        let state = s(c, "state");
        assert!(
            matches!(state, "ok" | "error" | "timeout" | "not_applicable"),
            "unknown collector state: {c}"
        );
        if state != "ok" {
            assert!(
                c["message"].as_str().is_some_and(|m| !m.trim().is_empty()),
                "collector {} is {state} without saying why: {c}",
                s(c, "name")
            );
        }
        for t in c["tables"].as_array().expect("tables") {
            claimed.insert(t.as_str().expect("table name").to_string());
        }
    }
    // Every table of every section is claimed by a collector.
    for (section, tables) in doc["profile"].as_object().expect("profile") {
        if matches!(section.as_str(), "meta" | "collectors") {
            continue;
        }
        for table in tables.as_object().expect("section").keys() {
            let name = format!("{section}.{table}");
            assert!(claimed.contains(&name), "no collector reports on {name}");
        }
    }
    // The running system's own facts are there (a kernel built without loadable modules has
    // no /proc/modules).
    let mut live = vec!["os.running_kernel", "network.interfaces"];
    if std::fs::read_to_string("/proc/modules").is_ok_and(|m| !m.trim().is_empty()) {
        live.push("kernel.modules");
    }
    for table in live {
        let c = collector_of(&doc, table);
        if c["state"] == "ok" {
            let (section, name) = table.split_once('.').unwrap();
            assert!(
                !rows(&doc, section, name).is_empty(),
                "{table} is empty though {c}"
            );
        }
    }
    assert!(
        rows(&doc, "network", "interfaces")
            .iter()
            .any(|i| s(i, "name") == "lo")
            || collector_of(&doc, "network.interfaces")["state"] != "ok",
        "the loopback interface is missing from a live capture"
    );
    if Path::new("/var/lib/dpkg/status").is_file() {
        assert_eq!(keel_packages(&doc), dpkg_query_packages(Path::new("/")));
    }
}

#[test]
fn binary_profile_goes_to_a_pipe_and_json_is_canonical() {
    let root = crate::support::tiny_root();
    let state = Keel::new();
    let dir = tempfile::tempdir().unwrap();

    // Without --output, the binary profile goes to standard output when it is not a terminal.
    let piped = state.capture(root.path(), &[]);
    assert!(
        piped.stdout.starts_with(&[0x89, b'K', b'E', b'E', b'L']),
        "keel capture | … did not write a binary profile"
    );
    let file = dir.path().join("piped.keel");
    std::fs::write(&file, &piped.stdout).unwrap();
    let doc = crate::support::show_json(&file);
    let tiny = rows(&doc, "packages", "packages");
    assert_eq!(tiny.len(), 1, "{tiny:?}");
    assert_eq!(
        (s(&tiny[0], "name"), s(&tiny[0], "version")),
        ("tiny", "1.0")
    );

    // The JSON form is canonical: sorted keys, and showing it again reproduces it exactly.
    let raw = crate::support::keel(&["show", file.to_str().unwrap(), "--format", "json"]);
    raw.expect_ok();
    let text = raw.stdout_str();
    let parsed: Value = serde_json::from_str(&text).unwrap();
    // serde_json's map is sorted, so a document equal to its own re-serialisation was sorted.
    assert!(
        text.trim_end() == serde_json::to_string_pretty(&parsed).unwrap()
            || text.trim_end() == serde_json::to_string(&parsed).unwrap(),
        "keel's JSON is not in canonical (sorted-key) form"
    );
    let json_file = dir.path().join("profile.json");
    std::fs::write(&json_file, &raw.stdout).unwrap();
    let again = crate::support::keel(&["show", json_file.to_str().unwrap(), "--format", "json"]);
    again.expect_ok();
    assert_eq!(
        again.stdout_str(),
        text,
        "show of the JSON form is not the same document"
    );

    // One section in text form, every row of it.
    let section = crate::support::keel(&["show", file.to_str().unwrap(), "--section", "schedules"]);
    section.expect_ok();
    assert!(
        section.stdout_str().contains("/usr/local/bin/backup"),
        "show --section schedules does not list the cron job:\n{}",
        section.stdout_str()
    );
}
