//! Operating system identity, kernels and boot configuration.

use std::collections::BTreeMap;

use keel_profile::{Boot, Hash, HostSettings, InstalledKernel, OsRelease, RunningKernel};

use crate::{CollectError, Ctx, Piece};

pub(crate) fn collect(ctx: &Ctx) -> Result<Piece, CollectError> {
    let root = &ctx.root;
    let mut warnings = Vec::new();
    let os_release = match root.read_opt("/etc/os-release")? {
        Some(t) => t,
        None => root.read_opt("/usr/lib/os-release")?.unwrap_or_default(),
    };
    let kv = parse_env_file(&os_release);
    let arch = ctx.dpkg().ok().and_then(|d| d.native_arch.clone());
    let release = OsRelease {
        id: kv.get("ID").cloned().unwrap_or_else(|| "linux".into()),
        version_id: kv.get("VERSION_ID").cloned(),
        codename: kv.get("VERSION_CODENAME").cloned(),
        pretty_name: kv.get("PRETTY_NAME").cloned(),
        arch,
    };
    if os_release.is_empty() {
        warnings.push("no os-release file".to_string());
    }

    let hostname = root
        .read_opt("/etc/hostname")?
        .map(|h| h.lines().next().unwrap_or("").trim().to_string())
        .unwrap_or_default();
    let machine_id = root
        .read_opt("/etc/machine-id")?
        .unwrap_or_default()
        .trim()
        .to_string();
    let timezone = match std::fs::read_link(root.path("/etc/localtime")) {
        Ok(t) => {
            let t = t.to_string_lossy().into_owned();
            t.split_once("zoneinfo/")
                .map(|(_, z)| z.to_string())
                .or(Some(t))
        }
        Err(_) => root
            .read_opt("/etc/timezone")?
            .map(|s| s.trim().to_string()),
    };
    let locale_file = match root.read_opt("/etc/default/locale")? {
        Some(t) => Some(t),
        None => root.read_opt("/etc/locale.conf")?,
    };
    let locale = locale_file.and_then(|t| parse_env_file(&t).get("LANG").cloned());
    let keymap = root
        .read_opt("/etc/default/keyboard")?
        .and_then(|t| parse_env_file(&t).get("XKBLAYOUT").cloned())
        .or_else(|| {
            root.read_opt("/etc/vconsole.conf")
                .ok()
                .flatten()
                .and_then(|t| parse_env_file(&t).get("KEYMAP").cloned())
        });
    let host = HostSettings {
        hostname,
        machine_id,
        timezone,
        locale,
        keymap,
    };

    // Installed kernels: images in /boot, module trees in /lib/modules.
    let mut kernels: BTreeMap<String, InstalledKernel> = BTreeMap::new();
    for name in root.list_dir("/boot")? {
        if let Some(rel) = name.strip_prefix("vmlinuz-") {
            let k = kernels.entry(rel.to_string()).or_default();
            k.release = rel.to_string();
            k.image = Some(format!("/boot/{name}"));
        } else if let Some(rel) = name.strip_prefix("initrd.img-") {
            let k = kernels.entry(rel.to_string()).or_default();
            k.release = rel.to_string();
            k.initrd = Some(format!("/boot/{name}"));
        }
    }
    let modules_dir = if root.path("/lib/modules").is_dir() {
        "/lib/modules"
    } else {
        "/usr/lib/modules"
    };
    for rel in root.list_dir(modules_dir)? {
        if root
            .path(&format!("{modules_dir}/{rel}/modules.dep"))
            .exists()
            || root.path(&format!("{modules_dir}/{rel}/kernel")).is_dir()
        {
            let k = kernels.entry(rel.clone()).or_default();
            k.release = rel;
            k.modules = true;
        }
    }

    let default_grub = root.read_opt("/etc/default/grub")?.unwrap_or_default();
    let grub = parse_env_file(&default_grub);
    let grub_cfg = root.path("/boot/grub/grub.cfg");
    let grub_cfg_hash = std::fs::read(&grub_cfg).ok().map(|d| Hash::of(&d));
    let db = ctx.dpkg().ok();
    let installed = |name: &str| {
        db.as_ref().is_some_and(|d| {
            d.packages
                .iter()
                .any(|p| p.name == name && p.state == "installed")
        })
    };
    let bootloader =
        if installed("grub-efi-amd64") || installed("grub-efi-arm64") || installed("grub-efi-ia32")
        {
            "grub-efi"
        } else if installed("grub-pc") {
            "grub-pc"
        } else if installed("systemd-boot") {
            "systemd-boot"
        } else if grub_cfg_hash.is_some() {
            "grub"
        } else {
            "none"
        };
    let fstab = root.read_opt("/etc/fstab")?.unwrap_or_default();
    let efi_partition = fstab.lines().any(|l| {
        let mut f = l.split_whitespace();
        !l.trim_start().starts_with('#')
            && matches!(f.nth(1), Some("/boot/efi" | "/efi" | "/boot/EFI"))
    });
    let boot = Boot {
        bootloader: bootloader.into(),
        grub_cmdline_linux: grub.get("GRUB_CMDLINE_LINUX").cloned(),
        grub_cmdline_linux_default: grub.get("GRUB_CMDLINE_LINUX_DEFAULT").cloned(),
        grub_cfg_hash,
        efi_partition,
    };

    let kernels: Vec<InstalledKernel> = kernels.into_values().collect();
    Ok(Piece::new(move |file| {
        file.profile.os.release = vec![release];
        file.profile.os.host = vec![host];
        file.profile.os.kernels = kernels;
        file.profile.os.boot = vec![boot];
    })
    .warn(warnings))
}

pub(crate) fn collect_running(ctx: &Ctx) -> Result<Piece, CollectError> {
    let r = &ctx.root;
    let trim = |s: String| s.trim().to_string();
    let release = trim(r.read("/proc/sys/kernel/osrelease")?);
    let version = trim(r.read("/proc/sys/kernel/version")?);
    let cmdline = trim(r.read("/proc/cmdline")?);
    let uptime_s = r
        .read("/proc/uptime")?
        .split('.')
        .next()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    let arch = std::env::consts::ARCH.to_string();
    let k = RunningKernel {
        release,
        version,
        arch,
        cmdline,
        uptime_s,
    };
    Ok(Piece::new(move |file| {
        file.profile.os.running_kernel = vec![k];
    }))
}

/// Parses `KEY=value` files (os-release, /etc/default/*), removing shell quotes.
pub fn parse_env_file(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let v = v.trim();
        let v = if (v.starts_with('"') && v.ends_with('"') && v.len() >= 2)
            || (v.starts_with('\'') && v.ends_with('\'') && v.len() >= 2)
        {
            &v[1..v.len() - 1]
        } else {
            v
        };
        out.insert(k.trim().to_string(), v.to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn env_file() {
        let m = super::parse_env_file("ID=debian\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n# x=y\nGRUB_CMDLINE_LINUX_DEFAULT='quiet splash'\n");
        assert_eq!(m["ID"], "debian");
        assert_eq!(m["PRETTY_NAME"], "Debian GNU/Linux 12 (bookworm)");
        assert_eq!(m["GRUB_CMDLINE_LINUX_DEFAULT"], "quiet splash");
        assert!(!m.contains_key("# x"));
    }
}
