//! Recovery machines: `keel rescue --server` processes whose disks are the test's image files
//! wait on a real `keel server`; recoveries are planned and started through the server's API
//! (as the web UI does) or with `keel recover batch`, and run on the machines with the same
//! code as `keel recover apply`.
//!
//! The hosts are copies of the install test's bootable server profile (`install::
//! source_profile`), uploaded through a real agent under distinct host names. The single
//! recovery builds the tree onto the disks from the warm build cache, as `keel recover apply`
//! does; the batch's lay down a tree tarball built once, so each is mostly laydown, initramfs
//! and bootloader. The web UI's recovery pages are driven with curl against machines that
//! only registered.
//!
//! Needs root, debootstrap, loop devices with partx and QEMU; without them it says why on
//! stderr and passes.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::install::{fact, facts, missing, source_profile, Vm, NEW_NIC, OLD_NIC, ROOT_UUID};
use crate::support::ServerProc;
use crate::system_support::{cache_dir, note, Scratch, HOSTNAME};

const KEEL: &str = env!("CARGO_BIN_EXE_keel");
const GIB: u64 = 1 << 30;

/// The server's API with the admin token.
struct Api {
    agent: ureq::Agent,
    url: String,
    admin: String,
}

impl Api {
    fn new(server: &ServerProc) -> Api {
        use ureq::tls::{Certificate, RootCerts, TlsConfig};
        let pem = fs::read(server.ca()).expect("ca.pem");
        let cert = Certificate::from_pem(&pem).expect("CA");
        let agent = ureq::Agent::config_builder()
            .tls_config(
                TlsConfig::builder()
                    .root_certs(RootCerts::new_with_certs(&[cert]))
                    .build(),
            )
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .new_agent();
        Api {
            agent,
            url: server.url.clone(),
            admin: server.admin.clone().expect("admin token"),
        }
    }

    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let url = format!("{}{path}", self.url);
        let auth = format!("Bearer {}", self.admin);
        let mut resp = if method == "GET" {
            self.agent.get(&url).header("Authorization", &auth).call()
        } else {
            self.agent
                .post(&url)
                .header("Authorization", &auth)
                .send(body.map(ToString::to_string).unwrap_or_default().as_bytes())
        }
        .expect("call the server");
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Waits until `n` machines have registered.
    fn machines(&self, n: usize) -> Vec<Value> {
        let end = Instant::now() + Duration::from_secs(120);
        loop {
            let (status, v) = self.call("GET", "/api/v1/machines", None);
            assert_eq!(status, 200, "{v}");
            let list = v.as_array().cloned().unwrap_or_default();
            if list.len() >= n {
                return list;
            }
            assert!(
                Instant::now() < end,
                "only {} of {n} machines registered",
                list.len()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

/// Puts the profile file at `path` into the server as host `host`, through a real agent's
/// enrollment and upload. The server keeps each profile once, so a copy for another host is
/// made distinct by `copy` milliseconds added to its capture time (nothing a recovery uses).
fn upload_as(server: &ServerProc, host: &str, path: &Path, copy: i64) {
    let mut file = keel_profile::ProfileFile::decode(&fs::read(path).expect("profile"))
        .expect("decode profile");
    file.profile.meta.started_at_ms += copy;
    let state = tempfile::tempdir().expect("state");
    let root = tempfile::tempdir().expect("root");
    let agent = keel_agent::Agent::new(state.path(), root.path());
    agent
        .enroll(
            &server.url,
            server.enroll.as_deref().expect("enrollment token"),
            host,
            &file.profile.meta.machine_id,
            None,
        )
        .expect("enroll");
    let spool = state.path().join("agent/spool");
    fs::create_dir_all(&spool).expect("spool");
    fs::write(
        spool.join("0000000000000001-0000.keel"),
        file.encode().expect("encode"),
    )
    .expect("spool the profile");
    let r = agent.deliver().expect("deliver");
    assert_eq!((r.delivered, r.rejected), (1, 0), "{r:?}");
}

/// A `keel rescue --server` process, killed (by its own handle) when dropped; what a killed
/// recovery left mounted is released.
struct Machine {
    child: Child,
    work: PathBuf,
    log: PathBuf,
}

impl Machine {
    fn start(server: &ServerProc, name: &str, image: &Path, dir: &Path, extra: &[&str]) -> Machine {
        let (_, key) = source_profile();
        let work = dir.join(format!("{name}-work"));
        let log = dir.join(format!("{name}.log"));
        let child = Command::new(KEEL)
            .arg("rescue")
            .args(["--server", &server.url])
            .args([
                "--token",
                server.enroll.as_deref().expect("enrollment token"),
            ])
            .arg("--disk")
            .arg(image)
            .args(["--name", name])
            .arg("--work-dir")
            .arg(&work)
            .arg("--once")
            .arg("--recovery-identity")
            .arg(&key)
            .arg("--cache")
            .arg(cache_dir().join("build-cache"))
            .args(["--firmware", "bios"])
            .args(["--nic-map", &format!("{OLD_NIC}={NEW_NIC}")])
            .args(extra)
            .env("NO_COLOR", "1")
            .env_remove("KEEL_TOKEN")
            .stdin(Stdio::null())
            .stdout(fs::File::create(dir.join(format!("{name}.out"))).expect("out"))
            .stderr(fs::File::create(&log).expect("log"))
            .spawn()
            .expect("start keel rescue --server");
        Machine { child, work, log }
    }

    /// Waits for the machine to exit after its one recovery; its exit status.
    fn wait(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        None
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let Ok(rd) = fs::read_dir(&self.work) else {
            return;
        };
        for e in rd.filter_map(Result::ok) {
            let plan = e.path().join("plan.json");
            if plan.is_file() {
                let _ = Command::new(KEEL)
                    .args(["recover", "release"])
                    .arg(&plan)
                    .arg("--target-root")
                    .arg(e.path().join("target"))
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
}

fn blank(path: &Path, size: u64) {
    fs::File::create(path)
        .and_then(|f| f.set_len(size))
        .expect("blank image");
}

/// Follows a recovery until it ends; the (status, phase) pairs seen, in order.
fn follow(api: &Api, id: i64, limit: Duration) -> (Value, Vec<(String, String)>) {
    let end = Instant::now() + limit;
    let mut seen: Vec<(String, String)> = Vec::new();
    loop {
        let (status, job) = api.call("GET", &format!("/api/v1/recoveries/{id}"), None);
        assert_eq!(status, 200, "{job}");
        let now = (
            job["status"].as_str().unwrap_or_default().to_string(),
            job["phase"].as_str().unwrap_or_default().to_string(),
        );
        if seen.last() != Some(&now) {
            note(&format!("recovery {id}: {} {}", now.0, now.1));
            seen.push(now.clone());
        }
        if matches!(now.0.as_str(), "done" | "failed") {
            return (job, seen);
        }
        assert!(
            Instant::now() < end,
            "recovery {id} did not end in {limit:?}: {job}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn a_host_is_recovered_onto_a_waiting_rescue_machine_then_boots() {
    if let Some(why) = missing() {
        note(&format!(
            "skipped: needs root, debootstrap, loop devices with partx and QEMU ({why})"
        ));
        return;
    }
    let (profile, _key) = source_profile();
    let scratch = Scratch::new("keel-machine-");
    let dir = scratch.path();
    let server = ServerProc::start(&dir.join("server"));
    let api = Api::new(&server);
    upload_as(&server, HOSTNAME, &profile, 0);
    let img = dir.join("disk.img");
    blank(&img, 4 * GIB);
    let mut machine = Machine::start(&server, "rescue-1", &img, dir, &[]);
    let listed = api.machines(1);
    assert_eq!(listed[0]["name"], "rescue-1");
    assert_eq!(
        listed[0]["inventory"]["disks"][0]["path"],
        img.display().to_string(),
        "{listed:?}"
    );

    // Point and click: the plan for this host on this machine, shown before anything runs,
    // started by typing the host's name; in the browser when there is one.
    let started = Instant::now();
    let browser = crate::ui::browser_unsupported();
    let driver = browser.is_none().then(crate::ui::Driver::start);
    let page = driver
        .as_ref()
        .map(|d| crate::ui::Browser::open(d, &server.url));
    let id = if let Some(b) = &page {
        add_user(&dir.join("server"), "ada", "admin", "correct horse battery");
        b.go("/ui/login");
        b.fill("#name", "ada");
        b.fill("#password", "correct horse battery");
        b.click("#login");
        b.go("/ui/recoveries");
        let index = b.source();
        assert!(
            index.contains("rescue-1"),
            "the waiting machine is listed: {index}"
        );
        b.screenshot("recoveries-waiting");
        b.choose("#plan-host option:nth-child(2)");
        b.choose("#plan-machine option:nth-child(2)");
        b.click("#plan-submit");
        let shown = b.source();
        assert!(
            shown.contains(&img.display().to_string()) && shown.contains("id=\"start\""),
            "the plan and its start button: {shown}"
        );
        let nics = shown
            .split_once("id=\"nics\"")
            .and_then(|(_, rest)| rest.split_once("</table>"))
            .map_or("", |(table, _)| table);
        assert!(
            nics.contains(OLD_NIC) && nics.contains(NEW_NIC) && nics.contains("--nic-map"),
            "the NIC map is shown with the plan: {nics}"
        );
        b.screenshot("recovery-plan");
        let url = b.url();
        let id: i64 = url
            .rsplit('/')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no recovery id in {url}"));
        // A wrong name starts nothing.
        b.fill("#confirm", "not-the-host");
        b.click("#start");
        assert!(b.source().contains("id=\"start\""), "{}", b.source());
        let (_, v) = api.call("GET", &format!("/api/v1/recoveries/{id}"), None);
        assert_eq!(v["status"], "planned", "{v}");
        b.fill("#confirm", HOSTNAME);
        b.click("#start");
        id
    } else {
        note(&format!(
            "the browser part is skipped ({}): planned and started through the API",
            browser.unwrap_or_default()
        ));
        let (status, job) = api.call(
            "POST",
            "/api/v1/recoveries",
            Some(&json!({ "host": HOSTNAME, "machine": "rescue-1" })),
        );
        assert_eq!(status, 201, "{job}");
        let plan_text = job["plan_text"].as_str().unwrap_or_default();
        assert!(
            plan_text.contains(&img.display().to_string()),
            "{plan_text}"
        );
        assert_eq!(
            (
                &job["nics"]["map"][0]["old_name"],
                &job["nics"]["map"][0]["new_name"]
            ),
            (&json!(OLD_NIC), &json!(NEW_NIC)),
            "the NIC map is planned with the disks: {job}"
        );
        let id = job["id"].as_i64().expect("id");
        let (status, v) = api.call(
            "POST",
            &format!("/api/v1/recoveries/{id}/start"),
            Some(&json!({ "confirm": HOSTNAME })),
        );
        assert_eq!(status, 200, "{v}");
        id
    };
    if let Some(b) = &page {
        b.wait_for_text(
            &format!("/ui/recoveries/{id}"),
            "id=\"progress\"",
            Duration::from_secs(300),
        );
        assert!(
            b.source().contains("<strong>running</strong>"),
            "{}",
            b.source()
        );
        b.screenshot("recovery-progress");
    }
    let (job, seen) = follow(&api, id, Duration::from_secs(1200));
    if let Some(b) = &page {
        b.wait_for_text(
            &format!("/ui/recoveries/{id}"),
            "the recovered system matches its profile",
            Duration::from_secs(60),
        );
        b.screenshot("recovery-verified");
    }
    let took = started.elapsed();
    let code = machine.wait(Duration::from_secs(60));
    let log = machine.log();
    assert_eq!(job["status"], "done", "{job:#}\n{log}");
    assert!(code.is_some_and(|c| c.success()), "{code:?}\n{log}");
    // Progress was seen while it ran, phase by phase.
    let running: Vec<&str> = seen
        .iter()
        .filter(|(s, _)| s == "running")
        .map(|(_, p)| p.as_str())
        .collect();
    assert!(running.len() >= 3, "too little progress seen: {seen:?}");
    let phases: Vec<&str> = job["progress"]
        .as_array()
        .expect("progress")
        .iter()
        .filter(|e| e["state"] == "finished")
        .filter_map(|e| e["phase"].as_str())
        .collect();
    for phase in ["storage", "initramfs", "bootloader", "data", "verify"] {
        assert!(phases.contains(&phase), "no {phase} in {phases:?}");
    }
    assert_eq!(job["report"]["ok"], true, "{:#}", job["report"]);
    assert_eq!(job["report"]["verify"]["unexpected"], json!([]));
    note(&format!(
        "recovered {HOSTNAME} onto a waiting machine in {:.1} s (phases: {})",
        took.as_secs_f64(),
        running.join(", ")
    ));

    let console_path = dir.join("console.log");
    let t = Instant::now();
    let mut vm = Vm::boot(&img, &console_path, Duration::from_secs(240));
    let ended = vm.wait(Duration::from_secs(240));
    drop(vm);
    note(&format!(
        "booted and checked in {:.1} s",
        t.elapsed().as_secs_f64()
    ));
    let console = fs::read_to_string(&console_path).unwrap_or_default();
    assert!(
        ended && console.contains(crate::system_support::boot::FACTS_END),
        "the guest did not print its facts and power off:\n{}",
        &console[console.len().saturating_sub(4000)..]
    );
    let f = facts(&console);
    assert_eq!(fact(&f, "hostname"), [HOSTNAME]);
    assert!(
        fact(&f, "addr").contains(&format!("{NEW_NIC} 192.0.2.10/24").as_str()),
        "{f:?}"
    );
    assert!(
        fact(&f, "cmdline")
            .join(" ")
            .contains(&format!("root=UUID={ROOT_UUID}")),
        "{f:?}"
    );
    assert_eq!(fact(&f, "srv-readme"), ["application data lives here"]);
}

/// The source profile's system tree as a tarball, built once (from the warm build cache) and
/// kept in the test cache: the batch's recoveries lay it down with `--tree`, so they wait
/// neither for the build cache's lock nor for the repositories.
fn tree_tarball(profile: &Path, key: &Path) -> PathBuf {
    let stem = profile
        .file_stem()
        .map_or_else(|| "profile".into(), |s| s.to_string_lossy().into_owned());
    // Named by the tree format too: a tarball from an earlier format is not laid down.
    let stem = format!("{stem}-{}", keel_system::TREE_FORMAT);
    let dir = cache_dir();
    let tree = dir.join(format!("{stem}.tar.zst"));
    let lock = fs::File::create(dir.join(format!("{stem}.lock"))).expect("lock file");
    lock.lock().expect("lock");
    if tree.is_file() {
        return tree;
    }
    let partial = dir.join(format!(".{stem}.{}.tar.zst", std::process::id()));
    let t = Instant::now();
    let out = Command::new(KEEL)
        .args(["recover", "build-tree", "--profile"])
        .arg(profile)
        .arg("--output")
        .arg(&partial)
        .arg("--recovery-identity")
        .arg(key)
        .arg("--cache")
        .arg(cache_dir().join("build-cache"))
        .stdin(Stdio::null())
        .output()
        .expect("keel recover build-tree");
    assert!(
        out.status.success(),
        "build-tree failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    fs::rename(&partial, &tree).expect("rename the tree");
    note(&format!(
        "built the system tree {} in {:.0?}",
        tree.display(),
        t.elapsed()
    ));
    tree
}

/// A recovery report's phases in a line: `storage 1.2 s, restore 20.4 s, …`.
fn phase_times(report: &Value) -> String {
    report["phases"]
        .as_array()
        .map(|phases| {
            phases
                .iter()
                .map(|p| {
                    format!(
                        "{} {:.1} s",
                        p["phase"].as_str().unwrap_or("?"),
                        p["seconds"].as_f64().unwrap_or(0.0)
                    )
                })
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

/// Runs `keel recover batch MAPPING --yes --json`; the rows, the exit code and the wall time.
fn batch(server: &ServerProc, mapping: &Path) -> (Vec<Value>, Option<i32>, f64, String) {
    let t = Instant::now();
    let out = Command::new(KEEL)
        .args(["recover", "batch"])
        .arg(mapping)
        .args(["--yes", "--json", "--timeout", "1500"])
        .args(["--server", &server.url])
        .args(["--token", server.admin.as_deref().expect("admin")])
        .arg("--ca")
        .arg(server.ca())
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .expect("keel recover batch");
    let took = t.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let rows: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("batch output is not JSON ({e}):\n{stderr}"));
    (
        rows.as_array().cloned().unwrap_or_default(),
        out.status.code(),
        took,
        stderr,
    )
}

#[test]
fn a_batch_recovers_three_hosts_at_once_and_reports_the_impossible_fourth() {
    if let Some(why) = missing() {
        note(&format!(
            "skipped: needs root, debootstrap, loop devices with partx and QEMU ({why})"
        ));
        return;
    }
    let (profile, key) = source_profile();
    let tree = tree_tarball(&profile, &key);
    let scratch = Scratch::new("keel-batch-");
    let dir = scratch.path();
    let server = ServerProc::start(&dir.join("server"));
    let api = Api::new(&server);
    // Light recoveries: the tree laid down from a tarball, no data restore.
    let tree_arg = tree.display().to_string();
    let light = ["--no-data", "--tree", tree_arg.as_str()];

    // One alone first, for the comparison.
    upload_as(&server, "solo", &profile, 0);
    let img = dir.join("solo.img");
    blank(&img, 4 * GIB);
    let mut solo = Machine::start(&server, "m-solo", &img, dir, &light);
    api.machines(1);
    let mapping = dir.join("solo.toml");
    fs::write(
        &mapping,
        "[[recovery]]\nhost = \"solo\"\nmachine = \"m-solo\"\n",
    )
    .expect("mapping");
    let (rows, code, single, stderr) = batch(&server, &mapping);
    assert_eq!(code, Some(0), "{rows:?}\n{stderr}\n{}", solo.log());
    assert_eq!(rows[0]["status"], "done", "{:#}", rows[0]);
    note(&format!(
        "alone: {}",
        phase_times(&rows[0]["recovery"]["report"])
    ));
    solo.wait(Duration::from_secs(60));
    drop(solo);

    // Three at once, and a fourth whose disk is far too small.
    let mut machines = Vec::new();
    let mut text = String::new();
    for (copy, (host, size)) in [
        ("web-a", 4 * GIB),
        ("web-b", 4 * GIB),
        ("web-c", 4 * GIB),
        ("web-d", 256 << 20),
    ]
    .into_iter()
    .enumerate()
    {
        upload_as(&server, host, &profile, copy as i64 + 1);
        let img = dir.join(format!("{host}.img"));
        blank(&img, size);
        let name = format!("m-{host}");
        machines.push(Machine::start(&server, &name, &img, dir, &light));
        let _ = write!(
            text,
            "[[recovery]]\nhost = \"{host}\"\nmachine = \"{name}\"\n\n"
        );
    }
    api.machines(5);
    let mapping = dir.join("batch.toml");
    fs::write(&mapping, text).expect("mapping");
    let (rows, code, three, stderr) = batch(&server, &mapping);
    let logs: String = machines.iter().map(Machine::log).collect();
    note(&stderr);
    assert_eq!(code, Some(1), "one was impossible: {rows:#?}\n{logs}");
    assert_eq!(rows.len(), 4);
    for row in &rows[..3] {
        assert_eq!(row["status"], "done", "{row:#}\n{logs}");
        note(&format!(
            "{}: {}",
            row["host"].as_str().unwrap_or("?"),
            phase_times(&row["recovery"]["report"])
        ));
        let report = &row["recovery"]["report"];
        assert_eq!(report["ok"], true, "{report:#}");
        assert_eq!(report["verify"]["unexpected"], json!([]), "{report:#}");
    }
    assert_eq!(rows[3]["status"], "impossible", "{:#}", rows[3]);
    assert!(
        rows[3]["refused"]
            .as_str()
            .is_some_and(|r| r.contains("cannot be recovered")),
        "{:#}",
        rows[3]
    );
    assert!(
        stderr.contains("HOST") && stderr.contains("web-b"),
        "no progress table: {stderr}"
    );
    let ratio = three / single;
    note(&format!(
        "batch recovery: one host alone {single:.1} s; three at once {three:.1} s \
         ({ratio:.2} × one alone; target ≤ 1.5)"
    ));
}

// ------------------------------------------------------------------ the web UI's pages

/// A curl client with its own cookie jar, trusting only the server's CA.
struct Session<'a> {
    srv: &'a ServerProc,
    jar: tempfile::TempDir,
}

impl Session<'_> {
    /// GET, or POST when `form` is given: (status, body, where a redirect points).
    fn call(&self, path: &str, form: Option<&[(&str, &str)]>) -> (u16, String, String) {
        let jar = self.jar.path().join("cookies");
        let mut cmd = Command::new("curl");
        cmd.args([
            "-sS",
            "--max-time",
            "20",
            "-w",
            "\n%{http_code} %{redirect_url}",
        ])
        .arg("--cacert")
        .arg(self.srv.ca())
        .arg("-b")
        .arg(&jar)
        .arg("-c")
        .arg(&jar);
        for (k, v) in form.unwrap_or_default() {
            cmd.arg("--data-urlencode").arg(format!("{k}={v}"));
        }
        let out = cmd
            .arg(format!("{}{path}", self.srv.url))
            .output()
            .expect("run curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, last) = text.rsplit_once('\n').unwrap_or(("", "0"));
        let (status, location) = last.split_once(' ').unwrap_or((last, ""));
        let location = location.trim().replace(&self.srv.url, "");
        (
            status.trim().parse().unwrap_or(0),
            body.to_string(),
            location,
        )
    }

    fn csrf(&self) -> String {
        let (status, body, _) = self.call("/ui/recoveries", None);
        assert_eq!(status, 200, "{body}");
        csrf_field(&body)
    }

    /// Logs in through the login page's form, with its token.
    fn login(&self, name: &str, password: &str) {
        let (status, page, _) = self.call("/ui/login", None);
        assert_eq!(status, 200, "{page}");
        let token = csrf_field(&page);
        let (status, body, _) = self.call(
            "/ui/login",
            Some(&[("csrf", &token), ("name", name), ("password", password)]),
        );
        assert_eq!(status, 303, "login as {name}: {body}");
    }
}

fn csrf_field(page: &str) -> String {
    page.split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("a csrf field")
        .to_string()
}

fn add_user(data: &Path, name: &str, role: &str, password: &str) {
    let mut child = Command::new(KEEL)
        .args(["users", "add", name, "--role", role, "--data"])
        .arg(data)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("keel users add");
    std::io::Write::write_all(
        child.stdin.as_mut().expect("stdin"),
        format!("{password}\n").as_bytes(),
    )
    .expect("password");
    assert!(child.wait().expect("keel users add").success());
}

#[test]
fn the_recovery_pages_plan_start_and_follow_recoveries() {
    if crate::support::which("curl").is_none() {
        note("skipped: needs curl");
        return;
    }
    let data = tempfile::tempdir().expect("data");
    let server = ServerProc::start(data.path());
    let api = Api::new(&server);
    add_user(data.path(), "ada", "admin", "correct horse battery");
    add_user(data.path(), "rob", "read-only", "read only please");
    let mut profile = keel_recover::sample::bios_ext4_profile();
    profile.meta.machine_id = "4b45454c00000000000000000000ab01".into();
    let file = keel_profile::ProfileFile {
        profile,
        blobs: std::collections::BTreeMap::new(),
        signature: None,
    };
    let path = data.path().join("db.keel");
    fs::write(&path, file.encode().expect("encode")).expect("profile");
    for (copy, host) in ["db-1", "db-2"].into_iter().enumerate() {
        upload_as(&server, host, &path, copy as i64);
    }
    // Two machines as `keel rescue --server` registers them (no process needed for pages).
    for (name, size) in [
        ("rescue-a", 40 * GIB),
        ("rescue-b", 40 * GIB),
        ("rescue-tiny", GIB),
    ] {
        let disks = vec![keel_recover::TargetDisk::image(
            format!("/images/{name}.img"),
            size,
        )];
        let (status, v) = api.call(
            "POST",
            "/api/v1/machines/register",
            Some(&json!({ "name": name, "inventory": { "disks": disks, "firmware": "bios" } })),
        );
        assert_eq!(status, 201, "{v}");
    }

    // Nobody logged in: the page sends to the login page, a change is refused.
    let anon = Session {
        srv: &server,
        jar: tempfile::tempdir().expect("jar"),
    };
    let (status, _, to) = anon.call("/ui/recoveries", None);
    assert_eq!((status, to.as_str()), (303, "/ui/login"));
    let (status, _, _) = anon.call("/ui/recoveries/plan", Some(&[("host", "db-1")]));
    assert_eq!(status, 401);

    // A read-only account sees the machines, and cannot plan.
    let rob = Session {
        srv: &server,
        jar: tempfile::tempdir().expect("jar"),
    };
    rob.login("rob", "read only please");
    let (status, body, _) = rob.call("/ui/recoveries", None);
    assert_eq!(status, 200);
    assert!(
        body.contains("rescue-a") && !body.contains("plan-form"),
        "{body}"
    );
    let csrf = rob.csrf();
    let (status, _, _) = rob.call(
        "/ui/recoveries/plan",
        Some(&[("csrf", &csrf), ("host", "db-1"), ("machine", "rescue-a")]),
    );
    assert_eq!(status, 403);

    // Point and click: host and machine → the plan → the typed host name → started.
    let ada = Session {
        srv: &server,
        jar: tempfile::tempdir().expect("jar"),
    };
    ada.login("ada", "correct horse battery");
    let csrf = ada.csrf();
    let (status, _, to) = ada.call(
        "/ui/recoveries/plan",
        Some(&[("csrf", &csrf), ("host", "db-1"), ("machine", "rescue-a")]),
    );
    assert_eq!(status, 303);
    assert!(to.starts_with("/ui/recoveries/"), "{to}");
    let (status, body, _) = ada.call(&to, None);
    assert_eq!(status, 200);
    assert!(
        body.contains("rescue-a.img") && body.contains("start-form"),
        "{body}"
    );
    let start = format!("{to}/start");
    let (status, _, back) = ada.call(&start, Some(&[("csrf", &csrf), ("confirm", "db-2")]));
    assert_eq!(status, 303);
    let (_, body, _) = ada.call(&back, None);
    assert!(body.contains("confirm with the host"), "{body}");
    assert!(body.contains("<strong>planned</strong>"), "{body}");
    let (status, _, back) = ada.call(&start, Some(&[("csrf", &csrf), ("confirm", "db-1")]));
    assert_eq!(status, 303);
    let (_, body, _) = ada.call(&back, None);
    assert!(body.contains("<strong>queued</strong>"), "{body}");
    assert!(body.contains("http-equiv=\"refresh\""), "{body}");

    // A batch: two pairs, one impossible; the possible one is shown with the refusal.
    let (status, _, to) = ada.call(
        "/ui/recoveries/plan",
        Some(&[
            ("csrf", &csrf),
            ("mapping", "db-2 rescue-b\ndb-1 rescue-tiny\n"),
        ]),
    );
    assert_eq!(status, 303);
    assert!(to.starts_with("/ui/recoveries/batch?ids="), "{to}");
    let (status, body, _) = ada.call(&to, None);
    assert_eq!(status, 200);
    assert!(body.contains("cannot be recovered"), "{body}");
    assert!(body.contains("batch-start-form"), "{body}");
    let ids = to
        .split("ids=")
        .nth(1)
        .and_then(|r| r.split('&').next())
        .unwrap_or("");
    let (status, _, back) = ada.call(
        "/ui/recoveries/batch/start",
        Some(&[("csrf", &csrf), ("ids", ids), ("confirm", "db-2")]),
    );
    assert_eq!(status, 303);
    let (_, body, _) = ada.call(&back, None);
    assert!(body.contains("1 recovery started"), "{body}");
    let (_, list) = api.call("GET", "/api/v1/recoveries", None);
    let statuses: Vec<&str> = list
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|r| r["status"].as_str())
        .collect();
    assert_eq!(statuses, ["queued", "queued"], "{list}");

    // The CLI's batch without --yes: every plan shown, the impossible one named, none started.
    let mapping = data.path().join("batch.toml");
    fs::write(
        &mapping,
        "[[recovery]]\nhost = \"db-1\"\nmachine = \"rescue-a\"\n\n\
         [[recovery]]\nhost = \"db-2\"\nmachine = \"rescue-tiny\"\n",
    )
    .expect("mapping");
    let out = Command::new(KEEL)
        .args(["recover", "batch"])
        .arg(&mapping)
        .args(["--server", &server.url])
        .args(["--token", server.admin.as_deref().expect("admin")])
        .arg("--ca")
        .arg(server.ca())
        .output()
        .expect("keel recover batch");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("== db-1 → rescue-a") && text.contains("Disk map"),
        "{text}"
    );
    assert!(
        text.contains("== db-2 → rescue-tiny\nIMPOSSIBLE: "),
        "{text}"
    );
    assert!(text.contains("nothing started: add --yes"), "{text}");

    // The queued recovery onto rescue-a is cancelled by the admin, not by the read-only user;
    // the machine is free again.
    let first = list.as_array().expect("list").last().expect("the first")["id"]
        .as_i64()
        .expect("id");
    let cancel = format!("/ui/recoveries/{first}/cancel");
    let (status, _, _) = rob.call(&cancel, Some(&[("csrf", &rob.csrf())]));
    assert_eq!(status, 403);
    let (_, body, _) = ada.call(&format!("/ui/recoveries/{first}"), None);
    assert!(body.contains("cancel-form"), "{body}");
    let (status, _, back) = ada.call(&cancel, Some(&[("csrf", &csrf)]));
    assert_eq!(status, 303);
    let (_, body, _) = ada.call(&back, None);
    assert!(
        body.contains("<strong>cancelled</strong>") && !body.contains("cancel-form"),
        "{body}"
    );
    let (_, m) = api.call("GET", "/api/v1/machines/rescue-a", None);
    assert_eq!(m["busy_with"], Value::Null, "{m}");
}
