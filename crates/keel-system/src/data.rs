//! Data paths come back from their backups, not from the profile: after the system is in
//! place, each data path the profile declares (`files.data_paths`) is restored by its hook —
//! `restic restore` out of the box, or the administrator's own command — and the hook's exit
//! status decides.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use keel_profile::{DataPath, Profile};
use serde::Serialize;

use crate::build::{Phase, Progress};
use crate::cmd;
use crate::error::SystemError;

/// Longest one data path's restore may take.
const LONG: Duration = Duration::from_secs(6 * 3600);

/// Choices for restoring data paths.
#[derive(Debug, Clone, Default)]
pub struct DataOptions {
    /// Use this restic repository instead of the one the profile records (the backup disk is
    /// mounted elsewhere on the recovery machine).
    pub repository: Option<String>,
    /// The repository's password file [default: the profile's `password_file` inside the
    /// recovered root, where its secrets were written, else `RESTIC_PASSWORD`].
    pub password_file: Option<PathBuf>,
}

/// What restoring one data path did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DataRestore {
    /// The data path.
    pub path: String,
    /// `restic` or `command`.
    pub backup: String,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// The hook's last line of output.
    pub detail: String,
}

/// Restores every data path of `profile` into `root`, in the profile's order; stops at the
/// first hook that fails, naming it and showing its output.
pub fn restore_data(
    profile: &Profile,
    root: &Path,
    opts: &DataOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<Vec<DataRestore>, SystemError> {
    let mut out = Vec::new();
    for d in &profile.files.data_paths {
        let what = format!("{} from its {} backup", d.path, d.backup);
        progress(Progress::Started(Phase::Data, what));
        let t = Instant::now();
        let mut last = String::new();
        let mut lines = |l: &str| {
            if !l.trim().is_empty() {
                last = l.trim().to_string();
            }
            progress(Progress::Output(Phase::Data, l.to_string()));
        };
        match d.backup.as_str() {
            "restic" => {
                let mut c = restic_command(profile, d, root, opts)?;
                cmd::run(Phase::Data, &mut c, LONG, &mut lines)?;
            }
            "command" => {
                let script = d.restore_command.as_deref().unwrap_or_default();
                let mut c = cmd::host("sh");
                c.arg("-c")
                    .arg(script)
                    .env("KEEL_TARGET_ROOT", root)
                    .env("KEEL_DATA_PATH", &d.path)
                    .env("KEEL_HOSTNAME", &profile.meta.hostname);
                cmd::run(Phase::Data, &mut c, LONG, &mut lines)?;
            }
            other => {
                return Err(SystemError::Other(format!(
                    "data path {}: unknown backup kind {other:?}\nhint: fix /etc/keel/data.toml \
                     on the source, or restore it by hand",
                    d.path
                )))
            }
        }
        let r = DataRestore {
            path: d.path.clone(),
            backup: d.backup.clone(),
            seconds: t.elapsed().as_secs_f64(),
            detail: last,
        };
        progress(Progress::Finished(
            Phase::Data,
            t.elapsed(),
            format!("{}: {}", r.path, r.detail),
        ));
        out.push(r);
    }
    Ok(out)
}

/// `restic restore` of the newest snapshot of `d.path` taken on the profiled host, into
/// `root`, verified after it is written.
fn restic_command(
    profile: &Profile,
    d: &DataPath,
    root: &Path,
    opts: &DataOptions,
) -> Result<std::process::Command, SystemError> {
    let restic = cmd::require("restic", "restic")?;
    let repository = opts
        .repository
        .clone()
        .or_else(|| d.repository.clone())
        .ok_or_else(|| {
            SystemError::Other(format!(
                "data path {}: the profile names no restic repository\nhint: give it with \
                 --restic-repository",
                d.path
            ))
        })?;
    let password = match (&opts.password_file, &d.password_file) {
        (Some(p), _) => Some(p.clone()),
        (None, Some(inside)) => {
            let p = crate::overlay::host_path(root, inside)?;
            p.is_file().then_some(p)
        }
        (None, None) => None,
    };
    if password.is_none() && std::env::var_os("RESTIC_PASSWORD").is_none() {
        return Err(SystemError::Other(format!(
            "data path {}: no password for the restic repository {repository}{}\nhint: give \
             --restic-password-file FILE, set RESTIC_PASSWORD, or recover with the recovery \
             identity so that the profile's secrets (and the password file) are written",
            d.path,
            d.password_file
                .as_deref()
                .map_or_else(String::new, |p| format!(
                    " ({p} is not in the recovered root)"
                )),
        )));
    }
    let mut c = cmd::host(restic);
    c.arg("--repo")
        .arg(&repository)
        .args(["--no-cache", "--no-lock"]);
    if let Some(p) = password {
        c.arg("--password-file").arg(p);
    }
    c.args(["restore", "latest", "--verify"])
        .args(["--host", &profile.meta.hostname])
        .args(["--path", &d.path])
        .arg("--target")
        .arg(root);
    Ok(c)
}
