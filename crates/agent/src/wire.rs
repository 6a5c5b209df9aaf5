//! The sync protocol as it travels on the wire (issue 3, point 6; matches `crates/server/src/sync.rs`
//! and `api/proxies.rs`). Kept in one module so a protocol change is a change here.

use std::collections::BTreeMap;

use apm_policy::ContentHash;
use serde::{Deserialize, Serialize};

/// `POST /api/v1/agents/enroll` body.
#[derive(Debug, Serialize)]
pub struct EnrollRequest<'a> {
    /// The enrollment token an admin created.
    pub token: &'a str,
    /// This host's name.
    pub hostname: &'a str,
}

/// `POST /api/v1/agents/enroll` answer (201).
#[derive(Debug, Deserialize)]
pub struct EnrollResponse {
    /// The agent credential (`apma_…`), shown once.
    pub agent_token: String,
    /// The proxy id the server gave this host.
    pub proxy_id: String,
}

/// `GET /api/v1/sync` query parameters.
#[derive(Debug, Serialize)]
pub struct SyncQuery<'a> {
    /// This host's name (must match the credential).
    pub hostname: &'a str,
    /// The hash ATS runs (omitted when none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
    /// Seconds the server may hold the request.
    pub wait: u64,
    /// ATS version as reported by ATS, e.g. `9.2.9` (picks the rendering).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ats_version: Option<&'a str>,
    /// `std::env::consts::OS`.
    pub os: &'a str,
    /// `std::env::consts::ARCH`.
    pub arch: &'a str,
}

/// An open log-capture window as the server announces it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CaptureWindow {
    /// End of the window, epoch ms.
    pub until_ms: i64,
}

/// `GET /api/v1/sync` answer.
#[derive(Debug, Clone, Deserialize)]
pub struct SyncResponse {
    /// `bundle`, `unchanged` or `no_config`.
    pub status: String,
    /// Desired hash.
    #[serde(default)]
    pub hash: Option<String>,
    /// Config version number.
    #[serde(default)]
    pub version: Option<i64>,
    /// ATS major the files are rendered for ("9" / "10").
    #[serde(default)]
    pub ats_major: Option<String>,
    /// File name → content (status `bundle`).
    #[serde(default)]
    pub files: Option<BTreeMap<String, String>>,
    /// Open capture window.
    #[serde(default)]
    pub log_capture: Option<CaptureWindow>,
    /// Why there is no config (status `no_config`).
    #[serde(default)]
    pub detail: Option<String>,
}

/// A sync answer, typed.
#[derive(Debug, Clone, PartialEq)]
pub enum SyncAnswer {
    /// A bundle to apply.
    Bundle(WireBundle),
    /// The agent runs the desired config.
    Unchanged,
    /// The server has nothing for this proxy, with the reason.
    NoConfig(String),
}

/// A bundle as received, before validation.
#[derive(Debug, Clone, PartialEq)]
pub struct WireBundle {
    /// Claimed hash.
    pub hash: ContentHash,
    /// Config version.
    pub version: Option<i64>,
    /// The ATS major it is rendered for.
    pub ats: apm_policy::AtsMajor,
    /// Files.
    pub files: BTreeMap<String, String>,
}

impl SyncResponse {
    /// Types the answer; a malformed one is a protocol error with the reason.
    pub fn answer(&self) -> Result<SyncAnswer, String> {
        match self.status.as_str() {
            "unchanged" => Ok(SyncAnswer::Unchanged),
            "no_config" => Ok(SyncAnswer::NoConfig(
                self.detail
                    .clone()
                    .unwrap_or_else(|| "no config assigned".to_owned()),
            )),
            "bundle" => {
                let hash = self
                    .hash
                    .as_deref()
                    .ok_or("bundle without hash")?
                    .parse::<ContentHash>()
                    .map_err(|e| format!("bundle hash: {e}"))?;
                let ats = self
                    .ats_major
                    .as_deref()
                    .ok_or("bundle without ats_major")?
                    .parse::<apm_policy::AtsMajor>()
                    .map_err(|e| format!("bundle ats_major: {e}"))?;
                let files = self.files.clone().ok_or("bundle without files")?;
                Ok(SyncAnswer::Bundle(WireBundle {
                    hash,
                    version: self.version,
                    ats,
                    files,
                }))
            }
            other => Err(format!("unknown sync status {other:?}")),
        }
    }
}

/// Apply outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AckStatus {
    /// Applied and confirmed.
    Ok,
    /// Failed; `running_hash` says what runs.
    Error,
}

/// `POST /api/v1/sync/ack` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// This host's name.
    pub hostname: String,
    /// The hash the agent tried to apply.
    pub hash: ContentHash,
    /// ok | error.
    pub status: AckStatus,
    /// What failed (with `error`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The hash ATS runs now (with `error`: the one kept).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub running_hash: Option<ContentHash>,
}

/// `POST /api/v1/sync/stats` body.
#[derive(Debug, Serialize)]
pub struct StatsRequest<'a> {
    /// This host's name.
    pub hostname: &'a str,
    /// Epoch seconds of the sample, as text (the server also takes RFC 3339).
    pub timestamp: String,
    /// Metric name → value.
    pub metrics: &'a BTreeMap<String, f64>,
}

/// `POST /api/v1/sync/logs` body.
#[derive(Debug, Serialize)]
pub struct LogsRequest<'a> {
    /// This host's name.
    pub hostname: &'a str,
    /// Lines, oldest first.
    pub lines: &'a [String],
}

/// Most lines the server takes per logs request.
pub const MAX_LOG_LINES_PER_REQUEST: usize = 5000;
/// Longest line the server takes (bytes); longer lines are cut.
pub const MAX_LOG_LINE_BYTES: usize = 16 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_typed() {
        let hash = "a".repeat(64);
        let bundle: SyncResponse = serde_json::from_str(&format!(
            r#"{{"status":"bundle","unchanged":false,"hash":"{hash}","version":3,"config_id":"c","config_name":"n",
               "ats_major":"9","files":{{"parent.config":"x"}},"log_capture":{{"until":"2026-01-01T00:00:00Z","until_ms":5}},
               "detail":null,"server_time":"2026-01-01T00:00:00Z"}}"#
        ))
        .unwrap();
        match bundle.answer().unwrap() {
            SyncAnswer::Bundle(b) => {
                assert_eq!(b.version, Some(3));
                assert_eq!(b.ats, apm_policy::AtsMajor::V9);
                assert_eq!(b.files.len(), 1);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(bundle.log_capture, Some(CaptureWindow { until_ms: 5 }));
        let nc: SyncResponse = serde_json::from_str(
            r#"{"status":"no_config","unchanged":false,"detail":"no config assigned to proxy h"}"#,
        )
        .unwrap();
        assert_eq!(
            nc.answer().unwrap(),
            SyncAnswer::NoConfig("no config assigned to proxy h".into())
        );
        let bad: SyncResponse = serde_json::from_str(r#"{"status":"bundle","hash":"zz"}"#).unwrap();
        assert!(bad.answer().unwrap_err().contains("bundle hash"));
    }

    #[test]
    fn ack_serializes_like_the_server_expects() {
        let h: ContentHash = "b".repeat(64).parse().unwrap();
        let ack = Ack {
            hostname: "h".into(),
            hash: h,
            status: AckStatus::Error,
            error: Some("boom".into()),
            running_hash: None,
        };
        let v = serde_json::to_value(&ack).unwrap();
        assert_eq!(v["status"], "error");
        assert_eq!(v["hash"], "b".repeat(64));
        assert!(v.get("running_hash").is_none());
    }
}
