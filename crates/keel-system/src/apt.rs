//! apt, driven for a build: a private apt configuration holding only the profile's
//! repositories and keys, and a throwaway apt state on the build machine that answers "which
//! versions do the repositories carry?" and "does this package set install?" before anything
//! is written.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::build::Phase;
use crate::cmd;
use crate::error::SystemError;
use crate::plan::SystemPlan;

/// Name of the configuration file inside a configuration directory.
pub(crate) const CONF: &str = "keel-apt.conf";
/// Longest an `apt-get update` may take.
const UPDATE_TIMEOUT: Duration = Duration::from_secs(600);

/// Writes the build's apt configuration into `dir`, which apt will see as `seen_as` (the same
/// directory from the build machine, or its path inside the tree). `trusted_extra` is a
/// directory whose keys are trusted for every repository without `signed-by` too (the tree's
/// own `trusted.gpg.d`). `state` makes a throwaway state on the build machine that reads no
/// system configuration at all.
pub(crate) fn write_config(
    dir: &Path,
    seen_as: &Path,
    plan: &SystemPlan,
    trusted_extra: Option<&Path>,
    state: Option<&Path>,
) -> Result<PathBuf, SystemError> {
    let mkdir =
        |p: &Path| fs::create_dir_all(p).map_err(|e| SystemError::io("cannot create", p, e));
    for sub in [
        "sources.list.d",
        "keys",
        "trusted.gpg.d",
        "preferences.d",
        "apt.conf.d",
    ] {
        mkdir(&dir.join(sub))?;
    }
    let seen = seen_as.display().to_string();
    let write = |p: &Path, data: &[u8]| {
        fs::write(p, data).map_err(|e| SystemError::io("cannot write", p, e))
    };

    // Keys: `signed-by` keys under keys/, the others under trusted.gpg.d/.
    let mut signed: BTreeMap<&str, String> = BTreeMap::new();
    for (i, k) in plan.keys.iter().enumerate() {
        let Some(content) = &k.content else { continue };
        let base = k.path.rsplit('/').next().unwrap_or("key");
        let name = if base.ends_with(".gpg") || base.ends_with(".asc") {
            format!("{i:02}-{base}")
        } else {
            format!("{i:02}-{base}.gpg")
        };
        if k.global {
            write(&dir.join("trusted.gpg.d").join(&name), content)?;
        } else {
            write(&dir.join("keys").join(&name), content)?;
            signed.insert(k.path.as_str(), format!("{seen}/keys/{name}"));
        }
    }
    if let Some(extra) = trusted_extra {
        if let Ok(entries) = fs::read_dir(extra) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if (name.ends_with(".gpg") || name.ends_with(".asc")) && e.path().is_file() {
                    let data = fs::read(e.path())
                        .map_err(|err| SystemError::io("cannot read", &e.path(), err))?;
                    write(
                        &dir.join("trusted.gpg.d").join(format!("tree-{name}")),
                        &data,
                    )?;
                }
            }
        }
    }

    let mut list = String::new();
    for s in &plan.sources {
        let mut opts = Vec::new();
        if let Some(k) = s.signed_by.as_deref().and_then(|k| signed.get(k)) {
            opts.push(format!("signed-by={k}"));
        }
        if !s.archs.is_empty() {
            opts.push(format!("arch={}", s.archs.join(",")));
        }
        if s.trusted {
            opts.push("trusted=yes".into());
        }
        let opts = if opts.is_empty() {
            String::new()
        } else {
            format!("[{}] ", opts.join(" "))
        };
        let _ = writeln!(
            list,
            "deb {opts}{} {} {}",
            s.uri,
            s.suite,
            s.components.join(" ")
        );
    }
    write(&dir.join("sources.list"), list.as_bytes())?;

    let mut conf = String::new();
    if let Some(state) = state {
        // Read first (APT_CONFIG), so no part of the build machine's configuration is read.
        let st = state.display();
        let _ = writeln!(conf, "Dir::Etc \"{seen}\";");
        let _ = writeln!(conf, "Dir::Etc::main \"{CONF}.main\";");
        let _ = writeln!(conf, "Dir::State \"{st}\";");
        let _ = writeln!(conf, "Dir::State::Lists \"{st}/lists\";");
        let _ = writeln!(conf, "Dir::State::status \"{st}/status\";");
        let _ = writeln!(
            conf,
            "Dir::State::extended_states \"{st}/extended_states\";"
        );
        let _ = writeln!(conf, "Dir::Cache \"{st}/cache\";");
        let _ = writeln!(conf, "Dir::Log \"{st}/log\";");
        let _ = writeln!(conf, "APT::Sandbox::User \"root\";");
    }
    let _ = writeln!(conf, "Dir::Etc::SourceList \"{seen}/sources.list\";");
    let _ = writeln!(conf, "Dir::Etc::SourceParts \"{seen}/sources.list.d\";");
    let _ = writeln!(conf, "Dir::Etc::TrustedParts \"{seen}/trusted.gpg.d\";");
    let _ = writeln!(conf, "Dir::Etc::Trusted \"{seen}/trusted.gpg\";");
    let _ = writeln!(conf, "Dir::Etc::Preferences \"{seen}/preferences\";");
    let _ = writeln!(conf, "Dir::Etc::PreferencesParts \"{seen}/preferences.d\";");
    let _ = writeln!(conf, "APT::Architecture \"{}\";", plan.arch);
    let mut archs = vec![plan.arch.clone()];
    archs.extend(plan.foreign_archs.iter().cloned());
    let _ = writeln!(
        conf,
        "APT::Architectures {{ {} }};",
        archs
            .iter()
            .map(|a| format!("\"{a}\";"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let _ = writeln!(conf, "Acquire::Languages \"none\";");
    let _ = writeln!(conf, "Acquire::Retries \"3\";");
    let _ = writeln!(conf, "APT::Install-Recommends \"false\";");
    let _ = writeln!(conf, "APT::Install-Suggests \"false\";");
    let path = dir.join(CONF);
    write(&path, conf.as_bytes())?;
    Ok(path)
}

/// A throwaway apt state on the build machine: the profile's repositories, an empty package
/// database, and nothing of the build machine's own apt configuration.
#[derive(Debug)]
pub(crate) struct AptState {
    dir: PathBuf,
    conf: PathBuf,
    arch: String,
    _temp: Option<tempfile::TempDir>,
}

impl AptState {
    /// Prepares the state in `dir` (kept, so its package lists are reused), or in a
    /// temporary directory.
    pub(crate) fn create(dir: Option<PathBuf>, plan: &SystemPlan) -> Result<AptState, SystemError> {
        let (dir, temp) = if let Some(d) = dir {
            (d, None)
        } else {
            let t = tempfile::Builder::new()
                .prefix("keel-apt-")
                .tempdir()
                .map_err(|e| SystemError::io("cannot create", Path::new("/tmp"), e))?;
            (t.path().to_path_buf(), Some(t))
        };
        for sub in ["lists/partial", "cache/archives/partial", "log"] {
            let p = dir.join(sub);
            fs::create_dir_all(&p).map_err(|e| SystemError::io("cannot create", &p, e))?;
        }
        let status = dir.join("status");
        fs::write(&status, b"").map_err(|e| SystemError::io("cannot write", &status, e))?;
        let etc = dir.join("etc");
        if etc.exists() {
            // A fresh configuration every time: keys and sources come from this plan only.
            fs::remove_dir_all(&etc).map_err(|e| SystemError::io("cannot remove", &etc, e))?;
        }
        let conf = write_config(&etc, &etc, plan, None, Some(&dir))?;
        Ok(AptState {
            dir,
            conf,
            arch: plan.arch.clone(),
            _temp: temp,
        })
    }

    /// The downloaded package lists.
    pub(crate) fn lists(&self) -> PathBuf {
        self.dir.join("lists")
    }

    fn apt(&self, program: &str) -> Command {
        let mut c = cmd::host(program);
        c.env("APT_CONFIG", &self.conf);
        c
    }

    /// Downloads the repositories' package lists.
    pub(crate) fn update(&self, lines: &mut dyn FnMut(&str)) -> Result<(), SystemError> {
        cmd::run(
            Phase::Check,
            self.apt("apt-get")
                .args(["-q", "update", "-o", "APT::Update::Error-Mode=any"]),
            UPDATE_TIMEOUT,
            lines,
        )
        .map(drop)
        .map_err(|e| match e {
            SystemError::Command { output, .. } => SystemError::Other(format!(
                "cannot read the profile's repositories:\n{}\nhint: the archive may be \
                 unreachable from here or signed with a key the profile does not carry; give \
                 a reachable archive with --mirror URI, or its key with --keyring FILE",
                output.trim_end()
            )),
            other => other,
        })
    }

    /// Every version the repositories carry of each of `queries`, by query.
    pub(crate) fn availability(
        &self,
        queries: &[String],
    ) -> Result<BTreeMap<String, Vec<String>>, SystemError> {
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for chunk in queries.chunks(400) {
            let o = cmd::run_quiet(
                Phase::Check,
                self.apt("apt-cache").arg("madison").args(chunk),
                Duration::from_secs(120),
            )?;
            for (k, v) in parse_madison(&o.stdout, &self.arch) {
                out.entry(k).or_default().extend(v);
            }
        }
        Ok(out)
    }

    /// Resolves installing `specs` together, as on an empty system, without installing.
    pub(crate) fn simulate(&self, specs: &[String]) -> Result<(), SystemError> {
        cmd::run_quiet(
            Phase::Check,
            self.apt("apt-get")
                .args([
                    "-s",
                    "-q",
                    "install",
                    "--no-install-recommends",
                    "--allow-downgrades",
                ])
                .args(specs),
            Duration::from_secs(300),
        )
        .map(drop)
        .map_err(|e| match e {
            SystemError::Command { output, .. } => SystemError::Unresolvable {
                detail: output
                    .lines()
                    .filter(|l| !l.starts_with("Inst ") && !l.starts_with("Conf "))
                    .collect::<Vec<_>>()
                    .join("\n"),
            },
            other => other,
        })
    }
}

/// Parses `apt-cache madison`: `name | version | uri suite/component arch Packages`.
/// Versions are keyed by name, qualified with the architecture for foreign ones.
pub(crate) fn parse_madison(out: &str, native: &str) -> BTreeMap<String, Vec<String>> {
    let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in out.lines() {
        let f: Vec<&str> = line.split(" | ").map(str::trim).collect();
        let [name, version, index] = f[..] else {
            continue;
        };
        let mut words = index.split_whitespace().rev();
        if words.next() != Some("Packages") {
            continue;
        }
        let arch = words.next().unwrap_or(native);
        let key = if arch == native || arch == "all" {
            name.to_string()
        } else {
            format!("{name}:{arch}")
        };
        let versions = m.entry(key).or_default();
        if !versions.iter().any(|v| v == version) {
            versions.push(version.to_string());
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::PlanOptions;

    #[test]
    fn madison() {
        let out = "openssh-server | 1:9.2p1-2+deb12u5 | http://a.example/debian bookworm/main amd64 Packages
openssh-server | 1:9.2p1-2+deb12u3 | http://a.example/debian bookworm-updates/main amd64 Packages
openssh-server | 1:9.2p1-2+deb12u5 | http://b.example/debian bookworm/main amd64 Packages
     libc6 | 2.36-9 | http://a.example/debian bookworm/main i386 Packages
   openssh | 1:9.2p1-2 | http://a.example/debian bookworm/main Sources
";
        let m = parse_madison(out, "amd64");
        assert_eq!(
            m["openssh-server"],
            ["1:9.2p1-2+deb12u5", "1:9.2p1-2+deb12u3"]
        );
        assert_eq!(m["libc6:i386"], ["2.36-9"]);
        assert!(!m.contains_key("openssh"));
    }

    #[test]
    fn config_names_only_the_profile_repositories_and_keys() {
        let file = crate::plan::tests::profile();
        let plan = SystemPlan::from_profile(&file, &PlanOptions::default()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let conf =
            write_config(dir.path(), Path::new("/tmp/keel-build"), &plan, None, None).unwrap();
        let list = fs::read_to_string(dir.path().join("sources.list")).unwrap();
        assert_eq!(
            list,
            "deb http://archive.example/debian bookworm main
deb http://archive.example/debian bookworm-updates main
deb [signed-by=/tmp/keel-build/keys/00-vendor.gpg] http://vendor.example/apt stable main
"
        );
        assert_eq!(
            fs::read(dir.path().join("keys/00-vendor.gpg")).unwrap(),
            b"vendor key"
        );
        let conf = fs::read_to_string(conf).unwrap();
        assert!(
            conf.contains("APT::Architectures { \"amd64\"; \"i386\"; };"),
            "{conf}"
        );
        assert!(conf.contains("Dir::Etc::TrustedParts \"/tmp/keel-build/trusted.gpg.d\";"));
        assert!(!conf.contains("Dir::State"), "{conf}");
    }
}
