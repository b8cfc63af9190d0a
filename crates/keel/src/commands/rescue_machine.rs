//! `keel rescue --server URL --token T --disk DEV_OR_IMAGE…`: a recovery machine. Booted into
//! any live Linux, it registers with the server with its inventory (the disks it was given,
//! its NICs, its firmware) and waits. When an admin starts a recovery onto it, it downloads
//! the profile, checks the plan against its disks, rebuilds the disks and the system with the
//! same code as `keel recover apply`, reports every phase as it goes, and finishes with the
//! verification and the report.
//!
//! It touches no disk it was not given: a plan naming any other is refused before anything is
//! written, and keel-recover's checks refuse disks in use.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use keel_recover::{Host, Plan};
use serde_json::{json, Value};

use super::client::{Client, ServerArgs};
use super::recover::ApplyArgs;
use super::recover_system::{Observer, PhaseEvent, SystemArgs};
use crate::output;

/// Seconds each request for work is held open by the server.
const WAIT: u64 = 20;

/// The recovery machine's options.
#[derive(Debug, Clone, clap::Args)]
pub struct MachineArgs {
    /// Wait for recoveries from this Keel server (`https://HOST:PORT`) instead of running a
    /// kit: register this machine and its disks, run what an admin starts onto it, report.
    #[arg(long, value_name = "URL")]
    pub server: Option<String>,
    /// The token to register with: an enrollment token (it carries the server's CA
    /// fingerprint) or the admin token.
    #[arg(long, env = "KEEL_TOKEN", hide_env_values = true, value_name = "TOKEN")]
    pub token: Option<String>,
    /// The server's CA certificate [default: fetched from the server and checked against the
    /// enrollment token's fingerprint].
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// A disk (device or image file) recoveries may rebuild; repeat for each. No other disk
    /// is ever touched.
    #[arg(long = "disk", value_name = "DEV_OR_IMAGE")]
    pub disks: Vec<String>,
    /// The name the machine registers under [default: its host name].
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Where plans, journals, reports and the mounted target go [default:
    /// /var/lib/keel-rescue].
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
    /// Run one recovery, then exit: 0 when it was verified, 1 when not.
    #[arg(long)]
    pub once: bool,
    /// Directory holding the machine's /sys, /proc and /dev.
    #[arg(long = "machine-root", default_value = "/", hide = true)]
    pub host_root: PathBuf,
    #[command(flatten)]
    pub system: SystemArgs,
}

/// The CA of the server, fetched without verification and checked against the fingerprint an
/// enrollment token carries (as agents do).
fn fetch_ca(server: &str, token: &str) -> anyhow::Result<String> {
    let expected = token
        .strip_prefix("keel-enroll-")
        .and_then(|t| t.rsplit_once('-'))
        .map(|(_, fp)| fp.to_ascii_lowercase())
        .filter(|fp| fp.len() == 64)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "without --ca the token must be an enrollment token, which carries the server's \
                 CA fingerprint\nhint: pass --ca DATA/ca.pem, or use the enrollment token"
            )
        })?;
    let tls = ureq::tls::TlsConfig::builder()
        .disable_verification(true)
        .build();
    let agent = ureq::Agent::config_builder()
        .tls_config(tls)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .new_agent();
    let url = format!("{}/api/v1/ca", server.trim_end_matches('/'));
    let mut pem = String::new();
    agent
        .get(&url)
        .call()
        .with_context(|| format!("cannot reach {url}"))?
        .body_mut()
        .as_reader()
        .read_to_string(&mut pem)
        .with_context(|| format!("cannot read {url}"))?;
    let found = keel_agent::ca_fingerprint(&pem)
        .ok_or_else(|| anyhow::anyhow!("{url} answered with no certificate"))?;
    if found != expected {
        bail!(
            "the server's CA fingerprint is {found}, but the token expects {expected}: refusing \
             to trust this server\nhint: check --server, or give its ca.pem with --ca"
        );
    }
    Ok(pem)
}

/// Runs the machine: register, wait, recover, report.
#[allow(clippy::print_stderr, reason = "the machine's log goes to stderr")]
pub fn run(args: &MachineArgs) -> anyhow::Result<ExitCode> {
    let server = args.server.clone().unwrap_or_default();
    let Some(token) = args.token.clone().filter(|t| !t.trim().is_empty()) else {
        bail!(
            "no token given\nhint: pass --token with an enrollment token of the server (or its \
             admin token)"
        );
    };
    if args.disks.is_empty() {
        bail!(
            "no disk given: a recovery machine rebuilds only the disks it is given\nhint: pass \
             --disk /dev/sdX (or an image file) for each disk a recovery may erase"
        );
    }
    let work = args
        .work_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("/var/lib/keel-rescue"));
    std::fs::create_dir_all(&work).with_context(|| format!("cannot create {}", work.display()))?;
    let ca = if let Some(ca) = &args.ca {
        ca.clone()
    } else {
        let pem = fetch_ca(&server, &token)?;
        let path = work.join("ca.pem");
        output::write_atomic(&path, pem.as_bytes(), 0o644)?;
        path
    };

    let host = Host::at(&args.host_root);
    let disks = host.inventory(&args.disks)?;
    host.check_safe(&disks)?;
    let name = args.name.clone().unwrap_or_else(|| {
        std::fs::read_to_string(args.host_root.join("proc/sys/kernel/hostname"))
            .map_or_else(|_| "rescue".into(), |h| h.trim().to_string())
    });
    let firmware = match args.system.firmware {
        Some(super::install::FirmwareArg::Bios) => "bios",
        Some(super::install::FirmwareArg::Uefi) => "uefi",
        None => keel_system::Firmware::detect(&args.host_root).as_str(),
    };
    let inventory = json!({
        "disks": disks,
        // The server shows the NIC map with the plan: the same mapping apply makes here, from
        // these NICs and this machine's --nic-map.
        "nics": keel_system::target_nics(&args.host_root.join("sys")),
        "nic_map": args.system.nic_map,
        "firmware": firmware,
    });
    let enroll = Client::new(&ServerArgs {
        server: Some(server.clone()),
        token: Some(token),
        ca: Some(ca.clone()),
    })?;
    let registered = enroll.send(
        "POST",
        "/api/v1/machines/register",
        &[],
        Some(&json!({ "name": name, "inventory": inventory })),
    )?;
    let machine_token = registered["token"]
        .as_str()
        .context("the server's registration answer has no token")?
        .to_string();
    let id = registered["machine"]["id"].as_i64().unwrap_or_default();
    eprintln!(
        "registered as machine {id} ({name}) with {} disk{}; waiting for a recovery",
        disks.len(),
        if disks.len() == 1 { "" } else { "s" }
    );
    let client = Arc::new(Client::new(&ServerArgs {
        server: Some(server),
        token: Some(machine_token),
        ca: Some(ca),
    })?);
    loop {
        let job = match client.send(
            "POST",
            "/api/v1/machine/next",
            &[("wait", WAIT.to_string())],
            None,
        ) {
            Ok(Value::Null) => continue,
            Ok(job) => job,
            Err(e) if e.status().is_none() => {
                eprintln!("warning: {e}; asking again in 5 s");
                std::thread::sleep(Duration::from_secs(5));
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let ok = recover(args, &client, &work, &job)?;
        if args.once {
            return Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            });
        }
        eprintln!("waiting for the next recovery");
    }
}

/// Refuses a plan that names a disk the machine was not given.
fn check_disks(plan: &Plan, given: &[keel_recover::TargetDisk]) -> anyhow::Result<()> {
    let allowed = |p: &str| given.iter().any(|d| d.path == p);
    for t in &plan.inventory {
        if !allowed(&t.path) {
            bail!(
                "the plan names the disk {}, which this machine was not given: refusing it\n\
                 hint: only the disks given with --disk are rebuilt",
                t.path
            );
        }
    }
    for m in &plan.disk_map {
        if let Some(t) = &m.target {
            if !allowed(t) {
                bail!(
                    "the plan puts {} on {t}, which this machine was not given: refusing it",
                    m.source.name
                );
            }
        }
    }
    Ok(())
}

/// Runs one recovery and reports its end; true when it was verified.
#[allow(clippy::print_stderr, reason = "the machine's log goes to stderr")]
fn recover(
    args: &MachineArgs,
    client: &Arc<Client>,
    work: &Path,
    job: &Value,
) -> anyhow::Result<bool> {
    let id = job["id"].as_i64().context("a recovery without an id")?;
    let host = job["host"].as_str().unwrap_or("?").to_string();
    eprintln!("recovery {id}: {host}");
    let finish = |ok: bool, error: Option<String>, report: Option<Value>| {
        let body = json!({ "ok": ok, "error": error, "report": report });
        client.send(
            "POST",
            &format!("/api/v1/machine/recoveries/{id}/finish"),
            &[],
            Some(&body),
        )
    };
    let dir = work.join(format!("recovery-{id}"));
    let prepared = (|| -> anyhow::Result<PathBuf> {
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let profile = dir.join("profile.keel");
        let bytes = client.get_bytes(&format!("/api/v1/machine/recoveries/{id}/profile"))?;
        output::write_atomic(&profile, &bytes, 0o600)?;
        let mut plan: Plan = serde_json::from_value(job["plan"].clone())
            .context("the server's plan does not decode")?;
        let given = Host::at(&args.host_root).inventory(&args.disks)?;
        check_disks(&plan, &given)?;
        plan.source.profile_path = Some(profile.display().to_string());
        let path = dir.join("plan.json");
        output::write_atomic(&path, (plan.to_json() + "\n").as_bytes(), 0o600)?;
        Ok(path)
    })();
    let plan_path = match prepared {
        Ok(p) => p,
        Err(e) => {
            eprintln!("recovery {id} refused: {e:#}");
            finish(false, Some(format!("{e:#}")), None)?;
            return Ok(false);
        }
    };
    let mut system = args.system.clone();
    system.profile = Some(dir.join("profile.keel"));
    let report_path = dir.join("report.json");
    system.report = Some(report_path.clone());
    let apply = ApplyArgs {
        plan: plan_path,
        yes: true,
        luks_key_file: None,
        target_root: Some(dir.join("target")),
        journal: None,
        keep_mounted: false,
        host_root: args.host_root.clone(),
        system,
    };
    let reporter = Arc::clone(client);
    let observer = Observer::new(move |e: &PhaseEvent| {
        let mut body = json!({
            "phase": e.phase,
            "state": if e.finished { "finished" } else { "started" },
            "detail": e.detail,
        });
        if e.finished {
            body["seconds"] = json!(e.seconds);
        }
        if let Err(err) = reporter.send(
            "POST",
            &format!("/api/v1/machine/recoveries/{id}/progress"),
            &[],
            Some(&body),
        ) {
            eprintln!("warning: could not report progress: {err}");
        }
    });
    let result = super::recover::apply_observed(&apply, observer);
    let report: Option<Value> = std::fs::read(&report_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let (ok, error) = match result {
        Ok(code) => (code == ExitCode::SUCCESS, None),
        Err(e) => (false, Some(format!("{e:#}"))),
    };
    let ended = finish(ok, error, report)?;
    eprintln!(
        "recovery {id} of {host}: {}{}",
        ended["status"].as_str().unwrap_or("?"),
        ended["reason"]
            .as_str()
            .map(|r| format!(": {r}"))
            .unwrap_or_default()
    );
    Ok(ended["status"] == "done")
}
