//! The ATS Proxy Manager web console, served by `apm server`.
//!
//! Server-rendered HTML (askama templates compiled into the binary), one stylesheet, htmx for
//! the few live parts (log lines as they arrive, the explain box), and a small script for the
//! session beacon. Static files are embedded ([`assets`]); nothing needs a Node build.
//!
//! # How it acts
//!
//! The console holds no business logic and no database handle. Every read and every change is a
//! request to the control plane's own API router, dispatched in-process ([`api`]) with the
//! browser's session token: roles, validation, state transitions and audit rows are exactly the
//! API's. The console only turns forms into API requests and answers into pages, mapping located
//! policy errors (`policy.rules[3].value`) onto the inputs of the rule editor ([`editor`]).
//! Pure helpers that need no authority — rendering a policy's ATS files for preview and
//! explaining a URL against it — call the policy crate directly.
//!
//! # Security
//!
//! The session is the API's HttpOnly `SameSite=Strict` cookie. Every POST carries a CSRF token
//! derived from the session token (hidden field, or `X-CSRF-Token` for htmx) and must come from
//! the same origin; the login form uses a double-submit cookie. Roles are enforced by the API;
//! the console also hides edit controls from regular users and answers a forced edit URL with a
//! 403 page.
//!
//! Entry point: [`router`], which wraps the API router so one listener serves both.

pub mod api;
pub mod assets;
pub mod chart;
pub mod ctx;
pub mod editor;
pub mod model;
mod views;

use axum::Router;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

/// Router state: the API router the console dispatches to.
#[derive(Clone)]
pub struct Console {
    api: Router,
}

/// The console's routes in front of `api` (the full API router, with its state and layers).
/// Requests the console does not serve (`/api/…`, `/health`, `/metrics`) go to `api` unchanged.
pub fn router(api: Router) -> Router {
    use views::*;
    Router::new()
        .route("/", get(dashboard::show))
        .route("/login", get(auth::login_form).post(auth::login))
        .route("/logout", post(auth::logout))
        .route("/proxies", get(proxies::list))
        .route("/proxies/enroll", post(proxies::enroll))
        .route("/proxies/enroll/{id}/revoke", post(proxies::revoke_enrollment))
        .route("/proxies/{id}/revoke", post(proxies::revoke))
        .route("/proxies/{id}", get(proxies::show))
        .route("/proxies/{id}/capture", post(proxies::capture))
        .route("/proxies/{id}/logs", get(proxies::log_lines))
        .route("/configs", get(configs::list))
        .route("/configs/new", get(configs::new_form).post(configs::create))
        .route("/configs/{id}", get(configs::show))
        .route(
            "/configs/{id}/edit",
            get(configs::edit_form).post(configs::edit),
        )
        .route("/configs/{id}/explain", post(configs::explain))
        .route("/configs/{id}/proxies", post(configs::assign))
        .route("/configs/{id}/submit", post(configs::submit))
        .route(
            "/configs/{id}/approve",
            get(configs::approve_form).post(configs::approve),
        )
        .route("/configs/{id}/reject", post(configs::reject))
        .route("/configs/{id}/versions", get(configs::versions))
        .route("/configs/{id}/diff", get(configs::diff))
        .route(
            "/configs/{id}/versions/{version}/restore",
            post(configs::restore),
        )
        .route("/audit", get(audit::list))
        .route("/users", get(users::list).post(users::create))
        .route("/users/{id}", post(users::update))
        .route("/tokens", get(users::tokens).post(users::create_token))
        .route("/tokens/{id}/revoke", post(users::revoke_token))
        .route("/static/{*path}", get(assets::serve))
        // Console pages only (the API has its own): a request id that the API calls made for
        // this page reuse (so audit rows name it), a log line per page, and no panic escapes.
        .route_layer(CatchPanicLayer::custom(|_panic: Box<dyn std::any::Any + Send>| {
            ctx::UiError::Render("a console handler panicked".into()).into_response()
        }))
        .route_layer(axum::middleware::map_response(security_headers))
        .route_layer(PropagateRequestIdLayer::x_request_id())
        .route_layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &axum::http::Request<_>| {
                    let id = req
                        .headers()
                        .get("x-request-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-");
                    // No query string: it can carry filter values typed by the user.
                    tracing::info_span!("console", request_id = %id, method = %req.method(), path = %req.uri().path())
                })
                .on_request(())
                .on_response(
                    |res: &axum::http::Response<_>, latency: std::time::Duration, _span: &tracing::Span| {
                        tracing::info!(status = res.status().as_u16(), latency_ms = latency.as_millis() as u64, "page");
                    },
                ),
        )
        .route_layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .fallback_service(api.clone())
        .with_state(Console { api })
}

/// Headers every console page carries: scripts, styles and forms only from this origin, no
/// framing (clickjacking), and referrers kept on this site.
async fn security_headers(mut response: axum::response::Response) -> axum::response::Response {
    use axum::http::HeaderValue;
    let h = response.headers_mut();
    h.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    response
}
