//! Building a rollback plan: for each selected row, the steps that give it back the value the
//! earlier profile records, and the conflicts that leave a row alone.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use base64::Engine as _;
use keel_profile::{
    diff, Change, ChangeKind, DiffOptions, File, FileStatus, Group, Hash, Package, Profile,
    ProfileFile, Secret, Unit, User, Volatility,
};
use keel_system::OverlayStep;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::RollbackError;
use crate::select::{select, RowRef, Selector};

/// The plan format this build writes.
pub const PLAN_FORMAT: u32 = 1;

/// Paths whose contents are data, not configuration: a rollback never writes or removes
/// anything under them (data comes back from backups). Mount points the profile's fstab lists
/// outside the system directories count as data too.
pub const DATA_PATHS: &[&str] = &[
    "/home",
    "/root",
    "/srv",
    "/var/lib",
    "/var/www",
    "/var/mail",
    "/var/spool/mail",
    "/var/backups",
    "/var/opt",
    "/var/log",
    "/opt",
    "/mnt",
    "/media",
];

/// Mount points that hold the system, never data.
const SYSTEM_MOUNTS: &[&str] = &["/", "/boot", "/boot/efi", "/usr", "/var", "/tmp", "/etc"];

/// One thing a rollback does to a system.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Step {
    /// A configuration step, applied exactly as recovery applies it.
    Overlay {
        /// The step.
        overlay: OverlayStep,
    },
    /// A user the earlier profile did not have (`userdel`, home directory kept).
    RemoveUser {
        /// The user.
        name: String,
    },
    /// A group the earlier profile did not have (`groupdel`).
    RemoveGroup {
        /// The group.
        name: String,
    },
    /// A package the earlier profile did not have (`dpkg --purge`, which refuses when other
    /// packages need it).
    Purge {
        /// `name:arch`.
        package: String,
    },
    /// A package at the earlier version: reinstalled, downgraded or upgraded with apt.
    Install {
        /// `name:arch`.
        package: String,
        /// The version.
        version: String,
    },
    /// A package's automatic and held marks (`apt-mark`).
    Mark {
        /// `name:arch`.
        package: String,
        /// Installed only as a dependency.
        auto: bool,
        /// Held.
        hold: bool,
    },
    /// A file whose earlier content was its package's: the package's version comes back
    /// (the file is moved aside and the package reinstalled with `--force-confmiss`).
    RestorePackaged {
        /// The package.
        package: String,
        /// The file.
        path: String,
    },
    /// Loads the sysctl settings again (`sysctl --system`); only on a running system.
    ReloadSysctl,
}

impl Step {
    /// One line for people.
    pub fn describe(&self) -> String {
        match self {
            Step::Overlay { overlay } => match overlay {
                OverlayStep::Accounts { users, groups, .. } => {
                    let names: Vec<&str> = users
                        .iter()
                        .map(|u| u.name.as_str())
                        .chain(groups.iter().map(|g| g.name.as_str()))
                        .collect();
                    format!("restore account entries of {}", names.join(", "))
                }
                OverlayStep::File {
                    path,
                    mode,
                    uid,
                    gid,
                    ..
                } => format!("restore {path} ({mode:04o} {uid}:{gid})"),
                OverlayStep::Remove { path } => format!("remove {path}"),
                other => other.describe(),
            },
            Step::RemoveUser { name } => format!("remove user {name} (its home is kept)"),
            Step::RemoveGroup { name } => format!("remove group {name}"),
            Step::Purge { package } => format!("purge package {package}"),
            Step::Install { package, version } => format!("install package {package} {version}"),
            Step::Mark {
                package,
                auto,
                hold,
            } => format!(
                "mark package {package} {}{}",
                if *auto { "auto" } else { "manual" },
                if *hold { ", held" } else { "" }
            ),
            Step::RestorePackaged { package, path } => {
                format!("restore {path} as package {package} ships it")
            }
            Step::ReloadSysctl => "reload sysctl settings (running system only)".into(),
        }
    }

    /// The paths inside the root the step may change (what a journal copies aside first).
    pub fn touches(&self) -> Vec<String> {
        const ACCOUNTS: &[&str] = &[
            "/etc/passwd",
            "/etc/group",
            "/etc/shadow",
            "/etc/gshadow",
            "/etc/subuid",
            "/etc/subgid",
        ];
        let accounts = || ACCOUNTS.iter().map(ToString::to_string).collect();
        match self {
            Step::Overlay { overlay } => match overlay {
                OverlayStep::Accounts { .. } => accounts(),
                OverlayStep::Directory { path, .. }
                | OverlayStep::File { path, .. }
                | OverlayStep::Symlink { path, .. }
                | OverlayStep::Attributes { path, .. }
                | OverlayStep::Remove { path }
                | OverlayStep::UserCrontab { path, .. }
                | OverlayStep::Secret { path, .. } => vec![path.clone()],
                OverlayStep::Alternative { name, .. } => vec![format!("/etc/alternatives/{name}")],
                OverlayStep::Host { .. } => [
                    "/etc/hostname",
                    "/etc/localtime",
                    "/etc/timezone",
                    "/etc/default/locale",
                ]
                .iter()
                .map(ToString::to_string)
                .collect(),
                OverlayStep::Prune { .. } | OverlayStep::UnitState { .. } => Vec::new(),
            },
            Step::RemoveUser { .. } | Step::RemoveGroup { .. } => accounts(),
            Step::RestorePackaged { path, .. } => vec![path.clone()],
            Step::Purge { .. } | Step::Install { .. } | Step::Mark { .. } | Step::ReloadSysctl => {
                Vec::new()
            }
        }
    }

    /// The package the step installs, removes or marks.
    pub fn package(&self) -> Option<&str> {
        match self {
            Step::Purge { package }
            | Step::Install { package, .. }
            | Step::Mark { package, .. } => Some(package),
            _ => None,
        }
    }

    /// Where the step goes in the plan: packages first (their scripts may write files), then
    /// accounts, files, schedules, units, host settings, secrets, and the sysctl reload last.
    fn rank(&self) -> u8 {
        match self {
            Step::Purge { .. } | Step::Install { .. } => 0,
            Step::Mark { .. } => 1,
            Step::RestorePackaged { .. } => 2,
            Step::RemoveUser { .. } => 3,
            Step::RemoveGroup { .. } => 4,
            Step::Overlay { overlay } => match overlay {
                OverlayStep::Accounts { .. } => 5,
                OverlayStep::Directory { .. } => 6,
                OverlayStep::File { .. }
                | OverlayStep::Symlink { .. }
                | OverlayStep::Attributes { .. }
                | OverlayStep::Prune { .. } => 7,
                OverlayStep::Remove { .. } => 8,
                OverlayStep::UserCrontab { .. } => 9,
                OverlayStep::UnitState { .. } => 10,
                OverlayStep::Alternative { .. } | OverlayStep::Host { .. } => 11,
                OverlayStep::Secret { .. } => 12,
            },
            Step::ReloadSysctl => 13,
        }
    }
}

/// One selected row: what changed, what the rollback does about it, and why it might not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    /// The row.
    pub row: RowRef,
    /// What happened to it between the two profiles.
    pub kind: ChangeKind,
    /// The change in words (`version 7.2-1 → 7.2-2`).
    pub change: String,
    /// The row changed again after the selected change: left alone unless forced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conflict: Option<String>,
    /// Included despite its conflict.
    #[serde(default)]
    pub forced: bool,
    /// Why the row cannot be backed out at all (data path, not configuration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
    /// What backing it out takes.
    pub steps: Vec<Step>,
}

impl Item {
    /// True when the item's steps are part of the plan.
    pub fn included(&self) -> bool {
        self.refused.is_none() && (self.conflict.is_none() || self.forced)
    }
}

/// A rollback plan: serialisable, shown before anything runs, applied step by step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// [`PLAN_FORMAT`].
    pub format: u32,
    /// The profile the selected rows go back to.
    pub before: Hash,
    /// The profile in which the selected changes appear.
    pub after: Hash,
    /// The system's present profile, against which conflicts were checked.
    pub current: Hash,
    /// What was asked for.
    pub selection: Vec<Selector>,
    /// Each selected row.
    pub items: Vec<Item>,
    /// The steps of the included items, de-duplicated, in the order they run.
    pub steps: Vec<Step>,
    /// File contents the steps write (and secrets' ciphertext), base64 by BLAKE3 address.
    pub blobs: BTreeMap<String, String>,
    /// What will not come back exactly, and why.
    pub warnings: Vec<String>,
}

/// How to plan.
#[derive(Debug, Clone, Copy, Default)]
pub struct PlanOptions {
    /// Include rows that changed again after the selected change.
    pub force: bool,
}

/// The comparable part of a row: identity and configuration fields only (live state and
/// volatile fields follow the configuration by themselves).
fn config_fields(row: &Value, vol: fn(&str) -> Volatility) -> BTreeMap<String, Value> {
    row.as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| matches!(vol(k), Volatility::Identity | Volatility::Config))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// A row of `profile` by its reference, as JSON.
pub fn row(profile: &Profile, r: &RowRef) -> Option<Value> {
    profile
        .table(&r.section, &r.table)?
        .rows
        .into_iter()
        .find(|(k, _)| *k == r.key)
        .map(|(_, v)| v)
}

/// True when the row is the same in both profiles, comparing configuration fields only.
pub fn same_row(a: &Profile, b: &Profile, r: &RowRef) -> bool {
    let Some(view) = a.table(&r.section, &r.table) else {
        return true;
    };
    let vol = view.volatility;
    let ra = row(a, r).map(|v| config_fields(&v, vol));
    let rb = row(b, r).map(|v| config_fields(&v, vol));
    ra == rb
}

fn file_ref(path: &str) -> RowRef {
    RowRef {
        section: "files".into(),
        table: "files".into(),
        key: path.to_string(),
    }
}

/// True when `path` is, or is under, a data path of `profile`'s system.
pub fn is_data_path(profile: &Profile, path: &str) -> bool {
    let under = |p: &str| path == p || path.starts_with(&format!("{}/", p.trim_end_matches('/')));
    DATA_PATHS.iter().any(|p| under(p))
        || profile.storage.fstab.iter().any(|f| {
            f.mountpoint.starts_with('/')
                && !SYSTEM_MOUNTS.contains(&f.mountpoint.as_str())
                && under(&f.mountpoint)
        })
}

fn typed<T: serde::de::DeserializeOwned>(v: Option<Value>) -> Option<T> {
    v.and_then(|v| serde_json::from_value(v).ok())
}

fn short(v: &Value) -> String {
    if let Some(h) = v
        .as_str()
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return h[..12].to_string();
    }
    let s = match v {
        Value::String(s) => s.clone(),
        Value::Null => "none".into(),
        other => other.to_string(),
    };
    if s.chars().count() > 60 {
        format!("{}…", s.chars().take(59).collect::<String>())
    } else {
        s
    }
}

fn describe_change(changes: &[&Change]) -> String {
    match changes.first() {
        Some(c) if c.kind == ChangeKind::Added => "added".into(),
        Some(c) if c.kind == ChangeKind::Removed => "removed".into(),
        _ => {
            let parts: Vec<String> = changes
                .iter()
                .map(|c| {
                    format!(
                        "{} {} → {}",
                        c.field.as_deref().unwrap_or("?"),
                        short(&c.old),
                        short(&c.new)
                    )
                })
                .collect();
            format!("changed: {}", parts.join(", "))
        }
    }
}

/// What the steps of one item read from the earlier profile.
struct Planner<'a> {
    before: &'a ProfileFile,
    after: &'a Profile,
    current: &'a Profile,
    blobs: BTreeSet<Hash>,
    warnings: Vec<String>,
}

impl Planner<'_> {
    /// The steps that give `path` its earlier state; `Err` when it must not be touched.
    fn file_steps(&mut self, path: &str, steps: &mut Vec<Step>) -> Result<(), String> {
        if is_data_path(&self.before.profile, path) {
            return Err(format!("{path} is a data path: rollback never touches it"));
        }
        let b: Option<File> = typed(row(&self.before.profile, &file_ref(path)));
        let a: Option<File> = typed(row(self.after, &file_ref(path)));
        let Some(b) = b else {
            steps.push(Step::Overlay {
                overlay: OverlayStep::Remove { path: path.into() },
            });
            return Ok(());
        };
        let overlay = match (b.kind.as_str(), b.status) {
            (_, FileStatus::Missing) => OverlayStep::Remove { path: path.into() },
            (_, FileStatus::Secret) => {
                let s: Option<Secret> = self
                    .before
                    .profile
                    .security
                    .secrets
                    .iter()
                    .find(|s| s.path == path)
                    .cloned();
                let Some(s) = s else {
                    return Err(format!("the earlier secret {path} is not in the profile"));
                };
                if let Some(c) = s.ciphertext {
                    self.blobs.insert(c);
                }
                OverlayStep::Secret {
                    path: path.into(),
                    ciphertext: s.ciphertext,
                    mode: s.mode,
                    uid: s.uid,
                    gid: s.gid,
                }
            }
            ("symlink", _) => match &b.target {
                Some(t) => OverlayStep::Symlink {
                    path: path.into(),
                    target: t.clone(),
                    uid: b.uid,
                    gid: b.gid,
                },
                None => return Err(format!("the earlier link {path} has no recorded target")),
            },
            ("dir", FileStatus::Unowned) => OverlayStep::Directory {
                path: path.into(),
                mode: b.mode,
                uid: b.uid,
                gid: b.gid,
            },
            ("dir", _) => OverlayStep::Attributes {
                path: path.into(),
                mode: Some(b.mode),
                uid: b.uid,
                gid: b.gid,
            },
            ("file", FileStatus::Modified | FileStatus::Unowned) if b.content => {
                let Some(h) = b.hash else {
                    return Err(format!("the earlier {path} has no content hash"));
                };
                if !self.before.blobs.contains_key(&h) {
                    return Err(format!(
                        "the earlier content of {path} ({}) is not among the profile's blobs",
                        h.short()
                    ));
                }
                self.blobs.insert(h);
                OverlayStep::File {
                    path: path.into(),
                    content: h,
                    mode: b.mode,
                    uid: b.uid,
                    gid: b.gid,
                }
            }
            ("file", FileStatus::Pristine) => {
                let content_changed = a
                    .as_ref()
                    .is_none_or(|a| a.status != FileStatus::Pristine || a.kind != b.kind);
                if content_changed {
                    let Some(pkg) = b.package.clone() else {
                        return Err(format!("the earlier {path} names no package"));
                    };
                    steps.push(Step::RestorePackaged {
                        package: pkg,
                        path: path.into(),
                    });
                }
                OverlayStep::Attributes {
                    path: path.into(),
                    mode: Some(b.mode),
                    uid: b.uid,
                    gid: b.gid,
                }
            }
            ("file", FileStatus::Generated) => {
                self.warnings.push(format!(
                    "{path} is generated by its package's scripts: not restored"
                ));
                return Ok(());
            }
            _ => {
                return Err(format!(
                    "the earlier content of {path} was not kept (too large): cannot restore it"
                ))
            }
        };
        steps.push(Step::Overlay { overlay });
        Ok(())
    }

    /// File rows that differ between the two profiles, among `paths` and under `prefixes`.
    fn differing_files(&self, paths: &[String], prefixes: &[String]) -> Vec<String> {
        let mut all: BTreeSet<String> = BTreeSet::new();
        for p in [&self.before.profile, self.after] {
            for f in &p.files.files {
                if paths.contains(&f.path) || prefixes.iter().any(|x| f.path.starts_with(x)) {
                    all.insert(f.path.clone());
                }
            }
        }
        all.into_iter()
            .filter(|p| !same_row(&self.before.profile, self.after, &file_ref(p)))
            .collect()
    }

    /// The `/etc/rc?.d/[SK]NNscript` links of a `SysV` script that differ between the two
    /// profiles.
    fn rc_links(&self, script: &str) -> Vec<String> {
        let prefixes: Vec<String> = "0123456S"
            .chars()
            .map(|l| format!("/etc/rc{l}.d/"))
            .collect();
        self.differing_files(&[], &prefixes)
            .into_iter()
            .filter(|p| {
                let name = p.rsplit('/').next().unwrap_or("");
                let b = name.as_bytes();
                b.len() == script.len() + 3
                    && matches!(b[0], b'S' | b'K')
                    && b[1].is_ascii_digit()
                    && b[2].is_ascii_digit()
                    && &name[3..] == script
            })
            .collect()
    }

    /// The steps of one row, and the file rows they touch besides it.
    fn row_steps(&mut self, r: &RowRef) -> Result<(Vec<Step>, Vec<RowRef>), String> {
        let before = row(&self.before.profile, r);
        let after = row(self.after, r);
        let field = |v: &Option<Value>, f: &str| {
            v.as_ref()
                .and_then(|v| v[f].as_str().map(String::from))
                .filter(|s| !s.is_empty())
        };
        let mut steps = Vec::new();
        let mut files: Vec<String> = Vec::new();
        match (r.section.as_str(), r.table.as_str()) {
            ("files", "files") => {
                self.file_steps(&r.key, &mut steps)?;
                return Ok((steps, Vec::new()));
            }
            ("files", "ignored_files") => {
                return Err("an ignored file changes on its own: nothing to back out".into())
            }
            ("kernel", "sysctl") => {
                files.extend(field(&before, "file"));
                files.extend(field(&after, "file"));
            }
            ("kernel", "modprobe" | "modules_load")
            | ("security", "sudoers" | "sshd")
            | ("network", "ifupdown") => {
                files.extend(field(&before, "file"));
                files.extend(field(&after, "file"));
                if r.table == "sshd" {
                    files.extend(self.differing_files(
                        &["/etc/ssh/sshd_config".into()],
                        &["/etc/ssh/sshd_config.d/".into()],
                    ));
                }
            }
            ("network", "hosts") => files.push("/etc/hosts".into()),
            ("network", "dns") => files.push("/etc/resolv.conf".into()),
            ("users", "users") => match typed::<User>(before) {
                None => steps.push(Step::RemoveUser {
                    name: r.key.clone(),
                }),
                Some(u) => steps.push(Step::Overlay {
                    overlay: OverlayStep::Accounts {
                        users: vec![u],
                        groups: Vec::new(),
                        remap_owners: false,
                        create_homes: false,
                    },
                }),
            },
            ("users", "groups") => match typed::<Group>(before) {
                None => steps.push(Step::RemoveGroup {
                    name: r.key.clone(),
                }),
                Some(g) => steps.push(Step::Overlay {
                    overlay: OverlayStep::Accounts {
                        users: Vec::new(),
                        groups: vec![g],
                        remap_owners: false,
                        create_homes: false,
                    },
                }),
            },
            ("packages", "packages") => {
                let b: Option<Package> = typed(before);
                let a: Option<Package> = typed(after);
                match (b, a) {
                    (None, _) => steps.push(Step::Purge {
                        package: r.key.clone(),
                    }),
                    (Some(b), a) => {
                        let installed = b.status == "installed";
                        if installed
                            && a.as_ref()
                                .is_none_or(|a| a.version != b.version || a.status != b.status)
                        {
                            steps.push(Step::Install {
                                package: r.key.clone(),
                                version: b.version.clone(),
                            });
                        }
                        if !installed {
                            steps.push(Step::Purge {
                                package: r.key.clone(),
                            });
                        } else if a
                            .as_ref()
                            .map_or(b.auto || b.hold, |a| a.auto != b.auto || a.hold != b.hold)
                        {
                            steps.push(Step::Mark {
                                package: r.key.clone(),
                                auto: b.auto,
                                hold: b.hold,
                            });
                        }
                    }
                }
            }
            ("packages", "alternatives") => {
                let value = field(&before, "value");
                match (field(&before, "mode").as_deref(), value) {
                    (Some("manual"), Some(value)) => steps.push(Step::Overlay {
                        overlay: OverlayStep::Alternative {
                            name: r.key.clone(),
                            value,
                        },
                    }),
                    _ => files.push(format!("/etc/alternatives/{}", r.key)),
                }
            }
            ("services", "units") | ("schedules", "timers") => {
                let name = &r.key;
                let links = self.differing_files(
                    &[format!("/etc/systemd/system/{name}")],
                    &["/etc/systemd/system/".into()],
                );
                let links: Vec<String> = links
                    .into_iter()
                    .filter(|p| {
                        p.ends_with(&format!("/{name}"))
                            || p.starts_with(&format!("/etc/systemd/system/{name}.d/"))
                    })
                    .collect();
                if links.is_empty() && r.table == "units" {
                    let b: Option<Unit> = typed(before);
                    match b {
                        Some(u)
                            if matches!(
                                u.unit_file_state.as_str(),
                                "enabled" | "disabled" | "masked"
                            ) =>
                        {
                            steps.push(Step::Overlay {
                                overlay: OverlayStep::UnitState {
                                    unit: u.name,
                                    state: u.unit_file_state,
                                },
                            });
                        }
                        Some(_) => {}
                        None => {
                            return Err(format!(
                                "{name} was installed by a package: back out the package instead"
                            ))
                        }
                    }
                }
                files.extend(links);
                // A unit with a SysV script of the same name is also enabled by the script's
                // rc?.d links, which systemctl renames along with the unit's.
                if let Some(script) = name.strip_suffix(".service") {
                    files.extend(self.rc_links(script));
                }
            }
            ("schedules", "cron") => {
                let source = field(&before, "source").or_else(|| field(&after, "source"));
                let Some(source) = source else {
                    return Err("the cron job names no source file".into());
                };
                if source.starts_with("/var/spool/cron/") {
                    let user = field(&before, "user")
                        .or_else(|| field(&after, "user"))
                        .unwrap_or_default();
                    let entries: Vec<String> = self
                        .before
                        .profile
                        .schedules
                        .cron
                        .iter()
                        .filter(|j| j.source == source)
                        .map(|j| format!("{} {}", j.schedule, j.command))
                        .collect();
                    steps.push(Step::Overlay {
                        overlay: if entries.is_empty() {
                            OverlayStep::Remove { path: source }
                        } else {
                            OverlayStep::UserCrontab {
                                user,
                                path: source,
                                entries,
                            }
                        },
                    });
                } else {
                    files.push(source);
                }
            }
            ("os", "host") => {
                if let Some(h) = self.before.profile.os.host.first() {
                    steps.push(Step::Overlay {
                        overlay: OverlayStep::Host {
                            hostname: Some(h.hostname.clone()).filter(|x| !x.is_empty()),
                            timezone: h.timezone.clone(),
                            locale: h.locale.clone(),
                        },
                    });
                }
            }
            (s, t) => {
                return Err(format!(
                "{s}.{t} is not configuration Keel can put back (live state, hardware or storage)"
            ))
            }
        }
        files.sort();
        files.dedup();
        let mut touched = Vec::new();
        for f in &files {
            self.file_steps(f, &mut steps)?;
            touched.push(file_ref(f));
        }
        if r.table == "sysctl" && !files.is_empty() {
            steps.push(Step::ReloadSysctl);
        }
        Ok((steps, touched))
    }
}

/// Builds the plan that backs out the `selection` of changes from `before` to `after`.
///
/// `current` is the system as it is now (its latest profile, or a fresh capture): a selected
/// row, or a file its steps write, that differs between `after` and `current` changed again
/// after the selected change. Such a row is a conflict, shown and left alone unless
/// `opts.force`.
pub fn build_plan(
    before: &ProfileFile,
    after: &Profile,
    current: &Profile,
    selection: &[Selector],
    opts: PlanOptions,
) -> Result<Plan, RollbackError> {
    let changes = diff(&before.profile, after, DiffOptions::default());
    let rows = select(&changes, selection)?;
    let mut planner = Planner {
        before,
        after,
        current,
        blobs: BTreeSet::new(),
        warnings: Vec::new(),
    };
    let mut items = Vec::new();
    for r in rows {
        let row_changes: Vec<&Change> = changes
            .iter()
            .filter(|c| c.section == r.section && c.table == r.table && c.key == r.key)
            .collect();
        let kind = row_changes.first().map_or(ChangeKind::Changed, |c| c.kind);
        let change = describe_change(&row_changes);
        let (steps, refused, touched) = match planner.row_steps(&r) {
            Ok((s, t)) => (s, None, t),
            Err(why) => (Vec::new(), Some(why), Vec::new()),
        };
        let again: Vec<String> = std::iter::once(&r)
            .chain(touched.iter())
            .filter(|t| !same_row(after, planner.current, t))
            .map(ToString::to_string)
            .collect();
        let conflict = (!again.is_empty()).then(|| {
            format!(
                "changed again after the selected change ({}): backing it out would undo later work",
                again.join(", ")
            )
        });
        items.push(Item {
            forced: conflict.is_some() && opts.force,
            row: r,
            kind,
            change,
            conflict,
            refused,
            steps,
        });
    }
    let mut steps: Vec<Step> = Vec::new();
    for item in items.iter().filter(|i| i.included()) {
        for s in &item.steps {
            if !steps.contains(s) {
                steps.push(s.clone());
            }
        }
    }
    steps.sort_by_key(Step::rank);
    let used: BTreeSet<Hash> = steps
        .iter()
        .filter_map(|s| match s {
            Step::Overlay {
                overlay: OverlayStep::File { content, .. },
            } => Some(*content),
            Step::Overlay {
                overlay:
                    OverlayStep::Secret {
                        ciphertext: Some(c),
                        ..
                    },
            } => Some(*c),
            _ => None,
        })
        .collect();
    let blobs = used
        .iter()
        .filter_map(|h| {
            before.blobs.get(h).map(|b| {
                (
                    h.to_hex(),
                    base64::engine::general_purpose::STANDARD.encode(&b.0),
                )
            })
        })
        .collect();
    let hash = |p: &Profile| keel_profile::profile_hash(p).unwrap_or(Hash([0; 32]));
    Ok(Plan {
        format: PLAN_FORMAT,
        before: hash(&before.profile),
        after: hash(after),
        current: hash(current),
        selection: selection.to_vec(),
        items,
        steps,
        blobs,
        warnings: planner.warnings,
    })
}

impl Plan {
    /// The plan as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a plan always serialises")
    }

    /// Reads a plan from JSON.
    pub fn from_json(text: &str) -> Result<Plan, RollbackError> {
        let p: Plan = serde_json::from_str(text)
            .map_err(|e| RollbackError::Plan(format!("not a rollback plan: {e}")))?;
        if p.format > PLAN_FORMAT {
            return Err(RollbackError::Plan(format!(
                "rollback plan format {} is newer than this build reads ({PLAN_FORMAT})\nhint: \
                 upgrade keel",
                p.format
            )));
        }
        Ok(p)
    }

    /// The blobs the steps write, decoded.
    pub fn blob_map(&self) -> Result<BTreeMap<Hash, keel_profile::Blob>, RollbackError> {
        self.blobs
            .iter()
            .map(|(h, b)| {
                let hash: Hash = h
                    .parse()
                    .map_err(|e| RollbackError::Plan(format!("bad blob address: {e}")))?;
                let data = base64::engine::general_purpose::STANDARD
                    .decode(b)
                    .map_err(|e| RollbackError::Plan(format!("bad blob {h}: {e}")))?;
                Ok((hash, keel_profile::Blob(data)))
            })
            .collect()
    }

    /// Items left alone because they changed again later (and were not forced).
    pub fn conflicts(&self) -> impl Iterator<Item = &Item> {
        self.items
            .iter()
            .filter(|i| i.conflict.is_some() && !i.forced && i.refused.is_none())
    }

    /// The rows whose earlier state the plan puts back.
    pub fn included_rows(&self) -> Vec<RowRef> {
        self.items
            .iter()
            .filter(|i| i.included())
            .map(|i| i.row.clone())
            .collect()
    }

    /// A stable identity of the plan (BLAKE3 of its JSON), used by the journal.
    pub fn id(&self) -> Hash {
        Hash::of(serde_json::to_string(self).unwrap_or_default().as_bytes())
    }
}

/// The included rows that `now` still does not show as `before` had them: empty when the
/// rollback took effect.
pub fn remaining(plan: &Plan, before: &Profile, now: &Profile) -> Vec<String> {
    plan.included_rows()
        .iter()
        .filter(|r| !same_row(before, now, r))
        .map(|r| {
            let show = |p: &Profile| row(p, r).map_or_else(|| "absent".to_string(), |v| short(&v));
            format!("{r} is {} (expected {})", show(now), show(before))
        })
        .collect()
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let included = self.items.iter().filter(|i| i.included()).count();
        writeln!(
            f,
            "Rollback plan: back out {included} of {} selected changes, returning them to profile {}",
            self.items.len(),
            self.before.short()
        )?;
        writeln!(f)?;
        for i in &self.items {
            let mark = if i.refused.is_some() {
                "refused "
            } else if i.forced {
                "FORCED  "
            } else if i.conflict.is_some() {
                "CONFLICT"
            } else {
                "back out"
            };
            writeln!(f, "  {mark}  {}  {}", i.row, i.change)?;
            if let Some(why) = &i.refused {
                writeln!(f, "            {why}")?;
            }
            if let Some(why) = &i.conflict {
                writeln!(f, "            {why}")?;
            }
        }
        writeln!(f)?;
        if self.steps.is_empty() {
            writeln!(f, "Steps: none")?;
        } else {
            writeln!(f, "Steps:")?;
            for (n, s) in self.steps.iter().enumerate() {
                writeln!(f, "  {:>2}. {}", n + 1, s.describe())?;
            }
        }
        for w in &self.warnings {
            writeln!(f, "warning: {w}")?;
        }
        if self.conflicts().next().is_some() {
            writeln!(
                f,
                "\nRows in conflict are left alone; plan again with --force to include them."
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_profile::{FstabEntry, Sysctl};

    fn file(p: &mut ProfileFile, path: &str, content: &[u8]) {
        let h = p.add_blob(content.to_vec());
        p.profile.files.files.retain(|f| f.path != path);
        p.profile.files.files.push(File {
            path: path.into(),
            kind: "file".into(),
            mode: 0o644,
            hash: Some(h),
            status: FileStatus::Unowned,
            content: true,
            ..File::default()
        });
        p.profile.normalize();
    }

    fn sel(s: &[&str]) -> Vec<Selector> {
        s.iter().map(|x| x.parse().unwrap()).collect()
    }

    #[test]
    fn a_row_changed_again_later_is_a_conflict_unless_forced() {
        let mut before = ProfileFile::default();
        file(&mut before, "/etc/motd", b"hello\n");
        file(&mut before, "/etc/issue", b"Debian\n");
        let mut after = before.clone();
        file(&mut after, "/etc/motd", b"go away\n");
        file(&mut after, "/etc/issue", b"Keel\n");
        let mut current = after.clone();
        file(&mut current, "/etc/motd", b"go away, please\n");

        let only = sel(&["files:/etc/motd", "files:/etc/issue"]);
        let plan = build_plan(
            &before,
            &after.profile,
            &current.profile,
            &only,
            PlanOptions::default(),
        )
        .unwrap();
        let conflicts: Vec<&str> = plan.conflicts().map(|i| i.row.key.as_str()).collect();
        assert_eq!(conflicts, vec!["/etc/motd"]);
        assert_eq!(plan.steps.len(), 1, "{plan}");
        assert!(plan.steps[0].describe().contains("/etc/issue"));
        assert_eq!(plan.blobs.len(), 1, "only the blob the steps write travels");
        assert!(plan.to_string().contains("CONFLICT  files.files:/etc/motd"));

        let forced = build_plan(
            &before,
            &after.profile,
            &current.profile,
            &only,
            PlanOptions { force: true },
        )
        .unwrap();
        assert_eq!(forced.steps.len(), 2);
        assert!(forced.items.iter().any(|i| i.forced));
        let back = Plan::from_json(&forced.to_json()).unwrap();
        assert_eq!(back, forced, "plans round-trip through JSON");
    }

    #[test]
    fn data_paths_are_refused() {
        let mut before = ProfileFile::default();
        before.profile.storage.fstab.push(FstabEntry {
            mountpoint: "/data".into(),
            ..FstabEntry::default()
        });
        let mut after = before.clone();
        file(&mut after, "/home/alice/.bashrc", b"x\n");
        file(&mut after, "/data/app.conf", b"x\n");
        file(&mut after, "/etc/app.conf", b"x\n");
        let plan = build_plan(
            &before,
            &after.profile,
            &after.profile,
            &sel(&[
                "files:/home/alice/.bashrc",
                "files:/data/app.conf",
                "files:/etc/app.conf",
            ]),
            PlanOptions::default(),
        )
        .unwrap();
        let refused: Vec<&str> = plan
            .items
            .iter()
            .filter(|i| i.refused.is_some())
            .map(|i| i.row.key.as_str())
            .collect();
        assert_eq!(refused, vec!["/home/alice/.bashrc", "/data/app.conf"]);
        assert_eq!(
            plan.steps,
            vec![Step::Overlay {
                overlay: OverlayStep::Remove {
                    path: "/etc/app.conf".into()
                }
            }]
        );
    }

    #[test]
    fn packages_users_and_sysctl_map_to_their_steps() {
        let pkg = |name: &str, version: &str| Package {
            name: name.into(),
            arch: "amd64".into(),
            version: version.into(),
            manager: "dpkg".into(),
            status: "installed".into(),
            ..Package::default()
        };
        let mut before = ProfileFile::default();
        before.profile.packages.packages = vec![pkg("nano", "7.2-1"), pkg("patch", "2.7")];
        before.profile.users.users.push(User {
            name: "alice".into(),
            uid: 1000,
            ..User::default()
        });
        let mut after = before.clone();
        after.profile.packages.packages = vec![pkg("nano", "7.2-2"), pkg("tree", "2.1")];
        after.profile.users.users.push(User {
            name: "mallory".into(),
            uid: 1001,
            ..User::default()
        });
        after.profile.users.users[0].shell = "/bin/zsh".into();
        after.profile.kernel.sysctl.push(Sysctl {
            name: "vm.swappiness".into(),
            value: "10".into(),
            file: "/etc/sysctl.d/60-keel.conf".into(),
        });
        file(
            &mut after,
            "/etc/sysctl.d/60-keel.conf",
            b"vm.swappiness = 10\n",
        );
        let plan = build_plan(
            &before,
            &after.profile,
            &after.profile,
            &sel(&[
                "packages:nano",
                "packages:patch",
                "packages:tree",
                "users:mallory",
                "users:alice",
                "sysctl:vm.swappiness",
            ]),
            PlanOptions::default(),
        )
        .unwrap();
        let steps: Vec<String> = plan.steps.iter().map(Step::describe).collect();
        assert_eq!(
            steps,
            vec![
                "install package nano:amd64 7.2-1",
                "install package patch:amd64 2.7",
                "purge package tree:amd64",
                "remove user mallory (its home is kept)",
                "restore account entries of alice",
                "remove /etc/sysctl.d/60-keel.conf",
                "reload sysctl settings (running system only)",
            ]
        );
        // Once applied, nothing remains; before, every included row does.
        assert!(remaining(&plan, &before.profile, &before.profile).is_empty());
        assert_eq!(remaining(&plan, &before.profile, &after.profile).len(), 6);
    }

    #[test]
    fn a_secret_comes_back_as_its_ciphertext_for_the_identity() {
        let mut before = ProfileFile::default();
        let sealed = before.add_blob(b"age-encryption.org/v1 ...".to_vec());
        let row = |fp: &[u8], ciphertext| Secret {
            path: "/etc/ssl/private/web.key".into(),
            fingerprint: Hash::of(fp),
            ciphertext,
            mode: 0o600,
            ..Secret::default()
        };
        let file = |fp: &[u8]| File {
            path: "/etc/ssl/private/web.key".into(),
            kind: "file".into(),
            mode: 0o600,
            hash: Some(Hash::of(fp)),
            status: FileStatus::Secret,
            ..File::default()
        };
        before
            .profile
            .security
            .secrets
            .push(row(b"old", Some(sealed)));
        before.profile.files.files.push(file(b"old"));
        let mut after = before.clone();
        after.profile.security.secrets[0] = row(b"new", Some(Hash::of(b"other")));
        after.profile.files.files[0] = file(b"new");
        let plan = build_plan(
            &before,
            &after.profile,
            &after.profile,
            &sel(&["files:/etc/ssl/private/web.key"]),
            PlanOptions::default(),
        )
        .unwrap();
        assert_eq!(
            plan.steps,
            vec![Step::Overlay {
                overlay: OverlayStep::Secret {
                    path: "/etc/ssl/private/web.key".into(),
                    ciphertext: Some(sealed),
                    mode: 0o600,
                    uid: 0,
                    gid: 0,
                }
            }]
        );
        assert!(
            plan.blobs.contains_key(&sealed.to_hex()),
            "the ciphertext travels"
        );
    }

    #[test]
    fn live_state_and_hardware_are_refused() {
        let before = ProfileFile::default();
        let mut after = before.clone();
        after.profile.network.addresses.push(keel_profile::Address {
            interface: "eth0".into(),
            address: "10.0.0.5".into(),
            prefix: 24,
            ..keel_profile::Address::default()
        });
        let key = after.profile.network.addresses[0].clone();
        let key = format!("{} {}/{}", key.interface, key.address, key.prefix);
        let plan = build_plan(
            &before,
            &after.profile,
            &after.profile,
            &[Selector {
                scope: "network".into(),
                key,
            }],
            PlanOptions::default(),
        )
        .unwrap();
        assert!(plan.items[0]
            .refused
            .as_deref()
            .is_some_and(|r| r.contains("not configuration")));
        assert!(plan.steps.is_empty());
    }
}
