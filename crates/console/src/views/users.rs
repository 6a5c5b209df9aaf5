//! Users (root manages admins, admins manage regular users — the API decides) and the current
//! user's API tokens.

use askama::Template;
use axum::extract::{Path, Query};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::q;
use crate::ctx::{Chrome, Ctx, Posted, UiError, page, see_other};
use crate::model::{CreatedToken, Role, Token, User};
use crate::views::{ago, when};

struct UserRow {
    id: String,
    username: String,
    role: String,
    disabled: bool,
    created: String,
    manageable: bool,
    is_me: bool,
}

#[derive(Template)]
#[template(path = "users.html")]
struct UsersPage {
    c: Chrome,
    rows: Vec<UserRow>,
    error: String,
    username: String,
    role: String,
}

/// Query of the users page.
#[derive(Debug, Deserialize, Default)]
#[serde(default)]
pub struct MsgQuery {
    msg: String,
}

/// Whether `me` may manage accounts of role `target` (display only; the API enforces).
pub fn may_manage(me: Role, target: Role) -> bool {
    match me {
        Role::Root => target != Role::Root,
        Role::Admin => target == Role::Regular,
        Role::Regular => false,
    }
}

async fn users_page(
    ctx: &Ctx,
    me: &User,
    flash: &str,
    error: String,
    username: String,
    role: String,
) -> Result<Response, UiError> {
    let users: Vec<User> = ctx.api.get("/api/v1/users").await?;
    let rows = users
        .iter()
        .map(|u| UserRow {
            id: u.id.clone(),
            username: u.username.clone(),
            role: u.role.as_str().into(),
            disabled: u.disabled,
            created: when(&u.created_at),
            manageable: may_manage(me.role, u.role),
            is_me: u.id == me.id,
        })
        .collect();
    let status = if error.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    let mut response = page(&UsersPage {
        c: ctx.chrome(me, "users").with_flash(flash),
        rows,
        error,
        username,
        role,
    })?;
    *response.status_mut() = status;
    Ok(response)
}

/// `GET /users`.
pub async fn list(ctx: Ctx, Query(mq): Query<MsgQuery>) -> Result<Response, UiError> {
    let me = ctx.me().await?;
    let flash = match mq.msg.as_str() {
        "created" => "User created.",
        "password" => "Password reset. Their open sessions were ended.",
        "disabled" => "User disabled.",
        "enabled" => "User enabled.",
        _ => "",
    };
    users_page(
        &ctx,
        &me,
        flash,
        String::new(),
        String::new(),
        String::new(),
    )
    .await
}

/// `POST /users`: create.
pub async fn create(form: Posted) -> Result<Response, UiError> {
    let username = form.get("username");
    let role = form.get("role");
    let reply = form
        .ctx
        .api
        .call(
            Method::POST,
            "/api/v1/users",
            Some(&json!({"username": username, "password": form.get("password"), "role": role})),
        )
        .await;
    if reply.status.is_success() {
        return Ok(see_other("/users?msg=created"));
    }
    let failure = reply.failure();
    if matches!(failure.status.as_u16(), 400 | 409 | 422) {
        let me = form.ctx.me().await?;
        return users_page(&form.ctx, &me, "", failure.message(), username, role).await;
    }
    Err(failure.into())
}

/// `POST /users/{id}`: `password=` (reset) or `disabled=true|false`.
pub async fn update(Path(id): Path<String>, form: Posted) -> Result<Response, UiError> {
    let (body, msg) = if !form.get("password").is_empty() {
        (json!({"password": form.get("password")}), "password")
    } else {
        let disabled = form.get("disabled") == "true";
        (
            json!({"disabled": disabled}),
            if disabled { "disabled" } else { "enabled" },
        )
    };
    let reply = form
        .ctx
        .api
        .call(
            Method::PATCH,
            &format!("/api/v1/users/{}", q(&id)),
            Some(&body),
        )
        .await;
    if reply.status.is_success() {
        return Ok(see_other(&format!("/users?msg={msg}")));
    }
    let failure = reply.failure();
    if matches!(failure.status.as_u16(), 400 | 409 | 422) {
        let me = form.ctx.me().await?;
        return users_page(
            &form.ctx,
            &me,
            "",
            failure.message(),
            String::new(),
            String::new(),
        )
        .await;
    }
    Err(failure.into())
}

struct TokenRow {
    id: String,
    name: String,
    created: String,
    expires: String,
    last_used: String,
    revoked: bool,
}

#[derive(Template)]
#[template(path = "tokens.html")]
struct TokensPage {
    c: Chrome,
    rows: Vec<TokenRow>,
    new_token: String,
    error: String,
}

async fn tokens_page(
    ctx: &Ctx,
    me: &User,
    new_token: String,
    error: String,
    flash: &str,
) -> Result<Response, UiError> {
    let tokens: Vec<Token> = ctx.api.get("/api/v1/tokens").await?;
    let rows = tokens
        .iter()
        .map(|t| TokenRow {
            id: t.id.clone(),
            name: t.name.clone(),
            created: when(&t.created_at),
            expires: t
                .expires_at
                .as_deref()
                .map(when)
                .unwrap_or_else(|| "never".into()),
            last_used: ago(t.last_used_at.as_deref()),
            revoked: t.revoked,
        })
        .collect();
    page(&TokensPage {
        c: ctx.chrome(me, "tokens").with_flash(flash),
        rows,
        new_token,
        error,
    })
}

/// `GET /tokens`.
pub async fn tokens(ctx: Ctx, Query(mq): Query<MsgQuery>) -> Result<Response, UiError> {
    let me = ctx.me().await?;
    let flash = if mq.msg == "revoked" {
        "Token revoked."
    } else {
        ""
    };
    tokens_page(&ctx, &me, String::new(), String::new(), flash).await
}

/// `POST /tokens`: create; the secret is shown once on the answer page.
pub async fn create_token(form: Posted) -> Result<Response, UiError> {
    let me = form.ctx.me().await?;
    let mut body = json!({"name": form.get("name")});
    let days = form.get("expires_days");
    if !days.trim().is_empty() {
        match days.trim().parse::<u64>() {
            Ok(d) => body["expires_in_seconds"] = Value::from(d * 86_400),
            Err(_) => {
                return tokens_page(
                    &form.ctx,
                    &me,
                    String::new(),
                    format!("expires in days: {days:?} is not a whole number"),
                    "",
                )
                .await;
            }
        }
    }
    let reply = form
        .ctx
        .api
        .call(Method::POST, "/api/v1/tokens", Some(&body))
        .await;
    match reply.json::<CreatedToken>() {
        Ok(created) => tokens_page(&form.ctx, &me, created.token, String::new(), "").await,
        Err(f) if matches!(f.status.as_u16(), 400 | 409 | 422) => {
            tokens_page(&form.ctx, &me, String::new(), f.message(), "").await
        }
        Err(f) => Err(f.into()),
    }
}

/// `POST /tokens/{id}/revoke`.
pub async fn revoke_token(Path(id): Path<String>, form: Posted) -> Result<Response, UiError> {
    form.ctx
        .api
        .call(Method::DELETE, &format!("/api/v1/tokens/{}", q(&id)), None)
        .await
        .ok()?;
    Ok(see_other("/tokens?msg=revoked"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn who_manages_whom_on_screen() {
        assert!(may_manage(Role::Root, Role::Admin));
        assert!(may_manage(Role::Root, Role::Regular));
        assert!(!may_manage(Role::Root, Role::Root));
        assert!(may_manage(Role::Admin, Role::Regular));
        assert!(!may_manage(Role::Admin, Role::Admin));
        assert!(!may_manage(Role::Regular, Role::Regular));
    }
}
