//! The HTTP API: enrollment and uploads for agents, JSON for people and tools.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use keel_profile::{diff, DiffOptions, Hash, Profile};
use keel_store::keel_schedule::{HostState, Schedule};
use keel_store::{NewAgent, Store, TokenKind};
use serde::Deserialize;
use serde_json::json;

use crate::ingest::{IngestError, Ingestor};
use crate::metrics::Metrics;

/// Largest upload accepted (a whole profile with every blob).
pub const MAX_UPLOAD: usize = 64 * 1024 * 1024;

/// Shared state of the handlers.
#[derive(Debug)]
pub struct AppState {
    /// The store.
    pub store: Arc<dyn Store>,
    /// The ingest pipeline.
    pub ingestor: Ingestor,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// The CA certificate agents pin.
    pub ca_pem: String,
    /// Rules read from the settings' rule files.
    pub file_rules: Vec<keel_rules::Rule>,
    /// Wakes the notification workers.
    pub signal: Arc<crate::notify::Signal>,
    /// When a waiting recovery machine counts as gone.
    pub machine_offline_after: Duration,
}

/// The router.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .route("/api/v1/ca", get(ca))
        .route("/api/v1/openapi.json", get(openapi))
        .route("/api/v1/enroll", post(enroll))
        .route("/api/v1/upload", post(upload))
        .route("/api/v1/hosts", get(hosts))
        .route("/api/v1/hosts/{name}", get(host).patch(patch_host))
        .route("/api/v1/hosts/{name}/profiles", get(profiles))
        .route("/api/v1/profiles/{id}", get(profile))
        .route("/api/v1/profiles/{id}/changes", get(changes))
        .route("/api/v1/diff", get(diff_profiles))
        .route("/api/v1/alerts", get(alerts))
        .route("/api/v1/alerts/{id}/ack", post(ack_alert))
        .route("/api/v1/alerts/{id}/resolve", post(resolve_alert))
        .route("/api/v1/deliveries", get(deliveries))
        .route("/api/v1/rules", get(list_rules))
        .route(
            "/api/v1/rollbacks",
            get(crate::rollback::list).post(crate::rollback::create),
        )
        .route("/api/v1/rollbacks/{id}", get(crate::rollback::show))
        .route(
            "/api/v1/rollbacks/{id}/approve",
            post(crate::rollback::approve),
        )
        .route(
            "/api/v1/rollbacks/{id}/reject",
            post(crate::rollback::reject),
        )
        .route("/api/v1/agent/rollbacks/next", post(crate::rollback::next))
        .route(
            "/api/v1/agent/rollbacks/{id}/report",
            post(crate::rollback::report),
        )
        .route(
            "/api/v1/rules/{name}",
            axum::routing::put(put_rule).delete(delete_rule),
        )
        .route("/api/v1/machines", get(crate::recovery::machines))
        .route("/api/v1/machines/register", post(crate::recovery::register))
        .route("/api/v1/machines/{name}", get(crate::recovery::machine))
        .route(
            "/api/v1/recoveries",
            get(crate::recovery::list).post(crate::recovery::create),
        )
        .route("/api/v1/recoveries/{id}", get(crate::recovery::show))
        .route(
            "/api/v1/recoveries/{id}/start",
            post(crate::recovery::start),
        )
        .route(
            "/api/v1/recoveries/{id}/cancel",
            post(crate::recovery::cancel),
        )
        .route("/api/v1/machine/next", post(crate::recovery::next))
        .route(
            "/api/v1/machine/recoveries/{id}/profile",
            get(crate::recovery::profile),
        )
        .route(
            "/api/v1/machine/recoveries/{id}/progress",
            post(crate::recovery::progress),
        )
        .route(
            "/api/v1/machine/recoveries/{id}/finish",
            post(crate::recovery::finish),
        )
        .layer(DefaultBodyLimit::max(MAX_UPLOAD))
        .with_state(state)
}

/// An error response: `{"error": …, "code": …}` with a status.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    extra: Option<serde_json::Value>,
}

impl ApiError {
    /// The HTTP status.
    pub(crate) fn status(&self) -> StatusCode {
        self.status
    }

    /// The message.
    pub(crate) fn message(&self) -> &str {
        &self.message
    }

    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            extra: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": self.message, "code": self.code });
        if let Some(extra) = self.extra {
            if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
                b.extend(e.clone());
            }
        }
        (self.status, Json(body)).into_response()
    }
}

impl From<keel_store::StoreError> for ApiError {
    fn from(e: keel_store::StoreError) -> Self {
        match e {
            keel_store::StoreError::Conflict(m) => {
                ApiError::new(StatusCode::CONFLICT, "conflict", m)
            }
            keel_store::StoreError::NotFound(m) => {
                ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("{m} not found"))
            }
            other => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "store",
                other.to_string(),
            ),
        }
    }
}

pub(crate) type ApiResult<T> = Result<T, ApiError>;

/// Checks the bearer token; `allowed` lists the kinds that may call.
pub(crate) fn authorize(
    state: &AppState,
    headers: &HeaderMap,
    allowed: &[TokenKind],
) -> ApiResult<TokenKind> {
    let deny = |m: &str| {
        state.metrics.auth_failures.fetch_add(1, Ordering::Relaxed);
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", m)
    };
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return Err(deny("missing Authorization: Bearer token"));
    };
    let Some(token) = value.strip_prefix("Bearer ") else {
        return Err(deny("Authorization must be a Bearer token"));
    };
    let Some(kind) = state.store.token_kind(&Hash::of(token.trim().as_bytes()))? else {
        return Err(deny("unknown token"));
    };
    if !allowed.contains(&kind) {
        state.metrics.auth_failures.fetch_add(1, Ordering::Relaxed);
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("{} tokens may not do this", kind.as_str()),
        ));
    }
    Ok(kind)
}

pub(crate) const READ: &[TokenKind] = &[TokenKind::Admin, TokenKind::Readonly];

async fn metrics(State(s): State<Arc<AppState>>) -> ApiResult<Response> {
    let hosts = s.store.host_states(crate::now_ms())?;
    let profiles = s.store.profile_count()?;
    Ok((
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(&hosts, profiles),
    )
        .into_response())
}

async fn ca(State(s): State<Arc<AppState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/x-pem-file")],
        s.ca_pem.clone(),
    )
        .into_response()
}

async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        include_str!("../openapi.json"),
    )
        .into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EnrollRequest {
    host: String,
    machine_id: String,
    /// Hex of the agent's ed25519 public key.
    public_key: String,
    /// The schedule the agent captures on (kept as it is when absent).
    #[serde(default)]
    schedule: Option<Schedule>,
}

async fn enroll(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    authorize(&s, &headers, &[TokenKind::Enroll, TokenKind::Admin])?;
    let req: EnrollRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed",
            format!("invalid enrollment request: {e}"),
        )
    })?;
    let valid_name = !req.host.is_empty()
        && req.host.len() <= 253
        && req
            .host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_');
    if !valid_name {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed",
            format!("invalid host name {:?}", req.host),
        ));
    }
    if req.machine_id.trim().is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed",
            "machine_id is empty",
        ));
    }
    let public_key = crate::unhex(&req.public_key)
        .filter(|k| k.len() == 32)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "malformed",
                "public_key must be 64 hex digits (ed25519)",
            )
        })?;
    if let Some(schedule) = &req.schedule {
        schedule.validate().map_err(|e| {
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_schedule", e.to_string())
        })?;
    }
    let agent_id = format!("agent-{}", crate::random_token(12));
    let host = s.store.enroll(&NewAgent {
        id: agent_id.clone(),
        host: req.host,
        machine_id: req.machine_id,
        public_key,
        now: crate::now_ms(),
        schedule: req.schedule,
    })?;
    s.metrics.enrollments.fetch_add(1, Ordering::Relaxed);
    Ok((
        StatusCode::CREATED,
        Json(json!({ "agent_id": agent_id, "host": host.name, "schedule": host.schedule })),
    )
        .into_response())
}

async fn upload(State(s): State<Arc<AppState>>, body: Bytes) -> ApiResult<Response> {
    s.metrics
        .upload_bytes
        .fetch_add(body.len() as u64, Ordering::Relaxed);
    match s.ingestor.ingest(&body, crate::now_ms()).await {
        Ok(stored) => Ok((StatusCode::CREATED, Json(stored)).into_response()),
        Err(e) => {
            s.metrics.refused(e.code());
            let status = match &e {
                IngestError::Malformed(_) => StatusCode::BAD_REQUEST,
                IngestError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
                IngestError::Forbidden(_) | IngestError::WrongHost(_) => StatusCode::FORBIDDEN,
                IngestError::AlreadyStored { .. }
                | IngestError::Stale(_)
                | IngestError::UnknownBase(_)
                | IngestError::MissingBlobs(_) => StatusCode::CONFLICT,
                IngestError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
            };
            let mut err = ApiError::new(status, e.code(), e.to_string());
            err.extra = match &e {
                IngestError::MissingBlobs(m) => Some(json!({ "missing": m })),
                IngestError::AlreadyStored { id, .. } => Some(json!({ "profile_id": id })),
                _ => None,
            };
            Err(err)
        }
    }
}

#[derive(Debug, Deserialize)]
struct Page {
    after: Option<String>,
    before: Option<i64>,
    limit: Option<u32>,
}

async fn hosts(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(p): Query<Page>,
) -> ApiResult<Response> {
    authorize(&s, &headers, READ)?;
    let now = crate::now_ms();
    let hosts: Vec<HostView> = s
        .store
        .hosts(p.after.as_deref(), p.limit.unwrap_or(100).min(1000))?
        .into_iter()
        .map(|h| HostView::new(h, now))
        .collect();
    Ok(Json(hosts).into_response())
}

async fn host(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    authorize(&s, &headers, READ)?;
    let h = find_host(&s, &name)?;
    Ok(Json(HostView::new(h, crate::now_ms())).into_response())
}

/// A host with its state now.
#[derive(Debug, serde::Serialize)]
pub(crate) struct HostView {
    #[serde(flatten)]
    pub(crate) host: keel_store::HostRecord,
    pub(crate) state: HostState,
    /// When the next profile is due, ms.
    pub(crate) due_at: i64,
}

impl HostView {
    pub(crate) fn new(host: keel_store::HostRecord, now: i64) -> Self {
        let status = host.status(now);
        HostView {
            host,
            state: status.state,
            due_at: status.due_at,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HostPatch {
    pub(crate) schedule: Option<Schedule>,
    pub(crate) paused: Option<bool>,
    pub(crate) retired: Option<bool>,
}

/// Changes a host's schedule, pauses or resumes it, retires or reinstates it.
async fn patch_host(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    authorize(&s, &headers, &[TokenKind::Admin])?;
    let patch: HostPatch = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed",
            format!("invalid host change: {e}"),
        )
    })?;
    Ok(Json(change_host(&s, &name, &patch)?).into_response())
}

/// Applies a host change (the JSON API's PATCH and the UI's schedule form).
pub(crate) fn change_host(s: &AppState, name: &str, patch: &HostPatch) -> ApiResult<HostView> {
    let h = find_host(s, name)?;
    if let Some(schedule) = &patch.schedule {
        schedule.validate().map_err(|e| {
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_schedule", e.to_string())
        })?;
        s.store.set_schedule(h.id, schedule)?;
    }
    let h = if patch.paused.is_some() || patch.retired.is_some() {
        let h = s
            .store
            .set_host_flags(h.id, patch.paused, patch.retired, crate::now_ms())?;
        // Pausing or retiring may have resolved a missing alert.
        s.signal.wake();
        h
    } else {
        find_host(s, name)?
    };
    Ok(HostView::new(h, crate::now_ms()))
}

async fn deliveries(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(p): Query<Page>,
) -> ApiResult<Response> {
    authorize(&s, &headers, READ)?;
    Ok(Json(
        s.store
            .deliveries(p.before, p.limit.unwrap_or(100).min(1000))?,
    )
    .into_response())
}

async fn profiles(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Query(p): Query<Page>,
) -> ApiResult<Response> {
    authorize(&s, &headers, READ)?;
    let h = find_host(&s, &name)?;
    Ok(Json(
        s.store
            .profiles(h.id, p.before, p.limit.unwrap_or(50).min(1000))?,
    )
    .into_response())
}

pub(crate) fn load(s: &AppState, id: i64) -> ApiResult<(keel_store::ProfileSummary, Profile)> {
    let (summary, bytes) = s.store.profile(id)?.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no profile {id}"),
        )
    })?;
    let p: Profile = ciborium::from_reader(&bytes[..]).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "corrupt",
            format!("stored profile {id} does not decode: {e}"),
        )
    })?;
    Ok((summary, p))
}

async fn profile(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> ApiResult<Response> {
    authorize(&s, &headers, READ)?;
    let (summary, p) = load(&s, id)?;
    Ok(Json(json!({ "summary": summary, "profile": p })).into_response())
}

async fn changes(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> ApiResult<Response> {
    authorize(&s, &headers, READ)?;
    Ok(Json(s.store.changes(id)?).into_response())
}

#[derive(Debug, Deserialize)]
struct DiffQuery {
    from: i64,
    to: i64,
    #[serde(default)]
    include_volatile: bool,
}

async fn diff_profiles(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Query<DiffQuery>,
) -> ApiResult<Response> {
    authorize(&s, &headers, READ)?;
    Ok(Json(diff_of(&s, q.from, q.to, q.include_volatile)?).into_response())
}

/// The changes from profile `from` to profile `to` of one host.
pub(crate) fn diff_of(
    s: &AppState,
    from: i64,
    to: i64,
    include_volatile: bool,
) -> ApiResult<Vec<keel_profile::Change>> {
    let (a_sum, a) = load(s, from)?;
    let (b_sum, b) = load(s, to)?;
    if a_sum.host_id != b_sum.host_id {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed",
            "the two profiles belong to different hosts",
        ));
    }
    Ok(diff(&a, &b, DiffOptions { include_volatile }))
}

#[derive(Debug, Deserialize)]
struct AlertQuery {
    status: Option<String>,
    host: Option<String>,
    before: Option<i64>,
    limit: Option<u32>,
}

async fn alerts(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Query<AlertQuery>,
) -> ApiResult<Response> {
    authorize(&s, &headers, READ)?;
    if let Some(st) = &q.status {
        if st != "firing" && st != "resolved" {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "malformed",
                "status must be firing or resolved",
            ));
        }
    }
    let host_id = match &q.host {
        Some(name) => Some(find_host(&s, name)?.id),
        None => None,
    };
    let list = s.store.alerts(
        q.status.as_deref(),
        host_id,
        q.before,
        q.limit.unwrap_or(100).min(1000),
    )?;
    Ok(Json(list).into_response())
}

async fn ack_alert(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> ApiResult<Response> {
    authorize(&s, &headers, &[TokenKind::Admin])?;
    ack(&s, id, "admin")?;
    Ok(Json(json!({ "id": id, "acknowledged": true })).into_response())
}

/// Acknowledges alert `id` as `by`.
pub(crate) fn ack(s: &AppState, id: i64, by: &str) -> ApiResult<()> {
    if !s.store.ack_alert(id, by, crate::now_ms())? {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no alert {id}"),
        ));
    }
    Ok(())
}

/// Resolves firing alert `id`.
pub(crate) fn resolve(s: &AppState, id: i64) -> ApiResult<()> {
    if !s.store.resolve_alert(id, crate::now_ms())? {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no firing alert {id}"),
        ));
    }
    s.signal.wake();
    Ok(())
}

async fn resolve_alert(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> ApiResult<Response> {
    authorize(&s, &headers, &[TokenKind::Admin])?;
    resolve(&s, id)?;
    Ok(Json(json!({ "id": id, "status": "resolved" })).into_response())
}

async fn list_rules(State(s): State<Arc<AppState>>, headers: HeaderMap) -> ApiResult<Response> {
    authorize(&s, &headers, READ)?;
    let stored = crate::stored_rules(&*s.store)?;
    let out: Vec<serde_json::Value> = crate::ingest::layered(&s.file_rules, stored)
        .into_iter()
        .map(|(origin, rule)| json!({ "origin": origin, "rule": rule }))
        .collect();
    Ok(Json(out).into_response())
}

#[derive(Debug, Deserialize)]
struct RuleQuery {
    /// Host whose newest profile the rule is checked against.
    host: Option<String>,
}

async fn put_rule(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Query(q): Query<RuleQuery>,
    body: Bytes,
) -> ApiResult<Response> {
    authorize(&s, &headers, &[TokenKind::Admin])?;
    let text = std::str::from_utf8(&body).map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed",
            "rule must be UTF-8 JSON",
        )
    })?;
    let mut rules = keel_rules::rules_from_json(text, "request body")
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_rule", e.to_string()))?;
    if rules.len() != 1 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_rule",
            "send exactly one rule",
        ));
    }
    let rule = rules.remove(0);
    if rule.name != name {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_rule",
            format!(
                "the rule is named {:?} but the URL names {name:?}",
                rule.name
            ),
        ));
    }
    let checked_on = save_rule(&s, &rule, q.host.as_deref())?;
    Ok((
        StatusCode::OK,
        Json(json!({ "saved": name, "checked_against": checked_on })),
    )
        .into_response())
}

/// Checks `rule` against the newest profile of `host` (or of the first host with a profile)
/// and returns that host's name; only compiles it when no host has a profile yet.
pub(crate) fn check_rule(
    s: &AppState,
    rule: &keel_rules::Rule,
    host: Option<&str>,
) -> ApiResult<Option<String>> {
    // Checked against a real stored profile: the crate has no type checker, so a misspelt
    // field only shows when the rule runs.
    let sample_host = match host {
        Some(h) => Some(find_host(s, h)?),
        None => s
            .store
            .hosts(None, 1000)?
            .into_iter()
            .find(|h| h.last_profile_id.is_some()),
    };
    if let Some(h) = sample_host.filter(|h| h.last_profile_id.is_some()) {
        let (_, profile) = load(s, h.last_profile_id.unwrap_or_default())?;
        let info = keel_rules::HostInfo {
            name: h.name.clone(),
            labels: h.labels.clone(),
        };
        keel_rules::RuleSet::check_against(
            rule,
            &keel_rules::Input {
                profile: &profile,
                previous: None,
                changes: &[],
                host: &info,
            },
        )
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_rule", e.to_string()))?;
        Ok(Some(h.name))
    } else {
        keel_rules::RuleSet::compile(vec![rule.clone()])
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_rule", e.to_string()))?;
        Ok(None)
    }
}

/// Checks `rule` ([`check_rule`]), stores it and puts it in force.
pub(crate) fn save_rule(
    s: &AppState,
    rule: &keel_rules::Rule,
    host: Option<&str>,
) -> ApiResult<Option<String>> {
    let checked_on = check_rule(s, rule, host)?;
    let body = serde_json::to_string(rule)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "store", e.to_string()))?;
    s.store.put_rule(&rule.name, &body, crate::now_ms())?;
    reload_rules(s)?;
    Ok(checked_on)
}

async fn delete_rule(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    authorize(&s, &headers, &[TokenKind::Admin])?;
    if !s.store.delete_rule(&name)? {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no stored rule {name}"),
        ));
    }
    reload_rules(&s)?;
    Ok(Json(json!({ "deleted": name })).into_response())
}

fn reload_rules(s: &AppState) -> ApiResult<()> {
    let stored = crate::stored_rules(&*s.store)?;
    let (rules, _broken) = crate::ingest::Rules::compile(&s.file_rules, stored);
    s.ingestor.set_rules(rules);
    Ok(())
}

/// A host by name, or 404.
pub(crate) fn find_host(s: &AppState, name: &str) -> ApiResult<keel_store::HostRecord> {
    s.store.host(name)?.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no host {name}"),
        )
    })
}

#[cfg(test)]
mod tests {
    /// Every route the router serves is in the OpenAPI document, with each of its methods.
    #[test]
    fn openapi_documents_every_route() {
        let doc: serde_json::Value =
            serde_json::from_str(include_str!("../openapi.json")).expect("openapi.json is JSON");
        let source = include_str!("api.rs");
        let mut checked = 0;
        let router = source
            .split("pub fn router(")
            .nth(1)
            .and_then(|r| r.split("\n}").next())
            .expect("the router function");
        for chunk in router.split(".route(").skip(1) {
            let Some(path) = chunk.split('"').nth(1) else {
                continue;
            };
            if !path.starts_with('/') {
                continue;
            }
            let handlers = chunk.split(')').next().unwrap_or("");
            let entry = &doc["paths"][path];
            assert!(entry.is_object(), "{path} is not in openapi.json");
            for method in ["get", "post", "put", "patch", "delete"] {
                let used = handlers.contains(&format!("{method}("))
                    || chunk.contains(&format!(".{method}("));
                if used {
                    assert!(
                        entry[method].is_object(),
                        "{method} {path} is not in openapi.json"
                    );
                }
            }
            checked += 1;
        }
        assert!(checked >= 15, "found only {checked} routes");
    }
}
