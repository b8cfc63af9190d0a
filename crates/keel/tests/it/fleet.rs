//! A small fleet as real processes: one server with a webhook receiver and a mailbox, three
//! agents on their own schedules, each with its own root. Profiles arrive and diff; a rule
//! alert reaches both receivers; an agent stopped goes missing after its grace and comes back;
//! alerts are listed, acknowledged and resolved with `keel alerts`.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use crate::http_server::HttpReceiver;
use crate::smtp_server::SmtpSink;
use crate::support::{agent_cmd, keel, root_named, ServerProc, KEEL};

/// A `keel agent run` process, killed when dropped.
struct AgentProc(Child);

impl AgentProc {
    fn start(state: &std::path::Path, root: &std::path::Path) -> AgentProc {
        let child = Command::new(KEEL)
            .args(agent_cmd(state, root, &["run"]))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
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

/// Polls `probe` every 100 ms until it gives a value, or fails the test after `limit`.
fn wait_for<T>(what: &str, limit: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn host<'a>(hosts: &'a Value, name: &str) -> &'a Value {
    hosts
        .as_array()
        .and_then(|a| a.iter().find(|h| h["name"] == name))
        .unwrap_or_else(|| panic!("no host {name} in {hosts}"))
}

/// Webhook messages received so far, as JSON.
fn messages(hook: &HttpReceiver) -> Vec<Value> {
    hook.requests()
        .iter()
        .map(crate::http_server::Recorded::json)
        .collect()
}

/// The first message announcing `alertname` for `host` with `status`.
fn find_message(hook: &HttpReceiver, alertname: &str, host: &str, status: &str) -> Option<Value> {
    messages(hook).into_iter().find(|m| {
        m["alerts"].as_array().into_iter().flatten().any(|a| {
            a["labels"]["alertname"] == alertname
                && a["labels"]["host"] == host
                && a["status"] == status
        })
    })
}

#[test]
#[allow(clippy::too_many_lines)]
fn a_fleet_on_schedules_with_rule_alerts_missing_hosts_webhooks_and_email() {
    if crate::support::which("curl").is_none() {
        crate::support::skip("needs curl to call the API");
        return;
    }
    let Some(smtp) = SmtpSink::start_or_skip() else {
        return;
    };
    let hook = HttpReceiver::start(Vec::new());
    let data = TempDir::new().unwrap();
    let settings = data.path().join("settings.toml");
    std::fs::write(
        &settings,
        format!(
            r#"
external_url = "https://keel.test.invalid/"

[watch]
interval = "300ms"

[backoff]
initial = "100ms"
max_attempts = 3
jitter = false

[[receivers]]
type = "webhook"
name = "ops"
url = "{}"

[[receivers]]
type = "email"
name = "oncall"
smtp_host = "127.0.0.1"
smtp_port = {}
tls = "none"
from = "keel@test.invalid"
to = ["oncall@test.invalid"]
"#,
            hook.url("/keel"),
            smtp.port
        ),
    )
    .unwrap();
    let srv = ServerProc::start_with(
        data.path(),
        "127.0.0.1:0",
        &["--config", settings.to_str().unwrap()],
    );
    let admin = srv.admin.clone().expect("admin token");
    let enroll = srv.enroll.clone().expect("enrollment token");
    let api = |path: &str| {
        let (status, body) = srv.get(path, Some(&admin));
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    };
    let cli = |args: &[&str]| {
        let mut v: Vec<String> = args.iter().map(ToString::to_string).collect();
        v.extend([
            "--server".into(),
            srv.url.clone(),
            "--token".into(),
            admin.clone(),
            "--ca".into(),
            srv.ca().display().to_string(),
        ]);
        keel(&v)
    };

    // Three hosts, three schedules.
    let schedules: [(&str, &[&str]); 3] = [
        ("alpha", &["--every", "2s", "--grace", "2s"]),
        ("beta", &["--every", "3s", "--grace", "3s"]),
        ("gamma", &["--every", "4s", "--grace", "30s"]),
    ];
    let mut roots = Vec::new();
    let mut states = Vec::new();
    let mut agents = Vec::new();
    for (i, (name, schedule)) in schedules.iter().enumerate() {
        let root = root_named(name, &format!("{i:032x}"));
        let state = TempDir::new().unwrap();
        let mut args = vec!["enroll", "--server", &srv.url, "--token", &enroll];
        args.extend_from_slice(schedule);
        keel(&agent_cmd(state.path(), root.path(), &args)).expect_ok();
        agents.push(AgentProc::start(state.path(), root.path()));
        roots.push(root);
        states.push(state);
    }

    // Every host delivers on its schedule and is up.
    let hosts = wait_for(
        "two profiles from every host",
        Duration::from_secs(30),
        || {
            let hosts = api("/api/v1/hosts");
            let all = ["alpha", "beta", "gamma"].iter().all(|n| {
                api(&format!("/api/v1/hosts/{n}/profiles"))
                    .as_array()
                    .is_some_and(|p| p.len() >= 2)
            });
            all.then_some(hosts)
        },
    );
    for (name, every, grace) in [("alpha", "2s", 2), ("beta", "3s", 3), ("gamma", "4s", 30)] {
        let h = host(&hosts, name);
        assert_eq!(h["schedule"]["expr"], every, "{h}");
        assert_eq!(h["schedule"]["grace_s"], grace, "{h}");
        assert!(matches!(h["state"].as_str(), Some("up" | "late")), "{h}");
    }
    let beta_profiles = api("/api/v1/hosts/beta/profiles");
    let beta_times: Vec<i64> = beta_profiles
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["captured_at"].as_i64().unwrap())
        .collect();
    assert!(
        beta_times[0] - beta_times[1] >= 2500,
        "beta captures every 3 s, not faster: {beta_times:?}"
    );
    assert!(
        api("/api/v1/alerts?status=firing")
            .as_array()
            .unwrap()
            .is_empty(),
        "a quiet fleet raises nothing"
    );

    // A new uid-0 account on beta: its next profile diffs, and the rule alert reaches the
    // webhook (grouped by host) and the mailbox.
    let passwd = roots[1].path().join("etc/passwd");
    let mut text = std::fs::read_to_string(&passwd).unwrap();
    text.push_str("mallory:x:0:0::/root:/bin/bash\n");
    std::fs::write(&passwd, text).unwrap();
    let message = wait_for(
        "the uid0 alert at the webhook",
        Duration::from_secs(30),
        || find_message(&hook, "uid0-account", "beta", "firing"),
    );
    assert_eq!(message["version"], "4");
    assert_eq!(message["receiver"], "ops");
    assert_eq!(message["status"], "firing");
    assert_eq!(
        message["groupLabels"],
        serde_json::json!({ "host": "beta" })
    );
    assert_eq!(message["groupKey"], "{}:{host=\"beta\"}");
    assert_eq!(message["externalURL"], "https://keel.test.invalid/");
    let alert = &message["alerts"][0];
    assert_eq!(alert["labels"]["severity"], "critical");
    assert_eq!(alert["endsAt"], "0001-01-01T00:00:00Z");
    assert!(
        alert["annotations"]["summary"]
            .as_str()
            .is_some_and(|s| s.contains("mallory")),
        "{alert}"
    );
    let fingerprint = alert["fingerprint"].as_str().unwrap().to_string();
    assert_eq!(fingerprint.len(), 16);
    let request = hook
        .requests()
        .into_iter()
        .find(|r| r.json() == message)
        .unwrap();
    assert!(request.header("idempotency-key").is_some());
    let mails = smtp.mails(1);
    let mail = mails
        .iter()
        .find(|m| m.body.contains("mallory"))
        .unwrap_or_else(|| panic!("no mail about mallory: {mails:?}"));
    assert_eq!(mail.rcpt_tos, ["oncall@test.invalid"]);
    assert!(mail.subject.starts_with("[keel]"), "{}", mail.subject);
    assert!(mail.subject.contains("beta"), "{}", mail.subject);

    let newest: Vec<i64> = api("/api/v1/hosts/beta/profiles?limit=10")
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_i64().unwrap())
        .collect();
    let changed = newest
        .iter()
        .find(|id| {
            api(&format!("/api/v1/profiles/{id}/changes"))
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["table"] == "users" && c["key"] == "mallory")
        })
        .expect("a profile whose changes add mallory");
    let changes = api(&format!("/api/v1/profiles/{changed}/changes"));
    assert!(
        changes
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["section"] == "users"
                || c["key"] == "/etc/passwd"
                || c["volatility"] == "volatile"),
        "only the planted change: {changes}"
    );

    // keel alerts lists it; ack and resolve work, and the resolution is delivered.
    let listed = cli(&["alerts", "--format", "json"]);
    let listed = listed.expect_ok().json();
    let uid0 = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["rule"] == "uid0-account")
        .unwrap_or_else(|| panic!("{listed}"));
    let id = uid0["id"].as_i64().unwrap().to_string();
    let text = cli(&["alerts"]).expect_ok().stdout_str();
    assert!(text.starts_with("ID"), "{text}");
    assert!(
        text.contains("uid0-account") && text.contains("beta"),
        "{text}"
    );
    cli(&["alerts", "ack", &id]).expect_ok();
    let acked = cli(&["alerts", "--format", "json"]).expect_ok().json();
    assert!(
        acked
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["id"] == uid0["id"] && a["acked_by"].is_string()),
        "{acked}"
    );
    cli(&["alerts", "resolve", &id]).expect_ok();
    let r = cli(&["alerts", "resolve", &id]);
    r.expect_code(2);
    assert!(r.stderr.contains("no firing alert"), "{}", r.stderr);
    let resolved = wait_for(
        "the resolution at the webhook",
        Duration::from_secs(20),
        || find_message(&hook, "uid0-account", "beta", "resolved"),
    );
    assert_eq!(resolved["status"], "resolved");
    assert_ne!(resolved["alerts"][0]["endsAt"], "0001-01-01T00:00:00Z");
    assert_eq!(resolved["alerts"][0]["fingerprint"], fingerprint.as_str());

    // alpha's agent stops: after 2 s due and 2 s grace it is missing, and both receivers are
    // told; gamma, with a long grace, is not.
    let stopped = Instant::now();
    drop(agents.remove(0));
    let missing = wait_for("alpha's missing alert", Duration::from_secs(30), || {
        find_message(&hook, "profile-missing", "alpha", "firing")
    });
    assert!(
        stopped.elapsed() >= Duration::from_secs(2),
        "not missing before its grace is over"
    );
    assert!(
        missing["alerts"][0]["annotations"]["summary"]
            .as_str()
            .is_some_and(|s| s.contains("alpha") && s.contains("every 2s")),
        "{missing}"
    );
    let hosts = api("/api/v1/hosts");
    assert_eq!(host(&hosts, "alpha")["state"], "missing");
    assert_ne!(host(&hosts, "gamma")["state"], "missing");
    wait_for("the missing mail", Duration::from_secs(20), || {
        smtp.mails(0)
            .into_iter()
            .find(|m| m.body.contains("profile-missing") && m.subject.contains("alpha"))
    });
    let metrics = crate::support::run_with_timeout(
        "curl",
        &[
            "-sS",
            "--cacert",
            srv.ca().to_str().unwrap(),
            &format!("{}/metrics", srv.url),
        ],
        None,
        Duration::from_secs(20),
    )
    .stdout_str();
    assert!(
        metrics.contains("keel_hosts{state=\"missing\"} 1"),
        "{metrics}"
    );

    // alpha comes back: its next profile resolves the alert.
    agents.insert(0, AgentProc::start(states[0].path(), roots[0].path()));
    wait_for(
        "alpha's missing alert resolved",
        Duration::from_secs(30),
        || find_message(&hook, "profile-missing", "alpha", "resolved"),
    );
    let hosts = api("/api/v1/hosts");
    assert!(
        matches!(host(&hosts, "alpha")["state"].as_str(), Some("up" | "late")),
        "{hosts}"
    );

    // Every attempt is in the delivery log, for both receivers, and all succeeded.
    let log = api("/api/v1/deliveries?limit=1000");
    let log = log.as_array().unwrap();
    for receiver in ["ops", "oncall"] {
        assert!(
            log.iter()
                .any(|d| d["receiver"] == receiver && d["ok"] == true),
            "{receiver} in {log:?}"
        );
    }
    assert!(log.iter().all(|d| d["ok"] == true), "{log:?}");
    let text = cli(&["alerts", "deliveries"]).expect_ok().stdout_str();
    assert!(text.contains("oncall") && text.contains("ok 250"), "{text}");
}
