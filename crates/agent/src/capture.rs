//! Log-capture windows: raise ATS debug logging, tail diags.log and traffic.out, and restore
//! the previous setting when the window ends — also when the agent restarts mid-window (the
//! window and the previous setting are persisted in the state dir before anything is raised).

use std::collections::BTreeMap;

use tracing::info;

use crate::ats::{CtlError, LogFiles, TrafficCtl};
use crate::state::CaptureState;
use crate::wire::MAX_LOG_LINE_BYTES;

/// Files tailed during a window.
pub const TAILED: &[&str] = &["diags.log", "traffic.out"];
const ENABLED: &str = "proxy.config.diags.debug.enabled";
const TAGS: &str = "proxy.config.diags.debug.tags";

/// Opens, feeds and closes capture windows for one ATS.
#[derive(Debug, Clone)]
pub struct Capturer {
    ctl: TrafficCtl,
    logs: LogFiles,
    tags: String,
}

impl Capturer {
    /// `tags`: the debug tags to raise (e.g. `http|parent_select`).
    pub fn new(ctl: TrafficCtl, logs: LogFiles, tags: String) -> Self {
        Self { ctl, logs, tags }
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
        })
    }

    /// Raises debug logging with the configured tags.
    pub async fn raise(&self) -> Result<(), CtlError> {
        self.ctl.config_set(TAGS, &self.tags).await?;
        self.ctl.config_set(ENABLED, "1").await?;
        info!(tags = %self.tags, "log capture: ATS debug logging raised");
        Ok(())
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

    /// Puts the previous debug settings back.
    pub async fn restore(&self, state: &CaptureState) -> Result<(), CtlError> {
        self.ctl
            .config_set(ENABLED, &state.previous_enabled)
            .await?;
        self.ctl.config_set(TAGS, &state.previous_tags).await?;
        info!(enabled = %state.previous_enabled, tags = %state.previous_tags, "log capture: previous debug settings restored");
        Ok(())
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
}
