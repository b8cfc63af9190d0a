//! systemd units and their enablement, computed from the unit files on disk the way
//! `systemctl list-unit-files` does, so it works on an offline root without a running systemd.

use std::collections::{BTreeMap, BTreeSet};

use keel_profile::{DefaultTarget, InitScript, Unit};

use crate::{CollectError, Ctx, Piece, Root};

/// Unit search path, highest precedence first.
const UNIT_DIRS: &[&str] = &[
    "/etc/systemd/system",
    "/usr/local/lib/systemd/system",
    "/lib/systemd/system",
    "/usr/lib/systemd/system",
];
const UNIT_SUFFIXES: &[&str] = &[
    ".service",
    ".socket",
    ".timer",
    ".target",
    ".mount",
    ".automount",
    ".path",
    ".swap",
    ".slice",
    ".scope",
    ".device",
];

/// What the `[Install]` section of a unit file says, and the few `[Service]` facts needed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct UnitFile {
    pub wanted_by: Vec<String>,
    pub required_by: Vec<String>,
    pub upheld_by: Vec<String>,
    pub alias: Vec<String>,
    pub also: Vec<String>,
    pub oneshot: bool,
}

/// The unit files of a root and which of them are enabled.
#[derive(Debug, Default)]
pub(crate) struct UnitScan {
    /// Unit name → fragment path (inside the root).
    pub fragments: BTreeMap<String, String>,
    pub masked: BTreeSet<String>,
    /// Alias name → unit it points to.
    pub aliases: BTreeMap<String, String>,
    /// Units linked from a `.wants`, `.requires` or `.upholds` directory.
    pub enabled: BTreeSet<String>,
}

/// Scans the unit search path of `root`.
pub(crate) fn scan(root: &Root) -> Result<UnitScan, CollectError> {
    // Fragments: first directory in precedence order wins. Real paths dedupe /lib → /usr/lib.
    let mut fragments: BTreeMap<String, String> = BTreeMap::new();
    let mut masked: BTreeSet<String> = BTreeSet::new();
    let mut aliases: BTreeMap<String, String> = BTreeMap::new();
    let mut seen_dirs = BTreeSet::new();
    for dir in UNIT_DIRS {
        let Ok(real) = root.path(dir).canonicalize() else {
            continue;
        };
        if !seen_dirs.insert(real) {
            continue;
        }
        for name in root.list_dir(dir)? {
            if !UNIT_SUFFIXES.iter().any(|s| name.ends_with(s)) {
                continue;
            }
            let path = format!("{dir}/{name}");
            let host = root.path(&path);
            let Ok(meta) = host.symlink_metadata() else {
                continue;
            };
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&host)
                    .map(|t| t.to_string_lossy().into_owned())
                    .unwrap_or_default();
                if target == "/dev/null" {
                    masked.insert(name.clone());
                    fragments.entry(name).or_insert(path);
                    continue;
                }
                let target_name = target.rsplit('/').next().unwrap_or("").to_string();
                if target_name != name && !target_name.is_empty() {
                    // An alias (`sshd.service` → `ssh.service`): recorded on its target.
                    aliases.entry(name).or_insert(target_name);
                    continue;
                }
                let resolved = root.resolve_link(&path, &target);
                fragments.entry(name).or_insert(resolved);
            } else if meta.is_file() {
                fragments.entry(name).or_insert(path);
            }
        }
    }

    // Symlinks in .wants/.requires/.upholds directories of /etc enable units.
    let mut enabled: BTreeSet<String> = BTreeSet::new();
    for name in root.list_dir("/etc/systemd/system")? {
        if name.ends_with(".wants") || name.ends_with(".requires") || name.ends_with(".upholds") {
            for link in root.list_dir(&format!("/etc/systemd/system/{name}"))? {
                enabled.insert(link.clone());
                if let Some(t) = template_of(&link) {
                    enabled.insert(t);
                }
                let host = root.path(&format!("/etc/systemd/system/{name}/{link}"));
                if let Ok(t) = std::fs::read_link(&host) {
                    if let Some(tn) = t.to_string_lossy().rsplit('/').next() {
                        enabled.insert(tn.to_string());
                    }
                }
            }
        }
    }
    Ok(UnitScan {
        fragments,
        masked,
        aliases,
        enabled,
    })
}

pub(crate) fn collect(ctx: &Ctx) -> Result<Piece, CollectError> {
    let root = &ctx.root;
    let units = ctx.units()?;
    let UnitScan {
        fragments,
        masked,
        aliases,
        enabled,
    } = &*units;
    let aliased_targets: BTreeSet<String> = aliases.values().cloned().collect();

    let mut units = Vec::new();
    for (name, path) in fragments {
        let state;
        let mut info = UnitFile::default();
        if masked.contains(name) {
            state = "masked";
        } else {
            info = root
                .read_opt(path)?
                .map(|t| parse_unit_file(&t))
                .unwrap_or_default();
            let has_install = !info.wanted_by.is_empty()
                || !info.required_by.is_empty()
                || !info.upheld_by.is_empty()
                || !info.alias.is_empty();
            state = if enabled.contains(name)
                || (aliased_targets.contains(name) && !info.alias.is_empty())
            {
                "enabled"
            } else if has_install {
                "disabled"
            } else if !info.also.is_empty() {
                "indirect"
            } else {
                "static"
            };
        }
        let mut drop_ins = Vec::new();
        for dir in UNIT_DIRS {
            let d = format!("{dir}/{name}.d");
            for f in root.list_dir(&d)? {
                if f.ends_with(".conf") {
                    drop_ins.push(format!("{d}/{f}"));
                }
            }
        }
        drop_ins.sort();
        drop_ins.dedup();
        units.push((
            Unit {
                name: name.clone(),
                unit_file_state: state.into(),
                fragment_path: Some(path.clone()),
                drop_ins,
                active_state: None,
            },
            info.oneshot,
        ));
    }

    let mut warnings = Vec::new();
    if root.is_live() && root.path("/run/systemd/system").is_dir() {
        match ctx.run(
            "systemctl",
            &[
                "list-units",
                "--all",
                "--plain",
                "--no-legend",
                "--no-pager",
                "--type=service,socket,timer",
            ],
        ) {
            Ok(out) => {
                let states = parse_list_units(&out);
                for (u, oneshot) in &mut units {
                    // Only long-running enabled units: a oneshot flipping between active and
                    // inactive is not news.
                    if u.unit_file_state == "enabled" && !*oneshot {
                        u.active_state = states.get(&u.name).cloned();
                    }
                }
            }
            Err(e) => warnings.push(format!("active states unknown: {e}")),
        }
    }
    let units: Vec<Unit> = units.into_iter().map(|(u, _)| u).collect();

    let default_target = default_target(root);
    let init_scripts = init_scripts(root)?;
    Ok(Piece::new(move |file| {
        file.profile.services.units = units;
        file.profile.services.default_target = default_target.into_iter().collect();
        file.profile.services.init_scripts = init_scripts;
    })
    .warn(warnings))
}

fn template_of(instance: &str) -> Option<String> {
    let (prefix, rest) = instance.split_once('@')?;
    let suffix = rest.rsplit_once('.')?.1;
    (!rest.starts_with('.')).then(|| format!("{prefix}@.{suffix}"))
}

fn default_target(root: &Root) -> Option<DefaultTarget> {
    for dir in UNIT_DIRS {
        let host = root.path(&format!("{dir}/default.target"));
        if let Ok(t) = std::fs::read_link(&host) {
            let name = t
                .to_string_lossy()
                .rsplit('/')
                .next()
                .unwrap_or("")
                .to_string();
            return Some(DefaultTarget { target: name });
        }
    }
    None
}

fn init_scripts(root: &Root) -> Result<Vec<InitScript>, CollectError> {
    let mut scripts: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for name in root.list_dir("/etc/init.d")? {
        if name == "README"
            || name.starts_with('.')
            || name == "rc"
            || name == "rcS"
            || name == "skeleton"
        {
            continue;
        }
        scripts.entry(name).or_default();
    }
    for level in ["0", "1", "2", "3", "4", "5", "6", "S"] {
        for link in root.list_dir(&format!("/etc/rc{level}.d"))? {
            if let Some(name) = link
                .strip_prefix('S')
                .map(|r| r.trim_start_matches(|c: char| c.is_ascii_digit()))
            {
                if let Some(levels) = scripts.get_mut(name) {
                    levels.insert(level.to_string());
                }
            }
        }
    }
    Ok(scripts
        .into_iter()
        .map(|(name, levels)| InitScript {
            name,
            runlevels: levels.into_iter().collect(),
        })
        .collect())
}

/// Parses a unit file's `[Install]` section and whether `[Service]` is a oneshot.
pub fn parse_unit_file(text: &str) -> UnitFile {
    let mut out = UnitFile::default();
    let mut section = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.starts_with(';') || line.is_empty() {
            continue;
        }
        if line.starts_with('[') {
            section = line.trim_matches(|c| c == '[' || c == ']').to_string();
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let values = || v.split_whitespace().map(String::from).collect::<Vec<_>>();
        match (section.as_str(), k.trim()) {
            ("Install", "WantedBy") => out.wanted_by.extend(values()),
            ("Install", "RequiredBy") => out.required_by.extend(values()),
            ("Install", "UpheldBy") => out.upheld_by.extend(values()),
            ("Install", "Alias") => out.alias.extend(values()),
            ("Install", "Also") => out.also.extend(values()),
            ("Service", "Type") => out.oneshot = v.trim() == "oneshot",
            _ => {}
        }
    }
    out
}

/// Parses `systemctl list-units --plain --no-legend` into unit → active state.
pub fn parse_list_units(out: &str) -> BTreeMap<String, String> {
    out.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let name = f.next()?;
            let _load = f.next()?;
            let active = f.next()?;
            Some((name.to_string(), active.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_install_section() {
        let u = parse_unit_file("[Unit]\nDescription=x\n[Service]\nType=oneshot\n[Install]\nWantedBy=multi-user.target\nAlias=sshd.service\nAlso=ssh.socket\n");
        assert_eq!(u.wanted_by, vec!["multi-user.target"]);
        assert_eq!(u.alias, vec!["sshd.service"]);
        assert!(u.oneshot);
    }

    #[test]
    fn templates() {
        assert_eq!(
            template_of("getty@tty1.service").as_deref(),
            Some("getty@.service")
        );
        assert_eq!(template_of("ssh.service"), None);
    }

    #[test]
    fn list_units() {
        let m = parse_list_units("ssh.service loaded active running OpenBSD Secure Shell server\ncron.service loaded inactive dead Cron\n");
        assert_eq!(m["ssh.service"], "active");
        assert_eq!(m["cron.service"], "inactive");
    }
}
