//! The profile's storage as the planner sees it: which disks hold what, what the system mounts
//! from them, and how much space each partition or volume needs at the least.

use std::collections::{BTreeSet, HashMap};

use keel_profile::{Filesystem, Profile, Storage};

use crate::size::{align_up, human, mul_div, GIB, MIB};
use crate::target::DiskKind;

/// Room left above the used bytes of a filesystem: used × 1.2 plus this.
pub(crate) const FS_HEADROOM: u64 = 256 * MIB;
/// Swap holds no data: it may shrink to this.
pub(crate) const SWAP_MIN: u64 = 256 * MIB;
/// Where LVM puts the first extent of a physical volume (its metadata area before it).
pub(crate) const PV_META: u64 = MIB;
/// Partitions and logical volumes smaller than this keep their size when there is room for
/// them; only a disk or volume group too small for that shrinks them.
pub(crate) const SMALL: u64 = GIB;
/// The smallest filesystem mkfs.xfs makes (xfsprogs 5.19 and later refuse anything less).
pub(crate) const XFS_MIN: u64 = 300 * MIB;
/// Extent size assumed when the profile does not record one (LVM's default).
pub(crate) const DEFAULT_EXTENT: u64 = 4 * MIB;

const BIOS_BOOT: &str = "21686148-6449-6e6f-744e-656564454649";
const ESP: &str = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b";

/// Filesystem types that are containers, not filesystems.
const CONTAINERS: &[&str] = &["linux_raid_member", "LVM2_member", "crypto_LUKS"];

/// Local filesystems a mount may describe when the profile has no signature for its device.
const LOCAL_FS: &[&str] = &["ext2", "ext3", "ext4", "xfs", "btrfs", "vfat", "f2fs"];

/// LV segment types the planner recreates.
const SUPPORTED_SEGTYPES: &[&str] = &["", "linear", "striped"];

/// What a device holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Content {
    /// A filesystem (index into `filesystems`).
    Fs(usize),
    /// Swap (index into `filesystems`).
    Swap(usize),
    /// A member of an array (index into `md_arrays`).
    Md(usize),
    /// An LVM physical volume (index into `lvm_pvs`).
    Pv(usize),
    /// A LUKS volume (index into `luks`).
    Luks(usize),
    /// An MBR extended partition.
    Extended,
    /// Nothing the profile knows of.
    Unknown,
}

/// Partitions whose type says what they are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Special {
    BiosBoot,
    Esp,
    None,
}

/// A partition of a source disk.
#[derive(Debug, Clone)]
pub(crate) struct SrcPart {
    /// Index into `storage.partitions`.
    pub idx: usize,
    /// Device path on the source (`/dev/sda2`).
    pub path: String,
    pub content: Content,
    pub special: Special,
    /// A logical partition inside an MBR extended partition.
    pub logical: bool,
}

/// A source disk.
#[derive(Debug, Clone)]
pub(crate) struct SrcDisk {
    /// Index into `storage.disks`.
    pub idx: usize,
    /// Device path on the source (`/dev/sda`).
    pub path: String,
    pub kind: DiskKind,
    /// `Some(true)` for GPT, `Some(false)` for MBR, `None` when used without a table.
    pub gpt: Option<bool>,
    /// Partitions in the order they lie on the disk (logical ones after their extended one).
    pub parts: Vec<SrcPart>,
    /// What the whole disk holds when it has no partitions.
    pub whole: Content,
}

/// A filesystem the system mounts, or a swap area it uses, resolved to a source device.
#[derive(Debug, Clone)]
pub(crate) struct MountUse {
    pub spec: String,
    pub device: Option<String>,
    pub mountpoint: String,
    pub fstype: String,
    pub options: String,
    pub swap: bool,
}

/// What a partition or volume needs at the least, and why.
#[derive(Debug, Clone)]
pub(crate) struct Need {
    pub bytes: u64,
    pub why: String,
}

/// The analysed storage of a profile.
#[derive(Debug)]
pub(crate) struct Source<'a> {
    pub st: &'a Storage,
    /// The profile describes the running system it was captured on.
    pub live: bool,
    pub disks: Vec<SrcDisk>,
    /// Mounts and swap areas, in fstab order.
    pub mounts: Vec<MountUse>,
    /// Device paths the system's mounts and swap depend on, down to the disks.
    pub used: BTreeSet<String>,
    /// No mount or swap is recorded at all, so every disk counts as used.
    pub nothing_recorded: bool,
    /// The mapping name of each LUKS volume (by index).
    pub crypt_names: Vec<String>,
    /// The profile's filesystems, plus those only a mount describes (when blkid could not
    /// probe the device, the mount still tells its type).
    pub filesystems: Vec<Filesystem>,
    fs_by_dev: HashMap<String, usize>,
    md_by_member: HashMap<String, usize>,
    pv_by_dev: HashMap<String, usize>,
    luks_by_dev: HashMap<String, usize>,
    part_by_dev: HashMap<String, usize>,
    mountpoints: HashMap<String, Vec<String>>,
    usage: HashMap<String, u64>,
}

impl<'a> Source<'a> {
    pub fn new(profile: &'a Profile) -> Self {
        let st = &profile.storage;
        let mut s = Source {
            st,
            live: profile.meta.live,
            disks: Vec::new(),
            mounts: Vec::new(),
            used: BTreeSet::new(),
            nothing_recorded: false,
            crypt_names: Vec::new(),
            filesystems: st.filesystems.clone(),
            fs_by_dev: HashMap::new(),
            md_by_member: HashMap::new(),
            pv_by_dev: HashMap::new(),
            luks_by_dev: HashMap::new(),
            part_by_dev: HashMap::new(),
            mountpoints: HashMap::new(),
            usage: st
                .usage
                .iter()
                .map(|u| (u.mountpoint.clone(), u.used_bytes))
                .collect(),
        };
        for m in &st.mounts {
            let known = m.uuid.as_deref().is_some_and(|u| s.fs_by_uuid(u).is_some())
                || s.filesystems
                    .iter()
                    .any(|f| s.norm(&f.device) == s.norm(&m.source));
            if !known && m.source.starts_with("/dev/") && LOCAL_FS.contains(&m.fstype.as_str()) {
                s.filesystems.push(Filesystem {
                    uuid: m.uuid.clone(),
                    device: m.source.clone(),
                    fstype: m.fstype.clone(),
                    label: None,
                    size_bytes: None,
                });
            }
        }
        for (i, f) in s.filesystems.iter().enumerate() {
            s.fs_by_dev.entry(s.norm(&f.device)).or_insert(i);
        }
        for (i, m) in st.md_arrays.iter().enumerate() {
            for d in &m.devices {
                s.md_by_member.insert(member_path(d), i);
            }
        }
        for (i, p) in st.lvm_pvs.iter().enumerate() {
            s.pv_by_dev.insert(s.norm(&p.device), i);
        }
        for (i, l) in st.luks.iter().enumerate() {
            s.luks_by_dev.insert(s.norm(&l.device), i);
        }
        for (i, p) in st.partitions.iter().enumerate() {
            s.part_by_dev.insert(dev_path(&p.name), i);
        }
        s.crypt_names = (0..st.luks.len()).map(|i| s.crypt_name(i)).collect();
        s.mounts = s.mount_uses();
        for m in &s.mounts {
            if let (Some(d), false) = (&m.device, m.swap) {
                s.mountpoints
                    .entry(d.clone())
                    .or_default()
                    .push(m.mountpoint.clone());
            }
        }
        // Live mounts name their filesystem by UUID or source; they add mountpoints fstab
        // does not list (and carry the usage figures).
        for m in &st.mounts {
            let dev = m
                .uuid
                .as_deref()
                .and_then(|u| s.fs_by_uuid(u))
                .or_else(|| s.fs_by_dev.get(&s.norm(&m.source)).copied())
                .map(|i| s.norm(&s.filesystems[i].device));
            if let Some(d) = dev {
                let list = s.mountpoints.entry(d).or_default();
                if !list.contains(&m.mountpoint) {
                    list.push(m.mountpoint.clone());
                }
            }
        }
        s.used = s.used_devices();
        s.disks = (0..st.disks.len()).map(|i| s.disk(i)).collect();
        s
    }

    fn disk(&self, idx: usize) -> SrcDisk {
        let d = &self.st.disks[idx];
        let mut parts: Vec<(usize, &keel_profile::Partition)> = self
            .st
            .partitions
            .iter()
            .enumerate()
            .filter(|(_, p)| p.disk == d.id)
            .collect();
        let gpt = match d.pttype.as_deref() {
            Some("gpt") => Some(true),
            Some("dos" | "msdos" | "mbr") => Some(false),
            _ if parts.is_empty() => None,
            // A table sfdisk could not name: GPT types are GUIDs.
            _ => Some(parts.iter().any(|(_, p)| p.part_type.contains('-'))),
        };
        parts.sort_by_key(|(_, p)| (p.start, p.number));
        let dos = gpt == Some(false);
        let make = |(i, p): (usize, &keel_profile::Partition)| {
            let path = dev_path(&p.name);
            let t = p.part_type.to_ascii_lowercase();
            let extended = dos && matches!(t.as_str(), "0x05" | "0x0f" | "0x85" | "5" | "f" | "85");
            let special = if t == BIOS_BOOT {
                Special::BiosBoot
            } else if t == ESP || t == "0xef" || t == "ef" {
                Special::Esp
            } else {
                Special::None
            };
            SrcPart {
                idx: i,
                content: if extended {
                    Content::Extended
                } else {
                    self.content(&path)
                },
                path,
                special,
                logical: dos && p.number >= 5,
            }
        };
        let (logical, primary): (Vec<_>, Vec<_>) =
            parts.into_iter().partition(|(_, p)| dos && p.number >= 5);
        let mut ordered = Vec::new();
        for p in primary {
            let part = make(p);
            let ext = part.content == Content::Extended;
            ordered.push(part);
            if ext {
                ordered.extend(logical.iter().copied().map(make));
            }
        }
        if !ordered.iter().any(|p| p.content == Content::Extended) {
            // Logical partitions without their extended one: keep them anyway, last.
            ordered.extend(logical.into_iter().map(make));
        }
        let path = dev_path(&d.name);
        let whole = if ordered.is_empty() {
            self.content(&path)
        } else {
            Content::Unknown
        };
        SrcDisk {
            idx,
            kind: DiskKind::from_transport(d.transport.as_deref()),
            path,
            gpt,
            parts: ordered,
            whole,
        }
    }

    // ------------------------------------------------------------------ names

    /// A device path in its canonical form: LVs as `/dev/mapper/VG-LV`, numbered arrays as
    /// `/dev/mdN`.
    pub fn norm(&self, path: &str) -> String {
        let p = path.trim();
        if let Some(rest) = p.strip_prefix("/dev/md/") {
            if rest.chars().all(|c| c.is_ascii_digit()) {
                return format!("/dev/md{rest}");
            }
        }
        if let Some(rest) = p.strip_prefix("/dev/") {
            if let Some((vg, lv)) = rest.split_once('/') {
                if self.st.lvm_vgs.iter().any(|v| v.name == vg) {
                    return lv_path(vg, lv);
                }
            }
        }
        if let Some(name) = p.strip_prefix("/dev/disk/by-id/dm-name-") {
            return format!("/dev/mapper/{name}");
        }
        p.to_string()
    }

    fn fs_by_uuid(&self, uuid: &str) -> Option<usize> {
        self.filesystems.iter().position(|f| {
            f.uuid
                .as_deref()
                .is_some_and(|u| u.eq_ignore_ascii_case(uuid))
        })
    }

    /// The source device an fstab or crypttab spec names.
    pub fn resolve(&self, spec: &str) -> Option<String> {
        let tagged = |tag: &str| {
            spec.strip_prefix(&format!("{tag}=")).or_else(|| {
                let dir = format!("/dev/disk/by-{}/", tag.to_ascii_lowercase());
                spec.strip_prefix(dir.as_str())
            })
        };
        let st = self.st;
        if let Some(u) = tagged("UUID") {
            let u = u.trim_matches('"');
            if let Some(i) = self.fs_by_uuid(u) {
                return Some(self.norm(&self.filesystems[i].device));
            }
            return st
                .luks
                .iter()
                .find(|l| l.uuid.eq_ignore_ascii_case(u))
                .map(|l| self.norm(&l.device));
        }
        if let Some(l) = tagged("LABEL") {
            let l = l.trim_matches('"');
            return self
                .filesystems
                .iter()
                .find(|f| f.label.as_deref() == Some(l))
                .map(|f| self.norm(&f.device));
        }
        if let Some(u) = tagged("PARTUUID") {
            let u = u.trim_matches('"');
            return st
                .partitions
                .iter()
                .find(|p| {
                    p.partuuid
                        .as_deref()
                        .is_some_and(|x| x.eq_ignore_ascii_case(u))
                })
                .map(|p| dev_path(&p.name));
        }
        if let Some(l) = tagged("PARTLABEL") {
            let l = l.trim_matches('"');
            return st
                .partitions
                .iter()
                .find(|p| p.partlabel.as_deref() == Some(l))
                .map(|p| dev_path(&p.name));
        }
        spec.starts_with("/dev/").then(|| self.norm(spec))
    }

    /// The mapping name of a LUKS volume: crypttab's, else systemd's default `luks-UUID`.
    fn crypt_name(&self, l: usize) -> String {
        let luks = &self.st.luks[l];
        let dev = self.norm(&luks.device);
        self.st
            .crypttab
            .iter()
            .find(|c| self.resolve(&c.device).as_deref() == Some(dev.as_str()))
            .map_or_else(|| format!("luks-{}", luks.uuid), |c| c.name.clone())
    }

    /// The device path of an opened LUKS volume.
    pub fn crypt_path(&self, l: usize) -> String {
        format!("/dev/mapper/{}", self.crypt_names[l])
    }

    // ------------------------------------------------------------------ use

    /// fstab's filesystems and swap (or, without an fstab, the recorded mounts), resolved.
    fn mount_uses(&self) -> Vec<MountUse> {
        let st = self.st;
        if st.fstab.is_empty() {
            return st
                .mounts
                .iter()
                .filter_map(|m| {
                    let dev = m
                        .uuid
                        .as_deref()
                        .and_then(|u| self.fs_by_uuid(u))
                        .map(|i| self.norm(&self.filesystems[i].device))
                        .or_else(|| m.source.starts_with("/dev/").then(|| self.norm(&m.source)))?;
                    Some(MountUse {
                        spec: m.source.clone(),
                        device: Some(dev),
                        mountpoint: m.mountpoint.clone(),
                        fstype: m.fstype.clone(),
                        options: m.options.clone(),
                        swap: false,
                    })
                })
                .chain(
                    st.swaps
                        .iter()
                        .filter(|s| s.kind == "partition")
                        .map(|s| MountUse {
                            spec: s.device.clone(),
                            device: Some(self.norm(&s.device)),
                            mountpoint: "none".into(),
                            fstype: "swap".into(),
                            options: "sw".into(),
                            swap: true,
                        }),
                )
                .collect();
        }
        st.fstab
            .iter()
            .map(|f| MountUse {
                spec: f.spec.clone(),
                device: self.resolve(&f.spec),
                mountpoint: f.mountpoint.clone(),
                fstype: f.fstype.clone(),
                options: f.options.clone(),
                swap: f.fstype == "swap",
            })
            .collect()
    }

    /// Every device the mounts and swap areas depend on, down to the disks.
    fn used_devices(&mut self) -> BTreeSet<String> {
        let mut todo: Vec<String> = self
            .mounts
            .iter()
            .filter_map(|m| m.device.clone())
            .collect();
        todo.extend(
            self.st
                .swaps
                .iter()
                .filter(|s| s.kind == "partition")
                .map(|s| self.norm(&s.device)),
        );
        self.nothing_recorded = todo.is_empty() && self.st.mounts.is_empty();
        let mut seen = BTreeSet::new();
        while let Some(d) = todo.pop() {
            if !seen.insert(d.clone()) {
                continue;
            }
            todo.extend(self.parents(&d));
        }
        seen
    }

    /// The devices a device is built on.
    fn parents(&self, path: &str) -> Vec<String> {
        let st = self.st;
        let mut out = Vec::new();
        if let Some(&p) = self.part_by_dev.get(path) {
            let disk = &st.partitions[p].disk;
            if let Some(d) = st.disks.iter().find(|d| &d.id == disk) {
                out.push(dev_path(&d.name));
            }
        }
        if let Some(m) = st
            .md_arrays
            .iter()
            .find(|m| format!("/dev/{}", m.name) == path)
        {
            out.extend(m.devices.iter().map(|d| member_path(d)));
        }
        for lv in &st.lvm_lvs {
            if lv_path(&lv.vg, &lv.name) == path {
                out.extend(
                    st.lvm_pvs
                        .iter()
                        .filter(|p| p.vg == lv.vg)
                        .map(|p| self.norm(&p.device)),
                );
            }
        }
        for (i, l) in st.luks.iter().enumerate() {
            if self.crypt_path(i) == path {
                out.push(self.norm(&l.device));
            }
        }
        out
    }

    /// Whether the system's mounts or swap depend on a device.
    pub fn is_used(&self, path: &str) -> bool {
        self.nothing_recorded || self.used.contains(path)
    }

    /// Whether anything on a source disk is used.
    pub fn disk_used(&self, d: &SrcDisk) -> bool {
        self.is_used(&d.path) || d.parts.iter().any(|p| self.is_used(&p.path))
    }

    // ------------------------------------------------------------------ content

    /// What a device holds.
    pub fn content(&self, path: &str) -> Content {
        if let Some(&i) = self.fs_by_dev.get(path) {
            let by = |m: &HashMap<String, usize>| m.get(path).copied();
            return match self.filesystems[i].fstype.as_str() {
                "linux_raid_member" => by(&self.md_by_member).map_or(Content::Unknown, Content::Md),
                "LVM2_member" => by(&self.pv_by_dev).map_or(Content::Unknown, Content::Pv),
                "crypto_LUKS" => by(&self.luks_by_dev).map_or(Content::Unknown, Content::Luks),
                "swap" => Content::Swap(i),
                _ => Content::Fs(i),
            };
        }
        if let Some(&m) = self.md_by_member.get(path) {
            Content::Md(m)
        } else if let Some(&p) = self.pv_by_dev.get(path) {
            Content::Pv(p)
        } else if let Some(&l) = self.luks_by_dev.get(path) {
            Content::Luks(l)
        } else {
            Content::Unknown
        }
    }

    /// What a device holds, for people.
    pub fn describe(&self, path: &str, content: Content, special: Special) -> String {
        let st = self.st;
        let base = match content {
            Content::Fs(i) => {
                let f = &self.filesystems[i];
                match self.mountpoints.get(path) {
                    Some(m) if !m.is_empty() => format!("{} {}", f.fstype, m.join(",")),
                    _ => format!("{} (not mounted)", f.fstype),
                }
            }
            Content::Swap(_) => "swap".into(),
            Content::Md(m) => format!("RAID member of {}", st.md_arrays[m].name),
            Content::Pv(p) => format!("LVM PV of {}", st.lvm_pvs[p].vg),
            Content::Luks(l) => format!("LUKS {}", self.crypt_names[l]),
            Content::Extended => "extended".into(),
            Content::Unknown => "nothing recorded".into(),
        };
        match (special, content) {
            (Special::BiosBoot, _) => "BIOS boot".into(),
            (Special::Esp, Content::Unknown) => "EFI system".into(),
            (Special::Esp, _) => format!("EFI system, {base}"),
            _ => base,
        }
    }

    /// The mountpoints of the filesystem on a device.
    pub fn mountpoints_of(&self, path: &str) -> &[String] {
        self.mountpoints.get(path).map_or(&[], Vec::as_slice)
    }

    // ------------------------------------------------------------------ needs

    /// The least a device of `size` bytes holding what `path` holds can shrink to.
    pub fn need(&self, path: &str, size: u64) -> Need {
        self.need_at(path, size, 0)
    }

    fn need_at(&self, path: &str, size: u64, depth: u32) -> Need {
        if depth > 8 {
            return Need {
                bytes: size,
                why: "nested too deeply to analyse: never shrunk".into(),
            };
        }
        match self.content(path) {
            Content::Fs(i) => self.fs_need(path, i, size),
            Content::Swap(_) => {
                if size > SWAP_MIN {
                    Need {
                        bytes: SWAP_MIN,
                        why: "swap holds no data: at least 256 MiB".into(),
                    }
                } else {
                    Need {
                        bytes: size,
                        why: "swap, smaller than 256 MiB: kept".into(),
                    }
                }
            }
            Content::Md(m) => self.member_need(m, depth),
            Content::Pv(p) => self.pv_need(p, depth),
            Content::Luks(l) => {
                let luks = &self.st.luks[l];
                let header = luks_header(luks.version);
                let inner =
                    self.need_at(&self.crypt_path(l), size.saturating_sub(header), depth + 1);
                Need {
                    bytes: inner.bytes + header,
                    why: format!(
                        "LUKS{} header {} + {}: {}",
                        luks.version.max(1),
                        human(header),
                        human(inner.bytes),
                        inner.why
                    ),
                }
            }
            Content::Extended => Need {
                bytes: 0,
                why: "extended partition: holds the logical partitions".into(),
            },
            Content::Unknown => Need {
                bytes: size,
                why: "no filesystem or volume recorded on it: never shrunk".into(),
            },
        }
    }

    fn fs_need(&self, path: &str, i: usize, size: u64) -> Need {
        let f = &self.filesystems[i];
        let mps = self.mountpoints_of(path);
        let used = mps
            .iter()
            .filter_map(|m| self.usage.get(m).map(|u| (m, *u)))
            .max_by_key(|(_, u)| *u);
        let Some((mp, used)) = used else {
            let at = if mps.is_empty() {
                " (not mounted)".to_string()
            } else {
                format!(" on {}", mps.join(","))
            };
            return Need {
                bytes: size,
                why: format!("{}{at}: usage not recorded, never shrunk", f.fstype),
            };
        };
        let mut want = align_up(used + used / 5 + FS_HEADROOM, MIB);
        let mut why = format!("{} on {mp}: {} used × 1.2 + 256 MiB", f.fstype, human(used));
        if f.fstype == "xfs" && want < XFS_MIN {
            want = XFS_MIN;
            why.push_str(", raised to 300 MiB, the least mkfs.xfs makes");
        }
        let bytes = if size > 0 && want > size {
            why.push_str(", capped at its current size");
            size
        } else {
            want
        };
        Need { bytes, why }
    }

    fn member_need(&self, m: usize, depth: u32) -> Need {
        let md = &self.st.md_arrays[m];
        let inner = self.need_at(&format!("/dev/{}", md.name), md.size_bytes, depth + 1);
        let n = raid_devices(md);
        let share = data_share(&md.level, n, inner.bytes);
        let bytes = md_member_min(share);
        Need {
            bytes,
            why: format!(
                "member of {} ({}, {n} devices), which needs {}: {}",
                md.name,
                md.level,
                human(inner.bytes),
                inner.why
            ),
        }
    }

    fn pv_need(&self, p: usize, depth: u32) -> Need {
        let st = self.st;
        let pv = &st.lvm_pvs[p];
        let extent = self.extent(&pv.vg);
        let mut total = 0;
        let mut parts = Vec::new();
        for lv in self.lvs(&pv.vg) {
            let n = self.lv_need(lv, depth + 1);
            let b = align_up(n.bytes, extent);
            total += b;
            parts.push(format!("{} {}", lv.name, human(b)));
        }
        let pvs: Vec<&keel_profile::LvmPv> = st.lvm_pvs.iter().filter(|x| x.vg == pv.vg).collect();
        let pv_total: u64 = pvs.iter().map(|x| x.size_bytes).sum();
        let (share, of) = if pvs.len() > 1 && pv_total > 0 {
            let s = align_up(mul_div(total, pv.size_bytes, pv_total) + extent - 1, extent);
            (
                s,
                format!(
                    "; this PV's share ({}%)",
                    mul_div(100, pv.size_bytes, pv_total)
                ),
            )
        } else {
            (total, String::new())
        };
        let lvs = if parts.is_empty() {
            "no LVs".to_string()
        } else {
            parts.join(", ")
        };
        Need {
            bytes: share + PV_META,
            why: format!(
                "LVM PV of {}, whose LVs need {} ({lvs}){of}, + 1 MiB metadata",
                pv.vg,
                human(total)
            ),
        }
    }

    /// An LV's minimum.
    pub fn lv_need(&self, lv: &keel_profile::LvmLv, depth: u32) -> Need {
        self.need_at(&lv_path(&lv.vg, &lv.name), lv.size_bytes, depth)
    }

    /// The LVs of a volume group that the planner recreates.
    pub fn lvs(&self, vg: &str) -> impl Iterator<Item = &'a keel_profile::LvmLv> + '_ {
        let vg = vg.to_string();
        self.st
            .lvm_lvs
            .iter()
            .filter(move |l| l.vg == vg && SUPPORTED_SEGTYPES.contains(&l.segtype.as_str()))
    }

    /// The LVs of a volume group that the planner cannot recreate.
    pub fn unsupported_lvs(&self, vg: &str) -> impl Iterator<Item = &'a keel_profile::LvmLv> + '_ {
        let vg = vg.to_string();
        self.st
            .lvm_lvs
            .iter()
            .filter(move |l| l.vg == vg && !SUPPORTED_SEGTYPES.contains(&l.segtype.as_str()))
    }

    /// A volume group's extent size.
    pub fn extent(&self, vg: &str) -> u64 {
        self.st
            .lvm_vgs
            .iter()
            .find(|v| v.name == vg)
            .map(|v| v.extent_size)
            .filter(|e| *e > 0)
            .unwrap_or(DEFAULT_EXTENT)
    }

    /// The least a source disk's layout needs, partition table included.
    pub fn disk_min(&self, d: &SrcDisk) -> u64 {
        let size = self.st.disks[d.idx].size_bytes;
        if d.parts.is_empty() {
            return self.need(&d.path, size).bytes;
        }
        let gpt = d.gpt.unwrap_or(true);
        let mut total = MIB + if gpt { MIB } else { 0 };
        for p in &d.parts {
            let part = &self.st.partitions[p.idx];
            if p.logical {
                total += MIB;
            }
            total += match self.sizing(p) {
                Sizing::Fixed(_) => align_up(part.size_bytes, MIB),
                Sizing::Small { min, .. } | Sizing::Scaled { min, .. } => align_up(min.max(1), MIB),
                Sizing::Extended => 0,
            };
        }
        total
    }

    /// How a partition is sized.
    pub fn sizing(&self, p: &SrcPart) -> Sizing {
        let part = &self.st.partitions[p.idx];
        match (p.special, p.content) {
            (_, Content::Extended) => Sizing::Extended,
            (Special::BiosBoot, _) => Sizing::Fixed("fixed: BIOS boot partition".into()),
            (Special::Esp, _) => Sizing::Fixed("fixed: EFI system partition".into()),
            _ if part.size_bytes < SMALL => {
                let n = self.need(&p.path, part.size_bytes);
                Sizing::Small {
                    min: n.bytes,
                    why: n.why,
                }
            }
            (_, content) => {
                let n = self.need(&p.path, part.size_bytes);
                Sizing::Scaled {
                    min: n.bytes,
                    why: n.why,
                    growable: !matches!(content, Content::Unknown | Content::Swap(_)),
                }
            }
        }
    }

    /// Whether a filesystem type is one the planner leaves to others (a container).
    pub fn is_container(fstype: &str) -> bool {
        CONTAINERS.contains(&fstype)
    }
}

/// How a partition is sized.
#[derive(Debug, Clone)]
pub(crate) enum Sizing {
    /// Kept at its size, for the reason given.
    Fixed(String),
    /// Under 1 GiB: kept at its size when the disk has room for that, else scaled with the
    /// others, never below `min`; it never takes the rest of the disk.
    Small { min: u64, why: String },
    /// Scaled with the disk, never below `min`.
    Scaled {
        min: u64,
        why: String,
        /// May take the rest of the disk when it is the last partition.
        growable: bool,
    },
    /// An MBR extended partition: as large as its logical partitions.
    Extended,
}

/// The path of a kernel name (`cciss!c0d0p1` → `/dev/cciss/c0d0p1`).
pub(crate) fn dev_path(name: &str) -> String {
    format!("/dev/{}", name.replace('!', "/"))
}

/// An md member as the profile lists it, without its `(spare)` or `(faulty)` marker.
pub(crate) fn member_path(d: &str) -> String {
    d.split_whitespace().next().unwrap_or_default().to_string()
}

/// Whether an md member is a spare.
pub(crate) fn member_is_spare(d: &str) -> bool {
    d.ends_with("(spare)")
}

/// `/dev/mapper/VG-LV`, with dashes in names doubled as device-mapper does.
pub(crate) fn lv_path(vg: &str, lv: &str) -> String {
    format!(
        "/dev/mapper/{}-{}",
        vg.replace('-', "--"),
        lv.replace('-', "--")
    )
}

/// LUKS header size: the LUKS2 default is 16 MiB, LUKS1 about 2 MiB.
pub(crate) fn luks_header(version: u32) -> u64 {
    if version == 1 {
        2 * MIB
    } else {
        16 * MIB
    }
}

/// The number of member slots of an array (spares excluded).
pub(crate) fn raid_devices(md: &keel_profile::MdArray) -> u64 {
    (md.devices.iter().filter(|d| !member_is_spare(d)).count() as u64).max(1)
}

/// How many members an array can lose and keep its data.
pub(crate) fn max_missing(level: &str, n: u64) -> u64 {
    match level {
        "raid1" => n.saturating_sub(1),
        "raid4" | "raid5" | "raid10" => 1,
        "raid6" => 2,
        _ => 0,
    }
}

/// The data each member of an array holds for `total` bytes of array.
pub(crate) fn data_share(level: &str, n: u64, total: u64) -> u64 {
    let n = n.max(1);
    match level {
        "raid0" | "linear" => total.div_ceil(n),
        "raid4" | "raid5" if n > 1 => total.div_ceil(n - 1),
        "raid6" if n > 2 => total.div_ceil(n - 2),
        "raid10" => (total * 2).div_ceil(n),
        _ => total,
    }
}

/// The array size `n` members of `member` usable bytes give.
pub(crate) fn array_size(level: &str, n: u64, member: u64, sum: u64) -> u64 {
    match level {
        "linear" => sum,
        "raid0" => member * n,
        "raid4" | "raid5" => member * n.saturating_sub(1),
        "raid6" => member * n.saturating_sub(2),
        "raid10" => member * n / 2,
        _ => member,
    }
}

/// Space md takes on each member: the superblock, the write-intent bitmap and, for 1.x
/// metadata, the data offset mdadm leaves for reshaping (about 1/1024 of the member, at most
/// 128 MiB). An estimate on the safe side.
pub(crate) fn md_overhead(member: u64) -> u64 {
    (member / 1024).clamp(MIB, 128 * MIB) + MIB
}

/// The data an md member of `size` bytes holds.
pub(crate) fn md_usable(size: u64) -> u64 {
    size.saturating_sub(md_overhead(size))
}

/// The smallest member (in whole MiB) that holds `share` bytes of data.
pub(crate) fn md_member_min(share: u64) -> u64 {
    let mut s = align_up(share + md_overhead(share), MIB);
    while md_usable(s) < share {
        s += MIB;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raid_arithmetic() {
        assert_eq!(data_share("raid1", 2, 10 * GIB), 10 * GIB);
        assert_eq!(data_share("raid5", 3, 10 * GIB), 5 * GIB);
        assert_eq!(data_share("raid6", 4, 10 * GIB), 5 * GIB);
        assert_eq!(data_share("raid0", 2, 10 * GIB), 5 * GIB);
        assert_eq!(data_share("raid10", 4, 10 * GIB), 5 * GIB);
        assert_eq!(array_size("raid5", 3, 5 * GIB, 0), 10 * GIB);
        for share in [0, MIB, 700 * MIB, 10 * GIB, 3 << 40] {
            let m = md_member_min(share);
            assert!(md_usable(m) >= share, "{share}");
            // Never more than the largest data offset, the superblock and rounding over.
            assert!(m - share <= 130 * MIB, "{share}: {m}");
        }
        assert_eq!(max_missing("raid1", 2), 1);
        assert_eq!(max_missing("raid0", 2), 0);
    }

    #[test]
    fn lv_paths() {
        assert_eq!(lv_path("vg0", "root"), "/dev/mapper/vg0-root");
        assert_eq!(lv_path("my-vg", "lv-1"), "/dev/mapper/my--vg-lv--1");
        assert_eq!(member_path("/dev/sde1 (spare)"), "/dev/sde1");
        assert!(member_is_spare("/dev/sde1 (spare)"));
    }
}
