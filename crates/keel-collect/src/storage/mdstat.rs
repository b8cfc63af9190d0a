//! `/proc/mdstat`: Linux software RAID arrays.

/// One array as `/proc/mdstat` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MdStat {
    /// Kernel name (`md0`).
    pub name: String,
    /// `active` or `inactive`, with `(read-only)`/`(auto-read-only)` and `degraded` when so.
    pub state: String,
    /// RAID level (`raid1`); unknown while the array is inactive.
    pub level: Option<String>,
    /// Member devices ordered by role, with their markers.
    pub members: Vec<MdMember>,
    /// Size in 1 KiB blocks.
    pub blocks: Option<u64>,
    /// Superblock format (`1.2`, `external:imsm`); absent for 0.90 arrays.
    pub metadata: Option<String>,
}

/// A member device of an array.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MdMember {
    /// Kernel name (`sda1`).
    pub name: String,
    /// Role number in the array.
    pub role: u32,
    /// `(F)`: failed.
    pub faulty: bool,
    /// `(S)`: spare.
    pub spare: bool,
}

impl MdMember {
    /// How the member is recorded: its device path, marked when it is not an active member.
    pub fn describe(&self) -> String {
        let mut s = format!("/dev/{}", self.name.replace('!', "/"));
        if self.faulty {
            s.push_str(" (faulty)");
        } else if self.spare {
            s.push_str(" (spare)");
        }
        s
    }
}

/// Parses `/proc/mdstat`.
pub(crate) fn parse_mdstat(text: &str) -> Vec<MdStat> {
    let mut out: Vec<MdStat> = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let Some((name, rest)) = line.split_once(" : ") else {
            continue;
        };
        let name = name.trim();
        if !name.starts_with("md") {
            continue;
        }
        let mut words = rest.split_whitespace().peekable();
        let mut state = words.next().unwrap_or("").to_string();
        while let Some(flag) = words.next_if(|w| w.starts_with('(')) {
            state.push(' ');
            state.push_str(flag);
        }
        let level = words.next_if(|w| !w.contains('[')).map(str::to_string);
        let mut members: Vec<MdMember> = words.filter_map(parse_member).collect();
        members.sort_by_key(|m| m.role);

        let mut blocks = None;
        let mut metadata = None;
        if let Some(detail) = lines.next_if(|l| l.starts_with(char::is_whitespace)) {
            let w: Vec<&str> = detail.split_whitespace().collect();
            if w.get(1) == Some(&"blocks") {
                blocks = w[0].parse().ok();
            }
            if let Some(i) = w.iter().position(|x| *x == "super") {
                metadata = w.get(i + 1).map(|s| (*s).to_string());
            }
            // `[2/1]`: configured and working members.
            if let Some((want, have)) = w.iter().rev().find_map(|x| {
                let (a, b) = x.strip_prefix('[')?.strip_suffix(']')?.split_once('/')?;
                Some((a.parse::<u32>().ok()?, b.parse::<u32>().ok()?))
            }) {
                if have < want {
                    state.push_str(" degraded");
                }
            }
        }
        out.push(MdStat {
            name: name.to_string(),
            state,
            level,
            members,
            blocks,
            metadata,
        });
    }
    out
}

/// `sda1[0]`, `sde1[3](S)`, `sdf1[2](F)`.
fn parse_member(word: &str) -> Option<MdMember> {
    let (name, rest) = word.split_once('[')?;
    let (role, marks) = rest.split_once(']')?;
    Some(MdMember {
        name: name.to_string(),
        role: role.parse().ok()?,
        faulty: marks.contains("(F)"),
        spare: marks.contains("(S)"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> Vec<MdStat> {
        let p = format!(
            "{}/tests/fixtures/storage/mdstat.txt",
            env!("CARGO_MANIFEST_DIR")
        );
        parse_mdstat(&std::fs::read_to_string(p).unwrap())
    }

    #[test]
    fn raid1() {
        let md = fixture();
        let names: Vec<&str> = md.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["md1", "md0", "md2", "md3", "md127"]);
        let md0 = &md[1];
        assert_eq!(md0.state, "active");
        assert_eq!(md0.level.as_deref(), Some("raid1"));
        assert_eq!(md0.blocks, Some(524_224));
        assert_eq!(md0.metadata.as_deref(), Some("1.0"));
        let devs: Vec<String> = md0.members.iter().map(MdMember::describe).collect();
        assert_eq!(devs, ["/dev/sda1", "/dev/sdb1"], "ordered by role");
        assert_eq!(md[0].metadata.as_deref(), Some("1.2"));
    }

    #[test]
    fn degraded_spares_and_flags() {
        let md = fixture();
        let md2 = &md[2];
        assert_eq!(md2.level.as_deref(), Some("raid5"));
        assert_eq!(md2.state, "active degraded");
        let devs: Vec<String> = md2.members.iter().map(MdMember::describe).collect();
        assert_eq!(
            devs,
            [
                "/dev/sdc1",
                "/dev/sdd1",
                "/dev/sdf1 (faulty)",
                "/dev/sde1 (spare)"
            ]
        );
        let md3 = &md[3];
        assert_eq!(md3.state, "active (auto-read-only)");
        assert_eq!(md3.metadata.as_deref(), Some("external:/md127/0"));
        let md127 = &md[4];
        assert_eq!(md127.state, "inactive");
        assert_eq!(md127.level, None);
        assert_eq!(md127.members.len(), 1);
        assert!(md127.members[0].spare);
        assert_eq!(md127.blocks, Some(1_048_576));
    }

    #[test]
    fn empty() {
        assert!(parse_mdstat("Personalities : \nunused devices: <none>\n").is_empty());
    }
}
