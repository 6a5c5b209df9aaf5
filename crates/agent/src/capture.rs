//! Log-capture windows: raise ATS debug logging, tail diags.log and traffic.out, and restore
//! the previous setting when the window ends — also when the agent restarts mid-window (the
//! window and the previous setting are persisted in the state dir before anything is raised).
//!
//! `traffic_ctl config set` only reaches traffic_manager (so `config get` says the new value at
//! once); ATS 9.2's traffic_manager passes it on to traffic_server when its process loop goes
//! idle, which on a busy host can take more than a minute. The capturer therefore wakes
//! traffic_manager ([`TrafficCtl::wake_manager`]) until traffic_server confirms with
//! "updated diags config" in diags.log, and records in the window's state whether and when it
//! did: a window that captures nothing because ATS never took the settings is visible as such.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::ats::{CtlError, LogFiles, TrafficCtl};
use crate::state::CaptureState;
use crate::wire::MAX_LOG_LINE_BYTES;

/// Files tailed during a window.
pub const TAILED: &[&str] = &["diags.log", "traffic.out"];
const ENABLED: &str = "proxy.config.diags.debug.enabled";
const TAGS: &str = "proxy.config.diags.debug.tags";
const DIAGS: &str = "diags.log";
/// What traffic_server writes to diags.log once it applied changed diags settings.
pub const CONFIRM_LINE: &str = "updated diags config";
/// Pause between two wake-ups of traffic_manager while a change is not confirmed. Its own
/// sync thread queues a change up to 5 s after the `config set`, so one wake is not enough.
const WAKE_INTERVAL: Duration = Duration::from_secs(1);

/// Whether traffic_server took changed debug settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confirmation {
    /// "updated diags config" appeared in diags.log this long after the `config set`.
    Confirmed(Duration),
    /// The settings already had these values; there was nothing for ATS to take.
    Unchanged,
    /// No confirmation within this wait; ATS may still take the settings later.
    NotConfirmed(Duration),
}

impl Confirmation {
    /// True unless ATS failed to confirm.
    pub fn is_confirmed(&self) -> bool {
        !matches!(self, Self::NotConfirmed(_))
    }
}

/// Opens, feeds and closes capture windows for one ATS.
#[derive(Debug, Clone)]
pub struct Capturer {
    ctl: TrafficCtl,
    logs: LogFiles,
    tags: String,
    confirm_timeout: Duration,
}

impl Capturer {
    /// `tags`: the debug tags to raise (e.g. `http|parent_select`). Waits for ATS's
    /// confirmation at most 30 s (see [`Capturer::with_confirm_timeout`]).
    pub fn new(ctl: TrafficCtl, logs: LogFiles, tags: String) -> Self {
        Self {
            ctl,
            logs,
            tags,
            confirm_timeout: Duration::from_secs(30),
        }
    }

    /// How long [`Capturer::raise_and_confirm`] and [`Capturer::restore`] wait for ATS.
    pub fn with_confirm_timeout(mut self, timeout: Duration) -> Self {
        self.confirm_timeout = timeout;
        self
    }

    /// Reads the current debug settings and returns the state to persist; call
    /// [`Capturer::raise`] only after it is saved, so a crash can always restore.
    pub async fn prepare(
        &self,
        id: Option<String>,
        until_ms: i64,
    ) -> Result<CaptureState, CtlError> {
        let previous_enabled = self.ctl.config_get(ENABLED).await?;
        let previous_tags = self.ctl.config_get(TAGS).await?;
        let offsets: BTreeMap<String, u64> = TAILED
            .iter()
            .map(|f| ((*f).to_owned(), self.logs.len(f)))
            .collect();
        Ok(CaptureState {
            id,
            until_ms,
            previous_enabled,
            previous_tags,
            offsets,
            raised_offset: None,
            confirmed_ms: None,
        })
    }

    /// Raises debug logging with the configured tags and wakes traffic_manager once; it does
    /// not wait for ATS. Call [`Capturer::check_raised`] until it confirms (every call wakes
    /// traffic_manager again), or use [`Capturer::raise_and_confirm`].
    ///
    /// Raising a window again (an agent restarted mid-window) keeps where the first raise
    /// looked for the confirmation and whether it came: traffic_manager already holds the
    /// values then, so ATS has nothing new to confirm.
    pub async fn raise(&self, state: &mut CaptureState) -> Result<(), CtlError> {
        if state.raised_offset.is_none() {
            state.raised_offset = Some(self.logs.len(DIAGS));
        }
        if state.previous_enabled.trim() == "1" && state.previous_tags == self.tags {
            // Already raised (e.g. by hand): ATS sends no confirmation for an unchanged value.
            state.confirmed_ms = Some(crate::now_ms());
            return Ok(());
        }
        self.ctl.config_set(TAGS, &self.tags).await?;
        self.ctl.config_set(ENABLED, "1").await?;
        let _ = self.ctl.wake_manager().await;
        info!(tags = %self.tags, "log capture: ATS debug logging raised; waiting for traffic_server to take it");
        Ok(())
    }

    /// Whether traffic_server confirmed the raised settings (recorded in `state`); while it
    /// has not, wakes traffic_manager again. Never waits.
    pub async fn check_raised(&self, state: &mut CaptureState) -> bool {
        if state.confirmed_ms.is_some() {
            return true;
        }
        let Some(offset) = state.raised_offset else {
            return false;
        };
        if self.confirmed_since(offset) {
            state.confirmed_ms = Some(crate::now_ms());
            info!(tags = %self.tags, "log capture: traffic_server confirmed the raised debug logging");
            return true;
        }
        let _ = self.ctl.wake_manager().await;
        false
    }

    /// [`Capturer::raise`], then waits (at most the confirm timeout) for traffic_server's
    /// confirmation, waking traffic_manager every second.
    pub async fn raise_and_confirm(
        &self,
        state: &mut CaptureState,
    ) -> Result<Confirmation, CtlError> {
        let started = Instant::now();
        let already = state.confirmed_ms.is_some();
        self.raise(state).await?;
        if state.confirmed_ms.is_some() {
            return Ok(if already {
                Confirmation::Confirmed(Duration::ZERO)
            } else {
                Confirmation::Unchanged
            });
        }
        loop {
            if self.check_raised(state).await {
                return Ok(Confirmation::Confirmed(started.elapsed()));
            }
            if started.elapsed() >= self.confirm_timeout {
                warn!(waited = ?started.elapsed(), "log capture: traffic_server has not confirmed the raised debug logging");
                return Ok(Confirmation::NotConfirmed(started.elapsed()));
            }
            tokio::time::sleep(WAKE_INTERVAL).await;
        }
    }

    fn confirmed_since(&self, offset: u64) -> bool {
        let (lines, _) = self.logs.lines_since(DIAGS, offset);
        lines.iter().any(|l| l.contains(CONFIRM_LINE))
    }

    /// New complete lines of the tailed files since the stored offsets (updated), prefixed
    /// with the file name, cut to what the server accepts.
    pub fn collect(&self, state: &mut CaptureState) -> Vec<String> {
        let mut out = Vec::new();
        for file in TAILED {
            let offset = state.offsets.get(*file).copied().unwrap_or(0);
            let (lines, next) = self.logs.lines_since(file, offset);
            state.offsets.insert((*file).to_owned(), next);
            out.extend(lines.into_iter().map(|l| cut(&format!("{file}: {l}"))));
        }
        out
    }

    /// Puts the previous debug settings back and waits (at most the confirm timeout, waking
    /// traffic_manager every second) until traffic_server confirms, so debug logging does not
    /// stay on long after the window.
    pub async fn restore(&self, state: &CaptureState) -> Result<Confirmation, CtlError> {
        let started = Instant::now();
        let current_enabled = self.ctl.config_get(ENABLED).await?;
        let current_tags = self.ctl.config_get(TAGS).await?;
        if current_enabled == state.previous_enabled && current_tags == state.previous_tags {
            return Ok(Confirmation::Unchanged);
        }
        let offset = self.logs.len(DIAGS);
        self.ctl
            .config_set(ENABLED, &state.previous_enabled)
            .await?;
        self.ctl.config_set(TAGS, &state.previous_tags).await?;
        loop {
            let _ = self.ctl.wake_manager().await;
            tokio::time::sleep(WAKE_INTERVAL).await;
            if self.confirmed_since(offset) {
                info!(enabled = %state.previous_enabled, tags = %state.previous_tags, "log capture: previous debug settings restored");
                return Ok(Confirmation::Confirmed(started.elapsed()));
            }
            if started.elapsed() >= self.confirm_timeout {
                warn!(enabled = %state.previous_enabled, tags = %state.previous_tags, waited = ?started.elapsed(), "log capture: previous debug settings set, but traffic_server has not confirmed them");
                return Ok(Confirmation::NotConfirmed(started.elapsed()));
            }
        }
    }
}

fn cut(line: &str) -> String {
    if line.len() <= MAX_LOG_LINE_BYTES {
        return line.to_owned();
    }
    let mut end = MAX_LOG_LINE_BYTES;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    line[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn collect_tails_both_files_from_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let logs = LogFiles::new(dir.path().to_path_buf());
        std::fs::write(logs.path("diags.log"), "old\n").unwrap();
        let c = Capturer::new(
            TrafficCtl::new("traffic_ctl".into(), None, Duration::from_secs(1)),
            logs.clone(),
            "http".into(),
        );
        let mut state = CaptureState {
            id: None,
            until_ms: 0,
            previous_enabled: "0".into(),
            previous_tags: "http|dns".into(),
            offsets: [("diags.log".to_owned(), 4), ("traffic.out".to_owned(), 0)].into(),
            raised_offset: None,
            confirmed_ms: None,
        };
        std::fs::write(logs.path("diags.log"), "old\nnew 1\n").unwrap();
        std::fs::write(
            logs.path("traffic.out"),
            format!("DEBUG {}\n", "x".repeat(20_000)),
        )
        .unwrap();
        let lines = c.collect(&mut state);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0], "diags.log: new 1");
        assert_eq!(lines[1].len(), MAX_LOG_LINE_BYTES);
        assert!(c.collect(&mut state).is_empty());
    }

    fn window(previous_enabled: &str, previous_tags: &str) -> CaptureState {
        CaptureState {
            id: Some("1".into()),
            until_ms: 0,
            previous_enabled: previous_enabled.into(),
            previous_tags: previous_tags.into(),
            offsets: BTreeMap::new(),
            raised_offset: None,
            confirmed_ms: None,
        }
    }

    #[tokio::test]
    async fn only_a_confirmation_written_after_the_raise_counts() {
        let dir = tempfile::tempdir().unwrap();
        let logs = LogFiles::new(dir.path().to_path_buf());
        // A confirmation of an earlier change must not be taken for this raise's.
        let before = "[ET_NET 1] NOTE: updated diags config\n";
        std::fs::write(logs.path("diags.log"), before).unwrap();
        let c = Capturer::new(
            TrafficCtl::new(
                "/nonexistent/traffic_ctl".into(),
                None,
                Duration::from_secs(1),
            ),
            logs.clone(),
            "http".into(),
        );
        let mut state = window("0", "http");
        state.raised_offset = Some(before.len() as u64);
        // Not confirmed yet; the wake-up fails (no traffic_ctl) without an error.
        assert!(!c.check_raised(&mut state).await);
        assert_eq!(state.confirmed_ms, None);
        std::fs::write(
            logs.path("diags.log"),
            format!("{before}[ET_NET 1] NOTE: updated diags config\n"),
        )
        .unwrap();
        assert!(c.check_raised(&mut state).await);
        assert!(state.confirmed_ms.is_some());
    }

    #[tokio::test]
    async fn raising_what_is_already_raised_needs_no_confirmation() {
        let dir = tempfile::tempdir().unwrap();
        let c = Capturer::new(
            TrafficCtl::new(
                "/nonexistent/traffic_ctl".into(),
                None,
                Duration::from_secs(1),
            ),
            LogFiles::new(dir.path().to_path_buf()),
            "http|dns".into(),
        );
        let mut state = window("1", "http|dns");
        assert_eq!(
            c.raise_and_confirm(&mut state).await.unwrap(),
            Confirmation::Unchanged
        );
        assert!(state.confirmed_ms.is_some());
        // Anything to change goes through traffic_ctl, whose failure is reported.
        let mut state = window("0", "http|dns");
        assert!(c.raise_and_confirm(&mut state).await.is_err());
        assert_eq!(state.confirmed_ms, None);
    }

    #[test]
    fn a_window_saved_by_an_older_agent_still_loads() {
        let old =
            r#"{"id":"5","until_ms":9,"previous_enabled":"0","previous_tags":"http","offsets":{}}"#;
        let state: CaptureState = serde_json::from_str(old).unwrap();
        assert_eq!(state.raised_offset, None);
        assert_eq!(state.confirmed_ms, None);
    }
}
