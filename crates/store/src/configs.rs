//! Configs and their versions. A config has at most one *working* version (`draft` or
//! `pending_approval`) and at most one `active` one; earlier active versions are `superseded`.
//! Status changes are conditional updates (`WHERE status = ...`) so that two concurrent
//! approvals cannot both succeed: callers check the returned row count.

use sqlx::{AnyConnection, FromRow};

use crate::{Result, unique_as_conflict};

/// A config: the named container of versions and the proxies assigned to it.
#[derive(Debug, Clone, FromRow)]
pub struct ConfigRow {
    /// UUID.
    pub id: String,
    /// Unique name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// User id.
    pub created_by: String,
    /// Epoch ms.
    pub created_at: i64,
    /// Epoch ms.
    pub updated_at: i64,
    /// Version number currently distributed, if any.
    pub active_version: Option<i64>,
}

/// One version of a config's policy.
#[derive(Debug, Clone, FromRow)]
pub struct VersionRow {
    /// UUID.
    pub id: String,
    /// Owner config.
    pub config_id: String,
    /// 1, 2, ... per config.
    pub version: i64,
    /// draft | pending_approval | active | superseded.
    pub status: String,
    /// Normalized policy JSON.
    pub policy: String,
    /// Content hash of the bundle rendered for ATS 9.
    pub hash_v9: String,
    /// Content hash of the bundle rendered for ATS 10.
    pub hash_v10: String,
    /// User id.
    pub created_by: String,
    /// Epoch ms.
    pub created_at: i64,
    /// Epoch ms.
    pub updated_at: i64,
    /// JSON array of the user ids that created or edited this version.
    pub editors: String,
    /// User id.
    pub submitted_by: Option<String>,
    /// Epoch ms.
    pub submitted_at: Option<i64>,
    /// User id.
    pub approved_by: Option<String>,
    /// Epoch ms.
    pub approved_at: Option<i64>,
    /// User id of the last rejection.
    pub rejected_by: Option<String>,
    /// Epoch ms.
    pub rejected_at: Option<i64>,
    /// Reason of the last rejection.
    pub reject_reason: Option<String>,
    /// Version this one was restored from.
    pub restored_from: Option<i64>,
}

impl VersionRow {
    /// The editor user ids.
    pub fn editor_ids(&self) -> Result<Vec<String>> {
        crate::parse_json(&self.editors, "config_versions.editors")
    }
}

/// Inserts a config; a taken name is a conflict.
pub async fn insert_config(conn: &mut AnyConnection, c: &ConfigRow) -> Result<()> {
    sqlx::query(
        "INSERT INTO configs (id, name, description, created_by, created_at, updated_at, active_version)
         VALUES ($1, $2, $3, $4, $5, $6, NULL)",
    )
    .bind(&c.id)
    .bind(&c.name)
    .bind(&c.description)
    .bind(&c.created_by)
    .bind(c.created_at)
    .bind(c.updated_at)
    .execute(conn)
    .await
    .map_err(|e| unique_as_conflict(e, format!("a config named {:?} already exists", c.name)))?;
    Ok(())
}

/// Updates name and description.
pub async fn update_config_meta(conn: &mut AnyConnection, c: &ConfigRow) -> Result<()> {
    sqlx::query("UPDATE configs SET name = $2, description = $3, updated_at = $4 WHERE id = $1")
        .bind(&c.id)
        .bind(&c.name)
        .bind(&c.description)
        .bind(c.updated_at)
        .execute(conn)
        .await
        .map_err(|e| {
            unique_as_conflict(e, format!("a config named {:?} already exists", c.name))
        })?;
    Ok(())
}

/// Points a config at its new active version.
pub async fn set_active_version(
    conn: &mut AnyConnection,
    id: &str,
    version: i64,
    now: i64,
) -> Result<()> {
    sqlx::query("UPDATE configs SET active_version = $2, updated_at = $3 WHERE id = $1")
        .bind(id)
        .bind(version)
        .bind(now)
        .execute(conn)
        .await?;
    Ok(())
}

/// A config by id.
pub async fn get_config(conn: &mut AnyConnection, id: &str) -> Result<Option<ConfigRow>> {
    Ok(sqlx::query_as("SELECT * FROM configs WHERE id = $1")
        .bind(id)
        .fetch_optional(conn)
        .await?)
}

/// Every config by name.
pub async fn list_configs(conn: &mut AnyConnection) -> Result<Vec<ConfigRow>> {
    Ok(sqlx::query_as("SELECT * FROM configs ORDER BY name")
        .fetch_all(conn)
        .await?)
}

/// Inserts a version.
pub async fn insert_version(conn: &mut AnyConnection, v: &VersionRow) -> Result<()> {
    sqlx::query(
        "INSERT INTO config_versions (id, config_id, version, status, policy, hash_v9, hash_v10, created_by,
            created_at, updated_at, editors, submitted_by, submitted_at, approved_by, approved_at,
            rejected_by, rejected_at, reject_reason, restored_from)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, NULL, NULL, NULL, NULL, NULL, NULL, NULL, $12)",
    )
    .bind(&v.id)
    .bind(&v.config_id)
    .bind(v.version)
    .bind(&v.status)
    .bind(&v.policy)
    .bind(&v.hash_v9)
    .bind(&v.hash_v10)
    .bind(&v.created_by)
    .bind(v.created_at)
    .bind(v.updated_at)
    .bind(&v.editors)
    .bind(v.restored_from)
    .execute(conn)
    .await
    .map_err(|e| {
        unique_as_conflict(
            e,
            format!("version {} of config {} was created concurrently", v.version, v.config_id),
        )
    })?;
    Ok(())
}

/// One version of a config.
pub async fn get_version(
    conn: &mut AnyConnection,
    config_id: &str,
    version: i64,
) -> Result<Option<VersionRow>> {
    Ok(
        sqlx::query_as("SELECT * FROM config_versions WHERE config_id = $1 AND version = $2")
            .bind(config_id)
            .bind(version)
            .fetch_optional(conn)
            .await?,
    )
}

/// The draft or pending version of a config, if any.
pub async fn working_version(
    conn: &mut AnyConnection,
    config_id: &str,
) -> Result<Option<VersionRow>> {
    Ok(sqlx::query_as(
        "SELECT * FROM config_versions WHERE config_id = $1 AND status IN ('draft', 'pending_approval')
         ORDER BY version DESC LIMIT 1",
    )
    .bind(config_id)
    .fetch_optional(conn)
    .await?)
}

/// Every version of a config, newest first.
pub async fn list_versions(conn: &mut AnyConnection, config_id: &str) -> Result<Vec<VersionRow>> {
    Ok(
        sqlx::query_as("SELECT * FROM config_versions WHERE config_id = $1 ORDER BY version DESC")
            .bind(config_id)
            .fetch_all(conn)
            .await?,
    )
}

/// Highest version number of a config (0 when none).
pub async fn max_version(conn: &mut AnyConnection, config_id: &str) -> Result<i64> {
    let v: Option<i64> =
        sqlx::query_scalar("SELECT MAX(version) FROM config_versions WHERE config_id = $1")
            .bind(config_id)
            .fetch_one(conn)
            .await?;
    Ok(v.unwrap_or(0))
}

/// Replaces the policy of a draft; false when the version is no longer a draft.
pub async fn update_draft(conn: &mut AnyConnection, v: &VersionRow) -> Result<bool> {
    Ok(sqlx::query(
        "UPDATE config_versions SET policy = $2, hash_v9 = $3, hash_v10 = $4, editors = $5, updated_at = $6
         WHERE id = $1 AND status = 'draft'",
    )
    .bind(&v.id)
    .bind(&v.policy)
    .bind(&v.hash_v9)
    .bind(&v.hash_v10)
    .bind(&v.editors)
    .bind(v.updated_at)
    .execute(conn)
    .await?
    .rows_affected()
        == 1)
}

/// draft → pending_approval; false when it was not a draft any more.
pub async fn mark_submitted(
    conn: &mut AnyConnection,
    id: &str,
    user: &str,
    now: i64,
) -> Result<bool> {
    Ok(sqlx::query(
        "UPDATE config_versions SET status = 'pending_approval', submitted_by = $2, submitted_at = $3, updated_at = $3
         WHERE id = $1 AND status = 'draft'",
    )
    .bind(id)
    .bind(user)
    .bind(now)
    .execute(conn)
    .await?
    .rows_affected()
        == 1)
}

/// pending_approval → active; false when someone else changed it first.
pub async fn mark_approved(
    conn: &mut AnyConnection,
    id: &str,
    user: &str,
    now: i64,
) -> Result<bool> {
    Ok(sqlx::query(
        "UPDATE config_versions SET status = 'active', approved_by = $2, approved_at = $3, updated_at = $3
         WHERE id = $1 AND status = 'pending_approval'",
    )
    .bind(id)
    .bind(user)
    .bind(now)
    .execute(conn)
    .await?
    .rows_affected()
        == 1)
}

/// pending_approval → draft with a reason; false when it was not pending any more.
pub async fn mark_rejected(
    conn: &mut AnyConnection,
    id: &str,
    user: &str,
    reason: &str,
    now: i64,
) -> Result<bool> {
    Ok(sqlx::query(
        "UPDATE config_versions SET status = 'draft', rejected_by = $2, rejected_at = $3, reject_reason = $4,
            submitted_by = NULL, submitted_at = NULL, updated_at = $3
         WHERE id = $1 AND status = 'pending_approval'",
    )
    .bind(id)
    .bind(user)
    .bind(now)
    .bind(reason)
    .execute(conn)
    .await?
    .rows_affected()
        == 1)
}

/// Marks every other active version of the config superseded.
pub async fn supersede_others(
    conn: &mut AnyConnection,
    config_id: &str,
    keep_id: &str,
    now: i64,
) -> Result<u64> {
    Ok(sqlx::query(
        "UPDATE config_versions SET status = 'superseded', updated_at = $3
         WHERE config_id = $1 AND id <> $2 AND status = 'active'",
    )
    .bind(config_id)
    .bind(keep_id)
    .bind(now)
    .execute(conn)
    .await?
    .rows_affected())
}

/// Number of versions waiting for approval.
pub async fn count_pending(conn: &mut AnyConnection) -> Result<i64> {
    Ok(
        sqlx::query_scalar(
            "SELECT COUNT(*) FROM config_versions WHERE status = 'pending_approval'",
        )
        .fetch_one(conn)
        .await?,
    )
}

/// Every version of every config (startup re-hash after a renderer upgrade).
pub async fn list_all_versions(conn: &mut AnyConnection) -> Result<Vec<VersionRow>> {
    Ok(
        sqlx::query_as("SELECT * FROM config_versions ORDER BY config_id, version")
            .fetch_all(conn)
            .await?,
    )
}

/// Replaces the stored bundle hashes of a version.
pub async fn update_hashes(
    conn: &mut AnyConnection,
    id: &str,
    hash_v9: &str,
    hash_v10: &str,
) -> Result<()> {
    sqlx::query("UPDATE config_versions SET hash_v9 = $2, hash_v10 = $3 WHERE id = $1")
        .bind(id)
        .bind(hash_v9)
        .bind(hash_v10)
        .execute(conn)
        .await?;
    Ok(())
}
