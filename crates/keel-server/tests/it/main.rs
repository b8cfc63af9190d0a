//! The server in process, agents through the agent library: rules raise alerts on ingest,
//! state alerts resolve by themselves, rules are checked before they are saved.

mod recovery;

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
        Fixture::with(keel_server::Settings::default())
    }

    fn with(settings: keel_server::Settings) -> Fixture {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let data = tempfile::tempdir().unwrap();
        let mut config = keel_server::Config::new(data.path(), "127.0.0.1:0".parse().unwrap());
        config.settings = settings;
        let server = rt.block_on(keel_server::Server::start(&config)).unwrap();
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
            ("PATCH", b) => c
                .patch(&url)
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

/// What the store holds, counted: nothing a refused request sends may change it.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    hosts: i64,
    profiles: i64,
    alerts: usize,
    agents_of_web1: bool,
    rules: usize,
}

impl Fixture {
    fn store(&self) -> keel_store::SqliteStore {
        keel_store::SqliteStore::open(&self.data.path().join("keel.db")).unwrap()
    }

    fn snapshot(&self) -> Snapshot {
        use keel_store::Store as _;
        let s = self.store();
        Snapshot {
            hosts: s.host_count().unwrap(),
            profiles: s.profile_count().unwrap(),
            alerts: s.alerts(None, None, None, 1000).unwrap().len(),
            agents_of_web1: s.host("web1").unwrap().is_some(),
            rules: s.rules().unwrap().len(),
        }
    }

    fn upload(&self, body: &[u8]) -> (u16, Value) {
        let mut resp = self
            .client()
            .post(format!("{}/api/v1/upload", self.url()))
            .header("Content-Type", "application/octet-stream")
            .send(body)
            .unwrap();
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .with_config()
            .limit(1 << 20)
            .read_to_string()
            .unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }
}

/// An enrolled agent's id and key, read from its state directory.
fn identity(state: &Path) -> (String, keel_profile::AgentKey) {
    let config: Value =
        serde_json::from_slice(&std::fs::read(state.join("agent/agent.json")).unwrap()).unwrap();
    let secret: [u8; 32] = std::fs::read(state.join("agent/agent.key"))
        .unwrap()
        .try_into()
        .unwrap();
    (
        config["agent_id"].as_str().unwrap().to_string(),
        keel_profile::AgentKey::from_secret(secret),
    )
}

#[test]
#[allow(clippy::too_many_lines)]
fn bad_input_is_refused_with_a_clear_4xx_and_changes_nothing() {
    use keel_profile::{Blob, ProfileFile, Upload, UploadBody};

    let fx = Fixture::start();
    let (web1_root, db1_root) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    tiny_root(web1_root.path());
    tiny_root(db1_root.path());
    write(db1_root.path(), "etc/hostname", "db1\n");
    write(
        db1_root.path(),
        "etc/machine-id",
        "fedcba9876543210fedcba9876543210\n",
    );
    let (web1_state, db1_state) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let web1 = keel_agent::Agent::new(web1_state.path(), web1_root.path());
    let db1 = keel_agent::Agent::new(db1_state.path(), db1_root.path());
    web1.enroll(
        &fx.url(),
        &fx.enroll,
        "web1",
        "0123456789abcdef0123456789abcdef",
        None,
    )
    .unwrap();
    db1.enroll(
        &fx.url(),
        &fx.enroll,
        "db1",
        "fedcba9876543210fedcba9876543210",
        None,
    )
    .unwrap();
    push(&web1);
    push(&db1);

    // web1's next profile carries a file the server has never seen: a new blob.
    write(web1_root.path(), "etc/app/app.conf", "answer = 42\n");
    let spooled = web1.capture_to_spool().unwrap();
    let file = ProfileFile::decode(&std::fs::read(&spooled).unwrap()).unwrap();
    let hash = file.hash().unwrap();
    let bytes = keel_profile::profile_bytes(&file.profile).unwrap();
    let (web1_id, web1_key) = identity(web1_state.path());
    let (db1_id, db1_key) = identity(db1_state.path());
    let valid = Upload {
        agent_id: web1_id.clone(),
        profile_hash: hash,
        signature: Blob(web1_key.sign(&hash)),
        body: UploadBody::Full(Blob(bytes.clone())),
        blobs: file.blobs.clone(),
    };
    let new_blobs: Vec<keel_profile::Hash> = file.blobs.keys().copied().collect();
    let unseen = |fx: &Fixture| {
        use keel_store::Store as _;
        fx.store().missing_blobs(&new_blobs).unwrap()
    };
    let unseen_before = unseen(&fx);
    assert!(
        !unseen_before.is_empty(),
        "the new file's content is a blob the server lacks"
    );
    let before = fx.snapshot();

    let refused = |what: &str, body: &[u8], status: u16, code: &str| {
        let (got, answer) = fx.upload(body);
        assert_eq!(got, status, "{what}: {answer}");
        if !code.is_empty() {
            assert_eq!(answer["code"], code, "{what}: {answer}");
            assert!(
                answer["error"].as_str().is_some_and(|e| !e.is_empty()),
                "{what}: a message says why: {answer}"
            );
        }
        assert_eq!(fx.snapshot(), before, "{what} changed the store");
        assert_eq!(unseen(&fx), unseen_before, "{what} stored a blob");
    };

    refused("garbage", b"this is not an upload", 400, "malformed");
    let encoded = valid.encode();
    refused(
        "a truncated upload",
        &encoded[..encoded.len() / 2],
        400,
        "malformed",
    );
    refused(
        "an oversized upload",
        &vec![0u8; keel_server::MAX_UPLOAD + 1],
        413,
        "",
    );
    let mut unsigned = valid.clone();
    unsigned.signature = Blob(Vec::new());
    refused(
        "an unsigned upload",
        &unsigned.encode(),
        401,
        "unauthorized",
    );
    let mut wrongly = valid.clone();
    wrongly.signature = Blob(db1_key.sign(&hash));
    refused(
        "an upload signed with another agent's key",
        &wrongly.encode(),
        401,
        "unauthorized",
    );
    let mut stranger = valid.clone();
    stranger.agent_id = "agent-000000000000000000000000".into();
    refused(
        "an upload from an unknown agent",
        &stranger.encode(),
        401,
        "unauthorized",
    );
    // The bytes changed after signing: they no longer hash to what was signed.
    let mut tampered = valid.clone();
    let mut other = file.profile.clone();
    other.meta.hostname.push_str("-evil");
    tampered.body = UploadBody::Full(Blob(keel_profile::profile_bytes(&other).unwrap()));
    refused(
        "a profile changed after signing",
        &tampered.encode(),
        400,
        "malformed",
    );
    // Correctly signed by db1's agent, but the profile is web1's machine.
    let cross = Upload {
        agent_id: db1_id,
        signature: Blob(db1_key.sign(&hash)),
        ..valid.clone()
    };
    refused("a cross-host upload", &cross.encode(), 403, "wrong_host");
    // A blob that does not match its address.
    let mut forged = valid.clone();
    if let Some(b) = forged.blobs.values_mut().next() {
        b.0.push(b'!');
    }
    refused(
        "an upload with a forged blob",
        &forged.encode(),
        400,
        "malformed",
    );

    // The valid upload itself goes through (so the refusals above were about what they
    // changed), and a replay of it stores nothing more.
    let (status, answer) = fx.upload(&encoded);
    assert_eq!(status, 201, "{answer}");
    assert!(
        unseen(&fx).is_empty(),
        "the accepted upload's blobs are stored"
    );
    let after = fx.snapshot();
    assert_eq!(after.profiles, before.profiles + 1);
    let (status, answer) = fx.upload(&encoded);
    assert_eq!(
        (status, answer["code"].as_str()),
        (409, Some("already_stored")),
        "{answer}"
    );
    assert_eq!(fx.snapshot(), after, "a replay stored something");

    // API calls: no token, a wrong token, and tokens that may not do this.
    {
        use keel_store::Store as _;
        fx.store()
            .put_token(
                &keel_profile::Hash::of(b"keel-readonly-test"),
                keel_store::TokenKind::Readonly,
                "test",
            )
            .unwrap();
    }
    let rule = r#"{"name":"r","severity":"info","when":"true","message":"m"}"#;
    let patch = r#"{"paused":true}"#;
    for (token, status) in [
        ("", 401),
        ("keel-admin-0000", 401),
        (fx.enroll.as_str(), 403),
        ("keel-readonly-test", 403),
    ] {
        let (s, v) = fx.call("PUT", "/api/v1/rules/r", token, Some(rule));
        assert_eq!(s, status, "PUT rule with {token:?}: {v}");
        assert!(v["error"].is_string(), "{v}");
        let (s, _) = fx.call("POST", "/api/v1/alerts/1/ack", token, None);
        assert_eq!(s, status, "ack with {token:?}");
        let (s, _) = fx.call("PATCH", "/api/v1/hosts/web1", token, Some(patch));
        assert_eq!(s, status, "PATCH host with {token:?}");
    }
    for (token, status) in [
        ("", 401),
        ("keel-admin-0000", 401),
        (fx.enroll.as_str(), 403),
    ] {
        let (s, _) = fx.call("GET", "/api/v1/hosts", token, None);
        assert_eq!(s, status, "GET hosts with {token:?}");
    }
    let (s, _) = fx.call("GET", "/api/v1/hosts", "keel-readonly-test", None);
    assert_eq!(s, 200, "a read-only token reads");
    assert_eq!(fx.snapshot(), after, "refused API calls changed the store");
    let web1_host = fx.call("GET", "/api/v1/hosts/web1", &fx.admin, None).1;
    assert_eq!(web1_host["paused"], false);

    // Enrollment: malformed, a bad schedule, a bad name, another machine claiming a name.
    for (body, status, code) in [
        ("{", 400, "malformed"),
        (
            r#"{"host":"x","machine_id":"m","public_key":"00"}"#,
            400,
            "malformed",
        ),
        (
            r#"{"host":"bad name!","machine_id":"m","public_key":"0000000000000000000000000000000000000000000000000000000000000000"}"#,
            400,
            "malformed",
        ),
        (
            r#"{"host":"x","machine_id":"m","public_key":"0000000000000000000000000000000000000000000000000000000000000000","schedule":{"kind":"cron","expr":"61 * * * *","tz":"UTC","grace_s":60}}"#,
            400,
            "invalid_schedule",
        ),
        (
            r#"{"host":"web1","machine_id":"another","public_key":"0000000000000000000000000000000000000000000000000000000000000000"}"#,
            409,
            "conflict",
        ),
    ] {
        let (s, v) = fx.call("POST", "/api/v1/enroll", &fx.enroll, Some(body));
        assert_eq!((s, v["code"].as_str()), (status, Some(code)), "{body}: {v}");
    }
    assert_eq!(
        fx.snapshot(),
        after,
        "refused enrollments changed the store"
    );
}
