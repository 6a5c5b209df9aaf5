//! Per-request context: the session token from the cookie, the API client acting for it, the
//! CSRF token, and the error pages (401 → login, 403 → a clear "not allowed" page).

use std::net::SocketAddr;

use askama::Template;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use sha2::{Digest, Sha256};

use crate::Console;
use crate::api::{Api, ApiFailure, q};
use crate::model::{Me, Role, User};

/// The API's session cookie.
pub const SESSION_COOKIE: &str = "apm_session";
/// Double-submit cookie protecting the login form (there is no session yet to derive from).
pub const LOGIN_CSRF_COOKIE: &str = "apm_login_csrf";
/// Form field carrying the CSRF token.
pub const CSRF_FIELD: &str = "_csrf";
/// Header carrying the CSRF token (htmx requests).
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The CSRF token of a session: derived from the (HttpOnly, unguessable) session token, so
/// another site can neither read nor compute it, and nothing needs storing.
pub fn csrf_token(session_token: &str) -> String {
    let digest = Sha256::digest(format!("apm-console-csrf\0{session_token}").as_bytes());
    hex::encode(&digest[..20])
}

/// Constant-time comparison for tokens.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Reads a cookie.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, v)| *k == name && !v.is_empty())
        .map(|(_, v)| v.to_string())
}

/// A `next=` target that stays on this site.
pub fn safe_next(next: &str) -> String {
    if next.starts_with('/')
        && !next.starts_with("//")
        && !next.contains('\\')
        && !next.starts_with("/login")
    {
        next.to_string()
    } else {
        "/".to_string()
    }
}

/// What a console handler gets: the API client acting for this browser, and who it is.
pub struct Ctx {
    /// API client.
    pub api: Api,
    /// Session token, when the browser has one.
    pub token: Option<String>,
    /// `Path?query` of this request (the `next` of a login redirect).
    pub here: String,
    /// Whether htmx made the request.
    pub htmx: bool,
}

impl FromRequestParts<Console> for Ctx {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Console,
    ) -> Result<Self, Self::Rejection> {
        let token = cookie(&parts.headers, SESSION_COOKIE);
        let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().cloned();
        let request_id = parts.headers.get("x-request-id").cloned();
        let here = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        Ok(Ctx {
            api: Api::new(state.api.clone(), token.clone(), peer, request_id),
            token,
            here,
            htmx: parts.headers.contains_key("hx-request"),
        })
    }
}

impl Ctx {
    /// The logged-in user, or a redirect to the login page.
    pub async fn me(&self) -> Result<User, UiError> {
        Ok(self.whoami().await?.user)
    }

    /// The logged-in user with what the server says about the session (approval mode), or a
    /// redirect to the login page.
    pub async fn whoami(&self) -> Result<Me, UiError> {
        if self.token.is_none() {
            return Err(UiError::Login {
                next: self.here.clone(),
                expired: false,
                htmx: self.htmx,
            });
        }
        match self.api.get::<Me>("/api/v1/auth/me").await {
            Ok(me) => Ok(me),
            Err(f) if f.status == StatusCode::UNAUTHORIZED => Err(UiError::Login {
                next: self.here.clone(),
                expired: true,
                htmx: self.htmx,
            }),
            Err(f) => Err(UiError::Api(f)),
        }
    }

    /// The layout data for a page.
    pub fn chrome(&self, user: &User, section: &'static str) -> Chrome {
        Chrome {
            username: user.username.clone(),
            role: user.role,
            csrf: self.token.as_deref().map(csrf_token).unwrap_or_default(),
            section,
            flash: String::new(),
        }
    }
}

/// Layout data every page carries.
#[derive(Debug, Clone)]
pub struct Chrome {
    /// Logged-in user.
    pub username: String,
    /// Their role.
    pub role: Role,
    /// CSRF token for forms.
    pub csrf: String,
    /// Active nav section.
    pub section: &'static str,
    /// A one-line notice (after an action).
    pub flash: String,
}

impl Chrome {
    /// Admin or root: may change configs, captures, regular users.
    pub fn can_edit(&self) -> bool {
        self.role >= Role::Admin
    }

    /// Root.
    pub fn is_root(&self) -> bool {
        self.role == Role::Root
    }

    /// With a notice.
    pub fn with_flash(mut self, flash: impl Into<String>) -> Chrome {
        self.flash = flash.into();
        self
    }

    /// `aria-current` for a nav link.
    pub fn current(&self, section: &str) -> &'static str {
        if self.section == section {
            "page"
        } else {
            "false"
        }
    }
}

/// A posted form whose CSRF token was checked.
pub struct Posted {
    /// Context.
    pub ctx: Ctx,
    /// Fields in order.
    pub fields: Vec<(String, String)>,
}

impl Posted {
    /// First value of a field (empty when absent).
    pub fn get(&self, name: &str) -> String {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    }

    /// All values of a field.
    pub fn all(&self, name: &str) -> Vec<String> {
        self.fields
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .collect()
    }
}

impl FromRequest<Console> for Posted {
    type Rejection = Response;

    async fn from_request(req: Request, state: &Console) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = req.into_parts();
        let Ok(ctx) = Ctx::from_request_parts(&mut parts, state).await;
        // Browsers send Origin on every POST; a foreign one is a cross-site request.
        if let (Some(origin), Some(host)) = (
            parts
                .headers
                .get(header::ORIGIN)
                .and_then(|v| v.to_str().ok()),
            parts
                .headers
                .get(header::HOST)
                .and_then(|v| v.to_str().ok()),
        ) {
            let origin_host = origin.split_once("://").map(|(_, h)| h).unwrap_or(origin);
            if origin_host != host {
                return Err(UiError::Csrf.into_response());
            }
        }
        let bytes = match axum::body::to_bytes(body, 2 * 1024 * 1024).await {
            Ok(b) => b,
            Err(_) => {
                return Err(UiError::Bad("the form is larger than 2 MiB".into()).into_response());
            }
        };
        let fields: Vec<(String, String)> = url::form_urlencoded::parse(&bytes)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let sent = fields
            .iter()
            .find(|(k, _)| k == CSRF_FIELD)
            .map(|(_, v)| v.clone())
            .or_else(|| {
                parts
                    .headers
                    .get(CSRF_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            })
            .unwrap_or_default();
        // The session's token, or the login form's double-submit cookie (only sent to /login;
        // a stale session cookie may still be present when logging in again).
        let expected: Vec<String> = ctx
            .token
            .as_deref()
            .map(csrf_token)
            .into_iter()
            .chain(cookie(&parts.headers, LOGIN_CSRF_COOKIE))
            .collect();
        let referer_path = parts
            .headers
            .get(header::REFERER)
            .and_then(|v| v.to_str().ok())
            .and_then(|r| r.split_once("://").map(|(_, rest)| rest))
            .and_then(|rest| rest.find('/').map(|i| rest[i..].to_string()))
            .unwrap_or_else(|| "/".into());
        match expected.as_slice() {
            e if !sent.is_empty() && e.iter().any(|e| same(e, &sent)) => {
                // A form sent after the session ended: keep what was typed through the login.
                if ctx.token.is_some()
                    && parts.uri.path() != "/login"
                    && parts.uri.path() != "/logout"
                    && let Err(UiError::Login { .. }) = ctx.me().await
                {
                    if ctx.htmx {
                        return Err((StatusCode::UNAUTHORIZED, "session ended").into_response());
                    }
                    return Err(crate::views::auth::login_keeping(&referer_path, &fields));
                }
                Ok(Posted { ctx, fields })
            }
            // No session and no login cookie: the session cookie is gone, so the user has to log
            // in again rather than being told about CSRF.
            [] if ctx.htmx => Err((StatusCode::UNAUTHORIZED, "session ended").into_response()),
            [] => Err(crate::views::auth::login_keeping(&referer_path, &fields)),
            _ => Err(UiError::Csrf.into_response()),
        }
    }
}

/// Why a page could not be shown.
#[derive(Debug)]
pub enum UiError {
    /// Not logged in (or the session died): go to the login page.
    Login {
        /// Where to come back to.
        next: String,
        /// Whether a session existed and ended.
        expired: bool,
        /// htmx asked: answer 401 so the page script keeps the user's input and redirects.
        htmx: bool,
    },
    /// The API refused or failed.
    Api(ApiFailure),
    /// The CSRF token was missing or wrong.
    Csrf,
    /// The user's role does not allow this page.
    Forbidden(String),
    /// A bad request from the browser.
    Bad(String),
    /// Rendering failed.
    Render(String),
}

impl From<ApiFailure> for UiError {
    fn from(f: ApiFailure) -> Self {
        UiError::Api(f)
    }
}

impl From<askama::Error> for UiError {
    fn from(e: askama::Error) -> Self {
        UiError::Render(e.to_string())
    }
}

/// The error page.
#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    status: u16,
    heading: String,
    detail: String,
    hint: String,
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        let (status, heading, detail, hint) = match self {
            UiError::Login { next, expired, htmx } => {
                if htmx {
                    return (StatusCode::UNAUTHORIZED, "session ended").into_response();
                }
                let url = format!(
                    "/login?next={}{}",
                    q(&safe_next(&next)),
                    if expired { "&expired=1" } else { "" }
                );
                return Redirect::to(&url).into_response();
            }
            UiError::Api(f) if f.status == StatusCode::UNAUTHORIZED => {
                return UiError::Login {
                    next: "/".into(),
                    expired: true,
                    htmx: false,
                }
                .into_response();
            }
            UiError::Api(f) if f.status == StatusCode::FORBIDDEN => (
                StatusCode::FORBIDDEN,
                "Not allowed".to_string(),
                f.message(),
                "Your role can view this area but not change it. Ask an admin if you need a change made.".to_string(),
            ),
            UiError::Forbidden(detail) => (
                StatusCode::FORBIDDEN,
                "Not allowed".to_string(),
                detail,
                "Your role can view this area but not change it. Ask an admin if you need a change made.".to_string(),
            ),
            UiError::Api(f) if f.status == StatusCode::NOT_FOUND => (
                StatusCode::NOT_FOUND,
                "Not found".to_string(),
                f.message(),
                "It may have been removed, or the link is wrong.".to_string(),
            ),
            UiError::Api(f) => (
                if f.status.is_client_error() || f.status.is_server_error() {
                    f.status
                } else {
                    StatusCode::BAD_GATEWAY
                },
                if f.problem.title.is_empty() {
                    "The request failed".to_string()
                } else {
                    f.problem.title.clone()
                },
                f.message(),
                match &f.problem.current_state {
                    Some(s) => format!("Current state: {s}."),
                    None => String::new(),
                },
            ),
            UiError::Csrf => (
                StatusCode::FORBIDDEN,
                "Form expired".to_string(),
                "This form was not sent from a page of this console (or it is from an earlier session), so it was not processed.".to_string(),
                "Go back, reload the page and submit again.".to_string(),
            ),
            UiError::Bad(detail) => (
                StatusCode::BAD_REQUEST,
                "Bad request".to_string(),
                detail,
                String::new(),
            ),
            UiError::Render(detail) => {
                tracing::error!(error = %detail, "console template failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Page failed".to_string(),
                    "The console could not render this page; the error is in the server log.".to_string(),
                    String::new(),
                )
            }
        };
        let page = ErrorPage {
            status: status.as_u16(),
            heading,
            detail,
            hint,
        };
        match page.render() {
            Ok(html) => (status, Html(html)).into_response(),
            Err(_) => (status, page.detail).into_response(),
        }
    }
}

/// Renders a template into a response.
pub fn page<T: Template>(t: &T) -> Result<Response, UiError> {
    Ok(Html(t.render()?).into_response())
}

/// A 303 to `to` (after a successful POST).
pub fn see_other(to: &str) -> Response {
    Redirect::to(to).into_response()
}

/// 403 unless the user may edit.
pub fn require_admin(user: &User) -> Result<(), UiError> {
    if user.role >= Role::Admin {
        Ok(())
    } else {
        Err(UiError::Forbidden(format!(
            "This page changes things and needs the admin role; you are signed in as {} ({}).",
            user.username,
            user.role.as_str()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn csrf_tokens_are_per_session_and_stable() {
        let a = csrf_token("apms_a");
        assert_eq!(a, csrf_token("apms_a"));
        assert_ne!(a, csrf_token("apms_b"));
        assert_eq!(a.len(), 40);
        assert!(same(&a, &csrf_token("apms_a")));
        assert!(!same(&a, "x"));
    }

    #[test]
    fn next_targets_stay_on_site() {
        assert_eq!(safe_next("/configs/1?x=2"), "/configs/1?x=2");
        assert_eq!(safe_next("//evil.example/"), "/");
        assert_eq!(safe_next("https://evil.example/"), "/");
        assert_eq!(safe_next("/\\evil"), "/");
        assert_eq!(safe_next("/login?next=/x"), "/");
    }

    #[test]
    fn cookies_are_found_by_exact_name() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; apm_session=apms_x; apm_session_old=y"),
        );
        assert_eq!(cookie(&h, SESSION_COOKIE).as_deref(), Some("apms_x"));
        assert_eq!(cookie(&h, "nope"), None);
    }
}
