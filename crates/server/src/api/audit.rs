//! The audit trail query and the dashboard.

use std::collections::BTreeMap;

use apm_store::audit::{AuditFilter, AuditRow};
use apm_store::now_ms;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::proxies::is_online;
use super::util::{fmt_ms, parse_time};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, Json, Query};
use crate::state::AppState;
use crate::sync::desired_hash;

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(audit))
        .routes(routes!(dashboard))
}

/// Audit filters.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Entity id (config, user, proxy, token...).
    pub entity_id: Option<String>,
    /// Actor user id or name.
    pub actor: Option<String>,
    /// Action, e.g. `config.approve`; a trailing dot matches a prefix (`config.`).
    pub action: Option<String>,
    /// From (RFC 3339 or epoch seconds), inclusive.
    pub since: Option<String>,
    /// Until (RFC 3339 or epoch seconds), exclusive.
    pub until: Option<String>,
    /// Page cursor: the `next_before` of the previous page.
    pub before: Option<i64>,
    /// Page size (default 100, at most 1000).
    pub limit: Option<i64>,
}

/// One audit entry.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEntry {
    /// Sequence number.
    pub id: i64,
    /// RFC 3339.
    pub at: String,
    /// User id.
    pub actor_id: Option<String>,
    /// Actor name.
    pub actor: String,
    /// Action.
    pub action: String,
    /// Entity type.
    pub entity_type: String,
    /// Entity id.
    pub entity_id: Option<String>,
    /// Before.
    #[schema(value_type = Object)]
    pub old_value: Option<Value>,
    /// After.
    #[schema(value_type = Object)]
    pub new_value: Option<Value>,
    /// Request id.
    pub request_id: Option<String>,
}

/// A page of the audit trail, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPage {
    /// Entries.
    pub items: Vec<AuditEntry>,
    /// Pass as `before` for the next page; absent on the last page.
    pub next_before: Option<i64>,
}

fn entry(r: AuditRow) -> AuditEntry {
    let parse = |t: Option<String>| t.map(|t| serde_json::from_str(&t).unwrap_or(Value::String(t)));
    AuditEntry {
        id: r.id,
        at: fmt_ms(r.at),
        actor_id: r.actor_id,
        actor: r.actor,
        action: r.action,
        entity_type: r.entity_type,
        entity_id: r.entity_id,
        old_value: parse(r.old_value),
        new_value: parse(r.new_value),
        request_id: r.request_id,
    }
}

/// Queries the audit trail.
#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", params(AuditQuery),
    responses((status = 200, body = AuditPage), (status = 400, body = crate::error::Problem),
              (status = 401, body = crate::error::Problem)))]
async fn audit(
    State(state): State<AppState>,
    _caller: Caller,
    Query(q): Query<AuditQuery>,
) -> ApiResult<Json<AuditPage>> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit: {limit} is outside 1..=1000"
        )));
    }
    let filter = AuditFilter {
        entity_id: q.entity_id,
        actor: q.actor,
        action: q.action,
        since: q
            .since
            .as_deref()
            .map(|v| parse_time("since", v))
            .transpose()?,
        until: q
            .until
            .as_deref()
            .map(|v| parse_time("until", v))
            .transpose()?,
        before_id: q.before,
        limit: limit + 1,
    };
    let mut conn = state.db.acquire().await?;
    let mut rows = apm_store::audit::query(&mut conn, &filter).await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let next_before = if more {
        rows.last().map(|r| r.id)
    } else {
        None
    };
    Ok(Json(AuditPage {
        items: rows.into_iter().map(entry).collect(),
        next_before,
    }))
}

/// Proxy counts.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProxyCounts {
    /// Enrolled (not revoked).
    pub total: usize,
    /// Seen within the online window.
    pub online: usize,
    /// Not seen recently.
    pub offline: usize,
    /// Credential revoked.
    pub revoked: usize,
}

/// A proxy whose applied hash differs from the desired one.
#[derive(Debug, Serialize, ToSchema)]
pub struct Drift {
    /// Proxy id.
    pub proxy_id: String,
    /// Hostname.
    pub hostname: String,
    /// Hash it should run.
    pub desired_hash: String,
    /// Hash it runs.
    pub applied_hash: Option<String>,
    /// Last apply error.
    pub last_error: Option<String>,
}

/// Dashboard data.
#[derive(Debug, Serialize, ToSchema)]
pub struct Dashboard {
    /// Proxies online/offline.
    pub proxies: ProxyCounts,
    /// Config versions waiting for approval.
    pub pending_approvals: i64,
    /// Proxies not running their desired hash.
    pub drift: Vec<Drift>,
    /// Sum over online proxies of each metric's latest value (last 15 minutes).
    pub stats: BTreeMap<String, f64>,
    /// Agents holding a long-poll on this replica.
    pub sync_waiting: i64,
    /// RFC 3339.
    pub generated_at: String,
}

/// Fleet overview.
#[utoipa::path(get, path = "/api/v1/dashboard", tag = "audit",
    responses((status = 200, body = Dashboard), (status = 401, body = crate::error::Problem)))]
async fn dashboard(State(state): State<AppState>, _caller: Caller) -> ApiResult<Json<Dashboard>> {
    let now = now_ms();
    let mut conn = state.db.acquire().await?;
    let proxies = apm_store::proxies::list_proxies(&mut conn).await?;
    let mut counts = ProxyCounts {
        total: 0,
        online: 0,
        offline: 0,
        revoked: 0,
    };
    let mut drift = Vec::new();
    let mut online_ids = std::collections::HashSet::new();
    for p in &proxies {
        if p.revoked_at.is_some() {
            counts.revoked += 1;
            continue;
        }
        counts.total += 1;
        if is_online(&state, p, now) {
            counts.online += 1;
            online_ids.insert(p.id.clone());
        } else {
            counts.offline += 1;
        }
        if let Some(want) = desired_hash(&mut conn, p).await?
            && p.applied_hash.as_deref() != Some(want.as_str())
        {
            drift.push(Drift {
                proxy_id: p.id.clone(),
                hostname: p.hostname.clone(),
                desired_hash: want,
                applied_hash: p.applied_hash.clone(),
                last_error: p.last_error.clone(),
            });
        }
    }
    let pending_approvals = apm_store::configs::count_pending(&mut conn).await?;
    let mut stats = BTreeMap::new();
    for v in apm_store::telemetry::latest_values(&mut conn, now - 15 * 60_000).await? {
        if online_ids.contains(&v.proxy_id) {
            *stats.entry(v.metric).or_insert(0.0) += v.last;
        }
    }
    Ok(Json(Dashboard {
        proxies: counts,
        pending_approvals,
        drift,
        stats,
        sync_waiting: state.hub.waiting(),
        generated_at: fmt_ms(now),
    }))
}
