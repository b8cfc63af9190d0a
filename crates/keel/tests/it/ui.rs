//! The web UI in a real headless Chromium, driven through `chromedriver` (the `WebDriver`
//! protocol), against a real server process whose hosts' agents really ran: log in, the
//! fleet, a diff with the planted change, acknowledging an alert, a broken rule refused then
//! a good one saved and firing on the next profile, a schedule changed. Every page is saved
//! as a screenshot under `target/keel-test-artifacts/screenshots/`. Without Chromium and
//! `chromedriver` (Debian's `chromium` and `chromium-driver`) the browser test says so on
//! stderr and passes.
//!
//! The permission test calls the UI's endpoints directly with curl: without a session, with a
//! read-only session, and with a wrong CSRF token, nothing changes.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tempfile::TempDir;

use crate::support::{
    agent_cmd, keel, push, root_named, run_with_timeout, which, ServerProc, KEEL,
};

const ADMIN_PASSWORD: &str = "correct horse battery";
const READER_PASSWORD: &str = "read only please";

/// Where screenshots go.
fn screenshot_dir() -> PathBuf {
    let dir = std::env::var_os("KEEL_TEST_ARTIFACTS").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/keel-test-artifacts"),
        PathBuf::from,
    );
    dir.join("screenshots")
}

/// `keel users add NAME --role ROLE --data DIR` with the password on stdin.
fn add_user(data: &Path, name: &str, role: &str, password: &str) {
    let args = [
        "users",
        "add",
        name,
        "--role",
        role,
        "--data",
        data.to_str().unwrap(),
    ];
    run_with_timeout(
        KEEL,
        &args,
        Some(format!("{password}\n").as_bytes()),
        Duration::from_secs(60),
    )
    .expect_ok();
}

/// A server with two enrolled hosts, alpha and beta, each with two profiles from a real
/// agent; beta's second profile has a new uid-0 account (mallory), which fires the built-in
/// `uid0-account` rule. Also an admin (ada) and a read-only account (rob).
struct Fleet {
    srv: ServerProc,
    admin: String,
    roots: Vec<TempDir>,
    states: Vec<TempDir>,
    _data: TempDir,
}

impl Fleet {
    fn start() -> Fleet {
        let data = TempDir::new().unwrap();
        let srv = ServerProc::start(data.path());
        let admin = srv.admin.clone().expect("admin token");
        let enroll = srv.enroll.clone().expect("enrollment token");
        add_user(data.path(), "ada", "admin", ADMIN_PASSWORD);
        add_user(data.path(), "rob", "read-only", READER_PASSWORD);
        let mut roots = Vec::new();
        let mut states = Vec::new();
        for (i, name) in ["alpha", "beta"].iter().enumerate() {
            let root = root_named(name, &format!("{:032x}", i + 1));
            let state = TempDir::new().unwrap();
            keel(&agent_cmd(
                state.path(),
                root.path(),
                &["enroll", "--server", &srv.url, "--token", &enroll],
            ))
            .expect_ok();
            let (code, report) = push(state.path(), root.path());
            assert_eq!(code, Some(0), "{report}");
            roots.push(root);
            states.push(state);
        }
        let fleet = Fleet {
            srv,
            admin,
            roots,
            states,
            _data: data,
        };
        fleet.add_account(1, "mallory:x:0:0::/root:/bin/bash");
        fleet
    }

    /// Adds a line to host `i`'s /etc/passwd and pushes a new profile.
    fn add_account(&self, i: usize, line: &str) {
        let passwd = self.roots[i].path().join("etc/passwd");
        let mut text = std::fs::read_to_string(&passwd).unwrap();
        text.push_str(line);
        text.push('\n');
        std::fs::write(&passwd, text).unwrap();
        let (code, report) = push(self.states[i].path(), self.roots[i].path());
        assert_eq!(code, Some(0), "{report}");
    }

    fn api(&self, path: &str) -> Value {
        let (status, body) = self.srv.get(path, Some(&self.admin));
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    fn firing(&self) -> Vec<Value> {
        self.api("/api/v1/alerts?status=firing")
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

// ------------------------------------------------------------------ curl with a cookie jar

/// A curl client with its own cookie jar, trusting only the server's CA.
struct Curl<'a> {
    srv: &'a ServerProc,
    jar: TempDir,
}

impl<'a> Curl<'a> {
    fn new(srv: &'a ServerProc) -> Self {
        Curl {
            srv,
            jar: TempDir::new().unwrap(),
        }
    }

    /// GET or POST (when `form` is given); returns (status, body). Redirects are not followed.
    fn call(&self, path: &str, form: Option<&[(&str, &str)]>) -> (u16, String) {
        let jar = self.jar.path().join("cookies");
        let mut cmd = Command::new("curl");
        cmd.args([
            "-sS",
            "--max-time",
            "20",
            "-w",
            "\n%{http_code}",
            "--cacert",
        ])
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
        let (body, status) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (status.trim().parse().unwrap_or(0), body.to_string())
    }

    fn login(&self, name: &str, password: &str) {
        let (status, body) = self.post_login(name, password);
        assert_eq!(status, 303, "login as {name}: {body}");
    }

    /// Opens the login page (which gives the login form's token), then logs in with it.
    fn post_login(&self, name: &str, password: &str) -> (u16, String) {
        let (status, page) = self.call("/ui/login", None);
        assert_eq!(status, 200, "{page}");
        let token = field(&page, "csrf");
        self.call(
            "/ui/login",
            Some(&[("csrf", &token), ("name", name), ("password", password)]),
        )
    }

    /// The CSRF token of the session, read from a page's forms.
    fn csrf(&self) -> String {
        let (status, body) = self.call("/ui/alerts", None);
        assert_eq!(status, 200, "{body}");
        body.split("name=\"csrf\" value=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .expect("a csrf field")
            .to_string()
    }
}

#[test]
fn unauthenticated_and_read_only_users_cannot_change_anything() {
    if which("curl").is_none() {
        crate::support::skip("needs curl to call the UI");
        return;
    }
    let fleet = Fleet::start();
    let alert = fleet
        .firing()
        .into_iter()
        .find(|a| a["rule"] == "uid0-account")
        .expect("the uid0 alert");
    let id = alert["id"].as_i64().unwrap();
    let schedule_before = fleet.api("/api/v1/hosts/beta")["schedule"].clone();
    let rule = [
        ("name", "sneaky"),
        ("severity", "info"),
        ("when", "true"),
        ("message", "x"),
        ("enabled", "on"),
        ("action", "save"),
    ];
    let schedule = [("kind", "interval"), ("expr", "5m"), ("grace", "1m")];
    let ack = format!("/ui/alerts/{id}/ack");
    let resolve = format!("/ui/alerts/{id}/resolve");
    let back_out = [
        ("to", "1"),
        ("from", "2"),
        ("only_users_1", "users.users:mallory"),
    ];
    let posts: [(&str, &[(&str, &str)]); 8] = [
        (&ack, &[("note", "")]),
        (&resolve, &[("note", "")]),
        ("/ui/rules", &rule),
        ("/ui/hosts/beta/schedule", &schedule),
        ("/ui/schedules", &schedule),
        ("/ui/hosts/beta/rollback", &back_out),
        ("/ui/rollbacks/1/approve", &[("note", "")]),
        ("/ui/rollbacks/1/reject", &[("note", "")]),
    ];
    let with = |csrf: &str, fields: &[(&str, &str)]| -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = fields
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect();
        v.push(("csrf".into(), csrf.to_string()));
        v
    };

    // Nobody logged in: pages redirect to the login page, changes are refused with 401.
    let anon = Curl::new(&fleet.srv);
    let (status, _) = anon.call("/ui/", None);
    assert_eq!(status, 303);
    for (path, fields) in &posts {
        let (status, body) = anon.call(path, Some(fields));
        assert_eq!(status, 401, "anonymous POST {path}: {body}");
    }

    // A read-only account sees the pages, with its own valid CSRF token, and is refused.
    let rob = Curl::new(&fleet.srv);
    rob.login("rob", READER_PASSWORD);
    let (status, page) = rob.call("/ui/", None);
    assert_eq!(status, 200);
    assert!(page.contains("beta"), "{page}");
    let (_, alerts_page) = rob.call("/ui/alerts", None);
    assert!(
        !alerts_page.contains("Acknowledge"),
        "read-only users get no buttons"
    );
    let csrf = rob.csrf();
    for (path, fields) in &posts {
        let fields = with(&csrf, fields);
        let pairs: Vec<(&str, &str)> = fields
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let (status, body) = rob.call(path, Some(&pairs));
        assert_eq!(status, 403, "read-only POST {path}: {body}");
        assert!(body.contains("Read-only"), "{body}");
    }

    // An admin with a wrong CSRF token (a forged form) is refused too.
    let ada = Curl::new(&fleet.srv);
    ada.login("ada", ADMIN_PASSWORD);
    for (path, fields) in &posts {
        let fields = with("0".repeat(64).as_str(), fields);
        let pairs: Vec<(&str, &str)> = fields
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let (status, body) = ada.call(path, Some(&pairs));
        assert_eq!(status, 403, "forged POST {path}: {body}");
    }
    // A wrong password is refused.
    let eve = Curl::new(&fleet.srv);
    let (status, _) = eve.post_login("ada", "wrong password");
    assert_eq!(status, 401);
    // A login posted without the login page's token (from another site, which cannot read
    // or send the token's cookie) is refused even with the right password, and starts no
    // session.
    let other_site = Curl::new(&fleet.srv);
    for token in [None, Some("0".repeat(64))] {
        let mut form = vec![("name", "ada"), ("password", ADMIN_PASSWORD)];
        if let Some(t) = &token {
            form.push(("csrf", t.as_str()));
        }
        let (status, body) = other_site.call("/ui/login", Some(&form));
        assert_eq!(
            status, 403,
            "login without the form's token ({token:?}): {body}"
        );
    }
    let (status, _) = other_site.call("/ui/alerts", None);
    assert_eq!(status, 303, "no session: sent to the login page");

    // Nothing changed.
    let now = fleet
        .firing()
        .into_iter()
        .find(|a| a["id"] == id)
        .expect("still firing");
    assert!(now["acked_by"].is_null(), "{now}");
    let rules = fleet.api("/api/v1/rules");
    assert!(
        !rules.to_string().contains("sneaky"),
        "no rule was saved: {rules}"
    );
    assert_eq!(fleet.api("/api/v1/hosts/beta")["schedule"], schedule_before);
    assert_eq!(
        fleet.api("/api/v1/rollbacks"),
        json!([]),
        "no rollback was proposed"
    );

    // The admin's own token works: the same change goes through.
    let csrf = ada.csrf();
    let (status, body) = ada.call(&ack, Some(&[("csrf", csrf.as_str())]));
    assert_eq!(status, 303, "{body}");
    let now = fleet.firing().into_iter().find(|a| a["id"] == id).unwrap();
    assert_eq!(now["acked_by"], "ada");
}

// ------------------------------------------------------------------ WebDriver

/// Why the browser test cannot run here, if it cannot.
pub(crate) fn browser_unsupported() -> Option<String> {
    for tool in ["chromium", "chromedriver", "curl"] {
        if which(tool).is_none() {
            return Some(format!(
                "`{tool}` is not installed (Debian packages chromium, chromium-driver, curl)"
            ));
        }
    }
    None
}

/// A chromedriver process, killed when dropped.
pub(crate) struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    pub(crate) fn start() -> Driver {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(which("chromedriver").unwrap())
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let driver = Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while driver.request("GET", "/status", None).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        driver
    }

    fn request(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        let url = format!("{}{path}", self.url);
        let result = match method {
            "GET" => agent.get(&url).call(),
            "DELETE" => agent.delete(&url).call(),
            _ => agent
                .post(&url)
                .header("Content-Type", "application/json")
                .send(body.unwrap_or(&json!({})).to_string()),
        };
        let mut response = result.map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .with_config()
            .limit(64 * 1024 * 1024)
            .read_to_string()
            .map_err(|e| e.to_string())?;
        let v: Value = serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))?;
        if status >= 400 {
            return Err(format!("{method} {path}: {status} {v}"));
        }
        Ok(v["value"].clone())
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // Only the process this value started, by its handle.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One browser session, closed when dropped.
pub(crate) struct Browser<'a> {
    driver: &'a Driver,
    id: String,
    base: String,
    _profile: TempDir,
}

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

impl<'a> Browser<'a> {
    pub(crate) fn open(driver: &'a Driver, base: &str) -> Browser<'a> {
        let profile = TempDir::new().unwrap();
        let args = [
            "--headless".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-dev-shm-usage".into(),
            "--window-size=1280,900".into(),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        // The server's certificate comes from its own CA, which this throwaway profile does
        // not know: WebDriver's acceptInsecureCerts, for this session only.
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "acceptInsecureCerts": true,
            "goog:chromeOptions": { "binary": which("chromium").unwrap(), "args": args },
        }}});
        let v = driver
            .request("POST", "/session", Some(&caps))
            .unwrap_or_else(|e| panic!("cannot start chromium: {e}"));
        Browser {
            driver,
            id: v["sessionId"].as_str().expect("a session id").to_string(),
            base: base.to_string(),
            _profile: profile,
        }
    }

    fn cmd(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        self.driver
            .request(method, &format!("/session/{}{path}", self.id), body)
            .unwrap_or_else(|e| panic!("webdriver: {e}"))
    }

    pub(crate) fn go(&self, path: &str) {
        self.cmd(
            "POST",
            "/url",
            Some(&json!({ "url": format!("{}{path}", self.base) })),
        );
    }

    pub(crate) fn url(&self) -> String {
        self.cmd("GET", "/url", None)
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    pub(crate) fn source(&self) -> String {
        self.cmd("GET", "/source", None)
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    fn find(&self, css: &str) -> String {
        let v = self.cmd(
            "POST",
            "/element",
            Some(&json!({ "using": "css selector", "value": css })),
        );
        v[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {v}\n{}", self.source()))
            .to_string()
    }

    /// Clicks a link or a submit button and waits until the next page has loaded.
    pub(crate) fn click(&self, css: &str) {
        let page = self.find("html");
        let el = self.find(css);
        self.cmd("POST", &format!("/element/{el}/click"), Some(&json!({})));
        let deadline = Instant::now() + Duration::from_secs(20);
        // The old page's root goes stale once the new page has replaced it.
        while self
            .driver
            .request(
                "GET",
                &format!("/session/{}/element/{page}/name", self.id),
                None,
            )
            .is_ok()
        {
            assert!(Instant::now() < deadline, "clicking {css} loaded no page");
            std::thread::sleep(Duration::from_millis(50));
        }
        while self
            .cmd(
                "POST",
                "/execute/sync",
                Some(&json!({ "script": "return document.readyState", "args": [] })),
            )
            .as_str()
            != Some("complete")
        {
            assert!(
                Instant::now() < deadline,
                "the page after {css} did not load"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Clicks something that loads no page (an option of a list).
    pub(crate) fn choose(&self, css: &str) {
        let el = self.find(css);
        self.cmd("POST", &format!("/element/{el}/click"), Some(&json!({})));
    }

    pub(crate) fn fill(&self, css: &str, text: &str) {
        let el = self.find(css);
        self.cmd("POST", &format!("/element/{el}/clear"), Some(&json!({})));
        self.cmd(
            "POST",
            &format!("/element/{el}/value"),
            Some(&json!({ "text": text })),
        );
    }

    pub(crate) fn screenshot(&self, name: &str) {
        use base64::Engine as _;
        let png = self.cmd("GET", "/screenshot", None);
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap_or(""))
            .expect("a base64 PNG");
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), bytes).unwrap();
    }

    /// Waits until the page's source contains `text`, reloading `path` between looks.
    pub(crate) fn wait_for_text(&self, path: &str, text: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            self.go(path);
            if self.source().contains(text) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{path} never showed {text:?}:\n{}",
                self.source()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

impl Drop for Browser<'_> {
    fn drop(&mut self) {
        let _ = self
            .driver
            .request("DELETE", &format!("/session/{}", self.id), None);
    }
}

#[test]
#[allow(clippy::too_many_lines)]
fn a_browser_logs_in_diffs_acknowledges_and_saves_a_rule_that_fires() {
    if let Some(why) = browser_unsupported() {
        #[allow(clippy::print_stderr, reason = "a skipped test must say why")]
        {
            eprintln!("skipped: the web UI browser test needs Chromium and chromedriver ({why})");
        }
        return;
    }
    let fleet = Fleet::start();
    let driver = Driver::start();
    let b = Browser::open(&driver, &fleet.srv.url);

    // Not logged in: the login page.
    b.go("/ui/");
    assert!(b.url().ends_with("/ui/login"), "{}", b.url());
    b.screenshot("login");
    b.fill("#name", "ada");
    b.fill("#password", "not the password");
    b.click("#login");
    assert!(b.source().contains("Wrong name or password"));
    b.fill("#name", "ada");
    b.fill("#password", ADMIN_PASSWORD);
    b.click("#login");

    // The fleet: both hosts, up, with a profile, beta with its open alert.
    let fleet_page = b.source();
    assert!(b.url().ends_with("/ui/"), "{} {}", b.url(), b.source());
    for name in ["alpha", "beta"] {
        assert!(fleet_page.contains(&format!(">{name}</a>")), "{fleet_page}");
    }
    assert!(fleet_page.contains("class=\"state up\""), "{fleet_page}");
    assert!(fleet_page.contains("ada"), "the user is shown");
    b.screenshot("fleet");

    // Beta's timeline; compare its two profiles: the planted account shows.
    b.click("a[href='/ui/hosts/beta']");
    let host_page = b.source();
    assert!(host_page.contains("id=\"timeline\""), "{host_page}");
    b.screenshot("host");
    b.click("#diff");
    let diff_page = b.source();
    let diff_url = b.url();
    assert!(diff_url.contains("/ui/hosts/beta/diff?"), "{diff_url}");
    assert!(diff_page.contains("mallory"), "{diff_page}");
    assert!(diff_page.contains("<h2>users</h2>"), "{diff_page}");
    b.screenshot("diff");
    b.go("/ui/hosts/beta?section=users");
    assert!(b.source().contains("mallory"));
    b.screenshot("host-users");

    // Acknowledge the uid-0 alert.
    b.go("/ui/alerts");
    assert!(b.source().contains("uid0-account"));
    b.screenshot("alerts");
    b.click("button.ack");
    let alerts_page = b.source();
    assert!(alerts_page.contains("acknowledged by ada"), "{alerts_page}");
    b.screenshot("alerts-acknowledged");
    let acked = fleet
        .firing()
        .into_iter()
        .find(|a| a["rule"] == "uid0-account")
        .unwrap();
    assert_eq!(acked["acked_by"], "ada");

    // A broken rule is refused with the reason; the fixed one is tested, then saved.
    b.go("/ui/rules");
    b.fill("#rule-name", "ops-account");
    b.fill(
        "#rule-when",
        r#"added["users.users"].exists(u, u.name == "ops""#,
    );
    b.fill("#rule-message", "an ops account was added");
    b.fill("input[name=host]", "alpha");
    b.click("#rule-save");
    let refused = b.source();
    assert!(refused.contains("id=\"refused\""), "{refused}");
    b.screenshot("rules-refused");
    assert!(
        !fleet
            .api("/api/v1/rules")
            .to_string()
            .contains("ops-account"),
        "a refused rule is not saved"
    );
    b.fill(
        "#rule-when",
        r#"added["users.users"].exists(u, u.name == "ops")"#,
    );
    b.click("#rule-test");
    assert!(b.source().contains("id=\"tested\""), "{}", b.source());
    b.click("#rule-save");
    let saved = b.source();
    assert!(saved.contains("Rule ops-account saved"), "{saved}");
    b.screenshot("rules");

    // The next profile with an ops account fires the new rule.
    fleet.add_account(0, "ops:x:1001:1001::/home/ops:/bin/sh");
    b.wait_for_text("/ui/alerts", "ops-account", Duration::from_secs(20));
    assert!(b.source().contains("an ops account was added"));
    b.screenshot("alerts-new-rule");

    // Schedules: change alpha's in the page.
    b.go("/ui/schedules");
    b.screenshot("schedules");
    b.fill("#schedule-alpha input[name=expr]", "15m");
    b.click("#schedule-alpha button");
    assert!(b.source().contains("Schedule of alpha saved"));
    assert_eq!(fleet.api("/api/v1/hosts/alpha")["schedule"]["expr"], "15m");

    // Back out the planted account from the diff: a plan is shown, approval is recorded.
    let path = &diff_url[diff_url.find("/ui/").expect("a UI address")..];
    b.go(path);
    b.choose("input[value='users.users:mallory']");
    b.click("#rollback");
    let planned = b.source();
    assert!(b.url().contains("/ui/rollbacks/"), "{}", b.url());
    assert!(planned.contains("<strong>proposed</strong>"), "{planned}");
    assert!(
        planned.contains("mallory"),
        "the plan names the account: {planned}"
    );
    b.screenshot("rollback-plan");
    b.click("#approve");
    let approved = b.source();
    assert!(approved.contains("Approved"), "{approved}");
    assert!(approved.contains("by ada"), "{approved}");
    b.screenshot("rollback-approved");
    let jobs = fleet.api("/api/v1/rollbacks?host=beta");
    let job = &jobs[0];
    assert_eq!(job["decided_by"], "ada", "{jobs}");
    assert_eq!(job["created_by"], "ada", "{jobs}");
    assert_eq!(job["selection"], json!(["users.users:mallory"]), "{jobs}");
    assert!(
        ["approved", "running", "done", "failed"].contains(&job["status"].as_str().unwrap_or("")),
        "{jobs}"
    );
}

#[test]
fn ui_accounts_are_managed_on_the_data_directory() {
    let dir = TempDir::new().unwrap();
    let data = dir.path().to_str().unwrap();
    let users = |args: &[&str], stdin: Option<&str>| {
        let mut v = vec!["users"];
        v.extend_from_slice(args);
        v.extend(["--data", data]);
        run_with_timeout(KEEL, &v, stdin.map(str::as_bytes), Duration::from_secs(60))
    };
    let r = users(&["list"], None);
    r.expect_code(2);
    assert!(r.stderr.contains("hint:"), "{}", r.stderr);

    keel_store::SqliteStore::open(&dir.path().join("keel.db")).unwrap();
    users(&["add", "ada", "--role", "admin"], Some("long enough\n")).expect_ok();
    let r = users(&["add", "ada", "--role", "admin"], Some("long enough\n"));
    r.expect_code(2);
    assert!(r.stderr.contains("already exists"), "{}", r.stderr);
    let r = users(&["add", "bob"], Some("short\n"));
    r.expect_code(2);
    assert!(r.stderr.contains("at least 8"), "{}", r.stderr);
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "from a file\n").unwrap();
    users(
        &["add", "bob", "--password-file", pw.to_str().unwrap()],
        None,
    )
    .expect_ok();
    users(
        &["add", "bob", "--role", "admin", "--update"],
        Some("a new one!\n"),
    )
    .expect_ok();
    let list = users(&["list", "--format", "json"], None);
    let list = list.expect_ok().json();
    assert_eq!(
        list,
        json!([
            { "id": 1, "name": "ada", "role": "admin", "created_at": list[0]["created_at"] },
            { "id": 2, "name": "bob", "role": "admin", "created_at": list[1]["created_at"] },
        ])
    );
    assert!(
        !list.to_string().contains("argon2"),
        "no password hash is printed"
    );
    users(&["delete", "bob"], None).expect_ok();
    users(&["delete", "bob"], None).expect_code(2);
    let text = users(&["list"], None).expect_ok().stdout_str();
    assert!(text.starts_with("ada "), "{text}");
}

/// The value of the hidden form field `name` in `page`.
fn field(page: &str, name: &str) -> String {
    page.split(&format!("name=\"{name}\" value=\""))
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap_or_else(|| panic!("no {name} field in {page}"))
        .to_string()
}
