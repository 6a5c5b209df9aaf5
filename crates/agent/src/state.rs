//! The agent's local state, persisted in its state dir with atomic writes.
//!
//! ```text
//! STATE_DIR/                      (mode 0700)
//!   credential                    agent credential from enrollment (0600)
//!   state.json                    running hash, last sync, last error, pending ack, capture window
//!   last-good.json                the last bundle ATS confirmed (restored/re-applied on restart)
//!   apply-backup.json             previous file set while an apply is in flight
//!   apply-journal.json            present only while the config dir may hold a mix
//! ```

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use apm_policy::{AtsMajor, ContentHash};
use serde::{Deserialize, Serialize};

use crate::fsutil::{self, FsError};
use crate::records::RestartChange;
use crate::wire::{Ack, AckStatus};

/// Errors reading or writing the state dir.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// File system failure.
    #[error(transparent)]
    Fs(#[from] FsError),
    /// A state file is not what this agent wrote.
    #[error("{path}: unreadable agent state ({message}); move it away to start fresh")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The parse error.
        message: String,
    },
}

/// The last error the agent hit, for `apm agent status` and the ack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastError {
    /// Epoch ms.
    pub at_ms: i64,
    /// The bundle hash concerned, if any.
    pub hash: Option<ContentHash>,
    /// What happened.
    pub message: String,
}

/// A bundle that failed to apply: not retried until `retry_after_ms` unless the server sends a
/// different one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedApply {
    /// Its hash.
    pub hash: ContentHash,
    /// Epoch ms of the failure.
    pub at_ms: i64,
    /// Why.
    pub message: String,
}

/// New files are in place but ATS needs a restart for some of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartPending {
    /// The bundle written.
    pub hash: ContentHash,
    /// The records that need it.
    pub changes: Vec<RestartChange>,
    /// Epoch ms.
    pub since_ms: i64,
}

/// An open log-capture window and what to restore at its end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptureState {
    /// Identifies the server's window: its end (epoch ms) as the server announced it.
    pub id: Option<String>,
    /// End of the window, epoch ms.
    pub until_ms: i64,
    /// `proxy.config.diags.debug.enabled` before the window.
    pub previous_enabled: String,
    /// `proxy.config.diags.debug.tags` before the window.
    pub previous_tags: String,
    /// Read offsets of the tailed files (name → byte offset).
    pub offsets: std::collections::BTreeMap<String, u64>,
    /// Length of diags.log just before debug logging was (last) raised: ATS's confirmation
    /// is looked for after it.
    #[serde(default)]
    pub raised_offset: Option<u64>,
    /// When traffic_server confirmed the raised settings ("updated diags config" in
    /// diags.log), epoch ms; `None` while it has not (debug lines cannot flow before).
    #[serde(default)]
    pub confirmed_ms: Option<i64>,
}

/// Everything in `state.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentState {
    /// Hash of the config ATS runs (confirmed), if any.
    pub running_hash: Option<ContentHash>,
    /// Server version number of that config, if it sent one.
    pub running_version: Option<i64>,
    /// ATS major the running bundle is for.
    pub running_ats: Option<AtsMajor>,
    /// Last successful answer from the control plane, epoch ms.
    pub last_sync_ms: Option<i64>,
    /// Last successful apply, epoch ms.
    pub last_apply_ms: Option<i64>,
    /// Last error of any kind.
    pub last_error: Option<LastError>,
    /// Last failed bundle.
    pub failed: Option<FailedApply>,
    /// Restart needed to finish applying a bundle.
    pub restart_pending: Option<RestartPending>,
    /// An ack not yet delivered (the control plane was unreachable).
    pub pending_ack: Option<Ack>,
    /// An open capture window.
    pub capture: Option<CaptureState>,
    /// End (server's `until_ms`) of the last window the agent finished, so that a window the
    /// agent ended early (its own maximum) is not opened again.
    #[serde(default)]
    pub capture_done_until: Option<i64>,
}

impl AgentState {
    /// Records a successful apply of `hash`.
    pub fn applied(&mut self, hash: ContentHash, version: Option<i64>, ats: AtsMajor, now_ms: i64) {
        self.running_hash = Some(hash);
        self.running_version = version;
        self.running_ats = Some(ats);
        self.last_apply_ms = Some(now_ms);
        self.failed = None;
        self.restart_pending = None;
    }

    /// Records a failed apply of `hash` (the running hash stays).
    pub fn apply_failed(&mut self, hash: ContentHash, message: String, now_ms: i64) {
        self.failed = Some(FailedApply {
            hash,
            at_ms: now_ms,
            message: message.clone(),
        });
        self.last_error = Some(LastError {
            at_ms: now_ms,
            hash: Some(hash),
            message,
        });
    }

    /// Whether `hash` should be applied now: not when it runs already, and not when it failed
    /// less than `retry_after_ms` ago or waits for a restart.
    pub fn should_apply(&self, hash: &ContentHash, retry_after_ms: i64, now_ms: i64) -> bool {
        if self.running_hash.as_ref() == Some(hash) {
            return false;
        }
        if self
            .restart_pending
            .as_ref()
            .is_some_and(|r| &r.hash == hash)
        {
            return false;
        }
        match &self.failed {
            Some(f) if &f.hash == hash => now_ms - f.at_ms >= retry_after_ms,
            _ => true,
        }
    }

    /// The ack for the outcome of an apply.
    pub fn ack(
        hostname: &str,
        hash: ContentHash,
        error: Option<(String, Option<ContentHash>)>,
    ) -> Ack {
        match error {
            None => Ack {
                hostname: hostname.to_owned(),
                hash,
                status: AckStatus::Ok,
                error: None,
                running_hash: Some(hash),
            },
            Some((message, kept)) => Ack {
                hostname: hostname.to_owned(),
                hash,
                status: AckStatus::Error,
                error: Some(message),
                running_hash: kept,
            },
        }
    }
}

/// The state directory and its files.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    /// Creates the dir (mode 0700) if needed.
    pub fn open(root: &Path) -> Result<Self, FsError> {
        fs::create_dir_all(root).map_err(|e| FsError::new("create state dir", root, e))?;
        fs::set_permissions(root, fs::Permissions::from_mode(0o700))
            .map_err(|e| FsError::new("chmod 0700", root, e))?;
        // Probe writability now rather than at the first apply.
        let probe = root.join(".write-probe");
        fsutil::write_synced(&probe, b"", 0o600)?;
        fsutil::remove_optional(&probe)?;
        Ok(Self {
            root: root.to_path_buf(),
        })
    }

    /// A state dir that is only read (`apm agent status`).
    pub fn read_only(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
        }
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Path of a file in the dir.
    pub fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Loads `state.json` (default when absent).
    pub fn load(&self) -> Result<AgentState, StateError> {
        self.read_json("state.json").map(Option::unwrap_or_default)
    }

    /// Saves `state.json` atomically.
    pub fn save(&self, state: &AgentState) -> Result<(), StateError> {
        self.write_json("state.json", state)
    }

    /// The stored credential.
    pub fn credential(&self) -> Result<Option<String>, StateError> {
        Ok(fsutil::read_optional(&self.path("credential"))?
            .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
            .filter(|c| !c.is_empty()))
    }

    /// Stores the credential, mode 0600.
    pub fn store_credential(&self, credential: &str) -> Result<(), StateError> {
        fsutil::atomic_write(&self.path("credential"), credential.as_bytes(), 0o600)?;
        Ok(())
    }

    /// Reads a JSON file of the state dir.
    pub fn read_json<T: serde::de::DeserializeOwned>(
        &self,
        name: &str,
    ) -> Result<Option<T>, StateError> {
        let path = self.path(name);
        match fsutil::read_optional(&path)? {
            None => Ok(None),
            Some(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| StateError::Corrupt {
                        path,
                        message: e.to_string(),
                    })
            }
        }
    }

    /// Writes a JSON file of the state dir atomically (mode 0600).
    pub fn write_json<T: Serialize>(&self, name: &str, value: &T) -> Result<(), StateError> {
        let bytes = serde_json::to_vec_pretty(value).map_err(|e| StateError::Corrupt {
            path: self.path(name),
            message: e.to_string(),
        })?;
        fsutil::atomic_write(&self.path(name), &bytes, 0o600)?;
        Ok(())
    }

    /// Removes a file of the state dir (durably).
    pub fn remove(&self, name: &str) -> Result<(), StateError> {
        fsutil::remove_optional(&self.path(name))?;
        fsutil::fsync_dir(&self.root)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(n: u8) -> ContentHash {
        let mut files = std::collections::BTreeMap::new();
        files.insert("f".to_owned(), n.to_string());
        ContentHash::of_files(&files)
    }

    #[test]
    fn state_round_trips_and_credential_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let sd = StateDir::open(&dir.path().join("state")).unwrap();
        assert_eq!(sd.load().unwrap(), AgentState::default());
        let mut s = AgentState::default();
        s.applied(hash(1), Some(3), AtsMajor::V9, 1000);
        s.last_sync_ms = Some(5);
        sd.save(&s).unwrap();
        assert_eq!(sd.load().unwrap(), s);
        sd.store_credential("apma_secret\n").unwrap();
        assert_eq!(sd.credential().unwrap().as_deref(), Some("apma_secret"));
        let mode = fs::metadata(sd.path("credential"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let mode = fs::metadata(sd.root()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }

    #[test]
    fn corrupt_state_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let sd = StateDir::open(dir.path()).unwrap();
        fs::write(sd.path("state.json"), "{not json").unwrap();
        let err = sd.load().unwrap_err().to_string();
        assert!(
            err.contains("state.json") && err.contains("unreadable agent state"),
            "{err}"
        );
    }

    #[test]
    fn failed_hashes_wait_before_a_retry() {
        let mut s = AgentState::default();
        s.applied(hash(1), None, AtsMajor::V9, 0);
        assert!(!s.should_apply(&hash(1), 1000, 10));
        assert!(s.should_apply(&hash(2), 1000, 10));
        s.apply_failed(hash(2), "bad".into(), 10);
        assert!(!s.should_apply(&hash(2), 1000, 500));
        assert!(s.should_apply(&hash(2), 1000, 1010));
        assert!(s.should_apply(&hash(3), 1000, 500));
        assert_eq!(s.running_hash, Some(hash(1)));
    }
}
