//! Accounts and groups from `/etc/passwd`, `/etc/shadow`, `/etc/group`, and users' authorized
//! SSH keys. Password hashes never leave as such: only their state, algorithm and a keyed
//! fingerprint.

use std::collections::BTreeMap;

use base64::Engine as _;
use keel_profile::{AuthorizedKey, Group, User};
use sha2::{Digest, Sha256};

use crate::{CollectError, Ctx, Piece};

/// A `/etc/shadow` entry, hash included: it stays in this module.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ShadowEntry {
    pub name: String,
    pub hash: String,
    pub last_change: Option<u64>,
    pub min: Option<u64>,
    pub max: Option<u64>,
    pub warn: Option<u64>,
    pub inactive: Option<u64>,
    pub expire: Option<u64>,
}

pub(crate) fn collect(ctx: &Ctx) -> Result<Piece, CollectError> {
    let passwd = ctx.root.read("/etc/passwd")?;
    let group = ctx.root.read_opt("/etc/group")?.unwrap_or_default();
    let shadow = ctx.root.read_opt("/etc/shadow")?.unwrap_or_default();
    let shadow: BTreeMap<String, ShadowEntry> = parse_shadow(&shadow)
        .into_iter()
        .map(|s| (s.name.clone(), s))
        .collect();

    let mut users = parse_passwd(&passwd);
    for u in &mut users {
        match shadow.get(&u.name) {
            Some(s) => {
                let (status, alg) = password_status(&s.hash);
                u.password_status = status.into();
                u.hash_alg = alg.map(String::from);
                if status == "set" || status == "locked" {
                    u.password_fingerprint = Some(ctx.secrets.fingerprint(s.hash.as_bytes()));
                }
                u.last_change = s.last_change;
                u.min_days = s.min;
                u.max_days = s.max;
                u.warn_days = s.warn;
                u.inactive_days = s.inactive;
                u.expire = s.expire;
            }
            None => u.password_status = "none".into(),
        }
    }

    let mut warnings = Vec::new();
    let mut keys = Vec::new();
    for u in &users {
        if u.home.is_empty() || u.home == "/" || u.home == "/nonexistent" {
            continue;
        }
        for file in ["authorized_keys", "authorized_keys2"] {
            let path = format!("{}/.ssh/{file}", u.home.trim_end_matches('/'));
            match ctx.root.read_opt(&path) {
                Ok(Some(text)) => keys.extend(parse_authorized_keys(&text, &u.name, &path)),
                Ok(None) => {}
                Err(e) => warnings.push(e.to_string()),
            }
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    keys.retain(|k: &AuthorizedKey| seen.insert((k.user.clone(), k.fingerprint.clone())));

    let groups = parse_group(&group);
    Ok(Piece::new(move |file| {
        file.profile.users.users = users;
        file.profile.users.groups = groups;
        file.profile.users.authorized_keys = keys;
    })
    .warn(warnings))
}

/// Parses `/etc/passwd`.
pub fn parse_passwd(text: &str) -> Vec<User> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with('+') && !l.starts_with('-'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 7 {
                return None;
            }
            Some(User {
                name: f[0].into(),
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
                gecos: f[4].into(),
                home: f[5].into(),
                shell: f[6].into(),
                ..User::default()
            })
        })
        .collect()
}

/// Parses `/etc/group`.
pub fn parse_group(text: &str) -> Vec<Group> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with('+') && !l.starts_with('-'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 4 {
                return None;
            }
            let mut members: Vec<String> = f[3]
                .split(',')
                .filter(|m| !m.is_empty())
                .map(String::from)
                .collect();
            members.sort();
            Some(Group {
                name: f[0].into(),
                gid: f[2].parse().ok()?,
                members,
            })
        })
        .collect()
}

/// Parses `/etc/shadow`.
pub fn parse_shadow(text: &str) -> Vec<ShadowEntry> {
    let num = |s: &str| s.parse::<u64>().ok();
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 2 || f[0].is_empty() {
                return None;
            }
            let g = |i: usize| f.get(i).copied().and_then(num);
            Some(ShadowEntry {
                name: f[0].into(),
                hash: f[1].into(),
                last_change: g(2),
                min: g(3),
                max: g(4),
                warn: g(5),
                inactive: g(6),
                expire: g(7),
            })
        })
        .collect()
}

/// The state of a shadow password field and the hash algorithm (osquery's `password_status`
/// and `hash_alg`).
pub fn password_status(hash: &str) -> (&'static str, Option<&'static str>) {
    if hash.is_empty() {
        return ("empty", None);
    }
    if hash == "*" || hash == "!" || hash == "!!" || hash == "!*" {
        return ("no_login", None);
    }
    let (locked, h) = match hash.strip_prefix('!') {
        Some(rest) => (true, rest),
        None => (false, hash),
    };
    let alg = match h.split('$').nth(1) {
        Some("1") => Some("md5"),
        Some("2a" | "2b" | "2y") => Some("bcrypt"),
        Some("5") => Some("sha256"),
        Some("6") => Some("sha512"),
        Some("y") => Some("yescrypt"),
        Some("gy") => Some("gost-yescrypt"),
        Some("7") => Some("scrypt"),
        _ if h.len() == 13 => Some("des"),
        _ => None,
    };
    (if locked { "locked" } else { "set" }, alg)
}

/// Parses an `authorized_keys` file: each key's type, `SHA256:` fingerprint (as `ssh-keygen
/// -l` prints it), comment and options.
pub fn parse_authorized_keys(text: &str, user: &str, path: &str) -> Vec<AuthorizedKey> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let words = split_options_aware(line);
        let Some(pos) = words.iter().position(|w| is_key_type(w)) else {
            continue;
        };
        let Some(blob) = words.get(pos + 1) else {
            continue;
        };
        let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(blob) else {
            continue;
        };
        let options = (pos > 0).then(|| words[..pos].join(" "));
        let comment = (words.len() > pos + 2).then(|| words[pos + 2..].join(" "));
        out.push(AuthorizedKey {
            user: user.into(),
            key_type: words[pos].clone(),
            fingerprint: ssh_fingerprint(&raw),
            comment,
            options,
            path: path.into(),
        });
    }
    out
}

/// `SHA256:` + unpadded base64 of the key blob's SHA-256, as OpenSSH shows it.
pub fn ssh_fingerprint(blob: &[u8]) -> String {
    let d = Sha256::digest(blob);
    format!(
        "SHA256:{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(d)
    )
}

fn is_key_type(w: &str) -> bool {
    w.starts_with("ssh-") || w.starts_with("ecdsa-sha2-") || w.starts_with("sk-")
}

/// Splits on whitespace outside double quotes (options may hold quoted commands).
fn split_options_aware(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            c if c.is_whitespace() && !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwd_and_group() {
        let u = parse_passwd("root:x:0:0:root:/root:/bin/bash\n# c\nbad line\nalice:x:1000:1000:Alice,,,:/home/alice:/bin/bash\n");
        assert_eq!(u.len(), 2);
        assert_eq!(u[1].uid, 1000);
        let g = parse_group("sudo:x:27:bob,alice\nusers:x:100:\n");
        assert_eq!(g[0].members, vec!["alice", "bob"]);
        assert!(g[1].members.is_empty());
    }

    #[test]
    fn password_states() {
        assert_eq!(password_status("$6$salt$hash"), ("set", Some("sha512")));
        assert_eq!(password_status("!$y$j9T$x$y"), ("locked", Some("yescrypt")));
        assert_eq!(password_status("*"), ("no_login", None));
        assert_eq!(password_status(""), ("empty", None));
    }

    #[test]
    fn authorized_keys_fingerprint() {
        // The fingerprint ssh-keygen -lf prints for this key.
        let k = parse_authorized_keys(
            "command=\"echo hi there\",no-pty ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl alice@example\n",
            "alice",
            "/home/alice/.ssh/authorized_keys",
        );
        assert_eq!(k.len(), 1);
        assert_eq!(k[0].key_type, "ssh-ed25519");
        assert_eq!(
            k[0].options.as_deref(),
            Some("command=\"echo hi there\",no-pty")
        );
        assert_eq!(k[0].comment.as_deref(), Some("alice@example"));
        assert!(k[0].fingerprint.starts_with("SHA256:"));
    }
}
