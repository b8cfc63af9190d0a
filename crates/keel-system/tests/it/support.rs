//! What the tests share: a small Debian "production server" built once with debootstrap and
//! cached, captures of it, and scratch directories that clean up after themselves.
//!
//! The server is built on first use into a cache directory the tests own
//! (`$KEEL_TEST_CACHE/system`, or `target/keel-test-cache/system` in the workspace), kept as
//! a tarball, and extracted into a private directory for every test that asks for one.
//! Parallel test processes build it once: the build runs under an exclusive lock on a file in
//! the cache directory, into a temporary name renamed into place when complete.
//!
//! Building needs root, debootstrap and the Debian archive the machine's apt sources name.
//! Without them the tests say so on stderr and return.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use keel_profile::ProfileFile;

/// Release the server runs.
pub const SUITE: &str = "bookworm";
/// Packages beyond debootstrap's minbase installed by debootstrap itself.
const INCLUDE: &str = "openssh-server,cron,systemd-sysv,ifupdown,locales";
/// The extra services, installed with apt afterwards so their new dependencies are marked
/// automatic, as on a server an administrator set up. chrony runs as its own system user.
pub const SERVICES: &[&str] = &["chrony", "rsyslog"];
/// The server's hostname.
pub const HOSTNAME: &str = "prod-web-1";
/// Bump when the recipe changes, so a stale cache is not reused.
const RECIPE: &str = "v2";

/// Prints a note for whoever runs the tests.
#[allow(clippy::print_stderr, reason = "tests report skips and timings")]
pub fn note(msg: &str) {
    eprintln!("{msg}");
}

/// Why the tests that need a Debian root cannot run here, if they cannot.
pub fn unsupported() -> Option<String> {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("?");
    if euid != "0" {
        return Some(format!("running as uid {euid}, not root"));
    }
    for tool in ["debootstrap", "chroot", "tar", "apt-get", "mount", "dpkg"] {
        if which(tool).is_none() {
            return Some(format!("`{tool}` is not installed"));
        }
    }
    if let Err(e) = host_mirror() {
        return Some(e);
    }
    None
}

/// Says why a test is skipped.
pub fn skip(why: &str) {
    note(&format!(
        "skipped: needs root, debootstrap and a Debian archive in the apt sources ({why})"
    ));
}

/// The path of `tool` on `PATH` or in the sbin directories.
pub fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// Runs a command that must succeed within `timeout` (killed after it), returning stdout.
#[track_caller]
pub fn run(cmd: &mut Command, timeout: Duration) -> String {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("LC_ALL", "C.UTF-8")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let deadline = Instant::now() + timeout;
    let mut out = child.stdout.take().expect("piped");
    let mut err = child.stderr.take().expect("piped");
    let o = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = std::io::Read::read_to_end(&mut out, &mut b);
        b
    });
    let e = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = std::io::Read::read_to_end(&mut err, &mut b);
        b
    });
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() > deadline {
            // Only the child this function started, by its handle.
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = o.join().unwrap_or_default();
    let stderr = e.join().unwrap_or_default();
    assert!(
        status.success(),
        "{what} failed ({status}):\n{}\n{}",
        String::from_utf8_lossy(&stdout),
        String::from_utf8_lossy(&stderr)
    );
    String::from_utf8_lossy(&stdout).into_owned()
}

/// A command run inside `root` with `chroot`.
pub fn chroot(root: &Path, args: &[&str]) -> String {
    run(
        Command::new("chroot").arg(root).args(args),
        Duration::from_secs(600),
    )
}

// ------------------------------------------------------------------ mounts and scratch

/// Mount points at or below `dir`, deepest first.
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(m.replace("\\040", " ")))
        .filter(|m| m.starts_with(dir))
        .collect();
    found.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    found
}

/// Unmounts everything at or below `dir`.
pub fn unmount_under(dir: &Path) {
    for m in mounts_under(dir) {
        let ok = Command::new("umount")
            .arg(&m)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&m).status();
        }
    }
}

/// A directory removed on drop, after everything mounted inside it has been unmounted.
#[derive(Debug)]
pub struct Scratch(PathBuf);

impl Scratch {
    /// A new scratch directory.
    pub fn new(prefix: &str) -> Scratch {
        Scratch(
            tempfile::Builder::new()
                .prefix(prefix)
                .tempdir()
                .expect("scratch dir")
                .keep(),
        )
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        unmount_under(&self.0);
        if mounts_under(&self.0).is_empty() {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
}

// ------------------------------------------------------------------ the cached server

/// The directory the tests cache downloads and built trees in.
pub fn cache_dir() -> PathBuf {
    let base = std::env::var_os("KEEL_TEST_CACHE")
        .filter(|d| !d.is_empty())
        .map_or_else(
            || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/keel-test-cache"),
            PathBuf::from,
        );
    base.join("system")
}

/// The main Debian archive of the machine's apt sources, read at run time.
pub fn host_mirror() -> Result<String, String> {
    keel_rescue::sources::host_mirror(Path::new("/"))
        .ok_or_else(|| "no Debian archive in the machine's apt sources".into())
}

/// The cached production server tarball (built on first use).
pub fn server_tarball() -> Result<&'static PathBuf, String> {
    static TAR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    TAR.get_or_init(build_cached_server)
        .as_ref()
        .map_err(Clone::clone)
}

fn build_cached_server() -> Result<PathBuf, String> {
    let dir = cache_dir();
    fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let dir = dir.canonicalize().map_err(|e| e.to_string())?;
    let tar = dir.join(format!("{SUITE}-server-{RECIPE}.tar"));
    let lock_path = dir.join("server.lock");
    let lock = fs::File::create(&lock_path).map_err(|e| e.to_string())?;
    lock.lock().map_err(|e| e.to_string())?;
    if tar.is_file() {
        return Ok(tar);
    }
    let started = Instant::now();
    let work = Scratch(dir.join(format!("server-build.{}", std::process::id())));
    fs::create_dir_all(work.path()).map_err(|e| e.to_string())?;
    let root = work.path().join("root");
    build_server(&root, &dir.join("debs"));
    unmount_under(&root);
    let partial = work.path().join("server.tar");
    run(
        Command::new("tar")
            .args(["--numeric-owner", "--xattrs", "--xattrs-include=*", "-C"])
            .arg(&root)
            .arg("-cf")
            .arg(&partial)
            .arg("."),
        Duration::from_secs(600),
    );
    fs::rename(&partial, &tar).map_err(|e| e.to_string())?;
    note(&format!(
        "built the cached production server in {:.0?}",
        started.elapsed()
    ));
    Ok(tar)
}

/// The production server: minbase with openssh-server, cron, ifupdown, locales, chrony and
/// rsyslog; a
/// user with a password and a crontab, a changed `sshd_config`, a cron job, sysctl settings, a
/// static network configuration, a timezone and a locale, a masked timer and a disabled
/// service.
fn build_server(root: &Path, debs: &Path) {
    let mirror = host_mirror().expect("mirror");
    fs::create_dir_all(debs).expect("debs dir");
    run(
        Command::new("debootstrap")
            .arg("--variant=minbase")
            .arg(format!("--include={INCLUDE}"))
            .arg(format!("--cache-dir={}", debs.display()))
            .arg(SUITE)
            .arg(root)
            .arg(&mirror),
        Duration::from_secs(1200),
    );
    let w = |p: &str, c: &str| {
        let path = root.join(p.trim_start_matches('/'));
        fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        fs::write(&path, c).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    };
    w("/usr/sbin/policy-rc.d", "#!/bin/sh\nexit 101\n");
    chroot(root, &["chmod", "755", "/usr/sbin/policy-rc.d"]);
    let mut install = vec!["apt-get", "install", "-y", "-q", "--no-install-recommends"];
    install.extend_from_slice(SERVICES);
    chroot(root, &install);
    chroot(root, &["apt-get", "clean"]);
    fs::remove_file(root.join("usr/sbin/policy-rc.d")).expect("remove policy-rc.d");

    w("/etc/hostname", &format!("{HOSTNAME}\n"));
    w(
        "/etc/hosts",
        &format!("127.0.0.1\tlocalhost\n192.0.2.10\t{HOSTNAME}.example.net {HOSTNAME}\n"),
    );
    w("/etc/machine-id", "5f0c3e9a2b7d4c1e8f6a0b9c8d7e6f50\n");
    w(
        "/etc/resolv.conf",
        "search example.net\nnameserver 192.0.2.53\n",
    );
    w(
        "/etc/network/interfaces",
        "source /etc/network/interfaces.d/*\n\nauto lo\niface lo inet loopback\n\n\
         auto ens3\niface ens3 inet static\n    address 192.0.2.10/24\n    gateway 192.0.2.1\n",
    );
    w(
        "/etc/sysctl.d/60-server.conf",
        "vm.swappiness = 10\nnet.ipv4.ip_forward = 1\n",
    );
    w(
        "/etc/cron.d/backup",
        "SHELL=/bin/sh\n30 2 * * * root /usr/local/bin/backup --all\n",
    );
    let sshd = fs::read_to_string(root.join("etc/ssh/sshd_config")).expect("sshd_config");
    w(
        "/etc/ssh/sshd_config",
        &format!("{sshd}\nPermitRootLogin no\nPasswordAuthentication no\nAllowUsers deploy\n"),
    );
    chroot(
        root,
        &[
            "useradd",
            "-m",
            "-u",
            "1001",
            "-U",
            "-s",
            "/bin/bash",
            "-c",
            "Deploy",
            "deploy",
        ],
    );
    run(
        Command::new("sh").arg("-c").arg(format!(
            "echo 'deploy:correct horse battery' | chroot {} chpasswd",
            root.display()
        )),
        Duration::from_secs(60),
    );
    run(
        Command::new("sh").arg("-c").arg(format!(
            "echo '*/5 * * * * /home/deploy/bin/poll' | chroot {} crontab -u deploy -",
            root.display()
        )),
        Duration::from_secs(60),
    );
    chroot(
        root,
        &[
            "ln",
            "-sf",
            "/usr/share/zoneinfo/Europe/Berlin",
            "/etc/localtime",
        ],
    );
    w("/etc/timezone", "Europe/Berlin\n");
    chroot(
        root,
        &[
            "sed",
            "-i",
            "s/^# en_US.UTF-8 UTF-8/en_US.UTF-8 UTF-8/",
            "/etc/locale.gen",
        ],
    );
    chroot(root, &["locale-gen"]);
    w("/etc/default/locale", "LANG=en_US.UTF-8\n");
    chroot(root, &["systemctl", "mask", "apt-daily.timer"]);
    chroot(root, &["systemctl", "disable", "e2scrub_reap.service"]);
}

/// A private copy of the cached production server, removed when dropped.
#[derive(Debug)]
pub struct Server {
    root: PathBuf,
    _dir: Scratch,
}

impl Server {
    /// A fresh copy, or `None` (after saying why) when this machine cannot build one.
    pub fn new() -> Option<Server> {
        if let Some(why) = unsupported() {
            skip(&why);
            return None;
        }
        let tar = server_tarball().unwrap_or_else(|e| panic!("cannot build the server: {e}"));
        let dir = Scratch::new("keel-server-");
        let root = dir.path().join("root");
        fs::create_dir(&root).expect("mkdir root");
        run(
            Command::new("tar")
                .args(["--numeric-owner", "--xattrs", "--xattrs-include=*", "-xpf"])
                .arg(tar)
                .arg("-C")
                .arg(&root),
            Duration::from_secs(600),
        );
        Some(Server { root, _dir: dir })
    }

    /// The root directory.
    pub fn path(&self) -> &Path {
        &self.root
    }
}

/// Captures `root` as `keel capture --root` does, with secrets encrypted to `recipient`.
pub fn capture(root: &Path, recipient: Option<&str>) -> ProfileFile {
    let state = tempfile::tempdir().expect("state dir");
    let mut opts = keel_collect::Options::new(root);
    opts.state_dir = state.path().to_path_buf();
    opts.recovery_recipient = recipient.map(String::from);
    opts.timeout = Duration::from_secs(60);
    let file = keel_collect::capture(&opts).expect("capture");
    for c in &file.profile.collectors {
        assert!(
            !matches!(
                c.state,
                keel_profile::CollectorState::Error | keel_profile::CollectorState::Timeout
            ),
            "collector {} failed: {:?}",
            c.name,
            c.message
        );
    }
    // Through the file format, as a profile travels.
    ProfileFile::decode(&file.encode().expect("encode")).expect("decode")
}

// ------------------------------------------------------------------ the bootable server

/// The bootable variant of the server, for the `keel` binary's install test (which includes
/// this file); the system tree's own tests do not boot it.
#[allow(dead_code, reason = "used by the keel binary's install test")]
pub mod boot {
    use super::*;

    /// What the bootable variant adds to the production server: a kernel, GRUB for BIOS with
    /// GRUB's UEFI images beside it (so that the same server boots either way), and LVM.
    pub const BOOT_PACKAGES: &[&str] =
        &["linux-image-amd64", "grub-pc", "grub-efi-amd64-bin", "lvm2"];
    /// Bump when the bootable recipe changes.
    const BOOT_RECIPE: &str = "boot-v4";
    /// The first line the facts unit prints on the serial console.
    pub const FACTS_BEGIN: &str = "KEEL-FACTS-BEGIN";
    /// The last line it prints, before it powers the machine off.
    pub const FACTS_END: &str = "KEEL-FACTS-END";

    /// Prints what a test checks after a boot, on the serial console, then powers off. Runs
    /// before the serial getty so that its output is not lost.
    const FACTS_SCRIPT: &str = r#"#!/bin/sh
exec >/dev/ttyS0 2>&1
for i in $(seq 1 30); do
    systemctl is-active -q ssh.service && break
    sleep 1
done
echo KEEL-FACTS-BEGIN
echo "hostname=$(hostname)"
echo "user=$(getent passwd deploy)"
echo "packages=$(dpkg-query -W -f '${db:Status-Abbrev}\n' | grep -c '^ii')"
echo "sshd=$(sshd -T 2>/dev/null | grep -i '^permitrootlogin')"
echo "ssh-enabled=$(systemctl is-enabled ssh.service)"
echo "ssh-active=$(systemctl is-active ssh.service)"
echo "cron-active=$(systemctl is-active cron.service)"
ip -o -4 addr show | awk '{print "addr=" $2 " " $4}'
ip -o link show | awk -F': ' '{print "link=" $2 " " $3}'
findmnt -n -o TARGET,SOURCE,FSTYPE / | sed 's/^/mount=/'
findmnt -n -o TARGET,SOURCE,FSTYPE /srv | sed 's/^/mount=/'
echo "srv-readme=$(cat /srv/README 2>/dev/null)"
echo "srv-state=$(sha256sum /srv/app/state.bin 2>/dev/null | cut -c1-16)"
echo "firmware=$(test -d /sys/firmware/efi && echo uefi || echo bios)"
echo "cmdline=$(cat /proc/cmdline)"
echo "failed=$(systemctl --failed --no-legend --plain | awk '{print $1}' | tr '\n' ' ')"
echo KEEL-FACTS-END
systemctl poweroff
"#;

    const FACTS_UNIT: &str = "[Unit]
Description=Print facts for Keel's boot test on the serial console
After=ssh.service networking.service cron.service
Before=serial-getty@ttyS0.service

[Service]
Type=oneshot
ExecStart=/bin/sh /etc/keel-facts.sh

[Install]
WantedBy=multi-user.target
";

    /// The `key=value` lines between the facts markers on a boot's console.
    pub fn facts(console: &str) -> Vec<(String, String)> {
        let start = console
            .find(FACTS_BEGIN)
            .map_or(0, |i| i + FACTS_BEGIN.len());
        let end = console[start..]
            .find(FACTS_END)
            .map_or(console.len(), |i| start + i);
        console[start..end]
            .lines()
            .filter_map(|l| {
                let (k, v) = l.trim().split_once('=')?;
                Some((k.to_string(), v.trim().to_string()))
            })
            .collect()
    }

    /// Every value of `key` among `facts`.
    pub fn fact<'a>(facts: &'a [(String, String)], key: &str) -> Vec<&'a str> {
        facts
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// Runs `args` in `root` with /proc, /sys and /dev mounted in a private mount namespace
    /// (gone when the command ends), apt's archive directory bound to `debs`.
    pub fn chroot_mounted(root: &Path, debs: &Path, args: &[&str]) -> String {
        const SCRIPT: &str = r#"set -e
root=$1; debs=$2; shift 2
mount -t proc proc "$root/proc"
mount -t sysfs sys "$root/sys"
mount --bind /dev "$root/dev"
mount --bind "$debs" "$root/var/cache/apt/archives"
# The server's own resolver and hosts are the fixture's, not this machine's.
mount --bind /etc/resolv.conf "$root/etc/resolv.conf"
mount --bind /etc/hosts "$root/etc/hosts"
    exec chroot "$root" "$@""#;
        run(
            Command::new("unshare")
                .args([
                    "--mount",
                    "--propagation",
                    "private",
                    "--",
                    "sh",
                    "-c",
                    SCRIPT,
                ])
                .arg("keel-chroot")
                .arg(root)
                .arg(debs)
                .args(args),
            Duration::from_secs(1200),
        )
    }

    /// The cached bootable server: the production server with a kernel, GRUB for BIOS, a serial
    /// console on the kernel command line (`/etc/default/grub`) and a unit that prints facts on
    /// the console and powers off.
    pub fn boot_server_tarball() -> Result<&'static PathBuf, String> {
        static TAR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
        TAR.get_or_init(build_boot_server)
            .as_ref()
            .map_err(Clone::clone)
    }

    fn build_boot_server() -> Result<PathBuf, String> {
        let base = server_tarball()?;
        let dir = cache_dir().canonicalize().map_err(|e| e.to_string())?;
        let tar = dir.join(format!("{SUITE}-server-{RECIPE}-{BOOT_RECIPE}.tar"));
        let lock = fs::File::create(dir.join("boot-server.lock")).map_err(|e| e.to_string())?;
        lock.lock().map_err(|e| e.to_string())?;
        if tar.is_file() {
            return Ok(tar);
        }
        let started = Instant::now();
        let work = Scratch(dir.join(format!("boot-server-build.{}", std::process::id())));
        let root = work.path().join("root");
        fs::create_dir_all(&root).map_err(|e| e.to_string())?;
        run(
            Command::new("tar")
                .args(["--numeric-owner", "--xattrs", "--xattrs-include=*", "-xpf"])
                .arg(base)
                .arg("-C")
                .arg(&root),
            Duration::from_secs(600),
        );
        let debs = dir.join("debs");
        fs::create_dir_all(debs.join("partial")).map_err(|e| e.to_string())?;
        let w = |p: &str, c: &str, mode: u32| {
            let path = root.join(p.trim_start_matches('/'));
            fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            fs::write(&path, c).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
            fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(mode))
                .expect("chmod");
        };
        w("/usr/sbin/policy-rc.d", "#!/bin/sh\nexit 101\n", 0o755);
        chroot_mounted(&root, &debs, &["apt-get", "update", "-q"]);
        let mut install = vec!["apt-get", "install", "-y", "-q", "--no-install-recommends"];
        install.extend_from_slice(BOOT_PACKAGES);
        chroot_mounted(&root, &debs, &install);
        chroot(&root, &["apt-get", "clean"]);
        fs::remove_file(root.join("usr/sbin/policy-rc.d")).map_err(|e| e.to_string())?;
        chroot(
            &root,
            &[
                "sed",
                "-i",
                "-e",
                "s/^GRUB_TIMEOUT=.*/GRUB_TIMEOUT=1/",
                "-e",
                "s/^GRUB_CMDLINE_LINUX=.*/GRUB_CMDLINE_LINUX=\"console=ttyS0\"/",
                "/etc/default/grub",
            ],
        );
        // In /etc: the profile carries configuration, not /usr/local.
        w("/etc/keel-facts.sh", FACTS_SCRIPT, 0o755);
        w("/etc/systemd/system/keel-facts.service", FACTS_UNIT, 0o644);
        chroot(&root, &["systemctl", "enable", "keel-facts.service"]);
        let partial = work.path().join("server.tar");
        run(
            Command::new("tar")
                .args(["--numeric-owner", "--xattrs", "--xattrs-include=*", "-C"])
                .arg(&root)
                .arg("-cf")
                .arg(&partial)
                .arg("."),
            Duration::from_secs(600),
        );
        fs::rename(&partial, &tar).map_err(|e| e.to_string())?;
        note(&format!(
            "built the cached bootable server in {:.0?}",
            started.elapsed()
        ));
        Ok(tar)
    }
}
