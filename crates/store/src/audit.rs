//! The audit trail: one row per mutation, written in the mutation's own transaction.

use sqlx::{AnyConnection, FromRow};

use crate::Result;

/// One audit row.
#[derive(Debug, Clone, FromRow)]
pub struct AuditRow {
    /// Sequence number (assigned by the database).
    pub id: i64,
    /// Epoch ms.
    pub at: i64,
    /// User id (None for anonymous or agent actions).
    pub actor_id: Option<String>,
    /// Display name of the actor (`username`, `agent:HOST`, or the attempted username).
    pub actor: String,
    /// e.g. `config.approve`.
    pub action: String,
    /// e.g. `config`.
    pub entity_type: String,
    /// Entity id.
    pub entity_id: Option<String>,
    /// JSON before the change.
    pub old_value: Option<String>,
    /// JSON after the change.
    pub new_value: Option<String>,
    /// Request id of the HTTP request that did it.
    pub request_id: Option<String>,
}

/// Appends an audit row (the `id` field is ignored).
pub async fn insert(conn: &mut AnyConnection, row: &AuditRow) -> Result<()> {
    sqlx::query(
        "INSERT INTO audit_log (at, actor_id, actor, action, entity_type, entity_id, old_value, new_value, request_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(row.at)
    .bind(&row.actor_id)
    .bind(&row.actor)
    .bind(&row.action)
    .bind(&row.entity_type)
    .bind(&row.entity_id)
    .bind(&row.old_value)
    .bind(&row.new_value)
    .bind(&row.request_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Filters for [`query`]; every field is optional.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Exact entity id.
    pub entity_id: Option<String>,
    /// Actor user id or display name.
    pub actor: Option<String>,
    /// Exact action, or a prefix when it ends with `.` (e.g. `config.`).
    pub action: Option<String>,
    /// From (inclusive), epoch ms.
    pub since: Option<i64>,
    /// Until (exclusive), epoch ms.
    pub until: Option<i64>,
    /// Only rows with id < before (keyset pagination, newest first).
    pub before_id: Option<i64>,
    /// Page size.
    pub limit: i64,
}

/// Rows matching `f`, newest first.
pub async fn query(conn: &mut AnyConnection, f: &AuditFilter) -> Result<Vec<AuditRow>> {
    // One static statement with "parameter IS NULL OR ..." keeps the SQL free of string building.
    let action_prefix = f
        .action
        .as_ref()
        .filter(|a| a.ends_with('.'))
        .map(|a| format!("{a}%"));
    let action_exact = f.action.as_ref().filter(|a| !a.ends_with('.')).cloned();
    Ok(sqlx::query_as(
        "SELECT * FROM audit_log
         WHERE ($1 IS NULL OR entity_id = $1)
           AND ($2 IS NULL OR actor_id = $2 OR actor = $2)
           AND ($3 IS NULL OR action = $3)
           AND ($4 IS NULL OR action LIKE $4)
           AND ($5 IS NULL OR at >= $5)
           AND ($6 IS NULL OR at < $6)
           AND ($7 IS NULL OR id < $7)
         ORDER BY id DESC LIMIT $8",
    )
    .bind(&f.entity_id)
    .bind(&f.actor)
    .bind(action_exact)
    .bind(action_prefix)
    .bind(f.since)
    .bind(f.until)
    .bind(f.before_id)
    .bind(f.limit)
    .fetch_all(conn)
    .await?)
}

/// Number of audit rows (tests and metrics).
pub async fn count(conn: &mut AnyConnection) -> Result<i64> {
    Ok(sqlx::query_scalar("SELECT COUNT(*) FROM audit_log")
        .fetch_one(conn)
        .await?)
}
