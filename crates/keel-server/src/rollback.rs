//! Rollback jobs: an admin proposes one from a selection of a host's changes (the server
//! builds the plan against the earlier profile and the host's newest one), approves or
//! rejects it; the host's agent fetches the approved job, applies it, captures, uploads and
//! reports; the job is done only when that new profile shows the selected rows as the earlier
//! profile had them.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use keel_profile::{Blob, Hash, Profile, ProfileFile, Upload, UploadBody};
use keel_rollback::{build_plan, remaining, Plan, PlanOptions, Selector};
use keel_store::{NewRollback, RollbackEnd, RollbackRecord, TokenKind};
use serde::Deserialize;

use crate::api::{authorize, find_host, load, ApiError, ApiResult, AppState, READ};

/// How far an agent's clock may be from the server's.
const MAX_SKEW_MS: i64 = 5 * 60 * 1000;

fn bad_request(m: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "malformed", m)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateRequest {
    pub host: String,
    /// The profile to go back to.
    pub to: i64,
    /// The profile in which the changes appear (default: the host's newest).
    #[serde(default)]
    pub from: Option<i64>,
    /// `SECTION:KEY` selectors.
    pub only: Vec<String>,
    /// Include rows that changed again later.
    #[serde(default)]
    pub force: bool,
    /// Who proposes it.
    #[serde(default)]
    pub by: Option<String>,
}

/// A stored profile with the blobs it refers to.
pub(crate) fn load_file(
    s: &AppState,
    id: i64,
) -> ApiResult<(keel_store::ProfileSummary, ProfileFile)> {
    let (summary, profile) = load(s, id)?;
    let mut blobs = BTreeMap::new();
    for h in profile.blob_refs() {
        if let Some(b) = s.store.blob(&h)? {
            blobs.insert(h, Blob(b));
        }
    }
    Ok((
        summary,
        ProfileFile {
            profile,
            blobs,
            signature: None,
        },
    ))
}

pub(crate) async fn create(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    authorize(&s, &headers, &[TokenKind::Admin])?;
    let req: CreateRequest = serde_json::from_slice(&body)
        .map_err(|e| bad_request(format!("invalid rollback request: {e}")))?;
    let job = propose(&s, req)?;
    Ok((StatusCode::CREATED, Json(job)).into_response())
}

/// Plans a rollback and stores it as proposed (the API's and the UI's).
pub(crate) fn propose(s: &AppState, req: CreateRequest) -> ApiResult<RollbackRecord> {
    let host = find_host(s, &req.host)?;
    let Some(newest) = host.last_profile_id else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "no_profile",
            format!("host {} has no profile yet", host.name),
        ));
    };
    let from = req.from.unwrap_or(newest);
    let selection: Vec<Selector> = req
        .only
        .iter()
        .map(|o| o.parse())
        .collect::<Result<_, _>>()
        .map_err(|e: keel_rollback::RollbackError| bad_request(e.to_string()))?;
    let (to_sum, before) = load_file(s, req.to)?;
    let (from_sum, after) = load(s, from)?;
    let (_, current) = load(s, newest)?;
    if to_sum.host_id != host.id || from_sum.host_id != host.id {
        return Err(bad_request(format!(
            "profiles {} and {from} must both be profiles of host {}",
            req.to, host.name
        )));
    }
    let plan = build_plan(
        &before,
        &after,
        &current,
        &selection,
        PlanOptions { force: req.force },
    )
    .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "no_match", e.to_string()))?;
    let job = s.store.create_rollback(&NewRollback {
        host_id: host.id,
        from_profile: from,
        to_profile: req.to,
        selection: req.only.clone(),
        plan: serde_json::to_value(&plan).map_err(|e| bad_request(e.to_string()))?,
        created_by: req.by.unwrap_or_else(|| "admin".into()),
        now: crate::now_ms(),
    })?;
    Ok(job)
}

#[derive(Debug, Deserialize)]
pub(crate) struct ListQuery {
    host: Option<String>,
    limit: Option<u32>,
}

pub(crate) async fn list(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> ApiResult<Response> {
    authorize(&s, &headers, READ)?;
    let host_id = match &q.host {
        Some(name) => Some(find_host(&s, name)?.id),
        None => None,
    };
    let jobs = s
        .store
        .rollbacks(host_id, q.limit.unwrap_or(100).min(1000))?;
    Ok(Json(jobs).into_response())
}

pub(crate) fn job_or_404(s: &AppState, id: i64) -> ApiResult<RollbackRecord> {
    s.store.rollback(id)?.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no rollback {id}"),
        )
    })
}

pub(crate) async fn show(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> ApiResult<Response> {
    authorize(&s, &headers, READ)?;
    Ok(Json(job_or_404(&s, id)?).into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Decision {
    #[serde(default)]
    by: Option<String>,
    #[serde(default)]
    reason: Option<String>,
}

fn decide(
    s: &AppState,
    headers: &HeaderMap,
    id: i64,
    body: &[u8],
    approve: bool,
) -> ApiResult<Response> {
    authorize(s, headers, &[TokenKind::Admin])?;
    let d: Decision = if body.iter().all(u8::is_ascii_whitespace) {
        Decision::default()
    } else {
        serde_json::from_slice(body).map_err(|e| bad_request(format!("invalid decision: {e}")))?
    };
    let by =
        d.by.filter(|b| !b.trim().is_empty())
            .unwrap_or_else(|| "admin".into());
    let job = decide_as(s, id, approve, &by, d.reason.as_deref())?;
    Ok(Json(job).into_response())
}

/// Approves or rejects a proposed rollback, recording who (the API's and the UI's).
pub(crate) fn decide_as(
    s: &AppState,
    id: i64,
    approve: bool,
    by: &str,
    reason: Option<&str>,
) -> ApiResult<RollbackRecord> {
    job_or_404(s, id)?;
    Ok(s.store
        .decide_rollback(id, approve, by, reason, crate::now_ms())?)
}

pub(crate) async fn approve(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    body: Bytes,
) -> ApiResult<Response> {
    decide(&s, &headers, id, &body, true)
}

pub(crate) async fn reject(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    body: Bytes,
) -> ApiResult<Response> {
    decide(&s, &headers, id, &body, false)
}

// ------------------------------------------------------------------ the agent's side

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentRequest {
    agent_id: String,
    /// The agent's clock, ms: requests older or newer than a few minutes are refused.
    at_ms: i64,
    /// Report only: the job applied without error.
    #[serde(default)]
    ok: bool,
    /// Report only: why it failed.
    #[serde(default)]
    error: Option<String>,
    /// Report only: the profile captured (and uploaded) after the job.
    #[serde(default)]
    profile_hash: Option<Hash>,
    /// Report only: what each step did.
    #[serde(default)]
    output: Option<String>,
}

/// Checks an agent's signed request (`X-Keel-Signature`, base64 of the ed25519 signature of
/// [`keel_rollback::agent_request_hash`] of the body, made with the agent's enrollment key)
/// and returns it with the agent's host id.
fn agent_request(s: &AppState, headers: &HeaderMap, body: &[u8]) -> ApiResult<(AgentRequest, i64)> {
    use base64::Engine as _;
    let unauthorized = |m: String| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", m);
    let req: AgentRequest = serde_json::from_slice(body)
        .map_err(|e| bad_request(format!("invalid agent request: {e}")))?;
    let sig = headers
        .get("x-keel-signature")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            base64::engine::general_purpose::STANDARD
                .decode(v.trim())
                .ok()
        })
        .ok_or_else(|| unauthorized("missing or malformed X-Keel-Signature".into()))?;
    let agent = s
        .store
        .agent(&req.agent_id)?
        .ok_or_else(|| unauthorized(format!("unknown agent {}", req.agent_id)))?;
    if agent.revoked {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "agent {} was replaced by a newer enrollment of its host",
                agent.id
            ),
        ));
    }
    // Verified exactly as uploads are: the same key, the same signature scheme.
    let check = Upload {
        agent_id: agent.id.clone(),
        profile_hash: keel_rollback::agent_request_hash(body),
        signature: Blob(sig),
        body: UploadBody::Full(Blob(Vec::new())),
        blobs: BTreeMap::new(),
    };
    check
        .verify(&agent.public_key)
        .map_err(|e| unauthorized(e.to_string()))?;
    if (crate::now_ms() - req.at_ms).abs() > MAX_SKEW_MS {
        return Err(unauthorized(
            "the request's time is more than 5 minutes from the server's clock".into(),
        ));
    }
    Ok((req, agent.host_id))
}

pub(crate) async fn next(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let (_, host_id) = agent_request(&s, &headers, &body)?;
    match s.store.next_rollback(host_id, crate::now_ms())? {
        Some(job) => Ok(Json(job).into_response()),
        None => Ok(StatusCode::NO_CONTENT.into_response()),
    }
}

pub(crate) async fn report(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    body: Bytes,
) -> ApiResult<Response> {
    let (req, host_id) = agent_request(&s, &headers, &body)?;
    let job = job_or_404(&s, id)?;
    if job.host_id != host_id {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "wrong_host",
            format!("rollback {id} is not for this agent's host"),
        ));
    }
    let mut end = RollbackEnd {
        done: false,
        reason: None,
        result_profile: None,
        output: req.output.clone(),
    };
    if let Some(h) = &req.profile_hash {
        let Some(summary) = s.store.profile_by_hash(h)? else {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "profile_not_stored",
                format!(
                    "profile {} is not stored yet: deliver it, then report",
                    h.short()
                ),
            ));
        };
        if summary.host_id != host_id {
            return Err(bad_request("the reported profile is of another host"));
        }
        end.result_profile = Some(summary.id);
    }
    if !req.ok {
        end.reason = Some(
            req.error
                .clone()
                .unwrap_or_else(|| "the agent reported a failure".into()),
        );
    } else if let Some(result) = end.result_profile {
        let plan: Plan = serde_json::from_value(job.plan.clone()).map_err(|e| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "corrupt", e.to_string())
        })?;
        let (_, before): (_, Profile) = load(&s, job.to_profile)?;
        let (_, now) = load(&s, result)?;
        let left = remaining(&plan, &before, &now);
        if left.is_empty() {
            end.done = true;
        } else {
            end.reason = Some(format!(
                "the profile captured after the rollback still shows the selected changes: {}",
                left.join("; ")
            ));
        }
    } else {
        end.reason = Some("the agent applied the plan but reported no new profile".into());
    }
    let job = s.store.finish_rollback(id, &end, crate::now_ms())?;
    Ok(Json(job).into_response())
}
