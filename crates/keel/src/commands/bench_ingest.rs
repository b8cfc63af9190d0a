//! `keel bench ingest`: many simulated agents upload to a real server over loopback HTTPS.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use keel_profile::{make_patch, AgentKey, Blob, Hash, Profile, Upload, UploadBody};

#[derive(Debug, clap::Args)]
pub struct IngestArgs {
    /// Simulated agents (each its own host).
    #[arg(long, default_value_t = 50)]
    agents: usize,
    /// Profiles each agent uploads during the measured phase.
    #[arg(long, default_value_t = 40)]
    profiles: usize,
    /// Concurrent uploading threads.
    #[arg(long, default_value_t = 16)]
    threads: usize,
    /// Profile to base the simulated hosts on (default: a capture of this machine).
    #[arg(long)]
    base: Option<std::path::PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

struct SimAgent {
    id: String,
    key: AgentKey,
    last: Profile,
}

#[allow(clippy::print_stderr)]
pub fn run(a: &IngestArgs) -> anyhow::Result<std::process::ExitCode> {
    if a.agents == 0 || a.profiles == 0 || a.threads == 0 {
        bail!("--agents, --profiles and --threads must be at least 1");
    }
    let base = if let Some(p) = &a.base {
        crate::output::read_profile(p)?
    } else {
        let state = tempfile::tempdir()?;
        let mut opts = keel_collect::Options::new("/");
        opts.state_dir = state.path().to_path_buf();
        keel_collect::capture(&opts)?
    };

    // A real server in this process, on a loopback port, with a fresh data directory.
    let data = tempfile::tempdir()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let server = rt.block_on(keel_server::Server::start(&keel_server::Config::new(
        data.path(),
        "127.0.0.1:0".parse().expect("valid address"),
    )))?;
    let url = format!("https://{}", server.addr);
    let enroll = server
        .first_start
        .clone()
        .context("a fresh server has tokens")?
        .enroll_token;
    let ca = std::fs::read_to_string(data.path().join("ca.pem"))?;
    let client = client(&ca)?;

    eprintln!(
        "enrolling {} agents and sending their first profiles…",
        a.agents
    );
    let mut agents = Vec::with_capacity(a.agents);
    for i in 0..a.agents {
        let key = AgentKey::from_secret(Hash::of(format!("bench agent {i}").as_bytes()).0);
        let machine_id = Hash::of(format!("machine {i}").as_bytes()).to_hex()[..32].to_string();
        let host = format!("bench-{i:05}");
        let body = serde_json::json!({ "host": host, "machine_id": machine_id, "public_key": Hash(key.public_key()).to_hex() });
        let mut resp = client
            .post(format!("{url}/api/v1/enroll"))
            .header("Authorization", &format!("Bearer {enroll}"))
            .header("Content-Type", "application/json")
            .send(body.to_string().as_bytes())?;
        let v: serde_json::Value = serde_json::from_str(&resp.body_mut().read_to_string()?)?;
        let id = v["agent_id"]
            .as_str()
            .context("enrollment answer")?
            .to_string();
        let mut p = base.profile.clone();
        p.meta.machine_id = machine_id;
        p.meta.hostname = host;
        p.meta.started_at_ms = 1;
        let bytes = keel_profile::profile_bytes(&p)?;
        let hash = Hash::of(&bytes);
        let up = Upload {
            agent_id: id.clone(),
            profile_hash: hash,
            signature: Blob(key.sign(&hash)),
            body: UploadBody::Full(Blob(bytes)),
            blobs: base.blobs.clone(),
        };
        let status = client
            .post(format!("{url}/api/v1/upload"))
            .send(&up.encode()[..])?
            .status()
            .as_u16();
        if status != 201 {
            bail!("first upload of {id} answered HTTP {status}");
        }
        agents.push(SimAgent { id, key, last: p });
    }

    // Measured phase: every agent sends `profiles` more, each a patch with fresh timings.
    let latencies = Arc::new(std::sync::Mutex::new(Vec::with_capacity(
        a.agents * a.profiles,
    )));
    let bytes = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let chunks: Vec<Vec<SimAgent>> = {
        let mut c: Vec<Vec<SimAgent>> = (0..a.threads).map(|_| Vec::new()).collect();
        for (i, ag) in agents.into_iter().enumerate() {
            c[i % a.threads].push(ag);
        }
        c
    };
    // The uploads are prepared first, on all cores: in a fleet, agents build their patches on
    // their own machines, so the measured phase is the server's work alone.
    let prepared: Vec<Vec<Vec<u8>>> = std::thread::scope(|s| {
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|mut chunk| {
                let n = a.profiles;
                s.spawn(move || {
                    let mut bodies = Vec::with_capacity(n * chunk.len());
                    for round in 0..n {
                        for ag in &mut chunk {
                            let mut next = ag.last.clone();
                            next.meta.started_at_ms = ag.last.meta.started_at_ms + 1;
                            next.meta.duration_ms = 100 + (round as u64 % 7);
                            for c in &mut next.collectors {
                                c.duration_us = c.duration_us.wrapping_add(round as u64 + 1);
                            }
                            let (Ok(hash), Ok(patch)) = (
                                keel_profile::profile_hash(&next),
                                make_patch(&ag.last, &next),
                            ) else {
                                continue;
                            };
                            let up = Upload {
                                agent_id: ag.id.clone(),
                                profile_hash: hash,
                                signature: Blob(ag.key.sign(&hash)),
                                body: UploadBody::Patch(Box::new(patch)),
                                blobs: std::collections::BTreeMap::new(),
                            };
                            bodies.push(up.encode());
                            ag.last = next;
                        }
                    }
                    bodies
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("preparing uploads does not panic"))
            .collect()
    });

    let started = Instant::now();
    std::thread::scope(|s| {
        for bodies in prepared {
            let (client, url, latencies, bytes, failures) = (
                client.clone(),
                url.clone(),
                Arc::clone(&latencies),
                Arc::clone(&bytes),
                Arc::clone(&failures),
            );
            s.spawn(move || {
                for body in bodies {
                    bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
                    let t = Instant::now();
                    let ok = client
                        .post(format!("{url}/api/v1/upload"))
                        .send(&body[..])
                        .is_ok_and(|r| r.status().as_u16() == 201);
                    let took = t.elapsed();
                    if ok {
                        latencies.lock().expect("not poisoned").push(took);
                    } else {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    let wall = started.elapsed();
    server.shutdown();
    drop(rt);
    // What the measured profiles cost in the database (its file and write-ahead log), per
    // profile: most are stored as patches against the one before.
    let db_bytes: u64 = ["keel.db", "keel.db-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(data.path().join(f)).ok())
        .map(|m| m.len())
        .sum();

    let mut lat = latencies.lock().expect("not poisoned").clone();
    lat.sort();
    let n = lat.len();
    if n == 0 {
        bail!("no upload succeeded");
    }
    let pct = |p: f64| lat[((n as f64 * p).ceil() as usize).clamp(1, n) - 1];
    let rate = n as f64 / wall.as_secs_f64();
    let per_upload = bytes.load(Ordering::Relaxed) / (n as u64 + failures.load(Ordering::Relaxed));
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let mut o = std::io::stdout().lock();
    if a.json {
        let v = serde_json::json!({
            "agents": a.agents, "threads": a.threads, "profiles": n,
            "failures": failures.load(Ordering::Relaxed),
            "wall_s": wall.as_secs_f64(), "profiles_per_s": rate,
            "latency_ms": { "p50": ms(pct(0.5)), "p99": ms(pct(0.99)), "max": ms(lat[n - 1]) },
            "bytes_per_upload": per_upload,
            "database_bytes": db_bytes,
            "database_bytes_per_profile": db_bytes / (n as u64 + a.agents as u64),
        });
        writeln!(o, "{}", serde_json::to_string_pretty(&v)?)?;
    } else {
        writeln!(
            o,
            "ingest over loopback HTTPS: {} agents, {} threads, {n} profiles in {:.2} s",
            a.agents,
            a.threads,
            wall.as_secs_f64()
        )?;
        writeln!(
            o,
            "  throughput   {rate:.0} profiles/s ({} failed)",
            failures.load(Ordering::Relaxed)
        )?;
        writeln!(
            o,
            "  latency      p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            ms(pct(0.5)),
            ms(pct(0.99)),
            ms(lat[n - 1])
        )?;
        writeln!(
            o,
            "  upload size  {per_upload} bytes on average (patch of an unchanged profile)"
        )?;
        writeln!(
            o,
            "  database     {:.1} MB for {} profiles, {} bytes per profile",
            db_bytes as f64 / 1e6,
            n + a.agents,
            db_bytes / (n as u64 + a.agents as u64)
        )?;
    }
    Ok(std::process::ExitCode::SUCCESS)
}

fn client(ca_pem: &str) -> anyhow::Result<ureq::Agent> {
    use ureq::tls::{Certificate, RootCerts, TlsConfig};
    let cert = Certificate::from_pem(ca_pem.as_bytes()).context("server CA")?;
    Ok(ureq::Agent::config_builder()
        .tls_config(
            TlsConfig::builder()
                .root_certs(RootCerts::new_with_certs(&[cert]))
                .build(),
        )
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .max_idle_connections_per_host(64)
        .build()
        .new_agent())
}
