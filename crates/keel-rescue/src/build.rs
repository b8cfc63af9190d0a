//! Building the rescue environment: debootstrap, the kernel from its package, pruned modules,
//! keel and `/init`, packed as a zstd-compressed cpio initramfs.
//!
//! The build works in a directory next to the output and renames it into place at the end,
//! so a failed or interrupted build never leaves a partial output. With a cache directory,
//! downloaded packages and the finished package tree (everything but keel and `/init`, as a
//! tarball and as a compressed archive) are kept between builds, so a build for a new keel
//! only packs keel. The cache keeps the tree of the latest inputs (suite, mirror, packages).

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use crate::error::{BuildError, BuildStep};
use crate::exec::{self, run, run_logged, which};
use crate::init::{init_script, BOOT_MODULES, KEEL_PATH, KEEP_MODULES, MARKER_PATH, PACKAGES};
use crate::manifest::{
    self, hex, parse_dpkg_status, sha256_file, Initrd, KeelBinary, Kernel, Manifest, Modules,
    OutputFile, MANIFEST_FILE, MANIFEST_FORMAT,
};

/// The Debian suite built by default.
pub const DEFAULT_SUITE: &str = "bookworm";

/// The package whose dependency is the kernel to use.
pub const KERNEL_META_PACKAGE: &str = "linux-image-amd64";

/// Default zstd level: the slowest of the normal levels; decompression speed does not depend
/// on it.
pub const DEFAULT_ZSTD_LEVEL: i32 = 19;

/// Bump when the recipe of the package tree changes, so a cached tree is not reused.
const RECIPE: &str = "rescue-base-2";

/// Paths (relative to the root, `*` as the last component matches every entry of a directory)
/// removed after installation: documentation, manuals, locales, package caches, and tools no
/// rescue calls along with what only they need (Python and ICU come with xfsprogs for
/// `xfs_scrub`; udev's hardware database serves a udev that does not run here).
pub const STRIP: &[&str] = &[
    "usr/share/man/*",
    "usr/share/info/*",
    "usr/share/locale/*",
    "usr/share/lintian",
    "usr/share/linda",
    "usr/share/bug",
    "usr/share/bash-completion",
    "usr/share/zsh",
    "usr/share/icu",
    "usr/lib/python3*",
    "usr/bin/python3*",
    "usr/share/python3",
    "usr/lib/x86_64-linux-gnu/libicu*",
    "usr/sbin/xfs_scrub*",
    "usr/lib/udev/hwdb.d",
    "etc/udev/hwdb.bin",
    "usr/lib/udev/hwdb.bin",
    "var/cache/apt/*",
    "var/lib/apt/lists/*",
    "var/cache/debconf/*-old",
    "var/log/*",
];

/// What to build and where.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// The output directory (`vmlinuz`, `initrd.img`, `manifest.json`).
    pub output: PathBuf,
    /// The Debian suite.
    pub suite: String,
    /// The archive; `None` reads it from the build machine's apt sources.
    pub mirror: Option<String>,
    /// The keel binary to put inside.
    pub keel: PathBuf,
    /// Packages beyond [`PACKAGES`].
    pub extra_packages: Vec<String>,
    /// Where to keep downloaded packages and the package tree between builds.
    pub cache_dir: Option<PathBuf>,
    /// zstd compression level (1–22).
    pub zstd_level: i32,
}

impl BuildOptions {
    /// Defaults: [`DEFAULT_SUITE`], the host's mirror, no extra packages, no cache.
    pub fn new(output: impl Into<PathBuf>, keel: impl Into<PathBuf>) -> BuildOptions {
        BuildOptions {
            output: output.into(),
            suite: DEFAULT_SUITE.into(),
            mirror: None,
            keel: keel.into(),
            extra_packages: Vec::new(),
            cache_dir: None,
            zstd_level: DEFAULT_ZSTD_LEVEL,
        }
    }

    /// Every package installed on top of minbase, sorted and without duplicates.
    pub fn packages(&self) -> Vec<String> {
        let set: BTreeSet<String> = PACKAGES
            .iter()
            .map(|p| (*p).to_string())
            .chain(self.extra_packages.iter().cloned())
            .collect();
        set.into_iter().collect()
    }
}

/// Progress of a build, for a caller that shows it.
#[derive(Debug, Clone)]
pub enum Progress {
    /// A step began.
    Started(BuildStep),
    /// A step ended.
    Finished(BuildStep, Duration),
    /// Something worth telling.
    Note(String),
}

/// Builds the rescue environment described by `opts`; `progress` hears about each step.
pub fn build(
    opts: &BuildOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<Manifest, BuildError> {
    let started = Instant::now();
    let mut b = Builder::preflight(opts, progress)?;
    b.started = started;
    b.run(progress)
}

fn write_json(
    step: BuildStep,
    path: &Path,
    value: &impl serde::Serialize,
) -> Result<(), BuildError> {
    let mut text = serde_json::to_string_pretty(value).expect("serialisable");
    text.push('\n');
    fs::write(path, text).map_err(|source| BuildError::Io {
        step,
        path: path.to_path_buf(),
        source,
    })
}

fn io(step: BuildStep, path: &Path) -> impl FnOnce(std::io::Error) -> BuildError + '_ {
    move |source| BuildError::Io {
        step,
        path: path.to_path_buf(),
        source,
    }
}

fn invalid(step: BuildStep, message: impl Into<String>) -> BuildError {
    BuildError::Invalid {
        step,
        message: message.into(),
    }
}

/// A directory removed, after unmounting anything left mounted inside it, when dropped.
#[derive(Debug)]
struct WorkDir(PathBuf);

impl Drop for WorkDir {
    fn drop(&mut self) {
        unmount_under(&self.0);
        if mounts_under(&self.0).is_empty() {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
}

/// Mount points at or below `dir`, deepest first.
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(unescape_mountinfo(m)))
        .filter(|m| m.starts_with(dir))
        .collect();
    found.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    found
}

fn unescape_mountinfo(field: &str) -> String {
    // mountinfo writes space, tab, newline and backslash as \ooo.
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            if let Ok(v) = u8::from_str_radix(&field[i + 1..i + 4], 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn unmount_under(dir: &Path) {
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

struct Builder<'a> {
    opts: &'a BuildOptions,
    mirror: String,
    packages: Vec<String>,
    keel_bytes: Vec<u8>,
    work: WorkDir,
    root: PathBuf,
    out: PathBuf,
    base_key: String,
    started: Instant,
}

/// Kernel facts kept in the package tree between the base build and the final steps.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct KernelFacts {
    kernel: Kernel,
    shipped: usize,
    kept: usize,
}

/// One cpio archive of the initramfs, before compression.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
struct Segment {
    bytes: u64,
    entries: u64,
}

/// The second archive: keel, `/init`, the marker, and the directories they are in.
const KEEL_SEGMENT: &[&str] = &[
    "./etc",
    "./etc/keel-rescue.json",
    "./init",
    "./usr",
    "./usr/local",
    "./usr/local/bin",
    "./usr/local/bin/keel",
];

/// Where the kernel facts live inside the tree until the final steps move them out.
const KERNEL_FACTS: &str = "boot/keel-kernel.json";

impl<'a> Builder<'a> {
    fn preflight(
        opts: &'a BuildOptions,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<Builder<'a>, BuildError> {
        let step = BuildStep::Preflight;
        progress(Progress::Started(step));
        let t = Instant::now();
        let uid = rustix::process::geteuid().as_raw();
        if uid != 0 {
            return Err(BuildError::NotRoot { uid });
        }
        for (tool, package) in [
            ("chroot", "coreutils"),
            ("dpkg-deb", "dpkg"),
            ("tar", "tar"),
            ("cpio", "cpio"),
            ("zstd", "zstd"),
            ("mknod", "coreutils"),
        ] {
            if which(tool).is_none() {
                return Err(BuildError::MissingTool {
                    step,
                    tool,
                    package,
                });
            }
        }
        if !(1..=22).contains(&opts.zstd_level) {
            return Err(invalid(
                step,
                format!("zstd level {} is not between 1 and 22", opts.zstd_level),
            ));
        }
        let keel_bytes = fs::read(&opts.keel).map_err(io(step, &opts.keel))?;
        if !keel_bytes.starts_with(b"\x7fELF") {
            return Err(invalid(
                step,
                format!("{} is not an executable (no ELF header)\nhint: pass --keel PATH to a keel binary", opts.keel.display()),
            ));
        }
        let mirror = match &opts.mirror {
            Some(m) => m.trim_end_matches('/').to_string(),
            None => crate::sources::host_mirror(Path::new("/")).ok_or(BuildError::NoMirror)?,
        };
        let output = &opts.output;
        let name = output
            .file_name()
            .ok_or_else(|| invalid(step, format!("{} names no directory", output.display())))?
            .to_string_lossy()
            .into_owned();
        if output.exists() {
            let reusable = output.is_dir()
                && (output.join(MANIFEST_FILE).is_file()
                    || fs::read_dir(output).is_ok_and(|mut d| d.next().is_none()));
            if !reusable {
                return Err(BuildError::OutputInUse {
                    path: output.clone(),
                });
            }
        }
        let parent = match output.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        fs::create_dir_all(&parent).map_err(io(step, &parent))?;
        let packages = opts.packages();
        let base_key = {
            let mut h = Sha256::new();
            for part in [RECIPE, &opts.suite, &mirror] {
                h.update(part.as_bytes());
                h.update([0]);
            }
            for list in [
                &packages.iter().map(String::as_str).collect::<Vec<_>>()[..],
                KEEP_MODULES,
                STRIP,
            ] {
                for p in list {
                    h.update(p.as_bytes());
                    h.update([0]);
                }
                h.update([1]);
            }
            hex(&h.finalize()[..8])
        };
        progress(Progress::Finished(step, t.elapsed()));

        let step = BuildStep::Prepare;
        // Leftovers of builds that were killed (their process is gone) go first.
        let prefix = format!(".{name}.build-");
        for entry in fs::read_dir(&parent).into_iter().flatten().flatten() {
            let file = entry.file_name().to_string_lossy().into_owned();
            if let Some(pid) = file.strip_prefix(&prefix) {
                let alive =
                    pid != std::process::id().to_string() && Path::new("/proc").join(pid).exists();
                if !alive {
                    drop(WorkDir(entry.path()));
                }
            }
        }
        let work = parent.join(format!("{prefix}{}", std::process::id()));
        fs::create_dir(&work).map_err(io(step, &work))?;
        let work = WorkDir(work);
        let root = work.0.join("root");
        let out = work.0.join("out");
        for d in [&root, &out] {
            fs::create_dir(d).map_err(io(step, d))?;
        }
        Ok(Builder {
            opts,
            mirror,
            packages,
            keel_bytes,
            work,
            root,
            out,
            base_key,
            started: Instant::now(),
        })
    }

    fn timed<T>(
        &self,
        step: BuildStep,
        progress: &mut dyn FnMut(Progress),
        f: impl FnOnce(&Self) -> Result<T, BuildError>,
    ) -> Result<T, BuildError> {
        progress(Progress::Started(step));
        let t = Instant::now();
        let r = f(self)?;
        progress(Progress::Finished(step, t.elapsed()));
        Ok(r)
    }

    fn run(&mut self, progress: &mut dyn FnMut(Progress)) -> Result<Manifest, BuildError> {
        let cache = self.opts.cache_dir.clone();
        let cached = |suffix: &str| {
            cache
                .as_ref()
                .map(|c| c.join(format!("base-{}{suffix}", self.base_key)))
        };
        let tar = cached(".tar");
        let from_cache = tar.as_ref().is_some_and(|c| c.is_file());
        if let (true, Some(tar)) = (from_cache, &tar) {
            progress(Progress::Note(format!(
                "package tree from the cache ({})",
                tar.display()
            )));
            self.timed(BuildStep::RestoreCache, progress, |b| b.restore(tar))?;
        } else {
            self.timed(BuildStep::Debootstrap, progress, Self::debootstrap)?;
            let deb = self.timed(BuildStep::DownloadKernel, progress, Self::download_kernel)?;
            let kernel = self.timed(BuildStep::ExtractKernel, progress, |b| {
                b.extract_kernel(&deb.0, &deb.1)
            })?;
            let facts = self.timed(BuildStep::PruneModules, progress, |b| {
                b.prune_modules(kernel)
            })?;
            write_json(
                BuildStep::PruneModules,
                &self.root.join(KERNEL_FACTS),
                &facts,
            )?;
            self.timed(BuildStep::Strip, progress, Self::strip)?;
            if let Some(tar) = &tar {
                self.timed(BuildStep::SaveCache, progress, |b| b.save(tar))?;
            }
        }
        let facts = self.take_kernel()?;
        // The initramfs is two concatenated archives (the kernel unpacks them in turn): the
        // package tree, the same for every keel and so cached compressed, then keel's own.
        let level = self.opts.zstd_level;
        let base_cpio = cached(&format!(".z{level}.cpio.zst"));
        let base_meta = cached(&format!(".z{level}.json"));
        let reuse = match (&base_cpio, &base_meta) {
            (Some(c), Some(m)) if c.is_file() => fs::read(m)
                .ok()
                .and_then(|b| serde_json::from_slice::<Segment>(&b).ok()),
            _ => None,
        };
        let base_seg = self.work.0.join("base.cpio.zst");
        let base = if let (Some(seg), Some(c)) = (reuse, &base_cpio) {
            fs::copy(c, &base_seg).map_err(io(BuildStep::RestoreCache, c))?;
            seg
        } else {
            let seg = self.timed(BuildStep::Pack, progress, |b| {
                let mut list = Vec::new();
                list_tree(&b.root, Path::new("."), &mut list)
                    .map_err(io(BuildStep::Pack, &b.root))?;
                b.pack_segment(list, &base_seg)
            })?;
            if let (Some(c), Some(m)) = (&base_cpio, &base_meta) {
                self.timed(BuildStep::SaveCache, progress, |_| {
                    let partial = c.with_extension(format!("partial-{}", std::process::id()));
                    fs::copy(&base_seg, &partial)
                        .and_then(|_| fs::rename(&partial, c))
                        .map_err(io(BuildStep::SaveCache, c))?;
                    write_json(BuildStep::SaveCache, m, &seg)
                })?;
            }
            seg
        };
        let keel = self.timed(BuildStep::InstallKeel, progress, |b| b.install_keel(&facts))?;
        let keel_seg = self.work.0.join("keel.cpio.zst");
        let top = self.timed(BuildStep::Pack, progress, |b| {
            let seg = b.pack_segment(
                KEEL_SEGMENT.iter().map(|p| p.as_bytes().to_vec()).collect(),
                &keel_seg,
            )?;
            b.concatenate(&[&base_seg, &keel_seg])?;
            Ok(seg)
        })?;
        let manifest = self.timed(BuildStep::Manifest, progress, |b| {
            let mut m = b.manifest(
                facts,
                keel,
                base.bytes + top.bytes,
                base.entries + top.entries,
                from_cache,
            )?;
            m.build_seconds = (b.started.elapsed().as_secs_f64() * 10.0).round() / 10.0;
            write_json(BuildStep::Manifest, &b.out.join(MANIFEST_FILE), &m)?;
            Ok(m)
        })?;
        self.timed(BuildStep::Finish, progress, Self::finish)?;
        Ok(manifest)
    }

    fn restore(&self, tar: &Path) -> Result<(), BuildError> {
        run(
            BuildStep::RestoreCache,
            Command::new("tar")
                .args(["--numeric-owner", "-xpf"])
                .arg(tar)
                .arg("-C")
                .arg(&self.root),
            Duration::from_secs(600),
        )?;
        Ok(())
    }

    fn save(&self, tar: &Path) -> Result<(), BuildError> {
        let step = BuildStep::SaveCache;
        let dir = tar.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(dir).map_err(io(step, dir))?;
        // The cache keeps one package tree: the one for other inputs is not coming back.
        if let Ok(entries) = fs::read_dir(dir) {
            let ours = format!("base-{}.", self.base_key);
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with("base-") && !name.starts_with(&ours) {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
        let partial = tar.with_extension(format!("tar.partial-{}", std::process::id()));
        let r = run(
            step,
            Command::new("tar")
                .args(["--numeric-owner", "-C"])
                .arg(&self.root)
                .arg("-cf")
                .arg(&partial)
                .arg("."),
            Duration::from_secs(600),
        )
        .and_then(|_| fs::rename(&partial, tar).map_err(io(step, tar)));
        if r.is_err() {
            let _ = fs::remove_file(&partial);
        }
        r
    }

    fn debs_cache(&self, step: BuildStep) -> Result<Option<PathBuf>, BuildError> {
        let Some(c) = &self.opts.cache_dir else {
            return Ok(None);
        };
        let d = c.join("debs");
        fs::create_dir_all(&d).map_err(io(step, &d))?;
        let d = d.canonicalize().map_err(io(step, &d))?;
        Ok(Some(d))
    }

    fn debootstrap(&self) -> Result<(), BuildError> {
        let step = BuildStep::Debootstrap;
        if which("debootstrap").is_none() {
            return Err(BuildError::MissingTool {
                step,
                tool: "debootstrap",
                package: "debootstrap",
            });
        }
        let mut cmd = Command::new("debootstrap");
        cmd.arg("--variant=minbase")
            .arg(format!("--include={}", self.packages.join(",")));
        if let Some(debs) = self.debs_cache(step)? {
            cmd.arg(format!("--cache-dir={}", debs.display()));
        }
        cmd.arg(&self.opts.suite).arg(&self.root).arg(&self.mirror);
        let log = self.work.0.join("debootstrap.log");
        let inner = self.root.join("debootstrap/debootstrap.log");
        let r = run_logged(
            step,
            &mut cmd,
            Duration::from_secs(1800),
            &log,
            Some(&inner),
        );
        unmount_under(&self.root);
        r
    }

    fn chroot(
        &self,
        step: BuildStep,
        args: &[&str],
        timeout: Duration,
    ) -> Result<String, BuildError> {
        let out = run(
            step,
            Command::new("chroot").arg(&self.root).args(args),
            timeout,
        )?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    /// `apt-cache show` of one package in the new tree, as (field → value).
    fn apt_show(
        &self,
        step: BuildStep,
        package: &str,
    ) -> Result<BTreeMap<String, String>, BuildError> {
        let text = self.chroot(
            step,
            &["apt-cache", "show", "--no-all-versions", package],
            Duration::from_secs(120),
        )?;
        Ok(text
            .lines()
            .filter(|l| !l.starts_with(' '))
            .filter_map(|l| l.split_once(": "))
            .map(|(k, v)| (k.to_string(), v.trim().to_string()))
            .collect())
    }

    /// Finds the kernel package `linux-image-amd64` points at and returns its `.deb`, from
    /// the cache or downloaded by the new tree's apt.
    fn download_kernel(&self) -> Result<(PathBuf, Kernel), BuildError> {
        let step = BuildStep::DownloadKernel;
        let meta = match self.apt_show(step, KERNEL_META_PACKAGE) {
            Ok(m) if m.contains_key("Depends") => m,
            _ => {
                // debootstrap usually leaves the package lists behind; fetch them if not.
                self.chroot(step, &["apt-get", "-q", "update"], Duration::from_secs(600))?;
                self.apt_show(step, KERNEL_META_PACKAGE)?
            }
        };
        let depends = meta.get("Depends").cloned().unwrap_or_default();
        let package = depends
            .split(',')
            .map(|d| d.split_whitespace().next().unwrap_or(""))
            .find(|d| d.starts_with("linux-image-"))
            .ok_or_else(|| {
                invalid(
                    step,
                    format!("{KERNEL_META_PACKAGE} depends on no kernel image ({depends:?})"),
                )
            })?
            .to_string();
        let info = self.apt_show(step, &package)?;
        let field = |k: &str| {
            info.get(k)
                .cloned()
                .ok_or_else(|| invalid(step, format!("apt-cache show {package} has no {k} field")))
        };
        let (version, filename, sha256) = (field("Version")?, field("Filename")?, field("SHA256")?);
        let base = Path::new(&filename)
            .file_name()
            .ok_or_else(|| invalid(step, format!("odd Filename {filename:?}")))?
            .to_owned();
        let kernel = Kernel {
            package: package.clone(),
            version,
            release: String::new(),
        };
        let cache = self.debs_cache(step)?;
        if let Some(cached) = cache.as_ref().map(|c| c.join(&base)) {
            if cached.is_file() && sha256_file(&cached).ok().as_deref() == Some(sha256.as_str()) {
                return Ok((cached, kernel));
            }
        }
        let dl = self.root.join("tmp/keel-kernel");
        fs::create_dir_all(&dl).map_err(io(step, &dl))?;
        self.chroot(
            step,
            &[
                "env",
                "--chdir=/tmp/keel-kernel",
                "apt-get",
                "-q",
                "-o",
                "APT::Sandbox::User=root",
                "download",
                &package,
            ],
            Duration::from_secs(1200),
        )?;
        let deb = fs::read_dir(&dl)
            .map_err(io(step, &dl))?
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension() == Some(OsStr::new("deb")))
            .ok_or_else(|| invalid(step, format!("apt-get download {package} left no .deb")))?;
        let got = sha256_file(&deb).map_err(io(step, &deb))?;
        if got != sha256 {
            return Err(invalid(
                step,
                format!(
                    "{} has SHA-256 {got}, the archive says {sha256}",
                    deb.display()
                ),
            ));
        }
        let dest = match &cache {
            Some(c) => c.join(&base),
            None => self.work.0.join(&base),
        };
        fs::copy(&deb, &dest).map_err(io(step, &dest))?;
        fs::remove_dir_all(&dl).map_err(io(step, &dl))?;
        Ok((dest, kernel))
    }

    /// Unpacks the kernel package: the image goes to the tree's `/boot` until the final steps
    /// take it out, the modules to `/lib/modules`. No maintainer script runs.
    fn extract_kernel(&self, deb: &Path, kernel: &Kernel) -> Result<Kernel, BuildError> {
        let step = BuildStep::ExtractKernel;
        let x = self.work.0.join("kernel");
        run(
            step,
            Command::new("dpkg-deb").arg("-x").arg(deb).arg(&x),
            Duration::from_secs(600),
        )?;
        let boot = x.join("boot");
        let vmlinuz = fs::read_dir(&boot)
            .map_err(io(step, &boot))?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .find(|n| n.starts_with("vmlinuz-"))
            .ok_or_else(|| invalid(step, format!("{} has no boot/vmlinuz-*", deb.display())))?;
        let release = vmlinuz.trim_start_matches("vmlinuz-").to_string();
        let modules = ["lib/modules", "usr/lib/modules"]
            .iter()
            .map(|d| x.join(d).join(&release))
            .find(|d| d.is_dir())
            .ok_or_else(|| {
                invalid(
                    step,
                    format!("{} has no modules for {release}", deb.display()),
                )
            })?;
        let dest_dir = self.root.join("lib/modules");
        fs::create_dir_all(&dest_dir).map_err(io(step, &dest_dir))?;
        let dest = dest_dir.join(&release);
        fs::rename(&modules, &dest).map_err(io(step, &dest))?;
        let target = self.root.join("boot").join(&vmlinuz);
        fs::create_dir_all(self.root.join("boot")).map_err(io(step, &target))?;
        fs::rename(boot.join(&vmlinuz), &target).map_err(io(step, &target))?;
        fs::remove_dir_all(&x).map_err(io(step, &x))?;
        Ok(Kernel {
            release,
            ..kernel.clone()
        })
    }

    fn prune_modules(&self, kernel: Kernel) -> Result<KernelFacts, BuildError> {
        let step = BuildStep::PruneModules;
        let release = kernel.release.clone();
        self.chroot(step, &["depmod", &release], Duration::from_secs(600))?;
        let dir = self.root.join("lib/modules").join(&release);
        let dep_path = dir.join("modules.dep");
        let dep = fs::read_to_string(&dep_path).map_err(io(step, &dep_path))?;
        let softdep = fs::read_to_string(dir.join("modules.softdep")).unwrap_or_default();
        let graph = ModuleGraph::parse(&dep, &softdep);
        let keep = graph.closure(KEEP_MODULES);
        let shipped = graph.deps.len();
        for m in graph.deps.keys() {
            if !keep.contains(m) {
                let p = dir.join(m);
                fs::remove_file(&p).map_err(io(step, &p))?;
            }
        }
        remove_empty_dirs(&dir.join("kernel"));
        self.chroot(step, &["depmod", &release], Duration::from_secs(600))?;
        Ok(KernelFacts {
            kernel,
            shipped,
            kept: keep.len(),
        })
    }

    fn strip(&self) -> Result<(), BuildError> {
        let step = BuildStep::Strip;
        for pattern in STRIP {
            for path in expand(&self.root, pattern) {
                let meta = fs::symlink_metadata(&path).map_err(io(step, &path))?;
                let r = if meta.is_dir() {
                    fs::remove_dir_all(&path)
                } else {
                    fs::remove_file(&path)
                };
                r.map_err(io(step, &path))?;
            }
        }
        let hostname = self.root.join("etc/hostname");
        fs::write(&hostname, "keel-rescue\n").map_err(io(step, &hostname))?;
        // The kernel opens /dev/console for init before anything is mounted.
        let console = self.root.join("dev/console");
        if !fs::symlink_metadata(&console).is_ok_and(|m| m.file_type().is_char_device()) {
            let _ = fs::remove_file(&console);
            fs::create_dir_all(self.root.join("dev")).map_err(io(step, &console))?;
            run(
                step,
                Command::new("mknod")
                    .args(["-m", "600"])
                    .arg(&console)
                    .args(["c", "5", "1"]),
                Duration::from_secs(10),
            )?;
        }
        // Documentation goes, licences stay.
        let doc = self.root.join("usr/share/doc");
        if let Ok(entries) = fs::read_dir(&doc) {
            for pkg in entries.flatten() {
                let Ok(files) = fs::read_dir(pkg.path()) else {
                    continue;
                };
                for f in files.flatten() {
                    if f.file_name() != "copyright" {
                        let p = f.path();
                        let r = if p.is_dir() && !p.is_symlink() {
                            fs::remove_dir_all(&p)
                        } else {
                            fs::remove_file(&p)
                        };
                        r.map_err(io(step, &p))?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Takes the kernel image and its facts out of the tree: the image is booted, not
    /// carried.
    fn take_kernel(&self) -> Result<KernelFacts, BuildError> {
        let step = BuildStep::InstallKeel;
        let facts_path = self.root.join(KERNEL_FACTS);
        let facts: KernelFacts =
            serde_json::from_slice(&fs::read(&facts_path).map_err(io(step, &facts_path))?)
                .map_err(|e| invalid(step, format!("{}: {e}", facts_path.display())))?;
        fs::remove_file(&facts_path).map_err(io(step, &facts_path))?;
        let vmlinuz = self
            .root
            .join("boot")
            .join(format!("vmlinuz-{}", facts.kernel.release));
        let dest = self.out.join("vmlinuz");
        fs::rename(&vmlinuz, &dest).map_err(io(step, &vmlinuz))?;
        Ok(facts)
    }

    /// Copies keel (without debug information) and `/init` in, checks that keel runs there,
    /// and writes the marker that tells `keel rescue` where it runs.
    fn install_keel(&self, facts: &KernelFacts) -> Result<KeelBinary, BuildError> {
        let step = BuildStep::InstallKeel;
        let keel = self.root.join(KEEL_PATH.trim_start_matches('/'));
        fs::create_dir_all(keel.parent().expect("has a parent")).map_err(io(step, &keel))?;
        fs::write(&keel, &self.keel_bytes).map_err(io(step, &keel))?;
        fs::set_permissions(&keel, fs::Permissions::from_mode(0o755)).map_err(io(step, &keel))?;
        // A debug build carries hundreds of MB of debug information; symbols stay, so a
        // backtrace still names functions.
        if which("strip").is_some() {
            run(
                step,
                Command::new("strip").arg("--strip-debug").arg(&keel),
                Duration::from_secs(120),
            )?;
        }
        let installed_size = fs::metadata(&keel).map_err(io(step, &keel))?.len();
        let version = self
            .chroot(step, &[KEEL_PATH, "--version"], Duration::from_secs(60))
            .map_err(|e| {
                invalid(
                    step,
                    format!(
                        "{} does not run inside the environment: {e}\nhint: build keel for the \
                         suite's C library (on the same Debian release) or statically",
                        self.opts.keel.display()
                    ),
                )
            })?
            .trim()
            .to_string();
        let init = self.root.join("init");
        fs::write(&init, init_script()).map_err(io(step, &init))?;
        fs::set_permissions(&init, fs::Permissions::from_mode(0o755)).map_err(io(step, &init))?;
        let marker = self.root.join(MARKER_PATH.trim_start_matches('/'));
        write_json(
            step,
            &marker,
            &serde_json::json!({
                "suite": self.opts.suite,
                "kernel": facts.kernel.release,
                "keel": version,
                "built_at": manifest::rfc3339(now_secs()),
            }),
        )?;
        Ok(KeelBinary {
            version,
            sha256: hex(&Sha256::digest(&self.keel_bytes)),
            size: installed_size,
        })
    }

    /// Writes the paths in `list` (relative to the tree, as cpio wants them) as a cpio (newc)
    /// archive through zstd into `dest`.
    fn pack_segment(&self, mut list: Vec<Vec<u8>>, dest: &Path) -> Result<Segment, BuildError> {
        let step = BuildStep::Pack;
        list.sort();
        let entries = list.len() as u64;
        let file = fs::File::create(dest).map_err(io(step, dest))?;
        let start = |cmd: &mut Command| {
            let what = exec::describe(cmd);
            cmd.env("PATH", exec::TOOL_PATH)
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| BuildError::Command {
                    step,
                    command: what,
                    outcome: format!("could not start: {e}"),
                    tail: String::new(),
                })
        };
        let mut cpio_cmd = Command::new("cpio");
        cpio_cmd
            .args(["-o", "-H", "newc", "--null", "--quiet", "--reproducible"])
            .current_dir(&self.root)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        let mut zstd_cmd = Command::new("zstd");
        zstd_cmd.args(["-q", "-T0", "-c"]);
        if self.opts.zstd_level > 19 {
            zstd_cmd.arg("--ultra");
        }
        zstd_cmd
            .arg(format!("-{}", self.opts.zstd_level))
            .stdin(Stdio::piped())
            .stdout(file);
        let mut cpio = start(&mut cpio_cmd)?;
        let mut zstd = match start(&mut zstd_cmd) {
            Ok(z) => z,
            Err(e) => {
                let _ = cpio.kill();
                let _ = cpio.wait();
                return Err(e);
            }
        };
        let mut names = cpio.stdin.take().expect("piped");
        let feeder = std::thread::spawn(move || {
            for p in list {
                if names
                    .write_all(&p)
                    .and_then(|()| names.write_all(&[0]))
                    .is_err()
                {
                    break;
                }
            }
        });
        let errs: Vec<_> = [&mut cpio, &mut zstd]
            .into_iter()
            .map(|c| {
                let mut e = c.stderr.take().expect("piped");
                std::thread::spawn(move || {
                    let mut s = String::new();
                    let _ = e.read_to_string(&mut s);
                    s
                })
            })
            .collect();
        let mut from = cpio.stdout.take().expect("piped");
        let mut to = zstd.stdin.take().expect("piped");
        let mut total = 0u64;
        let mut buf = vec![0u8; 1 << 20];
        let copied = loop {
            match from.read(&mut buf) {
                Ok(0) => break Ok(()),
                Ok(n) => {
                    total += n as u64;
                    if let Err(e) = to.write_all(&buf[..n]) {
                        break Err(e);
                    }
                }
                Err(e) => break Err(e),
            }
        };
        drop(to);
        drop(from);
        let _ = feeder.join();
        let cpio_status = exec::wait_until(&mut cpio, Duration::from_secs(600));
        let zstd_status = exec::wait_until(&mut zstd, Duration::from_secs(1800));
        let mut errs = errs.into_iter().map(|h| h.join().unwrap_or_default());
        let (cpio_err, zstd_err) = (
            errs.next().unwrap_or_default(),
            errs.next().unwrap_or_default(),
        );
        for (cmd, status, err) in [
            (&cpio_cmd, cpio_status, cpio_err),
            (&zstd_cmd, zstd_status, zstd_err),
        ] {
            let outcome = match status {
                Ok(Some(s)) if s.success() => continue,
                Ok(Some(s)) => format!("exited with {s}"),
                Ok(None) => "did not finish in time".to_string(),
                Err(e) => format!("could not be waited for: {e}"),
            };
            return Err(BuildError::Command {
                step,
                command: exec::describe(cmd),
                outcome,
                tail: exec::tail(&err, 15),
            });
        }
        copied.map_err(io(step, dest))?;
        Ok(Segment {
            bytes: total,
            entries,
        })
    }

    /// `initrd.img`: the compressed archives one after the other.
    fn concatenate(&self, parts: &[&Path]) -> Result<(), BuildError> {
        let step = BuildStep::Pack;
        let initrd = self.out.join("initrd.img");
        let mut out = fs::File::create(&initrd).map_err(io(step, &initrd))?;
        for part in parts {
            let mut f = fs::File::open(part).map_err(io(step, part))?;
            std::io::copy(&mut f, &mut out).map_err(io(step, &initrd))?;
        }
        out.sync_all().map_err(io(step, &initrd))
    }

    fn manifest(
        &self,
        facts: KernelFacts,
        keel: KeelBinary,
        uncompressed: u64,
        entries: u64,
        from_cache: bool,
    ) -> Result<Manifest, BuildError> {
        let step = BuildStep::Manifest;
        let status_path = self.root.join("var/lib/dpkg/status");
        let status = fs::read_to_string(&status_path).map_err(io(step, &status_path))?;
        let mut files = Vec::new();
        for name in ["vmlinuz", "initrd.img"] {
            let p = self.out.join(name);
            files.push(OutputFile {
                name: name.to_string(),
                size: fs::metadata(&p).map_err(io(step, &p))?.len(),
                sha256: sha256_file(&p).map_err(io(step, &p))?,
            });
        }
        let compressed = files[1].size;
        Ok(Manifest {
            format: MANIFEST_FORMAT,
            suite: self.opts.suite.clone(),
            mirror: self.mirror.clone(),
            kernel: facts.kernel,
            keel,
            packages: parse_dpkg_status(&status),
            files,
            initrd: Initrd {
                compression: "zstd".into(),
                level: self.opts.zstd_level,
                uncompressed_bytes: uncompressed,
                compressed_bytes: compressed,
                entries,
            },
            modules: Modules {
                shipped: facts.shipped,
                kept: facts.kept,
                loaded_at_boot: BOOT_MODULES.iter().map(|m| (*m).to_string()).collect(),
            },
            stripped: STRIP
                .iter()
                .map(|s| (*s).to_string())
                .chain(["usr/share/doc/* except copyright".to_string()])
                .collect(),
            built_at: manifest::rfc3339(now_secs()),
            build_seconds: 0.0,
            from_cache,
        })
    }

    /// Moves the output into place; a previous build's directory there is replaced.
    fn finish(&self) -> Result<(), BuildError> {
        let step = BuildStep::Finish;
        let output = &self.opts.output;
        if output.exists() {
            let old = self.work.0.join("previous");
            fs::rename(output, &old).map_err(io(step, output))?;
        }
        fs::rename(&self.out, output).map_err(io(step, output))?;
        Ok(())
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Every path under `dir` (itself included), relative, as bytes: what cpio is fed.
fn list_tree(base: &Path, rel: &Path, out: &mut Vec<Vec<u8>>) -> std::io::Result<()> {
    out.push(rel.as_os_str().as_bytes().to_vec());
    let full = base.join(rel);
    let meta = fs::symlink_metadata(&full)?;
    if meta.is_dir() {
        for entry in fs::read_dir(&full)? {
            let entry = entry?;
            list_tree(base, &rel.join(entry.file_name()), out)?;
        }
    }
    Ok(())
}

/// The paths a [`STRIP`] pattern names under `root`: a literal path, or one whose last
/// component has a `*` (prefix and suffix around it).
fn expand(root: &Path, pattern: &str) -> Vec<PathBuf> {
    let (dir, last) = pattern.rsplit_once('/').unwrap_or(("", pattern));
    let dir = root.join(dir);
    let Some((prefix, suffix)) = last.split_once('*') else {
        let p = dir.join(last);
        return if fs::symlink_metadata(&p).is_ok() {
            vec![p]
        } else {
            Vec::new()
        };
    };
    let Ok(entries) = fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| {
            let n = e.file_name();
            let n = n.to_string_lossy();
            n.len() >= prefix.len() + suffix.len() && n.starts_with(prefix) && n.ends_with(suffix)
        })
        .map(|e| e.path())
        .collect();
    out.sort();
    out
}

fn remove_empty_dirs(dir: &Path) -> bool {
    let Ok(entries) = fs::read_dir(dir) else {
        return false;
    };
    let mut empty = true;
    for e in entries.flatten() {
        let p = e.path();
        if e.file_type().is_ok_and(|t| t.is_dir()) && remove_empty_dirs(&p) {
            continue;
        }
        empty = false;
    }
    empty && fs::remove_dir(dir).is_ok()
}

/// The kernel's module dependencies (`modules.dep`, `modules.softdep`), by path relative to
/// `/lib/modules/RELEASE`.
#[derive(Debug, Default)]
pub struct ModuleGraph {
    /// Module path → the paths it needs.
    pub deps: BTreeMap<String, Vec<String>>,
    /// Module name → the names it should be loaded with (softdep pre and post).
    pub soft: BTreeMap<String, Vec<String>>,
}

/// A module's name as modprobe knows it: the file name without `.ko` (and compression
/// suffix), with `-` read as `_`.
pub fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    stem.replace('-', "_")
}

impl ModuleGraph {
    /// Parses `modules.dep` and `modules.softdep`.
    pub fn parse(dep: &str, softdep: &str) -> ModuleGraph {
        let mut g = ModuleGraph::default();
        for line in dep.lines() {
            if let Some((m, needs)) = line.split_once(':') {
                g.deps.insert(
                    m.trim().to_string(),
                    needs.split_whitespace().map(str::to_string).collect(),
                );
            }
        }
        for line in softdep.lines() {
            let mut words = line.split_whitespace();
            if words.next() != Some("softdep") {
                continue;
            }
            let Some(name) = words.next() else { continue };
            let others = words
                .filter(|w| !w.ends_with(':'))
                .map(|w| w.replace('-', "_"))
                .collect();
            g.soft.insert(name.replace('-', "_"), others);
        }
        g
    }

    /// The modules under any of `keep` (prefixes of paths below `kernel/`, or whole paths)
    /// with everything they need, hard or soft.
    pub fn closure(&self, keep: &[&str]) -> BTreeSet<String> {
        let by_name: BTreeMap<String, &String> =
            self.deps.keys().map(|p| (module_name(p), p)).collect();
        let mut todo: Vec<String> = self
            .deps
            .keys()
            .filter(|p| {
                let rel = p.strip_prefix("kernel/").unwrap_or(p);
                keep.iter().any(|k| rel.starts_with(k))
            })
            .cloned()
            .collect();
        let mut kept = BTreeSet::new();
        while let Some(m) = todo.pop() {
            if !kept.insert(m.clone()) {
                continue;
            }
            if let Some(needs) = self.deps.get(&m) {
                todo.extend(needs.iter().cloned());
            }
            if let Some(soft) = self.soft.get(&module_name(&m)) {
                todo.extend(
                    soft.iter()
                        .filter_map(|n| by_name.get(n))
                        .map(|p| (*p).clone()),
                );
            }
        }
        kept
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_closure_follows_hard_and_soft_dependencies() {
        let dep = "\
kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko kernel/fs/mbcache.ko kernel/fs/jbd2/jbd2.ko
kernel/fs/jbd2/jbd2.ko:
kernel/fs/mbcache.ko:
kernel/lib/crc16.ko:
kernel/crypto/crc32c_generic.ko:
kernel/sound/core/snd.ko: kernel/sound/soundcore.ko
kernel/sound/soundcore.ko:
kernel/drivers/net/ethernet/intel/e1000e/e1000e.ko: kernel/drivers/ptp/ptp.ko
kernel/drivers/ptp/ptp.ko: kernel/drivers/pps/pps_core.ko
kernel/drivers/pps/pps_core.ko:
";
        let soft = "# comment\nsoftdep ext4 pre: crc32c-generic\n";
        let g = ModuleGraph::parse(dep, soft);
        let kept = g.closure(&["fs/ext4/", "drivers/net/ethernet/"]);
        let names: Vec<String> = kept.iter().map(|p| module_name(p)).collect();
        assert_eq!(
            names,
            [
                "crc32c_generic",
                "e1000e",
                "pps_core",
                "ptp",
                "ext4",
                "jbd2",
                "mbcache",
                "crc16"
            ]
        );
        assert_eq!(module_name("kernel/drivers/md/dm-crypt.ko.xz"), "dm_crypt");
    }

    #[test]
    fn strip_patterns() {
        let tmp = tempfile::tempdir().unwrap();
        let r = tmp.path();
        for d in [
            "usr/lib/python3.11",
            "usr/lib/python3",
            "usr/lib/pythonx",
            "usr/share/man/man1",
        ] {
            fs::create_dir_all(r.join(d)).unwrap();
        }
        fs::write(r.join("usr/lib/libicuuc.so.72"), "").unwrap();
        let found = |p: &str| -> Vec<String> {
            expand(r, p)
                .iter()
                .map(|x| x.strip_prefix(r).unwrap().display().to_string())
                .collect()
        };
        assert_eq!(
            found("usr/lib/python3*"),
            ["usr/lib/python3", "usr/lib/python3.11"]
        );
        assert_eq!(found("usr/lib/libicu*"), ["usr/lib/libicuuc.so.72"]);
        assert_eq!(found("usr/share/man/*"), ["usr/share/man/man1"]);
        assert_eq!(found("usr/share/doc"), Vec::<String>::new());
        assert_eq!(found("usr/share/man"), ["usr/share/man"]);
    }

    #[test]
    fn the_keel_archive_holds_keel_init_and_the_marker() {
        for path in [KEEL_PATH, MARKER_PATH, "/init"] {
            let rel = format!(".{path}");
            assert!(KEEL_SEGMENT.contains(&rel.as_str()), "{rel}");
            let mut parent = Path::new(&rel).parent();
            while let Some(p) = parent.filter(|p| *p != Path::new(".")) {
                assert!(
                    KEEL_SEGMENT.contains(&p.to_str().unwrap()),
                    "{}",
                    p.display()
                );
                parent = p.parent();
            }
        }
    }

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_mountinfo(r"/a\040b\134c"), "/a b\\c");
    }
}
