//! The dpkg database, read directly (`/var/lib/dpkg/status`, `info/*.list`, `info/*.md5sums`,
//! apt's `extended_states`): no `dpkg-query` needed, and it works on any root.

use std::collections::{HashMap, HashSet};

use crate::{CollectError, Root};

/// One paragraph of `/var/lib/dpkg/status`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatusEntry {
    pub name: String,
    pub arch: String,
    pub version: String,
    /// The want flag (`install`, `hold`, `deinstall`, `purge`).
    pub want: String,
    /// The package state (`installed`, `config-files`, `half-installed`, …).
    pub state: String,
    pub source: Option<String>,
    pub priority: Option<String>,
    pub essential: bool,
    /// `(path, md5, obsolete)`.
    pub conffiles: Vec<(String, String, bool)>,
}

/// A conffile as dpkg recorded it.
#[derive(Debug, Clone)]
pub struct Conffile {
    pub package: String,
    pub md5: String,
    pub obsolete: bool,
}

/// What the collectors need from dpkg.
#[derive(Debug, Default)]
pub struct Db {
    pub packages: Vec<StatusEntry>,
    pub conffiles: HashMap<String, Conffile>,
    /// Owner of every path under `/etc` (the package's `info` file stem, `name` or
    /// `name:arch`).
    pub etc_owners: HashMap<String, String>,
    /// `(name, arch)` installed only as dependencies.
    pub auto: HashSet<(String, String)>,
    pub native_arch: Option<String>,
}

impl Db {
    /// Reads the database under `root`; an absent database is an empty one.
    pub fn load(root: &Root) -> Result<Self, CollectError> {
        let Some(status) = root.read_opt("/var/lib/dpkg/status")? else {
            return Ok(Db::default());
        };
        let packages = parse_status(&status);
        let mut conffiles = HashMap::new();
        for p in &packages {
            for (path, md5, obsolete) in &p.conffiles {
                // `newconffile` marks a conffile whose install never completed: no checksum.
                if md5 == "newconffile" {
                    continue;
                }
                conffiles.insert(
                    path.clone(),
                    Conffile {
                        package: p.name.clone(),
                        md5: md5.clone(),
                        obsolete: *obsolete,
                    },
                );
            }
        }
        let native_arch = packages
            .iter()
            .find(|p| p.name == "dpkg")
            .map(|p| p.arch.clone());
        let auto = root
            .read_opt("/var/lib/apt/extended_states")?
            .map(|s| parse_extended_states(&s, native_arch.as_deref().unwrap_or("")))
            .unwrap_or_default();

        let mut etc_owners = HashMap::new();
        let info = "/var/lib/dpkg/info";
        for name in root.list_dir(info)? {
            let Some(stem) = name.strip_suffix(".list") else {
                continue;
            };
            let bytes = std::fs::read(root.path(&format!("{info}/{name}")))
                .map_err(|e| CollectError::io(&root.path(&format!("{info}/{name}")), e))?;
            for line in bytes.split(|b| *b == b'\n') {
                if line.starts_with(b"/etc/") {
                    let path = String::from_utf8_lossy(line).into_owned();
                    etc_owners.entry(path).or_insert_with(|| stem.to_string());
                }
            }
        }
        Ok(Db {
            packages,
            conffiles,
            etc_owners,
            auto,
            native_arch,
        })
    }

    /// md5 sums of the `/etc` files a package ships as ordinary (non-conffile) files.
    pub fn etc_md5sums(root: &Root, stem: &str) -> HashMap<String, String> {
        let path = format!("/var/lib/dpkg/info/{stem}.md5sums");
        let Ok(Some(text)) = root.read_opt(&path) else {
            return HashMap::new();
        };
        parse_md5sums(&text, "etc/")
    }
}

/// Parses dpkg's status file.
pub fn parse_status(text: &str) -> Vec<StatusEntry> {
    let mut out = Vec::new();
    let mut cur = StatusEntry::default();
    let mut in_conffiles = false;
    let mut flush = |cur: &mut StatusEntry| {
        if !cur.name.is_empty() && cur.state != "not-installed" {
            out.push(std::mem::take(cur));
        } else {
            *cur = StatusEntry::default();
        }
    };
    for line in text.lines() {
        if line.is_empty() {
            flush(&mut cur);
            in_conffiles = false;
            continue;
        }
        if line.starts_with(' ') || line.starts_with('\t') {
            if in_conffiles {
                let mut parts = line.split_whitespace();
                if let (Some(path), Some(md5)) = (parts.next(), parts.next()) {
                    let flags: Vec<&str> = parts.collect();
                    // `remove-on-upgrade` conffiles are on their way out, like obsolete ones.
                    cur.conffiles.push((
                        path.to_string(),
                        md5.to_string(),
                        flags.contains(&"obsolete") || flags.contains(&"remove-on-upgrade"),
                    ));
                }
            }
            continue;
        }
        in_conffiles = false;
        let Some((field, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match field {
            "Package" => cur.name = value.to_string(),
            "Architecture" => cur.arch = value.to_string(),
            "Version" => cur.version = value.to_string(),
            "Status" => {
                let mut p = value.split_whitespace();
                cur.want = p.next().unwrap_or_default().to_string();
                let _flag = p.next();
                cur.state = p.next().unwrap_or_default().to_string();
            }
            "Source" => {
                cur.source = Some(value.split_whitespace().next().unwrap_or(value).to_string());
            }
            "Priority" => cur.priority = Some(value.to_string()),
            "Essential" => cur.essential = value == "yes",
            "Conffiles" => in_conffiles = true,
            _ => {}
        }
    }
    flush(&mut cur);
    out
}

/// Parses apt's `extended_states` into the set of auto-installed `(name, arch)`.
pub fn parse_extended_states(text: &str, native_arch: &str) -> HashSet<(String, String)> {
    let mut out = HashSet::new();
    for para in text.split("\n\n") {
        let mut name = None;
        let mut arch = native_arch.to_string();
        let mut auto = false;
        for line in para.lines() {
            if let Some((k, v)) = line.split_once(':') {
                match k {
                    "Package" => name = Some(v.trim().to_string()),
                    "Architecture" => arch = v.trim().to_string(),
                    "Auto-Installed" => auto = v.trim() == "1",
                    _ => {}
                }
            }
        }
        if let (Some(n), true) = (name, auto) {
            out.insert((n, arch));
        }
    }
    out
}

/// Parses an `md5sums` file, keeping paths that start with `prefix` (paths there have no
/// leading slash); returns absolute paths.
pub fn parse_md5sums(text: &str, prefix: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|l| {
            let (md5, path) = l.split_once("  ")?;
            path.starts_with(prefix)
                .then(|| (format!("/{path}"), md5.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "\
Package: openssh-server
Status: install ok installed
Priority: optional
Architecture: amd64
Source: openssh
Version: 1:9.2p1-2+deb12u3
Conffiles:
 /etc/default/ssh 500e3cf069fe9a7b9936108eb9d9c035
 /etc/init.d/ssh 3649a6fe8c18ad1d5245fd91737de507
 /etc/pam.d/sshd 8b4c7a12b031424b2a9946881da59812 obsolete
Description: secure shell (SSH) server
 multi-line description

Package: gone
Status: purge ok not-installed
Architecture: amd64

Package: nano
Status: hold ok installed
Architecture: amd64
Version: 7.2-1
";

    #[test]
    fn status_paragraphs() {
        let p = parse_status(STATUS);
        assert_eq!(p.len(), 2, "not-installed entries are skipped");
        assert_eq!(p[0].name, "openssh-server");
        assert_eq!(p[0].source.as_deref(), Some("openssh"));
        assert_eq!(p[0].conffiles.len(), 3);
        assert!(p[0].conffiles[2].2, "obsolete flag");
        assert_eq!(p[1].want, "hold");
        assert_eq!(p[1].state, "installed");
    }

    #[test]
    fn extended_states() {
        let s = "Package: libc6\nArchitecture: amd64\nAuto-Installed: 1\n\nPackage: vim\nArchitecture: amd64\nAuto-Installed: 0\n";
        let a = parse_extended_states(s, "amd64");
        assert!(a.contains(&("libc6".into(), "amd64".into())));
        assert!(!a.contains(&("vim".into(), "amd64".into())));
    }

    #[test]
    fn md5sums_prefix() {
        let m = parse_md5sums("0123  usr/bin/x\nabcd  etc/foo.conf\n", "etc/");
        assert_eq!(m.len(), 1);
        assert_eq!(m["/etc/foo.conf"], "abcd");
    }
}
