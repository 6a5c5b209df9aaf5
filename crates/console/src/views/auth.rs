//! Login and logout. The login form posts here; the console forwards the credentials to
//! `POST /api/v1/auth/login` (rate limits, audit and the session cookie are the API's) and
//! passes the API's `Set-Cookie` on to the browser.

use askama::Template;
use axum::extract::Query;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use crate::ctx::{Ctx, LOGIN_CSRF_COOKIE, Posted, UiError, safe_next, see_other};

/// Query of the login page.
#[derive(Debug, Deserialize, Default)]
#[serde(default)]
pub struct LoginQuery {
    next: String,
    expired: Option<String>,
    bye: Option<String>,
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    csrf: String,
    next: String,
    username: String,
    error: String,
    notice: String,
    /// Form fields of a POST that failed because the session had ended, to be filled back in.
    draft_json: String,
    /// The page those fields belong to.
    draft_path: String,
}

fn login_page(page: LoginPage, status: StatusCode) -> Response {
    let cookie = format!(
        "{LOGIN_CSRF_COOKIE}={}; HttpOnly; SameSite=Strict; Path=/login; Max-Age=3600",
        page.csrf
    );
    match page.render() {
        Ok(html) => {
            let mut response = (status, Html(html)).into_response();
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                response.headers_mut().append(header::SET_COOKIE, v);
            }
            response
        }
        Err(e) => UiError::from(e).into_response(),
    }
}

fn fresh_csrf() -> String {
    let bytes: [u8; 20] = rand::random();
    hex::encode(bytes)
}

/// `GET /login`.
pub async fn login_form(ctx: Ctx, Query(q): Query<LoginQuery>) -> Response {
    let next = safe_next(&q.next);
    // Already logged in: straight on.
    if ctx.token.is_some() && ctx.me().await.is_ok() {
        return see_other(&next);
    }
    let notice = if q.expired.is_some() {
        "Your session ended (no activity for a while, or it was logged out elsewhere). Log in again to continue where you were."
    } else if q.bye.is_some() {
        "You are logged out."
    } else {
        ""
    };
    login_page(
        LoginPage {
            csrf: fresh_csrf(),
            next,
            username: String::new(),
            error: String::new(),
            notice: notice.into(),
            draft_json: String::new(),
            draft_path: String::new(),
        },
        StatusCode::OK,
    )
}

/// `POST /login`.
pub async fn login(form: Posted) -> Response {
    let username = form.get("username");
    let password = form.get("password");
    let next = safe_next(&form.get("next"));
    let reply = form
        .ctx
        .api
        .call(
            axum::http::Method::POST,
            "/api/v1/auth/login",
            Some(&json!({"username": username, "password": password})),
        )
        .await;
    if reply.status.is_success() {
        let mut response = see_other(&next);
        for c in reply.headers.get_all(header::SET_COOKIE) {
            response.headers_mut().append(header::SET_COOKIE, c.clone());
        }
        // The login form's CSRF cookie has done its job.
        response.headers_mut().append(
            header::SET_COOKIE,
            HeaderValue::from_static(
                "apm_login_csrf=; HttpOnly; SameSite=Strict; Path=/login; Max-Age=0",
            ),
        );
        return response;
    }
    let failure = reply.failure();
    let status = if failure.status == StatusCode::TOO_MANY_REQUESTS {
        StatusCode::TOO_MANY_REQUESTS
    } else {
        StatusCode::UNAUTHORIZED
    };
    login_page(
        LoginPage {
            csrf: fresh_csrf(),
            next,
            username,
            error: failure.message(),
            notice: String::new(),
            draft_json: form.get("_draft_json"),
            draft_path: form.get("_draft_path"),
        },
        status,
    )
}

/// `POST /logout`.
pub async fn logout(form: Posted) -> Response {
    let reply = form
        .ctx
        .api
        .call(axum::http::Method::POST, "/api/v1/auth/logout", None)
        .await;
    let mut response = see_other("/login?bye=1");
    for c in reply.headers.get_all(header::SET_COOKIE) {
        response.headers_mut().append(header::SET_COOKIE, c.clone());
    }
    if !reply.headers.contains_key(header::SET_COOKIE) {
        response.headers_mut().append(
            header::SET_COOKIE,
            HeaderValue::from_static("apm_session=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"),
        );
    }
    response
}

/// The login page for a form POST whose session had ended: the typed fields (never passwords or
/// tokens) travel with the page and are put back into the form after logging in.
pub fn login_keeping(next: &str, fields: &[(String, String)]) -> Response {
    let kept: Vec<(&str, &str)> = fields
        .iter()
        .filter(|(k, _)| {
            !matches!(k.as_str(), "_csrf" | "op" | "next" | "password" | "confirm")
                && !k.starts_with("_draft")
        })
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let next = safe_next(next);
    login_page(
        LoginPage {
            csrf: fresh_csrf(),
            next: next.clone(),
            username: String::new(),
            error: String::new(),
            notice: "Your session ended before this form was sent, so nothing was saved. Log in again: what you typed will be filled back in.".into(),
            draft_json: if kept.is_empty() { String::new() } else { serde_json::to_string(&kept).unwrap_or_default() },
            draft_path: next.split(['?', '#']).next().unwrap_or("/").to_string(),
        },
        StatusCode::UNAUTHORIZED,
    )
}
