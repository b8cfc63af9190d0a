//! The configuration overlay: the steps that give a root the configuration a profile records
//! on top of its packages — accounts with their numeric ids, changed and unowned files with
//! their modes and owners, links, removed conffiles, user crontabs, alternatives, unit-file
//! states, host settings and secrets.
//!
//! Steps are plain data ([`OverlayStep`], serialisable), computed from a profile by
//! [`overlay_steps`] and applied to any root by [`apply_overlay`]: a freshly built tree, or a
//! live system (`/`) whose configuration is being put back. Every step is idempotent — it
//! compares first and changes only what differs — so applying the same steps twice changes
//! nothing the second time, and the report counts only real changes.
//!
//! Paths inside the root are resolved the way the root's own system would resolve them:
//! symbolic links in leading directories are followed inside the root, never out of it, and
//! `..` components are refused, so a profile cannot make the overlay write outside the root.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use keel_profile::{Blob, CollectorState, FileStatus, Group, Hash, Profile, User};
use serde::{Deserialize, Serialize};

use crate::accounts::{Remap, Table};
use crate::build::Phase;
use crate::cmd;
use crate::error::SystemError;

/// One change the overlay makes to a root. Paths are absolute paths inside the root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum OverlayStep {
    /// Users and groups with their numeric ids: entries in the account files are added or
    /// corrected; with `remap_owners`, files owned by an id that changed follow it (a tree
    /// whose packages were installed in another order than the profiled system's gets the
    /// profile's ids); with `create_homes`, missing home directories of regular users are
    /// made from `/etc/skel`.
    Accounts {
        /// Every user, as the profile records them.
        users: Vec<User>,
        /// Every group.
        groups: Vec<Group>,
        /// Change the owner of files whose owner's id changed.
        remap_owners: bool,
        /// Make missing home directories under `/home`.
        create_homes: bool,
    },
    /// A directory with its mode and owner.
    Directory {
        /// Path.
        path: String,
        /// Permission bits.
        mode: u32,
        /// Owner.
        uid: u32,
        /// Group.
        gid: u32,
    },
    /// A file whose content is the blob `content`.
    File {
        /// Path.
        path: String,
        /// The content's address among the blobs.
        content: Hash,
        /// Permission bits.
        mode: u32,
        /// Owner.
        uid: u32,
        /// Group.
        gid: u32,
    },
    /// A symbolic link.
    Symlink {
        /// Path.
        path: String,
        /// Where it points.
        target: String,
        /// Owner.
        uid: u32,
        /// Group.
        gid: u32,
    },
    /// Mode and owner of an entry a package installed (its content is the package's); nothing
    /// happens when it is absent.
    Attributes {
        /// Path.
        path: String,
        /// Permission bits (none for links).
        mode: Option<u32>,
        /// Owner.
        uid: u32,
        /// Group.
        gid: u32,
    },
    /// An entry that must not exist (a conffile the administrator deleted).
    Remove {
        /// Path.
        path: String,
    },
    /// Removes every entry under `dir` the profile does not list: what the packages' scripts
    /// or the base system made that the profiled system did not have. `keep` holds exact
    /// paths; an entry ending in `/` keeps a whole subtree.
    Prune {
        /// The directory (`/etc`).
        dir: String,
        /// Paths to keep.
        keep: Vec<String>,
    },
    /// A user's crontab, from the jobs the profile records.
    UserCrontab {
        /// The user.
        user: String,
        /// Its path (`/var/spool/cron/crontabs/USER`).
        path: String,
        /// One line per job: schedule and command.
        entries: Vec<String>,
    },
    /// A manually chosen alternative (`update-alternatives --set`).
    Alternative {
        /// The alternative's name (`editor`).
        name: String,
        /// The chosen program.
        value: String,
    },
    /// A unit file's enablement: `enabled`, `disabled` or `masked`, set with `systemctl`
    /// where it differs. [`overlay_steps`] makes these only when the profile does not record
    /// the links under `/etc/systemd/system` (which restore enablement exactly).
    UnitState {
        /// The unit.
        unit: String,
        /// The state it must have.
        state: String,
    },
    /// Hostname, timezone and locale (regenerating the locale when needed).
    Host {
        /// `/etc/hostname`.
        hostname: Option<String>,
        /// The zone `/etc/localtime` points at (`Europe/Berlin`).
        timezone: Option<String>,
        /// `LANG` in `/etc/default/locale`.
        locale: Option<String>,
    },
    /// A secret: decrypted with the recovery identity and written with its mode and owner.
    Secret {
        /// Path.
        path: String,
        /// The ciphertext's address among the blobs; none when the capture withheld it.
        ciphertext: Option<Hash>,
        /// Permission bits.
        mode: u32,
        /// Owner.
        uid: u32,
        /// Group.
        gid: u32,
    },
}

impl OverlayStep {
    /// One line for people.
    pub fn describe(&self) -> String {
        match self {
            OverlayStep::Accounts { users, groups, .. } => {
                format!("accounts: {} users, {} groups", users.len(), groups.len())
            }
            OverlayStep::Directory {
                path,
                mode,
                uid,
                gid,
            } => {
                format!("directory {path} {mode:04o} {uid}:{gid}")
            }
            OverlayStep::File {
                path,
                mode,
                uid,
                gid,
                ..
            } => format!("file {path} {mode:04o} {uid}:{gid}"),
            OverlayStep::Symlink { path, target, .. } => format!("link {path} -> {target}"),
            OverlayStep::Attributes {
                path,
                mode,
                uid,
                gid,
            } => match mode {
                Some(m) => format!("attributes {path} {m:04o} {uid}:{gid}"),
                None => format!("attributes {path} {uid}:{gid}"),
            },
            OverlayStep::Remove { path } => format!("remove {path}"),
            OverlayStep::Prune { dir, keep } => {
                format!("prune {dir} (keeping {} listed entries)", keep.len())
            }
            OverlayStep::UserCrontab { user, entries, .. } => {
                format!("crontab of {user}: {} jobs", entries.len())
            }
            OverlayStep::Alternative { name, value } => format!("alternative {name} -> {value}"),
            OverlayStep::UnitState { unit, state } => format!("unit {unit} {state}"),
            OverlayStep::Host {
                hostname,
                timezone,
                locale,
            } => format!(
                "host {} timezone {} locale {}",
                hostname.as_deref().unwrap_or("-"),
                timezone.as_deref().unwrap_or("-"),
                locale.as_deref().unwrap_or("-")
            ),
            OverlayStep::Secret {
                path, ciphertext, ..
            } => {
                if ciphertext.is_some() {
                    format!("secret {path}")
                } else {
                    format!("secret {path} (withheld at capture)")
                }
            }
        }
    }
}

/// The overlay of a profile: its steps, its secrets (applied last, apart), and what cannot
/// come back.
#[derive(Debug, Clone, Default)]
pub struct OverlaySteps {
    /// Every step but the secrets, in the order they apply.
    pub steps: Vec<OverlayStep>,
    /// [`OverlayStep::Secret`] steps.
    pub secrets: Vec<OverlayStep>,
    /// What the profile records but cannot be put back, and why.
    pub warnings: Vec<String>,
}

/// Entries under `/etc` made by package scripts and triggers: never pruned.
const ALWAYS_KEEP: &[&str] = &["/etc/ssl/certs/", "/etc/alternatives/"];

fn ok(profile: &Profile, section: &str, table: &str) -> bool {
    profile
        .collector_for(section, table)
        .is_none_or(|c| c.state == CollectorState::Ok)
}

/// The overlay that gives a root with the profile's packages the profile's configuration.
pub fn overlay_steps(profile: &Profile) -> OverlaySteps {
    let mut out = OverlaySteps::default();
    let unknown = |what: &str, out: &mut OverlaySteps| {
        out.warnings.push(format!(
            "the profile's {what} are unknown (their collector failed): not restored"
        ));
    };

    if !ok(profile, "users", "users") {
        unknown("users and groups", &mut out);
    } else if !profile.users.users.is_empty() {
        out.steps.push(OverlayStep::Accounts {
            users: profile.users.users.clone(),
            groups: profile.users.groups.clone(),
            remap_owners: true,
            create_homes: true,
        });
    }

    if ok(profile, "files", "files") {
        file_steps(profile, &mut out);
    } else {
        unknown("configuration files", &mut out);
    }

    if ok(profile, "schedules", "cron") {
        let mut tabs: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
        for j in &profile.schedules.cron {
            if !j.source.starts_with("/var/spool/cron/") {
                continue; // system crontabs are files under /etc
            }
            let Some(user) = &j.user else { continue };
            tabs.entry((j.source.clone(), user.clone()))
                .or_default()
                .push(format!("{} {}", j.schedule, j.command));
        }
        for ((path, user), entries) in tabs {
            out.steps.push(OverlayStep::UserCrontab {
                user,
                path,
                entries,
            });
        }
    } else {
        unknown("cron jobs", &mut out);
    }

    for a in &profile.packages.alternatives {
        if let (true, Some(value)) = (a.mode == "manual", &a.value) {
            out.steps.push(OverlayStep::Alternative {
                name: a.name.clone(),
                value: value.clone(),
            });
        }
    }

    // Enablement is recorded by the links under /etc/systemd/system, which the file steps
    // restore exactly (and the prune step removes links the profiled system did not have).
    // systemctl is only asked when those links are unknown: its view of aliased units does
    // not always match the one recorded, and a wrong `enable` leaves links behind.
    let links_recorded = ok(profile, "files", "files") && !profile.files.files.is_empty();
    if !ok(profile, "services", "units") {
        unknown("unit-file states", &mut out);
    } else if !links_recorded {
        for u in &profile.services.units {
            let state = u.unit_file_state.as_str();
            // Template units are enabled through their instances' links, which are files.
            if matches!(state, "enabled" | "disabled" | "masked") && !u.name.contains("@.") {
                out.steps.push(OverlayStep::UnitState {
                    unit: u.name.clone(),
                    state: state.to_string(),
                });
            }
        }
    }

    if let Some(h) = profile.os.host.first() {
        out.steps.push(OverlayStep::Host {
            hostname: Some(h.hostname.clone()).filter(|x| !x.is_empty()),
            timezone: h.timezone.clone(),
            locale: h.locale.clone(),
        });
    }

    for s in &profile.security.secrets {
        out.secrets.push(OverlayStep::Secret {
            path: s.path.clone(),
            ciphertext: s.ciphertext,
            mode: s.mode,
            uid: s.uid,
            gid: s.gid,
        });
    }
    out
}

fn file_steps(profile: &Profile, out: &mut OverlaySteps) {
    let mut dirs = Vec::new();
    let mut entries = Vec::new();
    let mut attrs = Vec::new();
    let mut removes = Vec::new();
    let mut keep: BTreeSet<String> = ALWAYS_KEEP.iter().map(ToString::to_string).collect();
    for f in &profile.files.files {
        let path = f.path.clone();
        match (f.kind.as_str(), f.status) {
            ("generated", _) => {
                keep.insert(path.trim_end_matches('*').to_string());
                continue;
            }
            (_, FileStatus::Missing) => {
                removes.push(OverlayStep::Remove { path });
                continue;
            }
            ("dir", FileStatus::Unowned) => dirs.push(OverlayStep::Directory {
                path: path.clone(),
                mode: f.mode,
                uid: f.uid,
                gid: f.gid,
            }),
            ("dir", _) | ("file", FileStatus::Pristine) => attrs.push(OverlayStep::Attributes {
                path: path.clone(),
                mode: Some(f.mode),
                uid: f.uid,
                gid: f.gid,
            }),
            ("symlink", _) => match &f.target {
                Some(target) => entries.push(OverlayStep::Symlink {
                    path: path.clone(),
                    target: target.clone(),
                    uid: f.uid,
                    gid: f.gid,
                }),
                None => out
                    .warnings
                    .push(format!("link {path} has no recorded target: not restored")),
            },
            ("file", FileStatus::Modified | FileStatus::Unowned) if f.content => match f.hash {
                Some(h) => entries.push(OverlayStep::File {
                    path: path.clone(),
                    content: h,
                    mode: f.mode,
                    uid: f.uid,
                    gid: f.gid,
                }),
                None => out
                    .warnings
                    .push(format!("{path} has no recorded content hash: not restored")),
            },
            ("file", FileStatus::Modified) => {
                out.warnings.push(format!(
                    "{path} was changed on the profiled system but was too large to keep: \
                     its packaged version is installed"
                ));
                attrs.push(OverlayStep::Attributes {
                    path: path.clone(),
                    mode: Some(f.mode),
                    uid: f.uid,
                    gid: f.gid,
                });
            }
            ("file", FileStatus::TooLarge) => {
                out.warnings.push(format!(
                    "{path} belongs to no package and was too large to keep: not restored"
                ));
            }
            // Secrets come back apart; generated files with their packages.
            _ => {}
        }
        keep.insert(path);
    }
    for i in &profile.files.ignored_files {
        keep.insert(i.path.clone());
        keep.insert(format!("{}/", i.path));
    }
    for s in &profile.security.secrets {
        keep.insert(s.path.clone());
    }
    let by_path = |s: &OverlayStep| match s {
        OverlayStep::Directory { path, .. }
        | OverlayStep::File { path, .. }
        | OverlayStep::Symlink { path, .. } => path.clone(),
        _ => String::new(),
    };
    dirs.sort_by_key(by_path);
    entries.sort_by_key(by_path);
    out.steps.extend(dirs);
    out.steps.extend(entries);
    out.steps.extend(attrs);
    out.steps.extend(removes);
    if !profile.files.files.is_empty() {
        out.steps.push(OverlayStep::Prune {
            dir: "/etc".into(),
            keep: keep.into_iter().collect(),
        });
    }
}

/// What [`apply_overlay`] reads besides the steps.
#[derive(Clone, Copy)]
pub struct OverlayContext<'a> {
    /// Blobs by address: file contents and secrets' ciphertext.
    pub blobs: &'a BTreeMap<Hash, Blob>,
    /// The recovery identity; without it secrets are skipped (and reported).
    pub identity: Option<&'a age::x25519::Identity>,
}

impl std::fmt::Debug for OverlayContext<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OverlayContext")
            .field("blobs", &self.blobs.len())
            .field("identity", &self.identity.map(|_| "<redacted>"))
            .finish()
    }
}

/// What applying an overlay changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverlayReport {
    /// Files written.
    pub files_written: usize,
    /// Links made or corrected.
    pub links_written: usize,
    /// Directories made or corrected.
    pub directories: usize,
    /// Entries whose mode or owner was corrected.
    pub attributes_set: usize,
    /// Entries removed by [`OverlayStep::Remove`].
    pub removed: usize,
    /// Entries removed by [`OverlayStep::Prune`].
    pub pruned: Vec<String>,
    /// Account entries added or corrected.
    pub accounts_written: usize,
    /// Files whose owner followed a changed id.
    pub owners_remapped: usize,
    /// Home directories made.
    pub homes_created: usize,
    /// User crontabs written.
    pub crontabs: usize,
    /// Alternatives set.
    pub alternatives: usize,
    /// Units enabled, disabled, masked or unmasked.
    pub units_changed: usize,
    /// Host settings corrected.
    pub host_settings: usize,
    /// Secrets decrypted and written.
    pub secrets_restored: usize,
    /// Secrets not restored (withheld at capture, or no identity).
    pub secrets_skipped: Vec<String>,
    /// Steps that found everything already as wanted.
    pub unchanged: usize,
    /// What could not be done exactly, and why.
    pub warnings: Vec<String>,
}

/// Applies `steps` to the system under `root`, in order. Commands (`systemctl`,
/// `update-alternatives`, `locale-gen`) run inside the root with `chroot`, or directly when
/// `root` is `/`.
pub fn apply_overlay(
    root: &Path,
    steps: &[OverlayStep],
    ctx: &OverlayContext<'_>,
) -> Result<OverlayReport, SystemError> {
    let mut r = OverlayReport::default();
    let mut i = 0;
    while i < steps.len() {
        // Unit states apply together: one listing, one command per action.
        if matches!(steps[i], OverlayStep::UnitState { .. }) {
            let start = i;
            while i < steps.len() && matches!(steps[i], OverlayStep::UnitState { .. }) {
                i += 1;
            }
            unit_states(root, &steps[start..i], &mut r);
            continue;
        }
        apply_step(root, &steps[i], ctx, &mut r)?;
        i += 1;
    }
    Ok(r)
}

fn apply_step(
    root: &Path,
    step: &OverlayStep,
    ctx: &OverlayContext<'_>,
    r: &mut OverlayReport,
) -> Result<(), SystemError> {
    match step {
        OverlayStep::Accounts {
            users,
            groups,
            remap_owners,
            create_homes,
        } => accounts(root, users, groups, *remap_owners, *create_homes, r)?,
        OverlayStep::Directory {
            path,
            mode,
            uid,
            gid,
        } => {
            let host = host_path(root, path)?;
            let meta = fs::symlink_metadata(&host).ok();
            let create = !meta.as_ref().is_some_and(fs::Metadata::is_dir);
            if create {
                if meta.is_some() {
                    remove_any(&host)?;
                }
                make_parent(&host)?;
                fs::create_dir(&host).map_err(|e| SystemError::io("cannot create", &host, e))?;
            }
            if set_attributes(&host, Some(*mode), *uid, *gid)? || create {
                r.directories += 1;
            } else {
                r.unchanged += 1;
            }
        }
        OverlayStep::File {
            path,
            content,
            mode,
            uid,
            gid,
        } => {
            let Some(blob) = ctx.blobs.get(content) else {
                r.warnings.push(format!(
                    "the content of {path} ({}) is not among the profile's blobs: not restored",
                    content.short()
                ));
                return Ok(());
            };
            let host = host_path(root, path)?;
            if put_file(&host, &blob.0, *mode, *uid, *gid)? {
                r.files_written += 1;
            } else {
                r.unchanged += 1;
            }
        }
        OverlayStep::Symlink {
            path,
            target,
            uid,
            gid,
        } => {
            let host = host_path(root, path)?;
            if put_link(&host, target, *uid, *gid)? {
                r.links_written += 1;
            } else {
                r.unchanged += 1;
            }
        }
        OverlayStep::Attributes {
            path,
            mode,
            uid,
            gid,
        } => {
            let host = host_path(root, path)?;
            match fs::symlink_metadata(&host) {
                Ok(m) => {
                    let mode = if m.file_type().is_symlink() {
                        None
                    } else {
                        *mode
                    };
                    if set_attributes(&host, mode, *uid, *gid)? {
                        r.attributes_set += 1;
                    } else {
                        r.unchanged += 1;
                    }
                }
                Err(_) => r.warnings.push(format!(
                    "{path} is recorded as installed by its package but the package did not \
                     install it here"
                )),
            }
        }
        OverlayStep::Remove { path } => {
            let host = host_path(root, path)?;
            if fs::symlink_metadata(&host).is_ok() {
                remove_any(&host)?;
                r.removed += 1;
            } else {
                r.unchanged += 1;
            }
        }
        OverlayStep::Prune { dir, keep } => prune(root, dir, keep, r)?,
        OverlayStep::UserCrontab {
            user,
            path,
            entries,
        } => crontab(root, user, path, entries, r)?,
        OverlayStep::Alternative { name, value } => {
            let link = host_path(root, &format!("/etc/alternatives/{name}"))?;
            if fs::read_link(&link).is_ok_and(|t| t.as_os_str() == value.as_str()) {
                r.unchanged += 1;
            } else {
                let res = cmd::run_quiet(
                    Phase::Overlay,
                    cmd::in_root(root, "update-alternatives").args(["--set", name, value]),
                    Duration::from_secs(60),
                );
                match res {
                    Ok(_) => r.alternatives += 1,
                    Err(e) => r
                        .warnings
                        .push(format!("alternative {name} not set to {value}: {e}")),
                }
            }
        }
        OverlayStep::UnitState { .. } => unit_states(root, std::slice::from_ref(step), r),
        OverlayStep::Host {
            hostname,
            timezone,
            locale,
        } => host_settings(
            root,
            hostname.as_deref(),
            timezone.as_deref(),
            locale.as_deref(),
            r,
        )?,
        OverlayStep::Secret {
            path,
            ciphertext,
            mode,
            uid,
            gid,
        } => {
            let Some(c) = ciphertext else {
                r.secrets_skipped.push(path.clone());
                r.warnings.push(format!(
                    "secret {path} was withheld at capture (no recovery key): not restored"
                ));
                return Ok(());
            };
            let Some(identity) = ctx.identity else {
                r.secrets_skipped.push(path.clone());
                return Ok(());
            };
            let Some(blob) = ctx.blobs.get(c) else {
                r.secrets_skipped.push(path.clone());
                r.warnings.push(format!(
                    "the ciphertext of secret {path} is not among the profile's blobs: not restored"
                ));
                return Ok(());
            };
            let plain = crate::identity::decrypt(identity, path, &blob.0)?;
            let host = host_path(root, path)?;
            put_file(&host, &plain, *mode, *uid, *gid)?;
            r.secrets_restored += 1;
        }
    }
    Ok(())
}

// ------------------------------------------------------------------ paths and files

/// The path on this machine of `abs` inside `root`. Leading directories that are symbolic
/// links are followed inside the root (an absolute target starts again at the root, `..`
/// stops at it); the last component is never followed.
pub(crate) fn host_path(root: &Path, abs: &str) -> Result<PathBuf, SystemError> {
    let refuse = |why: &str| {
        SystemError::Other(format!(
            "refusing the path {abs:?} from the profile: {why}\nhint: the profile may have \
             been altered; capture the system again"
        ))
    };
    if !abs.starts_with('/') {
        return Err(refuse("it is not absolute"));
    }
    let parts: Vec<&str> = abs.split('/').filter(|c| !c.is_empty()).collect();
    if parts.iter().any(|c| *c == ".." || *c == ".") {
        return Err(refuse("it has `.` or `..` components"));
    }
    let Some((last, parents)) = parts.split_last() else {
        return Err(refuse("it names the root itself"));
    };
    let mut cur: Vec<String> = Vec::new();
    let mut queue: std::collections::VecDeque<String> =
        parents.iter().map(|c| (*c).to_string()).collect();
    let mut hops = 0;
    while let Some(c) = queue.pop_front() {
        match c.as_str() {
            "" | "." => continue,
            ".." => {
                cur.pop();
                continue;
            }
            _ => {}
        }
        let candidate = root.join(cur.join("/")).join(&c);
        match fs::symlink_metadata(&candidate) {
            Ok(m) if m.file_type().is_symlink() => {
                hops += 1;
                if hops > 40 {
                    return Err(refuse("too many levels of symbolic links"));
                }
                let t = fs::read_link(&candidate)
                    .map_err(|e| SystemError::io("cannot read", &candidate, e))?;
                let t = t.to_string_lossy();
                if t.starts_with('/') {
                    cur.clear();
                }
                let mut next: std::collections::VecDeque<String> = t
                    .split('/')
                    .filter(|x| !x.is_empty())
                    .map(String::from)
                    .collect();
                next.extend(queue.drain(..));
                queue = next;
            }
            _ => cur.push(c),
        }
    }
    Ok(root.join(cur.join("/")).join(last))
}

fn make_parent(path: &Path) -> Result<(), SystemError> {
    if let Some(parent) = path.parent() {
        if !parent.is_dir() {
            fs::create_dir_all(parent).map_err(|e| SystemError::io("cannot create", parent, e))?;
        }
    }
    Ok(())
}

fn remove_any(path: &Path) -> Result<(), SystemError> {
    let r = match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(_) => Ok(()),
    };
    r.map_err(|e| SystemError::io("cannot remove", path, e))
}

/// Sets mode (when given) and owner where they differ; true when something changed.
fn set_attributes(path: &Path, mode: Option<u32>, uid: u32, gid: u32) -> Result<bool, SystemError> {
    let m = fs::symlink_metadata(path).map_err(|e| SystemError::io("cannot read", path, e))?;
    let mut changed = false;
    if m.uid() != uid || m.gid() != gid {
        std::os::unix::fs::lchown(path, Some(uid), Some(gid))
            .map_err(|e| SystemError::io("cannot change the owner of", path, e))?;
        changed = true;
    }
    if let Some(mode) = mode {
        // After chown, which clears set-id bits.
        if m.mode() & 0o7777 != mode || changed {
            fs::set_permissions(path, fs::Permissions::from_mode(mode))
                .map_err(|e| SystemError::io("cannot set the mode of", path, e))?;
            changed |= m.mode() & 0o7777 != mode;
        }
    }
    Ok(changed)
}

fn temp_name(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map_or_else(|| "entry".into(), |n| n.to_string_lossy().into_owned());
    path.with_file_name(format!(".{name}.keel-{}", std::process::id()))
}

/// Writes a file atomically with its mode and owner; false when it was already so.
pub(crate) fn put_file(
    path: &Path,
    data: &[u8],
    mode: u32,
    uid: u32,
    gid: u32,
) -> Result<bool, SystemError> {
    if let Ok(m) = fs::symlink_metadata(path) {
        if m.is_file() && m.len() == data.len() as u64 && fs::read(path).is_ok_and(|d| d == data) {
            return set_attributes(path, Some(mode), uid, gid);
        }
        if m.is_dir() {
            remove_any(path)?;
        }
    }
    make_parent(path)?;
    let tmp = temp_name(path);
    let result = (|| {
        let _ = fs::remove_file(&tmp);
        fs::write(&tmp, data)?;
        std::os::unix::fs::lchown(&tmp, Some(uid), Some(gid))?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(mode))?;
        fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(SystemError::io("cannot write", path, e));
    }
    Ok(true)
}

/// Makes `path` a link to `target` owned by `uid:gid`; false when it was already so.
fn put_link(path: &Path, target: &str, uid: u32, gid: u32) -> Result<bool, SystemError> {
    if let Ok(m) = fs::symlink_metadata(path) {
        if m.file_type().is_symlink() && fs::read_link(path).is_ok_and(|t| t.as_os_str() == target)
        {
            return set_attributes(path, None, uid, gid);
        }
        if m.is_dir() {
            remove_any(path)?;
        }
    }
    make_parent(path)?;
    let tmp = temp_name(path);
    let result = (|| {
        let _ = fs::remove_file(&tmp);
        std::os::unix::fs::symlink(target, &tmp)?;
        std::os::unix::fs::lchown(&tmp, Some(uid), Some(gid))?;
        fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(SystemError::io("cannot make the link", path, e));
    }
    Ok(true)
}

// ------------------------------------------------------------------ prune

fn prune(
    root: &Path,
    dir: &str,
    keep: &[String],
    r: &mut OverlayReport,
) -> Result<(), SystemError> {
    let keep_set: BTreeSet<&str> = keep.iter().map(String::as_str).collect();
    let subtrees: Vec<&str> = keep
        .iter()
        .filter(|k| k.ends_with('/'))
        .map(String::as_str)
        .collect();
    let kept = |path: &str| keep_set.contains(path) || subtrees.iter().any(|s| path.starts_with(s));
    // A directory holding something kept is kept too.
    let holds_kept = |path: &str| {
        let prefix = format!("{path}/");
        keep_set
            .range(prefix.as_str()..)
            .next()
            .is_some_and(|k| k.starts_with(&prefix))
    };
    let base = host_path(root, dir)?;
    if !base.is_dir() {
        return Ok(());
    }
    let mut stack = vec![(dir.trim_end_matches('/').to_string(), base)];
    let mut removed = Vec::new();
    while let Some((abs, host)) = stack.pop() {
        let mut entries: Vec<(String, PathBuf, bool)> = Vec::new();
        for e in fs::read_dir(&host).map_err(|e| SystemError::io("cannot read", &host, e))? {
            let e = e.map_err(|err| SystemError::io("cannot read", &host, err))?;
            let name = e.file_name().to_string_lossy().into_owned();
            let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
            entries.push((format!("{abs}/{name}"), e.path(), is_dir));
        }
        entries.sort();
        for (path, host, is_dir) in entries {
            if subtrees.iter().any(|s| path.starts_with(s)) {
                continue;
            }
            if kept(&path) {
                if is_dir {
                    stack.push((path, host));
                }
            } else if is_dir && holds_kept(&path) {
                stack.push((path, host));
            } else {
                remove_any(&host)?;
                removed.push(path);
            }
        }
    }
    removed.sort();
    if removed.is_empty() {
        r.unchanged += 1;
    }
    r.pruned.extend(removed);
    Ok(())
}

// ------------------------------------------------------------------ accounts

fn accounts(
    root: &Path,
    users: &[User],
    groups: &[Group],
    remap_owners: bool,
    create_homes: bool,
    r: &mut OverlayReport,
) -> Result<(), SystemError> {
    let paths =
        ["/etc/passwd", "/etc/group", "/etc/shadow", "/etc/gshadow"].map(|p| host_path(root, p));
    let [passwd_p, group_p, shadow_p, gshadow_p] = paths;
    let (passwd_p, group_p, shadow_p, gshadow_p) = (passwd_p?, group_p?, shadow_p?, gshadow_p?);
    let mut passwd = Table::read(&passwd_p)?;
    let mut group = Table::read(&group_p)?;
    let mut shadow = Table::read(&shadow_p)?;
    let mut gshadow = Table::read(&gshadow_p)?;

    // Every field becomes part of a colon-separated line.
    let bad = |f: &str| f.contains([':', '\n', '\r']);
    for u in users {
        if u.name.is_empty()
            || u.name.starts_with('-')
            || [&u.name, &u.gecos, &u.home, &u.shell]
                .iter()
                .any(|f| bad(f))
        {
            return Err(SystemError::Other(format!(
                "refusing the account {:?} from the profile: it would corrupt /etc/passwd\nhint: \
                 the profile may have been altered; capture the system again",
                u.name
            )));
        }
    }
    for g in groups {
        if g.name.is_empty() || bad(&g.name) || g.members.iter().any(|m| bad(m) || m.contains(','))
        {
            return Err(SystemError::Other(format!(
                "refusing the group {:?} from the profile: it would corrupt /etc/group\nhint: \
                 the profile may have been altered; capture the system again",
                g.name
            )));
        }
    }
    let want_uids: BTreeMap<String, u32> = users.iter().map(|u| (u.name.clone(), u.uid)).collect();
    let want_gids: BTreeMap<String, u32> = groups.iter().map(|g| (g.name.clone(), g.gid)).collect();
    let remap = Remap {
        uids: Remap::between(&passwd.ids(2), &want_uids),
        gids: Remap::between(&group.ids(2), &want_gids),
    };
    if remap_owners && !remap.is_empty() {
        r.owners_remapped += remap.apply(root)?;
    }

    let before = (
        passwd.clone(),
        group.clone(),
        shadow.clone(),
        gshadow.clone(),
    );
    for u in users {
        passwd.set(vec![
            u.name.clone(),
            "x".into(),
            u.uid.to_string(),
            u.gid.to_string(),
            u.gecos.clone(),
            u.home.clone(),
            u.shell.clone(),
        ]);
        let num = |v: Option<u64>| v.map(|x| x.to_string()).unwrap_or_default();
        // The password itself only comes back with the shadow file (a secret); until then
        // the account is locked.
        let pw = if u.password_status == "no_login" {
            "*"
        } else {
            "!"
        };
        if u.password_status != "none" {
            shadow.add(vec![
                u.name.clone(),
                pw.into(),
                num(u.last_change),
                num(u.min_days),
                num(u.max_days),
                num(u.warn_days),
                num(u.inactive_days),
                num(u.expire),
                String::new(),
            ]);
        }
    }
    for g in groups {
        group.set(vec![
            g.name.clone(),
            "x".into(),
            g.gid.to_string(),
            g.members.join(","),
        ]);
        if gshadow_p.exists() {
            gshadow.add(vec![
                g.name.clone(),
                "!".into(),
                String::new(),
                g.members.join(","),
            ]);
        }
    }
    let tables = [
        (&before.0, &passwd, &passwd_p, 0o644, 0),
        (&before.1, &group, &group_p, 0o644, 0),
        (&before.2, &shadow, &shadow_p, 0o640, shadow_gid(&group)),
        (&before.3, &gshadow, &gshadow_p, 0o640, shadow_gid(&group)),
    ];
    for (old, new, path, mode, gid) in tables {
        if old != new {
            let (mode, gid) = match fs::metadata(path) {
                Ok(m) => (m.mode() & 0o7777, m.gid()),
                Err(_) => (mode, gid),
            };
            put_file(path, new.render().as_bytes(), mode, 0, gid)?;
            r.accounts_written += 1;
        }
    }
    if before == (passwd, group, shadow, gshadow) && remap.is_empty() {
        r.unchanged += 1;
    }

    if create_homes {
        for u in users {
            if u.uid < 1000 || u.uid == 65534 || !u.home.starts_with("/home/") {
                continue;
            }
            let home = host_path(root, &u.home)?;
            if fs::symlink_metadata(&home).is_ok() {
                continue;
            }
            fs::create_dir_all(&home).map_err(|e| SystemError::io("cannot create", &home, e))?;
            let skel = host_path(root, "/etc/skel")?;
            copy_tree(&skel, &home, u.uid, u.gid)?;
            set_attributes(&home, Some(0o700), u.uid, u.gid)?;
            r.homes_created += 1;
        }
    }
    Ok(())
}

fn shadow_gid(group: &Table) -> u32 {
    group.ids(2).get("shadow").copied().unwrap_or(0)
}

fn copy_tree(from: &Path, to: &Path, uid: u32, gid: u32) -> Result<(), SystemError> {
    let Ok(entries) = fs::read_dir(from) else {
        return Ok(());
    };
    for e in entries.flatten() {
        let src = e.path();
        let dst = to.join(e.file_name());
        let m =
            fs::symlink_metadata(&src).map_err(|err| SystemError::io("cannot read", &src, err))?;
        if m.is_dir() {
            fs::create_dir_all(&dst).map_err(|err| SystemError::io("cannot create", &dst, err))?;
            copy_tree(&src, &dst, uid, gid)?;
            set_attributes(&dst, Some(m.mode() & 0o7777), uid, gid)?;
        } else if m.is_file() {
            let data = fs::read(&src).map_err(|err| SystemError::io("cannot read", &src, err))?;
            put_file(&dst, &data, m.mode() & 0o7777, uid, gid)?;
        }
    }
    Ok(())
}

// ------------------------------------------------------------------ crontabs

fn crontab(
    root: &Path,
    user: &str,
    path: &str,
    entries: &[String],
    r: &mut OverlayReport,
) -> Result<(), SystemError> {
    if !path.starts_with("/var/spool/cron/") {
        r.warnings.push(format!(
            "crontab of {user} at {path}: not a crontab path, not written"
        ));
        return Ok(());
    }
    let passwd = Table::read(&host_path(root, "/etc/passwd")?)?;
    let group = Table::read(&host_path(root, "/etc/group")?)?;
    let Some(uid) = passwd.ids(2).get(user).copied() else {
        r.warnings.push(format!(
            "crontab of {user}: no such user in the tree, not written"
        ));
        return Ok(());
    };
    let gid = group
        .ids(2)
        .get("crontab")
        .copied()
        .or_else(|| passwd.ids(3).get(user).copied())
        .unwrap_or(0);
    let mut text =
        format!("# The jobs of {user}, as recorded in the profile this system was rebuilt from.\n");
    for e in entries {
        text.push_str(e);
        text.push('\n');
    }
    let host = host_path(root, path)?;
    if let Some(dir) = host.parent() {
        if !dir.is_dir() {
            // Debian's spool: sticky, writable by the crontab group.
            fs::create_dir_all(dir).map_err(|e| SystemError::io("cannot create", dir, e))?;
            set_attributes(dir, Some(0o1730), 0, gid)?;
        }
    }
    // An identical job list is not rewritten (only the jobs are recorded, not comments).
    if let Ok(old) = fs::read_to_string(&host) {
        let jobs = |t: &str| -> Vec<String> {
            t.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
                .collect()
        };
        if jobs(&old) == jobs(&text) {
            set_attributes(&host, Some(0o600), uid, gid)?;
            r.unchanged += 1;
            return Ok(());
        }
    }
    put_file(&host, text.as_bytes(), 0o600, uid, gid)?;
    r.crontabs += 1;
    Ok(())
}

// ------------------------------------------------------------------ units

/// `systemctl list-unit-files` output: unit → state.
pub(crate) fn parse_unit_files(out: &str) -> BTreeMap<String, String> {
    out.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            Some((f.next()?.to_string(), f.next()?.to_string()))
        })
        .collect()
}

fn unit_states(root: &Path, steps: &[OverlayStep], r: &mut OverlayReport) {
    let listing = cmd::run_quiet(
        Phase::Overlay,
        cmd::in_root(root, "systemctl").args([
            "list-unit-files",
            "--no-legend",
            "--no-pager",
            "--full",
        ]),
        Duration::from_secs(60),
    );
    let have = match listing {
        Ok(o) => parse_unit_files(&o.stdout),
        Err(e) => {
            r.warnings
                .push(format!("unit-file states not restored: {e}"));
            return;
        }
    };
    let mut actions: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for s in steps {
        let OverlayStep::UnitState { unit, state } = s else {
            continue;
        };
        let Some(current) = have.get(unit) else {
            r.warnings.push(format!(
                "unit {unit} is {state} in the profile but not installed here"
            ));
            continue;
        };
        let cur = current.as_str();
        match (state.as_str(), cur) {
            (want, have) if want == have => r.unchanged += 1,
            ("masked", _) => actions.entry("mask").or_default().push(unit.clone()),
            ("enabled" | "disabled", "masked") => {
                actions.entry("unmask").or_default().push(unit.clone());
                if state == "enabled" {
                    actions.entry("enable").or_default().push(unit.clone());
                }
            }
            ("enabled", "disabled") => actions.entry("enable").or_default().push(unit.clone()),
            ("disabled", "enabled") => actions.entry("disable").or_default().push(unit.clone()),
            // static, indirect, alias, generated: nothing an administrator enables.
            _ => r.unchanged += 1,
        }
    }
    for action in ["unmask", "mask", "disable", "enable"] {
        let Some(units) = actions.get(action) else {
            continue;
        };
        let all = cmd::run_quiet(
            Phase::Overlay,
            cmd::in_root(root, "systemctl")
                .args([action, "--"])
                .args(units),
            Duration::from_secs(120),
        );
        if all.is_ok() {
            r.units_changed += units.len();
            continue;
        }
        // One at a time, to name the one that fails.
        for u in units {
            match cmd::run_quiet(
                Phase::Overlay,
                cmd::in_root(root, "systemctl").args([action, "--", u]),
                Duration::from_secs(60),
            ) {
                Ok(_) => r.units_changed += 1,
                Err(e) => r
                    .warnings
                    .push(format!("systemctl {action} {u} failed: {e}")),
            }
        }
    }
}

// ------------------------------------------------------------------ host settings

fn host_settings(
    root: &Path,
    hostname: Option<&str>,
    timezone: Option<&str>,
    locale: Option<&str>,
    r: &mut OverlayReport,
) -> Result<(), SystemError> {
    let mut changed = 0;
    if let Some(h) = hostname {
        let p = host_path(root, "/etc/hostname")?;
        let cur = fs::read_to_string(&p).unwrap_or_default();
        if cur.lines().next().unwrap_or("").trim() != h {
            put_file(&p, format!("{h}\n").as_bytes(), 0o644, 0, 0)?;
            changed += 1;
        }
    }
    if let Some(tz) = timezone {
        let p = host_path(root, "/etc/localtime")?;
        let cur = fs::read_link(&p)
            .ok()
            .map(|t| t.to_string_lossy().into_owned());
        let cur_zone = cur
            .as_deref()
            .map(|t| t.split_once("zoneinfo/").map_or(t, |(_, z)| z));
        if cur_zone != Some(tz) {
            let target = format!("/usr/share/zoneinfo/{tz}");
            if host_path(root, &target)?.exists() {
                put_link(&p, &target, 0, 0)?;
                changed += 1;
            } else {
                r.warnings.push(format!(
                    "timezone {tz} is not installed here (tzdata): not set"
                ));
            }
        }
        let tzfile = host_path(root, "/etc/timezone")?;
        if tzfile.exists() && fs::read_to_string(&tzfile).unwrap_or_default().trim() != tz {
            put_file(&tzfile, format!("{tz}\n").as_bytes(), 0o644, 0, 0)?;
            changed += 1;
        }
    }
    if let Some(lang) = locale {
        let p = host_path(root, "/etc/default/locale")?;
        let cur = fs::read_to_string(&p).unwrap_or_default();
        let has = cur.lines().any(|l| {
            l.trim()
                .strip_prefix("LANG=")
                .is_some_and(|v| v.trim_matches(['"', '\'']) == lang)
        });
        if !has {
            let mut text = String::new();
            for l in cur.lines().filter(|l| !l.trim_start().starts_with("LANG=")) {
                text.push_str(l);
                text.push('\n');
            }
            text.push_str("LANG=");
            text.push_str(lang);
            text.push('\n');
            put_file(&p, text.as_bytes(), 0o644, 0, 0)?;
            changed += 1;
        }
        if locale_needs_generating(root, lang)? {
            match cmd::run_quiet(
                Phase::Overlay,
                &mut cmd::in_root(root, "locale-gen"),
                Duration::from_secs(600),
            ) {
                Ok(_) => changed += 1,
                Err(e) => r.warnings.push(format!("locale {lang} not generated: {e}")),
            }
        }
    }
    if changed == 0 {
        r.unchanged += 1;
    }
    r.host_settings += changed;
    Ok(())
}

/// True when `locale-gen` is installed, `/etc/locale.gen` enables a locale, and the locale
/// archive is missing or older than `/etc/locale.gen`.
fn locale_needs_generating(root: &Path, lang: &str) -> Result<bool, SystemError> {
    if matches!(lang, "C" | "POSIX" | "C.UTF-8" | "C.utf8") {
        return Ok(false);
    }
    let gen = host_path(root, "/etc/locale.gen")?;
    let tool = host_path(root, "/usr/sbin/locale-gen")?;
    if !tool.exists() {
        return Ok(false);
    }
    let Ok(text) = fs::read_to_string(&gen) else {
        return Ok(false);
    };
    if !text
        .lines()
        .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
    {
        return Ok(false);
    }
    let archive = host_path(root, "/usr/lib/locale/locale-archive")?;
    let mtime = |p: &Path| fs::metadata(p).and_then(|m| m.modified()).ok();
    Ok(match (mtime(&archive), mtime(&gen)) {
        (Some(a), Some(g)) => a < g,
        _ => true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_profile::{Collector, File, Secret, Unit};

    /// The ids this process creates files with, so the tests run without root too.
    fn ids() -> (u32, u32) {
        let me = fs::metadata(tempfile::tempdir().unwrap().path()).unwrap();
        (me.uid(), me.gid())
    }

    #[test]
    fn paths_resolve_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("usr/lib")).unwrap();
        std::os::unix::fs::symlink("usr/lib", root.join("lib")).unwrap();
        std::os::unix::fs::symlink("/", root.join("escape")).unwrap();
        std::os::unix::fs::symlink("../../..", root.join("usr/up")).unwrap();
        assert_eq!(host_path(root, "/lib/x").unwrap(), root.join("usr/lib/x"));
        assert_eq!(
            host_path(root, "/escape/etc/passwd").unwrap(),
            root.join("etc/passwd")
        );
        assert_eq!(
            host_path(root, "/usr/up/etc/x").unwrap(),
            root.join("etc/x")
        );
        assert!(host_path(root, "/etc/../../x").is_err());
        assert!(host_path(root, "etc/x").is_err());
        assert!(host_path(root, "/").is_err());
    }

    fn profile_with_files(uid: u32, gid: u32) -> keel_profile::ProfileFile {
        let mut f = keel_profile::ProfileFile::default();
        let content = f.add_blob(b"Port 2222\n".to_vec());
        let p = &mut f.profile;
        p.collectors.push(Collector {
            name: "files".into(),
            tables: vec!["files.files".into()],
            ..Collector::default()
        });
        let row = |path: &str, kind: &str, status| File {
            path: path.into(),
            kind: kind.into(),
            mode: 0o755,
            uid,
            gid,
            status,
            ..File::default()
        };
        p.files.files.push(row("/etc", "dir", FileStatus::Pristine));
        p.files
            .files
            .push(row("/etc/app", "dir", FileStatus::Unowned));
        p.files.files.push(File {
            mode: 0o640,
            hash: Some(content),
            content: true,
            ..row("/etc/app/sshd_config", "file", FileStatus::Modified)
        });
        p.files.files.push(File {
            target: Some("/dev/null".into()),
            ..row("/etc/app/masked.service", "symlink", FileStatus::Unowned)
        });
        p.files
            .files
            .push(row("/etc/app/deleted.conf", "file", FileStatus::Missing));
        p.security.secrets.push(Secret {
            path: "/etc/app/key".into(),
            ..Secret::default()
        });
        p.services.units.push(Unit {
            name: "getty@.service".into(),
            unit_file_state: "enabled".into(),
            ..Unit::default()
        });
        f
    }

    #[test]
    fn steps_from_a_profile() {
        let f = profile_with_files(0, 0);
        let o = overlay_steps(&f.profile);
        let kinds: Vec<String> = o.steps.iter().map(OverlayStep::describe).collect();
        assert_eq!(
            kinds,
            [
                "directory /etc/app 0755 0:0",
                "link /etc/app/masked.service -> /dev/null",
                "file /etc/app/sshd_config 0640 0:0",
                "attributes /etc 0755 0:0",
                "remove /etc/app/deleted.conf",
                "prune /etc (keeping 7 listed entries)",
            ]
        );
        assert_eq!(o.secrets.len(), 1);
        let OverlayStep::Prune { keep, .. } = &o.steps[5] else {
            panic!()
        };
        assert!(keep.contains(&"/etc/app/key".to_string()));
        assert!(!keep.contains(&"/etc/app/deleted.conf".to_string()));
    }

    #[test]
    fn apply_is_idempotent_and_prunes_what_the_profile_lacks() {
        let (uid, gid) = ids();
        let f = profile_with_files(uid, gid);
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("etc/app")).unwrap();
        fs::write(root.join("etc/app/deleted.conf"), "x").unwrap();
        fs::write(root.join("etc/app/key"), "generated").unwrap();
        fs::create_dir_all(root.join("etc/extra/sub")).unwrap();
        fs::write(root.join("etc/extra/sub/f"), "x").unwrap();
        fs::write(root.join("etc/stray"), "x").unwrap();
        fs::set_permissions(root.join("etc"), fs::Permissions::from_mode(0o700)).unwrap();
        let o = overlay_steps(&f.profile);
        let ctx = OverlayContext {
            blobs: &f.blobs,
            identity: None,
        };
        let r = apply_overlay(root, &o.steps, &ctx).unwrap();
        assert_eq!(r.files_written, 1);
        assert_eq!(r.links_written, 1);
        assert_eq!(r.removed, 1);
        assert_eq!(r.attributes_set, 1);
        assert_eq!(r.pruned, ["/etc/extra", "/etc/stray"]);
        assert_eq!(
            fs::read_to_string(root.join("etc/app/sshd_config")).unwrap(),
            "Port 2222\n"
        );
        let m = fs::metadata(root.join("etc/app/sshd_config")).unwrap();
        assert_eq!(m.mode() & 0o7777, 0o640);
        assert_eq!(
            fs::read_link(root.join("etc/app/masked.service")).unwrap(),
            Path::new("/dev/null")
        );
        assert!(
            root.join("etc/app/key").exists(),
            "secrets are kept for their own step"
        );
        assert_eq!(
            fs::metadata(root.join("etc")).unwrap().mode() & 0o7777,
            0o755
        );

        let again = apply_overlay(root, &o.steps, &ctx).unwrap();
        assert_eq!(
            again,
            OverlayReport {
                unchanged: 6,
                ..OverlayReport::default()
            }
        );
    }

    #[test]
    fn secrets_need_the_identity() {
        let (uid, gid) = ids();
        let identity = age::x25519::Identity::generate();
        let mut f = keel_profile::ProfileFile::default();
        let ct = age::encrypt(&identity.to_public(), b"root:$y$hash:19000::::::\n").unwrap();
        let h = f.add_blob(ct);
        let steps = vec![
            OverlayStep::Secret {
                path: "/etc/shadow".into(),
                ciphertext: Some(h),
                mode: 0o640,
                uid,
                gid,
            },
            OverlayStep::Secret {
                path: "/etc/ssh/ssh_host_ed25519_key".into(),
                ciphertext: None,
                mode: 0o600,
                uid,
                gid,
            },
        ];
        let dir = tempfile::tempdir().unwrap();
        let without = apply_overlay(
            dir.path(),
            &steps,
            &OverlayContext {
                blobs: &f.blobs,
                identity: None,
            },
        )
        .unwrap();
        assert_eq!(without.secrets_restored, 0);
        assert_eq!(without.secrets_skipped.len(), 2);
        let with = apply_overlay(
            dir.path(),
            &steps,
            &OverlayContext {
                blobs: &f.blobs,
                identity: Some(&identity),
            },
        )
        .unwrap();
        assert_eq!(with.secrets_restored, 1);
        assert_eq!(with.secrets_skipped, ["/etc/ssh/ssh_host_ed25519_key"]);
        assert_eq!(
            fs::read(dir.path().join("etc/shadow")).unwrap(),
            b"root:$y$hash:19000::::::\n"
        );
        let wrong = age::x25519::Identity::generate();
        let e = apply_overlay(
            dir.path(),
            &steps[..1],
            &OverlayContext {
                blobs: &f.blobs,
                identity: Some(&wrong),
            },
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("/etc/shadow") && e.contains("hint:"), "{e}");
    }

    #[test]
    fn unit_states_only_when_the_links_are_unknown() {
        let mut f = profile_with_files(0, 0);
        f.profile.services.units.push(Unit {
            name: "ssh.service".into(),
            unit_file_state: "enabled".into(),
            ..Unit::default()
        });
        let units = |p: &Profile| {
            overlay_steps(p)
                .steps
                .iter()
                .filter(|s| matches!(s, OverlayStep::UnitState { .. }))
                .count()
        };
        assert_eq!(units(&f.profile), 0, "the links come back as files");
        f.profile.collectors[0].state = CollectorState::Error;
        assert_eq!(units(&f.profile), 1);
        assert!(overlay_steps(&f.profile)
            .warnings
            .iter()
            .any(|w| w.contains("configuration files are unknown")));
    }

    #[test]
    fn unit_files_listing() {
        let m = parse_unit_files("ssh.service enabled enabled\napt-daily.timer masked enabled\n");
        assert_eq!(m["ssh.service"], "enabled");
        assert_eq!(m["apt-daily.timer"], "masked");
    }
}
