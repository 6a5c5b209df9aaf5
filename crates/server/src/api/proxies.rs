//! Enrollment tokens, agent enrollment, proxies (status, revoke), log captures and stats queries.

use apm_store::proxies::{EnrollmentTokenRow, LogCaptureRow, ProxyRow};
use apm_store::{AnyConnection, new_id, now_ms};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::stats::{MetricKind, counter_rates};
use super::util::{check_len, check_name, fmt_ms, fmt_opt, series_window};
use crate::audit::{self, Actor, NONE};
use crate::auth::{self, Caller, Role, prefix};
use crate::bundle::major_of;
use crate::error::{ApiError, ApiResult, Json, Path, Query};
use crate::state::AppState;
use crate::sync::desired_hash;

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_enrollment_tokens, create_enrollment_token))
        .routes(routes!(revoke_enrollment_token))
        .routes(routes!(enroll))
        .routes(routes!(list_proxies))
        .routes(routes!(get_proxy))
        .routes(routes!(revoke_proxy))
        .routes(routes!(read_logs, open_capture))
        .routes(routes!(proxy_stats))
}

/// An enrollment token as listed (never the token).
#[derive(Debug, Serialize, ToSchema)]
pub struct EnrollmentTokenView {
    /// Id.
    pub id: String,
    /// Free text.
    pub note: String,
    /// User id.
    pub created_by: String,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub expires_at: String,
    /// None = unlimited until expiry.
    pub max_uses: Option<i64>,
    /// Times used.
    pub uses: i64,
    /// Revoked.
    pub revoked: bool,
    /// Still accepted now.
    pub usable: bool,
}

impl EnrollmentTokenView {
    fn of(t: &EnrollmentTokenRow, now: i64) -> Self {
        EnrollmentTokenView {
            id: t.id.clone(),
            note: t.note.clone(),
            created_by: t.created_by.clone(),
            created_at: fmt_ms(t.created_at),
            expires_at: fmt_ms(t.expires_at),
            max_uses: t.max_uses,
            uses: t.uses,
            revoked: t.revoked_at.is_some(),
            usable: t.revoked_at.is_none()
                && t.expires_at > now
                && t.max_uses.is_none_or(|m| t.uses < m),
        }
    }
}

/// New enrollment token.
#[derive(Debug, Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct CreateEnrollmentToken {
    /// Lifetime in seconds (default 86400, at most 30 days).
    pub expires_in_seconds: Option<u64>,
    /// How many agents may enroll with it (default 1; 0 = unlimited until expiry).
    pub max_uses: Option<u64>,
    /// Free text, e.g. which hosts it is for.
    #[serde(default)]
    pub note: String,
}

/// The token, shown once.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedEnrollmentToken {
    /// Give it to the agent (`apm agent enroll`). Not retrievable later.
    pub token: String,
    /// Metadata.
    #[serde(flatten)]
    pub info: EnrollmentTokenView,
}

/// Lists enrollment tokens.
#[utoipa::path(get, path = "/api/v1/enrollment-tokens", tag = "proxies",
    responses((status = 200, body = Vec<EnrollmentTokenView>), (status = 401, body = crate::error::Problem)))]
async fn list_enrollment_tokens(
    State(state): State<AppState>,
    _caller: Caller,
) -> ApiResult<Json<Vec<EnrollmentTokenView>>> {
    let mut conn = state.db.acquire().await?;
    let now = now_ms();
    let rows = apm_store::proxies::list_enrollment_tokens(&mut conn).await?;
    Ok(Json(
        rows.iter()
            .map(|t| EnrollmentTokenView::of(t, now))
            .collect(),
    ))
}

/// Creates an enrollment token (admin).
#[utoipa::path(post, path = "/api/v1/enrollment-tokens", tag = "proxies", request_body = CreateEnrollmentToken,
    responses((status = 201, body = CreatedEnrollmentToken), (status = 403, body = crate::error::Problem),
              (status = 422, body = crate::error::Problem)))]
async fn create_enrollment_token(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<CreateEnrollmentToken>,
) -> ApiResult<(StatusCode, Json<CreatedEnrollmentToken>)> {
    caller.require(Role::Admin)?;
    check_len("note", &body.note, 500)?;
    let secs = body.expires_in_seconds.unwrap_or(86_400);
    if secs == 0 || secs > 30 * 86_400 {
        return Err(ApiError::invalid(format!(
            "expires_in_seconds: {secs} is outside 1..=2592000 (30 days)"
        )));
    }
    let max_uses = match body.max_uses.unwrap_or(1) {
        0 => None,
        n if n > 1_000_000 => return Err(ApiError::invalid("max_uses: at most 1000000")),
        n => Some(n as i64),
    };
    let now = now_ms();
    let token = auth::new_token(prefix::ENROLL);
    let row = EnrollmentTokenRow {
        id: new_id(),
        token_hash: auth::token_hash(&token),
        created_by: caller.user_id.clone(),
        created_at: now,
        expires_at: now + secs as i64 * 1000,
        max_uses,
        uses: 0,
        revoked_at: None,
        note: body.note,
    };
    let info = EnrollmentTokenView::of(&row, now);
    let mut tx = state.db.begin_write().await?;
    apm_store::proxies::insert_enrollment_token(&mut tx, &row).await?;
    audit::record(
        &mut tx,
        &Actor::from(&caller),
        "enrollment_token.create",
        "enrollment_token",
        Some(&row.id),
        NONE,
        Some(&info),
    )
    .await?;
    tx.commit().await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedEnrollmentToken { token, info }),
    ))
}

/// Revokes an enrollment token (admin).
#[utoipa::path(delete, path = "/api/v1/enrollment-tokens/{id}", tag = "proxies", params(("id" = String, Path, description = "Token id")),
    responses((status = 204), (status = 404, body = crate::error::Problem), (status = 409, body = crate::error::Problem)))]
async fn revoke_enrollment_token(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require(Role::Admin)?;
    let mut tx = state.db.begin_write().await?;
    let now = now_ms();
    let row = apm_store::proxies::get_enrollment_token(&mut tx, &id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no enrollment token with id {id}")))?;
    if !apm_store::proxies::revoke_enrollment_token(&mut tx, &id, now).await? {
        return Err(ApiError::conflict(format!(
            "enrollment token {id} is already revoked"
        )));
    }
    let old = EnrollmentTokenView::of(&row, now);
    audit::record(
        &mut tx,
        &Actor::from(&caller),
        "enrollment_token.revoke",
        "enrollment_token",
        Some(&id),
        Some(&old),
        Some(&json!({"revoked": true})),
    )
    .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Enrollment request from an agent.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    /// The enrollment token.
    pub token: String,
    /// The agent's hostname (letters, digits, `.-_`, at most 253).
    pub hostname: String,
}

/// Enrollment answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct EnrollResponse {
    /// The agent's credential: `Authorization: Bearer ...` on sync calls. Shown once.
    pub agent_token: String,
    /// The proxy id.
    pub proxy_id: String,
}

/// Exchanges an enrollment token for an agent credential. Enrolling a known hostname again
/// replaces its credential (reinstalled host).
#[utoipa::path(post, path = "/api/v1/agents/enroll", tag = "sync", request_body = EnrollRequest, security(()),
    responses((status = 201, body = EnrollResponse), (status = 401, body = crate::error::Problem),
              (status = 422, body = crate::error::Problem)))]
async fn enroll(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(body): Json<EnrollRequest>,
) -> ApiResult<(StatusCode, Json<EnrollResponse>)> {
    check_name("hostname", &body.hostname, 253, ".-_")?;
    let now = now_ms();
    let mut tx = state.db.begin_write().await?;
    let token = apm_store::proxies::find_enrollment_token(&mut tx, &auth::token_hash(&body.token))
        .await?
        .ok_or_else(|| ApiError::unauthorized("unknown enrollment token"))?;
    if token.revoked_at.is_some() {
        return Err(ApiError::unauthorized("this enrollment token was revoked"));
    }
    if token.expires_at <= now {
        return Err(ApiError::unauthorized(format!(
            "this enrollment token expired at {}",
            fmt_ms(token.expires_at)
        )));
    }
    if !apm_store::proxies::use_enrollment_token(&mut tx, &token.id, now).await? {
        return Err(ApiError::unauthorized(
            "this enrollment token has been used up",
        ));
    }
    let credential = auth::new_token(prefix::AGENT);
    let credential_hash = auth::token_hash(&credential);
    let existing = apm_store::proxies::get_proxy_by_hostname(&mut tx, &body.hostname).await?;
    let mut generation = None;
    let (proxy_id, action) = match existing {
        Some(p) => {
            apm_store::proxies::rotate_credential(&mut tx, &p.id, &credential_hash, &token.id, now)
                .await?;
            // Other replicas drop cached credentials when this moves.
            generation = Some(
                state
                    .hub
                    .pending(apm_store::telemetry::bump_generation(&mut tx).await?),
            );
            (p.id, "agent.reenroll")
        }
        None => {
            let p = ProxyRow::enrolled(
                new_id(),
                body.hostname.clone(),
                credential_hash,
                now,
                Some(token.id.clone()),
            );
            apm_store::proxies::insert_proxy(&mut tx, &p).await?;
            (p.id, "agent.enroll")
        }
    };
    let actor = Actor {
        id: None,
        name: format!("agent:{}", body.hostname),
        request_id: headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
    };
    audit::record(
        &mut tx,
        &actor,
        action,
        "proxy",
        Some(&proxy_id),
        NONE,
        Some(&json!({"hostname": body.hostname, "enrollment_token_id": token.id})),
    )
    .await?;
    tx.commit().await?;
    if let Some(generation) = generation {
        // The old credential must stop working now, not when its cache entry ages out.
        generation.committed();
        state.credentials.invalidate_all();
    }
    Ok((
        StatusCode::CREATED,
        Json(EnrollResponse {
            agent_token: credential,
            proxy_id,
        }),
    ))
}

/// A proxy and what it reported.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProxyView {
    /// Id.
    pub id: String,
    /// Hostname.
    pub hostname: String,
    /// Assigned config.
    pub config_id: Option<String>,
    /// Hash it should run (for its ATS major), if its config has an active version.
    pub desired_hash: Option<String>,
    /// Hash it confirmed running.
    pub applied_hash: Option<String>,
    /// desired == applied.
    pub in_sync: bool,
    /// Last apply error.
    pub last_error: Option<String>,
    /// Hash whose apply failed.
    pub last_error_hash: Option<String>,
    /// RFC 3339.
    pub last_seen_at: Option<String>,
    /// Seen within the online window.
    pub online: bool,
    /// Reported ATS version.
    pub ats_version: Option<String>,
    /// ATS major used for rendering ("9" until it reports).
    pub ats_major: String,
    /// Reported OS.
    pub os: Option<String>,
    /// Reported architecture.
    pub arch: Option<String>,
    /// RFC 3339.
    pub enrolled_at: String,
    /// Credential revoked.
    pub revoked: bool,
    /// Open log-capture window end (RFC 3339).
    pub capture_until: Option<String>,
}

pub(crate) async fn proxy_view(
    state: &AppState,
    conn: &mut AnyConnection,
    p: &ProxyRow,
) -> ApiResult<ProxyView> {
    let desired = desired_hash(conn, p).await?;
    let now = now_ms();
    Ok(ProxyView {
        id: p.id.clone(),
        hostname: p.hostname.clone(),
        config_id: p.config_id.clone(),
        in_sync: desired.is_some() && desired == p.applied_hash,
        desired_hash: desired,
        applied_hash: p.applied_hash.clone(),
        last_error: p.last_error.clone(),
        last_error_hash: p.last_error_hash.clone(),
        last_seen_at: fmt_opt(state.contacts.last_seen(&p.id, p.last_seen_at)),
        online: is_online(state, p, now),
        ats_version: p.ats_version.clone(),
        ats_major: major_of(p.ats_version.as_deref()).to_string(),
        os: p.os.clone(),
        arch: p.arch.clone(),
        enrolled_at: fmt_ms(p.enrolled_at),
        revoked: p.revoked_at.is_some(),
        capture_until: fmt_opt(p.capture_until.filter(|u| *u > now)),
    })
}

/// Seen recently enough to count as online.
pub(crate) fn is_online(state: &AppState, p: &ProxyRow, now: i64) -> bool {
    p.revoked_at.is_none()
        && state
            .contacts
            .last_seen(&p.id, p.last_seen_at)
            .is_some_and(|s| now - s <= state.settings.online_window_secs as i64 * 1000)
}

async fn load_proxy(conn: &mut AnyConnection, id: &str) -> ApiResult<ProxyRow> {
    apm_store::proxies::get_proxy(conn, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no proxy with id {id}")))
}

/// Lists proxies.
#[utoipa::path(get, path = "/api/v1/proxies", tag = "proxies",
    responses((status = 200, body = Vec<ProxyView>), (status = 401, body = crate::error::Problem)))]
async fn list_proxies(
    State(state): State<AppState>,
    _caller: Caller,
) -> ApiResult<Json<Vec<ProxyView>>> {
    let mut conn = state.db.acquire().await?;
    let rows = apm_store::proxies::list_proxies(&mut conn).await?;
    let mut out = Vec::with_capacity(rows.len());
    for p in &rows {
        out.push(proxy_view(&state, &mut conn, p).await?);
    }
    Ok(Json(out))
}

/// One proxy.
#[utoipa::path(get, path = "/api/v1/proxies/{id}", tag = "proxies", params(("id" = String, Path, description = "Proxy id")),
    responses((status = 200, body = ProxyView), (status = 404, body = crate::error::Problem)))]
async fn get_proxy(
    State(state): State<AppState>,
    _caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<ProxyView>> {
    let mut conn = state.db.acquire().await?;
    let p = load_proxy(&mut conn, &id).await?;
    Ok(Json(proxy_view(&state, &mut conn, &p).await?))
}

/// Revokes a proxy's agent credential (admin); the agent gets 401 until enrolled again.
#[utoipa::path(post, path = "/api/v1/proxies/{id}/revoke", tag = "proxies", params(("id" = String, Path, description = "Proxy id")),
    responses((status = 200, body = ProxyView), (status = 404, body = crate::error::Problem), (status = 409, body = crate::error::Problem)))]
async fn revoke_proxy(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<ProxyView>> {
    caller.require(Role::Admin)?;
    let mut tx = state.db.begin_write().await?;
    let p = load_proxy(&mut tx, &id).await?;
    if !apm_store::proxies::revoke_proxy(&mut tx, &id, now_ms()).await? {
        return Err(ApiError::conflict(format!(
            "the credential of proxy {} is already revoked",
            p.hostname
        )));
    }
    // Other replicas drop cached credentials when this moves.
    let generation = state
        .hub
        .pending(apm_store::telemetry::bump_generation(&mut tx).await?);
    audit::record(
        &mut tx,
        &Actor::from(&caller),
        "proxy.revoke",
        "proxy",
        Some(&id),
        Some(&json!({"hostname": p.hostname, "revoked": false})),
        Some(&json!({"hostname": p.hostname, "revoked": true})),
    )
    .await?;
    let p = load_proxy(&mut tx, &id).await?;
    let view = proxy_view(&state, &mut tx, &p).await?;
    tx.commit().await?;
    generation.committed();
    state.credentials.invalidate_all();
    Ok(Json(view))
}

/// Opens a log capture.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenCapture {
    /// 1 to 5 minutes.
    pub duration_minutes: u32,
}

/// An opened capture window.
#[derive(Debug, Serialize, ToSchema)]
pub struct CaptureView {
    /// Id.
    pub id: String,
    /// Proxy.
    pub proxy_id: String,
    /// User id.
    pub opened_by: String,
    /// RFC 3339.
    pub opened_at: String,
    /// RFC 3339.
    pub until: String,
    /// Still open now.
    pub open: bool,
}

impl CaptureView {
    fn of(c: &LogCaptureRow, now: i64) -> Self {
        CaptureView {
            id: c.id.clone(),
            proxy_id: c.proxy_id.clone(),
            opened_by: c.opened_by.clone(),
            opened_at: fmt_ms(c.opened_at),
            until: fmt_ms(c.until_at),
            open: c.until_at > now,
        }
    }
}

/// Opens a log-capture window of at most 5 minutes (admin); the agent learns it on its next sync
/// (waiting agents are woken).
#[utoipa::path(post, path = "/api/v1/proxies/{id}/logs", tag = "proxies", request_body = OpenCapture,
    params(("id" = String, Path, description = "Proxy id")),
    responses((status = 201, body = CaptureView), (status = 404, body = crate::error::Problem),
              (status = 422, body = crate::error::Problem)))]
async fn open_capture(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Json(body): Json<OpenCapture>,
) -> ApiResult<(StatusCode, Json<CaptureView>)> {
    caller.require(Role::Admin)?;
    if !(1..=5).contains(&body.duration_minutes) {
        return Err(ApiError::invalid(format!(
            "duration_minutes: {} is outside 1..=5 (captures last at most 5 minutes)",
            body.duration_minutes
        )));
    }
    let now = now_ms();
    let mut tx = state.db.begin_write().await?;
    let p = load_proxy(&mut tx, &id).await?;
    let c = LogCaptureRow {
        id: new_id(),
        proxy_id: p.id.clone(),
        opened_by: caller.user_id.clone(),
        opened_at: now,
        until_at: now + i64::from(body.duration_minutes) * 60_000,
    };
    apm_store::proxies::open_capture(&mut tx, &c).await?;
    let generation = state
        .hub
        .pending(apm_store::telemetry::bump_generation(&mut tx).await?);
    let view = CaptureView::of(&c, now);
    audit::record(
        &mut tx,
        &Actor::from(&caller),
        "proxy.logs.open",
        "proxy",
        Some(&p.id),
        Some(&json!({"capture_until": fmt_opt(p.capture_until)})),
        Some(&view),
    )
    .await?;
    tx.commit().await?;
    generation.committed();
    state.hub.notify();
    Ok((StatusCode::CREATED, Json(view)))
}

/// Log reading parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct LogsQuery {
    /// Only lines with a sequence number greater than this (for live tailing).
    pub after: Option<i64>,
    /// Page size (default 500, at most 5000).
    pub limit: Option<i64>,
}

/// A captured line.
#[derive(Debug, Serialize, ToSchema)]
pub struct LogLineView {
    /// Sequence number.
    pub id: i64,
    /// Capture window.
    pub capture_id: Option<String>,
    /// Receipt time (RFC 3339).
    pub ts: String,
    /// The line.
    pub line: String,
}

/// Captured lines.
#[derive(Debug, Serialize, ToSchema)]
pub struct LogsView {
    /// Latest capture window.
    pub capture: Option<CaptureView>,
    /// Lines, oldest first.
    pub lines: Vec<LogLineView>,
    /// Pass as `after` to get the next lines.
    pub next_after: i64,
}

/// Reads captured lines.
#[utoipa::path(get, path = "/api/v1/proxies/{id}/logs", tag = "proxies",
    params(("id" = String, Path, description = "Proxy id"), LogsQuery),
    responses((status = 200, body = LogsView), (status = 404, body = crate::error::Problem)))]
async fn read_logs(
    State(state): State<AppState>,
    _caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<LogsQuery>,
) -> ApiResult<Json<LogsView>> {
    let limit = q.limit.unwrap_or(500);
    if !(1..=5000).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit: {limit} is outside 1..=5000"
        )));
    }
    let after = q.after.unwrap_or(0);
    let mut conn = state.db.acquire().await?;
    let p = load_proxy(&mut conn, &id).await?;
    let capture = apm_store::proxies::latest_capture(&mut conn, &p.id).await?;
    let lines = apm_store::telemetry::log_lines(&mut conn, &p.id, after, limit).await?;
    let next_after = lines.last().map(|l| l.id).unwrap_or(after);
    let now = now_ms();
    Ok(Json(LogsView {
        capture: capture.as_ref().map(|c| CaptureView::of(c, now)),
        lines: lines
            .into_iter()
            .map(|l| LogLineView {
                id: l.id,
                capture_id: l.capture_id,
                ts: fmt_ms(l.ts),
                line: l.line,
            })
            .collect(),
        next_after,
    }))
}

/// Series query.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct StatsQuery {
    /// Metric name (the answer to a request without it lists the available names).
    pub metric: Option<String>,
    /// From (RFC 3339 or epoch seconds); default: 1 hour ago.
    pub since: Option<String>,
    /// Until (RFC 3339 or epoch seconds); default: now.
    pub until: Option<String>,
    /// raw | 5m | auto (default: raw for ranges up to 6 h inside the raw retention, else 5m).
    pub resolution: Option<String>,
}

/// One point.
#[derive(Debug, Serialize, ToSchema)]
pub struct PointView {
    /// Bucket start or sample time (RFC 3339).
    pub t: String,
    /// Epoch ms of `t`.
    pub t_ms: i64,
    /// Samples in the bucket.
    pub count: i64,
    /// Average.
    pub avg: f64,
    /// Minimum.
    pub min: f64,
    /// Maximum.
    pub max: f64,
    /// Latest value.
    pub last: f64,
    /// Counters only: per-second increase of `last` since the previous point (a counter reset
    /// counts from zero); absent for the first point and for gauges.
    pub rate_per_s: Option<f64>,
}

/// A series for charts.
#[derive(Debug, Serialize, ToSchema)]
pub struct SeriesView {
    /// Metric (absent when listing names).
    pub metric: Option<String>,
    /// Whether the metric counts up (chart its rate) or is a level (chart its value).
    pub kind: Option<MetricKind>,
    /// raw | 5m.
    pub resolution: String,
    /// Points, oldest first.
    pub points: Vec<PointView>,
    /// Metric names this proxy has reported.
    pub available_metrics: Vec<String>,
}

/// Time series of one metric of a proxy (raw samples or 5-minute rollups).
#[utoipa::path(get, path = "/api/v1/proxies/{id}/stats", tag = "proxies",
    params(("id" = String, Path, description = "Proxy id"), StatsQuery),
    responses((status = 200, body = SeriesView), (status = 400, body = crate::error::Problem),
              (status = 404, body = crate::error::Problem)))]
async fn proxy_stats(
    State(state): State<AppState>,
    _caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<StatsQuery>,
) -> ApiResult<Json<SeriesView>> {
    let now = now_ms();
    let (since, until) = series_window(q.since.as_deref(), q.until.as_deref(), now, 3_600_000)?;
    let raw_horizon = now - state.settings.stats_raw_retention_hours as i64 * 3_600_000;
    let resolution = match q.resolution.as_deref().unwrap_or("auto") {
        "raw" => "raw",
        "5m" => "5m",
        "auto" if until.saturating_sub(since) <= 6 * 3_600_000 && since >= raw_horizon => "raw",
        "auto" => "5m",
        other => {
            return Err(ApiError::bad_request(format!(
                "resolution: {other:?} is not raw, 5m or auto"
            )));
        }
    };
    let mut conn = state.db.acquire().await?;
    let p = load_proxy(&mut conn, &id).await?;
    let available_metrics = apm_store::telemetry::metric_names(&mut conn, &p.id).await?;
    let points = match &q.metric {
        None => Vec::new(),
        Some(m) => {
            if resolution == "raw" {
                apm_store::telemetry::raw_series(&mut conn, &p.id, m, since, until).await?
            } else {
                apm_store::telemetry::rollup_series(&mut conn, &p.id, m, since, until).await?
            }
        }
    };
    let kind = q.metric.as_deref().map(MetricKind::of);
    let rates = match kind {
        Some(MetricKind::Counter) => {
            counter_rates(&points.iter().map(|p| (p.t, p.last)).collect::<Vec<_>>())
        }
        _ => vec![None; points.len()],
    };
    Ok(Json(SeriesView {
        metric: q.metric,
        kind,
        resolution: resolution.into(),
        points: points
            .into_iter()
            .zip(rates)
            .map(|(p, rate_per_s)| PointView {
                t: fmt_ms(p.t),
                t_ms: p.t,
                count: p.count,
                avg: p.avg,
                min: p.min,
                max: p.max,
                last: p.last,
                rate_per_s,
            })
            .collect(),
        available_metrics,
    }))
}
