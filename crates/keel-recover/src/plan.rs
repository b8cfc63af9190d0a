//! Making a plan: map the disks, size every partition and volume for its new disk, and list
//! the steps that rebuild the layout.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use keel_profile::Profile;
use serde::{Deserialize, Serialize};

use crate::error::{MinimumLine, PlanError, Shortfall};
use crate::layout::{scale, How, Scale};
use crate::map::{map_disks, DiskMap};
use crate::size::{align_down, align_up, factor, human, MIB, TIB};
use crate::source::{
    array_size, luks_header, lv_path, md_usable, member_is_spare, member_path, raid_devices,
    Content, Need, Sizing, Source, Special, SrcDisk, PV_META, SMALL,
};
use crate::step::{NewPartition, Step, TableLabel};
use crate::target::{Device, DiskKind, TargetDisk};

/// The plan format this build writes; [`crate::check`] refuses newer ones.
pub const PLAN_FORMAT: u32 = 1;

/// Filesystem types the plan makes again.
const MKFS_TYPES: &[&str] = &["ext2", "ext3", "ext4", "xfs", "btrfs", "vfat", "f2fs"];

/// The largest disk an MBR partition table addresses (2^32 sectors of 512 bytes).
const MBR_LIMIT: u64 = 2 * TIB;

/// Choices the operator makes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlanOptions {
    /// Explicit `(source, target)` pairs: the source as a kernel name (`sda`), device path, profile
    /// disk id, WWN or serial; the target as given in the inventory. They win over any other
    /// rule.
    pub disk_map: Vec<(String, String)>,
    /// With fewer targets than source disks, leave out disks that hold only RAID members whose
    /// arrays keep enough members elsewhere, and create those arrays degraded.
    pub allow_degraded: bool,
}

impl PlanOptions {
    /// Parses a `SRC=DST` pair as `--disk-map` takes it.
    pub fn parse_disk_map(s: &str) -> Result<(String, String), PlanError> {
        match s.split_once('=') {
            Some((a, b)) if !a.trim().is_empty() && !b.trim().is_empty() => {
                Ok((a.trim().to_string(), b.trim().to_string()))
            }
            _ => Err(PlanError::BadMapping {
                given: s.to_string(),
            }),
        }
    }
}

/// Which profile a plan rebuilds.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct PlanSource {
    /// Hostname of the profiled system.
    pub hostname: String,
    /// BLAKE3 of the profile, when the caller knows it.
    pub profile_hash: Option<String>,
    /// When the profile was captured, milliseconds since the Unix epoch.
    pub captured_at_ms: i64,
    /// Where the profile file was when the plan was made: applying the plan continues with
    /// the system from it (`keel recover apply`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile_path: Option<String>,
}

/// A source disk as the plan shows it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SourceDisk {
    /// Profile id (`wwn:…`, `serial:…`).
    pub id: String,
    /// Kernel name on the source (`sda`).
    pub name: String,
    /// Size in bytes.
    pub size_bytes: u64,
    /// How it was attached.
    pub kind: DiskKind,
    /// The least its layout needs.
    pub min_bytes: u64,
}

/// Where one source disk goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskMapping {
    /// The source disk.
    pub source: SourceDisk,
    /// The target's path; none when the disk is not rebuilt.
    pub target: Option<String>,
    /// Why.
    pub reason: String,
}

/// A target disk the plan does not use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnusedTarget {
    /// Its path.
    pub path: String,
    /// Why.
    pub reason: String,
}

/// A partition (or a disk used whole) and its new size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionChange {
    /// Source device (`sda2`, or `sdc` for a disk used without a partition table).
    pub source: String,
    /// Partition number; none for a whole disk.
    pub number: Option<u32>,
    /// The device it becomes.
    pub device: Device,
    /// What it holds.
    pub content: String,
    /// Size on the source.
    pub old_bytes: u64,
    /// Size on the target.
    pub new_bytes: u64,
    /// The least it could have had.
    pub min_bytes: u64,
    /// Why this size.
    pub reason: String,
}

/// What kind of volume a [`VolumeChange`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VolumeKind {
    /// A software RAID array.
    Raid,
    /// An LVM volume group.
    VolumeGroup,
    /// An LVM logical volume.
    LogicalVolume,
}

/// A RAID array, volume group or logical volume and its new size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeChange {
    /// What it is.
    pub kind: VolumeKind,
    /// Its name (`md1`, `vg0`, `vg0/root`).
    pub name: String,
    /// Size on the source.
    pub old_bytes: u64,
    /// Size on the target.
    pub new_bytes: u64,
    /// The least it needs.
    pub min_bytes: u64,
    /// Why this size.
    pub reason: String,
}

/// A recovery plan: which disk goes where, every partition's and volume's new size with the
/// reason for it, and the steps that build the layout. Serialisable (JSON, versioned by
/// `format`) and printable for people ([`std::fmt::Display`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// Plan format version ([`PLAN_FORMAT`]).
    pub format: u32,
    /// The profile rebuilt.
    #[serde(default)]
    pub source: PlanSource,
    /// Whether degraded arrays were allowed.
    #[serde(default)]
    pub allow_degraded: bool,
    /// The target disks as they were when planned: applying re-reads them and refuses to go on
    /// if any differs.
    pub inventory: Vec<TargetDisk>,
    /// Every source disk and where it goes.
    pub disk_map: Vec<DiskMapping>,
    /// Targets left untouched.
    #[serde(default)]
    pub unused_targets: Vec<UnusedTarget>,
    /// Every partition, old size → new size.
    pub partitions: Vec<PartitionChange>,
    /// Arrays, volume groups and logical volumes, old size → new size.
    #[serde(default)]
    pub volumes: Vec<VolumeChange>,
    /// The steps, in order.
    pub steps: Vec<Step>,
    /// Things the operator should know (degraded arrays, what is not rebuilt).
    #[serde(default)]
    pub notes: Vec<String>,
}

impl Plan {
    /// The plan as pretty-printed JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a plan always serialises")
    }

    /// Reads a plan written by [`Plan::to_json`] (of this format or an older one).
    pub fn from_json(text: &str) -> Result<Plan, serde_json::Error> {
        serde_json::from_str(text)
    }
}

/// Makes a plan to rebuild `profile`'s storage onto `targets`.
pub fn plan(
    profile: &Profile,
    targets: &[TargetDisk],
    opts: &PlanOptions,
) -> Result<Plan, PlanError> {
    let src = Source::new(profile);
    if src.disks.is_empty() {
        return Err(PlanError::NoDisks);
    }
    if targets.is_empty() {
        return Err(PlanError::NoTargets);
    }
    refuse_unsupported(&src)?;
    let mins: Vec<u64> = src.disks.iter().map(|d| src.disk_min(d)).collect();
    let map = map_disks(&src, &mins, targets, opts)?;
    let mut b = Builder {
        src: &src,
        targets,
        map: &map,
        dev: HashMap::new(),
        size: HashMap::new(),
        steps: Vec::new(),
        partitions: Vec::new(),
        volumes: Vec::new(),
        notes: Vec::new(),
    };
    if src.nothing_recorded {
        b.notes.push(
            "the profile records no mounts and no fstab: every disk is rebuilt, and nothing is \
             mounted"
                .into(),
        );
    }
    b.disks()?;
    b.stack()?;
    b.filesystems();
    b.mounts();

    let disk_map = src
        .disks
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let sd = &src.st.disks[d.idx];
            DiskMapping {
                source: SourceDisk {
                    id: sd.id.clone(),
                    name: sd.name.clone(),
                    size_bytes: sd.size_bytes,
                    kind: d.kind,
                    min_bytes: mins[i],
                },
                target: map.target[i].map(|t| targets[t].path.clone()),
                reason: map.reason[i].clone(),
            }
        })
        .collect();
    let meta = &profile.meta;
    let hostname = if meta.hostname.is_empty() {
        profile
            .os
            .host
            .first()
            .map(|h| h.hostname.clone())
            .unwrap_or_default()
    } else {
        meta.hostname.clone()
    };
    Ok(Plan {
        format: PLAN_FORMAT,
        source: PlanSource {
            hostname,
            profile_hash: None,
            captured_at_ms: meta.started_at_ms,
            profile_path: None,
        },
        allow_degraded: opts.allow_degraded,
        inventory: targets.to_vec(),
        disk_map,
        unused_targets: map
            .unused
            .iter()
            .map(|(t, why)| UnusedTarget {
                path: targets[*t].path.clone(),
                reason: why.clone(),
            })
            .collect(),
        partitions: b.partitions,
        volumes: b.volumes,
        steps: b.steps,
        notes: b.notes,
    })
}

/// Refuses a profile whose mounted data sits on something the planner cannot build.
fn refuse_unsupported(src: &Source) -> Result<(), PlanError> {
    let st = src.st;
    for lv in &st.lvm_lvs {
        let path = lv_path(&lv.vg, &lv.name);
        if src.is_used(&path) && src.unsupported_lvs(&lv.vg).any(|x| x.name == lv.name) {
            return Err(PlanError::Unsupported {
                what: format!(
                    "{}/{} is a {} logical volume, and the system mounts what is on it; only \
                     linear and striped volumes are rebuilt",
                    lv.vg, lv.name, lv.segtype
                ),
                hint: "rebuild that volume group by hand after the plan's other steps, or move \
                       its data to a linear volume before capturing"
                    .into(),
            });
        }
    }
    for m in src.mounts.iter().filter(|m| !m.swap) {
        let Some(d) = &m.device else { continue };
        if let Content::Fs(i) = src.content(d) {
            let fstype = &src.filesystems[i].fstype;
            if !MKFS_TYPES.contains(&fstype.as_str()) {
                return Err(PlanError::Unsupported {
                    what: format!(
                        "{} is mounted from a {fstype} filesystem on {d}, which the plan cannot \
                         make (it makes {})",
                        m.mountpoint,
                        MKFS_TYPES.join(", ")
                    ),
                    hint: "leave that filesystem out of fstab before capturing, or make it by \
                           hand"
                        .into(),
                });
            }
        }
    }
    Ok(())
}

/// A placed partition.
#[derive(Debug, Clone)]
struct Placed {
    start: u64,
    size: u64,
    min: u64,
    reason: String,
}

struct Builder<'a, 'p> {
    src: &'a Source<'p>,
    targets: &'a [TargetDisk],
    map: &'a DiskMap,
    /// Source device path → the device it becomes.
    dev: HashMap<String, Device>,
    /// Source device path → its new size.
    size: HashMap<String, u64>,
    steps: Vec<Step>,
    partitions: Vec<PartitionChange>,
    volumes: Vec<VolumeChange>,
    notes: Vec<String>,
}

impl Builder<'_, '_> {
    /// Partition tables: every mapped disk laid out, array members matched to their smallest
    /// sibling, then the disk steps.
    fn disks(&mut self) -> Result<(), PlanError> {
        let src = self.src;
        let mapped: Vec<(usize, usize)> = (0..src.disks.len())
            .filter_map(|i| Some((i, self.map.target[i]?)))
            .collect();
        let mut caps: HashMap<String, (u64, String)> = HashMap::new();
        let mut layouts: BTreeMap<usize, Vec<Placed>> = BTreeMap::new();
        // Each round lays the disks out under the caps so far; the layouts kept are always
        // those of the latest caps.
        for round in 1.. {
            layouts.clear();
            for &(i, t) in &mapped {
                if !src.disks[i].parts.is_empty() {
                    layouts.insert(i, self.layout(i, t, &caps)?);
                }
            }
            if round == 8 || !self.match_members(&mapped, &layouts, &mut caps) {
                break;
            }
        }

        for &(i, t) in &mapped {
            let d = &src.disks[i];
            let sd = &src.st.disks[d.idx];
            let target = &self.targets[t];
            let disk = Device::Disk {
                disk: target.path.clone(),
            };
            if sd.logical_sector_size > 0
                && target.logical_sector_size > 0
                && sd.logical_sector_size != target.logical_sector_size
            {
                self.notes.push(format!(
                    "{} has {}-byte sectors where {} had {}: sizes are planned in bytes and \
                     filesystems are made fresh, so this is fine, but disk images of the old \
                     partitions cannot be copied onto it",
                    target.path, target.logical_sector_size, sd.name, sd.logical_sector_size
                ));
            }
            self.steps.push(Step::WipeSignatures { disk: disk.clone() });
            let Some(placed) = layouts.get(&i) else {
                // Used whole, without a partition table.
                let need = src.need(&d.path, sd.size_bytes);
                if target.size_bytes < need.bytes {
                    return Err(PlanError::DoesNotFit(Box::new(Shortfall {
                        what: format!("disk {} ({})", sd.name, human(sd.size_bytes)),
                        onto: format!("{} ({})", target.path, human(target.size_bytes)),
                        usable_bytes: target.size_bytes,
                        lines: vec![MinimumLine {
                            what: format!("{} (whole disk)", sd.name),
                            min_bytes: need.bytes,
                            why: format!("minimum: {}", need.why),
                        }],
                        hint: format!(
                            "give a larger disk for {} with --target, or map it onto another \
                             with --disk-map {}=DEV",
                            sd.name, sd.name
                        ),
                    })));
                }
                self.dev.insert(d.path.clone(), disk.clone());
                self.size.insert(d.path.clone(), target.size_bytes);
                self.partitions.push(PartitionChange {
                    source: sd.name.clone(),
                    number: None,
                    device: disk,
                    content: src.describe(&d.path, d.whole, Special::None),
                    old_bytes: sd.size_bytes,
                    new_bytes: target.size_bytes,
                    min_bytes: need.bytes,
                    reason: "whole disk, used without a partition table as on the source".into(),
                });
                continue;
            };
            let gpt = d.gpt.unwrap_or(true);
            if !gpt && target.size_bytes > MBR_LIMIT {
                self.notes.push(format!(
                    "{} is larger than an MBR partition table addresses: only its first 2 TiB \
                     are used (convert the table to GPT to use the rest)",
                    target.path
                ));
            }
            let mut parts = Vec::new();
            for (p, pl) in d.parts.iter().zip(placed) {
                let part = &src.st.partitions[p.idx];
                let device = Device::Partition {
                    disk: target.path.clone(),
                    number: part.number,
                };
                self.dev.insert(p.path.clone(), device.clone());
                self.size.insert(p.path.clone(), pl.size);
                if p.content == Content::Unknown && p.special == Special::None {
                    self.notes.push(format!(
                        "{} holds no filesystem or volume the profile knows of: {device} is \
                         created empty",
                        part.name
                    ));
                }
                self.partitions.push(PartitionChange {
                    source: part.name.clone(),
                    number: Some(part.number),
                    device,
                    content: src.describe(&p.path, p.content, p.special),
                    old_bytes: part.size_bytes,
                    new_bytes: pl.size,
                    min_bytes: pl.min,
                    reason: pl.reason.clone(),
                });
                parts.push(NewPartition {
                    number: part.number,
                    start_bytes: pl.start,
                    size_bytes: pl.size,
                    part_type: part.part_type.clone(),
                    name: part.partlabel.clone(),
                    uuid: part.partuuid.clone(),
                    flags: part.flags.clone(),
                });
            }
            parts.sort_by_key(|p| p.number);
            self.steps.push(Step::PartitionTable {
                disk,
                label: if gpt {
                    TableLabel::Gpt
                } else {
                    TableLabel::Dos
                },
                table_id: sd.ptuuid.clone(),
                partitions: parts,
            });
        }
        Ok(())
    }

    /// Lays out source disk `i` on target `t`.
    fn layout(
        &self,
        i: usize,
        t: usize,
        caps: &HashMap<String, (u64, String)>,
    ) -> Result<Vec<Placed>, PlanError> {
        let src = self.src;
        let d = &src.disks[i];
        let sd = &src.st.disks[d.idx];
        let target = &self.targets[t];
        let gpt = d.gpt.unwrap_or(true);
        let window = |size: u64| {
            let limit = if gpt { size } else { size.min(MBR_LIMIT) };
            let end = align_down(limit.saturating_sub(if gpt { MIB } else { 0 }), MIB);
            (end, end.saturating_sub(MIB))
        };
        let (end, usable) = window(target.size_bytes);
        let (_, usable_old) = window(sd.size_bytes);
        let headers = d.parts.iter().filter(|p| p.logical).count() as u64 * MIB;

        let sizings: Vec<Sizing> = d.parts.iter().map(|p| src.sizing(p)).collect();
        let real: Vec<usize> = (0..d.parts.len())
            .filter(|&k| !matches!(sizings[k], Sizing::Extended))
            .collect();
        // Small partitions keep their size when the disk has room for every partition at its
        // least with them kept; only a disk without that room shrinks them too.
        let items = |shrink_small: bool| -> Vec<Scale> {
            real.iter()
                .map(|&k| {
                    let orig = src.st.partitions[d.parts[k].idx].size_bytes;
                    let cap = caps.get(&d.parts[k].path).map(|c| c.0);
                    match &sizings[k] {
                        Sizing::Fixed(_) => Scale {
                            orig,
                            min: orig,
                            fixed: true,
                            cap: None,
                        },
                        Sizing::Small { .. } if !shrink_small => Scale {
                            orig,
                            min: orig,
                            fixed: true,
                            cap: None,
                        },
                        Sizing::Small { min, .. } | Sizing::Scaled { min, .. } => Scale {
                            orig,
                            min: *min,
                            fixed: false,
                            cap,
                        },
                        Sizing::Extended => unreachable!("extended partitions are not scaled"),
                    }
                })
                .collect()
        };
        let room = usable.saturating_sub(headers);
        let room_old = usable_old.saturating_sub(headers);
        let mut scaled = scale(&items(false), room, room_old, MIB);
        if scaled.is_none() && sizings.iter().any(|s| matches!(s, Sizing::Small { .. })) {
            scaled = scale(&items(true), room, room_old, MIB);
        }
        let Some(scaled) = scaled else {
            let mut lines: Vec<MinimumLine> = real
                .iter()
                .map(|&k| {
                    let part = &src.st.partitions[d.parts[k].idx];
                    let (min, why) = match &sizings[k] {
                        Sizing::Fixed(why) => (align_up(part.size_bytes, MIB), why.clone()),
                        Sizing::Small { min, why } | Sizing::Scaled { min, why, .. } => {
                            (align_up((*min).max(1), MIB), format!("minimum: {why}"))
                        }
                        Sizing::Extended => unreachable!("filtered out"),
                    };
                    MinimumLine {
                        what: part.name.clone(),
                        min_bytes: min,
                        why,
                    }
                })
                .collect();
            if headers > 0 {
                lines.push(MinimumLine {
                    what: "(logical partition headers)".into(),
                    min_bytes: headers,
                    why: "1 MiB before each logical partition".into(),
                });
            }
            return Err(PlanError::DoesNotFit(Box::new(Shortfall {
                what: format!("disk {} ({})", sd.name, human(sd.size_bytes)),
                onto: format!(
                    "{} ({}; {} usable after the partition table and alignment)",
                    target.path,
                    human(target.size_bytes),
                    human(usable)
                ),
                usable_bytes: usable,
                lines,
                hint: format!(
                    "give a larger disk for {} with --target, or map it onto another with \
                     --disk-map {}=DEV",
                    sd.name, sd.name
                ),
            })));
        };

        // Sizes and reasons, by position on the disk.
        let f = factor(scaled.factor.0, scaled.factor.1);
        let mut placed: Vec<Placed> = vec![
            Placed {
                start: 0,
                size: 0,
                min: 0,
                reason: "holds the logical partitions".into(),
            };
            d.parts.len()
        ];
        for (j, &k) in real.iter().enumerate() {
            let (size, how) = scaled.sizes[j];
            let (min, reason) = match (&sizings[k], how) {
                (Sizing::Fixed(why), _) => (size, why.clone()),
                (Sizing::Small { .. }, How::Fixed) => (size, "fixed: small (under 1 GiB)".into()),
                (Sizing::Small { min, why } | Sizing::Scaled { min, why, .. }, how) => {
                    let reason = match how {
                        How::Scaled | How::Fixed => format!("scaled {f}"),
                        How::Raised => {
                            format!("scaled {f} would be too small; raised to its minimum: {why}")
                        }
                        How::Reduced => format!(
                            "scaled {f}, then made smaller to fit the others' minimums (its own \
                             is {}: {why})",
                            human(*min)
                        ),
                        How::Capped => caps
                            .get(&d.parts[k].path)
                            .map_or_else(|| format!("scaled {f}"), |c| c.1.clone()),
                    };
                    if matches!(sizings[k], Sizing::Small { .. }) {
                        (
                            *min,
                            format!(
                                "small (under 1 GiB), but the disk has no room to keep its \
                                 size: {reason}"
                            ),
                        )
                    } else {
                        (*min, reason)
                    }
                }
                (Sizing::Extended, _) => unreachable!("filtered out"),
            };
            placed[k] = Placed {
                start: 0,
                size,
                min,
                reason,
            };
        }

        // Positions: 1 MiB in, in the source's order, 1 MiB before each logical partition.
        let mut pos = MIB;
        let mut ext: Option<(usize, u64)> = None;
        for (k, p) in d.parts.iter().enumerate() {
            if p.content == Content::Extended {
                ext = Some((k, pos));
                placed[k].start = pos;
                placed[k].size = MIB;
                continue;
            }
            if p.logical {
                pos += MIB;
            }
            placed[k].start = pos;
            pos += placed[k].size;
            if p.logical {
                if let Some((e, start)) = ext {
                    placed[e].size = pos - start;
                }
            }
        }
        // The last partition takes the rest when it can grow.
        if let Some(k) = (0..d.parts.len()).next_back() {
            let grows = matches!(&sizings[k], Sizing::Scaled { growable: true, .. })
                && !caps.contains_key(&d.parts[k].path);
            if grows && end > pos {
                let extra = end - pos;
                placed[k].size += extra;
                placed[k].reason.push_str("; takes the rest of the disk");
                if d.parts[k].logical {
                    if let Some((e, _)) = ext {
                        placed[e].size += extra;
                    }
                }
            }
        }
        Ok(placed)
    }

    /// Caps array members at their smallest sibling's size (an array uses only that much of
    /// each). Returns whether any cap changed.
    fn match_members(
        &self,
        mapped: &[(usize, usize)],
        layouts: &BTreeMap<usize, Vec<Placed>>,
        caps: &mut HashMap<String, (u64, String)>,
    ) -> bool {
        let src = self.src;
        let mut sizes: HashMap<&str, (u64, String)> = HashMap::new();
        for &(i, t) in mapped {
            let d = &src.disks[i];
            match layouts.get(&i) {
                Some(placed) => {
                    for (p, pl) in d.parts.iter().zip(placed) {
                        let number = src.st.partitions[p.idx].number;
                        let dev = Device::Partition {
                            disk: self.targets[t].path.clone(),
                            number,
                        };
                        sizes.insert(&p.path, (pl.size, dev.to_string()));
                    }
                }
                None => {
                    sizes.insert(
                        &d.path,
                        (self.targets[t].size_bytes, self.targets[t].path.clone()),
                    );
                }
            }
        }
        let mut changed = false;
        for md in &src.st.md_arrays {
            if md.level == "linear" {
                continue;
            }
            let members: Vec<String> = md.devices.iter().map(|x| member_path(x)).collect();
            let present: Vec<(&String, &(u64, String))> = members
                .iter()
                .filter_map(|m| Some((m, sizes.get(m.as_str())?)))
                .collect();
            if present.len() < 2 {
                continue;
            }
            let Some((_, (smallest, on))) = present.iter().min_by_key(|(_, s)| s.0) else {
                continue;
            };
            for (m, (size, _)) in &present {
                if size > smallest && !src.disks.iter().any(|d| &d.path == *m) {
                    let why = format!(
                        "matched to the smallest member of {} ({on}, {}): an array uses no more \
                         of each member",
                        md.name,
                        human(*smallest)
                    );
                    if caps.get(*m).is_none_or(|c| c.0 > *smallest) {
                        caps.insert((*m).clone(), (*smallest, why));
                        changed = true;
                    }
                }
            }
        }
        changed
    }

    /// Arrays, LUKS, physical volumes, volume groups and logical volumes, each as soon as what
    /// it is built on exists.
    fn stack(&mut self) -> Result<(), PlanError> {
        let src = self.src;
        let st = src.st;
        let mut md_done = vec![false; st.md_arrays.len()];
        let mut luks_done = vec![false; st.luks.len()];
        let mut pv_done = vec![false; st.lvm_pvs.len()];
        let mut vg_done = vec![false; st.lvm_vgs.len()];
        loop {
            let mut progress = false;
            for (m, done) in md_done.iter_mut().enumerate() {
                if !*done && self.raid(m) {
                    *done = true;
                    progress = true;
                }
            }
            for (l, done) in luks_done.iter_mut().enumerate() {
                if !*done && self.luks(l) {
                    *done = true;
                    progress = true;
                }
            }
            for (p, done) in pv_done.iter_mut().enumerate() {
                let pv = &st.lvm_pvs[p];
                let path = src.norm(&pv.device);
                if !*done {
                    if let Some(device) = self.dev.get(&path).cloned() {
                        self.steps.push(Step::CreatePv {
                            device,
                            uuid: (!pv.uuid.is_empty()).then(|| pv.uuid.clone()),
                        });
                        *done = true;
                        progress = true;
                    }
                }
            }
            for (v, vg) in st.lvm_vgs.iter().enumerate() {
                if vg_done[v] {
                    continue;
                }
                let name = &vg.name;
                let pvs: Vec<usize> = (0..st.lvm_pvs.len())
                    .filter(|&p| &st.lvm_pvs[p].vg == name)
                    .collect();
                if !pvs.is_empty() && pvs.iter().all(|&p| pv_done[p]) {
                    self.vg(v, &pvs)?;
                    vg_done[v] = true;
                    progress = true;
                }
            }
            if !progress {
                break;
            }
        }
        for (m, md) in st.md_arrays.iter().enumerate() {
            if !md_done[m] && self.rebuilt_any(md.devices.iter().map(|d| member_path(d))) {
                self.notes.push(format!(
                    "{} is not rebuilt: some of its members ({}) are on disks that are not",
                    md.name,
                    md.devices.join(", ")
                ));
            }
        }
        for (v, vg) in st.lvm_vgs.iter().enumerate() {
            let pvs: Vec<String> = st
                .lvm_pvs
                .iter()
                .filter(|p| p.vg == vg.name)
                .map(|p| p.device.clone())
                .collect();
            if !vg_done[v] && self.rebuilt_any(pvs.iter().cloned()) {
                self.notes.push(format!(
                    "volume group {} is not rebuilt: some of its physical volumes ({}) are on \
                     disks that are not",
                    vg.name,
                    pvs.join(", ")
                ));
            }
        }
        for (l, luks) in st.luks.iter().enumerate() {
            if !luks_done[l] && self.dev.contains_key(&src.norm(&luks.device)) {
                self.notes
                    .push(format!("LUKS volume {} is not rebuilt", luks.uuid));
            }
        }
        Ok(())
    }

    fn rebuilt_any(&self, paths: impl Iterator<Item = String>) -> bool {
        paths
            .map(|p| self.src.norm(&p))
            .any(|p| self.dev.contains_key(&p))
    }

    /// Plans array `m` if its members exist (or are on disks a degraded plan leaves out).
    fn raid(&mut self, m: usize) -> bool {
        let src = self.src;
        let md = &src.st.md_arrays[m];
        let mut active = Vec::new();
        let mut spares = Vec::new();
        let mut missing = 0u32;
        let mut usable = Vec::new();
        for d in &md.devices {
            let path = member_path(d);
            match self.dev.get(&path) {
                Some(dev) if member_is_spare(d) => spares.push(dev.clone()),
                Some(dev) => {
                    active.push(dev.clone());
                    usable.push(md_usable(self.size.get(&path).copied().unwrap_or(0)));
                }
                None if self.on_dropped_disk(&path) => {
                    if !member_is_spare(d) {
                        missing += 1;
                    }
                }
                None => return false,
            }
        }
        if active.is_empty() {
            return false;
        }
        let n = raid_devices(md);
        let smallest = usable.iter().copied().min().unwrap_or(0);
        let new_size = array_size(&md.level, n, smallest, usable.iter().sum());
        let path = format!("/dev/{}", md.name);
        let device = Device::Md {
            name: md.name.clone(),
        };
        self.dev.insert(path.clone(), device.clone());
        self.size.insert(path.clone(), new_size);
        let mut reason = if active.len() == 1 {
            format!(
                "{} of 1 member of {} (after md's superblock and data offset)",
                md.level,
                human(smallest)
            )
        } else {
            format!(
                "{} of {} members of {} each (after md's superblock and data offset)",
                md.level,
                active.len(),
                human(smallest)
            )
        };
        if missing > 0 {
            let _ = write!(reason, ", {missing} missing");
            self.notes.push(format!(
                "{} is created degraded, with {} of {n} members: add the missing one{} later \
                 (`mdadm --add /dev/{} DEVICE`)",
                md.name,
                active.len(),
                if missing == 1 { "" } else { "s" },
                md.name
            ));
        }
        self.volumes.push(VolumeChange {
            kind: VolumeKind::Raid,
            name: md.name.clone(),
            old_bytes: md.size_bytes,
            new_bytes: new_size,
            min_bytes: src.need(&path, md.size_bytes).bytes,
            reason,
        });
        self.steps.push(Step::CreateRaid {
            device,
            level: md.level.clone(),
            devices: active,
            missing,
            spares,
            uuid: (!md.uuid.is_empty() && !md.uuid.starts_with("name:")).then(|| md.uuid.clone()),
            metadata: md.metadata.clone(),
            size_bytes: new_size,
        });
        true
    }

    fn on_dropped_disk(&self, path: &str) -> bool {
        self.map.dropped.iter().any(|&i| {
            let d: &SrcDisk = &self.src.disks[i];
            d.path == path || d.parts.iter().any(|p| p.path == path)
        })
    }

    /// Plans LUKS volume `l` if its device exists.
    fn luks(&mut self, l: usize) -> bool {
        let src = self.src;
        let luks = &src.st.luks[l];
        let path = src.norm(&luks.device);
        let Some(device) = self.dev.get(&path).cloned() else {
            return false;
        };
        let size = self.size.get(&path).copied().unwrap_or(0);
        let name = src.crypt_names[l].clone();
        let mapped = src.crypt_path(l);
        self.dev
            .insert(mapped.clone(), Device::Crypt { name: name.clone() });
        self.size
            .insert(mapped, size.saturating_sub(luks_header(luks.version)));
        self.steps.push(Step::CreateLuks {
            device,
            name,
            uuid: luks.uuid.clone(),
            version: luks.version.max(1),
            cipher: luks.cipher.clone(),
            label: luks.label.clone(),
        });
        true
    }

    /// Plans volume group `v` on its physical volumes, and its logical volumes scaled to it.
    fn vg(&mut self, v: usize, pvs: &[usize]) -> Result<(), PlanError> {
        let src = self.src;
        let st = src.st;
        let vg = &st.lvm_vgs[v];
        let extent = src.extent(&vg.name);
        let mut devices = Vec::new();
        let mut new_size = 0;
        let mut old_pvs = 0;
        for &p in pvs {
            let path = src.norm(&st.lvm_pvs[p].device);
            let size = self.size.get(&path).copied().unwrap_or(0);
            new_size += align_down(size.saturating_sub(PV_META), extent);
            old_pvs += align_down(st.lvm_pvs[p].size_bytes.saturating_sub(PV_META), extent);
            if let Some(d) = self.dev.get(&path) {
                devices.push(d.clone());
            }
        }
        let old_size = if vg.size_bytes > 0 {
            vg.size_bytes
        } else {
            old_pvs
        };
        self.steps.push(Step::CreateVg {
            name: vg.name.clone(),
            pvs: devices.clone(),
            extent_size: extent,
        });

        let lvs: Vec<&keel_profile::LvmLv> = src.lvs(&vg.name).collect();
        let needs: Vec<Need> = lvs.iter().map(|lv| src.lv_need(lv, 0)).collect();
        // Small volumes keep their size when the group has room for that; a group without it
        // shrinks them too, never below their data.
        let items = |shrink_small: bool| -> Vec<Scale> {
            lvs.iter()
                .zip(&needs)
                .map(|(lv, n)| Scale {
                    orig: lv.size_bytes,
                    min: n.bytes,
                    fixed: lv.size_bytes < SMALL && !shrink_small,
                    cap: None,
                })
                .collect()
        };
        let min_total: u64 = needs.iter().map(|n| align_up(n.bytes.max(1), extent)).sum();
        let list: Vec<String> = devices.iter().map(ToString::to_string).collect();
        self.volumes.push(VolumeChange {
            kind: VolumeKind::VolumeGroup,
            name: vg.name.clone(),
            old_bytes: old_size,
            new_bytes: new_size,
            min_bytes: min_total,
            reason: format!(
                "its physical volumes ({}) less 1 MiB of metadata each, in whole {} extents",
                list.join(", "),
                human(extent)
            ),
        });
        let mut scaled = scale(&items(false), new_size, old_size, extent);
        if scaled.is_none() && lvs.iter().any(|lv| lv.size_bytes < SMALL) {
            scaled = scale(&items(true), new_size, old_size, extent);
        }
        let Some(scaled) = scaled else {
            return Err(PlanError::DoesNotFit(Box::new(Shortfall {
                what: format!("volume group {}", vg.name),
                onto: format!("its new physical volumes ({})", list.join(", ")),
                usable_bytes: new_size,
                lines: lvs
                    .iter()
                    .zip(&needs)
                    .map(|(lv, n)| MinimumLine {
                        what: format!("{}/{}", lv.vg, lv.name),
                        min_bytes: align_up(n.bytes.max(1), extent),
                        why: format!("minimum: {}", n.why),
                    })
                    .collect(),
                hint: "give larger disks for its physical volumes".into(),
            })));
        };
        let f = factor(scaled.factor.0, scaled.factor.1);
        for ((lv, n), (size, how)) in lvs.iter().zip(&needs).zip(&scaled.sizes) {
            let mut reason = match how {
                How::Fixed => "fixed: small (under 1 GiB)".to_string(),
                How::Scaled | How::Capped => format!("scaled {f} with {}", vg.name),
                How::Raised => format!(
                    "scaled {f} with {} would be too small; raised to its minimum: {}",
                    vg.name, n.why
                ),
                How::Reduced => format!(
                    "scaled {f} with {}, then made smaller to fit the others' minimums (its own \
                     is {}: {})",
                    vg.name,
                    human(n.bytes),
                    n.why
                ),
            };
            if lv.size_bytes < SMALL && *how != How::Fixed {
                reason.insert_str(
                    0,
                    "small (under 1 GiB), but the volume group has no room to keep its size: ",
                );
            }
            let path = lv_path(&lv.vg, &lv.name);
            self.dev.insert(
                path.clone(),
                Device::Lv {
                    vg: lv.vg.clone(),
                    lv: lv.name.clone(),
                },
            );
            self.size.insert(path, *size);
            self.volumes.push(VolumeChange {
                kind: VolumeKind::LogicalVolume,
                name: format!("{}/{}", lv.vg, lv.name),
                old_bytes: lv.size_bytes,
                new_bytes: *size,
                min_bytes: if *how == How::Fixed { *size } else { n.bytes },
                reason,
            });
            self.steps.push(Step::CreateLv {
                vg: lv.vg.clone(),
                name: lv.name.clone(),
                size_bytes: *size,
                segtype: if lv.segtype.is_empty() {
                    "linear".into()
                } else {
                    lv.segtype.clone()
                },
            });
        }
        for lv in src.unsupported_lvs(&vg.name) {
            self.notes.push(format!(
                "{}/{} ({}) is not rebuilt: only linear and striped logical volumes are",
                lv.vg, lv.name, lv.segtype
            ));
        }
        if lvs.iter().any(|lv| lv.segtype == "striped") {
            self.notes.push(format!(
                "striped logical volumes of {} are created with LVM's default stripe count and \
                 size (the profile does not record them)",
                vg.name
            ));
        }
        Ok(())
    }

    /// Filesystems and swap on everything rebuilt.
    fn filesystems(&mut self) {
        let src = self.src;
        let mut made: Vec<Step> = Vec::new();
        for f in &src.filesystems {
            if Source::is_container(&f.fstype) {
                continue;
            }
            let path = src.norm(&f.device);
            let Some(device) = self.dev.get(&path).cloned() else {
                continue;
            };
            if f.fstype == "swap" {
                made.push(Step::Mkswap {
                    device,
                    uuid: f.uuid.clone(),
                    label: f.label.clone(),
                });
            } else if MKFS_TYPES.contains(&f.fstype.as_str()) {
                made.push(Step::Mkfs {
                    device,
                    fstype: f.fstype.clone(),
                    uuid: f.uuid.clone(),
                    label: f.label.clone(),
                });
            } else {
                self.notes.push(format!(
                    "the {} filesystem on {device} is not made again (the plan makes {})",
                    f.fstype,
                    MKFS_TYPES.join(", ")
                ));
            }
        }
        self.steps.extend(made);
    }

    /// Mounts, in fstab order with every parent before its children.
    fn mounts(&mut self) {
        let src = self.src;
        let mut mounts: Vec<(u8, Step)> = Vec::new();
        for m in src.mounts.iter().filter(|m| !m.swap) {
            if m.options.split(',').any(|o| o == "bind" || o == "rbind") {
                continue;
            }
            let Some(path) = &m.device else {
                if m.spec.contains('=') {
                    self.notes.push(format!(
                        "fstab mounts {} from {}, which the profile does not describe: not \
                         mounted",
                        m.mountpoint, m.spec
                    ));
                }
                continue;
            };
            let Some(device) = self.dev.get(path).cloned() else {
                self.notes.push(format!(
                    "{} ({}) is on nothing the plan rebuilds: not mounted",
                    m.mountpoint, m.spec
                ));
                continue;
            };
            if m.fstype == "btrfs" && m.options.contains("subvol") {
                self.notes.push(format!(
                    "{} mounts a btrfs subvolume ({}): subvolumes are not created by this plan",
                    m.mountpoint, m.options
                ));
            }
            mounts.push((
                0,
                Step::Mount {
                    device,
                    mountpoint: m.mountpoint.clone(),
                    fstype: m.fstype.clone(),
                    options: m.options.clone(),
                },
            ));
        }
        // fstab order, except that a mount listed before its parent waits for it.
        let mut mounts: Vec<Step> = mounts.into_iter().map(|(_, s)| s).collect();
        let point = |s: &Step| match s {
            Step::Mount { mountpoint, .. } => mountpoint.clone(),
            _ => String::new(),
        };
        let under = |child: &str, parent: &str| {
            child != parent
                && (parent == "/"
                    || child
                        .strip_prefix(parent)
                        .is_some_and(|rest| rest.starts_with('/')))
        };
        while !mounts.is_empty() {
            let next = (0..mounts.len())
                .find(|&i| {
                    let me = point(&mounts[i]);
                    !mounts.iter().any(|o| under(&me, &point(o)))
                })
                .unwrap_or(0);
            self.steps.push(mounts.remove(next));
        }
    }
}
