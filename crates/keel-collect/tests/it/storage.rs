//! The storage collectors against real devices: a GPT disk image attached through a loop device
//! and mounted as an offline root, a plain directory root, and the running system.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use keel_profile::{Collector, CollectorState, ProfileFile};

const MIB: u64 = 1024 * 1024;
const BIOS_BOOT: &str = "21686148-6449-6e6f-744e-656564454649";
const LINUX_FS: &str = "0fc63daf-8483-4772-8e79-3d69d8477de4";
const ROOT_PARTUUID: &str = "6b1f0a2c-4d3e-4f5a-8b6c-7d8e9f0a1b2c";
const ROOT_UUID: &str = "0c1d2e3f-4a5b-4c6d-8e7f-a0b1c2d3e4f5";
const SRV_UUID: &str = "9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a";

/// Why this process cannot attach loop devices, if it cannot.
fn missing_privileges() -> Option<String> {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("?");
    if uid != "0" {
        return Some(format!("running as uid {uid}, not root"));
    }
    for tool in ["losetup", "partx", "sfdisk", "mkfs.ext4", "mount", "umount"] {
        if !keel_collect::have(tool) {
            return Some(format!("{tool} is not on the PATH"));
        }
    }
    None
}

#[allow(clippy::print_stderr)] // a skipped test says so where the test runner shows it
fn skip(test: &str, why: &str) {
    eprintln!("{test}: skipped: needs root and loop devices ({why})");
}

fn run(program: &str, args: &[&str]) -> Result<String, String> {
    run_with_input(program, args, None)
}

fn run_with_input(program: &str, args: &[&str], input: Option<&str>) -> Result<String, String> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if let Some(text) = input {
        child
            .stdin
            .take()
            .expect("stdin is piped")
            .write_all(text.as_bytes())
            .map_err(|e| format!("cannot write to {program}: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A loop device with its partitions; detached (partitions first, since detaching does not
/// remove the nodes `partx -a` added) when dropped.
struct LoopDevice {
    dev: String,
}

impl LoopDevice {
    fn attach(image: &Path) -> Result<Self, String> {
        let dev = run("losetup", &["-f", "--show", &image.display().to_string()])?;
        let lo = LoopDevice {
            dev: dev.trim().to_string(),
        };
        // This kernel may not scan partition tables itself (`losetup -P` makes no nodes).
        run("partx", &["-a", &lo.dev])?;
        Ok(lo)
    }

    fn part(&self, n: u32) -> String {
        format!("{}p{n}", self.dev)
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        // A concurrent reader (a live capture probing every disk) can hold a partition open
        // for a moment; stale partition nodes would break the next user of this loop device.
        for attempt in 1..=5 {
            if run("partx", &["-d", &self.dev]).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100 * attempt));
        }
        let _ = run("losetup", &["-d", &self.dev]);
    }
}

/// A mount, unmounted when dropped (retried: a just-finished reader can keep it busy briefly).
struct Mounted {
    at: PathBuf,
}

impl Mounted {
    fn new(dev: &str, at: &Path) -> Self {
        fs::create_dir_all(at).unwrap();
        run("mount", &[dev, &at.display().to_string()]).unwrap();
        Mounted {
            at: at.to_path_buf(),
        }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let at = self.at.display().to_string();
        for attempt in 1..=5 {
            if run("umount", &[&at]).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100 * attempt));
        }
        let _ = run("umount", &["-l", &at]);
    }
}

fn collector<'a>(file: &'a ProfileFile, name: &str) -> &'a Collector {
    file.profile
        .collectors
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no {name} collector in {:?}", file.profile.collectors))
}

fn capture(root: &Path, state: &Path) -> ProfileFile {
    let mut opts = keel_collect::Options::new(root);
    opts.state_dir = state.to_path_buf();
    keel_collect::capture(&opts).unwrap()
}

#[test]
fn image_root_describes_only_its_own_disk() {
    if let Some(why) = missing_privileges() {
        skip("image_root_describes_only_its_own_disk", &why);
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let image = tmp.path().join("disk.img");
    fs::File::create(&image).unwrap().set_len(64 * MIB).unwrap();
    let layout = format!(
        "label: gpt\n\
         start=2048, size=2048, type={BIOS_BOOT}, name=\"bios\", attrs=\"LegacyBIOSBootable\"\n\
         size=40MiB, type={LINUX_FS}, uuid={ROOT_PARTUUID}, name=\"keel-root\"\n\
         size=20MiB, type={LINUX_FS}, name=\"keel-srv\"\n"
    );
    run_with_input(
        "sfdisk",
        &["-q", &image.display().to_string()],
        Some(&layout),
    )
    .unwrap();
    let lo = match LoopDevice::attach(&image) {
        Ok(lo) => lo,
        Err(why) => {
            skip("image_root_describes_only_its_own_disk", &why);
            return;
        }
    };
    for (part, uuid, label) in [
        (lo.part(2), ROOT_UUID, "keelroot"),
        (lo.part(3), SRV_UUID, "keelsrv"),
    ] {
        run("mkfs.ext4", &["-q", "-U", uuid, "-L", label, &part]).unwrap();
    }
    let root = tmp.path().join("root");
    let _root_mount = Mounted::new(&lo.part(2), &root);
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::write(
        root.join("etc/fstab"),
        format!("UUID={ROOT_UUID} / ext4 errors=remount-ro 0 1\nUUID={SRV_UUID} /srv ext4 defaults 0 2\n"),
    )
    .unwrap();
    let _srv_mount = Mounted::new(&lo.part(3), &root.join("srv"));
    fs::write(root.join("srv/data"), vec![7u8; 2 * MIB as usize]).unwrap();

    let file = capture(&root, &tmp.path().join("state"));

    let c = collector(&file, "storage.devices");
    assert_eq!(c.state, CollectorState::Ok, "{c:?}");
    let s = &file.profile.storage;
    let lo_name = lo.dev.trim_start_matches("/dev/");

    assert_eq!(s.disks.len(), 1, "only the image's disk: {:#?}", s.disks);
    let disk = &s.disks[0];
    let backing = image.canonicalize().unwrap().display().to_string();
    assert_eq!(disk.id, format!("loop:{backing}"));
    assert_eq!(disk.name, lo_name);
    assert_eq!(disk.backing_file.as_deref(), Some(backing.as_str()));
    assert_eq!(disk.size_bytes, 64 * MIB);
    assert_eq!(disk.pttype.as_deref(), Some("gpt"));
    assert!(disk.ptuuid.is_some());
    assert_eq!(disk.transport.as_deref(), Some("loop"));

    assert_eq!(s.partitions.len(), 3, "{:#?}", s.partitions);
    let p: Vec<_> = s.partitions.iter().collect();
    assert!(p.iter().all(|p| p.disk == disk.id));
    assert_eq!((p[0].number, p[0].part_type.as_str()), (1, BIOS_BOOT));
    assert_eq!(p[0].size_bytes, MIB);
    assert_eq!(p[0].start, 2048);
    assert_eq!(p[0].flags, ["LegacyBIOSBootable"]);
    assert_eq!(p[0].partlabel.as_deref(), Some("bios"));
    assert_eq!(p[1].number, 2);
    assert_eq!(p[1].name, format!("{lo_name}p2"));
    assert_eq!(p[1].part_type, LINUX_FS);
    assert_eq!(p[1].partuuid.as_deref(), Some(ROOT_PARTUUID));
    assert_eq!(p[1].partlabel.as_deref(), Some("keel-root"));
    assert_eq!(p[1].size_bytes, 40 * MIB);
    assert_eq!(p[2].size_bytes, 20 * MIB);
    assert_eq!(p[2].partlabel.as_deref(), Some("keel-srv"));

    for (uuid, label, size) in [
        (ROOT_UUID, "keelroot", 40 * MIB),
        (SRV_UUID, "keelsrv", 20 * MIB),
    ] {
        let fs = s
            .filesystems
            .iter()
            .find(|f| f.uuid.as_deref() == Some(uuid))
            .unwrap_or_else(|| panic!("no filesystem {uuid} in {:#?}", s.filesystems));
        assert_eq!(fs.fstype, "ext4");
        assert_eq!(fs.label.as_deref(), Some(label));
        assert_eq!(fs.size_bytes, Some(size));
    }

    let mounts: Vec<(&str, Option<&str>)> = s
        .mounts
        .iter()
        .map(|m| (m.mountpoint.as_str(), m.uuid.as_deref()))
        .collect();
    assert_eq!(mounts, [("/", Some(ROOT_UUID)), ("/srv", Some(SRV_UUID))]);
    assert_eq!(s.mounts[0].source, lo.part(2));
    assert_eq!(s.mounts[0].fstype, "ext4");
    let usage: Vec<&str> = s.usage.iter().map(|u| u.mountpoint.as_str()).collect();
    assert_eq!(usage, ["/", "/srv"]);
    let srv = &s.usage[1];
    assert!(
        srv.used_bytes >= 2 * MIB && srv.used_bytes < srv.size_bytes,
        "{srv:?}"
    );

    // Nothing of the host: no other disk, no host mount, no host swap.
    let own_partition = format!("{lo_name}p");
    let host_devices: Vec<String> = fs::read_dir("/sys/class/block")
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != lo_name && !n.starts_with(&own_partition))
        .collect();
    for d in &host_devices {
        let node = format!("/dev/{d}");
        assert!(
            !s.disks.iter().any(|x| x.name == *d)
                && !s.partitions.iter().any(|p| p.name == *d)
                && !s.filesystems.iter().any(|f| f.device == node)
                && !s.mounts.iter().any(|m| m.source == node),
            "host device {d} reported"
        );
    }
    assert!(s.swaps.is_empty(), "{:?}", s.swaps);

    let config = collector(&file, "storage.config");
    assert_eq!(config.state, CollectorState::Ok, "{config:?}");
    let fstab: Vec<&str> = s.fstab.iter().map(|f| f.mountpoint.as_str()).collect();
    assert_eq!(fstab, ["/", "/srv"]);
}

#[test]
fn directory_root_has_no_devices() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::write(root.join("etc/fstab"), "/dev/vda1 / ext4 defaults 0 1\n").unwrap();

    let file = capture(&root, &tmp.path().join("state"));

    let c = collector(&file, "storage.devices");
    assert_eq!(c.state, CollectorState::Ok, "{c:?}");
    let message = c.message.as_deref().unwrap_or_default();
    assert!(message.contains("not a mounted disk"), "{message}");
    let s = &file.profile.storage;
    assert!(
        s.disks.is_empty(),
        "the host's disks describe the host: {:?}",
        s.disks
    );
    assert!(s.partitions.is_empty() && s.filesystems.is_empty());
    assert!(s.mounts.is_empty() && s.usage.is_empty() && s.swaps.is_empty());
    // The configuration is the root's own.
    assert_eq!(s.fstab.len(), 1);
    assert_eq!(s.fstab[0].spec, "/dev/vda1");
}

#[test]
fn live_root_is_described_quickly() {
    let tmp = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let file = capture(Path::new("/"), tmp.path());
    let wall = started.elapsed();

    let c = collector(&file, "storage.devices");
    assert_eq!(c.state, CollectorState::Ok, "{c:?}");
    // A budget for the whole live capture is 0.3 s; storage must stay well within it (with
    // headroom here for a loaded test machine).
    assert!(
        c.duration_us < 1_000_000,
        "storage.devices took {} µs",
        c.duration_us
    );
    assert!(wall < Duration::from_secs(20));
    let s = &file.profile.storage;
    let root = s
        .mounts
        .iter()
        .find(|m| m.mountpoint == "/")
        .expect("a / mount");
    assert!(!root.fstype.is_empty());
    assert!(
        s.usage
            .iter()
            .any(|u| u.mountpoint == "/" && u.size_bytes > 0),
        "{:?}",
        s.usage
    );
    assert!(
        !s.mounts
            .iter()
            .any(|m| ["proc", "sysfs", "tmpfs", "cgroup2"].contains(&m.fstype.as_str())),
        "pseudo filesystems recorded: {:?}",
        s.mounts
    );
    assert!(!s
        .disks
        .iter()
        .any(|d| d.name.starts_with("zram") || d.name.starts_with("ram")));
}
