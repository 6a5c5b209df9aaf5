//! Users, login sessions (login, beacon, logout, me) and API tokens.

use std::net::SocketAddr;

use apm_store::auth::{ApiTokenRow, SessionRow, UserRow};
use apm_store::{new_id, now_ms};
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::util::{check_len, check_name, fmt_ms, fmt_opt};
use crate::audit::{self, Actor, NONE};
use crate::auth::{self, AuthKind, Caller, Role, SESSION_COOKIE, prefix};
use crate::error::{ApiError, ApiResult, Json, Path};
use crate::state::AppState;

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_users, create_user))
        .routes(routes!(get_user, update_user))
        .routes(routes!(login))
        .routes(routes!(beacon))
        .routes(routes!(logout))
        .routes(routes!(me))
        .routes(routes!(list_tokens, create_token))
        .routes(routes!(revoke_token))
}

/// A user as shown by the API (never the password hash).
#[derive(Debug, Serialize, ToSchema)]
pub struct UserView {
    /// Id.
    pub id: String,
    /// Login name.
    pub username: String,
    /// Role.
    pub role: Role,
    /// Disabled accounts cannot log in.
    pub disabled: bool,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
}

impl UserView {
    pub(crate) fn of(u: &UserRow) -> UserView {
        UserView {
            id: u.id.clone(),
            username: u.username.clone(),
            role: Role::parse(&u.role).unwrap_or(Role::Regular),
            disabled: u.disabled != 0,
            created_at: fmt_ms(u.created_at),
            updated_at: fmt_ms(u.updated_at),
        }
    }
}

/// New user.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    /// 1-64 of letters, digits, `._-@`.
    pub username: String,
    /// At least 8 characters.
    pub password: String,
    /// `admin` (root only) or `regular`.
    pub role: Role,
}

/// Changes to a user; absent fields stay as they are.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUser {
    /// New password (also revokes the user's sessions and API tokens).
    pub password: Option<String>,
    /// New role.
    pub role: Option<Role>,
    /// Disable (true) or enable (false); disabling revokes sessions and tokens.
    pub disabled: Option<bool>,
}

fn check_password(p: &str) -> ApiResult<()> {
    let n = p.chars().count();
    if n < 8 {
        return Err(ApiError::invalid(format!(
            "password: {n} characters is shorter than the minimum of 8"
        )));
    }
    if n > 1024 {
        return Err(ApiError::invalid("password: longer than 1024 characters"));
    }
    Ok(())
}

/// Whether `caller` may manage an account with role `target` (root manages admins and
/// regulars, admins manage regulars).
fn may_manage(caller: &Caller, target: Role) -> ApiResult<()> {
    match (caller.role, target) {
        (_, Role::Root) => Err(ApiError::forbidden(
            "the root account cannot be created, disabled or re-roled",
        )),
        (Role::Root, _) => Ok(()),
        (Role::Admin, Role::Regular) => Ok(()),
        (Role::Admin, Role::Admin) => Err(ApiError::forbidden("only root manages admin accounts")),
        (Role::Regular, _) => Err(ApiError::forbidden(
            "this action requires the admin role; you are regular",
        )),
    }
}

/// Lists users.
#[utoipa::path(get, path = "/api/v1/users", tag = "users",
    responses((status = 200, body = Vec<UserView>), (status = 401, body = crate::error::Problem)))]
async fn list_users(
    State(state): State<AppState>,
    _caller: Caller,
) -> ApiResult<Json<Vec<UserView>>> {
    let mut conn = state.db.acquire().await?;
    let users = apm_store::auth::list_users(&mut conn).await?;
    Ok(Json(users.iter().map(UserView::of).collect()))
}

/// Creates a user (root: admin or regular; admin: regular).
#[utoipa::path(post, path = "/api/v1/users", tag = "users", request_body = CreateUser,
    responses((status = 201, body = UserView), (status = 403, body = crate::error::Problem),
              (status = 409, body = crate::error::Problem), (status = 422, body = crate::error::Problem)))]
async fn create_user(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<CreateUser>,
) -> ApiResult<(StatusCode, Json<UserView>)> {
    caller.require(Role::Admin)?;
    may_manage(&caller, body.role)?;
    check_name("username", &body.username, 64, "._-@")?;
    check_password(&body.password)?;
    let now = now_ms();
    let row = UserRow {
        id: new_id(),
        username: body.username,
        password_hash: auth::hash_password_blocking(body.password).await?,
        role: body.role.as_str().to_string(),
        disabled: 0,
        created_at: now,
        updated_at: now,
    };
    let view = UserView::of(&row);
    let mut tx = state.db.begin_write().await?;
    apm_store::auth::insert_user(&mut tx, &row).await?;
    audit::record(
        &mut tx,
        &Actor::from(&caller),
        "user.create",
        "user",
        Some(&row.id),
        NONE,
        Some(&view),
    )
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(view)))
}

/// One user.
#[utoipa::path(get, path = "/api/v1/users/{id}", tag = "users", params(("id" = String, Path, description = "User id")),
    responses((status = 200, body = UserView), (status = 404, body = crate::error::Problem)))]
async fn get_user(
    State(state): State<AppState>,
    _caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<UserView>> {
    let mut conn = state.db.acquire().await?;
    let user = apm_store::auth::get_user(&mut conn, &id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no user with id {id}")))?;
    Ok(Json(UserView::of(&user)))
}

/// Changes password, role or disabled flag. Everyone may change their own password.
#[utoipa::path(patch, path = "/api/v1/users/{id}", tag = "users", request_body = UpdateUser,
    params(("id" = String, Path, description = "User id")),
    responses((status = 200, body = UserView), (status = 403, body = crate::error::Problem),
              (status = 404, body = crate::error::Problem)))]
async fn update_user(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Json(body): Json<UpdateUser>,
) -> ApiResult<Json<UserView>> {
    if let Some(p) = &body.password {
        check_password(p)?;
    }
    let new_hash = match body.password.clone() {
        Some(p) => Some(auth::hash_password_blocking(p).await?),
        None => None,
    };
    let mut tx = state.db.begin_write().await?;
    let user = apm_store::auth::get_user(&mut tx, &id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no user with id {id}")))?;
    let target_role = Role::parse(&user.role).unwrap_or(Role::Regular);
    let own_password_only =
        user.id == caller.user_id && body.role.is_none() && body.disabled.is_none();
    if !own_password_only {
        caller.require(Role::Admin)?;
        may_manage(&caller, target_role)?;
        if user.id == caller.user_id {
            return Err(ApiError::forbidden(
                "you cannot change your own role or disable yourself",
            ));
        }
        if let Some(new_role) = body.role {
            may_manage(&caller, new_role)?;
        }
    }
    let old_view = UserView::of(&user);
    let mut updated = user.clone();
    let now = now_ms();
    if let Some(h) = new_hash {
        updated.password_hash = h;
    }
    if let Some(r) = body.role {
        updated.role = r.as_str().to_string();
    }
    if let Some(d) = body.disabled {
        updated.disabled = i64::from(d);
    }
    updated.updated_at = now;
    apm_store::auth::update_user(&mut tx, &updated).await?;
    if body.password.is_some() || body.disabled == Some(true) || body.role.is_some() {
        apm_store::auth::revoke_user_credentials(&mut tx, &updated.id, now).await?;
    }
    let new_view = UserView::of(&updated);
    let mut new_value = serde_json::to_value(&new_view).map_err(ApiError::internal)?;
    if body.password.is_some() {
        new_value["password_changed"] = json!(true);
    }
    audit::record(
        &mut tx,
        &Actor::from(&caller),
        "user.update",
        "user",
        Some(&updated.id),
        Some(&old_view),
        Some(&new_value),
    )
    .await?;
    tx.commit().await?;
    Ok(Json(new_view))
}

/// Login request.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// Username.
    pub username: String,
    /// Password.
    pub password: String,
}

/// A new session.
#[derive(Debug, Serialize, ToSchema)]
pub struct LoginResponse {
    /// Bearer token for API clients (the console uses the HttpOnly cookie set alongside).
    pub token: String,
    /// Absolute end of the session (RFC 3339).
    pub expires_at: String,
    /// The session dies after this many seconds without a beacon or request.
    pub idle_timeout_seconds: u64,
    /// Who logged in.
    pub user: UserView,
}

fn session_cookie(state: &AppState, value: &str, max_age: u64) -> Option<HeaderValue> {
    let secure = if state.settings.cookie_secure {
        "; Secure"
    } else {
        ""
    };
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={value}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age}{secure}"
    ))
    .ok()
}

/// Logs in; answers a bearer token and sets the session cookie. Failed attempts are rate-limited
/// per client address and username.
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth", request_body = LoginRequest, security(()),
    responses((status = 200, body = LoginResponse), (status = 401, body = crate::error::Problem),
              (status = 429, body = crate::error::Problem)))]
async fn login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: axum::http::HeaderMap,
    Json(body): Json<LoginRequest>,
) -> ApiResult<Response> {
    let client = peer.ip().to_string();
    let request_id = headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if let Err(wait) = state.limiter.check(&client, &body.username) {
        return Err(ApiError::rate_limited(
            format!(
                "too many failed logins for {:?} from {client}; retry in {wait} s",
                body.username
            ),
            wait,
        ));
    }
    let user = {
        let mut conn = state.db.acquire().await?;
        apm_store::auth::get_user_by_name(&mut conn, &body.username).await?
    };
    // Verify even for unknown users so timing does not reveal which usernames exist.
    let phc = match &user {
        Some(u) => u.password_hash.clone(),
        None => dummy_hash().await?,
    };
    let ok = auth::verify_password_blocking(body.password, phc).await && user.is_some();
    let now = now_ms();
    let Some(user) = user.filter(|_| ok) else {
        state.limiter.fail(&client, &body.username);
        let mut tx = state.db.begin_write().await?;
        let actor = Actor {
            id: None,
            name: body.username.clone(),
            request_id,
        };
        audit::record(
            &mut tx,
            &actor,
            "auth.login_failed",
            "user",
            None,
            NONE,
            Some(&json!({"client": client})),
        )
        .await?;
        tx.commit().await?;
        return Err(ApiError::unauthorized("invalid username or password"));
    };
    if user.disabled != 0 {
        let mut tx = state.db.begin_write().await?;
        let actor = Actor {
            id: Some(user.id.clone()),
            name: user.username.clone(),
            request_id,
        };
        let new = json!({"client": client, "reason": "account disabled"});
        audit::record(
            &mut tx,
            &actor,
            "auth.login_failed",
            "user",
            Some(&user.id),
            NONE,
            Some(&new),
        )
        .await?;
        tx.commit().await?;
        return Err(ApiError::unauthorized("this account is disabled"));
    }
    state.limiter.succeed(&client, &body.username);
    let token = auth::new_token(prefix::SESSION);
    let lifetime_ms = state.settings.session_max_lifetime_secs as i64 * 1000;
    let session = SessionRow {
        id: new_id(),
        token_hash: auth::token_hash(&token),
        user_id: user.id.clone(),
        created_at: now,
        last_seen_at: now,
        expires_at: now + lifetime_ms,
        revoked_at: None,
    };
    let mut tx = state.db.begin_write().await?;
    apm_store::auth::insert_session(&mut tx, &session).await?;
    let actor = Actor {
        id: Some(user.id.clone()),
        name: user.username.clone(),
        request_id,
    };
    audit::record(
        &mut tx,
        &actor,
        "auth.login",
        "session",
        Some(&session.id),
        NONE,
        Some(&json!({"client": client})),
    )
    .await?;
    tx.commit().await?;
    let body = LoginResponse {
        token: token.clone(),
        expires_at: fmt_ms(session.expires_at),
        idle_timeout_seconds: state.settings.session_idle_timeout_secs,
        user: UserView::of(&user),
    };
    let mut response = Json(body).into_response();
    if let Some(c) = session_cookie(&state, &token, state.settings.session_max_lifetime_secs) {
        response.headers_mut().insert(header::SET_COOKIE, c);
    }
    Ok(response)
}

/// An argon2id hash of a random string, verified against for unknown usernames.
async fn dummy_hash() -> ApiResult<String> {
    static DUMMY: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();
    DUMMY
        .get_or_try_init(|| auth::hash_password_blocking(auth::new_token("")))
        .await
        .cloned()
}

/// Beacon answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct BeaconResponse {
    /// Always "ok".
    pub status: String,
    /// Server clock (RFC 3339).
    pub server_time: String,
    /// The session dies if no beacon arrives before this time (RFC 3339).
    pub idle_expires_at: String,
}

/// Keeps a session alive (the console sends it every 30 s).
#[utoipa::path(post, path = "/api/v1/auth/beacon", tag = "auth",
    responses((status = 200, body = BeaconResponse), (status = 401, body = crate::error::Problem)))]
async fn beacon(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<BeaconResponse>> {
    let now = now_ms();
    if let AuthKind::Session { id, .. } = &caller.auth {
        let mut conn = state.db.write_conn().await?;
        apm_store::auth::touch_session(&mut conn, id, now).await?;
    }
    Ok(Json(BeaconResponse {
        status: "ok".into(),
        server_time: fmt_ms(now),
        idle_expires_at: fmt_ms(now + state.settings.session_idle_timeout_secs as i64 * 1000),
    }))
}

/// Ends the session (and clears the cookie).
#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "auth",
    responses((status = 204), (status = 400, body = crate::error::Problem), (status = 401, body = crate::error::Problem)))]
async fn logout(State(state): State<AppState>, caller: Caller) -> ApiResult<Response> {
    let AuthKind::Session { id, .. } = &caller.auth else {
        return Err(ApiError::bad_request(
            "logout ends login sessions; revoke an API token with DELETE /api/v1/tokens/{id}",
        ));
    };
    let mut tx = state.db.begin_write().await?;
    apm_store::auth::revoke_session(&mut tx, id, now_ms()).await?;
    audit::record(
        &mut tx,
        &Actor::from(&caller),
        "auth.logout",
        "session",
        Some(id),
        NONE,
        NONE,
    )
    .await?;
    tx.commit().await?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    if let Some(c) = session_cookie(&state, "", 0) {
        response.headers_mut().insert(header::SET_COOKIE, c);
    }
    Ok(response)
}

/// The caller.
#[derive(Debug, Serialize, ToSchema)]
pub struct MeResponse {
    /// The user.
    pub user: UserView,
    /// `session` or `api_token`.
    pub auth: String,
    /// How this server approves configs (`self_confirm` or `four_eyes`), so a client can tell
    /// who may approve a pending version before trying.
    pub approval_mode: String,
}

/// Who am I.
#[utoipa::path(get, path = "/api/v1/auth/me", tag = "auth",
    responses((status = 200, body = MeResponse), (status = 401, body = crate::error::Problem)))]
async fn me(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<MeResponse>> {
    let mut conn = state.db.acquire().await?;
    let user = apm_store::auth::get_user(&mut conn, &caller.user_id)
        .await?
        .ok_or_else(|| ApiError::unauthorized("account gone"))?;
    Ok(Json(MeResponse {
        user: UserView::of(&user),
        auth: match caller.auth {
            AuthKind::Session { .. } => "session".into(),
            AuthKind::ApiToken { .. } => "api_token".into(),
        },
        approval_mode: state.settings.approval_mode.as_str().to_string(),
    }))
}

/// An API token as listed (never the token itself).
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenView {
    /// Id.
    pub id: String,
    /// Label.
    pub name: String,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339, if it expires.
    pub expires_at: Option<String>,
    /// RFC 3339 (updated at most once a minute).
    pub last_used_at: Option<String>,
    /// Revoked tokens stay listed.
    pub revoked: bool,
}

impl TokenView {
    fn of(t: &ApiTokenRow) -> TokenView {
        TokenView {
            id: t.id.clone(),
            name: t.name.clone(),
            created_at: fmt_ms(t.created_at),
            expires_at: fmt_opt(t.expires_at),
            last_used_at: fmt_opt(t.last_used_at),
            revoked: t.revoked_at.is_some(),
        }
    }
}

/// New API token.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    /// Label, 1-100 characters.
    pub name: String,
    /// Lifetime in seconds; none = until revoked.
    pub expires_in_seconds: Option<u64>,
}

/// The token, shown once.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedToken {
    /// Send as `Authorization: Bearer ...`. Not retrievable later.
    pub token: String,
    /// Metadata.
    #[serde(flatten)]
    pub info: TokenView,
}

/// The caller's API tokens.
#[utoipa::path(get, path = "/api/v1/tokens", tag = "auth",
    responses((status = 200, body = Vec<TokenView>), (status = 401, body = crate::error::Problem)))]
async fn list_tokens(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Vec<TokenView>>> {
    let mut conn = state.db.acquire().await?;
    let tokens = apm_store::auth::list_api_tokens(&mut conn, &caller.user_id).await?;
    Ok(Json(tokens.iter().map(TokenView::of).collect()))
}

/// Creates an API token carrying the caller's role.
#[utoipa::path(post, path = "/api/v1/tokens", tag = "auth", request_body = CreateToken,
    responses((status = 201, body = CreatedToken), (status = 401, body = crate::error::Problem),
              (status = 422, body = crate::error::Problem)))]
async fn create_token(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<CreateToken>,
) -> ApiResult<(StatusCode, Json<CreatedToken>)> {
    if body.name.trim().is_empty() {
        return Err(ApiError::invalid("name: must not be empty"));
    }
    check_len("name", &body.name, 100)?;
    let now = now_ms();
    let expires_at = match body.expires_in_seconds {
        Some(0) => return Err(ApiError::invalid("expires_in_seconds: must be at least 1")),
        Some(s) if s > 10 * 365 * 86400 => {
            return Err(ApiError::invalid("expires_in_seconds: at most ten years"));
        }
        Some(s) => Some(now + s as i64 * 1000),
        None => None,
    };
    let token = auth::new_token(prefix::API);
    let row = ApiTokenRow {
        id: new_id(),
        token_hash: auth::token_hash(&token),
        user_id: caller.user_id.clone(),
        name: body.name,
        created_at: now,
        expires_at,
        last_used_at: None,
        revoked_at: None,
    };
    let info = TokenView::of(&row);
    let mut tx = state.db.begin_write().await?;
    apm_store::auth::insert_api_token(&mut tx, &row).await?;
    audit::record(
        &mut tx,
        &Actor::from(&caller),
        "token.create",
        "api_token",
        Some(&row.id),
        NONE,
        Some(&info),
    )
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(CreatedToken { token, info })))
}

/// Revokes an API token (its owner, or root).
#[utoipa::path(delete, path = "/api/v1/tokens/{id}", tag = "auth", params(("id" = String, Path, description = "Token id")),
    responses((status = 204), (status = 403, body = crate::error::Problem), (status = 404, body = crate::error::Problem)))]
async fn revoke_token(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let mut tx = state.db.begin_write().await?;
    let token = apm_store::auth::get_api_token(&mut tx, &id)
        .await?
        .filter(|t| t.user_id == caller.user_id || caller.role == Role::Root)
        .ok_or_else(|| ApiError::not_found(format!("no API token {id} of yours")))?;
    if !apm_store::auth::revoke_api_token(&mut tx, &id, now_ms()).await? {
        return Err(ApiError::conflict(format!(
            "API token {id} is already revoked"
        )));
    }
    let old = TokenView::of(&token);
    audit::record(
        &mut tx,
        &Actor::from(&caller),
        "token.revoke",
        "api_token",
        Some(&id),
        Some(&old),
        Some(&json!({"revoked": true})),
    )
    .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
