//! The Debian mirror to build from, read from the build machine's apt sources.
//!
//! No mirror is built in: the machine that builds a rescue environment already names the
//! archive it trusts in `/etc/apt/sources.list` or `/etc/apt/sources.list.d/`, in the one-line
//! format (`.list`) or the deb822 format (`.sources`).

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};

/// One `deb` source from an apt sources file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AptSource {
    /// The archive URI (`http://…/debian`).
    pub uri: String,
    /// The suites it names (`bookworm`, `bookworm-updates`, …).
    pub suites: Vec<String>,
    /// The components it names (`main`, `contrib`, …).
    pub components: Vec<String>,
}

impl AptSource {
    /// Whether this looks like the main archive: a network or file URI, the `main` component,
    /// and not the security archive (whose layout differs and which carries no installer
    /// essentials).
    pub fn is_main_archive(&self) -> bool {
        let scheme_ok = ["http://", "https://", "file:"]
            .iter()
            .any(|s| self.uri.starts_with(s));
        let security =
            self.uri.contains("security") || self.suites.iter().any(|s| s.contains("security"));
        let main = self.components.is_empty() || self.components.iter().any(|c| c == "main");
        scheme_ok && !security && main
    }
}

/// Parses the deb822 format (`*.sources`): stanzas separated by blank lines with `Types`,
/// `URIs`, `Suites`, `Components` and `Enabled` fields. Only enabled `deb` stanzas are kept.
pub fn parse_deb822(text: &str) -> Vec<AptSource> {
    let mut out = Vec::new();
    let mut stanza: Vec<&str> = Vec::new();
    for line in text.lines().chain(std::iter::once("")) {
        if line.trim().is_empty() {
            if !stanza.is_empty() {
                out.extend(deb822_stanza(&stanza));
                stanza.clear();
            }
            continue;
        }
        if line.trim_start().starts_with('#') {
            continue;
        }
        stanza.push(line);
    }
    out
}

fn deb822_stanza(lines: &[&str]) -> Vec<AptSource> {
    // Continuation lines (starting with white space) belong to the field before them.
    let mut fields: Vec<(String, String)> = Vec::new();
    for line in lines {
        if line.starts_with([' ', '\t']) {
            if let Some(last) = fields.last_mut() {
                last.1.push(' ');
                last.1.push_str(line.trim());
            }
        } else if let Some((k, v)) = line.split_once(':') {
            fields.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let field = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let words = |name: &str| -> Vec<String> {
        field(name)
            .unwrap_or("")
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    let enabled = field("enabled").is_none_or(|e| !e.eq_ignore_ascii_case("no"));
    if !enabled || !words("types").iter().any(|t| t == "deb") {
        return Vec::new();
    }
    let suites = words("suites");
    let components = words("components");
    words("uris")
        .into_iter()
        .map(|uri| AptSource {
            uri,
            suites: suites.clone(),
            components: components.clone(),
        })
        .collect()
}

/// Parses the one-line format (`sources.list`, `*.list`): `deb [options] URI SUITE COMPONENT…`.
pub fn parse_one_line(text: &str) -> Vec<AptSource> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("");
        let mut words: Vec<&str> = line.split_whitespace().collect();
        if words.first() != Some(&"deb") {
            continue;
        }
        words.remove(0);
        if words.first().is_some_and(|w| w.starts_with('[')) {
            let close = words.iter().position(|w| w.ends_with(']')).unwrap_or(0);
            words.drain(..=close);
        }
        if let [uri, suite, components @ ..] = &words[..] {
            out.push(AptSource {
                uri: (*uri).to_string(),
                suites: vec![(*suite).to_string()],
                components: components.iter().map(|c| (*c).to_string()).collect(),
            });
        }
    }
    out
}

/// Every `deb` source configured under `root` (`/` for the build machine), in apt's order:
/// `etc/apt/sources.list`, then the files of `etc/apt/sources.list.d` by name.
pub fn apt_sources(root: &Path) -> Vec<AptSource> {
    let mut out =
        parse_one_line(&fs::read_to_string(root.join("etc/apt/sources.list")).unwrap_or_default());
    let mut files: Vec<PathBuf> = fs::read_dir(root.join("etc/apt/sources.list.d"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    for path in files {
        let text = fs::read_to_string(&path).unwrap_or_default();
        match path.extension().and_then(OsStr::to_str) {
            Some("sources") => out.extend(parse_deb822(&text)),
            Some("list") => out.extend(parse_one_line(&text)),
            _ => {}
        }
    }
    out
}

/// The first main-archive URI configured under `root`, or `None`.
pub fn host_mirror(root: &Path) -> Option<String> {
    apt_sources(root)
        .into_iter()
        .find(AptSource::is_main_archive)
        .map(|s| s.uri)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deb822_skips_security_disabled_and_source_stanzas() {
        let text = "\
# comment
Types: deb-src
URIs: http://src.example/debian
Suites: bookworm
Components: main

Types: deb
URIs: http://security.example/debian-security
Suites: bookworm-security
Components: main

Types: deb
URIs: http://off.example/debian
Suites: bookworm
Components: main
Enabled: no

Types: deb deb-src
URIs: http://archive.example/debian
 http://second.example/debian
Suites: bookworm bookworm-updates
Components: main contrib
";
        let all = parse_deb822(text);
        assert_eq!(all.len(), 3, "{all:?}");
        let main: Vec<_> = all.iter().filter(|s| s.is_main_archive()).collect();
        assert_eq!(main[0].uri, "http://archive.example/debian");
        assert_eq!(main[1].uri, "http://second.example/debian");
        assert_eq!(main[0].suites, ["bookworm", "bookworm-updates"]);
    }

    #[test]
    fn one_line_with_options_and_comments() {
        let text = "\
deb-src http://src.example/debian bookworm main
deb [arch=amd64 signed-by=/k.gpg] http://archive.example/debian bookworm main # trailing
# deb http://commented.example/debian bookworm main
deb cdrom:[Debian]/ bookworm main
deb http://archive.example/debian bookworm contrib
";
        let all = parse_one_line(text);
        assert_eq!(all.len(), 3);
        assert_eq!(all[0].uri, "http://archive.example/debian");
        assert_eq!(all[0].components, ["main"]);
        assert!(!all[1].is_main_archive(), "cdrom is not a mirror");
        assert!(!all[2].is_main_archive(), "contrib only");
    }

    #[test]
    fn host_mirror_reads_both_formats_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("etc/apt/sources.list.d");
        fs::create_dir_all(&d).unwrap();
        assert_eq!(host_mirror(dir.path()), None);
        fs::write(
            d.join("b.sources"),
            "Types: deb\nURIs: http://b.example/debian\nSuites: bookworm\nComponents: main\n",
        )
        .unwrap();
        fs::write(
            d.join("a.list.disabled"),
            "deb http://x.example/ bookworm main\n",
        )
        .unwrap();
        assert_eq!(
            host_mirror(dir.path()).as_deref(),
            Some("http://b.example/debian")
        );
        fs::write(
            dir.path().join("etc/apt/sources.list"),
            "deb http://a.example/debian bookworm main\n",
        )
        .unwrap();
        assert_eq!(
            host_mirror(dir.path()).as_deref(),
            Some("http://a.example/debian")
        );
    }
}
