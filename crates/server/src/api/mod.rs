//! The HTTP API under `/api/v1`, with its OpenAPI description built from the same route
//! definitions (utoipa-axum), so an endpoint cannot exist without being documented.

pub mod audit;
pub mod configs;
pub mod proxies;
pub mod stats;
pub mod users;
pub mod util;

use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;

use crate::state::AppState;

#[derive(OpenApi)]
#[openapi(
    info(title = "ATS Proxy Manager API", description = "Control plane of ATS Proxy Manager: users, sessions, configs with approval, proxies, agent sync, audit. Errors are application/problem+json (RFC 9457)."),
    modifiers(&Security),
    security(("bearer" = [])),
    tags(
        (name = "auth", description = "Login sessions and API tokens"),
        (name = "users", description = "Accounts and roles"),
        (name = "configs", description = "Policies, versions and approval"),
        (name = "proxies", description = "Enrolled proxies, enrollment tokens, log capture, stats"),
        (name = "sync", description = "Agent protocol"),
        (name = "audit", description = "Audit trail and dashboard"),
        (name = "stats", description = "Fleet-wide metric series"),
        (name = "system", description = "Health, readiness, metrics")
    )
)]
struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "Session token (apms_...) from /api/v1/auth/login, or API token (apmt_...)",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "agent",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-Agent-Token",
                "Agent credential (apma_...) from /api/v1/agents/enroll; Authorization: Bearer also works",
            ))),
        );
    }
}

/// Every API route with its OpenAPI document.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(users::routes())
        .merge(configs::routes())
        .merge(proxies::routes())
        .merge(crate::sync::routes())
        .merge(audit::routes())
        .merge(stats::routes())
        .merge(crate::system::routes())
}
