//! The admin CLI against a real server over loopback HTTPS: `keel hosts`, `keel profiles HOST`
//! and `keel diff HOST --from ID --to ID`, and how each refuses bad credentials, unknown hosts
//! and bad usage.

use std::path::Path;

use serde_json::Value;
use tempfile::TempDir;

use crate::support::{agent_cmd, keel, push, root_named, Run, ServerProc};

/// `keel ARGS --server URL --token TOKEN --ca CA`.
fn cli(srv: &ServerProc, token: &str, args: &[&str]) -> Run {
    let mut v: Vec<String> = args.iter().map(ToString::to_string).collect();
    v.extend([
        "--server".into(),
        srv.url.clone(),
        "--token".into(),
        token.into(),
        "--ca".into(),
        srv.ca().display().to_string(),
    ]);
    keel(&v)
}

/// A server with two enrolled hosts: alpha with three profiles, the last adding user mallory,
/// and beta with one. Returns the server, the admin token and the enrollment token.
fn server_with_history(data: &Path) -> (ServerProc, String, String) {
    let srv = ServerProc::start(data);
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
    for (s, root) in [(&sa, &alpha), (&sb, &beta)] {
        keel(&agent_cmd(
            s.path(),
            root.path(),
            &["enroll", "--server", &srv.url, "--token", &enroll],
        ))
        .expect_ok();
    }
    for _ in 0..2 {
        let (code, rep) = push(sa.path(), alpha.path());
        assert_eq!(
            (code, rep["delivered"].as_u64()),
            (Some(0), Some(1)),
            "{rep}"
        );
    }
    let passwd = alpha.path().join("etc/passwd");
    let mut text = std::fs::read_to_string(&passwd).unwrap();
    text.push_str("mallory:x:0:0::/root:/bin/bash\n");
    std::fs::write(&passwd, text).unwrap();
    let (code, rep) = push(sa.path(), alpha.path());
    assert_eq!(
        (code, rep["delivered"].as_u64()),
        (Some(0), Some(1)),
        "{rep}"
    );
    let (code, rep) = push(sb.path(), beta.path());
    assert_eq!(
        (code, rep["delivered"].as_u64()),
        (Some(0), Some(1)),
        "{rep}"
    );
    (srv, admin, enroll)
}

fn ids(profiles: &Value) -> Vec<i64> {
    profiles
        .as_array()
        .expect("an array of profiles")
        .iter()
        .map(|p| p["id"].as_i64().expect("profile id"))
        .collect()
}

#[test]
fn admin_cli_lists_hosts_and_profiles_and_diffs_stored_profiles() {
    let data = TempDir::new().unwrap();
    let (srv, admin, _) = server_with_history(data.path());

    // keel hosts: both hosts, by name, as the API returns them; paging changes nothing.
    let r = cli(&srv, &admin, &["hosts", "--format", "json"]);
    r.expect_ok();
    let hosts = r.json();
    let names: Vec<&str> = hosts
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alpha", "beta"], "{hosts}");
    assert!(hosts[0]["last_profile_id"].is_i64(), "{hosts}");
    let paged = cli(
        &srv,
        &admin,
        &["hosts", "--format", "json", "--page-size", "1"],
    );
    assert_eq!(paged.expect_ok().json(), hosts, "one host per page");

    let r = cli(&srv, &admin, &["hosts"]);
    let text = r.expect_ok().stdout_str();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "a header and two hosts:\n{text}");
    assert!(lines[0].starts_with("HOST"), "{text}");
    assert!(
        lines[1].starts_with("alpha ") && lines[2].starts_with("beta "),
        "{text}"
    );
    assert_eq!(
        lines[1].split_whitespace().nth(1),
        Some("up"),
        "a host that just sent a profile is up: {text}"
    );
    let last_seen = lines[1].split_whitespace().nth(2).unwrap();
    assert!(
        last_seen.len() == 20 && last_seen.ends_with('Z') && last_seen.as_bytes()[10] == b'T',
        "last seen is RFC 3339: {text}"
    );

    // keel profiles: newest first, chained; --limit keeps the newest.
    let r = cli(&srv, &admin, &["profiles", "alpha", "--format", "json"]);
    let profiles = r.expect_ok().json();
    let alpha_ids = ids(&profiles);
    assert_eq!(alpha_ids.len(), 3, "{profiles}");
    assert!(
        alpha_ids.windows(2).all(|w| w[0] > w[1]),
        "newest first: {alpha_ids:?}"
    );
    assert_eq!(profiles[0]["previous"], profiles[1]["hash"], "{profiles}");
    assert_eq!(profiles[1]["previous"], profiles[2]["hash"], "{profiles}");
    assert_eq!(hosts[0]["last_profile_id"].as_i64(), Some(alpha_ids[0]));
    let r = cli(
        &srv,
        &admin,
        &["profiles", "alpha", "--limit", "2", "--format", "json"],
    );
    assert_eq!(ids(&r.expect_ok().json()), alpha_ids[..2]);
    let r = cli(&srv, &admin, &["profiles", "alpha"]);
    let text = r.expect_ok().stdout_str();
    assert!(text.starts_with("ID "), "{text}");
    let short = &profiles[0]["hash"].as_str().unwrap()[..12];
    assert!(text.contains(short), "short hash {short} in:\n{text}");
    assert_eq!(text.lines().count(), 4, "{text}");

    // keel diff HOST --from --to: the planted user, as the local diff reports changes.
    let (oldest, newest) = (alpha_ids[2].to_string(), alpha_ids[0].to_string());
    let r = cli(
        &srv,
        &admin,
        &[
            "diff", "alpha", "--from", &oldest, "--to", &newest, "--format", "json",
        ],
    );
    r.expect_code(1);
    let changes = r.json();
    let mallory = changes
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["table"] == "users" && c["key"] == "mallory")
        .unwrap_or_else(|| panic!("the planted user is reported: {changes}"));
    assert_eq!(mallory["kind"], "added", "{mallory}");
    let mut keys: Vec<&str> = mallory
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "field",
            "key",
            "kind",
            "new",
            "old",
            "section",
            "table",
            "volatility"
        ],
        "{mallory}"
    );
    let r = cli(
        &srv,
        &admin,
        &["diff", "alpha", "--from", &oldest, "--to", &newest],
    );
    let text = r.expect_code(1).stdout_str();
    assert!(text.contains("+ mallory"), "{text}");
    assert!(text.contains(" added, "), "{text}");

    // The same profile on both sides: no changes, exit 0.
    let r = cli(
        &srv,
        &admin,
        &[
            "diff", "alpha", "--from", &newest, "--to", &newest, "--format", "json",
        ],
    );
    assert_eq!(r.expect_ok().stdout_str(), "[]\n");
    let r = cli(
        &srv,
        &admin,
        &["diff", "alpha", "--from", &oldest, "--to", &oldest],
    );
    assert_eq!(r.expect_ok().stdout_str(), "no changes\n");

    // Beta's profile is not alpha's, and a profile that does not exist is named.
    let r = cli(&srv, &admin, &["profiles", "beta", "--format", "json"]);
    let beta_id = ids(&r.expect_ok().json())[0].to_string();
    let r = cli(
        &srv,
        &admin,
        &["diff", "alpha", "--from", &oldest, "--to", &beta_id],
    );
    r.expect_code(2);
    assert!(
        r.stderr
            .contains(&format!("profile {beta_id} is not a profile of alpha")),
        "{}",
        r.stderr
    );
    assert!(r.stdout.is_empty());
    let r = cli(
        &srv,
        &admin,
        &["diff", "alpha", "--from", &oldest, "--to", "999999"],
    );
    r.expect_code(2);
    assert!(r.stderr.contains("no profile 999999"), "{}", r.stderr);
}

#[test]
fn admin_cli_refuses_bad_credentials_unknown_hosts_and_bad_usage() {
    let data = TempDir::new().unwrap();
    let (srv, admin, enroll) = server_with_history(data.path());
    let error_with_hint = |r: &Run, needles: &[&str]| {
        r.expect_code(2);
        assert!(r.stderr.starts_with("error: "), "{}", r.stderr);
        for n in needles {
            assert!(r.stderr.contains(n), "{n:?} in:\n{}", r.stderr);
        }
        assert!(r.stdout.is_empty(), "{}", r.stdout_str());
    };

    // A wrong token: the server's 401 message and where the right token comes from.
    for args in [
        &["hosts"][..],
        &["profiles", "alpha"],
        &["diff", "alpha", "--from", "1", "--to", "2"],
    ] {
        let r = cli(&srv, "keel-admin-wrong", args);
        error_with_hint(&r, &["401", "unknown token", "hint: use the admin token"]);
    }
    // The enrollment token only enrolls.
    let r = cli(&srv, &enroll, &["hosts", "--format", "json"]);
    error_with_hint(
        &r,
        &["HTTP 403: ", "hint: this needs an admin or read-only token"],
    );

    // Unknown hosts.
    let r = cli(&srv, &admin, &["profiles", "nosuch"]);
    error_with_hint(&r, &["no host nosuch", "hint: `keel hosts`"]);
    let r = cli(
        &srv,
        &admin,
        &["diff", "nosuch", "--from", "1", "--to", "2"],
    );
    error_with_hint(&r, &["no host nosuch"]);

    // Usage: --from without --to, --to without --from, two profiles and --from/--to, one
    // profile alone.
    for (args, needle) in [
        (&["diff", "alpha", "--from", "1"][..], "--from needs --to"),
        (&["diff", "alpha", "--to", "1"], "--to needs --from"),
        (
            &["diff", "a.keel", "b.keel", "--from", "1", "--to", "2"],
            "give only the host",
        ),
        (&["diff", "a.keel"], "missing the newer profile"),
    ] {
        let r = cli(&srv, &admin, args);
        error_with_hint(&r, &[needle, "hint: `keel diff OLD NEW`"]);
    }

    // Missing options, each with its hint; the environment works as well as the flags.
    let r = keel(&["hosts"]);
    error_with_hint(&r, &["no server given", "hint: pass --server"]);
    let r = keel(&["hosts", "--server", &srv.url]);
    error_with_hint(&r, &["no API token given", "hint:"]);
    let r = keel(&["hosts", "--server", &srv.url, "--token", &admin]);
    error_with_hint(&r, &["no CA certificate given", "hint:"]);
    let ca = srv.ca().display().to_string();
    let mut cmd = std::process::Command::new(crate::support::KEEL);
    let out = cmd
        .args(["hosts", "--format", "json"])
        .env("KEEL_SERVER", &srv.url)
        .env("KEEL_TOKEN", &admin)
        .env("KEEL_CA", &ca)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A CA that is not the server's: refused by TLS, with the hint about --ca.
    let other = TempDir::new().unwrap();
    let other_srv = ServerProc::start(other.path());
    let r = keel(&[
        "hosts",
        "--server",
        &srv.url,
        "--token",
        &admin,
        "--ca",
        &other_srv.ca().display().to_string(),
    ]);
    error_with_hint(&r, &["cannot reach", &srv.url, "hint: --ca"]);
    drop(other_srv);

    // Nobody listening: the error names the URL.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dead = format!("https://127.0.0.1:{port}");
    let r = keel(&["hosts", "--server", &dead, "--token", &admin, "--ca", &ca]);
    error_with_hint(&r, &[&format!("cannot reach {dead}/api/v1/hosts"), "hint:"]);
}
