//! Kernel settings: sysctl (configured and running), modules and modprobe configuration.

use std::collections::BTreeMap;

use keel_profile::{ModprobeDirective, Module, ModuleLoad, Sysctl, SysctlRunning};

use crate::{CollectError, Ctx, Piece, Root};

/// systemd-sysctl's directories, lowest precedence first (a later file of the same name
/// replaces an earlier one; across names, files apply in name order).
const SYSCTL_DIRS: &[&str] = &[
    "/usr/lib/sysctl.d",
    "/lib/sysctl.d",
    "/usr/local/lib/sysctl.d",
    "/run/sysctl.d",
    "/etc/sysctl.d",
];

pub(crate) fn collect_config(ctx: &Ctx) -> Result<Piece, CollectError> {
    let root = &ctx.root;
    let sysctl = configured_sysctl(root)?;

    let mut modprobe = Vec::new();
    for dir in ["/lib/modprobe.d", "/usr/lib/modprobe.d", "/etc/modprobe.d"] {
        for name in root.list_dir(dir)? {
            if !name.ends_with(".conf") {
                continue;
            }
            let path = format!("{dir}/{name}");
            if let Some(t) = root.read_opt(&path)? {
                modprobe.extend(parse_modprobe(&t, &path));
            }
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    modprobe.retain(|m: &ModprobeDirective| seen.insert((m.directive.clone(), m.args.clone())));

    let mut load = Vec::new();
    if let Some(t) = root.read_opt("/etc/modules")? {
        load.extend(parse_modules_load(&t, "/etc/modules"));
    }
    for dir in ["/usr/lib/modules-load.d", "/etc/modules-load.d"] {
        for name in root.list_dir(dir)? {
            if name.ends_with(".conf") {
                let path = format!("{dir}/{name}");
                if let Some(t) = root.read_opt(&path)? {
                    load.extend(parse_modules_load(&t, &path));
                }
            }
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    load.retain(|m: &ModuleLoad| seen.insert(m.module.clone()));

    Ok(Piece::new(move |file| {
        file.profile.kernel.sysctl = sysctl;
        file.profile.kernel.modprobe = modprobe;
        file.profile.kernel.modules_load = load;
    }))
}

/// The effective configured value of every sysctl key, as systemd-sysctl would apply them.
fn configured_sysctl(root: &Root) -> Result<Vec<Sysctl>, CollectError> {
    let mut files: BTreeMap<String, String> = BTreeMap::new();
    for dir in SYSCTL_DIRS {
        for name in root.list_dir(dir)? {
            if name.ends_with(".conf") {
                files.insert(name.clone(), format!("{dir}/{name}"));
            }
        }
    }
    let mut values: BTreeMap<String, Sysctl> = BTreeMap::new();
    let mut ordered: Vec<String> = files.into_values().collect();
    // /etc/sysctl.conf is applied last (it is linked as 99-sysctl.conf on Debian).
    ordered.push("/etc/sysctl.conf".into());
    for path in ordered {
        let Some(text) = root.read_opt(&path)? else {
            continue;
        };
        for (name, value) in parse_sysctl_conf(&text) {
            values.insert(
                name.clone(),
                Sysctl {
                    name,
                    value,
                    file: path.clone(),
                },
            );
        }
    }
    Ok(values.into_values().collect())
}

pub(crate) fn collect_live(ctx: &Ctx) -> Result<Piece, CollectError> {
    let root = &ctx.root;
    let configured = configured_sysctl(root)?;
    let mut running = Vec::new();
    for s in &configured {
        if s.name.contains('*') {
            continue;
        }
        let path = format!("/proc/sys/{}", s.name.replace('.', "/"));
        if let Ok(Some(v)) = root.read_opt(&path) {
            running.push(SysctlRunning {
                name: s.name.clone(),
                value: normalize_ws(&v),
            });
        }
    }
    let modules = root
        .read_opt("/proc/modules")?
        .map(|t| parse_proc_modules(&t))
        .unwrap_or_default();
    Ok(Piece::new(move |file| {
        file.profile.kernel.sysctl_running = running;
        file.profile.kernel.modules = modules;
    }))
}

fn normalize_ws(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Parses a sysctl.conf-style file into `(key, value)` with keys in dotted form.
pub fn parse_sysctl_conf(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            if l.is_empty() || l.starts_with('#') || l.starts_with(';') {
                return None;
            }
            let (k, v) = l.split_once('=')?;
            let k = k.trim().trim_start_matches('-').replace('/', ".");
            Some((k, normalize_ws(v)))
        })
        .collect()
}

/// Parses modprobe.d directives.
pub fn parse_modprobe(text: &str, file: &str) -> Vec<ModprobeDirective> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            if l.is_empty() || l.starts_with('#') {
                return None;
            }
            let (d, args) = l.split_once(char::is_whitespace)?;
            Some(ModprobeDirective {
                directive: d.into(),
                args: normalize_ws(args),
                file: file.into(),
            })
        })
        .collect()
}

/// Parses `/etc/modules` or a modules-load.d file.
pub fn parse_modules_load(text: &str, file: &str) -> Vec<ModuleLoad> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            (!l.is_empty() && !l.starts_with('#') && !l.starts_with(';')).then(|| ModuleLoad {
                module: l.split_whitespace().next().unwrap_or(l).to_string(),
                file: file.into(),
            })
        })
        .collect()
}

/// Parses `/proc/modules`.
pub fn parse_proc_modules(text: &str) -> Vec<Module> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            Some(Module {
                name: f.next()?.into(),
                size: f.next()?.parse().unwrap_or(0),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysctl_conf() {
        let s = parse_sysctl_conf("# c\nnet.ipv4.ip_forward = 1\n-kernel/yama/ptrace_scope=2\nnet.core.somaxconn =  4096 \n");
        assert_eq!(s[0], ("net.ipv4.ip_forward".into(), "1".into()));
        assert_eq!(s[1], ("kernel.yama.ptrace_scope".into(), "2".into()));
        assert_eq!(s[2].1, "4096");
    }

    #[test]
    fn modprobe() {
        let m = parse_modprobe(
            "blacklist pcspkr\noptions  kvm_intel   nested=1\n",
            "/etc/modprobe.d/x.conf",
        );
        assert_eq!(m[1].args, "kvm_intel nested=1");
    }

    #[test]
    fn proc_modules() {
        let m = parse_proc_modules("ext4 1007616 2 - Live 0x0000000000000000\n");
        assert_eq!(m[0].name, "ext4");
        assert_eq!(m[0].size, 1_007_616);
    }
}
