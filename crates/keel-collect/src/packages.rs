//! Installed packages (dpkg, rpm) and the repositories and keys they come from.

use std::collections::BTreeMap;

use keel_profile::{Alternative, Hash, Package, Repository, RepositoryKey};

use crate::{CollectError, Ctx, Piece, Root};

pub(crate) fn collect(ctx: &Ctx) -> Result<Piece, CollectError> {
    let mut warnings = Vec::new();
    let db = ctx.dpkg()?;
    let mut packages: Vec<Package> = db
        .packages
        .iter()
        .map(|p| Package {
            name: p.name.clone(),
            arch: p.arch.clone(),
            version: p.version.clone(),
            manager: "dpkg".into(),
            status: p.state.clone(),
            auto: db.auto.contains(&(p.name.clone(), p.arch.clone())),
            hold: p.want == "hold",
            source: p.source.clone(),
            priority: p.priority.clone(),
        })
        .collect();

    if let Some(dbpath) = rpm_dbpath(&ctx.root) {
        match rpm_packages(ctx, &dbpath) {
            Ok(mut rpms) => packages.append(&mut rpms),
            Err(e) => warnings.push(format!(
                "rpm database at {dbpath} present but unreadable: {e}"
            )),
        }
    }

    let mut repositories = Vec::new();
    if let Some(text) = ctx.root.read_opt("/etc/apt/sources.list")? {
        repositories.extend(parse_sources_list(&text, "/etc/apt/sources.list"));
    }
    for name in ctx.root.list_dir("/etc/apt/sources.list.d")? {
        let path = format!("/etc/apt/sources.list.d/{name}");
        let Some(text) = ctx.root.read_opt(&path)? else {
            continue;
        };
        if name.ends_with(".list") {
            repositories.extend(parse_sources_list(&text, &path));
        } else if name.ends_with(".sources") {
            repositories.extend(parse_deb822_sources(&text, &path));
        }
    }
    for name in ctx.root.list_dir("/etc/yum.repos.d")? {
        if name.ends_with(".repo") {
            let path = format!("/etc/yum.repos.d/{name}");
            if let Some(text) = ctx.root.read_opt(&path)? {
                repositories.extend(parse_yum_repo(&text, &path));
            }
        }
    }
    dedup_keys(&mut repositories);

    let mut keys = Vec::new();
    let mut key_paths: Vec<String> = Vec::new();
    for dir in [
        "/etc/apt/trusted.gpg.d",
        "/etc/apt/keyrings",
        "/usr/share/keyrings",
    ] {
        for name in ctx.root.list_dir(dir)? {
            key_paths.push(format!("{dir}/{name}"));
        }
    }
    if ctx.root.exists("/etc/apt/trusted.gpg") {
        key_paths.push("/etc/apt/trusted.gpg".into());
    }
    // Keys named by `signed-by` anywhere else.
    for r in &repositories {
        if let Some(p) = r.options.get("signed-by") {
            if p.starts_with('/') && !key_paths.contains(p) {
                key_paths.push(p.clone());
            }
        }
    }
    for path in key_paths {
        let host = ctx.root.path(&path);
        match std::fs::read(&host) {
            Ok(data) => keys.push(RepositoryKey {
                path,
                hash: Hash::of(&data),
                size: data.len() as u64,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                warnings.push(format!(
                    "repository key {path} named by a source is missing"
                ));
            }
            Err(e) if e.raw_os_error() == Some(21) => {} // a directory
            Err(e) => warnings.push(format!("cannot read {path}: {e}")),
        }
    }

    let mut alternatives = Vec::new();
    for name in ctx.root.list_dir("/var/lib/dpkg/alternatives")? {
        let Some(text) = ctx
            .root
            .read_opt(&format!("/var/lib/dpkg/alternatives/{name}"))?
        else {
            continue;
        };
        let mut lines = text.lines();
        let (Some(mode), Some(link)) = (lines.next(), lines.next()) else {
            continue;
        };
        let value = std::fs::read_link(ctx.root.path(&format!("/etc/alternatives/{name}")))
            .ok()
            .map(|t| t.to_string_lossy().into_owned());
        alternatives.push(Alternative {
            name,
            mode: mode.trim().into(),
            link: link.trim().into(),
            value,
        });
    }

    Ok(Piece::new(move |file| {
        file.profile.packages.alternatives = alternatives;
        file.profile.packages.packages = packages;
        file.profile.packages.repositories = repositories;
        file.profile.packages.repository_keys = keys;
    })
    .warn(warnings))
}

/// Two entries for the same repository (in two files, say) stay distinct rows.
fn dedup_keys(repos: &mut [Repository]) {
    use keel_profile::Record;
    let mut seen: BTreeMap<String, u32> = BTreeMap::new();
    for r in repos.iter_mut() {
        let n = seen.entry(r.key()).or_insert(0);
        *n += 1;
        if *n > 1 {
            r.suite = format!("{} #{}", r.suite, n);
        }
    }
}

fn rpm_dbpath(root: &Root) -> Option<String> {
    ["/var/lib/rpm", "/usr/lib/sysimage/rpm"]
        .into_iter()
        .find_map(|d| {
            let names = root.list_dir(d).ok()?;
            names
                .iter()
                .any(|n| n == "Packages" || n == "rpmdb.sqlite" || n == "Packages.db")
                .then(|| d.to_string())
        })
}

fn rpm_packages(ctx: &Ctx, dbpath: &str) -> Result<Vec<Package>, CollectError> {
    let root = ctx.root.dir().display().to_string();
    let out = ctx.run(
        "rpm",
        &[
            "--root",
            &root,
            "--dbpath",
            dbpath,
            "-qa",
            "--qf",
            "%{NAME}\t%{EPOCHNUM}\t%{VERSION}\t%{RELEASE}\t%{ARCH}\t%{SOURCERPM}\n",
        ],
    )?;
    Ok(parse_rpm_qa(&out))
}

/// Parses the tab-separated `rpm -qa --qf` output.
pub fn parse_rpm_qa(out: &str) -> Vec<Package> {
    out.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            if f.len() < 5 {
                return None;
            }
            let epoch = if f[1] == "0" || f[1].is_empty() {
                String::new()
            } else {
                format!("{}:", f[1])
            };
            Some(Package {
                name: f[0].into(),
                arch: if f[4] == "(none)" {
                    String::new()
                } else {
                    f[4].into()
                },
                version: format!("{epoch}{}-{}", f[2], f[3]),
                manager: "rpm".into(),
                status: "installed".into(),
                source: f
                    .get(5)
                    .filter(|s| **s != "(none)")
                    .map(|s| (*s).to_string()),
                ..Package::default()
            })
        })
        .collect()
}

/// Parses one-line-style apt sources.
pub fn parse_sources_list(text: &str, file: &str) -> Vec<Repository> {
    let mut out = Vec::new();
    for raw in text.lines() {
        let line = raw.trim();
        let (enabled, line) = match line.strip_prefix('#') {
            // A commented-out entry is still worth knowing about, but only if it parses.
            Some(rest) => (false, rest.trim()),
            None => (true, line),
        };
        let line = line.split(" #").next().unwrap_or(line);
        let mut rest = line;
        let kind = match rest.split_whitespace().next() {
            Some(k @ ("deb" | "deb-src")) => k.to_string(),
            _ => continue,
        };
        rest = rest[kind.len()..].trim_start();
        let mut options = BTreeMap::new();
        if let Some(after) = rest.strip_prefix('[') {
            let Some((opts, tail)) = after.split_once(']') else {
                continue;
            };
            for o in opts.split_whitespace() {
                if let Some((k, v)) = o.split_once('=') {
                    options.insert(k.to_string(), v.to_string());
                }
            }
            rest = tail.trim_start();
        }
        let mut words = rest.split_whitespace();
        let (Some(uri), Some(suite)) = (words.next(), words.next()) else {
            continue;
        };
        out.push(Repository {
            kind,
            uri: uri.into(),
            suite: suite.into(),
            components: words.map(String::from).collect(),
            options,
            file: file.into(),
            enabled,
        });
    }
    out
}

/// Parses deb822-style `.sources` files.
pub fn parse_deb822_sources(text: &str, file: &str) -> Vec<Repository> {
    let mut out = Vec::new();
    for para in text.split("\n\n") {
        let mut fields: BTreeMap<String, String> = BTreeMap::new();
        let mut last: Option<String> = None;
        for line in para.lines() {
            if line.starts_with('#') {
                continue;
            }
            if line.starts_with(' ') || line.starts_with('\t') {
                if let Some(k) = &last {
                    let v = fields.entry(k.clone()).or_default();
                    v.push('\n');
                    v.push_str(line.trim());
                }
                continue;
            }
            if let Some((k, v)) = line.split_once(':') {
                let k = k.trim().to_ascii_lowercase();
                fields.insert(k.clone(), v.trim().to_string());
                last = Some(k);
            }
        }
        let (Some(types), Some(uris), Some(suites)) = (
            fields.get("types"),
            fields.get("uris"),
            fields.get("suites"),
        ) else {
            continue;
        };
        let enabled = fields.get("enabled").is_none_or(|v| v != "no");
        let components: Vec<String> = fields
            .get("components")
            .map(|c| c.split_whitespace().map(String::from).collect())
            .unwrap_or_default();
        let mut options = BTreeMap::new();
        for (k, v) in &fields {
            if !matches!(
                k.as_str(),
                "types" | "uris" | "suites" | "components" | "enabled"
            ) {
                // An inline key block is recorded by hash, not pasted into every profile.
                let v = if v.contains("BEGIN PGP") {
                    format!("inline key {}", Hash::of(v.as_bytes()).short())
                } else {
                    v.clone()
                };
                options.insert(k.clone(), v);
            }
        }
        for kind in types.split_whitespace() {
            for uri in uris.split_whitespace() {
                for suite in suites.split_whitespace() {
                    out.push(Repository {
                        kind: kind.into(),
                        uri: uri.into(),
                        suite: suite.into(),
                        components: components.clone(),
                        options: options.clone(),
                        file: file.into(),
                        enabled,
                    });
                }
            }
        }
    }
    out
}

/// Parses a yum/dnf `.repo` file.
pub fn parse_yum_repo(text: &str, file: &str) -> Vec<Repository> {
    let mut out: Vec<Repository> = Vec::new();
    let mut cur: Option<(String, BTreeMap<String, String>)> = None;
    let finish = |cur: Option<(String, BTreeMap<String, String>)>, out: &mut Vec<Repository>| {
        if let Some((id, mut kv)) = cur {
            let uri = kv
                .remove("baseurl")
                .or_else(|| kv.remove("metalink"))
                .or_else(|| kv.remove("mirrorlist"))
                .unwrap_or_default();
            let enabled = kv.get("enabled").is_none_or(|v| v != "0");
            out.push(Repository {
                kind: "rpm-md".into(),
                uri,
                suite: id,
                components: Vec::new(),
                options: kv,
                file: file.into(),
                enabled,
            });
        }
    };
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        if let Some(id) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            finish(cur.take(), &mut out);
            cur = Some((id.to_string(), BTreeMap::new()));
        } else if let (Some((_, kv)), Some((k, v))) = (cur.as_mut(), line.split_once('=')) {
            kv.insert(k.trim().to_string(), v.trim().to_string());
        }
    }
    finish(cur, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_sources() {
        let r = parse_sources_list(
            "deb [arch=amd64 signed-by=/etc/apt/keyrings/x.gpg] http://example.org/debian bookworm main contrib\n# deb-src http://example.org/debian bookworm main\n# a comment\n",
            "/etc/apt/sources.list",
        );
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].options["signed-by"], "/etc/apt/keyrings/x.gpg");
        assert_eq!(r[0].components, vec!["main", "contrib"]);
        assert!(r[0].enabled);
        assert!(!r[1].enabled);
        assert_eq!(r[1].kind, "deb-src");
    }

    #[test]
    fn deb822_sources() {
        let r = parse_deb822_sources(
            "Types: deb deb-src\nURIs: http://example.org/debian\nSuites: bookworm bookworm-updates\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n",
            "/etc/apt/sources.list.d/debian.sources",
        );
        assert_eq!(r.len(), 4);
        assert_eq!(
            r[0].options["signed-by"],
            "/usr/share/keyrings/debian-archive-keyring.gpg"
        );
    }

    #[test]
    fn yum_repo() {
        let r = parse_yum_repo("[baseos]\nname=BaseOS\nbaseurl=http://example.org/baseos\nenabled=1\ngpgcheck=1\n[extras]\nmirrorlist=http://example.org/m\nenabled=0\n", "/etc/yum.repos.d/x.repo");
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].uri, "http://example.org/baseos");
        assert!(!r[1].enabled);
    }

    #[test]
    fn rpm_qa() {
        let p = parse_rpm_qa("bash\t0\t5.1.8\t6.el9\tx86_64\tbash-5.1.8-6.el9.src.rpm\ngpg-pubkey\t0\tfd431d51\t4ae0493b\t(none)\t(none)\nkernel\t1\t5.14\t1\tx86_64\tk.src.rpm\n");
        assert_eq!(p.len(), 3);
        assert_eq!(p[0].version, "5.1.8-6.el9");
        assert_eq!(p[1].arch, "");
        assert_eq!(p[2].version, "1:5.14-1");
    }
}
