//! The server and its agents as real processes over loopback HTTPS: enrollment, uploads as
//! patches, history and diffs through the API, refusals, and delivery after an outage.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;

use crate::support::{keel, tiny_root};

/// A `keel server` process, killed (SIGKILL) when dropped.
struct ServerProc {
    child: Child,
    url: String,
    admin: Option<String>,
    enroll: Option<String>,
    data: PathBuf,
}

impl ServerProc {
    fn start(data: &Path) -> ServerProc {
        Self::start_on(data, "127.0.0.1:0")
    }

    fn start_on(data: &Path, listen: &str) -> ServerProc {
        let mut child = Command::new(env!("CARGO_BIN_EXE_keel"))
            .args(["server", "--data"])
            .arg(data)
            .args(["--listen", listen])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start keel server");
        let stderr = child.stderr.take().expect("piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut url = None;
        let mut admin = None;
        let mut enroll = None;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        // The banner ends with the enroll hint on a first start, or with the CA line otherwise.
        while std::time::Instant::now() < deadline {
            let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) else {
                if url.is_some() && admin.is_none() && child.try_wait().ok().flatten().is_none() {
                    break;
                }
                continue;
            };
            if let Some(rest) = line.strip_prefix("keel server listening on ") {
                url = Some(rest.split_whitespace().next().unwrap_or("").to_string());
            } else if let Some(t) = line.trim().strip_prefix("admin token:") {
                admin = Some(t.trim().to_string());
            } else if let Some(t) = line.trim().strip_prefix("enrollment token:") {
                enroll = Some(t.trim().to_string());
            } else if line.trim().starts_with("keel agent enroll") {
                break;
            }
        }
        let url = url.unwrap_or_else(|| panic!("keel server did not report its address"));
        ServerProc {
            child,
            url,
            admin,
            enroll,
            data: data.to_path_buf(),
        }
    }

    /// `curl` against the API, trusting only the server's CA. Returns (status, body).
    fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut cmd = Command::new("curl");
        cmd.args([
            "-sS",
            "--max-time",
            "20",
            "-w",
            "\n%{http_code}",
            "--cacert",
        ])
        .arg(self.data.join("ca.pem"));
        if let Some(t) = token {
            cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
        }
        let out = cmd
            .arg(format!("{}{path}", self.url))
            .output()
            .expect("run curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, status) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (
            status.trim().parse().unwrap_or(0),
            serde_json::from_str(body).unwrap_or(Value::Null),
        )
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn root_named(name: &str, machine_id: &str) -> TempDir {
    let r = tiny_root();
    std::fs::write(r.path().join("etc/hostname"), format!("{name}\n")).unwrap();
    std::fs::write(r.path().join("etc/machine-id"), format!("{machine_id}\n")).unwrap();
    r
}

fn agent_cmd(state: &Path, root: &Path, args: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = vec!["agent".into()];
    v.extend(args.iter().map(ToString::to_string));
    v.extend([
        "--state-dir".into(),
        state.display().to_string(),
        "--root".into(),
        root.display().to_string(),
    ]);
    v
}

fn push(state: &Path, root: &Path) -> (Option<i32>, Value) {
    let r = keel(&agent_cmd(state, root, &["push", "--json"]));
    (r.code, r.json())
}

#[test]
fn agents_upload_over_https_and_the_server_keeps_history_and_diffs() {
    if crate::support::which("curl").is_none() {
        crate::support::skip("needs curl to call the API");
        return;
    }
    let data = TempDir::new().unwrap();
    let srv = ServerProc::start(data.path());
    let admin = srv
        .admin
        .clone()
        .expect("first start prints an admin token");
    let enroll = srv
        .enroll
        .clone()
        .expect("first start prints an enrollment token");
    let alpha = root_named("alpha", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
    let beta = root_named("beta", "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb");
    let (sa, sb) = (TempDir::new().unwrap(), TempDir::new().unwrap());

    // A wrong enrollment token is refused; the right one enrolls.
    let bad = format!(
        "keel-enroll-00000000000000000000000000000000-{}",
        enroll.rsplit('-').next().unwrap()
    );
    let r = keel(&agent_cmd(
        sa.path(),
        alpha.path(),
        &["enroll", "--server", &srv.url, "--token", &bad],
    ));
    r.expect_code(2);
    assert!(r.stderr.contains("401"), "{}", r.stderr);
    for (s, root) in [(&sa, &alpha), (&sb, &beta)] {
        keel(&agent_cmd(
            s.path(),
            root.path(),
            &["enroll", "--server", &srv.url, "--token", &enroll],
        ))
        .expect_ok();
    }

    // First uploads go whole (blobs on request); then only patches travel.
    let (code, rep) = push(sa.path(), alpha.path());
    assert_eq!(
        (code, rep["delivered"].as_u64()),
        (Some(0), Some(1)),
        "{rep}"
    );
    let (_, rep) = push(sb.path(), beta.path());
    assert_eq!(rep["delivered"], 1, "{rep}");
    let (_, rep) = push(sa.path(), alpha.path());
    assert_eq!(rep["delivered"], 1, "{rep}");
    let steady = rep["bytes_sent"].as_u64().unwrap();
    assert!(
        steady <= 2048,
        "an unchanged profile must cost at most 2 KB on the wire, sent {steady}"
    );

    // A change on alpha arrives as a diff.
    let passwd = alpha.path().join("etc/passwd");
    let mut text = std::fs::read_to_string(&passwd).unwrap();
    text.push_str("mallory:x:0:0::/root:/bin/bash\n");
    std::fs::write(&passwd, text).unwrap();
    let (_, rep) = push(sa.path(), alpha.path());
    assert_eq!(rep["delivered"], 1, "{rep}");

    let (status, hosts) = srv.get("/api/v1/hosts", Some(&admin));
    assert_eq!(status, 200);
    let names: Vec<&str> = hosts
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["alpha", "beta"]);
    let (_, profiles) = srv.get("/api/v1/hosts/alpha/profiles", Some(&admin));
    let profiles = profiles.as_array().unwrap().clone();
    assert_eq!(profiles.len(), 3);
    let newest = profiles[0]["id"].as_i64().unwrap();
    let oldest = profiles[2]["id"].as_i64().unwrap();
    assert_eq!(
        profiles[0]["previous"], profiles[1]["hash"],
        "profiles form a hash chain"
    );
    let (_, changes) = srv.get(&format!("/api/v1/profiles/{newest}/changes"), Some(&admin));
    let mallory = changes
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["table"] == "users" && c["key"] == "mallory" && c["kind"] == "added");
    assert!(
        mallory,
        "the new user is among the stored changes: {changes}"
    );
    let (status, diff) = srv.get(
        &format!("/api/v1/diff?from={oldest}&to={newest}"),
        Some(&admin),
    );
    assert_eq!(status, 200);
    assert!(
        diff.as_array()
            .unwrap()
            .iter()
            .any(|c| c["key"] == "mallory"),
        "{diff}"
    );

    // Credentials: none, unknown, and an enrollment token are all refused.
    assert_eq!(srv.get("/api/v1/hosts", None).0, 401);
    assert_eq!(srv.get("/api/v1/hosts", Some("keel-admin-nope")).0, 401);
    assert_eq!(srv.get("/api/v1/hosts", Some(&enroll)).0, 403);

    // Alpha's agent cannot write beta's profile: refused, store unchanged.
    let (_, before) = srv.get("/api/v1/hosts/beta/profiles", Some(&admin));
    let (_, rep) = push(sa.path(), beta.path());
    assert_eq!(
        (rep["delivered"].as_u64(), rep["rejected"].as_u64()),
        (Some(0), Some(1)),
        "{rep}"
    );
    let (_, after) = srv.get("/api/v1/hosts/beta/profiles", Some(&admin));
    assert_eq!(before, after);
    let (_, metrics) = (
        0,
        std::process::Command::new("curl")
            .args(["-sS", "--cacert"])
            .arg(data.path().join("ca.pem"))
            .arg(format!("{}/metrics", srv.url))
            .output()
            .unwrap(),
    );
    let metrics = String::from_utf8_lossy(&metrics.stdout).into_owned();
    assert!(
        metrics.contains("keel_uploads_refused_total{reason=\"wrong_host\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("keel_profiles 4"), "{metrics}");
}

#[test]
fn captures_made_while_the_server_is_down_arrive_in_order_afterwards() {
    if crate::support::which("curl").is_none() {
        crate::support::skip("needs curl to call the API");
        return;
    }
    let data = TempDir::new().unwrap();
    let srv = ServerProc::start(data.path());
    let url = srv.url.clone();
    let listen = url.trim_start_matches("https://").to_string();
    let enroll = srv.enroll.clone().unwrap();
    let admin = srv.admin.clone().unwrap();
    let root = root_named("gamma", "cccccccccccccccccccccccccccccccc");
    let state = TempDir::new().unwrap();
    keel(&agent_cmd(
        state.path(),
        root.path(),
        &["enroll", "--server", &url, "--token", &enroll],
    ))
    .expect_ok();
    assert_eq!(push(state.path(), root.path()).1["delivered"], 1);
    drop(srv);

    // Server gone: captures wait in the spool.
    for pending in 1..=3u64 {
        let (code, rep) = push(state.path(), root.path());
        assert_eq!(code, Some(1), "{rep}");
        assert_eq!(
            (rep["delivered"].as_u64(), rep["pending"].as_u64()),
            (Some(0), Some(pending)),
            "{rep}"
        );
    }

    // Back on the same address and data: no new tokens, and everything arrives, oldest first.
    let srv = ServerProc::start_on(data.path(), &listen);
    assert!(
        srv.admin.is_none(),
        "tokens are printed on the first start only"
    );
    let (code, rep) = push(state.path(), root.path());
    assert_eq!(
        (code, rep["delivered"].as_u64(), rep["pending"].as_u64()),
        (Some(0), Some(4), Some(0)),
        "{rep}"
    );
    let (_, profiles) = srv.get("/api/v1/hosts/gamma/profiles", Some(&admin));
    let profiles = profiles.as_array().unwrap();
    assert_eq!(profiles.len(), 5, "lost = 0");
    let captured: Vec<i64> = profiles
        .iter()
        .rev()
        .map(|p| p["captured_at"].as_i64().unwrap())
        .collect();
    assert!(
        captured.windows(2).all(|w| w[0] < w[1]),
        "stored in capture order: {captured:?}"
    );
}
