//! The account files (`/etc/passwd`, `/etc/group`, `/etc/shadow`, `/etc/gshadow`) as lines of
//! colon-separated fields, and the ownership remap that gives a tree the profile's numeric
//! ids.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use crate::error::SystemError;

/// A colon-separated account file, line by line, keeping lines it does not understand.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Table {
    lines: Vec<Vec<String>>,
}

impl Table {
    /// Parses the file's text.
    pub(crate) fn parse(text: &str) -> Table {
        Table {
            lines: text
                .lines()
                .filter(|l| !l.is_empty())
                .map(|l| l.split(':').map(String::from).collect())
                .collect(),
        }
    }

    /// Reads `path`; a missing file is an empty table.
    pub(crate) fn read(path: &Path) -> Result<Table, SystemError> {
        match fs::read(path) {
            Ok(b) => Ok(Table::parse(&String::from_utf8_lossy(&b))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Table::default()),
            Err(e) => Err(SystemError::io("cannot read", path, e)),
        }
    }

    /// The text of the file.
    pub(crate) fn render(&self) -> String {
        let mut s = String::new();
        for l in &self.lines {
            s.push_str(&l.join(":"));
            s.push('\n');
        }
        s
    }

    /// The fields of `name`'s line.
    pub(crate) fn get(&self, name: &str) -> Option<&[String]> {
        self.lines
            .iter()
            .find(|l| l.first().is_some_and(|n| n == name))
            .map(Vec::as_slice)
    }

    /// Replaces `name`'s line, or appends it.
    pub(crate) fn set(&mut self, fields: Vec<String>) {
        match self.lines.iter_mut().find(|l| l.first() == fields.first()) {
            Some(l) => *l = fields,
            None => self.lines.push(fields),
        }
    }

    /// Adds `fields` unless a line for the name is there.
    pub(crate) fn add(&mut self, fields: Vec<String>) -> bool {
        if self.get(&fields[0]).is_some() {
            return false;
        }
        self.lines.push(fields);
        true
    }

    /// Name → numeric id (field `index`).
    pub(crate) fn ids(&self, index: usize) -> BTreeMap<String, u32> {
        self.lines
            .iter()
            .filter_map(|l| Some((l.first()?.clone(), l.get(index)?.parse().ok()?)))
            .collect()
    }
}

/// Old id → new id, for users and for groups.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Remap {
    pub uids: BTreeMap<u32, u32>,
    pub gids: BTreeMap<u32, u32>,
}

impl Remap {
    /// The ids a tree (`have`, name → id) must change to match `want`.
    pub(crate) fn between(
        have: &BTreeMap<String, u32>,
        want: &BTreeMap<String, u32>,
    ) -> BTreeMap<u32, u32> {
        have.iter()
            .filter_map(|(name, old)| {
                let new = want.get(name)?;
                (new != old).then_some((*old, *new))
            })
            .collect()
    }

    /// Nothing to change.
    pub(crate) fn is_empty(&self) -> bool {
        self.uids.is_empty() && self.gids.is_empty()
    }

    /// Gives every file under `root` on the root's own filesystem its new owner, all ids at
    /// once (so two ids that swap do not collide). Returns how many entries changed.
    pub(crate) fn apply(&self, root: &Path) -> Result<usize, SystemError> {
        let dev = fs::symlink_metadata(root)
            .map_err(|e| SystemError::io("cannot read", root, e))?
            .dev();
        let mut changed = 0;
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            let entries =
                fs::read_dir(&dir).map_err(|e| SystemError::io("cannot read", &dir, e))?;
            for entry in entries {
                let entry = entry.map_err(|e| SystemError::io("cannot read", &dir, e))?;
                let path = entry.path();
                let meta = fs::symlink_metadata(&path)
                    .map_err(|e| SystemError::io("cannot read", &path, e))?;
                if meta.dev() != dev {
                    continue; // another filesystem mounted inside the tree (/proc, /dev)
                }
                let uid = self.uids.get(&meta.uid()).copied();
                let gid = self.gids.get(&meta.gid()).copied();
                if uid.is_some() || gid.is_some() {
                    std::os::unix::fs::lchown(&path, uid, gid)
                        .map_err(|e| SystemError::io("cannot change the owner of", &path, e))?;
                    // chown clears set-id bits: put them back.
                    if meta.is_file() && meta.mode() & 0o6000 != 0 {
                        fs::set_permissions(
                            &path,
                            fs::Permissions::from_mode(meta.mode() & 0o7777),
                        )
                        .map_err(|e| SystemError::io("cannot set the mode of", &path, e))?;
                    }
                    changed += 1;
                }
                if meta.is_dir() {
                    stack.push(path);
                }
            }
        }
        Ok(changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_round_trip_and_edit() {
        let mut t = Table::parse(
            "root:x:0:0:root:/root:/bin/bash\nsshd:x:101:65534::/run/sshd:/usr/sbin/nologin\n",
        );
        assert_eq!(t.ids(2)["sshd"], 101);
        t.set(
            "sshd:x:105:65534::/run/sshd:/usr/sbin/nologin"
                .split(':')
                .map(String::from)
                .collect(),
        );
        assert!(!t.add(vec!["root".into(), "x".into()]));
        assert!(t.add(
            "deploy:x:1001:1001::/home/deploy:/bin/bash"
                .split(':')
                .map(String::from)
                .collect()
        ));
        assert_eq!(
            t.render(),
            "root:x:0:0:root:/root:/bin/bash\nsshd:x:105:65534::/run/sshd:/usr/sbin/nologin\ndeploy:x:1001:1001::/home/deploy:/bin/bash\n"
        );
    }

    #[test]
    fn remap_pairs() {
        let have: BTreeMap<String, u32> =
            [("a".into(), 100), ("b".into(), 101), ("c".into(), 5)].into();
        let want: BTreeMap<String, u32> =
            [("a".into(), 101), ("b".into(), 100), ("c".into(), 5)].into();
        assert_eq!(
            Remap::between(&have, &want),
            [(100, 101), (101, 100)].into()
        );
    }
}
