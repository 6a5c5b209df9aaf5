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
use axum::routing::{get, post};

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
        .fallback_service(api.clone())
        .with_state(Console { api })
}
