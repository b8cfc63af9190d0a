//! `keel agent enroll|push|run`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;

#[derive(Debug, clap::Subcommand)]
pub enum Agent {
    /// Enroll with a server: pin its CA, create this agent's key, register the host.
    Enroll(EnrollArgs),
    /// Capture one profile now and deliver everything waiting.
    Push(Common),
    /// Run as a daemon: capture on a schedule, deliver, retry with backoff while the server
    /// is away (captures wait in the spool and arrive in order).
    Run(RunArgs),
}

#[derive(Debug, clap::Args)]
pub struct Common {
    /// Keel's state directory (enrollment, key, spool).
    #[arg(long, env = "KEEL_STATE_DIR", default_value = "/var/lib/keel")]
    state_dir: PathBuf,
    /// Root directory of the system to profile.
    #[arg(long, default_value = "/")]
    root: PathBuf,
    /// age public key (`age1…`) that secrets are encrypted to.
    #[arg(long, env = "KEEL_RECOVERY_KEY")]
    recovery_key: Option<String>,
    /// Print a JSON report instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct EnrollArgs {
    /// Server URL (`https://host:port`).
    #[arg(long)]
    server: String,
    /// The enrollment token the server printed on first start.
    #[arg(long, env = "KEEL_ENROLL_TOKEN")]
    token: String,
    /// Host name to enroll as (default: the root's /etc/hostname).
    #[arg(long)]
    host: Option<String>,
    /// The schedule this host captures on and the server expects its profiles on (kept as
    /// the server has it when not given; every hour for a new host).
    #[command(flatten, next_help_heading = "Schedule")]
    schedule: super::schedule::ScheduleArgs,
    #[command(flatten)]
    common: Common,
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Capture every this long (`30s`, `15m`, `1h`) instead of on the schedule the server
    /// gives (set with `keel agent enroll --every/--cron` or `keel hosts schedule`).
    #[arg(long, value_parser = parse_interval)]
    interval: Option<Duration>,
    /// Stop after this many captures (for tests and one-off runs); 0 runs for ever.
    #[arg(long, default_value_t = 0)]
    count: u64,
    /// Ask the server for approved rollback jobs this often (`5s`, `1m`).
    #[arg(long, value_parser = parse_interval, default_value = "5s")]
    poll: Duration,
    /// The recovery identity (`keel keygen`'s secret key file): rollback jobs put secrets
    /// back with it; without it secrets are left as they are.
    #[arg(long, env = "KEEL_RECOVERY_IDENTITY", value_name = "FILE")]
    identity: Option<PathBuf>,
    #[command(flatten)]
    common: Common,
}

fn parse_interval(s: &str) -> Result<Duration, String> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid interval {s:?}: expected a number and s, m, h or d"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(format!("invalid interval unit in {s:?}: use s, m, h or d")),
    };
    if secs == 0 {
        return Err("the interval must be at least 1s".into());
    }
    Ok(Duration::from_secs(secs))
}

fn agent(c: &Common) -> keel_agent::Agent {
    let mut a = keel_agent::Agent::new(&c.state_dir, &c.root);
    a.recovery_recipient.clone_from(&c.recovery_key);
    a
}

pub fn run(cmd: &Agent) -> anyhow::Result<ExitCode> {
    match cmd {
        Agent::Enroll(a) => enroll(a),
        Agent::Push(c) => push(c),
        Agent::Run(r) => daemon(r),
    }
}

fn enroll(a: &EnrollArgs) -> anyhow::Result<ExitCode> {
    let root = &a.common.root;
    let read = |p: &str| std::fs::read_to_string(root.join(p)).map(|s| s.trim().to_string());
    let host = match &a.host {
        Some(h) => h.clone(),
        None => {
            read("etc/hostname").context("cannot read the root's /etc/hostname; give --host")?
        }
    };
    let machine_id = read("etc/machine-id").context("cannot read the root's /etc/machine-id")?;
    let schedule = a.schedule.schedule()?;
    let agent = agent(&a.common);
    let config = agent.enroll(&a.server, &a.token, &host, &machine_id, schedule.as_ref())?;
    let mut out = std::io::stdout().lock();
    if a.common.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&config)?)?;
    } else {
        writeln!(
            out,
            "enrolled as host {} (agent {}) with {}; schedule: {}",
            config.host,
            config.agent_id,
            config.server,
            agent.schedule()
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

fn push(c: &Common) -> anyhow::Result<ExitCode> {
    let a = agent(c);
    let spooled = a.capture_to_spool()?;
    let report = a.deliver()?;
    let mut out = std::io::stdout().lock();
    if c.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
    } else {
        writeln!(
            out,
            "captured {}; delivered {}, rejected {}, waiting {}, {} bytes sent{}",
            spooled
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            report.delivered,
            report.rejected,
            report.pending,
            report.bytes_sent,
            report
                .stopped
                .as_deref()
                .map(|s| format!(" (stopped: {s})"))
                .unwrap_or_default()
        )?;
    }
    Ok(if report.stopped.is_some() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// When the capture after one at `captured_ms` is due: after the fixed interval when given,
/// else on the schedule the server last gave.
fn next_capture_after(a: &keel_agent::Agent, fixed: Option<Duration>, captured_ms: i64) -> Instant {
    let wait = match fixed {
        Some(d) => {
            Duration::from_millis((captured_ms + d.as_millis() as i64 - wall_ms()).max(0) as u64)
        }
        None => match a.schedule().next_after(captured_ms) {
            Ok(next) => Duration::from_millis((next - wall_ms()).max(0) as u64),
            Err(_) => Duration::from_secs(3600),
        },
    };
    Instant::now() + wait
}

#[allow(clippy::print_stderr)]
fn daemon(r: &RunArgs) -> anyhow::Result<ExitCode> {
    let a = agent(&r.common);
    a.config()?;
    let identity = r
        .identity
        .as_deref()
        .map(keel_system::load_identity)
        .transpose()?;
    let mut next_poll = Instant::now();
    let mut poll_backoff = r.poll;
    let mut captures = 0u64;
    let mut captured_ms = wall_ms();
    let mut next_capture = Instant::now();
    let mut backoff = Duration::from_secs(1);
    let mut next_delivery = Instant::now();
    loop {
        let now = Instant::now();
        if now >= next_capture && (r.count == 0 || captures < r.count) {
            captured_ms = wall_ms();
            match a.capture_to_spool() {
                Ok(p) => eprintln!("captured {}", p.display()),
                Err(e) => eprintln!("capture failed: {e}"),
            }
            captures += 1;
            next_capture = next_capture_after(&a, r.interval, captured_ms);
            next_delivery = now;
        }
        if Instant::now() >= next_delivery {
            match a.deliver() {
                Ok(rep) if rep.stopped.is_none() => {
                    if rep.delivered + rep.rejected > 0 {
                        eprintln!("delivered {}, rejected {}", rep.delivered, rep.rejected);
                    }
                    backoff = Duration::from_secs(1);
                    // The answer may have carried a new schedule.
                    next_capture = next_capture_after(&a, r.interval, captured_ms);
                    next_delivery = next_capture;
                }
                Ok(rep) => {
                    eprintln!(
                        "delivery paused, {} waiting: {}; retrying in {backoff:?}",
                        rep.pending,
                        rep.stopped.unwrap_or_default()
                    );
                    next_delivery = Instant::now() + backoff;
                    backoff = (backoff * 2).min(Duration::from_secs(300));
                }
                Err(e) => {
                    eprintln!("delivery failed: {e}; retrying in {backoff:?}");
                    next_delivery = Instant::now() + backoff;
                    backoff = (backoff * 2).min(Duration::from_secs(300));
                }
            }
        }
        if Instant::now() >= next_poll {
            // Approved rollbacks are picked up within one poll, not at the next capture.
            match a.next_rollback() {
                Ok(Some(job)) => {
                    if let Err(e) =
                        a.run_rollback(&job, identity.as_ref(), &mut |l| eprintln!("{l}"))
                    {
                        eprintln!("rollback {}: could not finish: {e}", job.id);
                    }
                    poll_backoff = r.poll;
                    next_poll = Instant::now();
                }
                Ok(None) => {
                    poll_backoff = r.poll;
                    next_poll = Instant::now() + r.poll;
                }
                Err(e) => {
                    eprintln!("asking for rollback jobs failed: {e}; retrying in {poll_backoff:?}");
                    next_poll = Instant::now() + poll_backoff;
                    poll_backoff = (poll_backoff * 2).min(Duration::from_secs(300));
                }
            }
        }
        if r.count > 0 && captures >= r.count && a.spooled()?.is_empty() {
            return Ok(ExitCode::SUCCESS);
        }
        let wake = next_capture.min(next_delivery).min(next_poll);
        std::thread::sleep(
            wake.saturating_duration_since(Instant::now())
                .max(Duration::from_millis(50)),
        );
    }
}
