//! Configs: drafts, edits, submit / approve / reject, versions, restore, diff, proxy assignment.
//!
//! State machine of the *working* version: draft → (submit) → pending_approval → (approve) →
//! active, or (reject) → draft. Editing an active config opens a new draft version; approving it
//! supersedes the previous active version in the same transaction.

use apm_store::configs::{ConfigRow, VersionRow};
use apm_store::{AnyConnection, new_id, now_ms};
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::util::{check_len, fmt_ms, fmt_opt};
use crate::audit::{self, Actor, NONE};
use crate::auth::{Caller, Role};
use crate::bundle::{self, check_policy};
use crate::error::{ApiError, ApiResult, Json, Path, Query};
use crate::settings::ApprovalMode;
use crate::state::AppState;

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_configs, create_config))
        .routes(routes!(get_config, update_config))
        .routes(routes!(submit))
        .routes(routes!(approve))
        .routes(routes!(reject))
        .routes(routes!(list_versions))
        .routes(routes!(get_version))
        .routes(routes!(restore_version))
        .routes(routes!(diff))
        .routes(routes!(assign_proxies))
        .routes(routes!(unassign_proxy))
        .routes(routes!(policy_template))
}

/// A config in lists.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConfigView {
    /// Id.
    pub id: String,
    /// Unique name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// Status of the working version (draft / pending_approval), else `active`.
    pub status: String,
    /// Version distributed to proxies.
    pub active_version: Option<i64>,
    /// Draft or pending version number.
    pub working_version: Option<i64>,
    /// Number of assigned proxies.
    pub proxy_count: usize,
    /// User id.
    pub created_by: String,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
}

/// One version.
#[derive(Debug, Serialize, ToSchema)]
pub struct VersionView {
    /// Number.
    pub version: i64,
    /// draft | pending_approval | active | superseded.
    pub status: String,
    /// The policy document.
    #[schema(value_type = Object)]
    pub policy: Value,
    /// Content hash of the bundle per ATS major ("9", "10").
    #[schema(value_type = Object)]
    pub hashes: Value,
    /// User id.
    pub created_by: String,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
    /// User ids that created or edited this version.
    pub editors: Vec<String>,
    /// User id.
    pub submitted_by: Option<String>,
    /// RFC 3339.
    pub submitted_at: Option<String>,
    /// User id.
    pub approved_by: Option<String>,
    /// RFC 3339.
    pub approved_at: Option<String>,
    /// User id of the last rejection.
    pub rejected_by: Option<String>,
    /// RFC 3339.
    pub rejected_at: Option<String>,
    /// Reason of the last rejection.
    pub reject_reason: Option<String>,
    /// Version this draft was restored from.
    pub restored_from: Option<i64>,
}

impl VersionView {
    fn of(v: &VersionRow) -> ApiResult<VersionView> {
        Ok(VersionView {
            version: v.version,
            status: v.status.clone(),
            policy: serde_json::from_str(&v.policy).map_err(ApiError::internal)?,
            hashes: json!({"9": v.hash_v9, "10": v.hash_v10}),
            created_by: v.created_by.clone(),
            created_at: fmt_ms(v.created_at),
            updated_at: fmt_ms(v.updated_at),
            editors: v.editor_ids()?,
            submitted_by: v.submitted_by.clone(),
            submitted_at: fmt_opt(v.submitted_at),
            approved_by: v.approved_by.clone(),
            approved_at: fmt_opt(v.approved_at),
            rejected_by: v.rejected_by.clone(),
            rejected_at: fmt_opt(v.rejected_at),
            reject_reason: v.reject_reason.clone(),
            restored_from: v.restored_from,
        })
    }
}

/// A config with its working and active versions and its proxies.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConfigDetail {
    /// Summary.
    #[serde(flatten)]
    pub config: ConfigView,
    /// Draft or pending version.
    pub working: Option<VersionView>,
    /// Active version.
    pub active: Option<VersionView>,
    /// Assigned proxies, by hostname: the first [`PROXY_REFS_LIMIT`] (1,000) of them.
    pub proxies: Vec<ProxyRef>,
    /// True when more proxies are assigned than `proxies` lists (`proxy_count` has them all;
    /// `GET /api/v1/proxies` lists every proxy with its `config_id`).
    pub proxies_truncated: bool,
    /// Present only when the change this answers committed but the list of proxies could not
    /// be read afterwards: `proxies` is then empty (`proxy_count` is right); read the config
    /// again for the list.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxies_unavailable: Option<String>,
}

/// A proxy reference.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProxyRef {
    /// Id.
    pub id: String,
    /// Hostname.
    pub hostname: String,
}

async fn config_view(conn: &mut AnyConnection, c: &ConfigRow) -> ApiResult<ConfigView> {
    let working = apm_store::configs::working_version(&mut *conn, &c.id).await?;
    let proxy_count = apm_store::proxies::count_proxies_of_config(&mut *conn, &c.id).await?;
    Ok(ConfigView {
        id: c.id.clone(),
        name: c.name.clone(),
        description: c.description.clone(),
        status: working
            .as_ref()
            .map(|w| w.status.clone())
            .unwrap_or_else(|| "active".into()),
        active_version: c.active_version,
        working_version: working.map(|w| w.version),
        proxy_count: usize::try_from(proxy_count).unwrap_or(0),
        created_by: c.created_by.clone(),
        created_at: fmt_ms(c.created_at),
        updated_at: fmt_ms(c.updated_at),
    })
}

/// Most proxies a config's answer lists. An approval's answer used to list every assigned proxy:
/// at 100,000 proxies that was a 15-second read on SQLite and an 8 MB answer, made while the
/// new version was being delivered to those same proxies.
pub const PROXY_REFS_LIMIT: usize = 1000;

async fn config_detail(conn: &mut AnyConnection, c: &ConfigRow) -> ApiResult<ConfigDetail> {
    let mut detail = config_summary(&mut *conn, c).await?;
    detail.proxies = proxy_refs(&mut *conn, &c.id).await?;
    detail.proxies_truncated = detail.config.proxy_count > detail.proxies.len();
    Ok(detail)
}

/// [`config_detail`] without the list of proxies (`proxy_count` is set).
async fn config_summary(conn: &mut AnyConnection, c: &ConfigRow) -> ApiResult<ConfigDetail> {
    let view = config_view(&mut *conn, c).await?;
    let working = apm_store::configs::working_version(&mut *conn, &c.id).await?;
    let active = match c.active_version {
        Some(v) => apm_store::configs::get_version(&mut *conn, &c.id, v).await?,
        None => None,
    };
    Ok(ConfigDetail {
        config: view,
        working: working.as_ref().map(VersionView::of).transpose()?,
        active: active.as_ref().map(VersionView::of).transpose()?,
        proxies: Vec::new(),
        proxies_truncated: false,
        proxies_unavailable: None,
    })
}

async fn proxy_refs(conn: &mut AnyConnection, config_id: &str) -> ApiResult<Vec<ProxyRef>> {
    Ok(
        apm_store::proxies::list_proxy_refs_of_config(conn, config_id, PROXY_REFS_LIMIT as i64)
            .await?
            .into_iter()
            .map(|(id, hostname)| ProxyRef { id, hostname })
            .collect(),
    )
}

async fn load_config(conn: &mut AnyConnection, id: &str) -> ApiResult<ConfigRow> {
    apm_store::configs::get_config(conn, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no config with id {id}")))
}

/// What the audit trail keeps of a version.
fn version_audit(v: &VersionRow) -> Value {
    json!({"version": v.version, "status": v.status, "policy": serde_json::from_str::<Value>(&v.policy).unwrap_or(Value::Null),
           "hash_v9": v.hash_v9, "hash_v10": v.hash_v10})
}

/// Describes where a config stands, for 409 answers.
async fn state_of(conn: &mut AnyConnection, c: &ConfigRow) -> ApiResult<String> {
    Ok(
        match apm_store::configs::working_version(conn, &c.id).await? {
            Some(w) => format!("version {} is {}", w.version, w.status),
            None => match c.active_version {
                Some(v) => format!("version {v} is active and there is no draft"),
                None => "it has no versions".to_string(),
            },
        },
    )
}

/// Lists configs.
#[utoipa::path(get, path = "/api/v1/configs", tag = "configs",
    responses((status = 200, body = Vec<ConfigView>), (status = 401, body = crate::error::Problem)))]
async fn list_configs(
    State(state): State<AppState>,
    _caller: Caller,
) -> ApiResult<Json<Vec<ConfigView>>> {
    let mut conn = state.db.acquire().await?;
    let configs = apm_store::configs::list_configs(&mut conn).await?;
    let mut out = Vec::with_capacity(configs.len());
    for c in &configs {
        out.push(config_view(&mut conn, c).await?);
    }
    Ok(Json(out))
}

/// New config.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateConfig {
    /// Unique name, 1-100 characters.
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// The policy document (see GET /api/v1/policy/template).
    #[schema(value_type = Object)]
    pub policy: Value,
}

fn check_config_name(name: &str) -> ApiResult<()> {
    if name.trim().is_empty() {
        return Err(ApiError::invalid("name: must not be empty"));
    }
    check_len("name", name, 100)
}

/// Creates a config with a draft version 1.
#[utoipa::path(post, path = "/api/v1/configs", tag = "configs", request_body = CreateConfig,
    responses((status = 201, body = ConfigDetail), (status = 403, body = crate::error::Problem),
              (status = 409, body = crate::error::Problem), (status = 422, body = crate::error::Problem)))]
async fn create_config(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<CreateConfig>,
) -> ApiResult<(StatusCode, Json<ConfigDetail>)> {
    caller.require(Role::Admin)?;
    check_config_name(&body.name)?;
    check_len("description", &body.description, 2000)?;
    let checked = check_policy(&body.policy)?;
    let now = now_ms();
    let config = ConfigRow {
        id: new_id(),
        name: body.name,
        description: body.description,
        created_by: caller.user_id.clone(),
        created_at: now,
        updated_at: now,
        active_version: None,
    };
    let version = VersionRow {
        id: new_id(),
        config_id: config.id.clone(),
        version: 1,
        status: "draft".into(),
        policy: checked.json,
        hash_v9: checked.hash_v9,
        hash_v10: checked.hash_v10,
        created_by: caller.user_id.clone(),
        created_at: now,
        updated_at: now,
        editors: json!([caller.user_id]).to_string(),
        submitted_by: None,
        submitted_at: None,
        approved_by: None,
        approved_at: None,
        rejected_by: None,
        rejected_at: None,
        reject_reason: None,
        restored_from: None,
    };
    let mut tx = state.db.begin_write().await?;
    apm_store::configs::insert_config(&mut tx, &config).await?;
    apm_store::configs::insert_version(&mut tx, &version).await?;
    let new = json!({"name": config.name, "description": config.description, "version": version_audit(&version)});
    audit::record(
        &mut tx,
        &Actor::from(&caller),
        "config.create",
        "config",
        Some(&config.id),
        NONE,
        Some(&new),
    )
    .await?;
    let detail = config_detail(&mut tx, &config).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(detail)))
}

/// One config with its working and active versions.
#[utoipa::path(get, path = "/api/v1/configs/{id}", tag = "configs", params(("id" = String, Path, description = "Config id")),
    responses((status = 200, body = ConfigDetail), (status = 404, body = crate::error::Problem)))]
async fn get_config(
    State(state): State<AppState>,
    _caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<ConfigDetail>> {
    let mut conn = state.db.acquire().await?;
    let c = load_config(&mut conn, &id).await?;
    Ok(Json(config_detail(&mut conn, &c).await?))
}

/// Changes to a config; absent fields stay.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateConfig {
    /// New name.
    pub name: Option<String>,
    /// New description.
    pub description: Option<String>,
    /// New policy: replaces the draft, or opens a new draft version when the config is active.
    #[schema(value_type = Option<Object>)]
    pub policy: Option<Value>,
}

/// Edits a config. A policy change edits the draft, or opens a new draft version when only an
/// active version exists; a pending version must be rejected before it can be edited (409).
#[utoipa::path(put, path = "/api/v1/configs/{id}", tag = "configs", request_body = UpdateConfig,
    params(("id" = String, Path, description = "Config id")),
    responses((status = 200, body = ConfigDetail), (status = 409, body = crate::error::Problem),
              (status = 422, body = crate::error::Problem)))]
async fn update_config(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Json(body): Json<UpdateConfig>,
) -> ApiResult<Json<ConfigDetail>> {
    caller.require(Role::Admin)?;
    if let Some(n) = &body.name {
        check_config_name(n)?;
    }
    if let Some(d) = &body.description {
        check_len("description", d, 2000)?;
    }
    if body.name.is_none() && body.description.is_none() && body.policy.is_none() {
        return Err(ApiError::invalid(
            "nothing to change: send name, description and/or policy",
        ));
    }
    let checked = body.policy.as_ref().map(check_policy).transpose()?;
    let now = now_ms();
    let actor = Actor::from(&caller);
    let mut tx = state.db.begin_write().await?;
    let mut config = load_config(&mut tx, &id).await?;
    // One request is one audit row, whatever mix of name, description and policy it changes.
    let mut old = json!({"name": config.name, "description": config.description});
    let mut action = "config.update";
    if body.name.is_some() || body.description.is_some() {
        if let Some(n) = body.name {
            config.name = n;
        }
        if let Some(d) = body.description {
            config.description = d;
        }
        config.updated_at = now;
        apm_store::configs::update_config_meta(&mut tx, &config).await?;
    }
    let mut new = json!({"name": config.name, "description": config.description});
    if let Some(checked) = checked {
        match apm_store::configs::working_version(&mut tx, &config.id).await? {
            Some(w) if w.status == "pending_approval" => {
                return Err(ApiError::conflict(format!(
                    "config {:?} version {} is pending_approval; reject it before editing",
                    config.name, w.version
                ))
                .with("current_state", "pending_approval"));
            }
            Some(mut w) => {
                old["version"] = version_audit(&w);
                let mut editors = w.editor_ids()?;
                if !editors.contains(&caller.user_id) {
                    editors.push(caller.user_id.clone());
                }
                w.policy = checked.json;
                w.hash_v9 = checked.hash_v9;
                w.hash_v10 = checked.hash_v10;
                w.editors = json!(editors).to_string();
                w.updated_at = now;
                if !apm_store::configs::update_draft(&mut tx, &w).await? {
                    return Err(ApiError::conflict(format!(
                        "version {} changed state concurrently; retry",
                        w.version
                    )));
                }
                new["version"] = version_audit(&w);
                action = "config.edit";
            }
            None => {
                let next = apm_store::configs::max_version(&mut tx, &config.id).await? + 1;
                let v = new_draft(&config.id, next, checked, &caller.user_id, now, None);
                apm_store::configs::insert_version(&mut tx, &v).await?;
                new["version"] = version_audit(&v);
                action = "config.new_version";
            }
        }
    }
    audit::record(
        &mut tx,
        &actor,
        action,
        "config",
        Some(&config.id),
        Some(&old),
        Some(&new),
    )
    .await?;
    let detail = config_detail(&mut tx, &config).await?;
    tx.commit().await?;
    Ok(Json(detail))
}

fn new_draft(
    config_id: &str,
    version: i64,
    checked: bundle::CheckedPolicy,
    user: &str,
    now: i64,
    restored_from: Option<i64>,
) -> VersionRow {
    VersionRow {
        id: new_id(),
        config_id: config_id.to_string(),
        version,
        status: "draft".into(),
        policy: checked.json,
        hash_v9: checked.hash_v9,
        hash_v10: checked.hash_v10,
        created_by: user.to_string(),
        created_at: now,
        updated_at: now,
        editors: json!([user]).to_string(),
        submitted_by: None,
        submitted_at: None,
        approved_by: None,
        approved_at: None,
        rejected_by: None,
        rejected_at: None,
        reject_reason: None,
        restored_from,
    }
}

/// Submits the draft for approval.
#[utoipa::path(post, path = "/api/v1/configs/{id}/submit", tag = "configs", params(("id" = String, Path, description = "Config id")),
    responses((status = 200, body = ConfigDetail), (status = 409, body = crate::error::Problem)))]
async fn submit(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<ConfigDetail>> {
    caller.require(Role::Admin)?;
    let mut tx = state.db.begin_write().await?;
    let config = load_config(&mut tx, &id).await?;
    let working = apm_store::configs::working_version(&mut tx, &id).await?;
    let Some(w) = working.filter(|w| w.status == "draft") else {
        let current = state_of(&mut tx, &config).await?;
        return Err(ApiError::conflict(format!(
            "config {:?} has no draft to submit: {current}",
            config.name
        ))
        .with("current_state", current));
    };
    if !apm_store::configs::mark_submitted(&mut tx, &w.id, &caller.user_id, now_ms()).await? {
        return Err(ApiError::conflict(format!(
            "version {} changed state concurrently; retry",
            w.version
        )));
    }
    audit::record(
        &mut tx,
        &Actor::from(&caller),
        "config.submit",
        "config",
        Some(&id),
        Some(&json!({"version": w.version, "status": "draft"})),
        Some(&json!({"version": w.version, "status": "pending_approval"})),
    )
    .await?;
    let detail = config_detail(&mut tx, &config).await?;
    tx.commit().await?;
    Ok(Json(detail))
}

/// Approves the pending version: it becomes active (superseding the previous active version)
/// and waiting agents are woken. `self_confirm`: only the submitter confirms; `four_eyes`: the
/// approver must be neither the submitter nor an editor.
#[utoipa::path(post, path = "/api/v1/configs/{id}/approve", tag = "configs", params(("id" = String, Path, description = "Config id")),
    responses((status = 200, body = ConfigDetail), (status = 403, body = crate::error::Problem),
              (status = 409, body = crate::error::Problem)))]
async fn approve(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<ConfigDetail>> {
    caller.require(Role::Admin)?;
    let mut tx = state.db.begin_write().await?;
    let config = load_config(&mut tx, &id).await?;
    let working = apm_store::configs::working_version(&mut tx, &id).await?;
    let Some(w) = working.filter(|w| w.status == "pending_approval") else {
        let current = state_of(&mut tx, &config).await?;
        return Err(ApiError::conflict(format!(
            "config {:?} has no version pending approval: {current}",
            config.name
        ))
        .with("current_state", current));
    };
    let submitter = w.submitted_by.clone().unwrap_or_default();
    match state.settings.approval_mode {
        ApprovalMode::SelfConfirm => {
            if submitter != caller.user_id {
                return Err(ApiError::forbidden(format!(
                    "approval mode is self_confirm: only the submitter (user {submitter}) confirms version {}",
                    w.version
                )));
            }
        }
        ApprovalMode::FourEyes => {
            if submitter == caller.user_id {
                return Err(ApiError::forbidden(
                    "approval mode is four_eyes: the submitter cannot approve their own version",
                ));
            }
            if w.editor_ids()?.contains(&caller.user_id) {
                return Err(ApiError::forbidden(
                    "approval mode is four_eyes: you edited this version, so someone else must approve it",
                ));
            }
        }
    }
    let now = now_ms();
    if !apm_store::configs::mark_approved(&mut tx, &w.id, &caller.user_id, now).await? {
        return Err(ApiError::conflict(format!(
            "version {} of config {:?} was approved or rejected concurrently",
            w.version, config.name
        )));
    }
    apm_store::configs::supersede_others(&mut tx, &id, &w.id, now).await?;
    apm_store::configs::set_active_version(&mut tx, &id, w.version, now).await?;
    let generation = state
        .hub
        .pending(apm_store::telemetry::bump_generation(&mut tx).await?);
    audit::record(&mut tx, &Actor::from(&caller), "config.approve", "config", Some(&id),
        Some(&json!({"version": w.version, "status": "pending_approval", "active_version": config.active_version})),
        Some(&json!({"version": w.version, "status": "active", "active_version": w.version,
                     "approval_mode": state.settings.approval_mode.as_str()}))).await?;
    // Everything of the answer but the list of proxies (a count, and a few rows) is read in
    // the transaction, so the answer cannot fail once the approval committed.
    let config = load_config(&mut tx, &id).await?;
    let detail = config_summary(&mut tx, &config).await?;
    tx.commit().await?;
    generation.committed();
    // An approval changes no proxy row: waiters only re-resolve their config. They are woken
    // before the list of proxies is read: with a large fleet, listing them takes longer than
    // delivering the new version to all of them.
    state.hub.notify_configs();
    Ok(Json(with_proxy_refs(&state, detail, &id).await))
}

/// Adds the list of proxies to an answer built inside a committed transaction. Reading it can
/// fail (database gone, pool exhausted); the change is committed all the same, so the answer is
/// still 200 and says the list is missing instead of turning into an error.
async fn with_proxy_refs(state: &AppState, mut detail: ConfigDetail, id: &str) -> ConfigDetail {
    let listed = async {
        let mut conn = state.db.acquire().await?;
        proxy_refs(&mut conn, id).await
    }
    .await;
    match listed {
        Ok(refs) => {
            detail.proxies = refs;
            detail.proxies_truncated = detail.config.proxy_count > detail.proxies.len();
        }
        Err(e) => {
            tracing::warn!(config_id = %id, error = ?e, "listing proxies for an answer after commit failed");
            detail.proxies_unavailable = Some(
                "the change is committed, but the list of proxies could not be read; GET the config for it"
                    .into(),
            );
        }
    }
    detail
}

/// Rejection.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RejectRequest {
    /// Why (1-2000 characters); shown to the editors.
    pub reason: String,
}

/// Rejects the pending version back to draft.
#[utoipa::path(post, path = "/api/v1/configs/{id}/reject", tag = "configs", request_body = RejectRequest,
    params(("id" = String, Path, description = "Config id")),
    responses((status = 200, body = ConfigDetail), (status = 409, body = crate::error::Problem),
              (status = 422, body = crate::error::Problem)))]
async fn reject(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Json(body): Json<RejectRequest>,
) -> ApiResult<Json<ConfigDetail>> {
    caller.require(Role::Admin)?;
    if body.reason.trim().is_empty() {
        return Err(ApiError::invalid("reason: must not be empty"));
    }
    check_len("reason", &body.reason, 2000)?;
    let mut tx = state.db.begin_write().await?;
    let config = load_config(&mut tx, &id).await?;
    let working = apm_store::configs::working_version(&mut tx, &id).await?;
    let Some(w) = working.filter(|w| w.status == "pending_approval") else {
        let current = state_of(&mut tx, &config).await?;
        return Err(ApiError::conflict(format!(
            "config {:?} has no version pending approval: {current}",
            config.name
        ))
        .with("current_state", current));
    };
    if !apm_store::configs::mark_rejected(&mut tx, &w.id, &caller.user_id, &body.reason, now_ms())
        .await?
    {
        return Err(ApiError::conflict(format!(
            "version {} changed state concurrently; retry",
            w.version
        )));
    }
    audit::record(
        &mut tx,
        &Actor::from(&caller),
        "config.reject",
        "config",
        Some(&id),
        Some(&json!({"version": w.version, "status": "pending_approval"})),
        Some(&json!({"version": w.version, "status": "draft", "reason": body.reason})),
    )
    .await?;
    let detail = config_detail(&mut tx, &config).await?;
    tx.commit().await?;
    Ok(Json(detail))
}

/// Every version, newest first.
#[utoipa::path(get, path = "/api/v1/configs/{id}/versions", tag = "configs", params(("id" = String, Path, description = "Config id")),
    responses((status = 200, body = Vec<VersionView>), (status = 404, body = crate::error::Problem)))]
async fn list_versions(
    State(state): State<AppState>,
    _caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Vec<VersionView>>> {
    let mut conn = state.db.acquire().await?;
    load_config(&mut conn, &id).await?;
    let versions = apm_store::configs::list_versions(&mut conn, &id).await?;
    Ok(Json(
        versions
            .iter()
            .map(VersionView::of)
            .collect::<ApiResult<_>>()?,
    ))
}

async fn load_version(conn: &mut AnyConnection, id: &str, version: i64) -> ApiResult<VersionRow> {
    apm_store::configs::get_version(conn, id, version)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("config {id} has no version {version}")))
}

/// One version.
#[utoipa::path(get, path = "/api/v1/configs/{id}/versions/{version}", tag = "configs",
    params(("id" = String, Path, description = "Config id"), ("version" = i64, Path, description = "Version number")),
    responses((status = 200, body = VersionView), (status = 404, body = crate::error::Problem)))]
async fn get_version(
    State(state): State<AppState>,
    _caller: Caller,
    Path((id, version)): Path<(String, i64)>,
) -> ApiResult<Json<VersionView>> {
    let mut conn = state.db.acquire().await?;
    load_config(&mut conn, &id).await?;
    Ok(Json(VersionView::of(
        &load_version(&mut conn, &id, version).await?,
    )?))
}

/// Restores an old version as a new draft (409 while another draft or pending version exists).
#[utoipa::path(post, path = "/api/v1/configs/{id}/versions/{version}/restore", tag = "configs",
    params(("id" = String, Path, description = "Config id"), ("version" = i64, Path, description = "Version number")),
    responses((status = 201, body = ConfigDetail), (status = 404, body = crate::error::Problem),
              (status = 409, body = crate::error::Problem)))]
async fn restore_version(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, version)): Path<(String, i64)>,
) -> ApiResult<(StatusCode, Json<ConfigDetail>)> {
    caller.require(Role::Admin)?;
    let mut tx = state.db.begin_write().await?;
    let config = load_config(&mut tx, &id).await?;
    let old = load_version(&mut tx, &id, version).await?;
    if let Some(w) = apm_store::configs::working_version(&mut tx, &id).await? {
        return Err(ApiError::conflict(format!(
            "config {:?} already has version {} in {}; edit, submit or reject it first",
            config.name, w.version, w.status
        ))
        .with("current_state", w.status));
    }
    let policy: Value = serde_json::from_str(&old.policy).map_err(ApiError::internal)?;
    let checked = check_policy(&policy)?;
    let next = apm_store::configs::max_version(&mut tx, &id).await? + 1;
    let v = new_draft(&id, next, checked, &caller.user_id, now_ms(), Some(version));
    apm_store::configs::insert_version(&mut tx, &v).await?;
    audit::record(
        &mut tx,
        &Actor::from(&caller),
        "config.restore",
        "config",
        Some(&id),
        Some(&json!({"restored_from": version})),
        Some(&version_audit(&v)),
    )
    .await?;
    let detail = config_detail(&mut tx, &config).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(detail)))
}

/// Diff parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DiffQuery {
    /// Old version number.
    pub from: i64,
    /// New version number.
    pub to: i64,
    /// ATS major for the rendered files: 9 (default) or 10.
    pub ats: Option<String>,
}

/// Diff of one rendered file.
#[derive(Debug, Serialize, ToSchema)]
pub struct FileDiff {
    /// File name.
    pub name: String,
    /// added | removed | changed | unchanged.
    pub status: String,
    /// Unified diff (empty when unchanged).
    pub diff: String,
}

/// Differences between two versions.
#[derive(Debug, Serialize, ToSchema)]
pub struct DiffResponse {
    /// Old version.
    pub from: i64,
    /// New version.
    pub to: i64,
    /// ATS major of `files`.
    pub ats_major: String,
    /// Unified diff of the pretty-printed policy JSON.
    pub policy_diff: String,
    /// Per rendered file.
    pub files: Vec<FileDiff>,
}

fn unified(a: &str, b: &str, from: &str, to: &str) -> String {
    similar::TextDiff::from_lines(a, b)
        .unified_diff()
        .context_radius(3)
        .header(from, to)
        .to_string()
}

/// Policy and rendered-file differences between two versions.
#[utoipa::path(get, path = "/api/v1/configs/{id}/diff", tag = "configs",
    params(("id" = String, Path, description = "Config id"), DiffQuery),
    responses((status = 200, body = DiffResponse), (status = 400, body = crate::error::Problem),
              (status = 404, body = crate::error::Problem)))]
async fn diff(
    State(state): State<AppState>,
    _caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<DiffQuery>,
) -> ApiResult<Json<DiffResponse>> {
    let major = match q.ats.as_deref() {
        None => apm_policy::AtsMajor::V9,
        Some(s) => apm_policy::AtsMajor::from_version(s).ok_or_else(|| {
            ApiError::bad_request(format!(
                "ats: {s:?} is not a supported ATS version (9 or 10)"
            ))
        })?,
    };
    let mut conn = state.db.acquire().await?;
    load_config(&mut conn, &id).await?;
    let a = load_version(&mut conn, &id, q.from).await?;
    let b = load_version(&mut conn, &id, q.to).await?;
    let pretty = |v: &VersionRow| -> ApiResult<String> {
        let value: Value = serde_json::from_str(&v.policy).map_err(ApiError::internal)?;
        serde_json::to_string_pretty(&value)
            .map(|s| s + "\n")
            .map_err(ApiError::internal)
    };
    let (from_label, to_label) = (format!("v{}", q.from), format!("v{}", q.to));
    let policy_diff = unified(&pretty(&a)?, &pretty(&b)?, &from_label, &to_label);
    let ra = bundle::rendered(&state, &a, major)?;
    let rb = bundle::rendered(&state, &b, major)?;
    let mut names: Vec<&String> = ra.files.keys().chain(rb.files.keys()).collect();
    names.sort();
    names.dedup();
    let files = names
        .into_iter()
        .map(|name| {
            let (old, new) = (ra.files.get(name), rb.files.get(name));
            let status = match (old, new) {
                (None, Some(_)) => "added",
                (Some(_), None) => "removed",
                (Some(x), Some(y)) if x == y => "unchanged",
                _ => "changed",
            };
            let diff = if status == "unchanged" {
                String::new()
            } else {
                unified(
                    old.map(String::as_str).unwrap_or(""),
                    new.map(String::as_str).unwrap_or(""),
                    &format!("{from_label}/{name}"),
                    &format!("{to_label}/{name}"),
                )
            };
            FileDiff {
                name: name.clone(),
                status: status.into(),
                diff,
            }
        })
        .collect();
    Ok(Json(DiffResponse {
        from: q.from,
        to: q.to,
        ats_major: major.to_string(),
        policy_diff,
        files,
    }))
}

/// Proxies to assign.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AssignProxies {
    /// Proxy ids.
    pub proxy_ids: Vec<String>,
}

/// Assigns proxies to the config. A proxy belongs to at most one config: 409 naming the other.
#[utoipa::path(post, path = "/api/v1/configs/{id}/proxies", tag = "configs", request_body = AssignProxies,
    params(("id" = String, Path, description = "Config id")),
    responses((status = 200, body = ConfigDetail), (status = 404, body = crate::error::Problem),
              (status = 409, body = crate::error::Problem)))]
async fn assign_proxies(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Json(body): Json<AssignProxies>,
) -> ApiResult<Json<ConfigDetail>> {
    caller.require(Role::Admin)?;
    if body.proxy_ids.is_empty() {
        return Err(ApiError::invalid(
            "proxy_ids: must list at least one proxy id",
        ));
    }
    if body.proxy_ids.len() > 10_000 {
        return Err(ApiError::invalid("proxy_ids: at most 10000 per request"));
    }
    let mut tx = state.db.begin_write().await?;
    let config = load_config(&mut tx, &id).await?;
    let before: Vec<String> = apm_store::proxies::list_proxies_of_config(&mut tx, &id)
        .await?
        .into_iter()
        .map(|p| p.id)
        .collect();
    for (i, pid) in body.proxy_ids.iter().enumerate() {
        let p = apm_store::proxies::get_proxy(&mut tx, pid)
            .await?
            .ok_or_else(|| {
                ApiError::not_found(format!("proxy_ids[{i}]: no proxy with id {pid}"))
            })?;
        match p.config_id.as_deref() {
            Some(other) if other != id => {
                let other_name = apm_store::configs::get_config(&mut tx, other)
                    .await?
                    .map(|c| c.name)
                    .unwrap_or_else(|| other.to_string());
                return Err(ApiError::conflict(format!(
                    "proxy_ids[{i}]: proxy {} already belongs to config {other_name:?} ({other}); unassign it there first",
                    p.hostname
                ))
                .with("other_config_id", other));
            }
            _ => apm_store::proxies::set_proxy_config(&mut tx, pid, Some(&id)).await?,
        }
    }
    let after: Vec<String> = apm_store::proxies::list_proxies_of_config(&mut tx, &id)
        .await?
        .into_iter()
        .map(|p| p.id)
        .collect();
    let generation = state
        .hub
        .pending(apm_store::telemetry::bump_generation(&mut tx).await?);
    audit::record(
        &mut tx,
        &Actor::from(&caller),
        "config.assign_proxies",
        "config",
        Some(&id),
        Some(&json!({"proxy_ids": before})),
        Some(&json!({"proxy_ids": after})),
    )
    .await?;
    let detail = config_detail(&mut tx, &config).await?;
    tx.commit().await?;
    generation.committed();
    state.hub.notify();
    Ok(Json(detail))
}

/// Removes a proxy from the config.
#[utoipa::path(delete, path = "/api/v1/configs/{id}/proxies/{proxy_id}", tag = "configs",
    params(("id" = String, Path, description = "Config id"), ("proxy_id" = String, Path, description = "Proxy id")),
    responses((status = 204), (status = 404, body = crate::error::Problem)))]
async fn unassign_proxy(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, proxy_id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    caller.require(Role::Admin)?;
    let mut tx = state.db.begin_write().await?;
    load_config(&mut tx, &id).await?;
    let p = apm_store::proxies::get_proxy(&mut tx, &proxy_id)
        .await?
        .filter(|p| p.config_id.as_deref() == Some(id.as_str()))
        .ok_or_else(|| {
            ApiError::not_found(format!("proxy {proxy_id} is not assigned to config {id}"))
        })?;
    apm_store::proxies::set_proxy_config(&mut tx, &p.id, None).await?;
    let generation = state
        .hub
        .pending(apm_store::telemetry::bump_generation(&mut tx).await?);
    audit::record(
        &mut tx,
        &Actor::from(&caller),
        "config.unassign_proxy",
        "config",
        Some(&id),
        Some(&json!({"proxy_id": p.id, "config_id": id})),
        Some(&json!({"proxy_id": p.id, "config_id": null})),
    )
    .await?;
    tx.commit().await?;
    generation.committed();
    state.hub.notify();
    Ok(StatusCode::NO_CONTENT)
}

/// The default policy a new config starts from (the product's routing table).
#[utoipa::path(get, path = "/api/v1/policy/template", tag = "configs",
    responses((status = 200, body = Object), (status = 401, body = crate::error::Problem)))]
async fn policy_template(_caller: Caller) -> ApiResult<Json<Value>> {
    serde_json::to_value(apm_policy::template::default_policy())
        .map(Json)
        .map_err(ApiError::internal)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary() -> ConfigDetail {
        ConfigDetail {
            config: ConfigView {
                id: "c1".into(),
                name: "edge".into(),
                description: String::new(),
                status: "active".into(),
                active_version: Some(2),
                working_version: None,
                proxy_count: 3,
                created_by: "u".into(),
                created_at: fmt_ms(0),
                updated_at: fmt_ms(0),
            },
            working: None,
            active: None,
            proxies: Vec::new(),
            proxies_truncated: false,
            proxies_unavailable: None,
        }
    }

    /// After an approval committed, a failing read of the proxy list must not turn the
    /// answer into an error: the database is closed here, so the read fails for real.
    #[tokio::test]
    async fn a_failed_read_after_commit_still_answers() {
        let dir = tempfile::tempdir().expect("dir");
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let db = apm_store::Db::connect(&url, 2).await.expect("db");
        db.migrate().await.expect("migrate");
        let state = AppState::new(db.clone(), crate::settings::Settings::default(), None);
        let ok = with_proxy_refs(&state, summary(), "c1").await;
        assert!(ok.proxies_unavailable.is_none());
        assert!(ok.proxies.is_empty(), "no proxies assigned");
        db.close().await;
        let after = with_proxy_refs(&state, summary(), "c1").await;
        let note = after.proxies_unavailable.as_deref().expect("says so");
        assert!(note.contains("committed"), "{note}");
        assert_eq!(after.config.proxy_count, 3);
        assert_eq!(after.config.active_version, Some(2));
    }
}
