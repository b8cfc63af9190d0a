//! The server and its agents as real processes over loopback HTTPS: enrollment, uploads as
//! patches, history and diffs through the API, refusals, and delivery after an outage.

use tempfile::TempDir;

use crate::support::{agent_cmd, keel, push, root_named, ServerProc};

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
    let metrics = std::process::Command::new("curl")
        .args(["-sS", "--cacert"])
        .arg(data.path().join("ca.pem"))
        .arg(format!("{}/metrics", srv.url))
        .output()
        .unwrap();
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
    let listen = srv.listen();
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

#[test]
fn keel_up_runs_the_server_and_watches_this_machine() {
    use std::os::unix::fs::PermissionsExt as _;
    let root = root_named("solo", "5050505050505050505050505050505a");
    let dir = TempDir::new().unwrap();
    let data = dir.path().join("keel-data");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let run = |count: &str| {
        keel(&[
            "up",
            "--data",
            data.to_str().unwrap(),
            "--listen",
            &listen,
            "--root",
            root.path().to_str().unwrap(),
            "--every",
            "1s",
            "--count",
            count,
        ])
    };
    let r = run("2");
    let out = r.expect_ok().stdout_str();
    assert!(
        out.contains("this machine is enrolled as host solo"),
        "{out}"
    );
    assert!(out.contains("profile 1 of solo stored: the first"), "{out}");
    assert!(
        out.contains(&format!(
            "web UI: https://{listen}/ui/ (log in as admin, password "
        )),
        "the first run makes the UI's admin account: {out}"
    );
    assert!(
        out.contains("profile 2 of solo stored: no configuration changes"),
        "{out}"
    );
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700, "the data directory is private");
    let env = data.join("keel.env");
    assert_eq!(mode(&env), 0o600, "the token file is private");
    let env_text = std::fs::read_to_string(&env).unwrap();
    assert!(
        env_text.contains(&format!("KEEL_SERVER=https://{listen}")),
        "{env_text}"
    );

    // A second run keeps the history, the enrollment and the admin token, and diffs a change.
    let passwd = root.path().join("etc/passwd");
    let mut text = std::fs::read_to_string(&passwd).unwrap();
    text.push_str("bob:x:1001:1001::/home/bob:/bin/sh\n");
    std::fs::write(&passwd, text).unwrap();
    let out = run("1").expect_ok().stdout_str();
    assert!(
        out.contains("profile 3 of solo stored: ") && out.contains("added users/users bob"),
        "{out}"
    );
    assert!(
        out.contains(&format!("web UI: https://{listen}/ui/\n")),
        "the password is shown once: {out}"
    );
    assert_eq!(std::fs::read_to_string(&env).unwrap(), env_text);
}
