//! Health, readiness and Prometheus metrics.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiError, ApiResult, Json};
use crate::state::AppState;

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(health))
        .routes(routes!(ready))
        .routes(routes!(prometheus))
        .routes(routes!(problem_type))
}

/// A problem type's description.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProblemType {
    /// The type URI used in problem documents.
    #[serde(rename = "type")]
    pub type_uri: String,
    /// Title.
    pub title: String,
    /// What it means and what to do.
    pub description: String,
}

/// Describes a problem type (the `type` of every error answer points here).
#[utoipa::path(get, path = "/problems/{slug}", tag = "system", security(()),
    params(("slug" = String, Path, description = "Problem type, e.g. conflict")),
    responses((status = 200, body = ProblemType), (status = 404, body = crate::error::Problem)))]
async fn problem_type(
    crate::error::Path(slug): crate::error::Path<String>,
) -> ApiResult<Json<ProblemType>> {
    crate::error::PROBLEM_TYPES
        .iter()
        .find(|(s, _, _)| *s == slug)
        .map(|(s, title, description)| {
            Json(ProblemType {
                type_uri: format!("/problems/{s}"),
                title: (*title).to_string(),
                description: (*description).to_string(),
            })
        })
        .ok_or_else(|| ApiError::not_found(format!("no problem type {slug:?}")))
}

/// Health answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// "ok".
    pub status: String,
    /// Server version.
    pub version: String,
}

/// Liveness: the process answers (no dependency checked).
#[utoipa::path(get, path = "/health", tag = "system", security(()), responses((status = 200, body = Health)))]
async fn health() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        version: env!("CARGO_PKG_VERSION").into(),
    })
}

/// Readiness answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Ready {
    /// "ready".
    pub status: String,
    /// "sqlite" or "postgres".
    pub database: String,
    /// Schema version.
    pub schema_version: i64,
}

/// Readiness: the database answers. 503 (problem+json) otherwise.
#[utoipa::path(get, path = "/health/ready", tag = "system", security(()),
    responses((status = 200, body = Ready), (status = 503, body = crate::error::Problem)))]
async fn ready(State(state): State<AppState>) -> ApiResult<Json<Ready>> {
    state.db.ping().await.map_err(|e| {
        tracing::warn!(error = %e, "readiness check failed");
        ApiError::unavailable("the database does not answer")
    })?;
    Ok(Json(Ready {
        status: "ready".into(),
        database: match state.db.backend() {
            apm_store::Backend::Sqlite => "sqlite".into(),
            apm_store::Backend::Postgres => "postgres".into(),
        },
        schema_version: apm_store::migrate::latest_version(),
    }))
}

/// Prometheus exposition: HTTP request counters and latencies, plus fleet gauges.
#[utoipa::path(get, path = "/metrics", tag = "system", security(()),
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
async fn prometheus(State(state): State<AppState>) -> Response {
    if let Ok(mut conn) = state.db.acquire().await {
        if let Ok(n) = apm_store::configs::count_pending(&mut conn).await {
            metrics::gauge!("apm_pending_approvals").set(n as f64);
        }
        if let Ok(proxies) = apm_store::proxies::list_proxies(&mut conn).await {
            let now = apm_store::now_ms();
            let online = proxies
                .iter()
                .filter(|p| crate::api::proxies::is_online(&state, p, now))
                .count();
            metrics::gauge!("apm_proxies_online").set(online as f64);
            metrics::gauge!("apm_proxies_total").set(proxies.len() as f64);
        }
    }
    metrics::gauge!("apm_sync_waiting").set(state.hub.waiting() as f64);
    let body = state
        .metrics
        .as_ref()
        .map(|h| h.render())
        .unwrap_or_default();
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        body,
    )
        .into_response()
}

/// Counts requests and their latency by method, route template and status.
pub async fn track(request: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = request.method().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("apm_http_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("apm_http_request_duration_seconds", "method" => method, "route" => route)
        .record(start.elapsed().as_secs_f64());
    response
}

/// The process-wide Prometheus recorder (installed once; later calls share it).
pub fn prometheus_handle() -> Option<metrics_exporter_prometheus::PrometheusHandle> {
    static HANDLE: std::sync::OnceLock<Option<metrics_exporter_prometheus::PrometheusHandle>> =
        std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            metrics_exporter_prometheus::PrometheusBuilder::new()
                .install_recorder()
                .map_err(|e| tracing::warn!(error = %e, "metrics recorder not installed"))
                .ok()
        })
        .clone()
}
