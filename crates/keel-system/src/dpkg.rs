//! The installed packages of a tree, read from its dpkg database.

use std::path::Path;

use crate::error::SystemError;

/// An installed package.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Installed {
    pub name: String,
    pub arch: String,
    pub version: String,
    pub essential: bool,
}

/// The packages dpkg lists as installed under `root`.
pub(crate) fn installed(root: &Path) -> Result<Vec<Installed>, SystemError> {
    let path = root.join("var/lib/dpkg/status");
    match std::fs::read(&path) {
        Ok(b) => Ok(parse_status(&String::from_utf8_lossy(&b))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(SystemError::io("cannot read", &path, e)),
    }
}

/// Parses `/var/lib/dpkg/status`, keeping installed packages.
pub(crate) fn parse_status(text: &str) -> Vec<Installed> {
    let mut out = Vec::new();
    for para in text.split("\n\n") {
        let mut p = Installed {
            name: String::new(),
            arch: String::new(),
            version: String::new(),
            essential: false,
        };
        let mut state_ok = false;
        for line in para.lines() {
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            let v = v.trim();
            match k {
                "Package" => p.name = v.to_string(),
                "Architecture" => p.arch = v.to_string(),
                "Version" => p.version = v.to_string(),
                "Essential" => p.essential = v == "yes",
                "Status" => state_ok = v.split_whitespace().nth(2) == Some("installed"),
                _ => {}
            }
        }
        if state_ok && !p.name.is_empty() {
            out.push(p);
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn status() {
        let s = "Package: dpkg\nEssential: yes\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1.21.22\n\nPackage: gone\nStatus: deinstall ok config-files\nArchitecture: amd64\nVersion: 1\n\nPackage: tzdata\nStatus: hold ok installed\nArchitecture: all\nVersion: 2024a\n";
        let p = super::parse_status(s);
        assert_eq!(p.len(), 2);
        assert!(p[0].essential && p[0].name == "dpkg");
        assert_eq!((p[1].name.as_str(), p[1].arch.as_str()), ("tzdata", "all"));
    }
}
