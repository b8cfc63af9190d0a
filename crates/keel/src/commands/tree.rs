//! `keel recover build-tree` and `keel recover verify`: make the root filesystem a profile
//! describes, and check a recovered root against the profile it was rebuilt from.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use keel_profile::{Change, ChangeKind};
use keel_system::{
    Bootstrap, BuildOptions, BuildReport, OverlayStep, Progress, SystemPlan, VerifyOptions,
    VerifyReport,
};

use crate::output;

/// Output format of `keel recover build-tree` and `keel recover verify`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Format {
    /// For people.
    Text,
    /// The report as JSON.
    Json,
}

/// The tool that makes the base system.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum BootstrapTool {
    /// mmdebstrap when installed (faster), debootstrap otherwise.
    Auto,
    /// debootstrap.
    Debootstrap,
    /// mmdebstrap.
    Mmdebstrap,
}

#[derive(Debug, clap::Args)]
pub struct BuildTreeArgs {
    /// The profile of the system to rebuild (binary or JSON).
    #[arg(long)]
    profile: PathBuf,
    /// Where the tree goes: a new or empty directory, or a tarball (.tar, .tar.zst, .tar.gz).
    #[arg(long, value_name = "DIR|TARBALL")]
    output: PathBuf,
    /// The recovery identity (`keel keygen`) that decrypts the profile's secrets; without it
    /// secrets are not restored.
    #[arg(long, value_name = "FILE")]
    recovery_identity: Option<PathBuf>,
    /// Keep downloaded packages, base systems and finished trees here: a second build of the
    /// same profile only lays the tree down.
    #[arg(long, value_name = "DIR")]
    cache: Option<PathBuf>,
    /// Install the newer version of packages whose recorded version the repositories no
    /// longer carry.
    #[arg(long)]
    allow_newer: bool,
    /// Build from this archive instead of the profile's main one (a snapshot archive, a local
    /// mirror).
    #[arg(long, value_name = "URI")]
    mirror: Option<String>,
    /// Also trust this keyring for the repositories; repeatable.
    #[arg(long = "keyring", value_name = "FILE")]
    keyrings: Vec<PathBuf>,
    /// The tool that makes the base system.
    #[arg(long, value_enum, default_value = "auto")]
    bootstrap: BootstrapTool,
    /// Build even when the cache holds a finished tree of this profile (and refresh it).
    #[arg(long)]
    rebuild: bool,
    /// Check the plan against the repositories and print it; write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Also write the JSON report to this file.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// What to print on standard output at the end.
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    /// Show the tools' output as they run.
    #[arg(long, short)]
    verbose: bool,
}

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// The profile the root was rebuilt from (binary or JSON).
    #[arg(long)]
    profile: PathBuf,
    /// The recovered root: a built tree, a mounted target, or `/` on the booted system.
    #[arg(long)]
    root: PathBuf,
    /// The recovery identity: secrets are compared by content with it.
    #[arg(long, value_name = "FILE")]
    recovery_identity: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    /// Deadline for each collector of the capture, in seconds.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
}

/// `keel recover build-tree`.
pub fn build_tree(args: &BuildTreeArgs) -> anyhow::Result<ExitCode> {
    let file = output::read_profile(&args.profile)?;
    let identity = args
        .recovery_identity
        .as_deref()
        .map(keel_system::load_identity)
        .transpose()?;
    let mut opts = BuildOptions::new(&args.output);
    opts.plan.allow_newer = args.allow_newer;
    opts.plan.mirror.clone_from(&args.mirror);
    opts.plan.keyrings.clone_from(&args.keyrings);
    opts.cache.clone_from(&args.cache);
    opts.rebuild = args.rebuild;
    opts.bootstrap = match args.bootstrap {
        BootstrapTool::Auto => Bootstrap::Auto,
        BootstrapTool::Debootstrap => Bootstrap::Debootstrap,
        BootstrapTool::Mmdebstrap => Bootstrap::Mmdebstrap,
    };
    let verbose = args.verbose;
    let mut show = |p: Progress| show_progress(&p, verbose);

    if args.dry_run {
        let plan = keel_system::check(&file, &opts, &mut show)?;
        let text = match args.format {
            Format::Json => serde_json::to_string_pretty(&plan)? + "\n",
            Format::Text => render_plan(&plan, identity.is_some()),
        };
        print(&text)?;
        return Ok(ExitCode::SUCCESS);
    }

    let report = keel_system::build(&file, &opts, identity.as_ref(), &mut show)?;
    let json = report.to_json() + "\n";
    if let Some(path) = &args.report {
        output::write_atomic(path, json.as_bytes(), 0o600)?;
    }
    let text = match args.format {
        Format::Json => json,
        Format::Text => render_report(&report),
    };
    print(&text)?;
    Ok(ExitCode::SUCCESS)
}

/// `keel recover verify`: exit 0 when only expected differences remain, 1 otherwise.
pub fn verify(args: &VerifyArgs) -> anyhow::Result<ExitCode> {
    let file = output::read_profile(&args.profile)?;
    let identity = args
        .recovery_identity
        .as_deref()
        .map(keel_system::load_identity)
        .transpose()?;
    let opts = VerifyOptions {
        identity: identity.as_ref(),
        timeout: Duration::from_secs(args.timeout.max(1)),
    };
    let report = keel_system::verify(&file, &args.root, &opts)?;
    let text = match args.format {
        Format::Json => {
            let mut v = serde_json::to_value(&report)?;
            v["ok"] = serde_json::Value::Bool(report.ok());
            serde_json::to_string_pretty(&v)? + "\n"
        }
        Format::Text => render_verify(&report, output::color()),
    };
    print(&text)?;
    Ok(if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn print(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .context("cannot write to standard output")
}

#[allow(clippy::print_stderr)]
pub(super) fn show_progress(p: &Progress, verbose: bool) {
    match p {
        Progress::Started(phase, what) => eprintln!("[{phase}] {what}"),
        Progress::Finished(phase, took, detail) => {
            eprintln!("[{phase}] done in {:.1} s: {detail}", took.as_secs_f64());
        }
        Progress::Note(n) => eprintln!("  {n}"),
        Progress::Output(_, line) if verbose => eprintln!("  | {line}"),
        Progress::Output(..) => {}
    }
}

fn render_plan(plan: &SystemPlan, identity: bool) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "plan for {} ({} {} {}), profile {}",
        plan.hostname,
        plan.distribution,
        plan.suite,
        plan.arch,
        &plan.profile[..plan.profile.len().min(12)]
    );
    let _ = writeln!(
        o,
        "  base      {} from {} ({})",
        plan.suite,
        plan.mirror,
        plan.components.join(", ")
    );
    for s in &plan.sources {
        let key = s
            .signed_by
            .as_deref()
            .map(|k| format!(" [signed-by {k}]"))
            .unwrap_or_default();
        let _ = writeln!(
            o,
            "  source    {} {} {}{key}",
            s.uri,
            s.suite,
            s.components.join(" ")
        );
    }
    for k in &plan.keys {
        let origin = serde_json::to_value(k.origin)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default();
        let _ = writeln!(o, "  key       {} ({})", k.path, origin.replace('_', " "));
    }
    let auto = plan.packages.iter().filter(|p| p.auto).count();
    let _ = writeln!(
        o,
        "  packages  {} pinned ({} manual, {} automatic), {} at a newer version",
        plan.packages.len(),
        plan.packages.len() - auto,
        auto,
        plan.newer.len()
    );
    for (name, recorded, newer) in &plan.newer {
        let _ = writeln!(o, "            {name} {recorded} → {newer} (newer)");
    }
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for s in &plan.overlay {
        *kinds.entry(step_kind(s)).or_default() += 1;
    }
    let kinds: Vec<String> = kinds.iter().map(|(k, n)| format!("{n} {k}")).collect();
    let _ = writeln!(
        o,
        "  overlay   {} steps: {}",
        plan.overlay.len(),
        kinds.join(", ")
    );
    let _ = writeln!(
        o,
        "  secrets   {}{}",
        plan.secrets.len(),
        if identity || plan.secrets.is_empty() {
            ""
        } else {
            " (not restored without --recovery-identity)"
        }
    );
    warnings(&mut o, &plan.warnings);
    o.push_str("nothing was written (--dry-run)\n");
    o
}

fn step_kind(s: &OverlayStep) -> &'static str {
    match s {
        OverlayStep::Accounts { .. } => "accounts",
        OverlayStep::Directory { .. } => "directories",
        OverlayStep::File { .. } => "files",
        OverlayStep::Symlink { .. } => "links",
        OverlayStep::Attributes { .. } => "attributes",
        OverlayStep::Remove { .. } => "removals",
        OverlayStep::Prune { .. } => "prune",
        OverlayStep::UserCrontab { .. } => "crontabs",
        OverlayStep::Alternative { .. } => "alternatives",
        OverlayStep::UnitState { .. } => "unit states",
        OverlayStep::Host { .. } => "host",
        OverlayStep::Secret { .. } => "secrets",
    }
}

fn warnings(o: &mut String, warnings: &[String]) {
    if warnings.is_empty() {
        return;
    }
    let _ = writeln!(o, "warnings ({}):", warnings.len());
    for w in warnings {
        let _ = writeln!(o, "  - {w}");
    }
}

fn render_report(r: &BuildReport) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "built {} ({} {}) into {} in {:.1} s{}",
        r.hostname,
        r.release,
        r.arch,
        r.output,
        r.total_seconds,
        if r.tree_from_cache {
            " (tree from the cache)"
        } else {
            ""
        }
    );
    for p in &r.phases {
        let _ = writeln!(
            o,
            "  {:<9} {:>7.1} s  {}",
            p.phase.as_str(),
            p.seconds,
            p.detail
        );
    }
    let k = &r.packages;
    let _ = writeln!(
        o,
        "packages  {} pinned, {} installed ({} added to the base), {} purged, {} newer",
        k.pinned,
        k.installed,
        k.added,
        k.purged.len(),
        k.newer.len()
    );
    let v = &r.overlay;
    let _ = writeln!(
        o,
        "overlay   {} files, {} links, {} directories, {} attributes, {} removed, {} pruned, \
         {} account files, {} owners remapped, {} crontabs, {} units",
        v.files_written,
        v.links_written,
        v.directories,
        v.attributes_set,
        v.removed,
        v.pruned.len(),
        v.accounts_written,
        v.owners_remapped,
        v.crontabs,
        v.units_changed
    );
    let _ = writeln!(
        o,
        "secrets   {} restored, {} not restored",
        r.secrets.secrets_restored,
        r.secrets.secrets_skipped.len()
    );
    warnings(&mut o, &r.warnings);
    o
}

fn render_change(c: &Change) -> String {
    let what = format!("{}.{} {}", c.section, c.table, c.key);
    match c.kind {
        ChangeKind::Added => format!("+ {what}"),
        ChangeKind::Removed => format!("- {what}"),
        ChangeKind::Changed => format!(
            "~ {what} {}: {} → {}",
            c.field.as_deref().unwrap_or(""),
            output::clip(&output::value(&c.old), 60),
            output::clip(&output::value(&c.new), 60)
        ),
    }
}

/// Expected differences listed per reason in text output.
const SHOWN: usize = 10;

pub(super) fn render_verify(r: &VerifyReport, color: bool) -> String {
    let paint = |code: &str, s: &str| {
        if color {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    };
    let mut o = String::new();
    let _ = writeln!(
        o,
        "verify {} against profile {} ({}), captured in {:.1} s",
        r.root,
        &r.profile[..r.profile.len().min(12)],
        r.hostname,
        r.capture_seconds
    );
    let mut groups: BTreeMap<&str, Vec<&Change>> = BTreeMap::new();
    for d in &r.expected {
        groups.entry(d.reason.as_str()).or_default().push(&d.change);
    }
    let _ = writeln!(o, "expected differences ({}):", r.expected.len());
    if r.expected.is_empty() {
        o.push_str("  none\n");
    }
    for (reason, changes) in &groups {
        let _ = writeln!(o, "  {reason} ({}):", changes.len());
        for c in changes.iter().take(SHOWN) {
            let _ = writeln!(o, "    {}", render_change(c));
        }
        if changes.len() > SHOWN {
            let _ = writeln!(
                o,
                "    … and {} more (--format json lists them all)",
                changes.len() - SHOWN
            );
        }
    }
    let _ = writeln!(o, "unexpected differences ({}):", r.unexpected.len());
    if r.unexpected.is_empty() {
        o.push_str("  none\n");
    }
    for c in &r.unexpected {
        let _ = writeln!(o, "  {}", paint("31", &render_change(c)));
    }
    let _ = write!(o, "secrets: {} compared by content", r.secrets_compared);
    if !r.secrets_not_compared.is_empty() {
        let mut why: BTreeMap<&str, usize> = BTreeMap::new();
        for w in r.secrets_not_compared.values() {
            *why.entry(w.as_str()).or_default() += 1;
        }
        let why: Vec<String> = why.iter().map(|(w, n)| format!("{n} {w}")).collect();
        let _ = write!(
            o,
            ", {} not compared ({})",
            r.secrets_not_compared.len(),
            why.join("; ")
        );
    }
    o.push('\n');
    if r.ok() {
        let _ = writeln!(o, "{}", paint("32", "ok: no unexpected differences"));
    } else {
        let _ = writeln!(
            o,
            "{}",
            paint(
                "31",
                &format!(
                    "{} unexpected difference{}",
                    r.unexpected.len(),
                    if r.unexpected.len() == 1 { "" } else { "s" }
                )
            )
        );
    }
    o
}
