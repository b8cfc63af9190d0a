//! `keel capture`.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};

use crate::output;

/// Output format of `keel capture`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Format {
    /// The compact binary profile.
    Keel,
    /// Canonical JSON (sorted keys).
    Json,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Root directory of the system to profile.
    #[arg(long, default_value = "/")]
    root: PathBuf,
    /// Write the profile here (written atomically).
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value = "keel")]
    format: Format,
    /// age public key (`age1…`) that secrets are encrypted to; without it they are withheld.
    #[arg(long, env = "KEEL_RECOVERY_KEY")]
    recovery_key: Option<String>,
    /// Directory of Keel's local state (holds the key of secret fingerprints).
    #[arg(long, env = "KEEL_STATE_DIR", default_value = "/var/lib/keel")]
    state_dir: PathBuf,
    /// The previous profile of this system: chained by hash, unchanged secrets reuse their
    /// ciphertext.
    #[arg(long)]
    previous: Option<PathBuf>,
    /// Deadline for each collector, in seconds.
    #[arg(long, default_value_t = 20)]
    timeout: u64,
    /// Print timing, peak memory and size to stderr.
    #[arg(long)]
    stats: bool,
}

#[allow(clippy::print_stderr)]
pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let mut opts = keel_collect::Options::new(&args.root);
    opts.recovery_recipient.clone_from(&args.recovery_key);
    opts.state_dir.clone_from(&args.state_dir);
    opts.timeout = Duration::from_secs(args.timeout.max(1));
    if let Some(p) = &args.previous {
        opts.previous = Some(output::read_profile(p)?);
    }
    let t = std::time::Instant::now();
    let file = keel_collect::capture(&opts)?;
    let bytes = match args.format {
        Format::Keel => file.encode()?,
        Format::Json => {
            let mut s = file.to_json()?;
            s.push('\n');
            s.into_bytes()
        }
    };
    let elapsed = t.elapsed();
    if let Some(path) = &args.output {
        output::write_atomic(path, &bytes, 0o600)?;
    } else {
        let mut out = std::io::stdout().lock();
        if matches!(args.format, Format::Keel) && out.is_terminal() {
            bail!("refusing to write a binary profile to a terminal\nhint: use --output FILE, or --format json");
        }
        out.write_all(&bytes)
            .context("cannot write to standard output")?;
        out.flush().context("cannot write to standard output")?;
    }
    for c in &file.profile.collectors {
        use keel_profile::CollectorState as S;
        if matches!(c.state, S::Error | S::Timeout) {
            eprintln!(
                "warning: collector {} {}: {}",
                c.name,
                c.state.as_str(),
                c.message.as_deref().unwrap_or("")
            );
        }
    }
    if args.stats {
        eprintln!(
            "capture: {:.1} ms wall, {} KiB peak RSS, {} bytes ({} packages, {} files, {} blobs)",
            elapsed.as_secs_f64() * 1000.0,
            peak_rss_kib().unwrap_or(0),
            bytes.len(),
            file.profile.packages.packages.len(),
            file.profile.files.files.len(),
            file.blobs.len(),
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Peak resident set size of this process (`VmHWM`), in KiB.
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}
