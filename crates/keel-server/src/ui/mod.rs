//! The web UI: server-rendered pages under `/ui/` (minijinja templates compiled into the
//! binary from `templates/`, one small stylesheet, no JavaScript), for people who log in with
//! a UI account (`keel users add`). Every page calls the same functions as the JSON API.
//!
//! Adding a page (for instance recoveries):
//! - a template that starts with `{% extends "base.html" %}` and fills `{% block content %}`;
//!   add it to [`TEMPLATES`];
//! - an entry in [`NAV`] if it belongs in the navigation bar;
//! - a `GET` handler that calls [`Ui::viewer`] (a logged-in session or a redirect to the login
//!   page) and renders with [`Ui::page`], which passes the user, the CSRF token and the
//!   navigation to the layout;
//! - a `POST` handler that takes `Form<HashMap<String, String>>` and calls [`Ui::admin`]
//!   first: it checks the session, the form's `csrf` field and the admin role, and answers
//!   401 or 403 otherwise. Forms carry `<input type="hidden" name="csrf" value="{{ csrf }}">`.
//!   After a change, answer with [`see_other`] to a page, with a message in `?msg=` (pass
//!   `msg` to the template: the layout shows it);
//! - one `.route(...)` line in [`router`].
//!
//! The layout gets `user` (name, role), `admin` (true for the admin role: show buttons only
//! then; the server checks again), `csrf` and the navigation. Errors from the API's functions
//! become pages with [`Ui::error`]; the store's with `ApiError::from`.

mod auth;
mod recovery;

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::{Form, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use keel_store::{Role, SessionRecord, UserStore};
use minijinja::{context, Environment, Value};
use serde::Serialize;

pub use auth::hash_password;

use crate::api::{self, AppState, HostPatch, HostView};

/// Hosts per fleet page.
const FLEET_PAGE: u32 = 100;

/// The navigation bar: key, label, link.
pub const NAV: &[(&str, &str, &str)] = &[
    ("fleet", "Fleet", "/ui/"),
    ("alerts", "Alerts", "/ui/alerts"),
    ("rules", "Rules", "/ui/rules"),
    ("schedules", "Schedules", "/ui/schedules"),
    ("recoveries", "Recovery", "/ui/recoveries"),
];

/// Templates by name.
const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("../../templates/base.html")),
    ("login.html", include_str!("../../templates/login.html")),
    ("fleet.html", include_str!("../../templates/fleet.html")),
    ("host.html", include_str!("../../templates/host.html")),
    ("diff.html", include_str!("../../templates/diff.html")),
    ("alerts.html", include_str!("../../templates/alerts.html")),
    ("rules.html", include_str!("../../templates/rules.html")),
    (
        "schedules.html",
        include_str!("../../templates/schedules.html"),
    ),
    ("error.html", include_str!("../../templates/error.html")),
    (
        "recoveries.html",
        include_str!("../../templates/recoveries.html"),
    ),
    (
        "recovery.html",
        include_str!("../../templates/recovery.html"),
    ),
    (
        "recovery_batch.html",
        include_str!("../../templates/recovery_batch.html"),
    ),
    (
        "rollback.html",
        include_str!("../../templates/rollback.html"),
    ),
];

const CSS: &str = include_str!("../../static/keel.css");

/// What the UI's handlers share.
#[derive(Debug)]
pub(crate) struct Ui {
    /// The API's state: the store, the rules, the ingest pipeline.
    pub app: Arc<AppState>,
    /// Accounts and sessions.
    pub users: Arc<dyn UserStore>,
    env: Environment<'static>,
    limiter: auth::Limiter,
}

/// A submitted form's fields.
type Fields = HashMap<String, String>;

#[allow(
    clippy::result_large_err,
    reason = "the error is the response to send, made once per request"
)]
impl Ui {
    /// The UI over the API's state.
    pub fn new(app: Arc<AppState>, users: Arc<dyn UserStore>) -> Ui {
        let mut env = Environment::new();
        for (name, text) in TEMPLATES {
            env.add_template(name, text)
                .unwrap_or_else(|e| panic!("template {name}: {e}"));
        }
        env.add_filter("age", |ms: i64| age(crate::now_ms(), ms));
        env.add_filter("when", |ms: i64| {
            jiff::Timestamp::from_millisecond(ms).map_or_else(
                |_| ms.to_string(),
                |t| t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string(),
            )
        });
        Ui {
            app,
            users,
            env,
            limiter: auth::Limiter::default(),
        }
    }

    /// The request's session, or a redirect to the login page.
    pub fn viewer(&self, headers: &HeaderMap) -> Result<SessionRecord, Response> {
        auth::session(&*self.users, headers).ok_or_else(|| see_other("/ui/login"))
    }

    /// The session of a change: logged in (401), the form's CSRF token (403), an admin (403).
    pub fn admin(&self, headers: &HeaderMap, form: &Fields) -> Result<SessionRecord, Response> {
        let Some(s) = auth::session(&*self.users, headers) else {
            return Err(self.error(None, StatusCode::UNAUTHORIZED, "Log in first."));
        };
        let sent = form.get("csrf").map_or("", String::as_str);
        if !auth::same(sent, &s.csrf) {
            return Err(self.error(
                Some(&s),
                StatusCode::FORBIDDEN,
                "This form has expired (its CSRF token does not match your session). Reload the page and try again.",
            ));
        }
        if s.user.role != Role::Admin {
            return Err(self.error(
                Some(&s),
                StatusCode::FORBIDDEN,
                "Read-only accounts cannot change anything.",
            ));
        }
        Ok(s)
    }

    /// Renders `template` in the layout, with `page` marked in the navigation.
    pub fn page(
        &self,
        session: Option<&SessionRecord>,
        template: &str,
        page: &str,
        title: &str,
        ctx: Value,
    ) -> Response {
        self.render(StatusCode::OK, session, template, page, title, ctx)
    }

    fn render(
        &self,
        status: StatusCode,
        session: Option<&SessionRecord>,
        template: &str,
        page: &str,
        title: &str,
        ctx: Value,
    ) -> Response {
        let nav: Vec<Value> = NAV
            .iter()
            .map(|(key, label, href)| context! { key, label, href })
            .collect();
        let base = context! {
            title,
            page,
            nav,
            user => session.map(|s| context! { name => s.user.name, role => s.user.role.as_str() }),
            admin => session.is_some_and(|s| s.user.role == Role::Admin),
            csrf => session.map(|s| s.csrf.clone()),
        };
        let result = self
            .env
            .get_template(template)
            .and_then(|t| t.render(context! { ..ctx, ..base }));
        match result {
            Ok(html) => (
                status,
                [
                    (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                    (header::CACHE_CONTROL, "no-store"),
                ],
                [
                    (header::X_FRAME_OPTIONS, "DENY"),
                    (
                        header::CONTENT_SECURITY_POLICY,
                        "default-src 'self'; form-action 'self'; frame-ancestors 'none'",
                    ),
                ],
                html,
            )
                .into_response(),
            Err(e) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("template {template}: {e:#}"),
            )
                .into_response(),
        }
    }

    /// An error page.
    pub fn error(
        &self,
        session: Option<&SessionRecord>,
        status: StatusCode,
        message: &str,
    ) -> Response {
        self.render(
            status,
            session,
            "error.html",
            "",
            status.canonical_reason().unwrap_or("Error"),
            context! { message },
        )
    }

    fn api_error(&self, session: &SessionRecord, e: &api::ApiError) -> Response {
        self.error(Some(session), e.status(), e.message())
    }
}

/// A 303 redirect to `to`.
pub fn see_other(to: &str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, to.to_string())]).into_response()
}

/// `to` with a message for the next page.
fn with_msg(to: &str, msg: &str) -> String {
    let sep = if to.contains('?') { '&' } else { '?' };
    format!("{to}{sep}msg={}", encode(msg))
}

/// Back to `to` after a change: with a message when it was made, with the reason when it was
/// refused.
fn after<T>(to: &str, done: Result<T, api::ApiError>, msg: impl FnOnce(T) -> String) -> Response {
    match done {
        Ok(v) => see_other(&with_msg(to, &msg(v))),
        Err(e) => {
            let sep = if to.contains('?') { '&' } else { '?' };
            see_other(&format!("{to}{sep}error={}", encode(e.message())))
        }
    }
}

/// Percent-encodes a query value.
fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// "5 s ago", "3 min ago", "2 h ago", "4 d ago".
fn age(now: i64, ms: i64) -> String {
    let s = (now - ms).max(0) / 1000;
    match s {
        0..=59 => format!("{s} s ago"),
        60..=3599 => format!("{} min ago", s / 60),
        3600..=86_399 => format!("{} h ago", s / 3600),
        _ => format!("{} d ago", s / 86_400),
    }
}

/// The UI's routes.
pub fn router(ui: Arc<Ui>) -> Router {
    Router::new()
        .route("/", get(|| async { see_other("/ui/") }))
        .route("/ui", get(|| async { see_other("/ui/") }))
        .route("/ui/static/keel.css", get(css))
        .route("/ui/login", get(login_page).post(login))
        .route("/ui/logout", post(logout))
        .route("/ui/", get(fleet))
        .route("/ui/hosts/{name}", get(host))
        .route("/ui/hosts/{name}/diff", get(diff))
        .route("/ui/hosts/{name}/schedule", post(set_schedule))
        .route("/ui/hosts/{name}/rollback", post(propose_rollback))
        .route("/ui/rollbacks/{id}", get(rollback_page))
        .route("/ui/rollbacks/{id}/approve", post(approve_rollback))
        .route("/ui/rollbacks/{id}/reject", post(reject_rollback))
        .route("/ui/alerts", get(alerts))
        .route("/ui/alerts/{id}/ack", post(ack))
        .route("/ui/alerts/{id}/resolve", post(resolve))
        .route("/ui/rules", get(rules).post(rule_post))
        .route("/ui/schedules", get(schedules).post(group_schedule))
        .route("/ui/recoveries", get(recovery::index))
        .route("/ui/recoveries/plan", post(recovery::plan))
        .route("/ui/recoveries/batch", get(recovery::batch))
        .route("/ui/recoveries/batch/start", post(recovery::batch_start))
        .route("/ui/recoveries/{id}", get(recovery::show))
        .route("/ui/recoveries/{id}/start", post(recovery::start))
        .route("/ui/recoveries/{id}/cancel", post(recovery::cancel))
        .with_state(ui)
}

async fn css() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        CSS,
    )
        .into_response()
}

type Q = Query<HashMap<String, String>>;

fn q<'a>(query: &'a HashMap<String, String>, key: &str) -> Option<&'a str> {
    query.get(key).map(String::as_str).filter(|v| !v.is_empty())
}

// ------------------------------------------------------------------ login

async fn login_page(State(ui): State<Arc<Ui>>, headers: HeaderMap, Query(query): Q) -> Response {
    if auth::session(&*ui.users, &headers).is_some() {
        return see_other("/ui/");
    }
    let no_users = ui.users.users().is_ok_and(|u| u.is_empty());
    login_form(
        &ui,
        &headers,
        StatusCode::OK,
        context! { msg => q(&query, "msg"), no_users },
    )
}

/// The login page with its CSRF token (and the cookie that carries it, when new).
fn login_form(ui: &Ui, headers: &HeaderMap, status: StatusCode, ctx: Value) -> Response {
    let (token, cookie) = auth::login_token(headers);
    let mut r = ui.render(
        status,
        None,
        "login.html",
        "login",
        "Log in",
        context! { csrf => token, ..ctx },
    );
    if let Some(c) = cookie.and_then(|c| header::HeaderValue::from_str(&c).ok()) {
        r.headers_mut().append(header::SET_COOKIE, c);
    }
    r
}

async fn login(
    State(ui): State<Arc<Ui>>,
    headers: HeaderMap,
    Form(form): Form<Fields>,
) -> Response {
    let name = form.get("name").map_or("", |s| s.trim()).to_string();
    let password = form.get("password").cloned().unwrap_or_default();
    if !auth::login_token_matches(&headers, form.get("csrf").map_or("", String::as_str)) {
        return login_form(
            &ui,
            &headers,
            StatusCode::FORBIDDEN,
            context! { error => "This login form has expired or came from another page: log in again here.", name },
        );
    }
    let now = crate::now_ms();
    if !ui.limiter.allowed(&name, now) {
        return login_form(
            &ui,
            &headers,
            StatusCode::TOO_MANY_REQUESTS,
            context! { error => "Too many failed logins: wait a minute and try again.", name },
        );
    }
    let user = ui.users.user(&name).ok().flatten();
    let phc = user.as_ref().map_or_else(
        || auth::dummy_hash().to_string(),
        |u| u.password_hash.clone(),
    );
    // argon2 takes tens of milliseconds of CPU: off the async workers.
    let ok = tokio::task::spawn_blocking(move || auth::verify_password(&password, &phc))
        .await
        .unwrap_or(false);
    let Some(u) = user.filter(|_| ok) else {
        ui.limiter.failed(&name, now);
        return login_form(
            &ui,
            &headers,
            StatusCode::UNAUTHORIZED,
            context! { error => "Wrong name or password.", name },
        );
    };
    ui.limiter.succeeded(&name);
    match auth::start_session(&*ui.users, u.id) {
        Ok(cookie) => (
            StatusCode::SEE_OTHER,
            [
                (header::LOCATION, "/ui/".to_string()),
                (header::SET_COOKIE, cookie),
            ],
        )
            .into_response(),
        Err(e) => ui.error(None, StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

async fn logout(
    State(ui): State<Arc<Ui>>,
    headers: HeaderMap,
    Form(form): Form<Fields>,
) -> Response {
    // Logging out needs the CSRF token too, but not the admin role.
    if let Some(s) = auth::session(&*ui.users, &headers) {
        if !auth::same(form.get("csrf").map_or("", String::as_str), &s.csrf) {
            return ui.error(Some(&s), StatusCode::FORBIDDEN, "This form has expired.");
        }
    }
    let cookie = auth::end_session(&*ui.users, &headers);
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, "/ui/login".to_string()),
            (header::SET_COOKIE, cookie),
        ],
    )
        .into_response()
}

// ------------------------------------------------------------------ fleet

/// One row of the fleet page.
#[derive(Debug, Serialize)]
struct FleetRow {
    name: String,
    state: String,
    last_seen_at: Option<i64>,
    last_profile_id: Option<i64>,
    open_alerts: i64,
    recoverable: bool,
    schedule: String,
}

/// The fleet page's data: one page of hosts (keyset paging on the name index), the state
/// counts, the open alerts of the hosts shown. Public for `keel bench ui`.
pub fn fleet_context(
    app: &AppState,
    users: &dyn UserStore,
    prefix: &str,
    after: Option<&str>,
) -> Result<Value, api::ApiError> {
    let now = crate::now_ms();
    let hosts = users.hosts_with_prefix(prefix, after, FLEET_PAGE + 1)?;
    let more = hosts.len() > FLEET_PAGE as usize;
    let hosts = &hosts[..hosts.len().min(FLEET_PAGE as usize)];
    let ids: Vec<i64> = hosts.iter().map(|h| h.id).collect();
    let open = users.open_alert_counts(&ids)?;
    let rows: Vec<FleetRow> = hosts
        .iter()
        .map(|h| FleetRow {
            name: h.name.clone(),
            state: h.status(now).state.as_str().to_string(),
            last_seen_at: h.last_seen_at,
            last_profile_id: h.last_profile_id,
            open_alerts: open.get(&h.id).copied().unwrap_or(0),
            recoverable: h.last_profile_id.is_some(),
            schedule: schedule_text(&h.schedule),
        })
        .collect();
    let states: BTreeMap<String, i64> = app
        .store
        .host_states(now)?
        .into_iter()
        .map(|(s, n)| (s.as_str().to_string(), n))
        .collect();
    let total: i64 = states.values().sum();
    let next = if more {
        hosts.last().map(|h| h.name.clone())
    } else {
        None
    };
    Ok(context! { rows, states, total, next, prefix, after })
}

/// Renders the fleet page for `session` (public for `keel bench ui`).
pub fn render_fleet(
    ui: &Ui,
    session: Option<&SessionRecord>,
    prefix: &str,
    after: Option<&str>,
) -> Response {
    match fleet_context(&ui.app, &*ui.users, prefix, after) {
        Ok(ctx) => ui.page(session, "fleet.html", "fleet", "Fleet", ctx),
        Err(e) => ui.error(session, e.status(), e.message()),
    }
}

async fn fleet(State(ui): State<Arc<Ui>>, headers: HeaderMap, Query(query): Q) -> Response {
    let s = match ui.viewer(&headers) {
        Ok(s) => s,
        Err(r) => return r,
    };
    render_fleet(
        &ui,
        Some(&s),
        q(&query, "q").unwrap_or(""),
        q(&query, "after"),
    )
}

fn schedule_text(s: &keel_store::keel_schedule::Schedule) -> String {
    let grace =
        keel_store::keel_schedule::format_duration(std::time::Duration::from_secs(s.grace_s));
    match s.kind {
        keel_store::keel_schedule::Kind::Interval => format!("every {}, grace {grace}", s.expr),
        keel_store::keel_schedule::Kind::Cron => {
            format!("cron \"{}\" ({}), grace {grace}", s.expr, s.tz)
        }
    }
}

// ------------------------------------------------------------------ host

async fn host(
    State(ui): State<Arc<Ui>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Query(query): Q,
) -> Response {
    let s = match ui.viewer(&headers) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let h = match api::find_host(&ui.app, &name) {
        Ok(h) => h,
        Err(e) => return ui.api_error(&s, &e),
    };
    let before = q(&query, "before").and_then(|v| v.parse().ok());
    let profiles = match ui.app.store.profiles(h.id, before, 50) {
        Ok(p) => p,
        Err(e) => return ui.api_error(&s, &e.into()),
    };
    let older = (profiles.len() == 50)
        .then(|| profiles.last().map(|p| p.id))
        .flatten();
    // The current profile, browsable by section.
    let section = q(&query, "section").unwrap_or("os").to_string();
    let (sections, tables) = match h.last_profile_id {
        Some(id) => match api::load(&ui.app, id) {
            Ok((_, p)) => section_tables(&p, &section),
            Err(e) => return ui.api_error(&s, &e),
        },
        None => (Vec::new(), Vec::new()),
    };
    let view = HostView::new(h, crate::now_ms());
    let schedule = schedule_text(&view.host.schedule);
    let ctx = context! {
        host => view,
        schedule,
        profiles,
        older,
        section,
        sections,
        tables,
        msg => q(&query, "msg"),
    };
    ui.page(Some(&s), "host.html", "fleet", &name, ctx)
}

/// A table of a profile section, for display.
#[derive(Debug, Serialize)]
struct ShownTable {
    name: String,
    columns: Vec<String>,
    rows: Vec<Vec<String>>,
    more: usize,
}

/// The names of the profile's sections, and the tables of `section`.
fn section_tables(p: &keel_profile::Profile, section: &str) -> (Vec<String>, Vec<ShownTable>) {
    const MAX_ROWS: usize = 500;
    let doc = serde_json::to_value(p).unwrap_or_default();
    let Some(obj) = doc.as_object() else {
        return (Vec::new(), Vec::new());
    };
    let sections: Vec<String> = obj.keys().cloned().collect();
    let mut tables = Vec::new();
    let cell = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    };
    let mut add = |name: String, v: &serde_json::Value| match v {
        serde_json::Value::Array(rows) => {
            let mut columns: Vec<String> = Vec::new();
            for r in rows.iter().take(MAX_ROWS) {
                if let Some(o) = r.as_object() {
                    for k in o.keys() {
                        if !columns.contains(k) {
                            columns.push(k.clone());
                        }
                    }
                }
            }
            let shown = rows
                .iter()
                .take(MAX_ROWS)
                .map(|r| match r.as_object() {
                    Some(o) => columns
                        .iter()
                        .map(|c| o.get(c).map(cell).unwrap_or_default())
                        .collect(),
                    None => vec![cell(r)],
                })
                .collect();
            if columns.is_empty() {
                columns.push("value".into());
            }
            tables.push(ShownTable {
                name,
                columns,
                rows: shown,
                more: rows.len().saturating_sub(MAX_ROWS),
            });
        }
        other => tables.push(ShownTable {
            name,
            columns: vec!["value".into()],
            rows: vec![vec![cell(other)]],
            more: 0,
        }),
    };
    match obj.get(section) {
        Some(serde_json::Value::Object(t)) => {
            for (name, v) in t {
                add(name.clone(), v);
            }
        }
        Some(v) => add(section.to_string(), v),
        None => {}
    }
    (sections, tables)
}

/// One section's changes in the diff page.
#[derive(Debug, Serialize)]
struct DiffSection {
    name: String,
    rows: Vec<DiffRow>,
}

#[derive(Debug, Serialize)]
struct DiffRow {
    table: String,
    key: String,
    field: Option<String>,
    kind: &'static str,
    old: String,
    new: String,
    volatile: bool,
}

async fn diff(
    State(ui): State<Arc<Ui>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Query(query): Q,
) -> Response {
    let s = match ui.viewer(&headers) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let (Some(from), Some(to)) = (
        q(&query, "from").and_then(|v| v.parse::<i64>().ok()),
        q(&query, "to").and_then(|v| v.parse::<i64>().ok()),
    ) else {
        return ui.error(
            Some(&s),
            StatusCode::BAD_REQUEST,
            "Choose two profiles to compare.",
        );
    };
    let volatile = q(&query, "volatile").is_some();
    // Older on the left.
    let (from, to) = if from <= to { (from, to) } else { (to, from) };
    let changes = match api::diff_of(&ui.app, from, to, volatile) {
        Ok(c) => c,
        Err(e) => return ui.api_error(&s, &e),
    };
    let show = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => String::new(),
        other => serde_json::to_string_pretty(other).unwrap_or_default(),
    };
    let mut sections: Vec<DiffSection> = Vec::new();
    let count = changes.len();
    for c in changes {
        let row = DiffRow {
            table: c.table.clone(),
            key: c.key.clone(),
            field: c.field.clone(),
            kind: c.kind.as_str(),
            old: show(&c.old),
            new: show(&c.new),
            volatile: c.volatility == keel_profile::Volatility::Volatile,
        };
        match sections.last_mut() {
            Some(sec) if sec.name == c.section => sec.rows.push(row),
            _ => sections.push(DiffSection {
                name: c.section.clone(),
                rows: vec![row],
            }),
        }
    }
    let ctx = context! { host => name, from, to, volatile, sections, count };
    ui.page(
        Some(&s),
        "diff.html",
        "fleet",
        &format!("{name}: diff"),
        ctx,
    )
}

// ------------------------------------------------------------------ backing changes out

/// From the diff page: the ticked changes (`only_N` fields holding `section.table:key`) are
/// planned back to the older profile, and the plan is shown for approval.
async fn propose_rollback(
    State(ui): State<Arc<Ui>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Form(form): Form<Fields>,
) -> Response {
    let s = match ui.admin(&headers, &form) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let (Some(to), Some(from)) = (
        form.get("to").and_then(|v| v.parse::<i64>().ok()),
        form.get("from").and_then(|v| v.parse::<i64>().ok()),
    ) else {
        return ui.error(Some(&s), StatusCode::BAD_REQUEST, "Which profiles?");
    };
    let mut only: Vec<String> = form
        .iter()
        .filter(|(k, _)| k.starts_with("only_"))
        .map(|(_, v)| v.clone())
        .collect();
    only.sort();
    only.dedup();
    if only.is_empty() {
        return ui.error(
            Some(&s),
            StatusCode::BAD_REQUEST,
            "Tick the changes to back out first.",
        );
    }
    let req = crate::rollback::CreateRequest {
        host: name,
        to,
        from: Some(from),
        only,
        force: false,
        by: Some(s.user.name.clone()),
    };
    match crate::rollback::propose(&ui.app, req) {
        Ok(job) => see_other(&with_msg(
            &format!("/ui/rollbacks/{}", job.id),
            "Rollback planned: read the plan, then approve or reject it.",
        )),
        Err(e) => ui.api_error(&s, &e),
    }
}

async fn rollback_page(
    State(ui): State<Arc<Ui>>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Query(query): Q,
) -> Response {
    let s = match ui.viewer(&headers) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let job = match crate::rollback::job_or_404(&ui.app, id) {
        Ok(j) => j,
        Err(e) => return ui.api_error(&s, &e),
    };
    let plan_text = serde_json::from_value::<keel_rollback::Plan>(job.plan.clone()).map_or_else(
        |_| serde_json::to_string_pretty(&job.plan).unwrap_or_default(),
        |p| p.to_string(),
    );
    let msg = q(&query, "msg").map(str::to_string);
    let ctx = context! { job, plan_text, msg };
    ui.page(
        Some(&s),
        "rollback.html",
        "fleet",
        &format!("Rollback {id}"),
        ctx,
    )
}

async fn approve_rollback(
    State(ui): State<Arc<Ui>>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Form(form): Form<Fields>,
) -> Response {
    decide_rollback(&ui, &headers, id, &form, true)
}

async fn reject_rollback(
    State(ui): State<Arc<Ui>>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Form(form): Form<Fields>,
) -> Response {
    decide_rollback(&ui, &headers, id, &form, false)
}

fn decide_rollback(
    ui: &Ui,
    headers: &HeaderMap,
    id: i64,
    form: &Fields,
    approve: bool,
) -> Response {
    let s = match ui.admin(headers, form) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let reason = form.get("reason").filter(|r| !r.trim().is_empty());
    match crate::rollback::decide_as(
        &ui.app,
        id,
        approve,
        &s.user.name,
        reason.map(String::as_str),
    ) {
        Ok(_) => see_other(&with_msg(
            &format!("/ui/rollbacks/{id}"),
            if approve {
                "Approved: the host's agent applies it at its next poll."
            } else {
                "Rejected: nothing will be applied."
            },
        )),
        Err(e) => ui.api_error(&s, &e),
    }
}

async fn set_schedule(
    State(ui): State<Arc<Ui>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Form(form): Form<Fields>,
) -> Response {
    let s = match ui.admin(&headers, &form) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let back = form
        .get("back")
        .filter(|b| b.starts_with("/ui/"))
        .cloned()
        .unwrap_or_else(|| format!("/ui/hosts/{}", encode(&name)));
    let schedule = match schedule_from(&form) {
        Ok(sch) => sch,
        Err(e) => return ui.error(Some(&s), StatusCode::BAD_REQUEST, &e),
    };
    let patch = HostPatch {
        schedule: Some(schedule),
        paused: None,
        retired: None,
    };
    match api::change_host(&ui.app, &name, &patch) {
        Ok(_) => see_other(&with_msg(&back, &format!("Schedule of {name} saved."))),
        Err(e) => ui.api_error(&s, &e),
    }
}

fn schedule_from(form: &Fields) -> Result<keel_store::keel_schedule::Schedule, String> {
    let field = |k: &str| form.get(k).map_or("", |v| v.trim());
    let grace = if field("grace").is_empty() {
        "1h"
    } else {
        field("grace")
    };
    let tz = if field("tz").is_empty() {
        "UTC"
    } else {
        field("tz")
    };
    let r = match field("kind") {
        "cron" => keel_store::keel_schedule::Schedule::cron(field("expr"), tz, grace),
        _ => keel_store::keel_schedule::Schedule::interval(field("expr"), grace).map(|mut s| {
            s.tz = tz.to_string();
            s
        }),
    };
    r.and_then(|s| s.validate().map(|()| s))
        .map_err(|e| format!("Invalid schedule: {e}"))
}

// ------------------------------------------------------------------ alerts

/// An alert row.
#[derive(Debug, Serialize)]
struct AlertRow {
    id: i64,
    host: String,
    rule: String,
    severity: String,
    summary: String,
    status: String,
    starts_at: i64,
    ends_at: Option<i64>,
    acked_by: Option<String>,
    profile_id: Option<i64>,
}

async fn alerts(State(ui): State<Arc<Ui>>, headers: HeaderMap, Query(query): Q) -> Response {
    let s = match ui.viewer(&headers) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let status = match q(&query, "status") {
        Some("all") => None,
        Some("resolved") => Some("resolved"),
        _ => Some("firing"),
    };
    let host_name = q(&query, "host");
    let host_id = match host_name {
        Some(n) => match api::find_host(&ui.app, n) {
            Ok(h) => Some(h.id),
            Err(e) => return ui.api_error(&s, &e),
        },
        None => None,
    };
    let before = q(&query, "before").and_then(|v| v.parse().ok());
    let list = match ui.app.store.alerts(status, host_id, before, 100) {
        Ok(l) => l,
        Err(e) => return ui.api_error(&s, &e.into()),
    };
    let older = (list.len() == 100)
        .then(|| list.last().map(|a| a.id))
        .flatten();
    let rows: Vec<AlertRow> = list
        .into_iter()
        .map(|a| AlertRow {
            id: a.id,
            host: a.alert.labels.get("host").cloned().unwrap_or_default(),
            rule: a.alert.rule.clone(),
            severity: a.alert.severity.clone(),
            summary: a
                .alert
                .annotations
                .get("summary")
                .cloned()
                .unwrap_or_default(),
            status: a.status,
            starts_at: a.alert.starts_at,
            ends_at: a.ends_at,
            acked_by: a.acked_by,
            profile_id: a.profile_id,
        })
        .collect();
    let ctx = context! {
        rows,
        older,
        status => status.unwrap_or("all"),
        host => host_name,
        msg => q(&query, "msg"),
    };
    ui.page(Some(&s), "alerts.html", "alerts", "Alerts", ctx)
}

async fn ack(
    State(ui): State<Arc<Ui>>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Form(form): Form<Fields>,
) -> Response {
    let s = match ui.admin(&headers, &form) {
        Ok(s) => s,
        Err(r) => return r,
    };
    match api::ack(&ui.app, id, &s.user.name) {
        Ok(()) => see_other(&with_msg(
            "/ui/alerts",
            &format!("Alert {id} acknowledged."),
        )),
        Err(e) => ui.api_error(&s, &e),
    }
}

async fn resolve(
    State(ui): State<Arc<Ui>>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Form(form): Form<Fields>,
) -> Response {
    let s = match ui.admin(&headers, &form) {
        Ok(s) => s,
        Err(r) => return r,
    };
    match api::resolve(&ui.app, id) {
        Ok(()) => see_other(&with_msg("/ui/alerts", &format!("Alert {id} resolved."))),
        Err(e) => ui.api_error(&s, &e),
    }
}

// ------------------------------------------------------------------ rules

/// The rule editor's fields.
#[derive(Debug, Default, Serialize)]
struct RuleForm {
    name: String,
    description: String,
    severity: String,
    when: String,
    for_each: String,
    message: String,
    enabled: bool,
    host: String,
}

impl RuleForm {
    fn from_rule(r: &keel_rules::Rule) -> Self {
        RuleForm {
            name: r.name.clone(),
            description: r.description.clone().unwrap_or_default(),
            severity: r.severity.as_str().to_string(),
            when: r.when.clone(),
            for_each: r.for_each.clone().unwrap_or_default(),
            message: r.message.clone(),
            enabled: r.enabled,
            host: String::new(),
        }
    }

    fn from_form(f: &Fields) -> Self {
        let g = |k: &str| f.get(k).map(|v| v.trim().to_string()).unwrap_or_default();
        RuleForm {
            name: g("name"),
            description: g("description"),
            severity: g("severity"),
            when: g("when"),
            for_each: g("for_each"),
            message: g("message"),
            enabled: f.contains_key("enabled"),
            host: g("host"),
        }
    }

    /// The rule, read the way the JSON API reads one.
    fn rule(&self) -> Result<keel_rules::Rule, String> {
        let mut doc = serde_json::json!({
            "name": self.name,
            "severity": self.severity,
            "when": if self.when.is_empty() { "true" } else { &self.when },
            "message": self.message,
            "enabled": self.enabled,
        });
        if !self.description.is_empty() {
            doc["description"] = self.description.clone().into();
        }
        if !self.for_each.is_empty() {
            doc["for_each"] = self.for_each.clone().into();
        }
        keel_rules::rules_from_json(&doc.to_string(), "the form")
            .map_err(|e| e.to_string())?
            .pop()
            .ok_or_else(|| "no rule".to_string())
    }
}

fn rules_page(
    ui: &Ui,
    s: &SessionRecord,
    form: &RuleForm,
    outcome: Option<(&str, String)>,
    msg: Option<&str>,
) -> Response {
    let stored = match crate::stored_rules(&*ui.app.store) {
        Ok(r) => r,
        Err(e) => return ui.api_error(s, &e.into()),
    };
    let rules: Vec<Value> = crate::ingest::layered(&ui.app.file_rules, stored)
        .into_iter()
        .map(|(origin, r)| {
            context! {
                origin => format!("{origin:?}").to_lowercase(),
                name => r.name,
                severity => r.severity.as_str(),
                when => r.when,
                for_each => r.for_each,
                enabled => r.enabled,
            }
        })
        .collect();
    let hosts: Vec<String> = ui
        .app
        .store
        .hosts(None, 200)
        .map(|h| {
            h.into_iter()
                .filter(|h| h.last_profile_id.is_some())
                .map(|h| h.name)
                .collect()
        })
        .unwrap_or_default();
    let (kind, text) = outcome.unwrap_or(("", String::new()));
    let status = if kind == "refused" {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    ui.render(
        status,
        Some(s),
        "rules.html",
        "rules",
        "Rules",
        context! { rules, form, hosts, outcome => kind, outcome_text => text, msg },
    )
}

async fn rules(State(ui): State<Arc<Ui>>, headers: HeaderMap, Query(query): Q) -> Response {
    let s = match ui.viewer(&headers) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let mut form = RuleForm {
        severity: "warning".into(),
        when: "true".into(),
        enabled: true,
        ..RuleForm::default()
    };
    if let Some(name) = q(&query, "edit") {
        let stored = crate::stored_rules(&*ui.app.store).unwrap_or_default();
        if let Some((_, r)) = crate::ingest::layered(&ui.app.file_rules, stored)
            .into_iter()
            .find(|(_, r)| r.name == name)
        {
            form = RuleForm::from_rule(&r);
        }
    }
    rules_page(&ui, &s, &form, None, q(&query, "msg"))
}

/// Tests (`action=test`) or saves the rule of the editor.
async fn rule_post(
    State(ui): State<Arc<Ui>>,
    headers: HeaderMap,
    Form(f): Form<Fields>,
) -> Response {
    let s = match ui.admin(&headers, &f) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let form = RuleForm::from_form(&f);
    let rule = match form.rule() {
        Ok(r) => r,
        Err(e) => return rules_page(&ui, &s, &form, Some(("refused", e)), None),
    };
    let host = (!form.host.is_empty()).then_some(form.host.as_str());
    if f.get("action").map(String::as_str) == Some("test") {
        return match api::check_rule(&ui.app, &rule, host) {
            Ok(Some(h)) => rules_page(
                &ui,
                &s,
                &form,
                Some((
                    "ok",
                    format!(
                        "The rule runs on the newest profile of {h} without error. Not saved yet."
                    ),
                )),
                None,
            ),
            Ok(None) => rules_page(
                &ui,
                &s,
                &form,
                Some((
                    "ok",
                    "The rule compiles (no host has a profile to run it on yet). Not saved yet."
                        .into(),
                )),
                None,
            ),
            Err(e) => rules_page(
                &ui,
                &s,
                &form,
                Some(("refused", e.message().to_string())),
                None,
            ),
        };
    }
    match api::save_rule(&ui.app, &rule, host) {
        Ok(on) => {
            let checked = on.map(|h| format!(" (checked on {h})")).unwrap_or_default();
            see_other(&with_msg(
                "/ui/rules",
                &format!(
                    "Rule {} saved{checked}; it applies from the next profile.",
                    rule.name
                ),
            ))
        }
        Err(e) => rules_page(
            &ui,
            &s,
            &form,
            Some(("refused", e.message().to_string())),
            None,
        ),
    }
}

// ------------------------------------------------------------------ schedules

async fn schedules(State(ui): State<Arc<Ui>>, headers: HeaderMap, Query(query): Q) -> Response {
    let s = match ui.viewer(&headers) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let prefix = q(&query, "q").unwrap_or("");
    let hosts = match ui
        .users
        .hosts_with_prefix(prefix, q(&query, "after"), FLEET_PAGE + 1)
    {
        Ok(h) => h,
        Err(e) => return ui.api_error(&s, &e.into()),
    };
    let more = hosts.len() > FLEET_PAGE as usize;
    let rows: Vec<Value> = hosts
        .iter()
        .take(FLEET_PAGE as usize)
        .map(|h| {
            context! {
                name => h.name,
                kind => match h.schedule.kind {
                    keel_store::keel_schedule::Kind::Cron => "cron",
                    keel_store::keel_schedule::Kind::Interval => "interval",
                },
                expr => h.schedule.expr,
                tz => h.schedule.tz,
                grace => keel_store::keel_schedule::format_duration(std::time::Duration::from_secs(h.schedule.grace_s)),
            }
        })
        .collect();
    let next = if more {
        hosts.get(FLEET_PAGE as usize - 1).map(|h| h.name.clone())
    } else {
        None
    };
    let ctx = context! { rows, next, prefix, msg => q(&query, "msg") };
    ui.page(Some(&s), "schedules.html", "schedules", "Schedules", ctx)
}

/// Sets one schedule on every host whose name starts with the form's prefix (a group).
async fn group_schedule(
    State(ui): State<Arc<Ui>>,
    headers: HeaderMap,
    Form(form): Form<Fields>,
) -> Response {
    let s = match ui.admin(&headers, &form) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let schedule = match schedule_from(&form) {
        Ok(sch) => sch,
        Err(e) => return ui.error(Some(&s), StatusCode::BAD_REQUEST, &e),
    };
    let prefix = form.get("prefix").map_or("", |p| p.trim()).to_string();
    let mut after: Option<String> = None;
    let mut n = 0usize;
    loop {
        let page = match ui.users.hosts_with_prefix(&prefix, after.as_deref(), 1000) {
            Ok(p) => p,
            Err(e) => return ui.api_error(&s, &e.into()),
        };
        let Some(last) = page.last() else { break };
        after = Some(last.name.clone());
        for h in &page {
            let patch = HostPatch {
                schedule: Some(schedule.clone()),
                paused: None,
                retired: None,
            };
            if let Err(e) = api::change_host(&ui.app, &h.name, &patch) {
                return ui.api_error(&s, &e);
            }
            n += 1;
        }
    }
    let group = if prefix.is_empty() {
        "every host".to_string()
    } else {
        format!("hosts starting with {prefix:?}")
    };
    see_other(&with_msg(
        "/ui/schedules",
        &format!("Schedule saved on {n} host(s): {group}."),
    ))
}

/// The fleet page rendered straight from a store, without HTTP: `keel bench ui` times it.
#[derive(Debug)]
pub struct FleetBench(Ui);

impl FleetBench {
    /// A UI over `store`, with the built-in rules.
    pub fn new(store: Arc<keel_store::SqliteStore>) -> FleetBench {
        let users: Arc<dyn UserStore> = Arc::clone(&store) as _;
        let store: Arc<dyn keel_store::Store> = store;
        let metrics = Arc::new(crate::metrics::Metrics::default());
        let (rules, _) = crate::ingest::Rules::compile(&[], Vec::new());
        let app = Arc::new(AppState {
            ingestor: crate::ingest::Ingestor::new(Arc::clone(&store), Arc::clone(&metrics), rules),
            store,
            metrics,
            ca_pem: String::new(),
            file_rules: Vec::new(),
            signal: Arc::new(crate::notify::Signal::default()),
            machine_offline_after: crate::Settings::default().machine_offline_after,
        });
        FleetBench(Ui::new(app, users))
    }

    /// The HTML of the fleet page after host `after` (the first page when `None`).
    pub fn render(&self, after: Option<&str>) -> Result<String, String> {
        let ctx = fleet_context(&self.0.app, &*self.0.users, "", after)
            .map_err(|e| e.message().to_string())?;
        self.0
            .env
            .get_template("fleet.html")
            .and_then(|t| t.render(context! { page => "fleet", title => "Fleet", ..ctx }))
            .map_err(|e| format!("{e:#}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_parse_and_helpers_format() {
        let mut env = Environment::new();
        for (name, text) in TEMPLATES {
            env.add_template(name, text).unwrap();
        }
        assert_eq!(age(10_000, 5_000), "5 s ago");
        assert_eq!(age(7_200_000, 0), "2 h ago");
        assert_eq!(with_msg("/ui/alerts", "a b&c"), "/ui/alerts?msg=a%20b%26c");
    }

    /// The fleet pages through a large fleet by name, 100 hosts at a time, with the state
    /// counts of the whole fleet and each host's open alerts.
    #[test]
    fn the_fleet_page_pages_by_name() {
        let store = keel_store::SqliteStore::open_in_memory().unwrap();
        store.seed_fleet(250, crate::now_ms()).unwrap();
        let bench = FleetBench::new(Arc::new(store));
        let first = bench.render(None).unwrap();
        assert!(first.contains(">250 hosts<"), "{first}");
        assert!(first.contains(">host-00000</a>") && first.contains(">host-00099</a>"));
        assert!(!first.contains(">host-00100</a>"));
        assert!(
            first.contains("after=host-00099"),
            "a link to the next page"
        );
        // host-00027 has one open alert, host-00047 three (the seed's pattern).
        assert!(
            first.contains("/ui/alerts?host=host-00047\">3</a>"),
            "{first}"
        );
        let last = bench.render(Some("host-00199")).unwrap();
        assert!(last.contains(">host-00200</a>") && last.contains(">host-00249</a>"));
        assert!(!last.contains("id=\"next\""), "no page after the last");
    }
}
