//! `keel rollback`: five changes planted on a real Debian root (an edited `sshd_config`, a new
//! user, an installed package, a disabled service, a sysctl setting); three are backed out and
//! the next capture shows exactly those three gone and the other two still there. Locally
//! with `keel rollback --root`, and through a server and an agent running on that root, with
//! an approval; plus the conflict, rejected and failed cases.

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{agent_cmd, keel, s, sh, DebianRoot, Keel, ServerProc, KEEL, PURGE_PACKAGE};

pub const USER: &str = "mallory";
pub const SERVICE: &str = "cron.service";
pub const SYSCTL_FILE: &str = "/etc/sysctl.d/60-keel.conf";
pub const SSHD: &str = "/etc/ssh/sshd_config";

/// Plants the five changes; returns the installed package's key (`tree:amd64`).
pub fn plant(root: &DebianRoot) -> String {
    let sshd = root.read(SSHD);
    assert!(
        sshd.contains("\nX11Forwarding yes\n"),
        "unexpected stock sshd_config"
    );
    root.write(
        SSHD,
        sshd.replace("\nX11Forwarding yes\n", "\nX11Forwarding no\n"),
    );

    root.chroot(&["useradd", "--create-home", "--shell", "/bin/bash", USER]);

    let deb = root.extra_deb().to_str().expect("utf-8").to_string();
    let fields = sh(
        "dpkg-deb",
        &["--show", "--showformat=${Package}:${Architecture}", &deb],
    );
    fs::copy(root.extra_deb(), root.join("/tmp/extra.deb")).expect("copy .deb into the root");
    root.chroot(&["dpkg", "--install", "/tmp/extra.deb"]);
    fs::remove_file(root.join("/tmp/extra.deb")).expect("remove .deb");

    let root_arg = format!("--root={}", root.str());
    sh("systemctl", &[&root_arg, "disable", SERVICE]);

    root.write(SYSCTL_FILE, "# less swapping\nvm.swappiness = 10\n");
    fields.trim().to_string()
}

/// `keel diff OLD NEW --format json` as an array of changes.
pub fn changes(old: &Path, new: &Path) -> Vec<Value> {
    let run = keel(&[
        "diff",
        old.to_str().unwrap(),
        new.to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert_ne!(run.code, Some(2), "`{}` failed: {}", run.what, run.stderr);
    run.json().as_array().cloned().unwrap_or_default()
}

/// True when some change is of `section.table` with `key`.
pub fn shows(changes: &[Value], section: &str, table: &str, key: &str) -> bool {
    changes
        .iter()
        .any(|c| c["section"] == section && c["table"] == table && s(c, "key") == key)
}

/// The five planted changes, each as (name, present in `changes`).
pub fn planted(changes: &[Value], package: &str) -> Vec<(&'static str, bool)> {
    vec![
        ("sshd_config", shows(changes, "files", "files", SSHD)),
        ("user", shows(changes, "users", "users", USER)),
        ("package", shows(changes, "packages", "packages", package)),
        ("service", shows(changes, "services", "units", SERVICE)),
        (
            "sysctl",
            shows(changes, "kernel", "sysctl", "vm.swappiness"),
        ),
    ]
}

#[allow(clippy::print_stderr, reason = "timings for whoever runs the tests")]
fn timing(msg: &str) {
    eprintln!("{msg}");
}

fn passwd_has(root: &DebianRoot, user: &str) -> bool {
    root.read("/etc/passwd")
        .lines()
        .any(|l| l.starts_with(&format!("{user}:")))
}

#[test]
fn local_rollback_backs_out_three_of_five_changes_and_keeps_data() {
    let Some(root) = DebianRoot::new() else {
        return;
    };
    let k = Keel::new();
    let out = tempfile::tempdir().unwrap();
    let before = out.path().join("before.keel");
    let after = out.path().join("after.keel");
    k.capture_file(root.path(), &before, &[]);
    let package = plant(&root);
    root.write("/home/mallory/notes.txt", "data, not configuration\n");

    let state = k.state_dir().to_str().unwrap();
    let args = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<&str> = vec![
            "rollback",
            "--root",
            root.str(),
            "--state-dir",
            state,
            "--to",
            before.to_str().unwrap(),
            "--only",
            "packages:tree",
            "--only",
            "kernel:vm.swappiness",
            "--only",
            "users:mallory",
        ];
        v.extend_from_slice(extra);
        v.into_iter().map(String::from).collect()
    };

    // Without --yes: the plan and a dry run, and nothing changes.
    let shown = keel(&args(&[]));
    shown.expect_ok();
    let text = shown.stdout_str();
    for expected in [
        "Rollback plan: back out 4 of 4 selected changes",
        "purge package tree:",
        "remove user mallory (its home is kept)",
        "remove group mallory",
        &format!("remove {SYSCTL_FILE}"),
        "would purge tree:",
        "Nothing was changed. Run again with --yes",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    assert!(
        passwd_has(&root, USER),
        "a plan without --yes changed the system"
    );
    assert!(root.join(SYSCTL_FILE).exists());

    // A selection that matches nothing is an error with a hint.
    let bad = keel(&[
        "rollback",
        "--root",
        root.str(),
        "--state-dir",
        state,
        "--to",
        before.to_str().unwrap(),
        "--only",
        "users:eve",
    ]);
    bad.expect_code(2);
    assert!(
        bad.stderr
            .contains("no change between the two profiles matches users:eve"),
        "{}",
        bad.stderr
    );
    assert!(bad.stderr.contains("hint:"), "{}", bad.stderr);

    // With --yes: dry run, apply, capture again, check.
    let started = Instant::now();
    let applied = keel(&args(&["--yes", "--format", "json"]));
    applied.expect_ok();
    let report = applied.json();
    assert_eq!(report["applied"], true, "{report}");
    assert_eq!(report["remaining"], Value::Array(vec![]), "{report}");
    timing(&format!(
        "local rollback applied in {:.1?}",
        started.elapsed()
    ));

    k.capture_file(root.path(), &after, &[]);
    let left = changes(&before, &after);
    let state_of = planted(&left, &package);
    assert_eq!(
        state_of,
        vec![
            ("sshd_config", true),
            ("user", false),
            ("package", false),
            ("service", true),
            ("sysctl", false),
        ],
        "after the rollback the diff from before is:\n{}",
        serde_json::to_string_pretty(&left).unwrap()
    );
    assert!(!shows(&left, "users", "groups", USER));
    assert!(!shows(&left, "files", "files", SYSCTL_FILE));
    // The home directory is data: never touched.
    assert_eq!(
        root.read("/home/mallory/notes.txt"),
        "data, not configuration\n"
    );

    // Running the same rollback again changes nothing: every row is as wanted.
    let again = keel(&args(&[]));
    again.expect_code(2);
    assert!(
        again
            .stderr
            .contains("no change between the two profiles matches"),
        "{}",
        again.stderr
    );
}

#[test]
fn local_rollback_reinstalls_a_removed_package_at_its_recorded_version() {
    let Some(root) = DebianRoot::new() else {
        return;
    };
    let k = Keel::new();
    let out = tempfile::tempdir().unwrap();
    let before = out.path().join("before.keel");
    k.capture_file(root.path(), &before, &[]);
    let version = root.chroot(&["dpkg-query", "-W", "-f=${Version}", PURGE_PACKAGE]);
    root.chroot(&["dpkg", "--purge", PURGE_PACKAGE]);

    let run = keel(&[
        "rollback",
        "--root",
        root.str(),
        "--state-dir",
        k.state_dir().to_str().unwrap(),
        "--to",
        before.to_str().unwrap(),
        "--only",
        &format!("packages:{PURGE_PACKAGE}"),
        "--yes",
    ]);
    run.expect_ok();
    let text = run.stdout_str();
    assert!(
        text.contains(&format!("would install {PURGE_PACKAGE}")),
        "{text}"
    );
    assert!(
        text.contains("Done: 1 selected changes backed out"),
        "{text}"
    );
    let now = root.chroot(&["dpkg-query", "-W", "-f=${Version} ${Status}", PURGE_PACKAGE]);
    assert_eq!(now, format!("{version} install ok installed"));
}

#[test]
fn local_rollback_conflict_is_shown_and_left_alone_unless_forced() {
    let Some(root) = DebianRoot::new() else {
        return;
    };
    let k = Keel::new();
    let out = tempfile::tempdir().unwrap();
    let before = out.path().join("before.keel");
    let changed = out.path().join("changed.keel");
    k.capture_file(root.path(), &before, &[]);
    root.write(SYSCTL_FILE, "vm.swappiness = 10\n");
    root.write("/etc/issue.net", "Authorised users only\n");
    k.capture_file(root.path(), &changed, &[]);
    // Edited again after the change that is to be backed out.
    root.write(SYSCTL_FILE, "vm.swappiness = 5\n");

    let state = k.state_dir().to_str().unwrap();
    let args = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<&str> = vec![
            "rollback",
            "--root",
            root.str(),
            "--state-dir",
            state,
            "--to",
            before.to_str().unwrap(),
            "--from",
            changed.to_str().unwrap(),
            "--only",
            "kernel:vm.swappiness",
            "--only",
            "files:/etc/issue.net",
        ];
        v.extend_from_slice(extra);
        v.into_iter().map(String::from).collect()
    };
    let run = keel(&args(&["--yes"]));
    run.expect_ok();
    let text = run.stdout_str();
    assert!(
        text.contains("CONFLICT  kernel.sysctl:vm.swappiness"),
        "{text}"
    );
    assert!(
        text.contains("changed again after the selected change"),
        "{text}"
    );
    assert_eq!(
        root.read(SYSCTL_FILE),
        "vm.swappiness = 5\n",
        "a conflict was overwritten"
    );
    assert_ne!(
        root.read("/etc/issue.net"),
        "Authorised users only\n",
        "the other row was not backed out"
    );

    let forced = keel(&args(&["--yes", "--force"]));
    forced.expect_ok();
    assert!(
        forced.stdout_str().contains("FORCED"),
        "{}",
        forced.stdout_str()
    );
    assert!(
        !root.join(SYSCTL_FILE).exists(),
        "--force did not back out the conflict"
    );

    // The journal undoes the last rollback: shown first, applied with --yes.
    let revert = |extra: &[&str]| {
        let mut v = vec![
            "rollback",
            "--root",
            root.str(),
            "--state-dir",
            state,
            "--revert",
        ];
        v.extend_from_slice(extra);
        keel(&v)
    };
    let shown = revert(&[]);
    shown.expect_ok();
    assert!(
        shown
            .stdout_str()
            .contains(&format!("{SYSCTL_FILE}: put back")),
        "{}",
        shown.stdout_str()
    );
    assert!(
        !root.join(SYSCTL_FILE).exists(),
        "--revert without --yes changed the system"
    );
    revert(&["--yes"]).expect_ok();
    assert_eq!(
        root.read(SYSCTL_FILE),
        "vm.swappiness = 5\n",
        "not reverted"
    );
}

// ------------------------------------------------------------------ through a server

/// A `keel agent run` process, killed when dropped; its stderr goes to a file.
struct AgentProc(Child);

impl AgentProc {
    fn start(state: &Path, root: &Path, log: &Path) -> AgentProc {
        let child = Command::new(KEEL)
            .args(agent_cmd(
                state,
                root,
                &["run", "--interval", "1h", "--poll", "1s"],
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(log).expect("agent log"))
            .spawn()
            .expect("start keel agent run");
        AgentProc(child)
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for<T>(what: &str, limit: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn admin(server: &ServerProc, args: &[&str]) -> crate::support::Run {
    let mut v: Vec<String> = args.iter().map(ToString::to_string).collect();
    v.extend([
        "--server".into(),
        server.url.clone(),
        "--token".into(),
        server.admin.clone().expect("admin token"),
        "--ca".into(),
        server.ca().display().to_string(),
    ]);
    keel(&v)
}

/// The ids of the host's stored profiles, oldest first.
fn profile_ids(server: &ServerProc, host: &str) -> Vec<i64> {
    let (status, v) = server.get(
        &format!("/api/v1/hosts/{host}/profiles"),
        server.admin.as_deref(),
    );
    assert_eq!(status, 200, "{v}");
    let mut ids: Vec<i64> = v
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["id"].as_i64())
        .collect();
    ids.sort_unstable();
    ids
}

fn job(server: &ServerProc, id: i64) -> Value {
    let (status, v) = server.get(&format!("/api/v1/rollbacks/{id}"), server.admin.as_deref());
    assert_eq!(status, 200, "{v}");
    v
}

/// The server's diff between two stored profiles.
fn server_diff(server: &ServerProc, from: i64, to: i64) -> Vec<Value> {
    let (status, v) = server.get(
        &format!("/api/v1/diff?from={from}&to={to}"),
        server.admin.as_deref(),
    );
    assert_eq!(status, 200, "{v}");
    v.as_array().cloned().unwrap_or_default()
}

#[test]
#[allow(clippy::too_many_lines)]
fn server_rollback_is_approved_applied_by_the_agent_and_verified() {
    if crate::support::which("curl").is_none() {
        crate::support::skip("`curl` is not installed");
        return;
    }
    let Some(root) = DebianRoot::new() else {
        return;
    };
    fs::write(root.join("/etc/hostname"), "web-1\n").unwrap();
    let data = tempfile::tempdir().unwrap();
    let server = ServerProc::start(data.path());
    let state = tempfile::tempdir().unwrap();
    let enroll = keel(&agent_cmd(
        state.path(),
        root.path(),
        &[
            "enroll",
            "--server",
            &server.url,
            "--token",
            server.enroll.as_deref().unwrap(),
        ],
    ));
    enroll.expect_ok();
    let push = keel(&agent_cmd(state.path(), root.path(), &["push"]));
    push.expect_ok();
    let package = plant(&root);
    keel(&agent_cmd(state.path(), root.path(), &["push"])).expect_ok();
    let ids = profile_ids(&server, "web-1");
    assert_eq!(ids.len(), 2, "{ids:?}");
    let (before_id, after_id) = (ids[0], ids[1]);

    // Propose: sshd_config, the user and the service.
    let proposed = admin(
        &server,
        &[
            "rollback",
            "--host",
            "web-1",
            "--to",
            &before_id.to_string(),
            "--only",
            &format!("files:{SSHD}"),
            "--only",
            "users:mallory",
            "--only",
            &format!("services:{SERVICE}"),
            "--format",
            "json",
        ],
    );
    proposed.expect_ok();
    let j = proposed.json();
    let id = j["id"].as_i64().expect("job id");
    assert_eq!(j["status"], "proposed", "{j}");
    assert_eq!(j["from_profile"], after_id);
    assert!(
        j["plan"]["steps"].as_array().is_some_and(|s| !s.is_empty()),
        "{j}"
    );

    // A proposed job is not picked up: the agent runs meanwhile and nothing changes.
    let log = state.path().join("agent.log");
    let _agent = AgentProc::start(state.path(), root.path(), &log);
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        passwd_has(&root, USER),
        "an unapproved rollback was applied"
    );
    assert_eq!(job(&server, id)["status"], "proposed");

    let shown = admin(&server, &["rollback", "show", &id.to_string()]);
    shown.expect_ok();
    assert!(
        shown.stdout_str().contains("remove user mallory"),
        "{}",
        shown.stdout_str()
    );

    let started = Instant::now();
    let approved = admin(
        &server,
        &[
            "rollback",
            "approve",
            &id.to_string(),
            "--by",
            "alice",
            "--format",
            "json",
        ],
    );
    approved.expect_ok();
    let a = approved.json();
    assert_eq!(a["status"], "approved", "{a}");
    assert_eq!(a["decided_by"], "alice");
    assert!(a["decided_at_ms"].as_i64().is_some());

    let done = wait_for("the rollback to finish", Duration::from_secs(120), || {
        let j = job(&server, id);
        matches!(j["status"].as_str(), Some("done" | "failed")).then_some(j)
    });
    timing(&format!(
        "server rollback approved → done in {:.1?}",
        started.elapsed()
    ));
    let agent_log = fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(done["status"], "done", "{done}\nagent log:\n{agent_log}");
    assert!(
        agent_log.contains(&format!("rollback {id}")),
        "the agent log does not show the job:\n{agent_log}"
    );
    assert!(agent_log.contains("dry run"), "{agent_log}");

    let result = done["result_profile"].as_i64().expect("result profile");
    let left = server_diff(&server, before_id, result);
    assert_eq!(
        planted(&left, &package),
        vec![
            ("sshd_config", false),
            ("user", false),
            ("package", true),
            ("service", false),
            ("sysctl", true),
        ],
        "after the rollback the diff from before is:\n{}",
        serde_json::to_string_pretty(&left).unwrap()
    );
    assert!(root.read(SSHD).contains("\nX11Forwarding yes\n"));
    assert!(
        root.join("/home/mallory").is_dir(),
        "the home directory is data"
    );

    let listed = admin(&server, &["rollback", "list", "--host", "web-1"]);
    listed.expect_ok();
    assert!(
        listed.stdout_str().contains("done"),
        "{}",
        listed.stdout_str()
    );
}

#[test]
#[allow(clippy::too_many_lines)]
fn server_rollback_rejected_in_conflict_or_failed_is_reported() {
    if crate::support::which("curl").is_none() {
        crate::support::skip("`curl` is not installed");
        return;
    }
    let Some(root) = DebianRoot::new() else {
        return;
    };
    fs::write(root.join("/etc/hostname"), "db-1\n").unwrap();
    let data = tempfile::tempdir().unwrap();
    let server = ServerProc::start(data.path());
    let state = tempfile::tempdir().unwrap();
    keel(&agent_cmd(
        state.path(),
        root.path(),
        &[
            "enroll",
            "--server",
            &server.url,
            "--token",
            server.enroll.as_deref().unwrap(),
        ],
    ))
    .expect_ok();
    let push = || {
        keel(&agent_cmd(state.path(), root.path(), &["push"])).expect_ok();
    };
    push();
    root.write(SYSCTL_FILE, "vm.swappiness = 10\n");
    root.chroot(&["useradd", USER]);
    push();
    // The sysctl file is edited again after the change to be backed out.
    root.write(SYSCTL_FILE, "vm.swappiness = 5\n");
    push();
    let ids = profile_ids(&server, "db-1");
    assert_eq!(ids.len(), 3, "{ids:?}");

    // Conflict: the plan backs out from the middle profile; the newest shows a later edit.
    let proposed = admin(
        &server,
        &[
            "rollback",
            "--host",
            "db-1",
            "--to",
            &ids[0].to_string(),
            "--from",
            &ids[1].to_string(),
            "--only",
            "kernel:vm.swappiness",
            "--only",
            "users:mallory",
        ],
    );
    proposed.expect_ok();
    let text = proposed.stdout_str();
    assert!(
        text.contains("CONFLICT  kernel.sysctl:vm.swappiness"),
        "{text}"
    );
    assert!(text.contains("back out  users.users:mallory"), "{text}");
    let jobs = admin(&server, &["rollback", "list", "--format", "json"]);
    let id = jobs.json()[0]["id"].as_i64().expect("job id");
    let plan = &job(&server, id)["plan"];
    let steps = plan["steps"].to_string();
    assert!(
        !steps.contains(SYSCTL_FILE),
        "a conflicting row has steps: {steps}"
    );

    // Only the host's agent, signing with its enrollment key, may ask for jobs.
    let agent_id = serde_json::from_str::<Value>(
        &fs::read_to_string(state.path().join("agent/agent.json")).unwrap(),
    )
    .unwrap()["agent_id"]
        .as_str()
        .unwrap()
        .to_string();
    let body = format!(r#"{{"agent_id":"{agent_id}","at_ms":0}}"#);
    for headers in [&[][..], &["X-Keel-Signature: AAAA"][..]] {
        assert_eq!(
            post_status(&server, "/api/v1/agent/rollbacks/next", &body, headers),
            401,
            "an unsigned or wrongly signed job request must be refused"
        );
    }
    let admin_header = format!("Authorization: Bearer {}", server.admin.as_deref().unwrap());
    assert_eq!(
        post_status(
            &server,
            "/api/v1/agent/rollbacks/next",
            &body,
            &[&admin_header]
        ),
        401,
        "an admin token is not an agent's signature"
    );

    // Rejected: the agent never applies it.
    let log = state.path().join("agent.log");
    let _agent = AgentProc::start(state.path(), root.path(), &log);
    let rejected = admin(
        &server,
        &[
            "rollback",
            "reject",
            &id.to_string(),
            "--by",
            "bob",
            "--reason",
            "not now",
            "--format",
            "json",
        ],
    );
    rejected.expect_ok();
    let r = rejected.json();
    assert_eq!(r["status"], "rejected", "{r}");
    assert_eq!(r["decided_by"], "bob");
    assert_eq!(r["reason"], "not now");
    std::thread::sleep(Duration::from_secs(4));
    assert!(passwd_has(&root, USER), "a rejected rollback was applied");
    assert_eq!(root.read(SYSCTL_FILE), "vm.swappiness = 5\n");
    // A rejected job cannot be approved afterwards.
    let late = admin(&server, &["rollback", "approve", &id.to_string()]);
    late.expect_code(2);
    assert!(late.stderr.contains("rejected"), "{}", late.stderr);
    assert_eq!(job(&server, id)["status"], "rejected");

    // Failed: an approved job whose step cannot be done ends failed, with the reason. Here
    // the package to purge is needed by another one installed with it.
    install_deb(&root, root.extra_deb());
    let pkg = tempfile::tempdir().unwrap();
    fs::create_dir_all(pkg.path().join("p/DEBIAN")).unwrap();
    fs::write(
        pkg.path().join("p/DEBIAN/control"),
        "Package: keel-needs-tree\nVersion: 1.0\nArchitecture: all\n\
         Maintainer: Keel tests <tests@example.invalid>\nDepends: tree\n\
         Description: needs tree\n",
    )
    .unwrap();
    let deb = pkg.path().join("needs-tree.deb");
    sh(
        "dpkg-deb",
        &[
            "--build",
            pkg.path().join("p").to_str().unwrap(),
            deb.to_str().unwrap(),
        ],
    );
    install_deb(&root, &deb);
    push();
    let ids = profile_ids(&server, "db-1");
    let proposed = admin(
        &server,
        &[
            "rollback",
            "--host",
            "db-1",
            "--to",
            &ids[2].to_string(),
            "--only",
            "packages:tree",
            "--format",
            "json",
        ],
    );
    proposed.expect_ok();
    let id = proposed.json()["id"].as_i64().expect("job id");
    admin(&server, &["rollback", "approve", &id.to_string()]).expect_ok();
    let failed = wait_for("the rollback to fail", Duration::from_secs(120), || {
        let j = job(&server, id);
        matches!(j["status"].as_str(), Some("done" | "failed")).then_some(j)
    });
    assert_eq!(failed["status"], "failed", "{failed}");
    let reason = failed["reason"].as_str().unwrap_or("");
    assert!(reason.contains("purge package tree"), "{reason}");
    assert!(
        reason.contains("keel-needs-tree"),
        "the reason should name what needs it: {reason}"
    );
    assert!(
        root.join("/usr/bin/tree").exists(),
        "the package is still installed"
    );
}

/// `curl -X POST` of a JSON body with extra headers; returns the HTTP status.
fn post_status(server: &ServerProc, path: &str, body: &str, headers: &[&str]) -> u16 {
    let mut cmd = Command::new("curl");
    cmd.args([
        "-sS",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--max-time",
        "20",
        "--cacert",
    ])
    .arg(server.ca())
    .args([
        "-X",
        "POST",
        "-H",
        "Content-Type: application/json",
        "--data",
        body,
    ]);
    for h in headers {
        cmd.args(["-H", h]);
    }
    let out = cmd
        .arg(format!("{}{path}", server.url))
        .output()
        .expect("run curl");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

/// Installs a `.deb` into the root with dpkg.
fn install_deb(root: &DebianRoot, deb: &Path) {
    fs::copy(deb, root.join("/tmp/install.deb")).expect("copy .deb into the root");
    root.chroot(&["dpkg", "--install", "/tmp/install.deb"]);
    fs::remove_file(root.join("/tmp/install.deb")).expect("remove .deb");
}
