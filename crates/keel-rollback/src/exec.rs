//! Running a plan: an [`Executor`] does each step (a dry run that says what would change, or
//! the real one), and [`apply`] goes through the steps in order with a journal.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use keel_profile::{Blob, Hash};
use keel_system::{apply_overlay, OverlayContext, OverlayReport, OverlayStep};
use serde::Serialize;

use crate::error::RollbackError;
use crate::journal::Journal;
use crate::plan::{Plan, Step};

/// Does the steps of a plan.
pub trait Executor {
    /// Does one step (or, for a dry run, says what it would do); returns one line.
    fn run(&mut self, step: &Step) -> Result<String, RollbackError>;
    /// True when nothing is changed.
    fn dry_run(&self) -> bool {
        false
    }
    /// The root it changes, when it changes one: the journal copies aside what each step is
    /// about to change there, so that the rollback can be reverted.
    fn root(&self) -> Option<&Path> {
        None
    }
}

/// Changes nothing: reads the system and says what each step would change.
#[derive(Debug)]
pub struct DryRun<'a> {
    /// The system's root directory.
    pub root: &'a Path,
    /// The plan's blobs (to compare file contents).
    pub blobs: &'a BTreeMap<Hash, Blob>,
}

/// Records the steps without reading or changing anything (for tests).
#[derive(Debug, Default)]
pub struct Recording {
    /// The steps' descriptions, in order.
    pub steps: Vec<String>,
}

/// Changes the system under `root`: commands run with `chroot` unless `root` is `/`.
pub struct Real<'a> {
    /// The system's root directory.
    pub root: &'a Path,
    /// The plan's blobs.
    pub blobs: &'a BTreeMap<Hash, Blob>,
    /// The recovery identity, for secrets; without it secrets are skipped.
    pub identity: Option<&'a age::x25519::Identity>,
}

impl std::fmt::Debug for Real<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Real")
            .field("root", &self.root)
            .field("blobs", &self.blobs.len())
            .field("identity", &self.identity.map(|_| "<redacted>"))
            .finish()
    }
}

impl Executor for Recording {
    fn run(&mut self, step: &Step) -> Result<String, RollbackError> {
        self.steps.push(step.describe());
        Ok("recorded".into())
    }

    fn dry_run(&self) -> bool {
        true
    }
}

/// `abs` inside `root`, for reading (leading links are not followed inside the root: a dry
/// run only reports).
fn inside(root: &Path, abs: &str) -> PathBuf {
    root.join(abs.trim_start_matches('/'))
}

/// A line of `file` (a colon-separated account table) that starts with `name:`.
fn has_entry(root: &Path, file: &str, name: &str) -> bool {
    fs::read_to_string(inside(root, file))
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(':').next() == Some(name))
}

/// The installed version of `name:arch` (or `name`) from dpkg's status file.
pub fn installed_version(root: &Path, package: &str) -> Option<String> {
    let (name, arch) = package.split_once(':').unwrap_or((package, ""));
    let text = fs::read_to_string(inside(root, "/var/lib/dpkg/status")).ok()?;
    for stanza in text.split("\n\n") {
        let mut fields = BTreeMap::new();
        for l in stanza.lines() {
            if let Some((k, v)) = l.split_once(": ") {
                fields.insert(k, v);
            }
        }
        if fields.get("Package") == Some(&name)
            && (arch.is_empty() || fields.get("Architecture") == Some(&arch))
            && fields
                .get("Status")
                .is_some_and(|s| s.ends_with(" installed"))
        {
            return fields.get("Version").map(ToString::to_string);
        }
    }
    None
}

/// The MD5 (hex) dpkg records for `path` of `package`: its conffile hash, else its
/// `md5sums` entry.
fn packaged_md5(root: &Path, package: &str, path: &str) -> Option<String> {
    let name = package.split(':').next().unwrap_or(package);
    let status = fs::read_to_string(inside(root, "/var/lib/dpkg/status")).unwrap_or_default();
    for stanza in status.split("\n\n") {
        if !stanza.lines().any(|l| l == format!("Package: {name}")) {
            continue;
        }
        for l in stanza.lines().filter(|l| l.starts_with(' ')) {
            let mut f = l.split_whitespace();
            if let (Some(p), Some(md5)) = (f.next(), f.next()) {
                if p == path {
                    return Some(md5.to_string());
                }
            }
        }
    }
    let info = inside(root, "/var/lib/dpkg/info");
    let rel = path.trim_start_matches('/');
    fs::read_dir(&info).ok()?.flatten().find_map(|e| {
        let file = e.file_name().to_string_lossy().into_owned();
        let stem = file.strip_suffix(".md5sums")?;
        if stem != name && stem.split(':').next() != Some(name) {
            return None;
        }
        fs::read_to_string(e.path()).ok()?.lines().find_map(|l| {
            let (md5, p) = l.split_once("  ")?;
            (p == rel).then(|| md5.to_string())
        })
    })
}

/// True when `path` holds exactly what its package shipped.
fn is_packaged(root: &Path, package: &str, path: &str) -> bool {
    use md5::Digest as _;
    let Some(want) = packaged_md5(root, package, path) else {
        return false;
    };
    fs::read(inside(root, path)).is_ok_and(|d| {
        let sum = md5::Md5::digest(&d);
        let hex = sum.iter().fold(String::new(), |mut h, b| {
            use std::fmt::Write as _;
            let _ = write!(h, "{b:02x}");
            h
        });
        hex == want
    })
}

impl Executor for DryRun<'_> {
    fn run(&mut self, step: &Step) -> Result<String, RollbackError> {
        let root = self.root;
        let same = "already as wanted".to_string();
        Ok(match step {
            Step::Overlay { overlay } => match overlay {
                OverlayStep::File {
                    path,
                    content,
                    mode,
                    uid,
                    gid,
                } => {
                    let p = inside(root, path);
                    let want = self.blobs.get(content).map(|b| b.0.as_slice());
                    match (fs::symlink_metadata(&p), want) {
                        (_, None) => format!("cannot restore {path}: its content is missing"),
                        (Ok(m), Some(w))
                            if m.is_file()
                                && fs::read(&p).is_ok_and(|d| d == w)
                                && m.mode() & 0o7777 == *mode
                                && m.uid() == *uid
                                && m.gid() == *gid =>
                        {
                            same
                        }
                        (Ok(_), Some(_)) => format!("would rewrite {path}"),
                        (Err(_), Some(_)) => format!("would create {path}"),
                    }
                }
                OverlayStep::Remove { path } => {
                    if fs::symlink_metadata(inside(root, path)).is_ok() {
                        format!("would remove {path}")
                    } else {
                        same
                    }
                }
                OverlayStep::Symlink { path, target, .. } => {
                    if fs::read_link(inside(root, path))
                        .is_ok_and(|t| t.as_os_str() == target.as_str())
                    {
                        same
                    } else {
                        format!("would link {path} -> {target}")
                    }
                }
                OverlayStep::Directory {
                    path,
                    mode,
                    uid,
                    gid,
                    ..
                }
                | OverlayStep::Attributes {
                    path,
                    mode: Some(mode),
                    uid,
                    gid,
                } => match fs::symlink_metadata(inside(root, path)) {
                    Ok(m) if m.mode() & 0o7777 == *mode && m.uid() == *uid && m.gid() == *gid => {
                        same
                    }
                    Ok(_) => format!("would set {path} to {mode:04o} {uid}:{gid}"),
                    Err(_) => format!("would create {path}"),
                },
                other => format!("would apply: {}", other.describe()),
            },
            Step::RemoveUser { name } => {
                if has_entry(root, "/etc/passwd", name) {
                    format!("would remove user {name}")
                } else {
                    same
                }
            }
            Step::RemoveGroup { name } => {
                if has_entry(root, "/etc/group", name) {
                    format!("would remove group {name}")
                } else {
                    same
                }
            }
            Step::Purge { package } => match installed_version(root, package) {
                Some(v) => format!("would purge {package} {v}"),
                None => same,
            },
            Step::Install { package, version } => match installed_version(root, package) {
                Some(v) if v == *version => same,
                Some(v) => format!("would replace {package} {v} with {version}"),
                None => format!("would install {package} {version}"),
            },
            Step::RestorePackaged { package, path } if is_packaged(root, package, path) => same,
            Step::Mark { .. } | Step::RestorePackaged { .. } => {
                format!("would {}", step.describe())
            }
            Step::ReloadSysctl => {
                if root == Path::new("/") {
                    "would run sysctl --system".into()
                } else {
                    "skipped: not a running system".into()
                }
            }
        })
    }

    fn dry_run(&self) -> bool {
        true
    }
}

/// A command inside `root`: directly when `root` is `/`, through `chroot` otherwise, with a
/// plain environment.
fn in_root(root: &Path, program: &str) -> Command {
    let mut c = if root == Path::new("/") {
        Command::new(program)
    } else {
        let mut c = Command::new("chroot");
        c.arg(root).arg(program);
        c
    };
    c.env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("LC_ALL", "C.UTF-8")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .env_remove("APT_CONFIG");
    c
}

/// Mounts `/proc` and `/dev` for apt inside a root, in a private mount namespace that ends
/// with the command.
const MOUNTED_CHROOT: &str = r#"set -e
root=$1; shift
mount -t proc proc "$root/proc"
mount --bind /dev "$root/dev"
exec chroot "$root" "$@""#;

fn apt_in_root(root: &Path, program: &str) -> Command {
    if root == Path::new("/") {
        return in_root(root, program);
    }
    let mut c = Command::new("unshare");
    c.args(["--mount", "--propagation", "private", "--", "sh", "-c"])
        .arg(MOUNTED_CHROOT)
        .arg("keel-chroot")
        .arg(root)
        .arg(program)
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("LC_ALL", "C.UTF-8")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .env_remove("APT_CONFIG");
    c
}

fn run(cmd: &mut Command) -> Result<String, RollbackError> {
    let described = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    let out = cmd.output().map_err(|e| RollbackError::Command {
        command: described.clone(),
        status: "not started".into(),
        output: e.to_string(),
    })?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        let tail: Vec<&str> = text.lines().rev().take(8).collect();
        Err(RollbackError::Command {
            command: described,
            status: out.status.to_string(),
            output: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
        })
    }
}

/// While it lives, services do not start in a chroot (`policy-rc.d` says no).
struct NoServices(Option<PathBuf>);

impl NoServices {
    fn new(root: &Path) -> Result<Self, RollbackError> {
        if root == Path::new("/") {
            return Ok(NoServices(None));
        }
        let p = root.join("usr/sbin/policy-rc.d");
        if p.exists() {
            return Ok(NoServices(None));
        }
        fs::write(&p, "#!/bin/sh\nexit 101\n").map_err(|e| RollbackError::io(&p, e))?;
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755))
            .map_err(|e| RollbackError::io(&p, e))?;
        Ok(NoServices(Some(p)))
    }
}

impl Drop for NoServices {
    fn drop(&mut self) {
        if let Some(p) = &self.0 {
            let _ = fs::remove_file(p);
        }
    }
}

fn summary(r: &OverlayReport) -> String {
    let v = serde_json::to_value(r).unwrap_or_default();
    let mut parts: Vec<String> = Vec::new();
    if let Some(m) = v.as_object() {
        for (k, v) in m {
            match v {
                serde_json::Value::Number(n) if n.as_u64().unwrap_or(0) > 0 && k != "unchanged" => {
                    parts.push(format!("{} {n}", k.replace('_', " ")));
                }
                serde_json::Value::Array(a) if !a.is_empty() => {
                    parts.push(format!("{}: {}", k.replace('_', " "), a.len()));
                }
                _ => {}
            }
        }
    }
    if parts.is_empty() {
        "already as wanted".into()
    } else {
        parts.join(", ")
    }
}

impl Executor for Real<'_> {
    fn root(&self) -> Option<&Path> {
        Some(self.root)
    }

    fn run(&mut self, step: &Step) -> Result<String, RollbackError> {
        let root = self.root;
        match step {
            Step::Overlay { overlay } => {
                let ctx = OverlayContext {
                    blobs: self.blobs,
                    identity: self.identity,
                };
                let report = apply_overlay(root, std::slice::from_ref(overlay), &ctx)?;
                if let OverlayStep::Secret { path, .. } = overlay {
                    if report.secrets_restored == 0 {
                        return Ok(format!(
                            "secret {path} not restored: give the recovery identity"
                        ));
                    }
                }
                let mut line = summary(&report);
                for w in &report.warnings {
                    line.push_str("; warning: ");
                    line.push_str(w);
                }
                Ok(line)
            }
            Step::RemoveUser { name } => {
                if !has_entry(root, "/etc/passwd", name) {
                    return Ok("already as wanted".into());
                }
                run(in_root(root, "userdel").arg("--").arg(name))?;
                Ok(format!("removed user {name}"))
            }
            Step::RemoveGroup { name } => {
                if !has_entry(root, "/etc/group", name) {
                    return Ok("already as wanted".into());
                }
                run(in_root(root, "groupdel").arg("--").arg(name))?;
                Ok(format!("removed group {name}"))
            }
            Step::Purge { package } => {
                if installed_version(root, package).is_none() {
                    return Ok("already as wanted".into());
                }
                let _guard = NoServices::new(root)?;
                run(in_root(root, "dpkg").args(["--purge", "--", package]))?;
                Ok(format!("purged {package}"))
            }
            Step::Install { package, version } => {
                if installed_version(root, package).as_deref() == Some(version) {
                    return Ok("already as wanted".into());
                }
                let _guard = NoServices::new(root)?;
                run(apt_in_root(root, "apt-get").args([
                    "-q",
                    "-y",
                    "install",
                    "--no-install-recommends",
                    "--allow-downgrades",
                    "-o",
                    "Dpkg::Options::=--force-confdef",
                    "-o",
                    "Dpkg::Options::=--force-confold",
                    &format!("{package}={version}"),
                ]))?;
                Ok(format!("installed {package} {version}"))
            }
            Step::Mark {
                package,
                auto,
                hold,
            } => {
                run(in_root(root, "apt-mark")
                    .arg(if *auto { "auto" } else { "manual" })
                    .arg(package))?;
                run(in_root(root, "apt-mark")
                    .arg(if *hold { "hold" } else { "unhold" })
                    .arg(package))?;
                Ok(step.describe())
            }
            Step::RestorePackaged { package, path } => {
                if is_packaged(root, package, path) {
                    return Ok("already as wanted".into());
                }
                let p = inside(root, path);
                let aside = p.with_extension("keel-rollback");
                let had = p.exists();
                if had {
                    fs::rename(&p, &aside).map_err(|e| RollbackError::io(&p, e))?;
                }
                let _guard = NoServices::new(root)?;
                let res = run(apt_in_root(root, "apt-get").args([
                    "-q",
                    "-y",
                    "install",
                    "--reinstall",
                    "-o",
                    "Dpkg::Options::=--force-confmiss",
                    package,
                ]));
                match res {
                    Ok(_) if p.exists() => {
                        let _ = fs::remove_file(&aside);
                        Ok(format!("restored {path} from package {package}"))
                    }
                    other => {
                        if had {
                            let _ = fs::rename(&aside, &p);
                        }
                        other?;
                        Err(RollbackError::Plan(format!(
                            "reinstalling {package} did not bring back {path}"
                        )))
                    }
                }
            }
            Step::ReloadSysctl => {
                if root == Path::new("/") {
                    run(Command::new("sysctl").arg("--system"))?;
                    Ok("reloaded sysctl settings".into())
                } else {
                    Ok("skipped: not a running system (takes effect at boot)".into())
                }
            }
        }
    }
}

/// What one pass over the plan did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Applied {
    /// One line per step, in order.
    pub steps: Vec<StepOutcome>,
    /// Steps a journal showed as done before this run (a resumed rollback).
    pub resumed: usize,
}

/// What one step did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StepOutcome {
    /// Its number, from 1.
    pub number: usize,
    /// What it is.
    pub description: String,
    /// What it did, or would do.
    pub output: String,
}

/// Runs the plan's steps in order through `exec`. With a journal (real runs only), each
/// step's state is written and synced before and after it; a rerun skips the steps recorded
/// as done and goes on from the first that is not. `progress` hears each step as it ends.
pub fn apply(
    plan: &Plan,
    exec: &mut dyn Executor,
    journal: Option<&Path>,
    progress: &mut dyn FnMut(&StepOutcome),
) -> Result<Applied, RollbackError> {
    let mut journal = match journal {
        Some(p) if !exec.dry_run() => Some(Journal::open(p, plan)?),
        _ => None,
    };
    let mut applied = Applied::default();
    for (i, step) in plan.steps.iter().enumerate() {
        let number = i + 1;
        if journal.as_ref().is_some_and(|j| j.done(number)) {
            applied.resumed += 1;
            continue;
        }
        if let Some(j) = journal.as_mut() {
            if let Some(root) = exec.root() {
                j.save(number, root, step)?;
            }
            j.start(number)?;
        }
        match exec.run(step) {
            Ok(output) => {
                if let Some(j) = journal.as_mut() {
                    j.finish(number, &output)?;
                }
                let o = StepOutcome {
                    number,
                    description: step.describe(),
                    output,
                };
                progress(&o);
                applied.steps.push(o);
            }
            Err(e) => {
                if let Some(j) = journal.as_mut() {
                    j.fail(number, &e.to_string())?;
                }
                return Err(RollbackError::Plan(format!(
                    "step {number} ({}) failed: {e}\nhint: fix the cause and run the same \
                     rollback again: the journal resumes from this step",
                    step.describe()
                )));
            }
        }
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::StepState;

    /// Fails the step whose description contains `fail_on`, while `fail_on` is set.
    struct Flaky {
        fail_on: Option<&'static str>,
        ran: Vec<String>,
    }

    impl Executor for Flaky {
        fn run(&mut self, step: &Step) -> Result<String, RollbackError> {
            let d = step.describe();
            if self.fail_on.is_some_and(|f| d.contains(f)) {
                return Err(RollbackError::Plan("dpkg is locked".into()));
            }
            self.ran.push(d);
            Ok("ok".into())
        }
    }

    fn plan() -> Plan {
        Plan {
            format: crate::PLAN_FORMAT,
            before: Hash::of(b"a"),
            after: Hash::of(b"b"),
            current: Hash::of(b"b"),
            selection: Vec::new(),
            items: Vec::new(),
            steps: vec![
                Step::Purge {
                    package: "tree:amd64".into(),
                },
                Step::RemoveUser {
                    name: "mallory".into(),
                },
                Step::RemoveGroup {
                    name: "mallory".into(),
                },
            ],
            blobs: BTreeMap::new(),
            warnings: Vec::new(),
        }
    }

    #[test]
    fn a_failure_midway_leaves_a_journal_that_a_rerun_completes() {
        let dir = tempfile::tempdir().unwrap();
        let journal = dir.path().join("j.json");
        let plan = plan();
        let mut exec = Flaky {
            fail_on: Some("remove user"),
            ran: Vec::new(),
        };
        let err = apply(&plan, &mut exec, Some(&journal), &mut |_| {}).unwrap_err();
        assert!(err.to_string().contains("step 2"), "{err}");
        assert!(err.to_string().contains("hint:"), "{err}");
        let j = Journal::read(&journal).unwrap().unwrap();
        let states: Vec<StepState> = j.steps.iter().map(|s| s.state).collect();
        assert_eq!(
            states,
            vec![StepState::Done, StepState::Failed, StepState::Pending]
        );
        assert_eq!(j.steps[1].error.as_deref(), Some("dpkg is locked"));

        exec.fail_on = None;
        exec.ran.clear();
        let done = apply(&plan, &mut exec, Some(&journal), &mut |_| {}).unwrap();
        assert_eq!(done.resumed, 1, "the step done before is not run again");
        assert_eq!(
            exec.ran,
            vec![
                "remove user mallory (its home is kept)",
                "remove group mallory"
            ]
        );
        let j = Journal::read(&journal).unwrap().unwrap();
        assert!(j.steps.iter().all(|s| s.state == StepState::Done));
        assert_eq!(j.steps[1].attempts, 2);

        // Another plan does not take over an unfinished journal.
        let mut other = plan.clone();
        other.steps.pop();
        exec.fail_on = Some("remove user");
        let _ = apply(&other, &mut exec, Some(&journal), &mut |_| {});
        let mut third = plan.clone();
        third.steps.truncate(1);
        let err = apply(&third, &mut exec, Some(&journal), &mut |_| {}).unwrap_err();
        assert!(matches!(err, RollbackError::OtherPlan { .. }), "{err}");
    }

    #[test]
    fn dry_run_reads_and_changes_nothing() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("etc")).unwrap();
        std::fs::write(
            root.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\n",
        )
        .unwrap();
        let blobs = BTreeMap::new();
        let mut dry = DryRun {
            root: root.path(),
            blobs: &blobs,
        };
        let p = plan();
        let out = apply(&p, &mut dry, Some(&root.path().join("j")), &mut |_| {}).unwrap();
        let lines: Vec<&str> = out.steps.iter().map(|o| o.output.as_str()).collect();
        assert_eq!(lines, vec!["already as wanted"; 3]);
        assert!(
            !root.path().join("j").exists(),
            "a dry run writes no journal"
        );
    }
}
