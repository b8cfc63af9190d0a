//! Access control: SSH server settings and host keys, sudo rules, and (live) mandatory access
//! control and the firewall ruleset.

use std::collections::BTreeMap;

use base64::Engine as _;
use keel_profile::{FirewallRuleset, Hash, MacState, SshHostKey, SshdSetting, SudoRule};

use crate::users::ssh_fingerprint;
use crate::{have, CollectError, Ctx, Piece, Root};

/// sshd keywords that accumulate instead of first-value-wins.
const SSHD_MULTI: &[&str] = &[
    "hostkey",
    "port",
    "listenaddress",
    "acceptenv",
    "subsystem",
    "hostcertificate",
    "setenv",
];

pub(crate) fn collect(ctx: &Ctx) -> Result<Piece, CollectError> {
    let root = &ctx.root;
    let mut sshd: BTreeMap<String, SshdSetting> = BTreeMap::new();
    read_sshd(root, "/etc/ssh/sshd_config", &mut sshd, 0)?;
    let sshd: Vec<SshdSetting> = sshd.into_values().collect();

    let mut host_keys = Vec::new();
    for name in root.list_dir("/etc/ssh")? {
        if name.starts_with("ssh_host_") && name.ends_with("_key.pub") {
            let path = format!("/etc/ssh/{name}");
            if let Some(text) = root.read_opt(&path)? {
                let mut w = text.split_whitespace();
                if let (Some(t), Some(b)) = (w.next(), w.next()) {
                    if let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(b) {
                        host_keys.push(SshHostKey {
                            key_type: t.into(),
                            fingerprint: ssh_fingerprint(&raw),
                            path,
                        });
                    }
                }
            }
        }
    }

    let mut sudo = Vec::new();
    if let Some(t) = root.read_opt("/etc/sudoers")? {
        sudo.extend(parse_sudoers(&t, "/etc/sudoers"));
    }
    for name in root.list_dir("/etc/sudoers.d")? {
        // sudo skips names containing a dot or ending in `~`.
        if name.contains('.') || name.ends_with('~') {
            continue;
        }
        let path = format!("/etc/sudoers.d/{name}");
        if let Some(t) = root.read_opt(&path)? {
            sudo.extend(parse_sudoers(&t, &path));
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    sudo.retain(|r: &SudoRule| seen.insert((r.file.clone(), r.rule.clone())));

    Ok(Piece::new(move |file| {
        file.profile.security.sshd = sshd;
        file.profile.security.ssh_host_keys = host_keys;
        file.profile.security.sudoers = sudo;
    }))
}

fn read_sshd(
    root: &Root,
    path: &str,
    out: &mut BTreeMap<String, SshdSetting>,
    depth: u32,
) -> Result<(), CollectError> {
    if depth > 8 {
        return Ok(());
    }
    let Some(text) = root.read_opt(path)? else {
        return Ok(());
    };
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (kw, value) = match line.split_once(|c: char| c.is_whitespace() || c == '=') {
            Some((k, v)) => (
                k.to_ascii_lowercase(),
                v.trim().trim_start_matches('=').trim().to_string(),
            ),
            None => continue,
        };
        if kw == "match" {
            // Everything after a Match applies conditionally; the unconditional settings end.
            return Ok(());
        }
        if kw == "include" {
            for pattern in value.split_whitespace() {
                let pattern = if pattern.starts_with('/') {
                    pattern.to_string()
                } else {
                    format!("/etc/ssh/{pattern}")
                };
                for p in expand_glob(root, &pattern)? {
                    read_sshd(root, &p, out, depth + 1)?;
                }
            }
            continue;
        }
        if SSHD_MULTI.contains(&kw.as_str()) {
            let e = out.entry(kw.clone()).or_insert_with(|| SshdSetting {
                name: kw.clone(),
                value: String::new(),
                file: path.into(),
            });
            if !e.value.is_empty() {
                e.value.push_str("; ");
            }
            e.value.push_str(&value);
        } else {
            out.entry(kw.clone()).or_insert(SshdSetting {
                name: kw,
                value,
                file: path.into(),
            });
        }
    }
    Ok(())
}

/// Expands a `dir/*.conf`-style glob (one `*` in the last component) inside the root.
fn expand_glob(root: &Root, pattern: &str) -> Result<Vec<String>, CollectError> {
    let (dir, name) = pattern.rsplit_once('/').unwrap_or(("/", pattern));
    let Some((pre, post)) = name.split_once('*') else {
        return Ok(vec![pattern.to_string()]);
    };
    Ok(root
        .list_dir(dir)?
        .into_iter()
        .filter(|n| n.starts_with(pre) && n.ends_with(post) && n.len() >= pre.len() + post.len())
        .map(|n| format!("{dir}/{n}"))
        .collect())
}

/// Parses sudoers into rule lines (continuations joined; include directives kept).
pub fn parse_sudoers(text: &str, file: &str) -> Vec<SudoRule> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        let t = line.trim();
        let is_directive = t.starts_with("#include") || t.starts_with("@include");
        if cur.is_empty() && (t.is_empty() || (t.starts_with('#') && !is_directive)) {
            continue;
        }
        if let Some(stripped) = t.strip_suffix('\\') {
            cur.push_str(stripped.trim_end());
            cur.push(' ');
            continue;
        }
        cur.push_str(t);
        let rule = cur.split_whitespace().collect::<Vec<_>>().join(" ");
        cur.clear();
        out.push(SudoRule {
            file: file.into(),
            rule,
        });
    }
    out
}

pub(crate) fn collect_live(ctx: &Ctx) -> Result<Piece, CollectError> {
    let root = &ctx.root;
    let mut mac = Vec::new();
    if let Some(e) = root.read_opt("/sys/module/apparmor/parameters/enabled")? {
        let profiles = root
            .read_opt("/sys/kernel/security/apparmor/profiles")
            .ok()
            .flatten()
            .map(|t| t.lines().count() as u64);
        mac.push(MacState {
            name: "apparmor".into(),
            enabled: e.trim() == "Y",
            mode: None,
            profiles,
        });
    }
    if let Some(e) = root.read_opt("/sys/fs/selinux/enforce")? {
        mac.push(MacState {
            name: "selinux".into(),
            enabled: true,
            mode: Some(
                if e.trim() == "1" {
                    "enforcing"
                } else {
                    "permissive"
                }
                .into(),
            ),
            profiles: None,
        });
    }
    let mut firewall = Vec::new();
    let mut warnings = Vec::new();
    if have("nft") {
        match ctx.run("nft", &["list", "ruleset"]) {
            Ok(out) => firewall.push(FirewallRuleset {
                backend: "nftables".into(),
                rules: count_nft_rules(&out),
                hash: Hash::of(out.as_bytes()),
            }),
            Err(e) => warnings.push(format!("nftables ruleset unknown: {e}")),
        }
    } else if have("iptables-save") {
        match ctx.run("iptables-save", &[]) {
            Ok(out) => {
                // Counters and the timestamp comment change by themselves; hash the rules only.
                let rules: Vec<&str> = out
                    .lines()
                    .filter(|l| l.starts_with('-') || l.starts_with('*'))
                    .collect();
                firewall.push(FirewallRuleset {
                    backend: "iptables".into(),
                    rules: rules.iter().filter(|l| l.starts_with("-A")).count() as u64,
                    hash: Hash::of(rules.join("\n").as_bytes()),
                });
            }
            Err(e) => warnings.push(format!("iptables ruleset unknown: {e}")),
        }
    }
    Ok(Piece::new(move |file| {
        file.profile.security.mac = mac;
        file.profile.security.firewall = firewall;
    })
    .warn(warnings))
}

/// Counts rule lines in `nft list ruleset` output (statements inside chains).
pub fn count_nft_rules(out: &str) -> u64 {
    out.lines()
        .map(str::trim)
        .filter(|l| {
            !l.is_empty()
                && !l.starts_with("table ")
                && !l.starts_with("chain ")
                && !l.starts_with("type ")
                && !l.starts_with("policy ")
                && !l.starts_with("set ")
                && !l.starts_with("map ")
                && !l.starts_with("elements ")
                && !l.starts_with("flags ")
                && *l != "}"
                && !l.starts_with('#')
        })
        .count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sudoers() {
        let r = parse_sudoers("# c\nDefaults env_reset\nroot ALL=(ALL:ALL) ALL\n%admin ALL=(ALL) \\\n   NOPASSWD: ALL\n@includedir /etc/sudoers.d\n", "/etc/sudoers");
        assert_eq!(r.len(), 4);
        assert_eq!(r[2].rule, "%admin ALL=(ALL) NOPASSWD: ALL");
        assert_eq!(r[3].rule, "@includedir /etc/sudoers.d");
    }

    #[test]
    fn nft_rules() {
        let n = count_nft_rules("table inet filter {\n\tchain input {\n\t\ttype filter hook input priority filter; policy drop;\n\t\tct state established accept\n\t\ttcp dport 22 accept\n\t}\n}\n");
        assert_eq!(n, 2);
    }
}
