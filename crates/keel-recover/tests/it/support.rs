//! Disposable loop devices and mounts, released when dropped even if a test fails.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub const MIB: u64 = 1024 * 1024;
pub const GIB: u64 = 1024 * MIB;

/// Why this process cannot attach loop devices, if it cannot.
pub fn missing_privileges() -> Option<String> {
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
pub fn skip(test: &str, why: &str) {
    eprintln!("{test}: skipped: {why}");
}

pub fn run(program: &str, args: &[&str]) -> Result<String, String> {
    run_with_input(program, args, None)
}

pub fn run_with_input(program: &str, args: &[&str], input: Option<&str>) -> Result<String, String> {
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

/// A sparse image file of `size` bytes with the partition table `layout` (sfdisk script).
pub fn image(path: &Path, size: u64, layout: &str) {
    fs::File::create(path).unwrap().set_len(size).unwrap();
    run_with_input("sfdisk", &["-q", &path.display().to_string()], Some(layout)).unwrap();
}

/// A loop device with its partitions; detached (partitions first) when dropped.
pub struct LoopDevice {
    pub dev: String,
}

impl LoopDevice {
    pub fn attach(image: &Path) -> Result<Self, String> {
        let dev = run("losetup", &["-f", "--show", &image.display().to_string()])?;
        let lo = LoopDevice {
            dev: dev.trim().to_string(),
        };
        // This kernel may not scan partition tables itself (`losetup -P` makes no nodes).
        run("partx", &["-a", &lo.dev])?;
        lo.wait_for_nodes()?;
        Ok(lo)
    }

    /// Waits until each partition's node is there with the numbers sysfs gives: devtmpfs
    /// makes them a moment later, and a node left from a partition of the same name that
    /// other tests just deleted would point elsewhere.
    fn wait_for_nodes(&self) -> Result<(), String> {
        use std::os::unix::fs::MetadataExt;
        let name = self.dev.trim_start_matches("/dev/");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        for e in fs::read_dir(format!("/sys/block/{name}"))
            .unwrap()
            .filter_map(Result::ok)
        {
            let Ok(numbers) = fs::read_to_string(e.path().join("dev")) else {
                continue;
            };
            if !e.path().join("partition").exists() {
                continue;
            }
            let (major, minor) = numbers.trim().split_once(':').unwrap();
            let want = (major.parse::<u64>().unwrap(), minor.parse::<u64>().unwrap());
            let node = format!("/dev/{}", e.file_name().to_string_lossy());
            loop {
                let have = fs::metadata(&node).ok().map(|m| {
                    let d = m.rdev();
                    (
                        ((d >> 32) & 0xffff_f000) | ((d >> 8) & 0xfff),
                        ((d >> 12) & 0xffff_ff00) | (d & 0xff),
                    )
                });
                if have == Some(want) {
                    break;
                }
                if std::time::Instant::now() > deadline {
                    return Err(format!("{node} did not appear as {major}:{minor}"));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        Ok(())
    }

    pub fn part(&self, n: u32) -> String {
        format!("{}p{n}", self.dev)
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        for attempt in 1..=5 {
            if run("partx", &["-d", &self.dev]).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100 * attempt));
        }
        let _ = run("losetup", &["-d", &self.dev]);
    }
}

/// A mount, unmounted when dropped (retried: a reader can keep it busy for a moment).
pub struct Mounted {
    dev: String,
    at: PathBuf,
}

impl Mounted {
    pub fn new(dev: &str, at: &Path) -> Self {
        fs::create_dir_all(at).unwrap();
        run("mount", &[dev, &at.display().to_string()]).unwrap();
        Mounted {
            dev: dev.to_string(),
            at: at.to_path_buf(),
        }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let at = self.at.display().to_string();
        let mut unmounted = false;
        for attempt in 1..=5 {
            if run("umount", &[&at]).is_ok() {
                unmounted = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(100 * attempt));
        }
        if !unmounted {
            let _ = run("umount", &["-l", &at]);
        }
        wait_released(&self.dev);
    }
}

/// Waits, for up to 30 s, until the ext4 or xfs filesystem last mounted from `dev` is gone
/// from the kernel. An unmount here does not end it while a mount namespace that another
/// process made meanwhile (a bootstrap in another test, say) still holds a copy of the mount,
/// and until it ends xfs refuses to mount another filesystem with its UUID.
pub fn wait_released(dev: &str) {
    let name = dev.trim_start_matches("/dev/");
    let alive = || {
        ["ext4", "xfs"]
            .iter()
            .any(|fs| Path::new("/sys/fs").join(fs).join(name).exists())
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while alive() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What `blkid -p` finds on a device, as `KEY=value` pairs.
pub fn blkid(dev: &str) -> std::collections::BTreeMap<String, String> {
    let out = Command::new("blkid")
        .args(["-p", "-o", "export", dev])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once('=')?;
            Some((k.to_string(), v.to_string()))
        })
        .collect()
}

/// A source system on an image file: its partition table (an sfdisk script), the
/// filesystems to make on its partitions, and its fstab. Captured into a profile with the
/// real collector.
pub struct Source {
    pub size: u64,
    pub table: String,
    /// Partition number, mkfs program, its arguments (before the device).
    pub mkfs: Vec<(u32, &'static str, Vec<String>)>,
    /// Partition number and mountpoint, parents first (the root first).
    pub mounts: Vec<(u32, &'static str)>,
    pub fstab: String,
}

impl Source {
    /// Makes the image in `dir`, puts `data_mib` MiB of data in its root, and captures it.
    pub fn capture(&self, dir: &Path, data_mib: usize) -> Result<keel_profile::Profile, String> {
        let img = dir.join("source.img");
        image(&img, self.size, &self.table);
        let lo = LoopDevice::attach(&img)?;
        for (n, program, args) in &self.mkfs {
            let mut a: Vec<String> = args.clone();
            a.push(lo.part(*n));
            let a: Vec<&str> = a.iter().map(String::as_str).collect();
            run(program, &a)?;
        }
        let root = dir.join("source-root");
        let mut mounted = Vec::new();
        for (n, mp) in &self.mounts {
            let at = root.join(mp.trim_start_matches('/'));
            mounted.push(Mounted::new(&lo.part(*n), &at));
            if *mp == "/" {
                fs::create_dir_all(root.join("etc")).unwrap();
                fs::write(root.join("etc/fstab"), &self.fstab).unwrap();
                fs::write(root.join("data"), vec![7u8; data_mib * MIB as usize]).unwrap();
            }
        }
        run("sync", &[])?;
        let mut opts = keel_collect::Options::new(&root);
        opts.state_dir = dir.join("state");
        let file = keel_collect::capture(&opts).map_err(|e| e.to_string());
        while let Some(m) = mounted.pop() {
            drop(m);
        }
        drop(lo);
        Ok(file?.profile)
    }
}
