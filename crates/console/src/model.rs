//! What the console reads from the API: the subset of each answer the pages show. Fields are
//! lenient (`default`) so an additive API change never breaks a page.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

/// A user's role, ordered regular < admin < root.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Read-only.
    #[default]
    Regular,
    /// Configs, approvals, log captures, regular users.
    Admin,
    /// Everything, including admins.
    Root,
}

impl Role {
    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Regular => "regular",
            Role::Admin => "admin",
            Role::Root => "root",
        }
    }
}

/// An account.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct User {
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

/// `GET /api/v1/auth/me`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct Me {
    /// The user.
    pub user: User,
    /// `self_confirm` or `four_eyes` (empty from an older server: nothing is hidden then).
    pub approval_mode: String,
}

/// A proxy.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct Proxy {
    /// Id.
    pub id: String,
    /// Hostname.
    pub hostname: String,
    /// Assigned config.
    pub config_id: Option<String>,
    /// Hash it should run.
    pub desired_hash: Option<String>,
    /// Hash it runs.
    pub applied_hash: Option<String>,
    /// Applied == desired.
    pub in_sync: bool,
    /// Last apply error.
    pub last_error: Option<String>,
    /// RFC 3339.
    pub last_seen_at: Option<String>,
    /// Seen recently.
    pub online: bool,
    /// ATS version.
    pub ats_version: Option<String>,
    /// "9" or "10".
    pub ats_major: String,
    /// OS.
    pub os: Option<String>,
    /// Architecture.
    pub arch: Option<String>,
    /// RFC 3339.
    pub enrolled_at: String,
    /// Credential revoked.
    pub revoked: bool,
    /// Open log capture window end.
    pub capture_until: Option<String>,
}

/// A config in lists.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct Config {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// draft | pending_approval | active.
    pub status: String,
    /// Distributed version.
    pub active_version: Option<i64>,
    /// Draft or pending version.
    pub working_version: Option<i64>,
    /// Assigned proxies.
    pub proxy_count: usize,
    /// RFC 3339.
    pub updated_at: String,
}

/// One version of a config.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct Version {
    /// Number.
    pub version: i64,
    /// draft | pending_approval | active | superseded.
    pub status: String,
    /// Policy document.
    pub policy: Value,
    /// Hash per ATS major.
    pub hashes: BTreeMap<String, String>,
    /// User id.
    pub created_by: String,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
    /// User ids that created or edited this version.
    pub editors: Vec<String>,
    /// User id.
    pub submitted_by: Option<String>,
    /// RFC 3339.
    pub submitted_at: Option<String>,
    /// User id.
    pub approved_by: Option<String>,
    /// RFC 3339.
    pub approved_at: Option<String>,
    /// RFC 3339.
    pub rejected_at: Option<String>,
    /// Reason of the last rejection.
    pub reject_reason: Option<String>,
    /// Restored from.
    pub restored_from: Option<i64>,
}

/// A proxy reference.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct ProxyRef {
    /// Id.
    pub id: String,
    /// Hostname.
    pub hostname: String,
}

/// `GET /api/v1/configs/{id}`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct ConfigDetail {
    /// Summary.
    #[serde(flatten)]
    pub config: Config,
    /// Draft or pending.
    pub working: Option<Version>,
    /// Active.
    pub active: Option<Version>,
    /// Assigned proxies (the first 1,000 by hostname).
    pub proxies: Vec<ProxyRef>,
    /// More proxies are assigned than `proxies` lists.
    #[serde(default)]
    pub proxies_truncated: bool,
}

/// One file's diff.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct FileDiff {
    /// File name.
    pub name: String,
    /// added | removed | changed | unchanged.
    pub status: String,
    /// Unified diff.
    pub diff: String,
}

/// `GET /api/v1/configs/{id}/diff`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct Diff {
    /// Old version.
    pub from: i64,
    /// New version.
    pub to: i64,
    /// ATS major of the files.
    pub ats_major: String,
    /// Policy diff.
    pub policy_diff: String,
    /// File diffs.
    pub files: Vec<FileDiff>,
}

/// Dashboard counts.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct ProxyCounts {
    /// Enrolled.
    pub total: usize,
    /// Online.
    pub online: usize,
    /// Offline.
    pub offline: usize,
    /// Revoked.
    pub revoked: usize,
}

/// A drifting proxy.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct Drift {
    /// Proxy id.
    pub proxy_id: String,
    /// Hostname.
    pub hostname: String,
    /// Desired.
    pub desired_hash: String,
    /// Applied.
    pub applied_hash: Option<String>,
    /// Last error.
    pub last_error: Option<String>,
}

/// `GET /api/v1/dashboard`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct Dashboard {
    /// Counts.
    pub proxies: ProxyCounts,
    /// Pending approvals.
    pub pending_approvals: i64,
    /// Drift.
    pub drift: Vec<Drift>,
    /// Aggregated latest values.
    pub stats: BTreeMap<String, f64>,
    /// RFC 3339.
    pub generated_at: String,
}

/// One point of a series.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct Point {
    /// Epoch ms.
    pub t_ms: i64,
    /// Average in the bucket.
    pub avg: f64,
    /// Last in the bucket.
    pub last: f64,
    /// Counters: per-second increase since the previous point.
    pub rate_per_s: Option<f64>,
}

/// Whether a metric counts events (chart its rate) or is a level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum MetricKind {
    /// Counts events since the process started; charted as a rate.
    Counter,
    /// A level; charted as it is.
    #[default]
    Gauge,
}

/// One step of `GET /api/v1/stats/fleet`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct FleetPoint {
    /// Epoch ms of the step's start.
    pub t_ms: i64,
    /// Sum (gauge) or fleet rate per second (counter).
    pub value: f64,
    /// Proxies that reported.
    pub proxies: i64,
}

/// `GET /api/v1/stats/fleet`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct FleetSeriesReply {
    /// Counter or gauge.
    pub kind: Option<MetricKind>,
    /// Step width in seconds.
    pub step_seconds: i64,
    /// Steps, oldest first.
    pub points: Vec<FleetPoint>,
}

/// `GET /api/v1/proxies/{id}/stats`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct SeriesReply {
    /// Metric.
    pub metric: Option<String>,
    /// Counter or gauge (with a metric).
    pub kind: Option<MetricKind>,
    /// Points.
    pub points: Vec<Point>,
    /// Metrics that have data.
    pub available_metrics: Vec<String>,
}

/// A capture window.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct Capture {
    /// Opened by (user id).
    pub opened_by: String,
    /// RFC 3339.
    pub opened_at: String,
    /// RFC 3339.
    pub until: String,
    /// Still open.
    pub open: bool,
}

/// One captured line.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct LogLine {
    /// Id (cursor).
    pub id: i64,
    /// RFC 3339.
    pub ts: String,
    /// The text.
    pub line: String,
}

/// `GET /api/v1/proxies/{id}/logs`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct Logs {
    /// Latest capture.
    pub capture: Option<Capture>,
    /// Lines.
    pub lines: Vec<LogLine>,
    /// Cursor for the next read.
    pub next_after: i64,
}

/// One audit row.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct AuditEntry {
    /// Id.
    pub id: i64,
    /// RFC 3339.
    pub at: String,
    /// Actor name.
    pub actor: String,
    /// Action.
    pub action: String,
    /// Entity type.
    pub entity_type: String,
    /// Entity id.
    pub entity_id: Option<String>,
    /// Old value.
    pub old_value: Option<Value>,
    /// New value.
    pub new_value: Option<Value>,
    /// Request id.
    pub request_id: Option<String>,
}

/// `GET /api/v1/audit`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct AuditPage {
    /// Rows, newest first.
    pub items: Vec<AuditEntry>,
    /// Cursor for older rows.
    pub next_before: Option<i64>,
}

/// An API token.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct Token {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub expires_at: Option<String>,
    /// RFC 3339.
    pub last_used_at: Option<String>,
    /// Revoked.
    pub revoked: bool,
}

/// `POST /api/v1/tokens`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct CreatedToken {
    /// The secret, shown once.
    pub token: String,
}

/// An enrollment token as listed (never the secret).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct EnrollmentToken {
    /// Id.
    pub id: String,
    /// Free text.
    pub note: String,
    /// RFC 3339.
    pub expires_at: String,
    /// None: unlimited until expiry.
    pub max_uses: Option<i64>,
    /// Times used.
    pub uses: i64,
    /// Still accepted now.
    pub usable: bool,
}

/// Why `me` may not approve `pending` under the server's approval mode, as a sentence for the
/// page; `None` when the approval may be offered. The server decides (and refuses with a 403);
/// this only keeps the console from offering a button that cannot work.
pub fn approval_block(
    approval_mode: &str,
    me: &str,
    pending: &Version,
    submitter_name: &str,
) -> Option<String> {
    let submitter = pending.submitted_by.as_deref().unwrap_or_default();
    match approval_mode {
        "four_eyes" if submitter == me => Some(
            "Waiting for another approver: you submitted this version, and this server requires \
             a second person (four-eyes approval)."
                .into(),
        ),
        "four_eyes" if pending.editors.iter().any(|e| e == me) => Some(
            "Waiting for another approver: you edited this version, and this server requires a \
             second person (four-eyes approval)."
                .into(),
        ),
        "self_confirm" if !submitter.is_empty() && submitter != me => Some(format!(
            "Waiting for {submitter_name} to confirm: on this server the person who submitted a \
             version confirms it."
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(submitter: &str, editors: &[&str]) -> Version {
        Version {
            submitted_by: Some(submitter.into()),
            editors: editors.iter().map(|e| e.to_string()).collect(),
            status: "pending_approval".into(),
            ..Version::default()
        }
    }

    #[test]
    fn four_eyes_blocks_the_submitter_and_the_editors_only() {
        let v = pending("ann", &["ann", "eve"]);
        let by_ann = approval_block("four_eyes", "ann", &v, "ann").expect("submitter blocked");
        assert!(by_ann.contains("another approver") && by_ann.contains("submitted"));
        let by_eve = approval_block("four_eyes", "eve", &v, "ann").expect("editor blocked");
        assert!(by_eve.contains("another approver") && by_eve.contains("edited"));
        assert_eq!(approval_block("four_eyes", "ben", &v, "ann"), None);
    }

    #[test]
    fn self_confirm_leaves_the_approval_to_the_submitter() {
        let v = pending("ann", &["ann", "eve"]);
        assert_eq!(approval_block("self_confirm", "ann", &v, "ann"), None);
        let by_ben = approval_block("self_confirm", "ben", &v, "Ann").expect("blocked");
        assert!(by_ben.contains("Waiting for Ann"), "{by_ben}");
        // An unknown mode (an older server) hides nothing: the server still decides.
        assert_eq!(approval_block("", "ben", &v, "ann"), None);
    }
}
