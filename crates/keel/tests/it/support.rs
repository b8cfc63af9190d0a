//! What the tests share: running `keel`, and a real Debian root built once with debootstrap.
//!
//! The root is built on first use into a cache directory the tests own
//! (`$KEEL_TEST_CACHE`, or `target/keel-test-cache` in the workspace), kept there as a tarball,
//! and extracted into a private temporary directory for every test that asks for one, because
//! tests change their roots. Parallel test processes (nextest runs each test in its own) build
//! it once: the build runs under an exclusive lock on a file in the cache directory, into a
//! temporary name that is renamed into place when complete.
//!
//! Building needs root, debootstrap and the Debian mirror the host's apt sources name. Without
//! root or debootstrap the tests that need a root say so on stderr and return.

use std::ffi::OsStr;
use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

/// The binary under test.
pub const KEEL: &str = env!("CARGO_BIN_EXE_keel");

/// Release the cached root is built from.
const SUITE: &str = "bookworm";
/// Packages added to debootstrap's minbase: the services the scripted changes touch, and
/// [`PURGE_PACKAGE`], a leaf package with no conffiles and no maintainer scripts.
const INCLUDE: &str = "openssh-server,cron,systemd-sysv,patch";
/// Bump when the recipe changes, so a stale cache is not reused.
const RECIPE: &str = "v1";
/// A leaf package installed in the base root, for the "package removed" step.
pub const PURGE_PACKAGE: &str = "patch";
/// A small package *not* in the base root, with no dependencies beyond libc, for the "package
/// installed" step. Downloaded once with the host's apt.
pub const EXTRA_PACKAGE: &str = "tree";
/// A unit the base root ships disabled, for the "service enabled" step.
pub const DISABLED_UNIT: &str = "systemd-time-wait-sync.service";

/// Longest a single `keel` command may take before the test fails.
const KEEL_TIMEOUT: Duration = Duration::from_secs(120);

// ------------------------------------------------------------------ running keel

/// The outcome of one command.
#[derive(Debug)]
pub struct Run {
    /// Exit code (`None` when killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: Vec<u8>,
    /// Standard error, lossily decoded.
    pub stderr: String,
    /// What was run, for messages.
    pub what: String,
}

impl Run {
    /// Standard output as text.
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Standard output parsed as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "`{}` did not print JSON ({e}); stdout starts with {:?}; stderr: {}",
                self.what,
                String::from_utf8_lossy(&self.stdout[..self.stdout.len().min(300)]),
                self.stderr
            )
        })
    }

    /// Panics unless the command exited with `code`.
    #[track_caller]
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code,
            Some(code),
            "`{}` exited with {:?}, expected {code}\nstderr:\n{}",
            self.what,
            self.code,
            self.stderr
        );
        self
    }

    /// Panics unless the command succeeded.
    #[track_caller]
    pub fn expect_ok(&self) -> &Self {
        self.expect_code(0)
    }
}

/// Runs `program` with `args`, killing it after `timeout`.
pub fn run_with_timeout<S: AsRef<OsStr>>(
    program: impl AsRef<OsStr>,
    args: &[S],
    stdin: Option<&[u8]>,
    timeout: Duration,
) -> Run {
    let mut cmd = Command::new(program.as_ref());
    // The caller's environment must not choose a recovery key or state directory for a test.
    cmd.args(args)
        .env("NO_COLOR", "1")
        .env_remove("KEEL_RECOVERY_KEY")
        .env_remove("KEEL_STATE_DIR")
        .env_remove("KEEL_SERVER")
        .env_remove("KEEL_TOKEN")
        .env_remove("KEEL_CA");
    let what = format!(
        "{} {}",
        program.as_ref().to_string_lossy(),
        args.iter()
            .map(|a| a.as_ref().to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    );
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start `{what}`: {e}"));
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin is piped");
        let input = input.to_vec();
        std::thread::spawn(move || std::io::Write::write_all(&mut pipe, &input));
    }
    let mut out = child.stdout.take().expect("stdout is piped");
    let mut err = child.stderr.take().expect("stderr is piped");
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = out.read_to_end(&mut buf);
        buf
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = err.read_to_end(&mut buf);
        buf
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for child") {
            break status;
        }
        if Instant::now() > deadline {
            // Only the child this function started, by its handle.
            let _ = child.kill();
            let _ = child.wait();
            panic!("`{what}` did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Run {
        code: status.code(),
        stdout: out_reader.join().expect("stdout reader"),
        stderr: String::from_utf8_lossy(&err_reader.join().expect("stderr reader")).into_owned(),
        what,
    }
}

/// Runs `keel` with `args`.
pub fn keel<S: AsRef<OsStr>>(args: &[S]) -> Run {
    run_with_timeout(KEEL, args, None, KEEL_TIMEOUT)
}

/// A state directory for `keel capture` (it keeps the fingerprint key there), private to one
/// test so no test touches the host's `/var/lib/keel`.
#[derive(Debug)]
pub struct Keel {
    state: TempDir,
}

impl Keel {
    /// A fresh state directory.
    pub fn new() -> Self {
        Keel {
            state: TempDir::new().expect("state dir"),
        }
    }

    /// The state directory.
    pub fn state_dir(&self) -> &Path {
        self.state.path()
    }

    /// `keel capture --root ROOT --state-dir STATE <extra>`, which must succeed.
    pub fn capture(&self, root: &Path, extra: &[&str]) -> Run {
        let mut args: Vec<&OsStr> = vec![
            "capture".as_ref(),
            "--root".as_ref(),
            root.as_os_str(),
            "--state-dir".as_ref(),
            self.state.path().as_os_str(),
        ];
        args.extend(extra.iter().map(OsStr::new));
        let run = keel(&args);
        run.expect_ok();
        run
    }

    /// The canonical JSON document of a capture of `root`.
    pub fn capture_json(&self, root: &Path, extra: &[&str]) -> Value {
        let mut args = vec!["--format", "json"];
        args.extend_from_slice(extra);
        self.capture(root, &args).json()
    }

    /// Captures `root` into the binary file `out`.
    pub fn capture_file(&self, root: &Path, out: &Path, extra: &[&str]) {
        let out = out.to_str().expect("utf-8 path");
        let mut args = vec!["--output", out];
        args.extend_from_slice(extra);
        self.capture(root, &args);
        assert!(
            Path::new(out).is_file(),
            "keel capture --output {out} wrote no file"
        );
    }
}

/// `keel show FILE --format json`, which must succeed.
pub fn show_json(file: &Path) -> Value {
    let run = keel(&[
        "show".as_ref(),
        file.as_os_str(),
        "--format".as_ref(),
        "json".as_ref(),
    ]);
    run.expect_ok();
    run.json()
}

/// The rows of `profile.<section>.<table>` in a capture document.
pub fn rows<'a>(doc: &'a Value, section: &str, table: &str) -> &'a [Value] {
    doc["profile"][section][table]
        .as_array()
        .map_or(&[], Vec::as_slice)
}

/// A string field of a row (empty when absent or not a string).
pub fn s<'a>(row: &'a Value, field: &str) -> &'a str {
    row[field].as_str().unwrap_or("")
}

/// A minimal directory that looks like a system root: enough for `keel capture --root` to
/// produce a valid profile without root privileges or a Debian tree.
pub fn tiny_root() -> TempDir {
    let dir = TempDir::new().expect("tiny root");
    let w = |p: &str, c: &str| {
        let path = dir.path().join(p);
        fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        fs::write(path, c).expect("write");
    };
    w("etc/hostname", "tiny\n");
    w("etc/machine-id", "0123456789abcdef0123456789abcdef\n");
    w(
        "etc/os-release",
        "ID=debian\nVERSION_ID=\"12\"\nVERSION_CODENAME=bookworm\n",
    );
    w(
        "etc/passwd",
        "root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000:Alice:/home/alice:/bin/sh\n",
    );
    w("etc/group", "root:x:0:\nalice:x:1000:\n");
    w(
        "etc/fstab",
        "UUID=0f0e0d0c-0b0a-0908-0706-050403020100 / ext4 defaults 0 1\n",
    );
    w(
        "etc/cron.d/backup",
        "0 3 * * * root /usr/local/bin/backup\n",
    );
    w("etc/sysctl.d/10-tiny.conf", "vm.swappiness = 5\n");
    w(
        "var/lib/dpkg/status",
        "Package: tiny\nStatus: install ok installed\nArchitecture: all\nVersion: 1.0\n\n",
    );
    dir
}

// ------------------------------------------------------------------ a server and its agents

/// A `keel server` process, killed (SIGKILL) when dropped.
#[derive(Debug)]
pub struct ServerProc {
    child: Child,
    /// `https://127.0.0.1:PORT`.
    pub url: String,
    /// The admin token, printed on the first start only.
    pub admin: Option<String>,
    /// The enrollment token, printed on the first start only.
    pub enroll: Option<String>,
    /// The data directory.
    pub data: PathBuf,
}

impl ServerProc {
    /// Starts a server on a free loopback port.
    pub fn start(data: &Path) -> ServerProc {
        Self::start_on(data, "127.0.0.1:0")
    }

    /// Starts a server on `listen`, and waits until it reports its address (and its tokens,
    /// on a first start).
    pub fn start_on(data: &Path, listen: &str) -> ServerProc {
        Self::start_with(data, listen, &[])
    }

    /// Starts a server on `listen` with extra arguments (such as `--config FILE`).
    pub fn start_with(data: &Path, listen: &str, extra: &[&str]) -> ServerProc {
        let mut child = Command::new(KEEL)
            .args(["server", "--data"])
            .arg(data)
            .args(["--listen", listen])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start keel server");
        let stderr = child.stderr.take().expect("piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut url = None;
        let mut admin = None;
        let mut enroll = None;
        let deadline = Instant::now() + Duration::from_secs(30);
        // The banner ends with the enroll hint on a first start, or with the CA line otherwise.
        while Instant::now() < deadline {
            let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) else {
                if url.is_some() && admin.is_none() && child.try_wait().ok().flatten().is_none() {
                    break;
                }
                continue;
            };
            if let Some(rest) = line.strip_prefix("keel server listening on ") {
                url = Some(rest.split_whitespace().next().unwrap_or("").to_string());
            } else if let Some(t) = line.trim().strip_prefix("admin token:") {
                admin = Some(t.trim().to_string());
            } else if let Some(t) = line.trim().strip_prefix("enrollment token:") {
                enroll = Some(t.trim().to_string());
            } else if line.trim().starts_with("keel agent enroll") {
                break;
            }
        }
        let url = url.unwrap_or_else(|| panic!("keel server did not report its address"));
        ServerProc {
            child,
            url,
            admin,
            enroll,
            data: data.to_path_buf(),
        }
    }

    /// The address it listens on (`127.0.0.1:PORT`), for restarting on the same one.
    pub fn listen(&self) -> String {
        self.url.trim_start_matches("https://").to_string()
    }

    /// The server's CA certificate, `ca.pem` in its data directory.
    pub fn ca(&self) -> PathBuf {
        self.data.join("ca.pem")
    }

    /// `curl` against the API, trusting only the server's CA. Returns (status, body).
    pub fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut cmd = Command::new("curl");
        cmd.args([
            "-sS",
            "--max-time",
            "20",
            "-w",
            "\n%{http_code}",
            "--cacert",
        ])
        .arg(self.ca());
        if let Some(t) = token {
            cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
        }
        let out = cmd
            .arg(format!("{}{path}", self.url))
            .output()
            .expect("run curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, status) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (
            status.trim().parse().unwrap_or(0),
            serde_json::from_str(body).unwrap_or(Value::Null),
        )
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        // Only the process this value started, by its handle.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A tiny root whose /etc/hostname and /etc/machine-id name it.
pub fn root_named(name: &str, machine_id: &str) -> TempDir {
    let r = tiny_root();
    fs::write(r.path().join("etc/hostname"), format!("{name}\n")).unwrap();
    fs::write(r.path().join("etc/machine-id"), format!("{machine_id}\n")).unwrap();
    r
}

/// `keel agent ARGS --state-dir STATE --root ROOT`, as arguments.
pub fn agent_cmd(state: &Path, root: &Path, args: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = vec!["agent".into()];
    v.extend(args.iter().map(ToString::to_string));
    v.extend([
        "--state-dir".into(),
        state.display().to_string(),
        "--root".into(),
        root.display().to_string(),
    ]);
    v
}

/// `keel agent push --json`: its exit code and report.
pub fn push(state: &Path, root: &Path) -> (Option<i32>, Value) {
    let r = keel(&agent_cmd(state, root, &["push", "--json"]));
    (r.code, r.json())
}

// ------------------------------------------------------------------ privileges and tools

/// Why the root-building tests cannot run here, if they cannot.
pub fn root_tests_unsupported() -> Option<String> {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("?");
    if euid != "0" {
        return Some(format!("running as uid {euid}, not root"));
    }
    for tool in [
        "debootstrap",
        "dpkg",
        "dpkg-query",
        "dpkg-deb",
        "chroot",
        "tar",
        "apt-get",
        "systemctl",
    ] {
        if which(tool).is_none() {
            return Some(format!("`{tool}` is not installed"));
        }
    }
    None
}

/// The path of `tool` on `PATH` or in the sbin directories (root's tools live there).
pub fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// Runs a host command that must succeed, returning its stdout.
#[track_caller]
pub fn sh(program: &str, args: &[&str]) -> String {
    let prog = which(program).unwrap_or_else(|| PathBuf::from(program));
    let run = run_with_timeout(&prog, args, None, Duration::from_secs(300));
    assert_eq!(run.code, Some(0), "`{}` failed:\n{}", run.what, run.stderr);
    run.stdout_str()
}

/// Prints why a test is skipped.
#[allow(
    clippy::print_stderr,
    reason = "a skipped test must say so to whoever runs it"
)]
pub fn skip(why: &str) {
    eprintln!("skipped: needs root and debootstrap ({why})");
}

// ------------------------------------------------------------------ mounts

/// Mount points at or below `dir`, deepest first.
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_mountinfo)
        .map(PathBuf::from)
        .filter(|m| m.starts_with(dir))
        .collect();
    found.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    found
}

fn unescape_mountinfo(field: &str) -> String {
    // mountinfo escapes space, tab, newline and backslash as \ooo.
    let mut out = String::new();
    let b = field.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            if let Ok(v) = u8::from_str_radix(&field[i + 1..i + 4], 8) {
                out.push(char::from(v));
                i += 4;
                continue;
            }
        }
        out.push(char::from(b[i]));
        i += 1;
    }
    out
}

/// Unmounts everything mounted at or below `dir` (a build interrupted inside debootstrap can
/// leave its `/proc` and `/sys` mounted), so that removing the tree never reaches into them.
pub fn unmount_under(dir: &Path) {
    for m in mounts_under(dir) {
        for attempt in 0..5 {
            let ok = Command::new(which("umount").unwrap_or_else(|| "umount".into()))
                .arg(&m)
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                break;
            }
            if attempt == 4 {
                // Last resort: detach it so the directory can go.
                let _ = Command::new("umount").arg("-l").arg(&m).status();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A directory removed on drop, after everything mounted inside it has been unmounted.
#[derive(Debug)]
pub struct ScratchDir(PathBuf);

impl Drop for ScratchDir {
    fn drop(&mut self) {
        unmount_under(&self.0);
        if mounts_under(&self.0).is_empty() {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
}

// ------------------------------------------------------------------ the cached Debian root

/// The cache: a tarball of the base root and the extra package.
#[derive(Debug)]
struct Cache {
    base_tar: PathBuf,
    extra_deb: PathBuf,
}

/// The directory the tests cache downloads and built trees in.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("KEEL_TEST_CACHE").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/keel-test-cache")
}

/// The main Debian archive of the machine's apt sources, read at run time.
pub fn host_mirror() -> Result<String, String> {
    keel_rescue::sources::host_mirror(Path::new("/"))
        .ok_or_else(|| "no Debian archive in the machine's apt sources".into())
}

fn cache() -> Result<&'static Cache, String> {
    static CACHE: OnceLock<Result<Cache, String>> = OnceLock::new();
    CACHE
        .get_or_init(build_cache)
        .as_ref()
        .map_err(Clone::clone)
}

/// Builds the cache unless a complete one is there, under an exclusive lock.
fn build_cache() -> Result<Cache, String> {
    let dir = cache_dir();
    fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let dir = dir
        .canonicalize()
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    let cache = Cache {
        base_tar: dir.join(format!("{SUITE}-minbase-{RECIPE}.tar")),
        extra_deb: dir.join(format!("{EXTRA_PACKAGE}.deb")),
    };
    let lock_path = dir.join("build.lock");
    let lock = fs::File::create(&lock_path)
        .map_err(|e| format!("cannot create {}: {e}", lock_path.display()))?;
    lock.lock()
        .map_err(|e| format!("cannot lock {}: {e}", lock_path.display()))?;
    // The lock is released when `lock` drops at the end of this function, however it ends.

    let work = dir.join(format!("build.{}", std::process::id()));
    // Leftovers of an interrupted build by another process (its lock died with it).
    for entry in fs::read_dir(&dir).map_err(|e| e.to_string())?.flatten() {
        if entry.file_name().to_string_lossy().starts_with("build.") && entry.path().is_dir() {
            drop(ScratchDir(entry.path()));
        }
    }
    if !cache.base_tar.is_file() {
        let started = Instant::now();
        fs::create_dir_all(&work).map_err(|e| e.to_string())?;
        let _guard = ScratchDir(work.clone());
        build_base(&work, &cache.base_tar)?;
        note(&format!(
            "built the cached Debian root in {:.0?}",
            started.elapsed()
        ));
    }
    if !cache.extra_deb.is_file() {
        fs::create_dir_all(&work).map_err(|e| e.to_string())?;
        let _guard = ScratchDir(work.clone());
        download_deb(&work, &cache.extra_deb)?;
    }
    Ok(cache)
}

#[allow(clippy::print_stderr, reason = "progress of a slow, one-off build")]
fn note(msg: &str) {
    eprintln!("{msg}");
}

fn build_base(work: &Path, dest: &Path) -> Result<(), String> {
    let mirror = host_mirror()?;
    let target = work.join("root");
    let log = work.join("debootstrap.log");
    let log_file = fs::File::create(&log).map_err(|e| e.to_string())?;
    let status = Command::new(which("timeout").ok_or("`timeout` is not installed")?)
        .args(["600", "debootstrap", "--variant=minbase"])
        .arg(format!("--include={INCLUDE}"))
        .arg(SUITE)
        .arg(&target)
        .arg(&mirror)
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().map_err(|e| e.to_string())?)
        .stderr(log_file)
        .status()
        .map_err(|e| format!("cannot run debootstrap: {e}"))?;
    unmount_under(&target);
    if !status.success() {
        let text = fs::read_to_string(&log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(15).collect();
        return Err(format!(
            "debootstrap {SUITE} from {mirror} failed ({status}):\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        ));
    }
    // The downloaded packages are not part of the system and would only bloat every copy.
    if let Ok(debs) = fs::read_dir(target.join("var/cache/apt/archives")) {
        for deb in debs.flatten() {
            if deb.path().extension() == Some(OsStr::new("deb")) {
                let _ = fs::remove_file(deb.path());
            }
        }
    }
    let partial = work.join("base.tar");
    let out = Command::new("tar")
        .arg("--numeric-owner")
        .arg("-C")
        .arg(&target)
        .args(["-cf"])
        .arg(&partial)
        .arg(".")
        .output()
        .map_err(|e| format!("cannot run tar: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "tar failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    fs::rename(&partial, dest).map_err(|e| format!("cannot move the tarball into place: {e}"))
}

fn download_deb(work: &Path, dest: &Path) -> Result<(), String> {
    let fetch = || {
        Command::new("apt-get")
            .args(["download", EXTRA_PACKAGE])
            .current_dir(work)
            .output()
            .map_err(|e| format!("cannot run apt-get: {e}"))
    };
    let mut out = fetch()?;
    if !out.status.success() {
        // A fresh machine may have no package lists yet.
        let _ = Command::new("apt-get").args(["update", "-qq"]).output();
        out = fetch()?;
    }
    if !out.status.success() {
        return Err(format!(
            "apt-get download {EXTRA_PACKAGE} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let deb = fs::read_dir(work)
        .map_err(|e| e.to_string())?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.extension() == Some(OsStr::new("deb"))
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(EXTRA_PACKAGE))
        })
        .ok_or("apt-get download left no .deb")?;
    fs::rename(deb, dest).map_err(|e| e.to_string())
}

/// A private copy of the cached Debian root, deleted (after unmounting anything left mounted
/// inside it) when dropped.
#[derive(Debug)]
pub struct DebianRoot {
    root: PathBuf,
    extra_deb: PathBuf,
    // Declared last: dropped after `root` is no longer used.
    _dir: ScratchDir,
}

impl DebianRoot {
    /// A fresh copy of the cached root, or `None` (after saying why) when this machine cannot
    /// build one.
    pub fn new() -> Option<Self> {
        if let Some(why) = root_tests_unsupported() {
            skip(&why);
            return None;
        }
        let cache = cache().unwrap_or_else(|e| panic!("cannot build the test Debian root: {e}"));
        let dir = TempDir::with_prefix("keel-root-").expect("temp dir").keep();
        let guard = ScratchDir(dir.clone());
        let root = dir.join("root");
        fs::create_dir(&root).expect("mkdir root");
        sh(
            "tar",
            &[
                "--numeric-owner",
                "-xf",
                cache.base_tar.to_str().expect("utf-8"),
                "-C",
                root.to_str().expect("utf-8"),
            ],
        );
        Some(DebianRoot {
            root,
            extra_deb: cache.extra_deb.clone(),
            _dir: guard,
        })
    }

    /// The root directory.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// The root as a string.
    pub fn str(&self) -> &str {
        self.root.to_str().expect("utf-8 path")
    }

    /// A path inside the root (`p` is absolute within it).
    pub fn join(&self, p: &str) -> PathBuf {
        self.root.join(p.trim_start_matches('/'))
    }

    /// The cached `.deb` of [`EXTRA_PACKAGE`].
    pub fn extra_deb(&self) -> &Path {
        &self.extra_deb
    }

    /// Writes a file inside the root, creating its directory.
    pub fn write(&self, p: &str, content: impl AsRef<[u8]>) {
        let path = self.join(p);
        fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        fs::write(&path, content).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }

    /// Reads a file inside the root.
    pub fn read(&self, p: &str) -> String {
        let path = self.join(p);
        fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
    }

    /// Runs a command inside the root with `chroot`; it must succeed.
    #[track_caller]
    pub fn chroot(&self, args: &[&str]) -> String {
        self.chroot_stdin(args, None)
    }

    /// Runs a command inside the root with `chroot`, feeding `stdin`; it must succeed.
    #[track_caller]
    pub fn chroot_stdin(&self, args: &[&str], stdin: Option<&[u8]>) -> String {
        let mut all = vec![
            self.str(),
            "/usr/bin/env",
            "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
            "LC_ALL=C",
        ];
        all.extend_from_slice(args);
        let chroot = which("chroot").expect("chroot");
        let run = run_with_timeout(chroot, &all, stdin, Duration::from_secs(300));
        assert_eq!(run.code, Some(0), "`{}` failed:\n{}", run.what, run.stderr);
        run.stdout_str()
    }
}
