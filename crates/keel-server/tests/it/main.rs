//! The server in process, agents through the agent library: rules raise alerts on ingest,
//! state alerts resolve by themselves, rules are checked before they are saved.

use std::path::Path;

use serde_json::Value;

struct Fixture {
    _rt: tokio::runtime::Runtime,
    server: keel_server::Server,
    data: tempfile::TempDir,
    admin: String,
    enroll: String,
}

impl Fixture {
    fn start() -> Fixture {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let data = tempfile::tempdir().unwrap();
        let server = rt
            .block_on(keel_server::Server::start(&keel_server::Config::new(
                data.path(),
                "127.0.0.1:0".parse().unwrap(),
            )))
            .unwrap();
        let first = server.first_start.clone().unwrap();
        Fixture {
            _rt: rt,
            server,
            data,
            admin: first.admin_token,
            enroll: first.enroll_token,
        }
    }

    fn url(&self) -> String {
        format!("https://{}", self.server.addr)
    }

    fn client(&self) -> ureq::Agent {
        use ureq::tls::{Certificate, RootCerts, TlsConfig};
        let pem = std::fs::read(self.data.path().join("ca.pem")).unwrap();
        let cert = Certificate::from_pem(&pem).unwrap();
        ureq::Agent::config_builder()
            .tls_config(
                TlsConfig::builder()
                    .root_certs(RootCerts::new_with_certs(&[cert]))
                    .build(),
            )
            .http_status_as_error(false)
            .build()
            .new_agent()
    }

    fn call(&self, method: &str, path: &str, token: &str, body: Option<&str>) -> (u16, Value) {
        let c = self.client();
        let url = format!("{}{path}", self.url());
        let auth = format!("Bearer {token}");
        let mut resp = match (method, body) {
            ("GET", _) => c.get(&url).header("Authorization", &auth).call().unwrap(),
            ("PUT", Some(b)) => c
                .put(&url)
                .header("Authorization", &auth)
                .send(b.as_bytes())
                .unwrap(),
            ("POST", b) => c
                .post(&url)
                .header("Authorization", &auth)
                .send(b.unwrap_or("").as_bytes())
                .unwrap(),
            _ => unreachable!(),
        };
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    fn firing(&self) -> Vec<Value> {
        let (status, v) = self.call("GET", "/api/v1/alerts?status=firing", &self.admin, None);
        assert_eq!(status, 200, "{v}");
        v.as_array().unwrap().clone()
    }
}

fn write(root: &Path, path: &str, content: &str) {
    let p = root.join(path);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, content).unwrap();
}

fn tiny_root(dir: &Path) {
    write(dir, "etc/hostname", "web1\n");
    write(dir, "etc/machine-id", "0123456789abcdef0123456789abcdef\n");
    write(dir, "etc/os-release", "ID=debian\nVERSION_ID=\"12\"\n");
    write(
        dir,
        "etc/passwd",
        "root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/sh\n",
    );
    write(dir, "etc/group", "root:x:0:\nalice:x:1000:\n");
}

fn push(agent: &keel_agent::Agent) {
    agent.capture_to_spool().unwrap();
    let r = agent.deliver().unwrap();
    assert_eq!((r.delivered, r.pending, r.rejected), (1, 0, 0), "{r:?}");
}

#[test]
fn rules_raise_and_resolve_alerts_on_ingest() {
    let fx = Fixture::start();
    let root = tempfile::tempdir().unwrap();
    tiny_root(root.path());
    let state = tempfile::tempdir().unwrap();
    let agent = keel_agent::Agent::new(state.path(), root.path());
    agent
        .enroll(
            &fx.url(),
            &fx.enroll,
            "web1",
            "0123456789abcdef0123456789abcdef",
            None,
        )
        .unwrap();
    push(&agent);
    assert!(
        fx.firing().is_empty(),
        "a first profile with nothing wrong raises nothing"
    );

    // A new uid-0 account: the built-in rule fires, once, with Alertmanager-style labels.
    let passwd = std::fs::read_to_string(root.path().join("etc/passwd")).unwrap();
    write(
        root.path(),
        "etc/passwd",
        &format!("{passwd}toor:x:0:0::/root:/bin/bash\n"),
    );
    push(&agent);
    let firing = fx.firing();
    let uid0: Vec<&Value> = firing
        .iter()
        .filter(|a| a["rule"] == "uid0-account")
        .collect();
    assert_eq!(uid0.len(), 1, "{firing:?}");
    assert_eq!(uid0[0]["labels"]["host"], "web1");
    assert_eq!(uid0[0]["labels"]["alertname"], "uid0-account");
    assert_eq!(uid0[0]["severity"], "critical");
    assert!(
        uid0[0]["annotations"]["summary"]
            .as_str()
            .unwrap()
            .contains("toor"),
        "{}",
        uid0[0]
    );
    assert_eq!(uid0[0]["fingerprint"].as_str().unwrap().len(), 16);
    push(&agent);
    assert_eq!(
        fx.firing()
            .iter()
            .filter(|a| a["rule"] == "uid0-account")
            .count(),
        1,
        "no duplicate on the next profile"
    );

    // A state rule: fires while sshd permits root login, resolves by itself afterwards.
    write(root.path(), "etc/ssh/sshd_config", "PermitRootLogin yes\n");
    push(&agent);
    assert!(fx
        .firing()
        .iter()
        .any(|a| a["rule"] == "sshd-permit-root-login"));
    write(root.path(), "etc/ssh/sshd_config", "PermitRootLogin no\n");
    push(&agent);
    assert!(
        !fx.firing()
            .iter()
            .any(|a| a["rule"] == "sshd-permit-root-login"),
        "resolved when the state ends"
    );
    let (_, resolved) = fx.call("GET", "/api/v1/alerts?status=resolved", &fx.admin, None);
    assert!(resolved
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["rule"] == "sshd-permit-root-login" && a["ends_at"].is_i64()));

    // Acknowledge and resolve the change alert; only admins may.
    let id = uid0[0]["id"].as_i64().unwrap();
    assert_eq!(
        fx.call(
            "POST",
            &format!("/api/v1/alerts/{id}/ack"),
            &fx.enroll,
            None
        )
        .0,
        403
    );
    assert_eq!(
        fx.call("POST", &format!("/api/v1/alerts/{id}/ack"), &fx.admin, None)
            .0,
        200
    );
    assert_eq!(
        fx.call(
            "POST",
            &format!("/api/v1/alerts/{id}/resolve"),
            &fx.admin,
            None
        )
        .0,
        200
    );
    assert_eq!(
        fx.call(
            "POST",
            &format!("/api/v1/alerts/{id}/resolve"),
            &fx.admin,
            None
        )
        .0,
        404
    );
    assert!(!fx.firing().iter().any(|a| a["id"] == id));

    // A broken rule is refused with the reason; a good one is saved and fires on the next profile.
    let broken = r#"{"name":"bad","severity":"warning","when":"profile.users.no_such_table.size() > 0","message":"x"}"#;
    let (status, v) = fx.call("PUT", "/api/v1/rules/bad", &fx.admin, Some(broken));
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["code"], "invalid_rule");
    assert!(v["error"].as_str().unwrap().contains("bad"), "{v}");
    let good = r#"{"name":"many-users","severity":"info","when":"profile.users.users.size() > 3","message":"{{ profile.users.users.size() }} users"}"#;
    let (status, v) = fx.call("PUT", "/api/v1/rules/many-users", &fx.admin, Some(good));
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["checked_against"], "web1");
    let passwd = std::fs::read_to_string(root.path().join("etc/passwd")).unwrap();
    write(
        root.path(),
        "etc/passwd",
        &format!("{passwd}bob:x:1001:1001::/home/bob:/bin/sh\n"),
    );
    push(&agent);
    let fired = fx.firing();
    let many: Vec<&Value> = fired.iter().filter(|a| a["rule"] == "many-users").collect();
    assert_eq!(many.len(), 1, "{fired:?}");
    assert_eq!(many[0]["annotations"]["summary"], "4 users");
    let (_, rules) = fx.call("GET", "/api/v1/rules", &fx.admin, None);
    assert!(rules
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["origin"] == "stored" && r["rule"]["name"] == "many-users"));
    assert_eq!(fx.call("GET", "/api/v1/alerts", "wrong-token", None).0, 401);
}
