//! What the tests share: the keel binary, the rescue environment built once and cached, and
//! the checks that say whether this machine can run them.
//!
//! The environment is built on first use into the cache directory the workspace's tests own
//! (`$KEEL_TEST_CACHE`, or `target/keel-test-cache`), as `rescue-<hash>/` where the hash
//! covers everything that goes in: the keel binary's content, the package list, the init
//! script, the module list, the suite and the compression level. Downloaded packages and the
//! package tree are kept in `rescue-base/`, so a new keel binary only repacks. Parallel test
//! processes build it once: the build runs under an exclusive lock on `build.lock` in the
//! cache directory (the file keel's own tests lock for their Debian root), and the library
//! builds into a temporary directory it renames into place.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use keel_rescue::{BuildOptions, Manifest, Progress};
use sha2::{Digest, Sha256};

/// Release the cached environment is built from.
const SUITE: &str = keel_rescue::DEFAULT_SUITE;

/// Bump when the way the tests build changes, so a stale cache is not reused.
const RECIPE: &str = "rescue-test-1";

/// Compression level the tests build with: the shipped default, so the sizes the tests print
/// are the ones users get.
const ZSTD_LEVEL: i32 = keel_rescue::DEFAULT_ZSTD_LEVEL;

/// A built rescue environment.
#[derive(Debug, Clone)]
pub struct RescueEnv {
    /// Its directory (`vmlinuz`, `initrd.img`, `manifest.json`).
    pub dir: PathBuf,
    /// Its manifest.
    pub manifest: Manifest,
}

impl RescueEnv {
    /// The kernel.
    pub fn vmlinuz(&self) -> PathBuf {
        self.dir.join("vmlinuz")
    }

    /// The initramfs.
    pub fn initrd(&self) -> PathBuf {
        self.dir.join("initrd.img")
    }
}

/// Prints a line where the test runner shows it.
#[allow(
    clippy::print_stderr,
    reason = "figures and skips must reach whoever runs the tests"
)]
pub fn note(msg: &str) {
    eprintln!("{msg}");
}

/// Says why a test is skipped.
pub fn skip(test: &str, why: &str) {
    note(&format!("{test}: skipped: {why}"));
}

/// The path of `tool` on `PATH` or in the sbin directories.
pub fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// The keel binary the tests put in the environment: `$KEEL_BIN`, or the one cargo built next
/// to this test binary (`target/<profile>/keel`).
pub fn keel_bin() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("KEEL_BIN").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    // target/<profile>/deps/it-<hash> → target/<profile>/keel
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("keel"))
        .ok_or("cannot locate the target directory")?;
    if !bin.is_file() {
        return Err(format!(
            "{} is not built (run `cargo build -p keel` first, or set KEEL_BIN)",
            bin.display()
        ));
    }
    // A keel built before `keel rescue` existed cannot run inside the environment.
    let out = Command::new(&bin)
        .args(["rescue", "--help"])
        .output()
        .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} has no `rescue` command: rebuild it (cargo build -p keel)",
            bin.display()
        ));
    }
    Ok(bin)
}

/// Why the tests that boot the environment cannot run here, if they cannot.
pub fn vm_tests_unsupported() -> Option<String> {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("?");
    if euid != "0" {
        return Some(format!(
            "needs root to build the rescue environment (running as uid {euid})"
        ));
    }
    for tool in [
        "debootstrap",
        "qemu-system-x86_64",
        "cpio",
        "zstd",
        "dpkg-deb",
        "chroot",
        "mkfs.ext4",
        "timeout",
    ] {
        if which(tool).is_none() {
            return Some(format!("`{tool}` is not installed"));
        }
    }
    if keel_rescue::sources::host_mirror(Path::new("/")).is_none() {
        return Some("no Debian archive in this machine's apt sources".into());
    }
    if let Err(e) = keel_bin() {
        return Some(e);
    }
    None
}

/// The directory the tests cache downloads and built trees in.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("KEEL_TEST_CACHE").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/keel-test-cache")
}

/// The cache key: a hash of everything that goes into the environment.
fn key(keel: &Path) -> Result<String, String> {
    let mut h = Sha256::new();
    let mut part = |b: &[u8]| {
        h.update((b.len() as u64).to_le_bytes());
        h.update(b);
    };
    part(RECIPE.as_bytes());
    part(SUITE.as_bytes());
    part(&ZSTD_LEVEL.to_le_bytes());
    part(&fs::read(keel).map_err(|e| format!("cannot read {}: {e}", keel.display()))?);
    for p in keel_rescue::PACKAGES {
        part(p.as_bytes());
    }
    part(keel_rescue::init_script().as_bytes());
    for m in keel_rescue::KEEP_MODULES.iter().chain(keel_rescue::STRIP) {
        part(m.as_bytes());
    }
    Ok(keel_rescue::hex(&h.finalize())[..16].to_string())
}

/// The rescue environment, built on first use (once per test process; once per machine and
/// input while the cache lasts).
pub fn rescue_env() -> Result<&'static RescueEnv, String> {
    static ENV: OnceLock<Result<RescueEnv, String>> = OnceLock::new();
    ENV.get_or_init(build_env).as_ref().map_err(Clone::clone)
}

fn build_env() -> Result<RescueEnv, String> {
    let dir = cache_dir();
    fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let dir = dir
        .canonicalize()
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    let keel = keel_bin()?;
    let key = key(&keel)?;
    let out = dir.join(format!("rescue-{key}"));
    let lock_path = dir.join("build.lock");
    let lock = fs::File::create(&lock_path)
        .map_err(|e| format!("cannot create {}: {e}", lock_path.display()))?;
    lock.lock()
        .map_err(|e| format!("cannot lock {}: {e}", lock_path.display()))?;
    // The lock is released when `lock` drops at the end of this function, however it ends.

    let manifest_path = out.join(keel_rescue::MANIFEST_FILE);
    if !manifest_path.is_file() {
        let mut opts = BuildOptions::new(&out, &keel);
        opts.suite = SUITE.into();
        opts.cache_dir = Some(dir.join("rescue-base"));
        opts.zstd_level = ZSTD_LEVEL;
        let started = Instant::now();
        let mut progress = |p: Progress| {
            if let Progress::Finished(step, d) = p {
                note(&format!("  rescue build: {step} {:.1} s", d.as_secs_f64()));
            }
        };
        let m = keel_rescue::build(&opts, &mut progress).map_err(|e| e.to_string())?;
        note(&format!(
            "built the rescue environment in {:.0?} ({}): initrd.img {} bytes ({:.1} MiB), {:.1} MiB \
             uncompressed",
            started.elapsed(),
            if m.from_cache {
                "package tree from the cache"
            } else {
                "from scratch"
            },
            m.initrd.compressed_bytes,
            m.initrd.compressed_bytes as f64 / 1_048_576.0,
            m.initrd.uncompressed_bytes as f64 / 1_048_576.0,
        ));
        // Environments built for other keel binaries are not coming back.
        for entry in fs::read_dir(&dir).map_err(|e| e.to_string())?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("rescue-") && name != "rescue-base" && entry.path() != out {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
    }
    let manifest: Manifest = serde_json::from_slice(
        &fs::read(&manifest_path).map_err(|e| format!("{}: {e}", manifest_path.display()))?,
    )
    .map_err(|e| format!("{}: {e}", manifest_path.display()))?;
    Ok(RescueEnv { dir: out, manifest })
}

/// Runs a host command that must succeed, returning its stdout.
#[track_caller]
pub fn sh(program: &str, args: &[&str]) -> String {
    let prog = which(program).unwrap_or_else(|| PathBuf::from(program));
    let out = Command::new(&prog)
        .args(args)
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "`{program} {}` failed:\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A sparse blank disk image of `bytes` bytes.
pub fn blank_image(path: &Path, bytes: u64) {
    fs::File::create(path)
        .and_then(|f| f.set_len(bytes))
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
}

/// An ext4 image labelled `KEELKIT` holding the files of `dir` (made without mounting it).
pub fn kit_image(dir: &Path, image: &Path) {
    kit_image_sized(dir, image, 16 << 20);
}

/// [`kit_image`] of `bytes` bytes, for kits that carry a system tree.
pub fn kit_image_sized(dir: &Path, image: &Path, bytes: u64) {
    blank_image(image, bytes);
    sh(
        "mkfs.ext4",
        &[
            "-q",
            "-F",
            "-L",
            keel_rescue::KIT_LABEL,
            "-d",
            dir.to_str().expect("utf-8"),
            image.to_str().expect("utf-8"),
        ],
    );
}

/// Seconds as printed in figures.
pub fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// Prints the console after a failure, so the reason is in the test output.
pub struct ShowConsoleOnPanic<'a>(pub &'a Path);

impl Drop for ShowConsoleOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let text = fs::read_to_string(self.0).unwrap_or_default();
            note(&format!(
                "----- guest console ({}) -----\n{text}\n-----",
                self.0.display()
            ));
        }
    }
}

/// The output a kit step printed between its markers.
pub fn step_output<'a>(console: &'a str, name: &str) -> &'a str {
    let begin = console
        .find(&format!(" BEGIN {name}: "))
        .unwrap_or_else(|| panic!("no BEGIN marker for step {name}"));
    let rest = &console[begin..];
    let body = &rest[rest.find('\n').map_or(rest.len(), |i| i + 1)..];
    let end = body
        .find(&format!(" END {name}: "))
        .unwrap_or_else(|| panic!("no END marker for step {name}"));
    let body = &body[..end];
    &body[..body.rfind('\n').unwrap_or(0)]
}
