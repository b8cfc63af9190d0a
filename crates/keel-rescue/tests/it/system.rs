//! A whole server recovered through the rescue environment onto another kind of machine: the
//! production server (openssh-server, cron, a user, a changed `sshd_config`, a sysctl
//! setting, a static network configuration, a kernel and GRUB) on GPT + UEFI with an EFI
//! system partition and LVM (root, a separate `/srv`, swap), its `/srv` backed up with
//! restic. The target machine boots the rescue environment under OVMF (UEFI), has one NVM
//! Express disk smaller than the source's and another NIC model with another MAC address; the
//! tree is built on the host (package installation under TCG is several times slower), and
//! `keel recover plan` and one `keel recover apply` run in the guest. The recovered disk then
//! boots under OVMF and its facts are checked on the serial console.
//!
//! The source is made once and cached: its root and `/srv` filesystems are made on the host
//! (`mkfs.ext4 -d`), copied onto LVM in the rescue environment (the host's kernel has no
//! device-mapper or FAT), and captured there with `keel capture --root`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use keel_rescue::{RescueResult, Status};

use crate::layouts::{step, write_kit};
use crate::qemu::{Bus, Disk, Vm};
use crate::support::{
    blank_image, cache_dir, keel_bin, kit_image, kit_image_sized, note, rescue_env, secs, sh, skip,
    step_output, vm_tests_unsupported, which, ShowConsoleOnPanic,
};
use crate::system_support;
use crate::system_support::boot::{fact, facts, FACTS_END};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
/// Bump when the source's recipe changes.
const RECIPE: &str = "uefi-v1";
const ROOT_UUID: &str = "5b1f0c2e-8a3d-4f6b-9e7c-0d1e2f3a4b5c";
const SRV_UUID: &str = "6c2a1d3f-9b4e-4a7c-8f8d-1e2f3a4b5c6d";
const SWAP_UUID: &str = "7d3b2e4a-0c5f-4b8d-9a9e-2f3a4b5c6d7e";
/// The EFI system partition's FAT volume id (`mkfs.vfat -i`), as blkid shows it.
const ESP_ID: &str = "4B45-4C31";
const RESTIC_PASSWORD: &str = "keel-uefi-restic";
/// The name the network configuration uses on the source, and the one the target's NIC
/// (an e1000 in PCI slot 4) gets.
const OLD_NIC: &str = "ens3";
const NEW_NIC: &str = "ens4";
const NEW_MAC: &str = "52:54:00:4b:45:55";

const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE.fd";
const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS.fd";

/// The cached source: its profile, the recovery identity, and the restic repository.
struct Source {
    profile: PathBuf,
    key: PathBuf,
    repository: PathBuf,
}

fn source_dir() -> PathBuf {
    cache_dir().join(format!("uefi-source-{RECIPE}"))
}

/// Runs a command on the host, which must succeed.
fn host(cmd: &mut Command, what: &str) -> String {
    let out = cmd
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The source server, made and captured once (see the module's comment).
fn source() -> Source {
    let dir = source_dir();
    fs::create_dir_all(&dir).expect("source dir");
    let lock = fs::File::create(cache_dir().join("uefi-source.lock")).expect("lock file");
    lock.lock().expect("lock");
    let s = Source {
        profile: dir.join("profile.keel"),
        key: dir.join("recovery.key"),
        repository: dir.join("restic"),
    };
    if s.profile.is_file() && s.key.is_file() && s.repository.join("config").is_file() {
        return s;
    }
    let started = Instant::now();
    let tar = system_support::boot::boot_server_tarball()
        .unwrap_or_else(|e| panic!("bootable server: {e}"));
    let work = tempfile::tempdir_in(&dir).expect("work dir");
    let root = work.path().join("root");
    let srv = work.path().join("srv");
    fs::create_dir_all(&root).expect("mkdir");
    host(
        Command::new("tar")
            .args(["--numeric-owner", "--xattrs", "--xattrs-include=*", "-xpf"])
            .arg(tar)
            .arg("-C")
            .arg(&root),
        "tar",
    );
    fs::create_dir_all(root.join("boot/efi")).expect("mkdir boot/efi");
    fs::create_dir_all(root.join("srv")).expect("mkdir srv");
    fs::write(
        root.join("etc/fstab"),
        format!(
            "# <file system> <mount point> <type> <options> <dump> <pass>\n\
             UUID={ROOT_UUID} / ext4 errors=remount-ro 0 1\n\
             UUID={ESP_ID} /boot/efi vfat umask=0077 0 1\n\
             UUID={SRV_UUID} /srv ext4 defaults 0 2\n\
             UUID={SWAP_UUID} none swap sw 0 0\n"
        ),
    )
    .expect("fstab");

    // /srv, backed up with restic as the source itself would (paths as /srv, its host name).
    fs::create_dir_all(srv.join("app")).expect("mkdir srv/app");
    fs::write(srv.join("README"), "application data lives here\n").expect("srv data");
    fs::write(srv.join("app/state.bin"), state_data()).expect("srv data");
    let _ = fs::remove_dir_all(&s.repository);
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
            s.repository.display()
        ),
    )
    .expect("data.toml");
    for args in [
        "init".to_string(),
        format!("backup --host {} /srv", system_support::HOSTNAME),
    ] {
        host(
            Command::new("unshare")
                .args(["--mount", "--propagation", "private", "sh", "-c"])
                .arg(format!(
                    "mount --bind \"$1\" /srv && restic --repo \"$2\" --password-file \"$3\" \
                     --no-cache {args}"
                ))
                .arg("sh")
                .arg(&srv)
                .arg(&s.repository)
                .arg(&password),
            "restic",
        );
    }

    // The filesystems, made from the directories without mounting anything.
    let root_img = work.path().join("root.img");
    let srv_img = work.path().join("srv.img");
    for (img, from, uuid, label, bytes) in [
        (&root_img, &root, ROOT_UUID, "root", 1600 * MIB),
        (&srv_img, &srv, SRV_UUID, "srv", 64 * MIB),
    ] {
        blank_image(img, bytes);
        sh(
            "mkfs.ext4",
            &[
                "-q",
                "-F",
                "-U",
                uuid,
                "-L",
                label,
                "-d",
                from.to_str().expect("utf-8"),
                img.to_str().expect("utf-8"),
            ],
        );
    }

    // In the rescue environment: GPT with an ESP and LVM, the filesystems copied onto the
    // volumes, and the capture, printed on the console.
    let identity = age::x25519::Identity::generate();
    let kit_dir = work.path().join("kit");
    fs::create_dir_all(&kit_dir).expect("mkdir kit");
    let esp_serial = ESP_ID.replace('-', "");
    let steps = vec![
        step(
            "build",
            &format!(
                "sgdisk -n1:1M:+200M -t1:ef00 -c1:esp -n2:0:0 -t2:8e00 -c2:lvm $SRC\n\
                 wait_part $SRC 2\n\
                 mkfs.vfat -F 32 -i {esp_serial} -n ESP $(part $SRC 1)\n\
                 pvcreate -y $(part $SRC 2)\n\
                 vgcreate vg0 $(part $SRC 2)\n\
                 lvcreate -y -L 2560M -n root vg0\n\
                 lvcreate -y -L 512M -n srv vg0\n\
                 lvcreate -y -L 256M -n swap vg0\n\
                 e2image -ra $ROOTFS /dev/vg0/root\n\
                 e2fsck -fy /dev/vg0/root >/dev/null\n\
                 resize2fs /dev/vg0/root\n\
                 e2image -ra $SRVFS /dev/vg0/srv\n\
                 e2fsck -fy /dev/vg0/srv >/dev/null\n\
                 resize2fs /dev/vg0/srv\n\
                 mkswap -U {SWAP_UUID} -L swap /dev/vg0/swap\n\
                 mkdir -p /mnt/src\n\
                 mount /dev/vg0/root /mnt/src\n\
                 mount $(part $SRC 1) /mnt/src/boot/efi\n\
                 mount /dev/vg0/srv /mnt/src/srv\n\
                 blkid -c /dev/null\n\
                 findmnt -rn -o TARGET,SOURCE,FSTYPE | grep /mnt/src"
            ),
        ),
        step(
            "capture",
            &format!(
                "mkdir -p /tmp/keel-state\n\
                 keel capture --root /mnt/src --output /tmp/src.keel --state-dir /tmp/keel-state \
                 --recovery-key {}\n\
                 echo KEEL-PROFILE-BEGIN\n\
                 base64 /tmp/src.keel\n\
                 echo KEEL-PROFILE-END",
                identity.to_public()
            ),
        ),
    ];
    write_kit(
        &kit_dir,
        "the UEFI + LVM production server, assembled and captured",
        "SRC=$(by_serial KEEL-SRC); ROOTFS=$(by_serial KEEL-ROOTFS); SRVFS=$(by_serial KEEL-SRVFS)\n",
        &steps,
    );
    let env = rescue_env().unwrap_or_else(|e| panic!("cannot build the rescue environment: {e}"));
    let kit = work.path().join("kit.img");
    kit_image(&kit_dir, &kit);
    let mut kit_disk = Disk::new(&kit, Bus::Virtio, "KEEL-KIT");
    kit_disk.readonly = true;
    let src = work.path().join("src.img");
    blank_image(&src, 6 * GIB);
    let mut rootfs = Disk::new(&root_img, Bus::Virtio, "KEEL-ROOTFS");
    rootfs.readonly = true;
    let mut srvfs = Disk::new(&srv_img, Bus::Virtio, "KEEL-SRVFS");
    srvfs.readonly = true;
    let console = work.path().join("source-console.log");
    let mut vm = Vm::boot(
        env,
        &[
            kit_disk,
            rootfs,
            srvfs,
            Disk::new(&src, Bus::Virtio, "KEEL-SRC"),
        ],
        "keel.shell=0",
        &console,
        Duration::from_secs(1500),
    );
    let status = vm.wait_exit(Duration::from_secs(1400));
    let text = vm.console();
    drop(vm);
    let r = RescueResult::find(&text)
        .unwrap_or_else(|| panic!("no result line from the source's kit:\n{text}"));
    assert!(
        status.is_some_and(|s| s.success()) && r.status == Status::Ok,
        "the source's kit failed: {:?}\n{text}",
        r.steps
    );
    let capture = step_output(&text, "capture");
    let b64: String = capture
        .split("KEEL-PROFILE-BEGIN")
        .nth(1)
        .and_then(|t| t.split("KEEL-PROFILE-END").next())
        .expect("the profile on the console")
        .split_whitespace()
        .collect();
    let decoded = work.path().join("profile.b64");
    fs::write(&decoded, b64).expect("write");
    let bytes = host(
        Command::new("sh")
            .arg("-c")
            .arg("base64 -d \"$1\" | od -An -v -tx1")
            .arg("sh")
            .arg(&decoded),
        "base64",
    );
    let bytes: Vec<u8> = bytes
        .split_whitespace()
        .map(|h| u8::from_str_radix(h, 16).expect("hex"))
        .collect();
    keel_profile::ProfileFile::decode(&bytes).expect("the captured profile decodes");
    {
        use age::secrecy::ExposeSecret;
        fs::write(
            &s.key,
            format!("{}\n", identity.to_string().expose_secret()),
        )
        .expect("key");
    }
    let partial = dir.join("profile.keel.partial");
    fs::write(&partial, &bytes).expect("profile");
    fs::rename(&partial, &s.profile).expect("rename");
    note(&format!(
        "made and captured the UEFI + LVM source in {}",
        secs(started.elapsed())
    ));
    s
}

/// The bytes of `/srv/app/state.bin`.
fn state_data() -> Vec<u8> {
    (0..256 * 1024u32)
        .map(|i| u8::try_from(i * 13 % 251).expect("byte"))
        .collect()
}

/// Why this test cannot run here, if it cannot.
fn unsupported() -> Option<String> {
    if let Some(why) = vm_tests_unsupported() {
        return Some(why);
    }
    if let Some(why) = system_support::unsupported() {
        return Some(why);
    }
    for tool in ["restic", "e2image", "mkfs.ext4", "base64"] {
        if which(tool).is_none() {
            return Some(format!("`{tool}` is not installed"));
        }
    }
    if !Path::new(OVMF_CODE).is_file() || !Path::new(OVMF_VARS).is_file() {
        return Some("OVMF (UEFI firmware for QEMU, Debian package ovmf) is not installed".into());
    }
    None
}

#[test]
fn system_a_uefi_lvm_server_is_recovered_onto_nvme_with_another_nic_and_boots() {
    const TEST: &str = "system_uefi_lvm";
    if let Some(why) = unsupported() {
        return skip(TEST, &why);
    }
    let src = source();
    let profile = keel_profile::ProfileFile::decode(&fs::read(&src.profile).expect("profile"))
        .expect("decode profile");
    let packages = profile.profile.packages.packages.len();
    let keel = keel_bin().unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().expect("tempdir");
    let kit_dir = dir.path().join("kit");
    fs::create_dir_all(&kit_dir).expect("mkdir kit");

    // The tree, built on the host from the warm package cache.
    let t = Instant::now();
    let tree = kit_dir.join("tree.tar");
    let out = Command::new(&keel)
        .args(["recover", "build-tree", "--profile"])
        .arg(&src.profile)
        .arg("--output")
        .arg(&tree)
        .arg("--recovery-identity")
        .arg(&src.key)
        .arg("--cache")
        .arg(system_support::cache_dir().join("build-cache"))
        .output()
        .expect("run keel");
    assert!(
        out.status.success(),
        "build-tree failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let build_tree = t.elapsed();
    fs::copy(&src.profile, kit_dir.join("profile.keel")).expect("copy profile");
    fs::copy(&src.key, kit_dir.join("recovery.key")).expect("copy key");
    host(
        Command::new("cp")
            .arg("-a")
            .arg(&src.repository)
            .arg(kit_dir.join("restic")),
        "cp",
    );
    let steps = vec![
        step(
            "machine",
            "echo \"TARGET=$TARGET\"\nls /sys/firmware/efi >/dev/null && echo firmware=uefi\n\
             for n in /sys/class/net/*; do echo \"nic ${n##*/} $(cat $n/address) \
             $(basename $(readlink $n/device/driver) 2>/dev/null)\"; done",
        ),
        step(
            "plan",
            "keel recover plan --profile ./profile.keel --target $TARGET -o /tmp/plan.json",
        ),
        step(
            "apply",
            &format!(
                "keel recover apply /tmp/plan.json --yes --tree ./tree.tar \
                 --recovery-identity ./recovery.key --restic-repository \"$PWD/restic\" \
                 --nic-map {OLD_NIC}={NEW_NIC} --report /tmp/report.json\n\
                 echo KEEL-REPORT-BEGIN\ncat /tmp/report.json\necho KEEL-REPORT-END"
            ),
        ),
    ];
    write_kit(
        &kit_dir,
        "the UEFI + LVM production server, recovered onto this machine",
        "TARGET=$(by_serial KEEL-TARGET)\n",
        &steps,
    );
    let kit_bytes = fs::metadata(&tree).expect("tree").len() + 256 * MIB;
    let kit = dir.path().join("kit.img");
    kit_image_sized(&kit_dir, &kit, kit_bytes);
    fs::remove_file(&tree).expect("remove the tree copy");
    let mut kit_disk = Disk::new(&kit, Bus::Virtio, "KEEL-KIT");
    kit_disk.readonly = true;
    // Smaller than the source's 6 GiB disk, and NVM Express.
    let target = dir.path().join("target.img");
    blank_image(&target, 5 * GIB);
    let vars = dir.path().join("vars.fd");
    fs::copy(OVMF_VARS, &vars).expect("OVMF vars");
    let machine = |vars: &Path| -> Vec<String> {
        vec![
            "-drive".into(),
            format!("if=pflash,format=raw,readonly=on,file={OVMF_CODE}"),
            "-drive".into(),
            format!("if=pflash,format=raw,file={}", vars.display()),
            "-netdev".into(),
            "user,id=n0".into(),
            "-device".into(),
            format!("e1000,netdev=n0,addr=0x4,mac={NEW_MAC}"),
        ]
    };
    let env = rescue_env().unwrap_or_else(|e| panic!("cannot build the rescue environment: {e}"));
    let console = dir.path().join("recover-console.log");
    let _show = ShowConsoleOnPanic(&console);
    let t = Instant::now();
    let mut vm = Vm::boot_with(
        env,
        &[kit_disk, Disk::new(&target, Bus::Nvme, "KEEL-TARGET")],
        "keel.shell=0",
        &console,
        Duration::from_secs(2400),
        &machine(&vars),
    );
    let status = vm.wait_exit(Duration::from_secs(2300));
    let text = vm.console();
    drop(vm);
    let recover = t.elapsed();
    let r = RescueResult::find(&text)
        .unwrap_or_else(|| panic!("no result line from the recovery kit:\n{text}"));
    for s in &r.steps {
        note(&format!("{TEST}: step {:<8} {:>7.1} s", s.name, s.seconds));
    }
    assert!(
        status.is_some_and(|s| s.success()) && r.status == Status::Ok,
        "the recovery failed: {:?}",
        r.steps
    );
    let machine_out = step_output(&text, "machine");
    assert!(machine_out.contains("firmware=uefi"), "{machine_out}");
    assert!(machine_out.contains("/dev/nvme0n1"), "{machine_out}");
    let apply = step_output(&text, "apply");
    let report: serde_json::Value = serde_json::from_str(
        apply
            .split("KEEL-REPORT-BEGIN")
            .nth(1)
            .and_then(|t| t.split("KEEL-REPORT-END").next())
            .expect("the report on the console"),
    )
    .expect("report JSON");
    assert_eq!(report["ok"], true, "{report:#}");
    assert_eq!(
        report["install"]["firmware"], "uefi",
        "{:#}",
        report["install"]
    );
    assert_eq!(report["verify"]["unexpected"], serde_json::json!([]));
    assert_eq!(report["data"][0]["path"], "/srv");
    let phases: Vec<String> = report["phases"]
        .as_array()
        .expect("phases")
        .iter()
        .map(|p| {
            format!(
                "{} {:.1} s",
                p["phase"].as_str().unwrap_or("?"),
                p["seconds"]
            )
        })
        .collect();
    note(&format!("{TEST}: apply phases in the guest: {phases:?}"));

    // The recovered disk boots on the target machine: UEFI, NVM Express, the e1000 NIC.
    let console = dir.path().join("boot-console.log");
    let _show_boot = ShowConsoleOnPanic(&console);
    let vars = dir.path().join("vars-boot.fd");
    fs::copy(OVMF_VARS, &vars).expect("OVMF vars");
    let mut args = machine(&vars);
    args.extend([
        "-drive".to_string(),
        format!(
            "file={},format=raw,if=none,id=d0,cache=unsafe",
            target.display()
        ),
        "-device".to_string(),
        "nvme,drive=d0,serial=KEEL-TARGET".to_string(),
    ]);
    let t = Instant::now();
    let mut vm = Vm::boot_disk(&args, &console, Duration::from_secs(600));
    let ended = vm.wait_exit(Duration::from_secs(580)).is_some();
    let text = vm.console();
    drop(vm);
    let boot = t.elapsed();
    note(&format!(
        "{TEST}: build-tree on the host {}, rescue boot + plan + apply in the guest {}, boot of \
         the recovered disk to its facts {}; recovery with a cached tree: {}",
        secs(build_tree),
        secs(recover),
        secs(boot),
        secs(recover + boot)
    ));
    assert!(
        ended && text.contains(FACTS_END),
        "the recovered server did not print its facts and power off"
    );
    let f = facts(&text);
    note(&format!("{TEST}: facts: {f:?}"));
    assert_eq!(fact(&f, "firmware"), ["uefi"]);
    assert_eq!(fact(&f, "hostname"), [system_support::HOSTNAME]);
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
    assert!(
        fact(&f, "link")
            .iter()
            .any(|l| l.starts_with(NEW_NIC) && l.contains(NEW_MAC)),
        "{f:?}"
    );
    let mounts = fact(&f, "mount");
    assert!(
        mounts
            .iter()
            .any(|m| m.starts_with("/ ") && m.contains("/dev/mapper/vg0-root")),
        "{mounts:?}"
    );
    assert!(
        mounts
            .iter()
            .any(|m| m.starts_with("/srv ") && m.contains("/dev/mapper/vg0-srv")),
        "{mounts:?}"
    );
    assert_eq!(fact(&f, "srv-readme"), ["application data lives here"]);
    let expected = {
        let p = dir.path().join("state.bin");
        fs::write(&p, state_data()).expect("state");
        host(
            Command::new("sh")
                .arg("-c")
                .arg("sha256sum \"$1\" | cut -c1-16")
                .arg("sh")
                .arg(&p),
            "sha256sum",
        )
    };
    assert_eq!(fact(&f, "srv-state"), [expected.trim()], "restored data");
    assert_eq!(fact(&f, "failed"), [""], "failed units");
}
