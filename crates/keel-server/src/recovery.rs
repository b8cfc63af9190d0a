//! Recovery machines and recovery jobs.
//!
//! A machine booted into any live Linux runs `keel rescue --server URL --token T`: it
//! registers with an enrollment (or admin) token and its inventory, gets a machine token, and
//! asks for work. An admin plans a host's recovery onto a waiting machine (the server computes
//! the plan from the host's profile and the machine's disks: an impossible plan is refused
//! with the planner's reason), then starts it by typing the host's name. The machine takes the
//! job, downloads the profile, rebuilds the disks and the system, reports each phase as it
//! goes and finishes with its report, verification included.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use keel_profile::Hash;
use keel_recover::{Plan, PlanOptions, TargetDisk};
use keel_store::{MachineRecord, NewMachine, NewRecovery, RecoveryEnd, RecoveryRecord, TokenKind};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::api::{authorize, find_host, ApiError, ApiResult, AppState, READ};

/// Longest a machine's request for work is held open.
const MAX_WAIT: Duration = Duration::from_secs(30);

fn bad_request(m: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "malformed", m)
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8], what: &str) -> ApiResult<T> {
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|e| bad_request(format!("invalid {what}: {e}")))
}

/// Who may plan and start recoveries, by name: the admin token today. A web UI session with
/// the admin role is accepted here too once sessions exist (one more check, before this one).
fn admin(s: &AppState, headers: &HeaderMap) -> ApiResult<String> {
    authorize(s, headers, &[TokenKind::Admin])?;
    Ok("admin".into())
}

/// The machine a machine token belongs to.
fn machine_auth(s: &AppState, headers: &HeaderMap) -> ApiResult<MachineRecord> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "missing Authorization: Bearer token",
            )
        })?;
    s.store
        .machine_by_token(&Hash::of(token.as_bytes()))?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "unknown machine token: register with keel rescue --server again",
            )
        })
}

pub(crate) fn job_or_404(s: &AppState, id: i64) -> ApiResult<RecoveryRecord> {
    s.store.recovery(id)?.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no recovery {id}"),
        )
    })
}

fn machine_or_404(s: &AppState, name_or_id: &str) -> ApiResult<MachineRecord> {
    let found = match name_or_id.parse::<i64>() {
        Ok(id) => s.store.machine(id)?,
        Err(_) => s
            .store
            .machines(10_000)?
            .into_iter()
            .find(|m| m.name == name_or_id),
    };
    found.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no machine {name_or_id}"),
        )
    })
}

/// A recovery as the API shows it: the record, and its plan for people.
#[derive(Debug, Serialize)]
pub(crate) struct RecoveryView {
    #[serde(flatten)]
    pub job: RecoveryRecord,
    /// The plan as `keel recover plan` prints it.
    pub plan_text: String,
    /// What the operator should know before starting.
    pub warnings: Vec<String>,
}

impl RecoveryView {
    pub(crate) fn new(job: RecoveryRecord) -> Self {
        let plan: Option<Plan> = serde_json::from_value(job.plan.clone()).ok();
        let mut warnings = plan.as_ref().map(|p| p.notes.clone()).unwrap_or_default();
        for n in job.nics["unmapped"].as_array().into_iter().flatten() {
            warnings.push(format!(
                "the profile's NIC {} ({}) has no NIC on this machine to take its place: its \
                 network configuration is kept under its old name and will not come up",
                n["name"].as_str().unwrap_or("?"),
                n["mac"].as_str().unwrap_or("no MAC"),
            ));
        }
        RecoveryView {
            plan_text: plan.as_ref().map(ToString::to_string).unwrap_or_default(),
            warnings,
            job,
        }
    }
}

/// Which of the machine's NICs takes the place of each of the profile's: the mapping apply
/// makes on the machine, from the NICs and the `--nic-map` it reported. An old inventory
/// without them maps nothing.
fn plan_nics(
    profile: &keel_profile::Profile,
    machine: &MachineRecord,
) -> ApiResult<serde_json::Value> {
    let target: Vec<keel_system::TargetNic> =
        serde_json::from_value(machine.inventory["nics"].clone()).unwrap_or_default();
    let explicit = machine.inventory["nic_map"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(serde_json::Value::as_str)
        .map(keel_system::parse_nic_map)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad_request(format!("machine {}'s NIC map: {e}", machine.name)))?;
    let map = keel_system::map_nics(&profile.hardware.nics, &target, &explicit);
    let unmapped: Vec<serde_json::Value> = profile
        .hardware
        .nics
        .iter()
        .filter(|n| !map.iter().any(|m| m.old_name == n.name))
        .map(|n| json!({ "name": n.name, "mac": n.mac }))
        .collect();
    Ok(json!({ "map": map, "unmapped": unmapped }))
}

// ------------------------------------------------------------------ machines

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisterRequest {
    name: String,
    /// `disks` (keel-recover's target disks), `nics`, `firmware`.
    inventory: serde_json::Value,
}

pub(crate) async fn register(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    authorize(&s, &headers, &[TokenKind::Enroll, TokenKind::Admin])?;
    let req: RegisterRequest = parse(&body, "machine registration")?;
    if req.name.trim().is_empty() || req.name.len() > 253 {
        return Err(bad_request(
            "the machine's name must be 1 to 253 characters",
        ));
    }
    let disks: Vec<TargetDisk> = serde_json::from_value(req.inventory["disks"].clone())
        .map_err(|e| bad_request(format!("inventory.disks: {e}")))?;
    if disks.is_empty() {
        return Err(bad_request(
            "the machine offers no disk: give it one with --disk",
        ));
    }
    let token = format!("keel-machine-{}", crate::random_token(16));
    let machine = s.store.register_machine(&NewMachine {
        name: req.name.trim().to_string(),
        token_hash: Hash::of(token.as_bytes()),
        inventory: req.inventory,
        now: crate::now_ms(),
    })?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "machine": machine, "token": token })),
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
pub(crate) struct Limit {
    limit: Option<u32>,
}

pub(crate) async fn machines(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Query<Limit>,
) -> ApiResult<Response> {
    authorize(&s, &headers, READ)?;
    let machines: Vec<serde_json::Value> = s
        .store
        .machines(q.limit.unwrap_or(100).min(1000))?
        .iter()
        .map(|m| machine_json(&s, m))
        .collect();
    Ok(Json(machines).into_response())
}

/// A machine as the API shows it: the record, and whether it is offline.
fn machine_json(s: &AppState, m: &MachineRecord) -> serde_json::Value {
    let mut v = json!(m);
    v["offline"] = json!(offline_for(s, m).is_some());
    v
}

pub(crate) async fn machine(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    authorize(&s, &headers, READ)?;
    Ok(Json(machine_json(&s, &machine_or_404(&s, &name)?)).into_response())
}

// ------------------------------------------------------------------ recoveries

/// A host to recover onto a machine.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateRequest {
    pub host: String,
    /// The machine's name or id.
    pub machine: String,
    /// The profile to rebuild [default: the host's newest].
    #[serde(default)]
    pub profile: Option<i64>,
    /// `SRC=DST` pairs, as `keel recover plan --disk-map` takes them.
    #[serde(default)]
    pub disk_map: Vec<String>,
    #[serde(default)]
    pub allow_degraded: bool,
}

pub(crate) async fn create(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let by = admin(&s, &headers)?;
    let req: CreateRequest = parse(&body, "recovery request")?;
    let view = plan_recovery(&s, &req, &by)?;
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

/// Plans a host's recovery onto a machine and stores it (planned: nothing runs yet); an
/// impossible plan is `422 impossible_plan` with the planner's reason.
pub(crate) fn plan_recovery(
    s: &AppState,
    req: &CreateRequest,
    by: &str,
) -> ApiResult<RecoveryView> {
    let host = find_host(s, &req.host)?;
    let machine = machine_or_404(s, &req.machine)?;
    refuse_offline(s, &machine)?;
    let Some(profile_id) = req.profile.or(host.last_profile_id) else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "no_profile",
            format!("host {} has no profile yet", host.name),
        ));
    };
    let (summary, file) = crate::rollback::load_file(s, profile_id)?;
    if summary.host_id != host.id {
        return Err(bad_request(format!(
            "profile {profile_id} is not a profile of host {}",
            host.name
        )));
    }
    let disks: Vec<TargetDisk> = serde_json::from_value(machine.inventory["disks"].clone())
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "corrupt",
                format!("machine {}'s inventory: {e}", machine.name),
            )
        })?;
    let opts = PlanOptions {
        disk_map: req
            .disk_map
            .iter()
            .map(|m| PlanOptions::parse_disk_map(m))
            .collect::<Result<_, _>>()
            .map_err(|e| bad_request(e.to_string()))?,
        allow_degraded: req.allow_degraded,
    };
    let mut plan = keel_recover::plan(&file.profile, &disks, &opts).map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "impossible_plan",
            format!(
                "host {} cannot be recovered onto machine {}: {e}",
                host.name, machine.name
            ),
        )
    })?;
    plan.source.profile_hash = Some(
        file.hash()
            .map_err(|e| {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "corrupt", e.to_string())
            })?
            .to_hex(),
    );
    let plan = serde_json::to_value(&plan)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "store", e.to_string()))?;
    let job = s.store.create_recovery(&NewRecovery {
        host_id: host.id,
        profile_id,
        machine_id: machine.id,
        plan,
        nics: plan_nics(&file.profile, &machine)?,
        created_by: by.to_string(),
        now: crate::now_ms(),
    })?;
    Ok(RecoveryView::new(job))
}

pub(crate) async fn list(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Query<Limit>,
) -> ApiResult<Response> {
    authorize(&s, &headers, READ)?;
    let jobs: Vec<RecoveryView> = s
        .store
        .recoveries(q.limit.unwrap_or(100).min(1000))?
        .into_iter()
        .map(RecoveryView::new)
        .collect();
    Ok(Json(jobs).into_response())
}

pub(crate) async fn show(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> ApiResult<Response> {
    authorize(&s, &headers, READ)?;
    Ok(Json(RecoveryView::new(job_or_404(&s, id)?)).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StartRequest {
    /// The host's name, typed: starting wipes the machine's planned disks.
    #[serde(default)]
    confirm: String,
}

pub(crate) async fn start(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    body: Bytes,
) -> ApiResult<Response> {
    let by = admin(&s, &headers)?;
    let req: StartRequest = parse(&body, "start request")?;
    Ok(Json(start_recovery(&s, id, &req.confirm, &by)?).into_response())
}

pub(crate) async fn cancel(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> ApiResult<Response> {
    let by = admin(&s, &headers)?;
    job_or_404(&s, id)?;
    let job = s.store.cancel_recovery(id, &by, crate::now_ms())?;
    Ok(Json(RecoveryView::new(job)).into_response())
}

/// Starts a planned recovery; `confirm` must be the host's name, typed.
pub(crate) fn start_recovery(
    s: &AppState,
    id: i64,
    confirm: &str,
    by: &str,
) -> ApiResult<RecoveryView> {
    let job = job_or_404(s, id)?;
    if confirm.trim() != job.host {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "confirmation",
            format!(
                "starting recovery {id} erases the planned disks of machine {}: confirm with the \
                 host's name ({:?})",
                job.machine, job.host
            ),
        ));
    }
    refuse_offline(s, &machine_or_404(s, &job.machine_id.to_string())?)?;
    let job = s.store.start_recovery(id, by, crate::now_ms())?;
    Ok(RecoveryView::new(job))
}

/// How long a machine that is not busy has not asked for work, when that is longer than the
/// server's `machine_offline_after`: it is gone (switched off, rebooted, its `keel rescue`
/// stopped) and nothing is planned or started on it.
pub(crate) fn offline_for(s: &AppState, m: &MachineRecord) -> Option<Duration> {
    let silent = Duration::from_millis(u64::try_from(crate::now_ms() - m.seen_at_ms).ok()?);
    (m.busy_with.is_none() && silent > s.machine_offline_after).then_some(silent)
}

fn refuse_offline(s: &AppState, m: &MachineRecord) -> ApiResult<()> {
    match offline_for(s, m) {
        Some(silent) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "machine_offline",
            format!(
                "machine {} is offline: it last asked for work {} s ago\nhint: start `keel \
                 rescue --server` on it again (it registers anew), or choose a waiting machine",
                m.name,
                silent.as_secs()
            ),
        )),
        None => Ok(()),
    }
}

// ------------------------------------------------------------------ the machine's side

#[derive(Debug, Deserialize)]
pub(crate) struct Wait {
    /// Seconds to hold the request open while there is no work (at most 30).
    wait: Option<u64>,
}

pub(crate) async fn next(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Query<Wait>,
) -> ApiResult<Response> {
    let machine = machine_auth(&s, &headers)?;
    let until = Instant::now() + Duration::from_secs(q.wait.unwrap_or(0)).min(MAX_WAIT);
    loop {
        if let Some(job) = s.store.take_recovery(machine.id, crate::now_ms())? {
            return Ok(Json(job).into_response());
        }
        if Instant::now() >= until {
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn running_job(s: &AppState, machine: &MachineRecord, id: i64) -> ApiResult<RecoveryRecord> {
    let job = job_or_404(s, id)?;
    if job.machine_id != machine.id {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("recovery {id} is not for this machine"),
        ));
    }
    Ok(job)
}

pub(crate) async fn profile(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> ApiResult<Response> {
    let machine = machine_auth(&s, &headers)?;
    let job = running_job(&s, &machine, id)?;
    if job.status != "running" {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!("recovery {id} is {}, not running", job.status),
        ));
    }
    let (_, file) = crate::rollback::load_file(&s, job.profile_id)?;
    let bytes = file
        .encode()
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "corrupt", e.to_string()))?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct ProgressEvent {
    /// `storage`, `base`, `packages`, …, `verify`.
    phase: String,
    /// `started` or `finished`.
    state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
    /// Set by the server.
    #[serde(default, skip_deserializing)]
    at_ms: i64,
}

pub(crate) async fn progress(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    body: Bytes,
) -> ApiResult<Response> {
    let machine = machine_auth(&s, &headers)?;
    running_job(&s, &machine, id)?;
    let mut event: ProgressEvent = parse(&body, "progress event")?;
    if !matches!(event.state.as_str(), "started" | "finished") {
        return Err(bad_request("state must be started or finished"));
    }
    event.at_ms = crate::now_ms();
    let event = serde_json::to_value(&event)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "store", e.to_string()))?;
    let job = s.store.record_progress(id, machine.id, &event)?;
    Ok(Json(json!({ "id": job.id, "status": job.status, "phase": job.phase })).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FinishRequest {
    ok: bool,
    #[serde(default)]
    error: Option<String>,
    /// The recovery report (`keel recover apply`'s JSON report).
    #[serde(default)]
    report: Option<serde_json::Value>,
}

pub(crate) async fn finish(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    body: Bytes,
) -> ApiResult<Response> {
    let machine = machine_auth(&s, &headers)?;
    running_job(&s, &machine, id)?;
    let req: FinishRequest = parse(&body, "finish report")?;
    // Done means verified: a report that says otherwise wins over the machine's word.
    let report_ok = req
        .report
        .as_ref()
        .is_none_or(|r| r["ok"].as_bool().unwrap_or(false));
    let ok = req.ok && report_ok && req.error.is_none();
    let reason = if ok {
        None
    } else {
        Some(
            req.error
                .clone()
                .or_else(|| {
                    req.report
                        .as_ref()
                        .and_then(|r| r["error"].as_str().map(String::from))
                })
                .unwrap_or_else(|| {
                    "the recovered system did not pass its verification".to_string()
                }),
        )
    };
    let job = s.store.finish_recovery(
        id,
        machine.id,
        &RecoveryEnd {
            ok,
            reason,
            report: req.report,
        },
        crate::now_ms(),
    )?;
    Ok(Json(RecoveryView::new(job)).into_response())
}
