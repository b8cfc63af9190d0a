//! `keel rollback`: back out selected configuration changes, on this machine (or a root
//! directory) from a profile file, or through a server for an enrolled host.

use std::fmt::Write as _;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use keel_rollback::{
    apply, build_plan, remaining, revert, DryRun, Journal, Plan, PlanOptions, Real, Selector,
    StepOutcome, StepState, Undo,
};
use serde_json::{json, Value};

use super::client::{Client, Format, ServerArgs};
use crate::output;

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    action: Option<Action>,
    #[command(flatten)]
    plan: PlanArgs,
}

#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// List a server's rollback jobs, newest first.
    List(ListArgs),
    /// Show one rollback job with its plan.
    Show(One),
    /// Approve a proposed rollback: the host's agent applies it.
    Approve(Decide),
    /// Reject a proposed rollback: nothing is changed.
    Reject(Decide),
}

#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    /// Root directory of the system to change (local mode).
    #[arg(long, default_value = "/")]
    root: PathBuf,
    /// The state to go back to: a profile file (local mode), or a stored profile's id with
    /// --host.
    #[arg(long, value_name = "PROFILE")]
    to: Option<String>,
    /// The profile in which the changes appear (a file, or an id with --host); default: the
    /// system as it is now (a fresh capture, or the host's newest profile).
    #[arg(long, value_name = "PROFILE")]
    from: Option<String>,
    /// A change to back out, `SECTION:KEY` as `keel diff` names it (repeatable), such as
    /// `files:/etc/login.defs`, `users:mallory`, `packages:tree`, `kernel:vm.swappiness`.
    #[arg(long = "only", value_name = "SECTION:KEY", required = false)]
    only: Vec<String>,
    /// Apply the plan (after a dry run); without it the plan is printed and nothing changes.
    #[arg(long)]
    yes: bool,
    /// Include rows that changed again after the selected change (conflicts).
    #[arg(long)]
    force: bool,
    /// Undo the last local rollback of --root from its journal (what it changed comes back
    /// as it was); with --yes only.
    #[arg(long, conflicts_with_all = ["to", "from", "only", "host", "force"])]
    revert: bool,
    /// The recovery identity (`keel keygen`'s secret key file), to put secrets back.
    #[arg(long, value_name = "FILE")]
    identity: Option<PathBuf>,
    /// Directory of Keel's local state: the key of secret fingerprints (use the one the
    /// profile was captured with) and the rollback journal.
    #[arg(long, env = "KEEL_STATE_DIR", default_value = "/var/lib/keel")]
    state_dir: PathBuf,
    /// Plan through a server for this enrolled host (its agent applies it once approved).
    #[arg(long, value_name = "NAME")]
    host: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    #[command(flatten, next_help_heading = "Server")]
    server: ServerArgs,
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Only this host's jobs.
    #[arg(long)]
    host: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    #[command(flatten, next_help_heading = "Server")]
    server: ServerArgs,
}

#[derive(Debug, clap::Args)]
pub struct One {
    /// The job's id (first column of `keel rollback list`).
    id: i64,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    #[command(flatten, next_help_heading = "Server")]
    server: ServerArgs,
}

#[derive(Debug, clap::Args)]
pub struct Decide {
    /// The job's id.
    id: i64,
    /// Who decides (recorded with the decision).
    #[arg(long, env = "USER", default_value = "admin")]
    by: String,
    /// Why (recorded; shown with a rejection).
    #[arg(long)]
    reason: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    #[command(flatten, next_help_heading = "Server")]
    server: ServerArgs,
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    match &args.action {
        None if args.plan.revert => revert_local(&args.plan),
        None if args.plan.host.is_some() => propose(&args.plan),
        None => local(&args.plan),
        Some(Action::List(l)) => list(l),
        Some(Action::Show(o)) => show(o),
        Some(Action::Approve(d)) => decide(d, "approve"),
        Some(Action::Reject(d)) => decide(d, "reject"),
    }
}

fn write_out(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .context("cannot write to standard output")
}

fn selectors(only: &[String]) -> anyhow::Result<Vec<Selector>> {
    if only.is_empty() {
        anyhow::bail!(
            "nothing selected to back out\nhint: name each change with --only SECTION:KEY, as \
             `keel diff` shows it (such as --only files:/etc/login.defs --only users:mallory)"
        );
    }
    only.iter()
        .map(|s| s.parse::<Selector>().map_err(anyhow::Error::from))
        .collect()
}

fn capture(root: &Path, state_dir: &Path) -> anyhow::Result<keel_profile::ProfileFile> {
    let mut opts = keel_collect::Options::new(root);
    opts.state_dir = state_dir.to_path_buf();
    keel_collect::capture(&opts)
        .with_context(|| format!("cannot capture the system under {}", root.display()))
}

/// Where the journal and the plan of an unfinished local rollback of `root` are kept.
fn journal_paths(state_dir: &Path, root: &Path) -> (PathBuf, PathBuf) {
    let root = root.canonicalize().unwrap_or_else(|_| root.to_path_buf());
    let key = keel_profile::Hash::of(root.as_os_str().as_encoded_bytes()).short();
    let dir = state_dir.join("rollback");
    (
        dir.join(format!("{key}.journal.json")),
        dir.join(format!("{key}.plan.json")),
    )
}

/// The saved plan of an interrupted rollback of the same profile and selection, if any.
fn unfinished(
    journal: &Path,
    saved: &Path,
    before: keel_profile::Hash,
    sel: &[Selector],
) -> Option<Plan> {
    let j = Journal::read(journal).ok()??;
    let finished = j.steps.iter().all(|s| s.state == StepState::Done);
    let reverted = j.steps.iter().any(|s| s.state == StepState::Reverted);
    if finished || reverted {
        return None;
    }
    let plan = Plan::from_json(&std::fs::read_to_string(saved).ok()?).ok()?;
    (plan.before == before && plan.selection == sel && plan.id().to_hex() == j.plan).then_some(plan)
}

#[allow(clippy::print_stderr)]
fn local(a: &PlanArgs) -> anyhow::Result<ExitCode> {
    let Some(to) = &a.to else {
        anyhow::bail!(
            "no profile to go back to\nhint: pass --to PROFILE_FILE (a profile captured before \
             the changes), or --host NAME --to ID to go through a server"
        );
    };
    let sel = selectors(&a.only)?;
    let before = output::read_profile(Path::new(to))?;
    let before_hash = before.hash()?;
    let (journal, saved) = journal_paths(&a.state_dir, &a.root);
    let resumed = unfinished(&journal, &saved, before_hash, &sel);
    let plan = if let Some(p) = resumed.clone() {
        eprintln!(
            "resuming the interrupted rollback recorded in {}",
            journal.display()
        );
        p
    } else {
        eprintln!("capturing {} …", a.root.display());
        let current = capture(&a.root, &a.state_dir)?;
        let after = match &a.from {
            Some(f) => output::read_profile(Path::new(f))?.profile,
            None => current.profile.clone(),
        };
        build_plan(
            &before,
            &after,
            &current.profile,
            &sel,
            PlanOptions { force: a.force },
        )?
    };
    let blobs = plan.blob_map()?;
    let mut dry_lines = Vec::new();
    let dry = apply(
        &plan,
        &mut DryRun {
            root: &a.root,
            blobs: &blobs,
        },
        None,
        &mut |_| {},
    )?;
    dry_lines.extend(dry.steps.iter().map(line));
    let json_mode = matches!(a.format, Format::Json);
    if json_mode && !a.yes {
        let v = json!({ "plan": plan, "dry_run": dry.steps, "applied": false });
        write_out(&format!("{}\n", serde_json::to_string_pretty(&v)?))?;
        return Ok(ExitCode::SUCCESS);
    }
    if !json_mode {
        let mut text = plan.to_string();
        text.push_str("\nDry run:\n");
        for l in &dry_lines {
            let _ = writeln!(text, "  {l}");
        }
        write_out(&text)?;
    }
    if !a.yes {
        if !json_mode {
            write_out("\nNothing was changed. Run again with --yes to apply this plan.\n")?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    if plan.steps.is_empty() {
        anyhow::bail!(
            "nothing to apply: every selected change is in conflict or refused\nhint: see the \
             plan above; --force includes rows that changed again later"
        );
    }
    let identity = a
        .identity
        .as_deref()
        .map(keel_system::load_identity)
        .transpose()?;
    if let Some(dir) = saved.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    output::write_atomic(&saved, plan.to_json().as_bytes(), 0o600)?;
    let mut real = Real {
        root: &a.root,
        blobs: &blobs,
        identity: identity.as_ref(),
    };
    let applied = apply(&plan, &mut real, Some(&journal), &mut |o| {
        if !json_mode {
            eprintln!("{}", line(o));
        }
    })?;
    eprintln!("capturing {} again to check …", a.root.display());
    let now = capture(&a.root, &a.state_dir)?;
    let left = remaining(&plan, &before.profile, &now.profile);
    if left.is_empty() {
        let _ = std::fs::remove_file(&saved);
    }
    if json_mode {
        let v = json!({
            "plan": plan,
            "dry_run": dry.steps,
            "applied": true,
            "steps": applied.steps,
            "resumed": applied.resumed,
            "remaining": left,
        });
        write_out(&format!("{}\n", serde_json::to_string_pretty(&v)?))?;
    } else if left.is_empty() {
        write_out(&format!(
            "\nDone: {} selected changes backed out; the new capture shows them gone.\n",
            plan.included_rows().len()
        ))?;
    } else {
        let mut t = String::from("\nNot everything came back:\n");
        for l in &left {
            let _ = writeln!(t, "  {l}");
        }
        write_out(&t)?;
    }
    Ok(if left.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

#[allow(clippy::print_stderr)]
fn revert_local(a: &PlanArgs) -> anyhow::Result<ExitCode> {
    let (journal, saved) = journal_paths(&a.state_dir, &a.root);
    let Some(j) = Journal::read(&journal)? else {
        anyhow::bail!(
            "no rollback of {} to revert (no journal at {})\nhint: give the same --root and \
             --state-dir the rollback ran with",
            a.root.display(),
            journal.display()
        );
    };
    let begun: Vec<_> = j
        .steps
        .iter()
        .filter(|s| s.attempts > 0 && s.state != StepState::Reverted)
        .collect();
    if begun.is_empty() {
        write_out("Nothing to revert: no step of the last rollback is applied.\n")?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut text = format!(
        "Reverting the last rollback of {} undoes, newest first:\n",
        a.root.display()
    );
    for s in begun.iter().rev() {
        let _ = writeln!(text, "  {:>2}. {} ({:?})", s.number, s.description, s.state);
        for u in &s.undo {
            let _ = match u {
                Undo::Path {
                    path,
                    backup: Some(_),
                } => writeln!(text, "        {path}: put back"),
                Undo::Path { path, backup: None } => writeln!(text, "        {path}: removed"),
                Undo::Package {
                    package,
                    version: Some(v),
                } => writeln!(text, "        package {package}: {v} installed"),
                Undo::Package {
                    package,
                    version: None,
                } => writeln!(text, "        package {package}: purged"),
            };
        }
    }
    write_out(&text)?;
    if !a.yes {
        write_out("\nNothing was changed. Run again with --yes to revert.\n")?;
        return Ok(ExitCode::SUCCESS);
    }
    let blobs = std::collections::BTreeMap::new();
    let mut real = Real {
        root: &a.root,
        blobs: &blobs,
        identity: None,
    };
    let n = revert(&journal, &a.root, &mut real, &mut |l| eprintln!("{l}"))?;
    let _ = std::fs::remove_file(&saved);
    write_out(&format!("\nReverted {n} steps.\n"))?;
    Ok(ExitCode::SUCCESS)
}

fn line(o: &StepOutcome) -> String {
    format!("{:>2}. {}", o.number, o.output)
}

// ------------------------------------------------------------------ through a server

fn json_text(v: &Value) -> anyhow::Result<String> {
    let mut s = serde_json::to_string_pretty(v)?;
    s.push('\n');
    Ok(s)
}

fn job_text(job: &Value) -> String {
    let s = |k: &str| job[k].as_str().unwrap_or("").to_string();
    let mut t = format!(
        "rollback {} of host {}: {}{}\n",
        job["id"],
        s("host"),
        s("status"),
        job["reason"]
            .as_str()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default()
    );
    let _ = writeln!(
        t,
        "  back to profile {} from profile {}; proposed by {} at {}",
        job["to_profile"],
        job["from_profile"],
        s("created_by"),
        job["created_at_ms"]
            .as_i64()
            .map_or_else(String::new, output::rfc3339)
    );
    if let Some(by) = job["decided_by"].as_str() {
        let _ = writeln!(
            t,
            "  {} by {by} at {}",
            if s("status") == "rejected" {
                "rejected"
            } else {
                "approved"
            },
            job["decided_at_ms"]
                .as_i64()
                .map_or_else(String::new, output::rfc3339)
        );
    }
    if let Ok(plan) = serde_json::from_value::<Plan>(job["plan"].clone()) {
        t.push('\n');
        t.push_str(&plan.to_string());
    }
    t
}

fn propose(a: &PlanArgs) -> anyhow::Result<ExitCode> {
    let host = a.host.as_deref().unwrap_or_default();
    let Some(to) = &a.to else {
        anyhow::bail!(
            "no profile to go back to\nhint: pass --to ID, the id of the host's profile before \
             the changes (`keel profiles --host {host}`)"
        );
    };
    let id = |s: &str, what: &str| {
        s.parse::<i64>().map_err(|_| {
            anyhow::anyhow!(
                "{what} {s:?} is not a profile id\nhint: with --host, --to and --from take the \
                 ids `keel profiles --host {host}` lists"
            )
        })
    };
    sel_check(&a.only)?;
    let mut body = json!({
        "host": host,
        "to": id(to, "--to")?,
        "only": a.only,
        "force": a.force,
        "by": std::env::var("USER").unwrap_or_else(|_| "admin".into()),
    });
    if let Some(f) = &a.from {
        body["from"] = json!(id(f, "--from")?);
    }
    let client = Client::new(&a.server)?;
    let job = client.send("POST", "/api/v1/rollbacks", &[], Some(&body))?;
    let text = match a.format {
        Format::Json => json_text(&job)?,
        Format::Text => format!(
            "{}\nNothing changes until the plan is approved: keel rollback approve {}\n",
            job_text(&job),
            job["id"]
        ),
    };
    write_out(&text)?;
    Ok(ExitCode::SUCCESS)
}

fn sel_check(only: &[String]) -> anyhow::Result<()> {
    selectors(only).map(|_| ())
}

fn list(l: &ListArgs) -> anyhow::Result<ExitCode> {
    let client = Client::new(&l.server)?;
    let mut q = Vec::new();
    if let Some(h) = &l.host {
        q.push(("host", h.clone()));
    }
    let jobs = client.get_array("/api/v1/rollbacks", &q)?;
    let text = match l.format {
        Format::Json => json_text(&Value::Array(jobs))?,
        Format::Text if jobs.is_empty() => "no rollbacks\n".into(),
        Format::Text => {
            let rows: Vec<[String; 6]> = jobs
                .iter()
                .map(|j| {
                    let s = |k: &str| j[k].as_str().unwrap_or("").to_string();
                    [
                        j["id"].to_string(),
                        s("host"),
                        s("status"),
                        format!("{} → {}", j["from_profile"], j["to_profile"]),
                        j["created_at_ms"]
                            .as_i64()
                            .map_or_else(String::new, output::rfc3339),
                        output::clip(
                            &j["selection"]
                                .as_array()
                                .map(|a| {
                                    a.iter()
                                        .filter_map(Value::as_str)
                                        .collect::<Vec<_>>()
                                        .join(" ")
                                })
                                .unwrap_or_default(),
                            60,
                        ),
                    ]
                })
                .collect();
            super::hosts::table(
                &["ID", "HOST", "STATUS", "PROFILES", "CREATED", "SELECTION"],
                &rows,
            )
        }
    };
    write_out(&text)?;
    Ok(ExitCode::SUCCESS)
}

fn show(o: &One) -> anyhow::Result<ExitCode> {
    let client = Client::new(&o.server)?;
    let job = client.get(&format!("/api/v1/rollbacks/{}", o.id), &[])?;
    write_out(&match o.format {
        Format::Json => json_text(&job)?,
        Format::Text => job_text(&job),
    })?;
    Ok(ExitCode::SUCCESS)
}

fn decide(d: &Decide, verb: &str) -> anyhow::Result<ExitCode> {
    let client = Client::new(&d.server)?;
    let body = json!({ "by": d.by, "reason": d.reason });
    let job = client.send(
        "POST",
        &format!("/api/v1/rollbacks/{}/{verb}", d.id),
        &[],
        Some(&body),
    )?;
    write_out(&match d.format {
        Format::Json => json_text(&job)?,
        Format::Text => job_text(&job),
    })?;
    Ok(ExitCode::SUCCESS)
}
