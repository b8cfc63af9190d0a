//! [`System`]: the executor that runs the storage tools — sfdisk, mdadm, cryptsetup, LVM, mkfs,
//! mount — with explicit arguments, on the devices the plan names, without udev.
//!
//! Devices are found through sysfs, never through `/dev/disk/by-*`: a disk by the kernel name
//! its path has now, an image file by the loop device it is attached to, a partition by its
//! number among the disk's partitions in sysfs. After a partition table is written the kernel
//! is made to see it (`blockdev --rereadpt`, else `partx`), and a device node that devtmpfs
//! does not make is made with mknod from the numbers sysfs gives. Each step checks its result
//! (the table with `sfdisk --json`, an array's UUID with `mdadm --detail`, a filesystem's UUID
//! and label with `blkid -p`, a mount in mountinfo) before it counts as done.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cmd::{Cmd, Output};
use crate::error::SystemError;
use crate::exec::{Executor, StepError};
use crate::guard::{Guard, Guards, Resource};
use crate::host::Host;
use crate::journal::DEFAULT_TARGET_ROOT;
use crate::kernel::{self, KernelPart};
use crate::plan::Plan;
use crate::size::human;
use crate::step::{NewPartition, Step, TableLabel};
use crate::target::{partition_path, Device, DiskKind, TargetDisk};
use crate::tools::{self, is_extended, mount_dir, same_uuid, Context, LVM_CONFIG};

/// How the dry run names the loop device an image file is not attached to yet:
/// `/dev/loop[disk0.img]`.
fn unattached(image: &str) -> String {
    let name = Path::new(image)
        .file_name()
        .map_or_else(|| image.to_string(), |n| n.to_string_lossy().into_owned());
    format!("/dev/loop[{name}]")
}

/// How the [`System`] executor runs.
#[derive(Debug, Clone)]
pub struct SystemOptions {
    /// The directory the rebuilt system is mounted under.
    pub target_root: PathBuf,
    /// The key LUKS volumes are made with and opened by.
    pub luks_key_file: Option<PathBuf>,
    /// The hostname md arrays are named after (`HOST:1`); the profiled system's by default,
    /// as mdadm named them there.
    pub homehost: Option<String>,
    /// How long to wait for devtmpfs (or udev) to make a device node before making it.
    pub node_wait: Duration,
}

impl SystemOptions {
    /// Options for applying `plan`: [`DEFAULT_TARGET_ROOT`], no key, md arrays named after the
    /// plan's host.
    pub fn for_plan(plan: &Plan) -> Self {
        SystemOptions {
            target_root: PathBuf::from(DEFAULT_TARGET_ROOT),
            luks_key_file: None,
            homehost: (!plan.source.hostname.is_empty()).then(|| plan.source.hostname.clone()),
            node_wait: Duration::from_secs(2),
        }
    }
}

/// Runs the storage tools on the machine it runs on. Everything it attaches, assembles,
/// opens, activates or mounts is held as a guard, released (latest first) when it is dropped,
/// unless kept with [`System::keep`].
#[derive(Debug)]
pub struct System {
    opts: SystemOptions,
    inventory: Vec<TargetDisk>,
    /// Target path → the kernel name of the device it is now.
    disks: HashMap<String, String>,
    guards: Guards,
}

/// What [`System::release`] did.
#[derive(Debug, Default)]
pub struct Released {
    /// Released cleanly, latest first.
    pub released: Vec<Resource>,
    /// Not released cleanly, with why.
    pub failed: Vec<(Resource, SystemError)>,
}

impl System {
    /// An executor for `plan`. Nothing is touched until a step runs.
    pub fn new(plan: &Plan, opts: SystemOptions) -> Self {
        System {
            opts,
            inventory: plan.inventory.clone(),
            disks: HashMap::new(),
            guards: Guards::default(),
        }
    }

    /// The options it runs with.
    pub fn options(&self) -> &SystemOptions {
        &self.opts
    }

    /// What it holds, in the order taken.
    pub fn held(&self) -> Vec<Resource> {
        self.guards.resources()
    }

    /// Keeps everything it holds (the mounted target, for the next phase of the recovery):
    /// nothing is released when it is dropped. Returns what is kept, in the order taken.
    pub fn keep(&mut self) -> Vec<Resource> {
        self.guards.keep()
    }

    /// Releases everything it holds, latest first: unmounts, closes LUKS volumes, deactivates
    /// volume groups, stops arrays, detaches loop devices.
    pub fn release(&mut self) -> Released {
        let held = self.guards.resources();
        let failed = self.guards.release();
        let released = held
            .into_iter()
            .rev()
            .filter(|r| !failed.iter().any(|(f, _)| f == r))
            .collect();
        Released { released, failed }
    }

    /// Takes charge of what an earlier apply of `plan` left in place — loop devices of its
    /// images, its arrays, LUKS volumes and active volume groups, and every mount under the
    /// target root — so that [`System::release`] undoes it.
    pub fn adopt_existing(&mut self, plan: &Plan) -> Result<(), SystemError> {
        let mut ours: BTreeSet<String> = BTreeSet::new();
        for t in used_targets(plan) {
            if t.kind == DiskKind::Image {
                for lo in kernel::loops_of(Path::new(&t.path)) {
                    self.disks.insert(t.path.clone(), lo.clone());
                    ours.insert(lo.clone());
                    self.hold(Resource::LoopDevice {
                        device: format!("/dev/{lo}"),
                        image: PathBuf::from(&t.path),
                    });
                }
            } else if let Some(name) = Self::current_name(t) {
                ours.insert(name);
            }
        }
        // Only what is built on the plan's disks: a device of the same name elsewhere (the
        // old system's, opened by hand) is not this apply's to undo.
        let on_ours = |kname: &str| kernel::disks_under(kname).iter().any(|d| ours.contains(d));
        for step in &plan.steps {
            match step {
                Step::CreateRaid {
                    device: Device::Md { name },
                    ..
                } if kernel::exists(name) && (on_ours(name) || kernel::slaves(name).is_empty()) => {
                    self.hold(Resource::Array {
                        device: format!("/dev/{name}"),
                    });
                }
                Step::CreateLuks { name, .. }
                    if kernel::dm_kernel_name(name).is_some_and(|k| on_ours(&k)) =>
                {
                    self.hold(Resource::Luks { name: name.clone() });
                }
                Step::CreateVg { name, .. } => {
                    let prefix = format!("{}-", name.replace('-', "--"));
                    let active = kernel::dm_names()
                        .into_iter()
                        .filter(|n| n.starts_with(&prefix))
                        .filter_map(|n| kernel::dm_kernel_name(&n))
                        .any(|k| on_ours(&k));
                    if active {
                        self.hold(Resource::VolumeGroup { name: name.clone() });
                    }
                }
                _ => {}
            }
        }
        let root = canonical(&self.opts.target_root);
        for m in kernel::mounts()? {
            if Path::new(&m.mountpoint).starts_with(&root) {
                self.hold(Resource::Mount {
                    device: m.source.clone(),
                    at: PathBuf::from(&m.mountpoint),
                });
            }
        }
        Ok(())
    }

    /// The commands `step` runs, as the dry run shows them; lines starting with `#` say what
    /// else it does. Devices not there yet are named as they will be; an image file not
    /// attached yet is `/dev/loop[FILE-NAME]`. Touches nothing.
    pub fn preview(&self, step: &Step) -> Result<Vec<String>, SystemError> {
        let cx = self.context(step, false);
        let cmds = tools::commands(step, &|d| self.name_of(d), &cx)?;
        let mut lines: Vec<String> = cmds.iter().map(ToString::to_string).collect();
        match step {
            Step::PartitionTable { .. } => {
                lines.push(
                    "# then: make the kernel see the new partitions (blockdev --rereadpt, else \
                     partx), and wipefs --all each of them"
                        .into(),
                );
            }
            Step::WipeSignatures { .. } => {
                lines.insert(
                    0,
                    "# first: wipefs --all on each partition it has now".into(),
                );
            }
            _ => {}
        }
        Ok(lines)
    }

    fn hold(&mut self, r: Resource) {
        if !self.guards.holds(&r) {
            self.guards.push(Guard::adopt(r));
        }
    }

    /// The kernel name a block-device target has now (its path may be a by-id link).
    fn current_name(t: &TargetDisk) -> Option<String> {
        Host::system()
            .target(&t.path)
            .ok()
            .and_then(|d| d.name)
            .or_else(|| t.name.clone())
    }

    /// The kernel name of target disk `path`, once [`Executor::prepare`] found it.
    fn kname(&self, path: &str) -> Result<String, SystemError> {
        self.disks.get(path).cloned().ok_or_else(|| {
            SystemError::unexpected(format!("{path} is not a target disk of the plan"))
        })
    }

    /// A device's node as far as it is known now, without touching anything.
    fn name_of(&self, d: &Device) -> String {
        match d {
            Device::Disk { disk } => self.disk_node(disk),
            Device::Partition { disk, number } => {
                let known = self
                    .disks
                    .get(disk)
                    .cloned()
                    .or_else(|| self.attached(disk));
                if let Some(k) = known {
                    if let Some(p) = kernel::partitions(&k).iter().find(|p| p.number == *number) {
                        return format!("/dev/{}", p.name);
                    }
                }
                let node = self.disk_node(disk);
                if node.ends_with(']') {
                    format!("{node}p{number}")
                } else {
                    partition_path(&node, *number)
                }
            }
            Device::Md { name } => format!("/dev/{name}"),
            Device::Lv { vg, lv } => format!("/dev/mapper/{}", mapper_name(vg, lv)),
            Device::Crypt { name } => format!("/dev/mapper/{name}"),
        }
    }

    fn disk_node(&self, disk: &str) -> String {
        if let Some(k) = self
            .disks
            .get(disk)
            .cloned()
            .or_else(|| self.attached(disk))
        {
            return format!("/dev/{k}");
        }
        match self.inventory.iter().find(|t| t.path == disk) {
            Some(t) if t.kind == DiskKind::Image => unattached(&t.path),
            Some(t) => t.dev_path().unwrap_or_else(|| disk.to_string()),
            None => disk.to_string(),
        }
    }

    /// The loop device an image target is attached to already, if one is.
    fn attached(&self, disk: &str) -> Option<String> {
        let t = self.inventory.iter().find(|t| t.path == disk)?;
        (t.kind == DiskKind::Image)
            .then(|| kernel::loops_of(Path::new(disk)).into_iter().next())
            .flatten()
    }

    /// A device's node, made if it is missing.
    fn node(&self, d: &Device) -> Result<String, SystemError> {
        let wait = self.opts.node_wait;
        match d {
            Device::Disk { disk } => {
                let k = self.kname(disk)?;
                let path = format!("/dev/{}", k.replace('!', "/"));
                kernel::ensure_node(Path::new(&path), &k, wait)?;
                Ok(path)
            }
            Device::Partition { disk, number } => {
                let k = self.kname(disk)?;
                let Some(p) = kernel::partitions(&k)
                    .into_iter()
                    .find(|p| p.number == *number)
                else {
                    return Err(SystemError::unexpected(format!(
                        "partition {number} of /dev/{k} ({disk}) is not known to the kernel\n\
                         hint: the partition table step makes it; run the plan from the start"
                    )));
                };
                let path = format!("/dev/{}", p.name.replace('!', "/"));
                kernel::ensure_node(Path::new(&path), &p.name, wait)?;
                Ok(path)
            }
            Device::Md { name } => {
                let path = format!("/dev/{name}");
                kernel::ensure_node(Path::new(&path), name, wait)?;
                Ok(path)
            }
            Device::Lv { vg, lv } => mapper_node(&mapper_name(vg, lv)),
            Device::Crypt { name } => mapper_node(name),
        }
    }

    /// What the commands of `step` need besides its devices.
    fn context(&self, step: &Step, live: bool) -> Context<'_> {
        let mut cx = Context {
            luks_key_file: self.opts.luks_key_file.as_deref(),
            homehost: self.opts.homehost.as_deref(),
            target_root: Some(&self.opts.target_root),
            sector_size: 512,
            stripes: None,
        };
        match step {
            Step::PartitionTable { disk, .. } => {
                let path = disk.disk().unwrap_or_default();
                cx.sector_size = match (live, self.disks.get(path)) {
                    (true, Some(k)) => kernel::logical_sector_size(k),
                    _ => self
                        .inventory
                        .iter()
                        .find(|t| t.path == path)
                        .map_or(512, |t| t.logical_sector_size.max(512)),
                };
            }
            Step::CreateLv { vg, segtype, .. } if live && segtype == "striped" => {
                cx.stripes = lvm_query(&["vgs", "--noheadings", "-o", "pv_count", vg])
                    .ok()
                    .and_then(|s| s.trim().parse().ok());
            }
            _ => {}
        }
        cx
    }

    /// Runs the tool commands of `step`, with its input devices resolved.
    fn run_commands(&self, step: &Step) -> Result<Vec<Output>, SystemError> {
        let mut nodes: HashMap<Device, String> = HashMap::new();
        for d in inputs(step) {
            nodes.insert(d.clone(), self.node(d)?);
        }
        let cx = self.context(step, true);
        let cmds = tools::commands(
            step,
            &|d| nodes.get(d).cloned().unwrap_or_else(|| self.name_of(d)),
            &cx,
        )?;
        cmds.iter().map(Cmd::run).collect()
    }

    // ------------------------------------------------------------------ steps

    fn wipe(&self, disk: &Device) -> Result<String, SystemError> {
        let dev = self.node(disk)?;
        let k = self.kname(disk.disk().unwrap_or_default())?;
        // An image's old partitions show only when the kernel is told about them.
        let _ = Cmd::new("partx", &["-a", &dev]).output();
        let parts = kernel::partitions(&k);
        let mut erased = 0;
        for p in &parts {
            let node = format!("/dev/{}", p.name);
            kernel::ensure_node(Path::new(&node), &p.name, self.opts.node_wait)?;
            erased += erased_count(&Cmd::new("wipefs", &["--all", &node]).run()?);
        }
        erased += erased_count(&Cmd::new("wipefs", &["--all", &dev]).run()?);
        Ok(format!(
            "erased {erased} signature{} on {dev} and its {} old partition{}",
            plural(erased),
            parts.len(),
            plural(parts.len())
        ))
    }

    fn partition_table(
        &self,
        step: &Step,
        disk: &Device,
        label: TableLabel,
        table_id: Option<&str>,
        parts: &[NewPartition],
    ) -> Result<String, SystemError> {
        self.run_commands(step)?;
        let dev = self.node(disk)?;
        let k = self.kname(disk.disk().unwrap_or_default())?;
        let how = sync_partitions(&dev, &k, parts)?;
        // Old signatures at the new partitions' offsets (an md superblock at the end, an LVM
        // label) would otherwise be found again by the tools that come next.
        let mut erased = 0;
        for p in parts.iter().filter(|p| !is_extended(&p.part_type)) {
            let node = self.node(&Device::Partition {
                disk: disk.disk().unwrap_or_default().to_string(),
                number: p.number,
            })?;
            erased += erased_count(&Cmd::new("wipefs", &["--all", &node]).run()?);
        }
        check_table(&dev, label, table_id, parts)?;
        Ok(format!(
            "{} table with {} partition{} written and checked; the kernel sees them ({how}); \
             {erased} old signature{} erased inside them",
            label.as_str(),
            parts.len(),
            plural(parts.len()),
            plural(erased)
        ))
    }

    fn resume_table(
        &self,
        disk: &Device,
        label: TableLabel,
        table_id: Option<&str>,
        parts: &[NewPartition],
    ) -> Result<String, SystemError> {
        let dev = self.node(disk)?;
        let k = self.kname(disk.disk().unwrap_or_default())?;
        check_table(&dev, label, table_id, parts)?;
        let how = sync_partitions(&dev, &k, parts)?;
        for p in parts.iter().filter(|p| !is_extended(&p.part_type)) {
            self.node(&Device::Partition {
                disk: disk.disk().unwrap_or_default().to_string(),
                number: p.number,
            })?;
        }
        Ok(format!(
            "the table on {dev} is as planned; the kernel sees it ({how})"
        ))
    }

    fn raid(&mut self, step: &Step, resuming: bool) -> Result<String, SystemError> {
        let Step::CreateRaid {
            device,
            devices,
            spares,
            uuid,
            size_bytes,
            level,
            ..
        } = step
        else {
            unreachable!("called for CreateRaid")
        };
        let Device::Md { name } = device else {
            return Err(SystemError::unexpected(format!(
                "{device} is not an md array"
            )));
        };
        let dev = format!("/dev/{name}");
        let mut members = Vec::new();
        for d in devices.iter().chain(spares) {
            members.push(self.node(d)?);
        }
        let member_names: BTreeSet<String> = members
            .iter()
            .filter_map(|m| kernel::name_of_node(Path::new(m)))
            .collect();
        let running_on_ours = kernel::md_running(name)
            && kernel::slaves(name)
                .iter()
                .all(|s| member_names.contains(s));
        let how = if running_on_ours {
            "running already"
        } else if resuming {
            let mut c = Cmd::new("mdadm", &["--assemble", &dev, "--run"])
                .env("MDADM_NO_UDEV", "1")
                .env("MDADM_NO_SYSTEMCTL", "1")
                .timeout(crate::cmd::WRITE);
            if let Some(m) = uuid.as_deref().and_then(tools::mdadm_uuid) {
                c = c.arg(format!("--uuid={m}"));
            }
            for m in &members {
                c = c.arg(m.clone());
            }
            c.run()?;
            "assembled"
        } else {
            self.run_commands(step)?;
            "created"
        };
        self.hold(Resource::Array {
            device: dev.clone(),
        });
        kernel::ensure_node(Path::new(&dev), name, self.opts.node_wait)?;
        if how == "created" {
            // Rebuilt on the disks it was on, the array's data starts where the old one's
            // did, with the old LVM label or filesystem still there to be found.
            Cmd::new("wipefs", &["--all", &dev]).run()?;
        }
        let detail = Cmd::new("mdadm", &["--detail", "--export", &dev])
            .env("MDADM_NO_UDEV", "1")
            .run()?;
        let found = export_value(&detail.stdout, "MD_UUID").unwrap_or_default();
        if let Some(u) = uuid {
            if !same_uuid(&found, u) {
                return Err(SystemError::unexpected(format!(
                    "{dev} has UUID {found}, the plan asks for {u}"
                )));
            }
        }
        let size = kernel::size_bytes(name).unwrap_or(0);
        if !resuming && size < *size_bytes {
            return Err(SystemError::unexpected(format!(
                "{dev} holds {} ({size} bytes), less than the {} ({size_bytes} bytes) the plan \
                 needs on it\nhint: the plan underestimated md's overhead on these members; \
                 make the plan again",
                human(size),
                human(*size_bytes)
            )));
        }
        Ok(format!(
            "{level} array {dev} {how}: {}, UUID {found}, on {}",
            human(size),
            members.join(", ")
        ))
    }

    fn luks(&mut self, step: &Step, resuming: bool) -> Result<String, SystemError> {
        let Step::CreateLuks {
            device,
            name,
            uuid,
            version,
            ..
        } = step
        else {
            unreachable!("called for CreateLuks")
        };
        let Some(key) = self.opts.luks_key_file.clone() else {
            return Err(no_key(device));
        };
        let dev = self.node(device)?;
        let dev_name = kernel::name_of_node(Path::new(&dev)).unwrap_or_default();
        let open_on_ours =
            kernel::dm_kernel_name(name).is_some_and(|dm| kernel::slaves(&dm).contains(&dev_name));
        let header_ok = || -> Result<bool, SystemError> {
            let out = Cmd::new("cryptsetup", &["luksUUID", &dev]).output()?;
            Ok(out.status.success() && same_uuid(out.stdout.trim(), uuid))
        };
        let how = if open_on_ours && header_ok()? {
            "open already"
        } else if resuming {
            if !header_ok()? {
                return Err(SystemError::unexpected(format!(
                    "{dev} no longer has the LUKS header with UUID {uuid}"
                )));
            }
            open(&dev, name, &key)?;
            "opened"
        } else {
            let cmds = {
                let nodes: HashMap<Device, String> = [(device.clone(), dev.clone())].into();
                tools::commands(
                    step,
                    &|d| nodes.get(d).cloned().unwrap_or_else(|| self.name_of(d)),
                    &self.context(step, true),
                )?
            };
            for c in &cmds {
                c.run()?;
            }
            if !header_ok()? {
                return Err(SystemError::unexpected(format!(
                    "cryptsetup made a LUKS header on {dev} without the UUID {uuid}"
                )));
            }
            "made and opened"
        };
        self.hold(Resource::Luks { name: name.clone() });
        let mapped = mapper_node(name)?;
        Ok(format!(
            "LUKS{version} volume on {dev} {how} as {mapped}, UUID {uuid}"
        ))
    }

    fn pv(
        &self,
        step: &Step,
        device: &Device,
        uuid: Option<&str>,
        resuming: bool,
    ) -> Result<String, SystemError> {
        if !resuming {
            self.run_commands(step)?;
        }
        let dev = self.node(device)?;
        let found = check_signature(&dev, "LVM2_member", uuid, None)?;
        Ok(format!("physical volume {dev}, UUID {found}"))
    }

    fn vg(&mut self, step: &Step, resuming: bool) -> Result<String, SystemError> {
        let Step::CreateVg { name, pvs, .. } = step else {
            unreachable!("called for CreateVg")
        };
        let mut want = BTreeSet::new();
        for p in pvs {
            let node = self.node(p)?;
            want.insert(kernel::name_of_node(Path::new(&node)).unwrap_or(node));
        }
        // The group as it is, when it is there: it must be on the plan's physical volumes.
        let existing = || -> Result<bool, SystemError> {
            let Ok(list) = lvm_query(&["vgs", "--noheadings", "-o", "pv_name", name]) else {
                return Ok(false);
            };
            let have: BTreeSet<String> = list
                .split_whitespace()
                .map(|p| kernel::name_of_node(Path::new(p)).unwrap_or_else(|| p.to_string()))
                .collect();
            if have == want {
                Ok(true)
            } else {
                Err(SystemError::unexpected(format!(
                    "a volume group {name} exists on {}, not on the plan's physical volumes\n\
                     hint: rename the other one (vgrename) or remove it, if it is not needed",
                    list.split_whitespace().collect::<Vec<_>>().join(", ")
                )))
            }
        };
        let how = if resuming {
            if !existing()? {
                return Err(SystemError::unexpected(format!(
                    "volume group {name} is not found"
                )));
            }
            lvm_query(&["vgchange", "--activate", "y", name])?;
            "found and activated"
        } else {
            match self.run_commands(step) {
                Ok(_) => "created",
                // Made by a run that was stopped before it could say so.
                Err(e) => {
                    if !existing()? {
                        return Err(e);
                    }
                    lvm_query(&["vgchange", "--activate", "y", name])?;
                    "found already made"
                }
            }
        };
        self.hold(Resource::VolumeGroup { name: name.clone() });
        Ok(format!(
            "volume group {name} {how} on {} physical volume{}",
            want.len(),
            plural(want.len())
        ))
    }

    fn lv(&mut self, step: &Step, resuming: bool) -> Result<String, SystemError> {
        let Step::CreateLv {
            vg,
            name,
            size_bytes,
            ..
        } = step
        else {
            unreachable!("called for CreateLv")
        };
        let full = format!("{vg}/{name}");
        let mapped = mapper_name(vg, name);
        let how = if resuming {
            if kernel::dm_kernel_name(&mapped).is_some() {
                "found active"
            } else {
                lvm_query(&["lvchange", "--activate", "y", &full]).map_err(|e| {
                    SystemError::unexpected(format!(
                        "logical volume {full} cannot be activated: {e}"
                    ))
                })?;
                "found and activated"
            }
        } else {
            match self.run_commands(step) {
                Ok(_) => "created",
                // Made by a run that was stopped before it could say so.
                Err(e) => {
                    let exists = lvm_query(&["lvs", "--noheadings", "-o", "lv_name", &full])
                        .is_ok_and(|o| o.trim() == name);
                    if !exists {
                        return Err(e);
                    }
                    lvm_query(&["lvchange", "--activate", "y", &full])?;
                    "found already made"
                }
            }
        };
        self.hold(Resource::VolumeGroup { name: vg.clone() });
        let node = self.node(&Device::Lv {
            vg: vg.clone(),
            lv: name.clone(),
        })?;
        let got = kernel::dm_kernel_name(&mapped)
            .and_then(|k| kernel::size_bytes(&k))
            .unwrap_or(0);
        if got < *size_bytes {
            return Err(SystemError::unexpected(format!(
                "logical volume {full} has {} ({got} bytes), the plan asks for {} \
                 ({size_bytes} bytes)",
                human(got),
                human(*size_bytes)
            )));
        }
        Ok(format!(
            "logical volume {full} {how}: {node}, {}",
            human(got)
        ))
    }

    fn mkfs(&self, step: &Step, resuming: bool) -> Result<String, SystemError> {
        let (device, fstype, uuid, label) = match step {
            Step::Mkfs {
                device,
                fstype,
                uuid,
                label,
            } => (device, fstype.as_str(), uuid.as_deref(), label.as_deref()),
            Step::Mkswap {
                device,
                uuid,
                label,
            } => (device, "swap", uuid.as_deref(), label.as_deref()),
            _ => unreachable!("called for Mkfs and Mkswap"),
        };
        if !resuming {
            self.run_commands(step)?;
        }
        let dev = self.node(device)?;
        let found = check_signature(&dev, fstype, uuid, label)?;
        let mut s = format!("{fstype} on {dev}, UUID {found}");
        if let Some(l) = label {
            let _ = write!(s, ", label {l}");
        }
        s.push_str(" (checked with blkid -p)");
        Ok(s)
    }

    fn mount(&mut self, step: &Step) -> Result<String, SystemError> {
        let Step::Mount {
            device,
            mountpoint,
            fstype,
            options,
        } = step
        else {
            unreachable!("called for Mount")
        };
        let dev = self.node(device)?;
        let at = mount_dir(&self.opts.target_root, mountpoint);
        let want = kernel::node_numbers(Path::new(&dev));
        let how = match kernel::mounted_on(&at)? {
            Some(m) if Some((m.major, m.minor)) == want => {
                self.hold(Resource::Mount {
                    device: dev.clone(),
                    at: canonical(&at),
                });
                "mounted already"
            }
            Some(m) => {
                return Err(SystemError::unexpected(format!(
                    "{} has {} mounted on it, not {dev}\nhint: unmount it, or choose another \
                     --target-root",
                    at.display(),
                    m.source
                )))
            }
            None => {
                let g = Guard::mount(&dev, &at, fstype, options)?;
                self.guards.push(g);
                "mounted"
            }
        };
        match kernel::mounted_on(&at)? {
            Some(m) if Some((m.major, m.minor)) == want => {}
            _ => {
                return Err(SystemError::unexpected(format!(
                    "mount reported success, but {} is not mounted on {}",
                    dev,
                    at.display()
                )))
            }
        }
        Ok(format!("{dev} {how} on {} ({fstype})", at.display()))
    }

    fn step(&mut self, step: &Step, resuming: bool) -> Result<String, SystemError> {
        match step {
            Step::WipeSignatures { disk } => {
                if resuming {
                    self.node(disk)?;
                    Ok("nothing to check: the steps after it rewrite the disk".into())
                } else {
                    self.wipe(disk)
                }
            }
            Step::PartitionTable {
                disk,
                label,
                table_id,
                partitions,
            } => {
                if resuming {
                    self.resume_table(disk, *label, table_id.as_deref(), partitions)
                } else {
                    self.partition_table(step, disk, *label, table_id.as_deref(), partitions)
                }
            }
            Step::CreateRaid { .. } => self.raid(step, resuming),
            Step::CreateLuks { .. } => self.luks(step, resuming),
            Step::CreatePv { device, uuid } => self.pv(step, device, uuid.as_deref(), resuming),
            Step::CreateVg { .. } => self.vg(step, resuming),
            Step::CreateLv { .. } => self.lv(step, resuming),
            Step::Mkfs { .. } | Step::Mkswap { .. } => self.mkfs(step, resuming),
            Step::Mount { .. } => self.mount(step),
        }
    }
}

impl Executor for System {
    /// Finds each target disk's kernel name, attaching image files to loop devices (or
    /// taking over the loop device an image is attached to already).
    fn prepare(&mut self, plan: &Plan) -> Result<(), StepError> {
        refuse_root(&self.opts.target_root)?;
        if plan
            .steps
            .iter()
            .any(|s| matches!(s, Step::CreateLuks { .. }))
        {
            match &self.opts.luks_key_file {
                None => {
                    let d = plan
                        .steps
                        .iter()
                        .find_map(|s| match s {
                            Step::CreateLuks { device, .. } => Some(device.clone()),
                            _ => None,
                        })
                        .expect("found above");
                    return Err(no_key(&d).into());
                }
                Some(k) if !k.is_file() => {
                    return Err(SystemError::unexpected(format!(
                        "the LUKS key file {} does not exist or is not a file",
                        k.display()
                    ))
                    .into())
                }
                Some(_) => {}
            }
        }
        for t in used_targets(plan) {
            if t.kind == DiskKind::Image {
                let image = PathBuf::from(&t.path);
                let attached = kernel::loops_of(&image);
                let lo = match attached.as_slice() {
                    [] => {
                        let g = Guard::attach(&image)?;
                        let Resource::LoopDevice { device, .. } = g.resource().clone() else {
                            unreachable!("attach makes a loop device")
                        };
                        self.guards.push(g);
                        device.trim_start_matches("/dev/").to_string()
                    }
                    [one] => {
                        let device = format!("/dev/{one}");
                        self.hold(Resource::LoopDevice {
                            device: device.clone(),
                            image: image.clone(),
                        });
                        let _ = Cmd::new("partx", &["-a", &device]).output();
                        one.clone()
                    }
                    many => {
                        return Err(SystemError::unexpected(format!(
                            "{} is attached to several loop devices ({}): writing through one \
                             while another is in use corrupts it\nhint: detach the others \
                             (losetup -d)",
                            t.path,
                            many.join(", ")
                        ))
                        .into())
                    }
                };
                self.disks.insert(t.path.clone(), lo);
            } else {
                let name = Self::current_name(t).ok_or_else(|| {
                    SystemError::unexpected(format!("{} is not a block device now", t.path))
                })?;
                self.disks.insert(t.path.clone(), name);
            }
        }
        Ok(())
    }

    fn label(&self, step: &Step) -> String {
        let n = |d: &Device| self.name_of(d);
        match step {
            Step::WipeSignatures { disk } => format!("wipefs --all {} and its partitions", n(disk)),
            Step::PartitionTable {
                disk,
                label,
                partitions,
                ..
            } => format!(
                "sfdisk {} ({}, {} partition{})",
                n(disk),
                label.as_str(),
                partitions.len(),
                plural(partitions.len())
            ),
            Step::CreateRaid {
                device,
                level,
                devices,
                uuid,
                ..
            } => {
                let m: Vec<String> = devices.iter().map(n).collect();
                let mut s = format!("mdadm --create {} ({level} on {}", n(device), m.join(", "));
                if let Some(u) = uuid {
                    let _ = write!(s, ", UUID {u}");
                }
                s.push(')');
                s
            }
            Step::CreateLuks {
                device,
                name,
                uuid,
                version,
                ..
            } => format!(
                "cryptsetup luksFormat {} (LUKS{version}, UUID {uuid}) and open as {name}",
                n(device)
            ),
            Step::CreatePv { device, uuid } => match uuid {
                Some(u) => format!("pvcreate {} (UUID {u})", n(device)),
                None => format!("pvcreate {}", n(device)),
            },
            Step::CreateVg {
                name,
                pvs,
                extent_size,
            } => {
                let p: Vec<String> = pvs.iter().map(n).collect();
                format!(
                    "vgcreate {name} on {} ({} extents)",
                    p.join(", "),
                    human(*extent_size)
                )
            }
            Step::CreateLv {
                vg,
                name,
                size_bytes,
                ..
            } => format!("lvcreate {vg}/{name} ({})", human(*size_bytes)),
            Step::Mkfs {
                device,
                fstype,
                uuid,
                label,
            } => {
                let mut s = format!("mkfs.{fstype} {}", n(device));
                match (uuid, label) {
                    (Some(u), Some(l)) => {
                        let _ = write!(s, " (UUID {u}, label {l})");
                    }
                    (Some(u), None) => {
                        let _ = write!(s, " (UUID {u})");
                    }
                    (None, Some(l)) => {
                        let _ = write!(s, " (label {l})");
                    }
                    (None, None) => {}
                }
                s
            }
            Step::Mkswap { device, uuid, .. } => match uuid {
                Some(u) => format!("mkswap {} (UUID {u})", n(device)),
                None => format!("mkswap {}", n(device)),
            },
            Step::Mount {
                device,
                mountpoint,
                fstype,
                ..
            } => format!(
                "mount {} on {} ({fstype})",
                n(device),
                mount_dir(&self.opts.target_root, mountpoint).display()
            ),
        }
    }

    fn run(&mut self, _number: usize, step: &Step) -> Result<String, StepError> {
        Ok(self.step(step, false)?)
    }

    fn resume(&mut self, _number: usize, step: &Step) -> Result<String, StepError> {
        Ok(self.step(step, true)?)
    }
}

/// Undoes what applying `plan` left in place (kept with `--keep-mounted`, or left by a run
/// that was killed): unmounts everything under `target_root`, closes the plan's LUKS
/// volumes, deactivates its volume groups, stops its arrays and detaches the loop devices of
/// its image files, in that order.
pub fn release(plan: &Plan, target_root: &Path) -> Result<Released, SystemError> {
    refuse_root(target_root)?;
    let mut opts = SystemOptions::for_plan(plan);
    opts.target_root = target_root.to_path_buf();
    let mut s = System::new(plan, opts);
    s.adopt_existing(plan)?;
    Ok(s.release())
}

/// The target root must be a directory of its own, never the running system's root.
fn refuse_root(root: &Path) -> Result<(), SystemError> {
    if canonical(root) == Path::new("/") {
        return Err(SystemError::unexpected(
            "the target root is /, the running system's root\nhint: give a directory of its \
             own, e.g. --target-root /mnt/keel-target",
        ));
    }
    Ok(())
}

/// The targets some step uses.
fn used_targets(plan: &Plan) -> Vec<&TargetDisk> {
    let used: BTreeSet<&str> = plan
        .steps
        .iter()
        .flat_map(Step::devices)
        .filter_map(Device::disk)
        .collect();
    plan.inventory
        .iter()
        .filter(|t| used.contains(t.path.as_str()))
        .collect()
}

/// The devices a step reads or builds on (not those it creates).
fn inputs(step: &Step) -> Vec<&Device> {
    match step {
        Step::WipeSignatures { disk } | Step::PartitionTable { disk, .. } => vec![disk],
        Step::CreateRaid {
            devices, spares, ..
        } => devices.iter().chain(spares).collect(),
        Step::CreateLuks { device, .. }
        | Step::CreatePv { device, .. }
        | Step::Mkfs { device, .. }
        | Step::Mkswap { device, .. }
        | Step::Mount { device, .. } => vec![device],
        Step::CreateVg { pvs, .. } => pvs.iter().collect(),
        Step::CreateLv { .. } => Vec::new(),
    }
}

/// Device-mapper's name for an LVM volume: dashes in names doubled.
fn mapper_name(vg: &str, lv: &str) -> String {
    format!("{}-{}", vg.replace('-', "--"), lv.replace('-', "--"))
}

/// `/dev/mapper/NAME`, made from sysfs if libdevmapper did not make it.
fn mapper_node(name: &str) -> Result<String, SystemError> {
    let path = format!("/dev/mapper/{name}");
    let Some(k) = kernel::dm_kernel_name(name) else {
        return Err(SystemError::unexpected(format!(
            "there is no device-mapper device {name}"
        )));
    };
    kernel::ensure_node(Path::new(&path), &k, Duration::from_millis(200))?;
    Ok(path)
}

fn open(dev: &str, name: &str, key: &Path) -> Result<(), SystemError> {
    Cmd::new(
        "cryptsetup",
        &[
            "open",
            "--type",
            "luks",
            "--key-file",
            &key.display().to_string(),
            dev,
            name,
        ],
    )
    .env("DM_DISABLE_UDEV", "1")
    .timeout(crate::cmd::WRITE)
    .run()?;
    Ok(())
}

fn no_key(device: &Device) -> SystemError {
    SystemError::unexpected(format!(
        "the plan encrypts {device} with LUKS, and no key was given\nhint: give the key with \
         --luks-key-file FILE: the whole file is the key, so for a passphrase typed at boot \
         write it without a newline (printf %s 'PASSPHRASE' > FILE)"
    ))
}

/// Runs an LVM command with the udev-free settings; its standard output.
fn lvm_query(args: &[&str]) -> Result<String, SystemError> {
    let (program, rest) = args.split_first().expect("a program");
    let mut c = Cmd::new(program, &["--config", LVM_CONFIG]).env("DM_DISABLE_UDEV", "1");
    for a in rest {
        c = c.arg(*a);
    }
    Ok(c.run()?.stdout)
}

fn canonical(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// How many signatures a `wipefs --all` run says it erased.
fn erased_count(out: &Output) -> usize {
    out.stdout
        .lines()
        .chain(out.stderr.lines())
        .filter(|l| l.contains("bytes were erased"))
        .count()
}

/// A `KEY=value` line's value in `--export` output.
fn export_value(text: &str, key: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .map(|v| v.trim().to_string())
}

/// Checks with `blkid -p` that `dev` holds `fstype` with this UUID and label; returns the UUID.
fn check_signature(
    dev: &str,
    fstype: &str,
    uuid: Option<&str>,
    label: Option<&str>,
) -> Result<String, SystemError> {
    let out = Cmd::new("blkid", &["-p", "-o", "export", dev]).output()?;
    // Status 2: nothing found.
    if !out.status.success() && out.status.code() != Some(2) {
        return Err(Cmd::new("blkid", &["-p", "-o", "export", dev]).failed(&out));
    }
    let get = |k: &str| export_value(&out.stdout, k);
    let found_type = get("TYPE").unwrap_or_else(|| "nothing".into());
    let found_uuid = get("UUID").unwrap_or_default();
    let mut wrong = Vec::new();
    if found_type != fstype {
        wrong.push(format!("type {found_type} where the plan makes {fstype}"));
    }
    if let Some(u) = uuid {
        if !same_uuid(&found_uuid, u) {
            wrong.push(format!(
                "UUID {} where the plan keeps {u}",
                if found_uuid.is_empty() {
                    "none"
                } else {
                    &found_uuid
                }
            ));
        }
    }
    if let Some(l) = label {
        let found = get("LABEL").unwrap_or_default();
        let same = if fstype == "vfat" {
            found.eq_ignore_ascii_case(l)
        } else {
            found == l
        };
        if !same {
            wrong.push(format!("label {found:?} where the plan keeps {l:?}"));
        }
    }
    if wrong.is_empty() {
        Ok(found_uuid)
    } else {
        Err(SystemError::unexpected(format!(
            "blkid -p finds on {dev}: {}",
            wrong.join("; ")
        )))
    }
}

/// Makes the kernel's partitions of `disk` those of the table just written: its own parser
/// first (`blockdev --rereadpt`), `partx` where it has none or the device does not allow
/// re-reading (a loop device attached without `-P`). Returns how.
fn sync_partitions(dev: &str, disk: &str, parts: &[NewPartition]) -> Result<String, SystemError> {
    let matches = |have: &[KernelPart]| {
        have.len() == parts.len()
            && parts.iter().all(|p| {
                have.iter().any(|h| {
                    h.number == p.number
                        && h.start * 512 == p.start_bytes
                        && (is_extended(&p.part_type) || h.size * 512 == p.size_bytes)
                })
            })
    };
    if matches(&kernel::partitions(disk)) {
        return Ok("seen already".into());
    }
    let reread = Cmd::new("blockdev", &["--rereadpt", dev]).output()?;
    if reread.status.success() && matches(&kernel::partitions(disk)) {
        return Ok("re-read by the kernel".into());
    }
    if !kernel::partitions(disk).is_empty() {
        let _ = Cmd::new("partx", &["-d", dev]).output()?;
    }
    if !parts.is_empty() {
        let _ = Cmd::new("partx", &["-a", dev]).output()?;
    }
    let have = kernel::partitions(disk);
    if matches(&have) {
        return Ok("added with partx".into());
    }
    let show = |v: Vec<String>| {
        if v.is_empty() {
            "none".to_string()
        } else {
            v.join(", ")
        }
    };
    Err(SystemError::unexpected(format!(
        "the kernel does not show the partitions just written on {dev}: it has {}, the table \
         has {}\nhint: something may hold the disk open; check with lsblk and fuser",
        show(
            have.iter()
                .map(|h| format!("{} at sector {} ({} sectors)", h.number, h.start, h.size))
                .collect()
        ),
        show(
            parts
                .iter()
                .map(|p| format!(
                    "{} at sector {} ({} sectors)",
                    p.number,
                    p.start_bytes / 512,
                    p.size_bytes / 512
                ))
                .collect()
        )
    )))
}

#[derive(serde::Deserialize)]
struct SfdiskDoc {
    partitiontable: SfdiskTable,
}

#[derive(serde::Deserialize)]
struct SfdiskTable {
    label: String,
    id: Option<String>,
    #[serde(default = "sector_default")]
    sectorsize: u64,
    #[serde(default)]
    partitions: Vec<SfdiskPart>,
}

fn sector_default() -> u64 {
    512
}

#[derive(serde::Deserialize)]
struct SfdiskPart {
    node: String,
    start: u64,
    size: u64,
    #[serde(rename = "type")]
    part_type: String,
    uuid: Option<String>,
    name: Option<String>,
    attrs: Option<String>,
    #[serde(default)]
    bootable: bool,
}

/// Checks with `sfdisk --json` that the table on `dev` is the one planned.
fn check_table(
    dev: &str,
    label: TableLabel,
    table_id: Option<&str>,
    parts: &[NewPartition],
) -> Result<(), SystemError> {
    let out = Cmd::new("sfdisk", &["--json", dev]).output()?;
    if !out.status.success() {
        return Err(SystemError::unexpected(format!(
            "there is no readable partition table on {dev}: {}",
            out.stderr.trim()
        )));
    }
    let doc: SfdiskDoc = serde_json::from_str(&out.stdout).map_err(|e| {
        SystemError::unexpected(format!("cannot read sfdisk --json output for {dev}: {e}"))
    })?;
    let t = doc.partitiontable;
    let problems = table_problems(&t, label, table_id, parts);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(SystemError::unexpected(format!(
            "the partition table on {dev} is not the planned one: {}",
            problems.join("; ")
        )))
    }
}

fn table_problems(
    t: &SfdiskTable,
    label: TableLabel,
    table_id: Option<&str>,
    parts: &[NewPartition],
) -> Vec<String> {
    let mut problems = Vec::new();
    if t.label != label.as_str() {
        problems.push(format!("it is {}, not {}", t.label, label.as_str()));
        return problems;
    }
    if let Some(want) = table_id {
        let have = t.id.as_deref().unwrap_or("");
        if !same_uuid(have.trim_start_matches("0x"), want.trim_start_matches("0x")) {
            problems.push(format!("disk id {have}, not {want}"));
        }
    }
    if t.partitions.len() != parts.len() {
        problems.push(format!(
            "{} partitions, not {}",
            t.partitions.len(),
            parts.len()
        ));
    }
    let sector = t.sectorsize.max(1);
    for p in parts {
        let Some(h) = t
            .partitions
            .iter()
            .find(|h| trailing_number(&h.node) == Some(p.number))
        else {
            problems.push(format!("no partition {}", p.number));
            continue;
        };
        let n = p.number;
        if h.start * sector != p.start_bytes || h.size * sector != p.size_bytes {
            problems.push(format!(
                "partition {n} at byte {} for {} bytes, not {} for {}",
                h.start * sector,
                h.size * sector,
                p.start_bytes,
                p.size_bytes
            ));
        }
        let want_type = p.part_type.trim();
        let type_ok = want_type.is_empty()
            || match label {
                TableLabel::Gpt => h.part_type.eq_ignore_ascii_case(want_type),
                TableLabel::Dos => {
                    u8::from_str_radix(h.part_type.trim_start_matches("0x"), 16).ok()
                        == u8::from_str_radix(want_type.trim_start_matches("0x"), 16).ok()
                }
            };
        if !type_ok {
            problems.push(format!(
                "partition {n} has type {}, not {want_type}",
                h.part_type
            ));
        }
        if label == TableLabel::Gpt {
            if let Some(u) = &p.uuid {
                if !h.uuid.as_deref().is_some_and(|x| same_uuid(x, u)) {
                    problems.push(format!("partition {n} has PARTUUID {:?}, not {u}", h.uuid));
                }
            }
            if let Some(name) = &p.name {
                if h.name.as_deref() != Some(name.replace('"', "'").as_str()) {
                    problems.push(format!("partition {n} is named {:?}, not {name:?}", h.name));
                }
            }
            let attrs: Vec<&str> = h
                .attrs
                .as_deref()
                .unwrap_or("")
                .split_whitespace()
                .collect();
            let want: Vec<&str> = p.flags.iter().flat_map(|f| f.split_whitespace()).collect();
            if attrs != want {
                problems.push(format!(
                    "partition {n} has attributes {attrs:?}, not {want:?}"
                ));
            }
        } else {
            let want_boot = p.flags.iter().any(|f| f == "bootable");
            if h.bootable != want_boot {
                problems.push(format!(
                    "partition {n} is {}bootable",
                    if h.bootable { "" } else { "not " }
                ));
            }
        }
    }
    problems
}

fn trailing_number(node: &str) -> Option<u32> {
    let digits = node.len() - node.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    node[node.len() - digits..].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::size::MIB;

    #[test]
    fn reads_tool_output() {
        assert_eq!(
            export_value(
                "MD_LEVEL=raid1\nMD_UUID=4d5cf215:80024c95:e19fdff4:2fba35a8\n",
                "MD_UUID"
            )
            .as_deref(),
            Some("4d5cf215:80024c95:e19fdff4:2fba35a8")
        );
        assert_eq!(export_value("MD_UUIDX=1\n", "MD_UUID"), None);
        assert_eq!(trailing_number("/dev/loop0p12"), Some(12));
        assert_eq!(trailing_number("/dev/sda"), None);
    }

    #[test]
    fn compares_a_table_with_the_plan() {
        let t: SfdiskDoc = serde_json::from_str(
            r#"{"partitiontable": {"label": "dos", "id": "0x1a2b3c4d", "device": "/dev/loop0",
               "unit": "sectors", "sectorsize": 512, "partitions": [
               {"node": "/dev/loop0p1", "start": 2048, "size": 4096, "type": "83", "bootable": true},
               {"node": "/dev/loop0p2", "start": 6144, "size": 8192, "type": "5"},
               {"node": "/dev/loop0p5", "start": 8192, "size": 6144, "type": "82"}]}}"#,
        )
        .unwrap();
        let p = |number, start: u64, size: u64, t: &str, flags: &[&str]| NewPartition {
            number,
            start_bytes: start * 512,
            size_bytes: size * 512,
            part_type: t.into(),
            name: None,
            uuid: None,
            flags: flags.iter().map(|f| (*f).to_string()).collect(),
        };
        let plan = [
            p(1, 2048, 4096, "0x83", &["bootable"]),
            p(2, 6144, 8192, "0x05", &[]),
            p(5, 8192, 6144, "0x82", &[]),
        ];
        let t = t.partitiontable;
        assert!(table_problems(&t, TableLabel::Dos, Some("1a2b3c4d"), &plan).is_empty());
        let mut other = plan.clone();
        other[0].flags.clear();
        other[2].size_bytes = MIB;
        let problems = table_problems(&t, TableLabel::Dos, Some("deadbeef"), &other);
        assert_eq!(
            problems,
            [
                "disk id 0x1a2b3c4d, not deadbeef",
                "partition 1 is bootable",
                "partition 5 at byte 4194304 for 3145728 bytes, not 4194304 for 1048576"
            ]
        );
        assert_eq!(
            table_problems(&t, TableLabel::Gpt, None, &plan),
            ["it is dos, not gpt"]
        );
    }
}
