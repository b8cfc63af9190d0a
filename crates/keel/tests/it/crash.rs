//! "Nothing lost": the server is killed (SIGKILL) again and again while three agents upload;
//! after it comes back every capture is stored exactly once, intact, in an unbroken chain.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use crate::support::{agent_cmd, keel, root_named, ServerProc};

/// Times the server is killed during the churn.
const KILLS: usize = 10;
/// Most pushes one agent makes during the churn.
const MAX_PUSHES: usize = 250;

/// A deterministic xorshift generator: "random" intervals that replay the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A duration in `lo..hi` milliseconds.
    fn ms(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.next() % (hi - lo))
    }
}

/// A free loopback port below the kernel's ephemeral range, so that no outgoing connection
/// of an agent can take it while the server is down.
fn free_port() -> u16 {
    let range =
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
    let low: u16 = range
        .split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(32768);
    let (first, last) = if low > 12_000 {
        (10_000, low - 1)
    } else {
        (49_152, 60_999)
    };
    let span = u32::from(last - first);
    let start = std::process::id() % span;
    (0..span)
        .map(|i| first + ((start + i) % span) as u16)
        .find(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .expect("a free loopback port")
}

/// What one `keel agent push --json` ended with.
#[derive(Debug)]
struct Push {
    code: Option<i32>,
    report: Value,
    stderr: String,
}

fn push(state: &Path, root: &Path) -> Push {
    let r = keel(&agent_cmd(state, root, &["push", "--json"]));
    let report = serde_json::from_slice(&r.stdout).unwrap_or(Value::Null);
    Push {
        code: r.code,
        report,
        stderr: r.stderr,
    }
}

/// What is wrong with a push, if anything: a push ends delivered (exit 0, nothing waiting) or
/// with the server away (exit 1, something waiting); it never errs and never loses a capture.
fn violation(p: &Push) -> Option<String> {
    let pending = p.report["pending"].as_u64();
    let ok = match p.code {
        Some(0) => pending == Some(0) && p.report["stopped"].is_null(),
        Some(1) => pending.is_some_and(|n| n > 0) && p.report["stopped"].is_string(),
        _ => false,
    } && p.report["rejected"].as_u64() == Some(0);
    (!ok).then(|| {
        format!(
            "`keel agent push --json` exited {:?}; report: {}; stderr: {}",
            p.code,
            p.report,
            p.stderr.trim()
        )
    })
}

#[allow(clippy::print_stderr)]
#[test]
fn crash_nothing_is_lost_when_the_server_is_killed_during_uploads() {
    if crate::support::which("curl").is_none() {
        crate::support::skip("needs curl to call the API");
        return;
    }
    let data = TempDir::new().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let mut srv = Some(ServerProc::start_on(data.path(), &listen));
    let first = srv.as_ref().unwrap();
    let admin = first
        .admin
        .clone()
        .expect("first start prints an admin token");
    let enroll = first
        .enroll
        .clone()
        .expect("first start prints an enrollment token");
    let url = first.url.clone();

    let agents: Vec<(String, TempDir, TempDir)> = (1..=3)
        .map(|i| {
            let name = format!("crash{i}");
            let root = root_named(&name, &format!("{i}").repeat(32));
            let state = TempDir::new().unwrap();
            keel(&agent_cmd(
                state.path(),
                root.path(),
                &["enroll", "--server", &url, "--token", &enroll],
            ))
            .expect_ok();
            (name, root, state)
        })
        .collect();

    // The churn: agents push in their own threads, one push after another, while this thread
    // kills the server at irregular intervals, leaves it down a moment, and restarts it on the
    // same address and data. The last kill leaves it down.
    let stop = AtomicBool::new(false);
    let pushes: Vec<Mutex<Vec<Push>>> = agents.iter().map(|_| Mutex::new(Vec::new())).collect();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let started = Instant::now();
    std::thread::scope(|s| {
        for ((_, root, state), log) in agents.iter().zip(&pushes) {
            let stop = &stop;
            s.spawn(move || {
                for n in 0..MAX_PUSHES {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    // Now and then a new file content, so uploads also carry blobs.
                    if n % 3 == 0 {
                        std::fs::write(
                            root.path().join("etc/cron.d/backup"),
                            format!("{n} 3 * * * root /usr/local/bin/backup\n"),
                        )
                        .unwrap();
                    }
                    let p = push(state.path(), root.path());
                    log.lock().unwrap().push(p);
                    std::thread::sleep(Duration::from_millis(50));
                }
            });
        }
        for k in 0..KILLS {
            std::thread::sleep(rng.ms(500, 1500));
            drop(srv.take()); // SIGKILL, then reaped
            if k + 1 < KILLS {
                std::thread::sleep(rng.ms(0, 400));
                srv = Some(ServerProc::start_on(data.path(), &listen));
            }
        }
        stop.store(true, Ordering::SeqCst);
    });
    let churn = started.elapsed();

    // Back for good: each agent pushes until its spool is empty.
    let srv = ServerProc::start_on(data.path(), &listen);
    assert!(srv.admin.is_none(), "a restart makes no new tokens");
    for ((_, root, state), log) in agents.iter().zip(&pushes) {
        for _ in 0..5 {
            let p = push(state.path(), root.path());
            let done = p.code == Some(0) && p.report["pending"].as_u64() == Some(0);
            log.lock().unwrap().push(p);
            if done {
                break;
            }
        }
    }

    let mut problems: Vec<String> = Vec::new();
    let (mut captures_all, mut stored_all, mut outages_seen) = (0, 0, 0);
    // Why pushes stopped: connection refused (server down) or cut mid-request (killed).
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    for ((name, _, state), log) in agents.iter().zip(&pushes) {
        let log = log.lock().unwrap();
        problems.extend(
            log.iter()
                .filter_map(violation)
                .map(|v| format!("{name}: {v}")),
        );
        outages_seen += log.iter().filter(|p| p.code == Some(1)).count();
        for why in log.iter().filter_map(|p| p.report["stopped"].as_str()) {
            let why = if why.contains("Connection refused") {
                "connection refused (server down)"
            } else if why.contains("reset by peer") || why.contains("eof") {
                "connection cut mid-request (server killed)"
            } else {
                why
            };
            *reasons.entry(why.to_string()).or_default() += 1;
        }
        let captures = log.len();
        let delivered: u64 = log
            .iter()
            .filter_map(|p| p.report["delivered"].as_u64())
            .sum();
        let last = log.last().expect("pushes");
        if last.report["pending"].as_u64() != Some(0) {
            problems.push(format!(
                "{name}: spool not empty at the end: {}",
                last.report
            ));
        }
        if state.path().join("agent/rejected").exists() {
            problems.push(format!("{name}: the agent has rejected captures"));
        }

        let (status, profiles) = srv.get(
            &format!("/api/v1/hosts/{name}/profiles?limit=1000"),
            Some(&admin),
        );
        assert_eq!(status, 200, "{profiles}");
        let profiles = profiles.as_array().expect("profiles").clone();
        assert!(profiles.len() < 1000, "more than one page");
        let stored = profiles.len();
        eprintln!(
            "{name}: captures {captures}, delivered {delivered}, stored {stored}, lost {}",
            captures as i64 - stored as i64
        );
        if stored != captures || delivered != captures as u64 {
            problems.push(format!(
                "{name}: {captures} captures, {delivered} acknowledged, {stored} stored"
            ));
        }
        captures_all += captures;
        stored_all += stored;

        // Oldest first: an unbroken chain, no hash twice, captured in order, each one whole.
        let oldest_first: Vec<&Value> = profiles.iter().rev().collect();
        let mut seen = HashSet::new();
        for (i, p) in oldest_first.iter().enumerate() {
            let hash = p["hash"].as_str().unwrap_or_default();
            if !seen.insert(hash.to_string()) {
                problems.push(format!("{name}: hash {hash} stored twice"));
            }
            let expected_previous = if i == 0 {
                Value::Null
            } else {
                oldest_first[i - 1]["hash"].clone()
            };
            if p["previous"] != expected_previous {
                problems.push(format!(
                    "{name}: profile {} chains to {}, expected {expected_previous}",
                    p["id"], p["previous"]
                ));
            }
            if i > 0 && p["captured_at"].as_i64() <= oldest_first[i - 1]["captured_at"].as_i64() {
                problems.push(format!("{name}: profile {} stored out of order", p["id"]));
            }
            let (status, full) = srv.get(&format!("/api/v1/profiles/{}", p["id"]), Some(&admin));
            if status != 200 || full["summary"]["hash"] != p["hash"] {
                problems.push(format!(
                    "{name}: profile {} does not read back: HTTP {status}: {}",
                    p["id"], full["error"]
                ));
            }
        }
    }
    eprintln!(
        "nothing lost: {KILLS} kills in {:.1}s of churn; {outages_seen} pushes found the server \
         away; captures {captures_all}, stored {stored_all}, lost {}",
        churn.as_secs_f64(),
        captures_all as i64 - stored_all as i64
    );
    eprintln!("pushes stopped by: {reasons:?}");
    assert!(
        outages_seen > 0,
        "no push ever found the server away: the test did not test anything"
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
