//! Users, browser/API sessions and API tokens. Secrets are never stored: only argon2id password
//! hashes and SHA-256 hashes of random tokens reach this module.

use sqlx::{AnyConnection, FromRow};

use crate::{Result, unique_as_conflict};

/// A user account.
#[derive(Debug, Clone, FromRow)]
pub struct UserRow {
    /// UUID.
    pub id: String,
    /// Unique login name.
    pub username: String,
    /// argon2id PHC string.
    pub password_hash: String,
    /// `root`, `admin` or `regular`.
    pub role: String,
    /// 1 when disabled.
    pub disabled: i64,
    /// Epoch ms.
    pub created_at: i64,
    /// Epoch ms.
    pub updated_at: i64,
}

/// Inserts a user; a taken username is a [`crate::StoreError::Conflict`].
pub async fn insert_user(conn: &mut AnyConnection, u: &UserRow) -> Result<()> {
    sqlx::query(
        "INSERT INTO users (id, username, password_hash, role, disabled, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&u.id)
    .bind(&u.username)
    .bind(&u.password_hash)
    .bind(&u.role)
    .bind(u.disabled)
    .bind(u.created_at)
    .bind(u.updated_at)
    .execute(conn)
    .await
    .map_err(|e| unique_as_conflict(e, format!("username {:?} is already taken", u.username)))?;
    Ok(())
}

/// Updates every mutable column of a user.
pub async fn update_user(conn: &mut AnyConnection, u: &UserRow) -> Result<()> {
    sqlx::query(
        "UPDATE users SET password_hash = $2, role = $3, disabled = $4, updated_at = $5 WHERE id = $1",
    )
    .bind(&u.id)
    .bind(&u.password_hash)
    .bind(&u.role)
    .bind(u.disabled)
    .bind(u.updated_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// A user by id.
pub async fn get_user(conn: &mut AnyConnection, id: &str) -> Result<Option<UserRow>> {
    Ok(sqlx::query_as("SELECT * FROM users WHERE id = $1")
        .bind(id)
        .fetch_optional(conn)
        .await?)
}

/// A user by username.
pub async fn get_user_by_name(conn: &mut AnyConnection, username: &str) -> Result<Option<UserRow>> {
    Ok(sqlx::query_as("SELECT * FROM users WHERE username = $1")
        .bind(username)
        .fetch_optional(conn)
        .await?)
}

/// Every user, by username.
pub async fn list_users(conn: &mut AnyConnection) -> Result<Vec<UserRow>> {
    Ok(sqlx::query_as("SELECT * FROM users ORDER BY username")
        .fetch_all(conn)
        .await?)
}

/// A login session (console cookie or bearer token).
#[derive(Debug, Clone, FromRow)]
pub struct SessionRow {
    /// UUID.
    pub id: String,
    /// SHA-256 hex of the token.
    pub token_hash: String,
    /// Owner.
    pub user_id: String,
    /// Epoch ms.
    pub created_at: i64,
    /// Last beacon or request, epoch ms.
    pub last_seen_at: i64,
    /// Absolute end of the session, epoch ms.
    pub expires_at: i64,
    /// Set on logout, password change or disable.
    pub revoked_at: Option<i64>,
}

/// Inserts a session.
pub async fn insert_session(conn: &mut AnyConnection, s: &SessionRow) -> Result<()> {
    sqlx::query(
        "INSERT INTO sessions (id, token_hash, user_id, created_at, last_seen_at, expires_at, revoked_at)
         VALUES ($1, $2, $3, $4, $5, $6, NULL)",
    )
    .bind(&s.id)
    .bind(&s.token_hash)
    .bind(&s.user_id)
    .bind(s.created_at)
    .bind(s.last_seen_at)
    .bind(s.expires_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// A session by token hash.
pub async fn find_session(
    conn: &mut AnyConnection,
    token_hash: &str,
) -> Result<Option<SessionRow>> {
    Ok(
        sqlx::query_as("SELECT * FROM sessions WHERE token_hash = $1")
            .bind(token_hash)
            .fetch_optional(conn)
            .await?,
    )
}

/// Records activity on a session.
pub async fn touch_session(conn: &mut AnyConnection, id: &str, now: i64) -> Result<()> {
    sqlx::query("UPDATE sessions SET last_seen_at = $2 WHERE id = $1 AND last_seen_at < $2")
        .bind(id)
        .bind(now)
        .execute(conn)
        .await?;
    Ok(())
}

/// Revokes one session.
pub async fn revoke_session(conn: &mut AnyConnection, id: &str, now: i64) -> Result<()> {
    sqlx::query("UPDATE sessions SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL")
        .bind(id)
        .bind(now)
        .execute(conn)
        .await?;
    Ok(())
}

/// Revokes every live session and API token of a user (disable, password change).
pub async fn revoke_user_credentials(
    conn: &mut AnyConnection,
    user_id: &str,
    now: i64,
) -> Result<()> {
    sqlx::query("UPDATE sessions SET revoked_at = $2 WHERE user_id = $1 AND revoked_at IS NULL")
        .bind(user_id)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    sqlx::query("UPDATE api_tokens SET revoked_at = $2 WHERE user_id = $1 AND revoked_at IS NULL")
        .bind(user_id)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Deletes sessions that ended before `before` (housekeeping).
pub async fn purge_sessions(conn: &mut AnyConnection, before: i64) -> Result<u64> {
    Ok(sqlx::query(
        "DELETE FROM sessions WHERE expires_at < $1 OR last_seen_at < $1 OR revoked_at < $1",
    )
    .bind(before)
    .execute(conn)
    .await?
    .rows_affected())
}

/// An API token for automation.
#[derive(Debug, Clone, FromRow)]
pub struct ApiTokenRow {
    /// UUID.
    pub id: String,
    /// SHA-256 hex of the token.
    pub token_hash: String,
    /// Owner; the token carries the owner's role.
    pub user_id: String,
    /// Label chosen by the owner.
    pub name: String,
    /// Epoch ms.
    pub created_at: i64,
    /// Optional end, epoch ms.
    pub expires_at: Option<i64>,
    /// Epoch ms.
    pub last_used_at: Option<i64>,
    /// Epoch ms.
    pub revoked_at: Option<i64>,
}

/// Inserts an API token.
pub async fn insert_api_token(conn: &mut AnyConnection, t: &ApiTokenRow) -> Result<()> {
    sqlx::query(
        "INSERT INTO api_tokens (id, token_hash, user_id, name, created_at, expires_at, last_used_at, revoked_at)
         VALUES ($1, $2, $3, $4, $5, $6, NULL, NULL)",
    )
    .bind(&t.id)
    .bind(&t.token_hash)
    .bind(&t.user_id)
    .bind(&t.name)
    .bind(t.created_at)
    .bind(t.expires_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// An API token by hash.
pub async fn find_api_token(
    conn: &mut AnyConnection,
    token_hash: &str,
) -> Result<Option<ApiTokenRow>> {
    Ok(
        sqlx::query_as("SELECT * FROM api_tokens WHERE token_hash = $1")
            .bind(token_hash)
            .fetch_optional(conn)
            .await?,
    )
}

/// An API token by id.
pub async fn get_api_token(conn: &mut AnyConnection, id: &str) -> Result<Option<ApiTokenRow>> {
    Ok(sqlx::query_as("SELECT * FROM api_tokens WHERE id = $1")
        .bind(id)
        .fetch_optional(conn)
        .await?)
}

/// A user's API tokens, newest first.
pub async fn list_api_tokens(conn: &mut AnyConnection, user_id: &str) -> Result<Vec<ApiTokenRow>> {
    Ok(
        sqlx::query_as("SELECT * FROM api_tokens WHERE user_id = $1 ORDER BY created_at DESC, id")
            .bind(user_id)
            .fetch_all(conn)
            .await?,
    )
}

/// Records use of an API token.
pub async fn touch_api_token(conn: &mut AnyConnection, id: &str, now: i64) -> Result<()> {
    sqlx::query("UPDATE api_tokens SET last_used_at = $2 WHERE id = $1")
        .bind(id)
        .bind(now)
        .execute(conn)
        .await?;
    Ok(())
}

/// Revokes an API token; false when it was already revoked.
pub async fn revoke_api_token(conn: &mut AnyConnection, id: &str, now: i64) -> Result<bool> {
    Ok(
        sqlx::query("UPDATE api_tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL")
            .bind(id)
            .bind(now)
            .execute(conn)
            .await?
            .rows_affected()
            == 1,
    )
}
