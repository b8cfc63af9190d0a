//! The whole recovery of a bootable server onto a blank disk image, through the `keel`
//! binary, then booted under QEMU and checked over its serial console.
//!
//! The source is keel-system's cached production server with a kernel, GRUB for BIOS, a
//! serial console and a unit that prints facts on the console and powers off (see
//! `support::boot_server_tarball`), laid onto a 6 GiB GPT image (BIOS boot partition, ext4
//! root, ext4 /srv) and captured. Its profile is cached with the recovery identity its
//! secrets are encrypted to; its `/srv` data is backed up with restic to a local repository
//! named in `/etc/keel/data.toml`. The test then goes from a blank 4 GiB image to a booted,
//! verified system with two commands: `keel recover plan`, and `keel recover apply`, which
//! rebuilds the disks, builds the tree onto them from the warm package cache, makes it boot,
//! restores `/srv` with restic and verifies the result; then the image boots under QEMU.
//!
//! Needs root, debootstrap, loop devices with partx and QEMU; without them it says why on
//! stderr and passes.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::system_support;
use crate::system_support::boot::FACTS_END;
pub(crate) use crate::system_support::boot::{fact, facts};
use crate::system_support::{cache_dir, note, run, Scratch, HOSTNAME};

const KEEL: &str = env!("CARGO_BIN_EXE_keel");
const GIB: u64 = 1 << 30;
const BIOS_BOOT: &str = "21686148-6449-6e6f-744e-656564454649";
const LINUX_FS: &str = "0fc63daf-8483-4772-8e79-3d69d8477de4";
pub(crate) const ROOT_UUID: &str = "3a6d1c2e-7b4f-4e8a-9c0d-1e2f3a4b5c6d";
const SRV_UUID: &str = "8e9f0a1b-2c3d-4e5f-a6b7-c8d9e0f1a2b3";
/// Name of the profile's NIC, and the name the guest's NIC gets (PCI slot 5).
pub(crate) const OLD_NIC: &str = "ens3";
pub(crate) const NEW_NIC: &str = "ens5";
/// Bump when the source image's recipe changes.
const PROFILE_RECIPE: &str = "p4";
/// The restic repository's password.
const RESTIC_PASSWORD: &str = "keel-test-restic";

/// A loop device with partition nodes, detached when dropped.
struct Loop {
    dev: String,
}

impl Loop {
    fn attach(image: &Path) -> Loop {
        let out = run(
            Command::new("losetup")
                .args(["--find", "--show"])
                .arg(image),
            Duration::from_secs(30),
        );
        let lo = Loop {
            dev: out.trim().to_string(),
        };
        run(
            Command::new("partx").args(["-a", &lo.dev]),
            Duration::from_secs(30),
        );
        lo
    }

    fn part(&self, n: u32) -> String {
        let p = format!("{}p{n}", self.dev);
        for _ in 0..50 {
            if Path::new(&p).exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        p
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("partx").args(["-d", &self.dev]).status();
        let _ = Command::new("losetup").args(["-d", &self.dev]).status();
    }
}

pub(crate) fn missing() -> Option<String> {
    if let Some(why) = system_support::unsupported() {
        return Some(why);
    }
    for tool in [
        "losetup",
        "partx",
        "sfdisk",
        "mkfs.ext4",
        "qemu-system-x86_64",
        "timeout",
    ] {
        if system_support::which(tool).is_none() {
            return Some(format!("`{tool}` is not installed"));
        }
    }
    if !Path::new("/dev/loop-control").exists() {
        return Some("no loop devices".into());
    }
    None
}

/// The bootable server's profile and the recovery identity its secrets are encrypted to,
/// captured once from a 6 GiB image and cached.
pub(crate) fn source_profile() -> (PathBuf, PathBuf) {
    let tar =
        system_support::boot::boot_server_tarball().unwrap_or_else(|e| panic!("boot server: {e}"));
    let dir = cache_dir();
    let profile = dir.join(format!("boot-server-{PROFILE_RECIPE}.keel"));
    let key = dir.join(format!("boot-server-{PROFILE_RECIPE}.key"));
    let lock = fs::File::create(dir.join("boot-profile.lock")).expect("lock file");
    lock.lock().expect("lock");
    if profile.is_file() && key.is_file() && restic_repository().join("config").is_file() {
        return (profile, key);
    }
    let started = Instant::now();
    let scratch = Scratch::new("keel-boot-source-");
    let img = scratch.path().join("source.img");
    fs::File::create(&img)
        .and_then(|f| f.set_len(6 * GIB))
        .expect("image");
    let table = format!(
        "label: gpt\nstart=2048, size=2048, type={BIOS_BOOT}, name=\"bios\"\n\
         size=3GiB, type={LINUX_FS}, name=\"root\"\ntype={LINUX_FS}, name=\"srv\"\n"
    );
    let mut sfdisk = Command::new("sfdisk")
        .args(["-q"])
        .arg(&img)
        .stdin(Stdio::piped())
        .spawn()
        .expect("sfdisk");
    std::io::Write::write_all(sfdisk.stdin.as_mut().expect("stdin"), table.as_bytes())
        .expect("table");
    assert!(sfdisk.wait().expect("sfdisk").success());
    let lo = Loop::attach(&img);
    for (n, uuid, label) in [(2, ROOT_UUID, "root"), (3, SRV_UUID, "srv")] {
        run(
            Command::new("mkfs.ext4").args([
                "-q",
                "-E",
                "lazy_itable_init=1,lazy_journal_init=1",
                "-U",
                uuid,
                "-L",
                label,
                &lo.part(n),
            ]),
            Duration::from_secs(60),
        );
    }
    let root = scratch.path().join("root");
    fs::create_dir_all(&root).expect("mkdir");
    run(
        Command::new("mount").arg(lo.part(2)).arg(&root),
        Duration::from_secs(30),
    );
    fs::create_dir_all(root.join("srv")).expect("mkdir srv");
    run(
        Command::new("mount").arg(lo.part(3)).arg(root.join("srv")),
        Duration::from_secs(30),
    );
    run(
        Command::new("tar")
            .args(["--numeric-owner", "--xattrs", "--xattrs-include=*", "-xpf"])
            .arg(tar)
            .arg("-C")
            .arg(&root),
        Duration::from_secs(600),
    );
    fs::write(
        root.join("etc/fstab"),
        format!(
            "# <file system> <mount point> <type> <options> <dump> <pass>\n\
             UUID={ROOT_UUID} / ext4 errors=remount-ro 0 1\n\
             UUID={SRV_UUID} /srv ext4 defaults 0 2\n"
        ),
    )
    .expect("fstab");
    fs::write(root.join("srv/README"), "application data lives here\n").expect("srv data");
    fs::create_dir_all(root.join("srv/app")).expect("mkdir srv/app");
    let data: Vec<u8> = (0..256 * 1024u32).map(|i| (i * 7 % 251) as u8).collect();
    fs::write(root.join("srv/app/state.bin"), &data).expect("srv data");
    // /srv is backed up with restic, as the source host itself would (paths as /srv, the
    // host's name); the profile only names the path, the repository and the password file.
    let repo = restic_repository();
    let _ = fs::remove_dir_all(&repo);
    fs::create_dir_all(root.join("etc/keel")).expect("mkdir etc/keel");
    let password = root.join("etc/keel/restic-password");
    fs::write(&password, format!("{RESTIC_PASSWORD}\n")).expect("password");
    fs::set_permissions(
        &password,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .expect("chmod");
    fs::write(
        root.join("etc/keel/data.toml"),
        format!(
            "[[data]]\npath = \"/srv\"\nbackup = \"restic\"\nrepository = \"{}\"\n\
             password_file = \"/etc/keel/restic-password\"\n",
            repo.display()
        ),
    )
    .expect("data.toml");
    let restic = |args: &str| {
        run(
            Command::new("unshare")
                .args(["--mount", "--propagation", "private", "sh", "-c"])
                .arg(format!(
                    "mount --bind \"$1/srv\" /srv && restic --repo \"$2\" --password-file \
                     \"$3\" --no-cache {args}"
                ))
                .arg("sh")
                .arg(&root)
                .arg(&repo)
                .arg(&password),
            Duration::from_secs(120),
        )
    };
    restic("init");
    restic(&format!("backup --host {HOSTNAME} /srv"));
    run(&mut Command::new("sync"), Duration::from_secs(60));
    let identity = age::x25519::Identity::generate();
    let file = system_support::capture(&root, Some(&identity.to_public().to_string()));
    system_support::unmount_under(&root);
    drop(lo);
    let bytes = file.encode().expect("encode");
    let partial = dir.join(format!(".boot-server-{}.partial", std::process::id()));
    fs::write(&partial, bytes).expect("write profile");
    {
        use age::secrecy::ExposeSecret;
        fs::write(&key, format!("{}\n", identity.to_string().expose_secret())).expect("key");
    }
    fs::rename(&partial, &profile).expect("rename profile");
    note(&format!(
        "captured the bootable server's profile in {:.0?}",
        started.elapsed()
    ));
    (profile, key)
}

/// The restic repository the source's `/srv` is backed up to (cached with its profile).
fn restic_repository() -> PathBuf {
    cache_dir().join(format!("boot-server-{PROFILE_RECIPE}.restic"))
}

/// Runs `keel ARGS`, which must succeed; returns stdout and stderr together.
fn keel(args: &[&str]) -> String {
    let out = Command::new(KEEL)
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .expect("run keel");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "keel {} failed ({}):\n{text}",
        args.join(" "),
        out.status
    );
    text
}

/// A QEMU run, killed (by its own handle) when dropped. Holds the lock other tests' QEMUs
/// take, so that one runs at a time.
pub(crate) struct Vm {
    child: Child,
    _lock: fs::File,
}

impl Vm {
    pub(crate) fn boot(image: &Path, console: &Path, limit: Duration) -> Vm {
        let base = cache_dir().parent().expect("cache base").to_path_buf();
        let lock = fs::File::create(base.join("qemu.lock")).expect("qemu lock");
        lock.lock().expect("lock qemu.lock");
        let child = Command::new("timeout")
            .args(["--signal=KILL", &limit.as_secs().to_string()])
            .arg("qemu-system-x86_64")
            .args(["-accel", "tcg", "-m", "1024", "-smp", "1"])
            // A video card: GRUB's gfxterm waits forever without one.
            .args(["-display", "none", "-monitor", "none", "-no-reboot"])
            .arg("-drive")
            .arg(format!("file={},format=raw,if=virtio", image.display()))
            .args(["-netdev", "user,id=n0"])
            .args([
                "-device",
                "virtio-net-pci,netdev=n0,addr=0x5,mac=52:54:00:4b:45:4c",
            ])
            .arg("-serial")
            .arg(format!("file:{}", console.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(console.with_extension("err")).expect("qemu log"))
            .spawn()
            .expect("start qemu");
        Vm { child, _lock: lock }
    }

    /// Waits for QEMU to end (the guest powers off) or `limit`.
    pub(crate) fn wait(&mut self, limit: Duration) -> bool {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        false
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Releases what an apply kept mounted, when dropped.
struct Release(PathBuf, PathBuf);
impl Drop for Release {
    fn drop(&mut self) {
        let _ = Command::new(KEEL)
            .args(["recover", "release"])
            .arg(&self.0)
            .arg("--target-root")
            .arg(&self.1)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

#[test]
fn a_blank_image_becomes_the_booted_verified_server() {
    if let Some(why) = missing() {
        note(&format!(
            "skipped: needs root, debootstrap, loop devices with partx and QEMU ({why})"
        ));
        return;
    }
    let (profile_path, key) = source_profile();
    let profile = keel_profile::ProfileFile::decode(&fs::read(&profile_path).expect("profile"))
        .expect("decode profile");
    let packages = profile.profile.packages.packages.len();
    let scratch = Scratch::new("keel-install-");
    let dir = scratch.path();
    let s = |p: &Path| p.display().to_string();
    let mut phases: Vec<(&str, f64)> = Vec::new();
    let started = Instant::now();
    let mut timed = |name: &'static str, t: Instant| {
        phases.push((name, t.elapsed().as_secs_f64()));
    };

    // A blank disk of another size than the source's 6 GiB.
    let img = dir.join("target.img");
    fs::File::create(&img)
        .and_then(|f| f.set_len(4 * GIB))
        .expect("blank image");
    let plan = dir.join("plan.json");
    let target = dir.join("target");
    let t = Instant::now();
    keel(&[
        "recover",
        "plan",
        "--profile",
        &s(&profile_path),
        "--target",
        &s(&img),
        "--output",
        &s(&plan),
    ]);
    timed("plan", t);
    let report_path = dir.join("report.json");
    let t = Instant::now();
    let out = keel(&[
        "recover",
        "apply",
        &s(&plan),
        "--yes",
        "--keep-mounted",
        "--target-root",
        &s(&target),
        "--recovery-identity",
        &s(&key),
        "--cache",
        &s(&cache_dir().join("build-cache")),
        "--firmware",
        "bios",
        "--nic-map",
        &format!("{OLD_NIC}={NEW_NIC}"),
        "--report",
        &s(&report_path),
    ]);
    timed("apply", t);
    // Released even when the test fails from here on.
    let release = Release(plan.clone(), target.clone());
    note(&out);
    let report: serde_json::Value =
        serde_json::from_slice(&fs::read(&report_path).expect("report")).expect("report JSON");
    assert_eq!(report["ok"], true, "{report:#}");
    assert_eq!(report["hostname"], HOSTNAME);
    let report_phases: Vec<&str> = report["phases"]
        .as_array()
        .expect("phases")
        .iter()
        .filter_map(|p| p["phase"].as_str())
        .collect();
    for phase in [
        "preflight",
        "storage",
        "secrets",
        "mounts",
        "network",
        "initramfs",
        "bootloader",
        "data",
        "verify",
    ] {
        assert!(
            report_phases.contains(&phase),
            "no {phase} phase in {report_phases:?}"
        );
    }
    assert!(out.contains("recovery of prod-web-1 succeeded"), "{out}");
    assert_eq!(report["data"][0]["path"], "/srv", "{:#}", report["data"]);
    assert_eq!(report["verify"]["unexpected"], serde_json::json!([]));
    let restored = fs::read(target.join("srv/app/state.bin")).expect("restored data");
    let data: Vec<u8> = (0..256 * 1024u32).map(|i| (i * 7 % 251) as u8).collect();
    assert!(restored == data, "the restored /srv/app/state.bin differs");
    fs::write(dir.join("state.bin"), &data).expect("state.bin");
    let grub = fs::read_to_string(target.join("boot/grub/grub.cfg")).expect("grub.cfg");
    assert!(!grub.contains("/dev/loop"), "grub.cfg names a loop device");
    assert!(grub.contains(&format!("root=UUID={ROOT_UUID}")), "{grub}");
    assert!(grub.contains("console=ttyS0"));
    let ifaces = fs::read_to_string(target.join("etc/network/interfaces")).expect("interfaces");
    assert!(
        ifaces.contains(&format!("iface {NEW_NIC} inet static")),
        "{ifaces}"
    );
    assert!(!ifaces.contains(OLD_NIC), "{ifaces}");
    let fstab = fs::read_to_string(target.join("etc/fstab")).expect("fstab");
    assert!(fstab.contains(&format!("UUID={SRV_UUID} /srv")), "{fstab}");

    let t = Instant::now();
    drop(release);
    keel(&[
        "recover",
        "release",
        &s(&plan),
        "--target-root",
        &s(&target),
    ]);
    timed("release", t);

    let console_path = dir.join("console.log");
    let t = Instant::now();
    let mut vm = Vm::boot(&img, &console_path, Duration::from_secs(240));
    let ended = vm.wait(Duration::from_secs(240));
    if std::env::var_os("KEEL_KEEP_IMAGE").is_some() {
        let _ = fs::copy(&img, std::env::temp_dir().join("keel-install-target.img"));
    }
    drop(vm);
    timed("boot and check", t);
    let total = started.elapsed().as_secs_f64();
    let console = fs::read_to_string(&console_path).unwrap_or_default();
    let mut summary = String::from("blank image → booted, verified server:");
    for (name, secs) in &phases {
        let _ = write!(summary, "\n  {name:<16} {secs:6.1} s");
    }
    let _ = write!(summary, "\n  {:<16} {total:6.1} s", "total");
    note(&summary);
    assert!(
        ended && console.contains(FACTS_END),
        "the guest did not print its facts and power off:\n{}\nqemu: {}",
        &console[console.len().saturating_sub(4000)..],
        fs::read_to_string(console_path.with_extension("err")).unwrap_or_default()
    );
    let f = facts(&console);
    note(&format!("facts: {f:?}"));
    assert_eq!(fact(&f, "hostname"), [HOSTNAME]);
    assert_eq!(
        fact(&f, "user"),
        ["deploy:x:1001:1001:Deploy:/home/deploy:/bin/bash"]
    );
    assert_eq!(fact(&f, "packages"), [packages.to_string().as_str()]);
    assert_eq!(fact(&f, "sshd"), ["permitrootlogin no"]);
    assert_eq!(fact(&f, "ssh-enabled"), ["enabled"]);
    assert_eq!(fact(&f, "ssh-active"), ["active"]);
    assert_eq!(fact(&f, "cron-active"), ["active"]);
    assert!(
        fact(&f, "addr").contains(&format!("{NEW_NIC} 192.0.2.10/24").as_str()),
        "{f:?}"
    );
    let cmdline = fact(&f, "cmdline").join(" ");
    assert!(
        cmdline.contains(&format!("root=UUID={ROOT_UUID}")) && cmdline.contains("console=ttyS0"),
        "{cmdline}"
    );
    assert_eq!(fact(&f, "firmware"), ["bios"]);
    assert_eq!(fact(&f, "srv-readme"), ["application data lives here"]);
    let state_sum = Command::new("sha256sum")
        .arg(dir.join("state.bin"))
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout)[..16].to_string())
        .expect("sha256sum");
    assert_eq!(fact(&f, "srv-state"), [state_sum.as_str()], "restored data");
    let mounts = fact(&f, "mount");
    assert!(mounts.iter().any(|m| m.starts_with("/srv ")), "{mounts:?}");
}

#[test]
fn a_package_version_the_repositories_lost_stops_apply_before_any_disk_is_written() {
    if let Some(why) = missing() {
        note(&format!(
            "skipped: needs root, debootstrap, loop devices with partx and QEMU ({why})"
        ));
        return;
    }
    let (profile_path, _key) = source_profile();
    let mut file = keel_profile::ProfileFile::decode(&fs::read(&profile_path).expect("profile"))
        .expect("decode profile");
    let cron = file
        .profile
        .packages
        .packages
        .iter_mut()
        .find(|p| p.name == "cron")
        .expect("cron is installed");
    cron.version = "3.0pl1-999+keel.gone".into();
    let scratch = Scratch::new("keel-lost-version-");
    let dir = scratch.path();
    let s = |p: &Path| p.display().to_string();
    let profile = dir.join("lost.keel");
    fs::write(&profile, file.encode().expect("encode")).expect("write profile");
    let img = dir.join("target.img");
    fs::File::create(&img)
        .and_then(|f| f.set_len(4 * GIB))
        .expect("blank image");
    let plan = dir.join("plan.json");
    keel(&[
        "recover",
        "plan",
        "--profile",
        &s(&profile),
        "--target",
        &s(&img),
        "--output",
        &s(&plan),
    ]);
    let out = Command::new(KEEL)
        .args(["recover", "apply"])
        .arg(&plan)
        .args(["--yes", "--target-root"])
        .arg(dir.join("target"))
        .env("NO_COLOR", "1")
        .output()
        .expect("run keel");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("cron 3.0pl1-999+keel.gone") && stderr.contains("no disk was written"),
        "{stderr}"
    );
    // Not a byte of the image was written: the sparse file still has no block.
    let blocks = std::os::unix::fs::MetadataExt::blocks(&fs::metadata(&img).expect("image"));
    assert_eq!(
        blocks, 0,
        "the image was written to before the check refused"
    );
    let report: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.join("plan.report.json")).expect("report"))
            .expect("report JSON");
    assert_eq!(report["ok"], false);
    assert!(
        report["error"]
            .as_str()
            .is_some_and(|e| e.contains("cron 3.0pl1-999+keel.gone")),
        "{report:#}"
    );
}
