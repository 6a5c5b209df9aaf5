//! Writes audit rows. Every mutating handler calls [`record`] on the same transaction as the
//! change, so a change without its audit row cannot commit. Values never contain secrets:
//! views of users, tokens and proxies leave hashes and tokens out by construction.

use apm_store::AnyConnection;
use serde::Serialize;

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};

/// Who did it.
#[derive(Debug, Clone)]
pub struct Actor {
    /// User id, when a user.
    pub id: Option<String>,
    /// Display name.
    pub name: String,
    /// Request id.
    pub request_id: Option<String>,
}

impl From<&Caller> for Actor {
    fn from(c: &Caller) -> Self {
        Actor {
            id: Some(c.user_id.clone()),
            name: c.username.clone(),
            request_id: c.request_id.clone(),
        }
    }
}

/// Appends an audit row.
pub async fn record<O: Serialize, N: Serialize>(
    conn: &mut AnyConnection,
    actor: &Actor,
    action: &str,
    entity_type: &str,
    entity_id: Option<&str>,
    old: Option<&O>,
    new: Option<&N>,
) -> ApiResult<()> {
    let old_value = old
        .map(serde_json::to_string)
        .transpose()
        .map_err(ApiError::internal)?;
    let new_value = new
        .map(serde_json::to_string)
        .transpose()
        .map_err(ApiError::internal)?;
    apm_store::audit::insert(
        conn,
        &apm_store::audit::AuditRow {
            id: 0,
            at: apm_store::now_ms(),
            actor_id: actor.id.clone(),
            actor: actor.name.clone(),
            action: action.to_string(),
            entity_type: entity_type.to_string(),
            entity_id: entity_id.map(str::to_string),
            old_value,
            new_value,
            request_id: actor.request_id.clone(),
        },
    )
    .await?;
    Ok(())
}

/// Nothing to record on one side of a change.
pub const NONE: Option<&serde_json::Value> = None;
