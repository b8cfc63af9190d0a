//! The system plan: what the tree a profile describes is made of, computed from the profile
//! alone and checked against the repositories before anything is written.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use keel_profile::{CollectorState, Hash, Profile, ProfileFile};
use serde::Serialize;

use crate::error::{MissingVersion, SystemError};
use crate::overlay::{overlay_steps, OverlayStep};
use crate::version::compare_versions;

/// Choices that shape a plan.
#[derive(Debug, Clone, Default)]
pub struct PlanOptions {
    /// Install the newest available version of a package whose recorded version the
    /// repositories no longer carry (only when it is newer than the recorded one).
    pub allow_newer: bool,
    /// Use this archive instead of the profile's main archive, for the base system and for
    /// every repository at the same address (a snapshot archive, a local mirror).
    pub mirror: Option<String>,
    /// Keyring files trusted for every repository, on top of the profile's keys.
    pub keyrings: Vec<PathBuf>,
}

/// An apt repository the build installs from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AptSource {
    /// Archive address.
    pub uri: String,
    /// Suite (`bookworm`, `bookworm-updates`).
    pub suite: String,
    /// Components (`main`).
    pub components: Vec<String>,
    /// The key file the repository must be signed with (its path on the profiled system).
    pub signed_by: Option<String>,
    /// Architectures the source is limited to.
    pub archs: Vec<String>,
    /// The profile marks the repository as trusted without a signature.
    pub trusted: bool,
}

/// Where a repository key's content comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyOrigin {
    /// A blob in the profile (the key was a changed or unowned file).
    Profile,
    /// The build machine's file at the same path, with the same hash.
    BuildMachine,
    /// A keyring given to the build.
    Given,
    /// Not found: apt will refuse repositories that need it.
    Missing,
}

/// A repository key the build needs.
#[derive(Debug, Clone, Serialize)]
pub struct KeyFile {
    /// Its path on the profiled system (or the given file).
    pub path: String,
    /// BLAKE3 of its content, as the profile records it.
    pub hash: Hash,
    /// Where the content comes from.
    pub origin: KeyOrigin,
    /// Trusted for every repository without `signed-by` (`trusted.gpg.d`, given keyrings).
    pub global: bool,
    /// The key itself.
    #[serde(skip)]
    pub content: Option<Vec<u8>>,
}

/// A package to install, at a version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PackagePin {
    /// Package name.
    pub name: String,
    /// Architecture as recorded (`amd64`, `all`, or a foreign one).
    pub arch: String,
    /// The version the profile records.
    pub recorded: String,
    /// The version to install: the recorded one, or a newer one with `--allow-newer`.
    pub version: String,
    /// Installed only as a dependency on the profiled system.
    pub auto: bool,
    /// Held on the profiled system.
    pub hold: bool,
}

impl PackagePin {
    /// The name apt knows it by on a system of architecture `native`: `name`, or
    /// `name:arch` for a foreign architecture.
    pub fn query(&self, native: &str) -> String {
        if self.arch == native || self.arch == "all" || self.arch.is_empty() {
            self.name.clone()
        } else {
            format!("{}:{}", self.name, self.arch)
        }
    }

    /// The argument that installs it: `name=version` or `name:arch=version`.
    pub fn spec(&self, native: &str) -> String {
        format!("{}={}", self.query(native), self.version)
    }
}

/// What the tree a profile describes is made of: the release to bootstrap, the repositories
/// and keys, every installed package at its version, and the configuration overlay.
#[derive(Debug, Clone, Serialize)]
pub struct SystemPlan {
    /// The profile's hash.
    pub profile: String,
    /// The profiled system's hostname.
    pub hostname: String,
    /// Distribution (`debian`, `ubuntu`).
    pub distribution: String,
    /// Release codename, the suite the base system is bootstrapped from.
    pub suite: String,
    /// Native architecture (dpkg's).
    pub arch: String,
    /// Other architectures packages are installed for.
    pub foreign_archs: Vec<String>,
    /// The archive the base system comes from.
    pub mirror: String,
    /// Components of the base system's archive.
    pub components: Vec<String>,
    /// Repositories packages are installed from.
    pub sources: Vec<AptSource>,
    /// Repository keys.
    pub keys: Vec<KeyFile>,
    /// Every installed package, at the version to install.
    pub packages: Vec<PackagePin>,
    /// Packages replaced by a newer version (`--allow-newer`), as `(name, recorded, newer)`.
    pub newer: Vec<(String, String, String)>,
    /// Configuration overlay, secrets excepted.
    pub overlay: Vec<OverlayStep>,
    /// Secrets, written last (never part of a cached tree).
    pub secrets: Vec<OverlayStep>,
    /// What will not come back exactly, and why.
    pub warnings: Vec<String>,
}

/// Directories whose keys apt trusts for every repository without `signed-by`.
const GLOBAL_KEYS: &[&str] = &["/etc/apt/trusted.gpg.d/", "/etc/apt/trusted.gpg"];

impl SystemPlan {
    /// The plan of the system `file` describes. Reads nothing but the profile: keys not in
    /// the profile are found later by [`SystemPlan::resolve_keys`], versions checked by
    /// [`SystemPlan::check_versions`].
    pub fn from_profile(file: &ProfileFile, opts: &PlanOptions) -> Result<SystemPlan, SystemError> {
        let p = &file.profile;
        let profile_hash = file
            .hash()
            .map_err(|e| SystemError::Other(format!("cannot hash the profile: {e}")))?;
        for table in ["packages", "repositories"] {
            if let Some(c) = p.collector_for("packages", table) {
                if c.state != CollectorState::Ok {
                    return Err(SystemError::Profile {
                        what: format!(
                            "its package list is unknown (the packages collector reported {}: {})",
                            c.state.as_str(),
                            c.message.as_deref().unwrap_or("no message")
                        ),
                        hint: "capture the system again and check `keel show --section meta`"
                            .into(),
                    });
                }
            }
        }
        let Some(release) = p.os.release.first() else {
            return Err(SystemError::Profile {
                what: "it records no operating system release".into(),
                hint: "capture the system again; the os collector reads /etc/os-release".into(),
            });
        };
        let dpkg: Vec<_> = p
            .packages
            .packages
            .iter()
            .filter(|x| x.manager == "dpkg")
            .collect();
        if dpkg.is_empty() {
            return Err(SystemError::Profile {
                what: format!(
                    "it records no dpkg packages ({}): only Debian-family systems are rebuilt \
                     from packages so far",
                    release.pretty_name.as_deref().unwrap_or(&release.id)
                ),
                hint: "rebuild RPM-based systems with their own installer for now".into(),
            });
        }
        let Some(suite) = release.codename.clone().filter(|c| !c.is_empty()) else {
            return Err(SystemError::Profile {
                what: "its os-release names no codename (VERSION_CODENAME)".into(),
                hint: "the codename chooses the suite to bootstrap; recapture a system whose \
                       /etc/os-release has VERSION_CODENAME"
                    .into(),
            });
        };
        let arch = release
            .arch
            .clone()
            .or_else(|| {
                dpkg.iter()
                    .find(|x| x.name == "dpkg")
                    .map(|x| x.arch.clone())
            })
            .filter(|a| !a.is_empty())
            .ok_or_else(|| SystemError::Profile {
                what: "it records no dpkg architecture".into(),
                hint: "recapture the system; the architecture comes from the dpkg package".into(),
            })?;

        let mut warnings = Vec::new();
        let mut sources = sources_of(p)?;
        if !valid_arch(&arch) || !valid_word(&suite) {
            return Err(altered(format!(
                "release {suite:?} or architecture {arch:?} is not valid"
            )));
        }
        let base = base_source(&sources, &suite);
        let (mirror, components) = match (base, &opts.mirror) {
            (Some(i), Some(m)) => {
                let old = sources[i].uri.clone();
                for s in &mut sources {
                    if s.uri == old {
                        s.uri.clone_from(m);
                    }
                }
                (m.clone(), sources[i].components.clone())
            }
            (Some(i), None) => (sources[i].uri.clone(), sources[i].components.clone()),
            (None, Some(m)) => {
                warnings.push(format!(
                    "the profile records no repository for {suite}; using {m} with component main"
                ));
                sources.insert(
                    0,
                    AptSource {
                        uri: m.clone(),
                        suite: suite.clone(),
                        components: vec!["main".into()],
                        signed_by: None,
                        archs: Vec::new(),
                        trusted: false,
                    },
                );
                (m.clone(), vec!["main".into()])
            }
            (None, None) => {
                return Err(SystemError::Profile {
                    what: format!("it records no enabled repository for its release {suite}"),
                    hint: "give the archive to build from with --mirror URI".into(),
                })
            }
        };

        let keys = keys_needed(file, &sources);
        let mut foreign = BTreeSet::new();
        let mut packages = Vec::new();
        for x in &dpkg {
            // Names and versions become arguments of apt on this machine: only what dpkg
            // itself accepts.
            if !valid_package(&x.name) || !valid_version(&x.version) || !valid_arch(&x.arch) {
                return Err(altered(format!(
                    "package {:?} version {:?} ({:?}) is not a valid Debian package",
                    x.name, x.version, x.arch
                )));
            }
            if x.status != "installed" {
                warnings.push(format!(
                    "package {} is in state {} on the profiled system: not installed",
                    x.name, x.status
                ));
                continue;
            }
            if !x.arch.is_empty() && x.arch != "all" && x.arch != arch {
                foreign.insert(x.arch.clone());
            }
            packages.push(PackagePin {
                name: x.name.clone(),
                arch: x.arch.clone(),
                recorded: x.version.clone(),
                version: x.version.clone(),
                auto: x.auto,
                hold: x.hold,
            });
        }
        packages.sort_by(|a, b| (&a.name, &a.arch).cmp(&(&b.name, &b.arch)));

        let overlay = overlay_steps(p);
        warnings.extend(overlay.warnings);
        Ok(SystemPlan {
            profile: profile_hash.to_hex(),
            hostname: p
                .os
                .host
                .first()
                .map_or_else(|| p.meta.hostname.clone(), |h| h.hostname.clone()),
            distribution: release.id.clone(),
            suite,
            arch,
            foreign_archs: foreign.into_iter().collect(),
            mirror,
            components,
            sources,
            keys,
            packages,
            newer: Vec::new(),
            overlay: overlay.steps,
            secrets: overlay.secrets,
            warnings,
        })
    }

    /// Finds the keys the profile does not carry: the file at the same path under
    /// `host_root` when its hash matches the recorded one. Adds `keyrings` as keys trusted
    /// for every repository.
    pub fn resolve_keys(
        &mut self,
        host_root: &Path,
        keyrings: &[PathBuf],
    ) -> Result<(), SystemError> {
        for k in &mut self.keys {
            if k.content.is_some() {
                continue;
            }
            let host = host_root.join(k.path.trim_start_matches('/'));
            if let Ok(data) = std::fs::read(&host) {
                if Hash::of(&data) == k.hash {
                    k.content = Some(data);
                    k.origin = KeyOrigin::BuildMachine;
                }
            }
        }
        for path in keyrings {
            let data = std::fs::read(path).map_err(|e| SystemError::io("cannot read", path, e))?;
            self.keys.push(KeyFile {
                path: path.display().to_string(),
                hash: Hash::of(&data),
                origin: KeyOrigin::Given,
                global: true,
                content: Some(data),
            });
        }
        for k in &self.keys {
            if k.content.is_none() {
                self.warnings.push(format!(
                    "repository key {} is neither in the profile nor on this machine with the \
                     same content; repositories that need it may be refused (give it with \
                     --keyring FILE)",
                    k.path
                ));
            }
        }
        Ok(())
    }

    /// Checks every package's version against what the repositories carry (`available`:
    /// versions by [`PackagePin::query`] name). A missing version is an error naming every
    /// such package, unless `allow_newer` takes a newer one.
    pub fn check_versions(
        &mut self,
        available: &BTreeMap<String, Vec<String>>,
        allow_newer: bool,
    ) -> Result<(), SystemError> {
        let mut missing = Vec::new();
        let native = self.arch.clone();
        for pin in &mut self.packages {
            let mut versions: Vec<String> = available
                .get(&pin.query(&native))
                .cloned()
                .unwrap_or_default();
            if versions.iter().any(|v| v == &pin.recorded) {
                continue;
            }
            versions.sort_by(|a, b| compare_versions(b, a));
            versions.dedup();
            let newer = versions
                .first()
                .filter(|v| compare_versions(v, &pin.recorded).is_gt())
                .cloned();
            match (&newer, allow_newer) {
                (Some(n), true) => {
                    self.newer
                        .push((pin.name.clone(), pin.recorded.clone(), n.clone()));
                    pin.version.clone_from(n);
                }
                _ => missing.push(MissingVersion {
                    name: pin.name.clone(),
                    arch: pin.arch.clone(),
                    version: pin.recorded.clone(),
                    available: versions,
                    newer,
                }),
            }
        }
        for (name, recorded, newer) in &self.newer {
            self.warnings.push(format!(
                "{name} {recorded} is no longer in the repositories: installing {newer}"
            ));
        }
        if missing.is_empty() {
            Ok(())
        } else {
            Err(SystemError::MissingVersions(missing))
        }
    }

    /// The apt arguments that install every package at its version.
    pub fn specs(&self) -> Vec<String> {
        self.packages.iter().map(|p| p.spec(&self.arch)).collect()
    }
}

/// The enabled binary repositories of a profile, in profile order, without duplicates.
fn sources_of(p: &Profile) -> Result<Vec<AptSource>, SystemError> {
    let mut out: Vec<AptSource> = Vec::new();
    for r in &p.packages.repositories {
        if r.kind != "deb" || !r.enabled || r.uri.starts_with("cdrom:") {
            continue;
        }
        // Two rows for the same repository get a counter in their key (`suite #2`).
        let suite = r.suite.split(" #").next().unwrap_or(&r.suite).to_string();
        let s = AptSource {
            uri: r.uri.clone(),
            suite,
            components: r.components.clone(),
            signed_by: r
                .options
                .get("signed-by")
                .filter(|v| v.starts_with('/'))
                .cloned(),
            archs: r
                .options
                .get("arch")
                .or_else(|| r.options.get("architectures"))
                .map(|a| {
                    a.split([',', ' '])
                        .filter(|x| !x.is_empty())
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default(),
            trusted: r.options.get("trusted").is_some_and(|v| v == "yes"),
        };
        // Each becomes a word of a sources.list line.
        let bad = std::iter::once(&s.uri)
            .chain([&s.suite])
            .chain(&s.components)
            .chain(&s.archs)
            .find(|w| !valid_word(w))
            .cloned();
        if let Some(bad) = bad {
            return Err(altered(format!(
                "repository {} {} has the invalid word {bad:?}",
                r.uri, r.suite
            )));
        }
        if !out
            .iter()
            .any(|o| o.uri == s.uri && o.suite == s.suite && o.components == s.components)
        {
            out.push(s);
        }
    }
    Ok(out)
}

fn altered(what: String) -> SystemError {
    SystemError::Profile {
        what,
        hint: "the profile may have been altered; capture the system again".into(),
    }
}

/// A Debian package name (policy 5.6.1).
fn valid_package(s: &str) -> bool {
    s.len() >= 2
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b))
}

/// A Debian version (policy 5.6.12): epoch, upstream version, revision.
fn valid_version(s: &str) -> bool {
    s.as_bytes().first().is_some_and(u8::is_ascii_digit)
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".+~:-".contains(&b))
}

/// An architecture name, or none.
fn valid_arch(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// One word of a sources.list line.
fn valid_word(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('-')
        && !s
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '[' | ']' | '#'))
}

/// The repository the base system comes from: the release's own suite with `main`, not a
/// security archive.
fn base_source(sources: &[AptSource], suite: &str) -> Option<usize> {
    sources.iter().position(|s| {
        s.suite == suite
            && (s.components.is_empty() || s.components.iter().any(|c| c == "main"))
            && !s.uri.contains("security")
    })
}

/// The keys the repositories need, with their content when the profile carries it.
fn keys_needed(file: &ProfileFile, sources: &[AptSource]) -> Vec<KeyFile> {
    let p = &file.profile;
    let recorded: BTreeMap<&str, Hash> = p
        .packages
        .repository_keys
        .iter()
        .map(|k| (k.path.as_str(), k.hash))
        .collect();
    let mut wanted: BTreeMap<String, bool> = BTreeMap::new();
    for s in sources {
        if let Some(k) = &s.signed_by {
            wanted.entry(k.clone()).or_insert(false);
        }
    }
    if sources.iter().any(|s| s.signed_by.is_none()) {
        for path in recorded.keys() {
            if GLOBAL_KEYS.iter().any(|g| path.starts_with(g)) {
                wanted.insert((*path).to_string(), true);
            }
        }
    }
    wanted
        .into_iter()
        .filter_map(|(path, global)| {
            let hash = *recorded.get(path.as_str())?;
            let content = file.blobs.get(&hash).map(|b| b.0.clone());
            Some(KeyFile {
                origin: if content.is_some() {
                    KeyOrigin::Profile
                } else {
                    KeyOrigin::Missing
                },
                path,
                hash,
                global,
                content,
            })
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use keel_profile::{HostSettings, OsRelease, Package, Repository, RepositoryKey};

    pub(crate) fn profile() -> ProfileFile {
        let mut f = ProfileFile::default();
        let p = &mut f.profile;
        p.os.release.push(OsRelease {
            id: "debian".into(),
            version_id: Some("12".into()),
            codename: Some("bookworm".into()),
            arch: Some("amd64".into()),
            ..OsRelease::default()
        });
        p.os.host.push(HostSettings {
            hostname: "web-1".into(),
            ..HostSettings::default()
        });
        for (name, arch, version, auto) in [
            ("openssh-server", "amd64", "1:9.2p1-2+deb12u1", false),
            ("libc6", "amd64", "2.36-9", true),
            ("tzdata", "all", "2024a-0+deb12u1", true),
            ("libc6", "i386", "2.36-9", true),
        ] {
            p.packages.packages.push(Package {
                name: name.into(),
                arch: arch.into(),
                version: version.into(),
                manager: "dpkg".into(),
                status: "installed".into(),
                auto,
                ..Package::default()
            });
        }
        for (uri, suite, signed) in [
            ("http://archive.example/debian", "bookworm", None),
            ("http://archive.example/debian", "bookworm-updates", None),
            (
                "http://vendor.example/apt",
                "stable",
                Some("/etc/apt/keyrings/vendor.gpg"),
            ),
        ] {
            let mut options = BTreeMap::new();
            if let Some(k) = signed {
                options.insert("signed-by".to_string(), k.to_string());
            }
            p.packages.repositories.push(Repository {
                kind: "deb".into(),
                uri: uri.into(),
                suite: suite.into(),
                components: vec!["main".into()],
                options,
                file: "/etc/apt/sources.list".into(),
                enabled: true,
            });
        }
        let vendor = f.add_blob(b"vendor key".to_vec());
        f.profile.packages.repository_keys.push(RepositoryKey {
            path: "/etc/apt/keyrings/vendor.gpg".into(),
            hash: vendor,
            size: 10,
        });
        f.profile.packages.repository_keys.push(RepositoryKey {
            path: "/etc/apt/trusted.gpg.d/debian.asc".into(),
            hash: Hash::of(b"debian key"),
            size: 10,
        });
        f
    }

    #[test]
    fn plan_from_profile() {
        let plan = SystemPlan::from_profile(&profile(), &PlanOptions::default()).unwrap();
        assert_eq!(plan.suite, "bookworm");
        assert_eq!(plan.arch, "amd64");
        assert_eq!(plan.mirror, "http://archive.example/debian");
        assert_eq!(plan.foreign_archs, ["i386"]);
        assert_eq!(plan.sources.len(), 3);
        assert_eq!(
            plan.specs(),
            [
                "libc6=2.36-9",
                "libc6:i386=2.36-9",
                "openssh-server=1:9.2p1-2+deb12u1",
                "tzdata=2024a-0+deb12u1"
            ]
        );
        let vendor = plan
            .keys
            .iter()
            .find(|k| k.path.contains("vendor"))
            .unwrap();
        assert_eq!(vendor.origin, KeyOrigin::Profile);
        assert!(!vendor.global);
        let debian = plan
            .keys
            .iter()
            .find(|k| k.path.contains("debian"))
            .unwrap();
        assert_eq!(debian.origin, KeyOrigin::Missing);
        assert!(debian.global);
    }

    #[test]
    fn mirror_replaces_the_main_archive() {
        let opts = PlanOptions {
            mirror: Some("http://snapshot.example/debian".into()),
            ..PlanOptions::default()
        };
        let plan = SystemPlan::from_profile(&profile(), &opts).unwrap();
        assert_eq!(plan.mirror, "http://snapshot.example/debian");
        let uris: Vec<&str> = plan.sources.iter().map(|s| s.uri.as_str()).collect();
        assert_eq!(
            uris,
            [
                "http://snapshot.example/debian",
                "http://snapshot.example/debian",
                "http://vendor.example/apt"
            ]
        );
    }

    #[test]
    fn keys_found_on_the_build_machine_by_hash() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc/apt/trusted.gpg.d")).unwrap();
        std::fs::write(
            dir.path().join("etc/apt/trusted.gpg.d/debian.asc"),
            "debian key",
        )
        .unwrap();
        let mut plan = SystemPlan::from_profile(&profile(), &PlanOptions::default()).unwrap();
        plan.resolve_keys(dir.path(), &[]).unwrap();
        assert!(plan.keys.iter().all(|k| k.content.is_some()));
        std::fs::write(dir.path().join("etc/apt/trusted.gpg.d/debian.asc"), "other").unwrap();
        let mut plan = SystemPlan::from_profile(&profile(), &PlanOptions::default()).unwrap();
        plan.resolve_keys(dir.path(), &[]).unwrap();
        assert!(plan.warnings.iter().any(|w| w.contains("debian.asc")));
    }

    fn available(extra: &[(&str, &str)]) -> BTreeMap<String, Vec<String>> {
        let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (k, v) in [
            ("libc6", "2.36-9"),
            ("libc6:i386", "2.36-9"),
            ("tzdata", "2024a-0+deb12u1"),
        ]
        .iter()
        .chain(extra)
        {
            m.entry((*k).to_string())
                .or_default()
                .push((*v).to_string());
        }
        m
    }

    #[test]
    fn missing_version_is_named_with_the_newer_choice() {
        let mut plan = SystemPlan::from_profile(&profile(), &PlanOptions::default()).unwrap();
        let avail = available(&[
            ("openssh-server", "1:9.2p1-2+deb12u5"),
            ("openssh-server", "1:9.2p1-2+deb12u3"),
        ]);
        let Err(SystemError::MissingVersions(m)) = plan.check_versions(&avail, false) else {
            panic!("expected missing versions");
        };
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].name, "openssh-server");
        assert_eq!(m[0].version, "1:9.2p1-2+deb12u1");
        assert_eq!(m[0].newer.as_deref(), Some("1:9.2p1-2+deb12u5"));
        assert_eq!(m[0].available, ["1:9.2p1-2+deb12u5", "1:9.2p1-2+deb12u3"]);

        plan.check_versions(&avail, true).unwrap();
        let pin = plan
            .packages
            .iter()
            .find(|p| p.name == "openssh-server")
            .unwrap();
        assert_eq!(pin.version, "1:9.2p1-2+deb12u5");
        assert_eq!(pin.recorded, "1:9.2p1-2+deb12u1");
        assert!(plan
            .warnings
            .iter()
            .any(|w| w.contains("installing 1:9.2p1-2+deb12u5")));
    }

    #[test]
    fn an_older_version_is_never_taken() {
        let mut plan = SystemPlan::from_profile(&profile(), &PlanOptions::default()).unwrap();
        let avail = available(&[("openssh-server", "1:8.4p1-5")]);
        let Err(SystemError::MissingVersions(m)) = plan.check_versions(&avail, true) else {
            panic!("expected missing versions");
        };
        assert_eq!(m[0].newer, None);
        assert_eq!(m[0].available, ["1:8.4p1-5"]);
    }

    #[test]
    fn names_that_are_not_debian_packages_are_refused() {
        for (name, version) in [
            ("-oAPT::Get::Foo=1", "1.0"),
            ("ok-name", "1.0 -o x"),
            ("Upper", "1.0"),
        ] {
            let mut f = profile();
            f.profile.packages.packages[0].name = name.into();
            f.profile.packages.packages[0].version = version.into();
            let e = SystemPlan::from_profile(&f, &PlanOptions::default())
                .unwrap_err()
                .to_string();
            assert!(e.contains("altered"), "{e}");
        }
        let mut f = profile();
        f.profile.packages.repositories[0].suite = "bookworm main\ndeb http://x".into();
        assert!(SystemPlan::from_profile(&f, &PlanOptions::default()).is_err());
    }

    #[test]
    fn rpm_profiles_are_refused_with_a_reason() {
        let mut f = profile();
        for p in &mut f.profile.packages.packages {
            p.manager = "rpm".into();
        }
        let e = SystemPlan::from_profile(&f, &PlanOptions::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("no dpkg packages") && e.contains("hint:"), "{e}");
    }
}
