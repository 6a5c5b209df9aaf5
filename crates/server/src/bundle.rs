//! Policy checks and bundle rendering on top of the policy crate.

use std::sync::Arc;

use apm_policy::{AtsMajor, Policy, ValidPolicy};
use serde::Serialize;
use serde_json::Value;

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// A validated policy ready to store.
pub struct CheckedPolicy {
    /// Normalized policy as JSON text.
    pub json: String,
    /// Hash of the ATS 9 bundle.
    pub hash_v9: String,
    /// Hash of the ATS 10 bundle.
    pub hash_v10: String,
}

/// One located policy problem, as sent in a problem's `errors` member.
#[derive(Debug, Serialize)]
pub struct LocatedError {
    /// Where in the request body.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

/// Parses and validates a policy sent as JSON; 422 with located errors otherwise.
pub fn check_policy(value: &Value) -> ApiResult<CheckedPolicy> {
    let policy: Policy = serde_path_to_error::deserialize(value).map_err(|e| {
        let path = match e.path().to_string().as_str() {
            "." | "" => "policy".to_string(),
            p => format!("policy.{p}"),
        };
        let message = e.inner().to_string();
        ApiError::invalid(format!("{path}: {message}"))
            .with("errors", vec![LocatedError { path, message }])
    })?;
    let valid = policy.validate().map_err(|errors| {
        let located: Vec<LocatedError> = errors
            .errors()
            .iter()
            .map(|e| LocatedError {
                path: format!("policy.{}", e.path),
                message: e.message.clone(),
            })
            .collect();
        ApiError::invalid(errors.to_string()).with("errors", located)
    })?;
    let json = serde_json::to_string(valid.policy()).map_err(ApiError::internal)?;
    Ok(CheckedPolicy {
        json,
        hash_v9: apm_policy::render(&valid, AtsMajor::V9).hash.to_string(),
        hash_v10: apm_policy::render(&valid, AtsMajor::V10).hash.to_string(),
    })
}

/// Reads back a stored policy.
pub fn stored_policy(json: &str) -> ApiResult<ValidPolicy> {
    let policy = Policy::from_json_str(json)
        .map_err(|e| ApiError::internal(format!("stored policy unreadable: {e}")))?;
    policy
        .validate()
        .map_err(|e| ApiError::internal(format!("stored policy no longer validates: {e}")))
}

/// A rendered bundle for one ATS major.
#[derive(Debug, Serialize)]
pub struct RenderedBundle {
    /// "9" or "10".
    pub ats_major: String,
    /// Content hash.
    pub hash: String,
    /// File name → content.
    pub files: std::collections::BTreeMap<String, String>,
    /// `files` as JSON, made once: every agent of a config receives the same bytes.
    #[serde(skip)]
    pub files_json: String,
}

/// The ATS major of a reported version string (default 9 until the proxy reports one).
pub fn major_of(ats_version: Option<&str>) -> AtsMajor {
    ats_version
        .and_then(AtsMajor::from_version)
        .unwrap_or(AtsMajor::V9)
}

/// The hash column for a major.
pub fn hash_for(v: &apm_store::configs::VersionRow, major: AtsMajor) -> &str {
    match major {
        AtsMajor::V9 => &v.hash_v9,
        AtsMajor::V10 => &v.hash_v10,
    }
}

/// Renders (or takes from the cache) the bundle of a version for a major.
pub fn rendered(
    state: &AppState,
    v: &apm_store::configs::VersionRow,
    major: AtsMajor,
) -> ApiResult<Arc<RenderedBundle>> {
    let key = (v.id.clone(), major.to_string());
    if let Some(b) = state.bundles.get(&key) {
        return Ok(b);
    }
    let valid = stored_policy(&v.policy)?;
    let bundle = apm_policy::render(&valid, major);
    let files_json = serde_json::to_string(&bundle.files).map_err(ApiError::internal)?;
    let out = Arc::new(RenderedBundle {
        ats_major: major.to_string(),
        hash: bundle.hash.to_string(),
        files: bundle.files,
        files_json,
    });
    state.bundles.insert(key, out.clone());
    Ok(out)
}

/// Re-renders every stored version and fixes stored hashes that no longer match what this
/// binary renders (the renderer changed in an upgrade). Without it, a proxy would be handed a
/// bundle whose hash never equals the stored desired hash, and would be sent the same bundle on
/// every sync. Runs at start; returns how many versions were updated. A version that no longer
/// validates keeps its hashes and is logged: it needs a human.
pub async fn refresh_hashes(db: &apm_store::Db) -> Result<usize, apm_store::StoreError> {
    let mut tx = db.begin_write().await?;
    let versions = apm_store::configs::list_all_versions(&mut tx).await?;
    let mut updated = 0;
    for v in &versions {
        let valid = match Policy::from_json_str(&v.policy).map(|p| p.validate()) {
            Ok(Ok(valid)) => valid,
            Ok(Err(errors)) => {
                tracing::error!(config_id = %v.config_id, version = v.version, %errors, "stored policy no longer validates");
                continue;
            }
            Err(e) => {
                tracing::error!(config_id = %v.config_id, version = v.version, error = %e, "stored policy unreadable");
                continue;
            }
        };
        let h9 = apm_policy::render(&valid, AtsMajor::V9).hash.to_string();
        let h10 = apm_policy::render(&valid, AtsMajor::V10).hash.to_string();
        if h9 != v.hash_v9 || h10 != v.hash_v10 {
            apm_store::configs::update_hashes(&mut tx, &v.id, &h9, &h10).await?;
            updated += 1;
        }
    }
    if updated > 0 {
        apm_store::telemetry::bump_generation(&mut tx).await?;
        tracing::warn!(
            versions = updated,
            "stored bundle hashes changed with this renderer; proxies will receive the new bundles"
        );
    }
    tx.commit().await?;
    Ok(updated)
}
