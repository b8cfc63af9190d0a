//! The profile: typed tables with natural keys, grouped in sections.
//!
//! Column names follow osquery's tables where one exists. Every struct decodes with missing
//! fields defaulted, so a field added later never breaks reading an older profile.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::hash::Hash;
use crate::table::{record, section, Section, TableView};

// ---------------------------------------------------------------- meta and collectors

/// What a profile is about and how it was made.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Meta {
    /// Version of the profile schema the tables follow.
    pub schema: u32,
    /// Version of the `keel` that captured it.
    pub agent_version: String,
    /// Hostname of the captured system (from its own configuration).
    pub hostname: String,
    /// `/etc/machine-id` of the captured system.
    pub machine_id: String,
    /// The root directory that was captured (`/` for the running system).
    pub root: String,
    /// True when the root is the running system, so live facts were read.
    pub live: bool,
    /// Capture start, milliseconds since the Unix epoch (agent clock).
    pub started_at_ms: i64,
    /// Capture duration in milliseconds.
    pub duration_ms: u64,
    /// Hash of the profile this one follows, making a tamper-evident chain.
    pub previous: Option<Hash>,
    /// The recovery public key secrets were encrypted to, if any.
    pub recovery_recipient: Option<String>,
}

/// The outcome of one collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CollectorState {
    /// Collected everything it looked for.
    #[default]
    Ok,
    /// Failed; its tables are unknown, not empty.
    Error,
    /// Ran past its deadline; its tables are unknown.
    Timeout,
    /// Does not apply to this root (live facts of an offline root).
    NotApplicable,
}

impl CollectorState {
    /// The snake-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            CollectorState::Ok => "ok",
            CollectorState::Error => "error",
            CollectorState::Timeout => "timeout",
            CollectorState::NotApplicable => "not_applicable",
        }
    }
}

record! {
    /// One collector's report.
    Collector in "collectors", key(c) => c.name.clone(); {
        Config name: String,
        Config state: CollectorState,
        Volatile duration_us: u64,
        /// Why it failed or does not apply; warnings when it partly succeeded.
        Runtime message: Option<String>,
        /// `section.table` names this collector fills.
        Config tables: Vec<String>,
    }
}

// ---------------------------------------------------------------- hardware

record! {
    /// DMI system identity (osquery `system_info`).
    SystemInfo in "system", key(_s) => "system".into(); {
        Identity vendor: Option<String>,
        Identity product: Option<String>,
        Identity serial: Option<String>,
        Identity uuid: Option<String>,
        Identity board_vendor: Option<String>,
        Identity board_name: Option<String>,
        Identity chassis_type: Option<String>,
        Config bios_vendor: Option<String>,
        Config bios_version: Option<String>,
        Config bios_date: Option<String>,
        Identity virtualization: Option<String>,
    }
}

record! {
    /// Processor summary (osquery `cpu_info`).
    Cpu in "cpu", key(_c) => "cpu".into(); {
        Identity vendor: String,
        Identity model: String,
        Identity sockets: u32,
        Identity cores: u32,
        Identity threads: u32,
        Config microcode: Option<String>,
    }
}

record! {
    /// Memory size.
    Memory in "memory", key(_m) => "memory".into(); {
        Identity total_bytes: u64,
    }
}

record! {
    /// A PCI device (osquery `pci_devices`).
    PciDevice in "pci_devices", key(p) => p.address.clone(); {
        Identity address: String,
        Identity vendor_id: String,
        Identity device_id: String,
        Identity class: String,
        Identity subsystem_vendor_id: Option<String>,
        Identity subsystem_device_id: Option<String>,
        Config driver: Option<String>,
    }
}

record! {
    /// A physical network adapter, keyed by its permanent MAC address.
    Nic in "nics", key(n) => n.mac.clone(); {
        Identity mac: String,
        Runtime name: String,
        Config driver: Option<String>,
        Identity bus_info: Option<String>,
        Volatile speed_mbps: Option<u64>,
        Volatile operstate: Option<String>,
    }
}

record! {
    /// Firmware interface of the running machine.
    Firmware in "firmware", key(_f) => "firmware".into(); {
        /// `uefi` or `bios`.
        Config mode: String,
        Config secure_boot: Option<bool>,
        Identity tpm: bool,
    }
}

section! {
    /// Hardware of the running machine (live only).
    Hardware "hardware" {
        system: SystemInfo,
        cpu: Cpu,
        memory: Memory,
        pci_devices: PciDevice,
        nics: Nic,
        firmware: Firmware,
    }
}

// ---------------------------------------------------------------- storage

record! {
    /// A whole disk, keyed by its most stable identity: WWN, then serial, then by-id, then (for
    /// an image attached through a loop device) its backing file.
    Disk in "disks", key(d) => d.id.clone(); {
        Identity id: String,
        Runtime name: String,
        Identity model: Option<String>,
        Identity serial: Option<String>,
        Identity wwn: Option<String>,
        Identity size_bytes: u64,
        Identity rotational: bool,
        Identity removable: bool,
        Identity transport: Option<String>,
        Identity logical_sector_size: u64,
        Identity physical_sector_size: u64,
        /// `gpt`, `dos` or none.
        Config pttype: Option<String>,
        Config ptuuid: Option<String>,
        /// For loop devices: the image file behind it.
        Runtime backing_file: Option<String>,
    }
}

record! {
    /// A partition, keyed by disk identity and number.
    Partition in "partitions", key(p) => format!("{}/{}", p.disk, p.number); {
        Config disk: String,
        Config number: u32,
        Runtime name: String,
        /// First sector (512-byte units).
        Config start: u64,
        Config size_bytes: u64,
        /// GPT type GUID or MBR type byte (`0x83`).
        Config part_type: String,
        Config partuuid: Option<String>,
        Config partlabel: Option<String>,
        /// GPT attribute names or MBR `bootable`.
        Config flags: Vec<String>,
    }
}

record! {
    /// A Linux software RAID array.
    MdArray in "md_arrays", key(m) => m.uuid.clone(); {
        Config uuid: String,
        Runtime name: String,
        Config level: String,
        Config metadata: Option<String>,
        Config devices: Vec<String>,
        Config size_bytes: u64,
        Runtime state: Option<String>,
    }
}

record! {
    /// An LVM physical volume.
    LvmPv in "lvm_pvs", key(p) => p.uuid.clone(); {
        Config uuid: String,
        Runtime device: String,
        Config vg: String,
        Config size_bytes: u64,
    }
}

record! {
    /// An LVM volume group.
    LvmVg in "lvm_vgs", key(v) => v.name.clone(); {
        Config name: String,
        Config uuid: String,
        Config extent_size: u64,
        Config size_bytes: u64,
        Volatile free_bytes: u64,
    }
}

record! {
    /// An LVM logical volume.
    LvmLv in "lvm_lvs", key(l) => format!("{}/{}", l.vg, l.name); {
        Config vg: String,
        Config name: String,
        Config uuid: String,
        Config size_bytes: u64,
        Config segtype: String,
        Config attributes: String,
    }
}

record! {
    /// LUKS header metadata (never key material).
    Luks in "luks", key(l) => l.uuid.clone(); {
        Config uuid: String,
        Runtime device: String,
        Config version: u32,
        Config cipher: Option<String>,
        Config keyslots: u32,
        Config label: Option<String>,
    }
}

record! {
    /// A filesystem or other signature on a block device, keyed by UUID.
    Filesystem in "filesystems", key(f) => f.uuid.clone().unwrap_or_else(|| f.device.clone()); {
        Config uuid: Option<String>,
        Runtime device: String,
        Config fstype: String,
        Config label: Option<String>,
        Config size_bytes: Option<u64>,
    }
}

record! {
    /// A line of `/etc/fstab`, keyed by mountpoint (swap lines by their device).
    FstabEntry in "fstab", key(f) => if f.mountpoint == "none" || f.fstype == "swap" { format!("swap {}", f.spec) } else { f.mountpoint.clone() }; {
        Config spec: String,
        Config mountpoint: String,
        Config fstype: String,
        Config options: String,
        Config dump: u32,
        Config pass: u32,
    }
}

record! {
    /// A live mount, with its mountpoint relative to the captured root.
    Mount in "mounts", key(m) => m.mountpoint.clone(); {
        Runtime mountpoint: String,
        Runtime source: String,
        Runtime fstype: String,
        Runtime options: String,
        /// UUID of the filesystem, when known: links the mount to `filesystems`.
        Runtime uuid: Option<String>,
    }
}

record! {
    /// Space used under a mountpoint: recovery never sizes a filesystem below this.
    Usage in "usage", key(u) => u.mountpoint.clone(); {
        Volatile mountpoint: String,
        Volatile size_bytes: u64,
        Volatile used_bytes: u64,
        Volatile inodes_used: u64,
    }
}

record! {
    /// Active swap.
    Swap in "swaps", key(s) => s.device.clone(); {
        Runtime device: String,
        Runtime kind: String,
        Runtime size_bytes: u64,
        Runtime priority: i64,
    }
}

record! {
    /// A line of `/etc/crypttab`.
    CrypttabEntry in "crypttab", key(c) => c.name.clone(); {
        Config name: String,
        Config device: String,
        Config keyfile: String,
        Config options: String,
    }
}

section! {
    /// Disks, layouts and filesystems backing the captured root.
    Storage "storage" {
        disks: Disk,
        partitions: Partition,
        md_arrays: MdArray,
        lvm_pvs: LvmPv,
        lvm_vgs: LvmVg,
        lvm_lvs: LvmLv,
        luks: Luks,
        filesystems: Filesystem,
        fstab: FstabEntry,
        crypttab: CrypttabEntry,
        mounts: Mount,
        usage: Usage,
        swaps: Swap,
    }
}

// ---------------------------------------------------------------- os

record! {
    /// `/etc/os-release` and the dpkg architecture.
    OsRelease in "release", key(_o) => "os".into(); {
        Config id: String,
        Config version_id: Option<String>,
        Config codename: Option<String>,
        Config pretty_name: Option<String>,
        Config arch: Option<String>,
    }
}

record! {
    /// Host identity and locale settings.
    HostSettings in "host", key(_h) => "host".into(); {
        Identity hostname: String,
        Identity machine_id: String,
        Config timezone: Option<String>,
        Config locale: Option<String>,
        Config keymap: Option<String>,
    }
}

record! {
    /// The running kernel (live only).
    RunningKernel in "running_kernel", key(_k) => "running".into(); {
        Runtime release: String,
        Runtime version: String,
        Runtime arch: String,
        Runtime cmdline: String,
        Volatile uptime_s: u64,
    }
}

record! {
    /// A kernel installed on disk.
    InstalledKernel in "kernels", key(k) => k.release.clone(); {
        Config release: String,
        Config image: Option<String>,
        Config initrd: Option<String>,
        Config modules: bool,
    }
}

record! {
    /// Boot configuration.
    Boot in "boot", key(_b) => "boot".into(); {
        /// `grub-pc`, `grub-efi`, `systemd-boot` or `none`.
        Config bootloader: String,
        Config grub_cmdline_linux: Option<String>,
        Config grub_cmdline_linux_default: Option<String>,
        Config grub_cfg_hash: Option<Hash>,
        /// True when an EFI system partition is configured in fstab.
        Config efi_partition: bool,
    }
}

section! {
    /// Operating system, kernels and boot.
    Os "os" {
        release: OsRelease,
        host: HostSettings,
        running_kernel: RunningKernel,
        kernels: InstalledKernel,
        boot: Boot,
    }
}

// ---------------------------------------------------------------- packages

record! {
    /// An installed package (osquery `deb_packages` / `rpm_packages`).
    Package in "packages", key(p) => if p.arch.is_empty() { p.name.clone() } else { format!("{}:{}", p.name, p.arch) }; {
        Config name: String,
        Config arch: String,
        Config version: String,
        /// `dpkg` or `rpm`.
        Config manager: String,
        /// dpkg status (`installed`, `config-files`, …).
        Config status: String,
        /// Installed only as a dependency (apt's `Auto-Installed`).
        Config auto: bool,
        Config hold: bool,
        Config source: Option<String>,
        Config priority: Option<String>,
    }
}

record! {
    /// An apt or yum repository.
    Repository in "repositories", key(r) => format!("{} {} {}", r.kind, r.uri, r.suite); {
        Config kind: String,
        Config uri: String,
        Config suite: String,
        Config components: Vec<String>,
        Config options: BTreeMap<String, String>,
        Config file: String,
        Config enabled: bool,
    }
}

record! {
    /// A repository signing key file.
    RepositoryKey in "repository_keys", key(k) => k.path.clone(); {
        Config path: String,
        Config hash: Hash,
        Config size: u64,
    }
}

record! {
    /// A dpkg alternative (`update-alternatives`): which program a generic name runs.
    Alternative in "alternatives", key(a) => a.name.clone(); {
        Config name: String,
        /// `auto` (highest priority wins) or `manual` (an administrator's choice).
        Config mode: String,
        /// The generic link, such as `/usr/bin/editor`.
        Config link: String,
        /// The chosen program.
        Config value: Option<String>,
    }
}

section! {
    /// Installed software and where it comes from.
    Packages "packages" {
        packages: Package,
        repositories: Repository,
        repository_keys: RepositoryKey,
        alternatives: Alternative,
    }
}

// ---------------------------------------------------------------- users

record! {
    /// A local account (osquery `users` and `shadow`; never the hash itself).
    User in "users", key(u) => u.name.clone(); {
        Config name: String,
        Config uid: u32,
        Config gid: u32,
        Config gecos: String,
        Config home: String,
        Config shell: String,
        /// `set`, `locked`, `empty`, `no_login` or `none` (no shadow entry).
        Config password_status: String,
        Config hash_alg: Option<String>,
        /// Keyed BLAKE3 of the password hash: detects a change, reveals nothing.
        Config password_fingerprint: Option<Hash>,
        Config last_change: Option<u64>,
        Config min_days: Option<u64>,
        Config max_days: Option<u64>,
        Config warn_days: Option<u64>,
        Config inactive_days: Option<u64>,
        Config expire: Option<u64>,
    }
}

record! {
    /// A local group and its members.
    Group in "groups", key(g) => g.name.clone(); {
        Config name: String,
        Config gid: u32,
        Config members: Vec<String>,
    }
}

record! {
    /// A key in a user's `authorized_keys`.
    AuthorizedKey in "authorized_keys", key(k) => format!("{}:{}", k.user, k.fingerprint); {
        Config user: String,
        Config key_type: String,
        Config fingerprint: String,
        Config comment: Option<String>,
        Config options: Option<String>,
        Config path: String,
    }
}

section! {
    /// Accounts, groups and their keys.
    Users "users" {
        users: User,
        groups: Group,
        authorized_keys: AuthorizedKey,
    }
}

// ---------------------------------------------------------------- security

record! {
    /// An SSH server setting as configured (first value wins, as in sshd).
    SshdSetting in "sshd", key(s) => s.name.clone(); {
        Config name: String,
        Config value: String,
        Config file: String,
    }
}

record! {
    /// An SSH host key's public fingerprint.
    SshHostKey in "ssh_host_keys", key(k) => k.key_type.clone(); {
        Config key_type: String,
        Identity fingerprint: String,
        Config path: String,
    }
}

record! {
    /// A sudo rule line.
    SudoRule in "sudoers", key(s) => format!("{}: {}", s.file, s.rule); {
        Config file: String,
        Config rule: String,
    }
}

record! {
    /// A mandatory access control system (live state).
    MacState in "mac", key(m) => m.name.clone(); {
        Runtime name: String,
        Runtime enabled: bool,
        Runtime mode: Option<String>,
        Runtime profiles: Option<u64>,
    }
}

record! {
    /// The live firewall ruleset.
    FirewallRuleset in "firewall", key(f) => f.backend.clone(); {
        Runtime backend: String,
        Runtime rules: u64,
        Runtime hash: Hash,
    }
}

record! {
    /// A secret: encrypted to the recovery key, or withheld when no key is configured.
    Secret in "secrets", key(s) => s.path.clone(); {
        Config path: String,
        /// Keyed BLAKE3 of the plaintext.
        Config fingerprint: Hash,
        /// The age ciphertext blob; absent when withheld.
        Volatile ciphertext: Option<Hash>,
        Config withheld: bool,
        Config mode: u32,
        Config uid: u32,
        Config gid: u32,
    }
}

section! {
    /// Access control and secrets.
    Security "security" {
        sshd: SshdSetting,
        ssh_host_keys: SshHostKey,
        sudoers: SudoRule,
        mac: MacState,
        firewall: FirewallRuleset,
        secrets: Secret,
    }
}

// ---------------------------------------------------------------- network

record! {
    /// A live network interface.
    Interface in "interfaces", key(i) => i.name.clone(); {
        Runtime name: String,
        Runtime mac: Option<String>,
        Runtime mtu: u32,
        Runtime kind: String,
        Volatile operstate: String,
    }
}

record! {
    /// A live address.
    Address in "addresses", key(a) => format!("{} {}/{}", a.interface, a.address, a.prefix); {
        Runtime interface: String,
        Runtime family: String,
        Runtime address: String,
        Runtime prefix: u8,
        Runtime scope: String,
    }
}

record! {
    /// A live route.
    Route in "routes", key(r) => format!("{} {} via {} dev {}", r.table, r.destination, r.gateway.as_deref().unwrap_or("-"), r.interface.as_deref().unwrap_or("-")); {
        Runtime table: String,
        Runtime destination: String,
        Runtime gateway: Option<String>,
        Runtime interface: Option<String>,
        Runtime protocol: Option<String>,
        Runtime metric: Option<u64>,
    }
}

record! {
    /// Name resolution settings.
    Dns in "dns", key(_d) => "resolv".into(); {
        Config nameservers: Vec<String>,
        Config search: Vec<String>,
        /// Where `/etc/resolv.conf` points when it is a link (systemd-resolved, resolvconf).
        Config resolv_conf_link: Option<String>,
    }
}

record! {
    /// A line of `/etc/hosts`.
    HostsEntry in "hosts", key(h) => h.address.clone(); {
        Config address: String,
        Config names: Vec<String>,
    }
}

record! {
    /// An interface stanza of ifupdown's `/etc/network/interfaces`.
    IfupdownIface in "ifupdown", key(i) => format!("{} {}", i.name, i.family); {
        Config name: String,
        Config family: String,
        Config method: String,
        Config auto: bool,
        Config hotplug: bool,
        Config options: BTreeMap<String, String>,
        Config file: String,
    }
}

record! {
    /// A listening socket and who owns it.
    Listener in "listening", key(l) => format!("{} {}:{}", l.protocol, l.address, l.port); {
        Runtime protocol: String,
        Runtime address: String,
        Runtime port: u16,
        Runtime process: Option<String>,
        Runtime unit: Option<String>,
    }
}

section! {
    /// Network configuration and live state.
    Network "network" {
        interfaces: Interface,
        addresses: Address,
        routes: Route,
        dns: Dns,
        hosts: HostsEntry,
        ifupdown: IfupdownIface,
        listening: Listener,
    }
}

// ---------------------------------------------------------------- services

record! {
    /// A systemd unit file and its enablement (osquery `systemd_units`).
    Unit in "units", key(u) => u.name.clone(); {
        Config name: String,
        /// `enabled`, `disabled`, `static`, `masked`, `alias`, `indirect`.
        Config unit_file_state: String,
        Config fragment_path: Option<String>,
        Config drop_ins: Vec<String>,
        /// Live only: `active`, `inactive`, `failed`.
        Runtime active_state: Option<String>,
    }
}

record! {
    /// The default systemd target.
    DefaultTarget in "default_target", key(_d) => "default".into(); {
        Config target: String,
    }
}

record! {
    /// A `SysV` init script.
    InitScript in "init_scripts", key(i) => i.name.clone(); {
        Config name: String,
        Config runlevels: Vec<String>,
    }
}

section! {
    /// Services and how they start.
    Services "services" {
        units: Unit,
        default_target: DefaultTarget,
        init_scripts: InitScript,
    }
}

// ---------------------------------------------------------------- schedules

record! {
    /// A cron job (osquery `crontab`).
    CronJob in "cron", key(c) => c.id.clone(); {
        /// `source: command`, with a counter when a file repeats a command.
        Config id: String,
        Config source: String,
        Config schedule: String,
        Config user: Option<String>,
        Config command: String,
    }
}

record! {
    /// A systemd timer.
    Timer in "timers", key(t) => t.name.clone(); {
        Config name: String,
        Config unit: String,
        Config on_calendar: Vec<String>,
        Config on_boot_sec: Option<String>,
        Config on_unit_active_sec: Option<String>,
        Config persistent: bool,
        Config enabled: bool,
    }
}

section! {
    /// Scheduled jobs.
    Schedules "schedules" {
        cron: CronJob,
        timers: Timer,
    }
}

// ---------------------------------------------------------------- kernel

record! {
    /// A configured sysctl setting (osquery `system_controls.config_value`), the last file in
    /// systemd-sysctl's precedence order winning.
    Sysctl in "sysctl", key(s) => s.name.clone(); {
        Config name: String,
        Config value: String,
        Config file: String,
    }
}

record! {
    /// A sysctl's running value (live only), for every configured key.
    SysctlRunning in "sysctl_running", key(s) => s.name.clone(); {
        Runtime name: String,
        Runtime value: String,
    }
}

record! {
    /// A loaded kernel module (live only).
    Module in "modules", key(m) => m.name.clone(); {
        Runtime name: String,
        Volatile size: u64,
    }
}

record! {
    /// A modprobe directive (`options`, `blacklist`, `install`, `alias`, `softdep`).
    ModprobeDirective in "modprobe", key(m) => format!("{} {}", m.directive, m.args); {
        Config directive: String,
        Config args: String,
        Config file: String,
    }
}

record! {
    /// A module loaded at boot (`/etc/modules`, `modules-load.d`).
    ModuleLoad in "modules_load", key(m) => m.module.clone(); {
        Config module: String,
        Config file: String,
    }
}

section! {
    /// Kernel settings.
    Kernel "kernel" {
        sysctl: Sysctl,
        sysctl_running: SysctlRunning,
        modules: Module,
        modprobe: ModprobeDirective,
        modules_load: ModuleLoad,
    }
}

// ---------------------------------------------------------------- files

/// How a file under `/etc` relates to its package.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileStatus {
    /// Matches the checksum its package shipped.
    #[default]
    Pristine,
    /// Differs from its package's checksum: content kept.
    Modified,
    /// Belongs to no package: content kept.
    Unowned,
    /// Made by a package script or trigger (such as the CA bundle): rebuilt, not restored.
    Generated,
    /// A secret: content only as ciphertext in `security.secrets`.
    Secret,
    /// A conffile its package shipped that is no longer there.
    Missing,
    /// Too large to keep: hash only.
    TooLarge,
}

impl FileStatus {
    /// The snake-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            FileStatus::Pristine => "pristine",
            FileStatus::Modified => "modified",
            FileStatus::Unowned => "unowned",
            FileStatus::Generated => "generated",
            FileStatus::Secret => "secret",
            FileStatus::Missing => "missing",
            FileStatus::TooLarge => "too_large",
        }
    }
}

record! {
    /// A configuration file, directory or link.
    File in "files", key(f) => f.path.clone(); {
        Config path: String,
        /// `file`, `dir`, `symlink`.
        Config kind: String,
        Config mode: u32,
        Config uid: u32,
        Config gid: u32,
        Config size: u64,
        /// BLAKE3 of the content (keyed for secrets). Absent for pristine files: their
        /// content is their package's, which the package database already pins.
        Config hash: Option<Hash>,
        Config status: FileStatus,
        Config package: Option<String>,
        /// The content is kept, as the blob addressed by `hash` (modified and unowned files).
        Config content: bool,
        Config target: Option<String>,
    }
}

record! {
    /// A file that changes on its own (`/etc/ld.so.cache`, editor backups): recorded, never
    /// alerting.
    IgnoredFile in "ignored_files", key(f) => f.path.clone(); {
        Volatile path: String,
        Volatile size: u64,
        Volatile hash: Option<Hash>,
    }
}

record! {
    /// A data path: contents that change as the service runs and come back from a backup at
    /// recovery, never from the profile (declared in `/etc/keel/data.toml`).
    DataPath in "data_paths", key(d) => d.path.clone(); {
        /// The directory (`/srv`).
        Config path: String,
        /// How it is backed up: `restic`, or `command` for any other tool.
        Config backup: String,
        /// The restic repository (a path or a restic URL).
        Config repository: Option<String>,
        /// The file holding the repository's password, inside the system.
        Config password_file: Option<String>,
        /// For `command`: the restore command, run by `sh -c` with `KEEL_TARGET_ROOT` and
        /// `KEEL_DATA_PATH` set.
        Config restore_command: Option<String>,
    }
}

section! {
    /// Configuration files.
    Files "files" {
        files: File,
        ignored_files: IgnoredFile,
        /// Absent from the encoding when empty, so that profiles without data paths keep the
        /// identity they had before the table existed.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        data_paths: DataPath,
    }
}

// ---------------------------------------------------------------- the profile

/// A complete profile of one system.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Profile {
    /// What the profile is about.
    pub meta: Meta,
    /// What each collector did.
    pub collectors: Vec<Collector>,
    /// Hardware.
    pub hardware: Hardware,
    /// Storage.
    pub storage: Storage,
    /// Operating system.
    pub os: Os,
    /// Packages.
    pub packages: Packages,
    /// Users and groups.
    pub users: Users,
    /// Security settings and secrets.
    pub security: Security,
    /// Network.
    pub network: Network,
    /// Services.
    pub services: Services,
    /// Scheduled jobs.
    pub schedules: Schedules,
    /// Kernel settings.
    pub kernel: Kernel,
    /// Configuration files.
    pub files: Files,
}

/// A generic view of one section.
#[derive(Debug)]
pub struct SectionView {
    /// Section name.
    pub name: &'static str,
    /// Its tables.
    pub tables: Vec<TableView>,
}

/// The names of the sections, in profile order.
pub const SECTIONS: &[&str] = &[
    "meta",
    "hardware",
    "storage",
    "os",
    "packages",
    "users",
    "security",
    "network",
    "services",
    "schedules",
    "kernel",
    "files",
];

impl Profile {
    /// Every section as generic tables, `meta` (holding `collectors`) first.
    pub fn sections(&self) -> Vec<SectionView> {
        fn view<S: Section>(s: &S) -> SectionView {
            SectionView {
                name: S::NAME,
                tables: s.tables(),
            }
        }
        vec![
            SectionView {
                name: "meta",
                tables: vec![TableView::of(&self.collectors)],
            },
            view(&self.hardware),
            view(&self.storage),
            view(&self.os),
            view(&self.packages),
            view(&self.users),
            view(&self.security),
            view(&self.network),
            view(&self.services),
            view(&self.schedules),
            view(&self.kernel),
            view(&self.files),
        ]
    }

    /// The tables that differ between `self` and `other`, by section, as `(self, other)` view
    /// pairs; equal tables cost a comparison, not a conversion.
    pub fn differing_tables(&self, other: &Profile) -> Vec<(&'static str, TableView, TableView)> {
        fn sec<S: Section>(out: &mut Vec<(&'static str, TableView, TableView)>, a: &S, b: &S) {
            for (x, y) in a.differing_tables(b) {
                out.push((S::NAME, x, y));
            }
        }
        let mut out = Vec::new();
        if self.collectors != other.collectors {
            out.push((
                "meta",
                TableView::of(&self.collectors),
                TableView::of(&other.collectors),
            ));
        }
        sec(&mut out, &self.hardware, &other.hardware);
        sec(&mut out, &self.storage, &other.storage);
        sec(&mut out, &self.os, &other.os);
        sec(&mut out, &self.packages, &other.packages);
        sec(&mut out, &self.users, &other.users);
        sec(&mut out, &self.security, &other.security);
        sec(&mut out, &self.network, &other.network);
        sec(&mut out, &self.services, &other.services);
        sec(&mut out, &self.schedules, &other.schedules);
        sec(&mut out, &self.kernel, &other.kernel);
        sec(&mut out, &self.files, &other.files);
        out
    }

    /// A view of `section.table`.
    pub fn table(&self, section: &str, table: &str) -> Option<TableView> {
        match section {
            "meta" if table == "collectors" => Some(TableView::of(&self.collectors)),
            "hardware" => self.hardware.table(table),
            "storage" => self.storage.table(table),
            "os" => self.os.table(table),
            "packages" => self.packages.table(table),
            "users" => self.users.table(table),
            "security" => self.security.table(table),
            "network" => self.network.table(table),
            "services" => self.services.table(table),
            "schedules" => self.schedules.table(table),
            "kernel" => self.kernel.table(table),
            "files" => self.files.table(table),
            _ => None,
        }
    }

    /// Replaces `section.table` with rows given as JSON.
    pub fn set_table(
        &mut self,
        section: &str,
        table: &str,
        rows: Vec<serde_json::Value>,
    ) -> Result<(), serde_json::Error> {
        match section {
            "meta" if table == "collectors" => {
                self.collectors = rows
                    .into_iter()
                    .map(serde_json::from_value)
                    .collect::<Result<_, _>>()?;
                Ok(())
            }
            "hardware" => self.hardware.set_table(table, rows),
            "storage" => self.storage.set_table(table, rows),
            "os" => self.os.set_table(table, rows),
            "packages" => self.packages.set_table(table, rows),
            "users" => self.users.set_table(table, rows),
            "security" => self.security.set_table(table, rows),
            "network" => self.network.set_table(table, rows),
            "services" => self.services.set_table(table, rows),
            "schedules" => self.schedules.set_table(table, rows),
            "kernel" => self.kernel.set_table(table, rows),
            "files" => self.files.set_table(table, rows),
            _ => Err(<serde_json::Error as serde::de::Error>::custom(format!(
                "unknown section {section}"
            ))),
        }
    }

    /// Sorts every table by key, so equal systems encode to equal bytes.
    pub fn normalize(&mut self) {
        self.collectors.sort_by(|a, b| a.name.cmp(&b.name));
        self.hardware.normalize();
        self.storage.normalize();
        self.os.normalize();
        self.packages.normalize();
        self.users.normalize();
        self.security.normalize();
        self.network.normalize();
        self.services.normalize();
        self.schedules.normalize();
        self.kernel.normalize();
        self.files.normalize();
    }

    /// The collector that fills `section.table`, if it reported.
    pub fn collector_for(&self, section: &str, table: &str) -> Option<&Collector> {
        let name = format!("{section}.{table}");
        self.collectors.iter().find(|c| c.tables.contains(&name))
    }

    /// All blob hashes the profile refers to.
    pub fn blob_refs(&self) -> Vec<Hash> {
        let mut refs: Vec<Hash> = self
            .files
            .files
            .iter()
            .filter(|f| f.content)
            .filter_map(|f| f.hash)
            .chain(self.security.secrets.iter().filter_map(|s| s.ciphertext))
            .collect();
        refs.sort();
        refs.dedup();
        refs
    }
}
