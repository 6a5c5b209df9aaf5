//! Applying a bundle to ATS's config dir as one transaction.
//!
//! ATS reads its files by name from its config dir (which also holds files we do not manage),
//! and a rename replaces one file at a time. So a set of files is switched with a journal:
//!
//! 1. the previous contents of every file about to change go to `apply-backup.json` in the
//!    state dir (one atomic write);
//! 2. the new files are written and fsynced in `CONFIG_DIR/.apm-staging/`;
//! 3. `apply-journal.json` is written (atomic): from here on the config dir may hold a mix;
//! 4. each staged file is renamed over its target, then the config dir is fsynced;
//! 5. `traffic_ctl config reload`, and the reload is confirmed from the logs (waking ATS 9's
//!    traffic_manager every second until each file shows, see [`TrafficCtl::wake_manager`]);
//! 6. on success the journal is removed; on failure the backup is put back (temp + rename per
//!    file), ATS reloads it (or, after the 9.2 loader hang, traffic_server is restarted), and
//!    then the journal is removed.
//!
//! [`Applier::recover`] runs at every agent start: a journal left by a crash (SIGKILL, power
//! loss) means the set may be mixed, so the backup is put back — the config dir then holds the
//! complete old set and ATS is reloaded; the sync loop applies the new bundle again. A crash
//! before step 3 never touched the config dir. The journal is removed before the state file
//! records the new hash; a crash between the two leaves the complete new set on disk and an
//! older hash in the state, which the start-up drift check resolves by re-applying (a no-op
//! write, since the contents already match).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use apm_policy::{AtsMajor, ContentHash};
use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

use crate::ats::{LogFiles, TrafficCtl};
use crate::confirm::{self, Verdict};
use crate::fsutil::{self, FsError};
use crate::records::{self, LocalRecords, RestartChange};
use crate::state::StateDir;
use crate::validate::{self, InvalidBundle};

const BACKUP: &str = "apply-backup.json";
const JOURNAL: &str = "apply-journal.json";
const STAGING: &str = ".apm-staging";
/// Pause between two wake-ups of traffic_manager while a reload shows no line for a file.
const WAKE_INTERVAL: Duration = Duration::from_secs(1);
/// Wake-ups after a records.config change was confirmed (traffic_manager queues the new
/// values within 5 s).
const RECORDS_WAKES: usize = 7;

/// How an apply waits and what it may do.
#[derive(Debug, Clone)]
pub struct ApplySettings {
    /// How long to wait for the logs to confirm a reload. ATS 9.2 re-reads files 0.1–22 s
    /// after the request (slowest right after it started), so keep this generous.
    pub confirm_timeout: Duration,
    /// A file still "loading ..." this long after its first line is the 9.2 loader hang.
    pub hang_timeout: Duration,
    /// A changed file with no log line yet after this long gets a new mtime and the reload is
    /// requested again (traffic_manager is also woken every second meanwhile; see
    /// [`TrafficCtl::wake_manager`]).
    pub nudge_interval: Duration,
    /// How long to wait for traffic_server after a restart.
    pub restart_timeout: Duration,
    /// Pause between renames (test hook to widen the crash window; zero in production).
    pub step_delay: Duration,
    /// Command that restarts ATS when a change needs it (e.g. `systemctl restart
    /// trafficserver`); without it the agent reports "restart required".
    pub restart_command: Option<String>,
}

impl Default for ApplySettings {
    fn default() -> Self {
        Self {
            confirm_timeout: Duration::from_secs(60),
            hang_timeout: Duration::from_secs(5),
            nudge_interval: Duration::from_secs(8),
            restart_timeout: Duration::from_secs(60),
            step_delay: Duration::ZERO,
            restart_command: None,
        }
    }
}

/// A bundle that passed validation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidBundle {
    /// Hash.
    pub hash: ContentHash,
    /// Server's version number.
    pub version: Option<i64>,
    /// ATS major.
    pub ats: AtsMajor,
    /// Files as rendered (what the hash covers).
    pub files: BTreeMap<String, String>,
}

impl ValidBundle {
    /// Validates a received bundle; nothing is written for one that fails.
    pub fn check(
        hash: ContentHash,
        version: Option<i64>,
        ats: AtsMajor,
        files: BTreeMap<String, String>,
    ) -> Result<Self, InvalidBundle> {
        validate::validate_bundle(ats, &files, &hash)?;
        Ok(Self {
            hash,
            version,
            ats,
            files,
        })
    }
}

/// What an apply ended with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApplyOutcome {
    /// ATS runs the bundle (`changed` lists the files written; empty when they already matched).
    Applied {
        /// Files written.
        changed: Vec<String>,
    },
    /// The files are in place and everything reloadable is live, but ATS applies `changes`
    /// only on restart and no restart command is configured.
    RestartRequired {
        /// The records concerned (may be empty when only ATS's flag said so).
        changes: Vec<RestartChange>,
        /// Why the configured restart command did not do it, if it ran.
        note: Option<String>,
    },
    /// Nothing of the bundle runs: the previous files are back (`detail` says what failed and
    /// how the rollback went).
    Failed {
        /// Why, for the NACK.
        detail: String,
    },
}

#[derive(Debug, Serialize, Deserialize)]
struct Backup {
    /// Previous content per file; `None`: the file did not exist.
    files: BTreeMap<String, Option<String>>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Journal {
    new_hash: ContentHash,
    files: Vec<String>,
    started_ms: i64,
}

/// Errors that stop an apply before or during writing (the caller NACKs with them).
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// File system.
    #[error(transparent)]
    Fs(#[from] FsError),
    /// State dir.
    #[error(transparent)]
    State(#[from] crate::state::StateError),
}

/// Applies bundles to one ATS.
#[derive(Debug, Clone)]
pub struct Applier {
    config_dir: PathBuf,
    state: StateDir,
    ctl: TrafficCtl,
    logs: LogFiles,
    local: LocalRecords,
    settings: ApplySettings,
}

/// The files as they are written to disk: the bundle's, with the host-local records appended
/// to records.config.
pub fn materialize(
    bundle: &ValidBundle,
    local: &LocalRecords,
) -> Result<BTreeMap<String, String>, String> {
    let mut files = bundle.files.clone();
    if !local.is_empty() {
        match files.get_mut("records.config") {
            Some(text) => *text = local.apply_to(text)?,
            None => {
                return Err(format!(
                    "--local-records applies to ATS 9's records.config, but this bundle is for ATS {}",
                    bundle.ats
                ));
            }
        }
    }
    Ok(files)
}

impl Applier {
    /// An applier for the ATS whose config dir, traffic_ctl and logs are given.
    pub fn new(
        config_dir: PathBuf,
        state: StateDir,
        ctl: TrafficCtl,
        logs: LogFiles,
        local: LocalRecords,
        settings: ApplySettings,
    ) -> Self {
        Self {
            config_dir,
            state,
            ctl,
            logs,
            local,
            settings,
        }
    }

    /// The config dir.
    pub fn config_dir(&self) -> &Path {
        &self.config_dir
    }

    /// traffic_ctl.
    pub fn ctl(&self) -> &TrafficCtl {
        &self.ctl
    }

    /// Whether the config dir holds exactly what `bundle` (with local records) writes.
    pub fn on_disk_matches(&self, bundle: &ValidBundle) -> bool {
        let Ok(files) = materialize(bundle, &self.local) else {
            return false;
        };
        files.iter().all(|(name, content)| {
            fs::read(self.config_dir.join(name)).is_ok_and(|b| b == content.as_bytes())
        })
    }

    fn read_current(
        &self,
        names: impl Iterator<Item = String>,
    ) -> Result<BTreeMap<String, Option<String>>, FsError> {
        names
            .map(|name| {
                let bytes = fsutil::read_optional(&self.config_dir.join(&name))?;
                Ok((
                    name,
                    bytes.map(|b| String::from_utf8_lossy(&b).into_owned()),
                ))
            })
            .collect()
    }

    /// Applies a validated bundle. Never returns with a mixed set on disk.
    pub async fn apply(&self, bundle: &ValidBundle) -> Result<ApplyOutcome, ApplyError> {
        let files = match materialize(bundle, &self.local) {
            Ok(f) => f,
            Err(detail) => return Ok(ApplyOutcome::Failed { detail }),
        };
        let current = self.read_current(files.keys().cloned())?;
        let changed: Vec<String> = files
            .iter()
            .filter(|(name, content)| {
                current.get(*name).cloned().flatten().as_deref() != Some(content.as_str())
            })
            .map(|(name, _)| name.clone())
            .collect();
        if changed.is_empty() {
            info!(hash = %bundle.hash, "config dir already holds the bundle; nothing to write");
            return Ok(ApplyOutcome::Applied { changed });
        }
        let restart_changes = match (current.get("records.config"), files.get("records.config")) {
            (Some(old), Some(new)) => {
                records::restart_only_changes(old.as_deref().unwrap_or(""), new)
            }
            _ => Vec::new(),
        };
        let backup = Backup {
            files: changed
                .iter()
                .map(|n| (n.clone(), current.get(n).cloned().flatten()))
                .collect(),
        };
        self.state.write_json(BACKUP, &backup)?;
        let staging = self.staging_dir()?;
        for name in &changed {
            fsutil::write_synced(&staging.join(name), files[name].as_bytes(), 0o644)?;
        }
        fsutil::fsync_dir(&staging)?;
        self.state.write_json(
            JOURNAL,
            &Journal {
                new_hash: bundle.hash,
                files: changed.clone(),
                started_ms: crate::now_ms(),
            },
        )?;
        for name in &changed {
            let target = self.config_dir.join(name);
            fs::rename(staging.join(name), &target)
                .map_err(|e| FsError::new("rename into", &target, e))?;
            if !self.settings.step_delay.is_zero() {
                fsutil::fsync_dir(&self.config_dir)?;
                tokio::time::sleep(self.settings.step_delay).await;
            }
        }
        fsutil::fsync_dir(&self.config_dir)?;
        info!(hash = %bundle.hash, files = ?changed, "new files in place; reloading ATS");

        let restart_flag_before = self.restart_required_flag().await;
        let verdict = self.reload_and_confirm(&changed, bundle.ats).await;
        if let Err(failure) = verdict {
            warn!(hash = %bundle.hash, %failure, "apply failed; restoring the previous files");
            let hung = matches!(failure, ReloadFailure::Hung(_));
            let restored = self.restore(hung).await?;
            return Ok(ApplyOutcome::Failed {
                detail: format!("{failure}; {restored}"),
            });
        }
        self.finish()?;
        let restart_flag_after = self.restart_required_flag().await;
        let flagged = restart_flag_after == Some(true) && restart_flag_before != Some(true);
        if restart_changes.is_empty() && !flagged {
            return Ok(ApplyOutcome::Applied { changed });
        }
        match &self.settings.restart_command {
            Some(command) => match self.run_restart_command(command).await {
                Ok(()) => Ok(ApplyOutcome::Applied { changed }),
                Err(e) => Ok(ApplyOutcome::RestartRequired {
                    changes: restart_changes,
                    note: Some(e),
                }),
            },
            None => Ok(ApplyOutcome::RestartRequired {
                changes: restart_changes,
                note: None,
            }),
        }
    }

    fn staging_dir(&self) -> Result<PathBuf, FsError> {
        let staging = self.config_dir.join(STAGING);
        if staging.exists() {
            fs::remove_dir_all(&staging).map_err(|e| FsError::new("clear", &staging, e))?;
        }
        fs::create_dir(&staging).map_err(|e| FsError::new("create", &staging, e))?;
        Ok(staging)
    }

    /// Ends a transaction: journal, backup and staging go.
    fn finish(&self) -> Result<(), ApplyError> {
        self.state.remove(JOURNAL)?;
        self.state.remove(BACKUP)?;
        let staging = self.config_dir.join(STAGING);
        if staging.exists() {
            fs::remove_dir_all(&staging).map_err(|e| FsError::new("remove", &staging, e))?;
        }
        Ok(())
    }

    async fn restart_required_flag(&self) -> Option<bool> {
        self.ctl
            .metric_text("proxy.node.config.restart_required.proxy")
            .await
            .ok()
            .map(|v| v.trim() == "1")
    }

    /// Reloads and reads the logs until every changed file is confirmed, an error shows, or
    /// the timeout passes; then checks config-error alarms.
    async fn reload_and_confirm(
        &self,
        changed: &[String],
        ats: AtsMajor,
    ) -> Result<(), ReloadFailure> {
        if ats == AtsMajor::V9 {
            // Old alarms would be read as ours.
            let _ = self.ctl.run(&["alarm", "clear"]).await;
        }
        let diags_offset = self.logs.len("diags.log");
        let manager_offset = self.logs.len("manager.log");
        self.ctl
            .run(&["config", "reload"])
            .await
            .map_err(|e| ReloadFailure::Ctl(e.to_string()))?;
        let started = Instant::now();
        let mut loading_since: Option<Instant> = None;
        let mut last_nudge = Instant::now();
        let mut last_wake = Instant::now();
        loop {
            let (diags, _) = self.logs.lines_since("diags.log", diags_offset);
            let (manager, _) = self.logs.lines_since("manager.log", manager_offset);
            let assessment = confirm::assess(changed, &diags, &manager);
            // Loading a file takes milliseconds; one that stays "loading" is the 9.2 hang,
            // which need not wait for the whole confirmation timeout.
            let loading = assessment
                .files
                .values()
                .any(|p| *p == confirm::FileProgress::Loading);
            let stuck = match (loading, loading_since) {
                (true, None) => {
                    loading_since = Some(Instant::now());
                    false
                }
                (true, Some(since)) => since.elapsed() >= self.settings.hang_timeout,
                (false, _) => {
                    loading_since = None;
                    false
                }
            };
            let timed_out = stuck || started.elapsed() >= self.settings.confirm_timeout;
            if let Some(verdict) = assessment.verdict(timed_out) {
                match verdict {
                    Verdict::Confirmed => break,
                    Verdict::Rejected(lines) => return Err(ReloadFailure::Rejected(lines)),
                    Verdict::Hung(files) => return Err(ReloadFailure::Hung(files)),
                    Verdict::NotConfirmed(files) => {
                        return Err(ReloadFailure::NotConfirmed(
                            files,
                            self.settings.confirm_timeout,
                        ));
                    }
                }
            }
            let not_seen: Vec<&String> = assessment
                .files
                .iter()
                .filter(|(_, p)| **p == confirm::FileProgress::NotSeen)
                .map(|(f, _)| f)
                .collect();
            // traffic_manager hands the "file changed" record to traffic_server only when
            // its process loop idles or another event wakes it; on a busy host that took
            // 20 s to minutes (see TrafficCtl::wake_manager). Wake it until every file shows.
            if !not_seen.is_empty() && last_wake.elapsed() >= WAKE_INTERVAL {
                last_wake = Instant::now();
                let _ = self.ctl.wake_manager().await;
            }
            // Should traffic_manager not have noticed a file at all, a new mtime plus another
            // reload request makes it look again; the contents are not touched. Not while a
            // file is loading: a reload into the 9.2 loader hang changes nothing.
            if !not_seen.is_empty()
                && !loading
                && last_nudge.elapsed() >= self.settings.nudge_interval
            {
                last_nudge = Instant::now();
                debug!(files = ?not_seen, "no reload line yet; touching the files and asking again");
                for name in &not_seen {
                    touch(&self.config_dir.join(name));
                }
                let _ = self.ctl.run(&["config", "reload"]).await;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        if ats == AtsMajor::V9
            && let Ok(out) = self.ctl.run(&["alarm", "list"]).await
        {
            let alarms = confirm::config_alarms(&out.stdout);
            if !alarms.is_empty() {
                return Err(ReloadFailure::Rejected(alarms));
            }
        }
        if ats == AtsMajor::V9 && changed.iter().any(|f| f == "records.config") {
            // traffic_manager's line confirms records.config, but the new values reach
            // traffic_server by the same queue as a `config set` (queued within 5 s, then sent
            // only when woken), and traffic_server logs nothing when it takes them. Keep
            // waking for a while without holding up the apply.
            let ctl = self.ctl.clone();
            tokio::spawn(async move {
                for _ in 0..RECORDS_WAKES {
                    tokio::time::sleep(WAKE_INTERVAL).await;
                    let _ = ctl.wake_manager().await;
                }
            });
        }
        Ok(())
    }

    /// Puts the backup back, makes ATS load it, and ends the transaction. `hung`: the reload
    /// task is stuck, so only a restart makes ATS read files again.
    async fn restore(&self, hung: bool) -> Result<String, ApplyError> {
        let Some(backup) = self.state.read_json::<Backup>(BACKUP)? else {
            self.finish()?;
            return Ok("no backup to restore".to_owned());
        };
        self.put_back(&backup)?;
        let names: Vec<String> = backup.files.keys().cloned().collect();
        let how = if hung {
            match self.restart_traffic_server().await {
                Ok(()) => "restored the previous files and restarted traffic_server (a hung reload only clears on restart)".to_owned(),
                Err(e) => format!("restored the previous files, but restarting traffic_server failed: {e}"),
            }
        } else {
            match self.reload_and_confirm(&names, self.guess_ats(&names)).await {
                Ok(()) => "restored the previous files; ATS reloaded them".to_owned(),
                Err(ReloadFailure::Hung(_)) => match self.restart_traffic_server().await {
                    Ok(()) => "restored the previous files; the reload hung, so traffic_server was restarted".to_owned(),
                    Err(e) => format!("restored the previous files; the reload hung and the restart failed: {e}"),
                },
                // The files on disk are the old ones, but ATS may still run the failed set.
                Err(e) => format!(
                    "restored the previous files, but ATS did NOT confirm reloading them, so it may still run the failed files ({e})"
                ),
            }
        };
        self.finish()?;
        Ok(how)
    }

    fn guess_ats(&self, names: &[String]) -> AtsMajor {
        if names.iter().any(|n| n == "records.yaml") {
            AtsMajor::V10
        } else {
            AtsMajor::V9
        }
    }

    fn put_back(&self, backup: &Backup) -> Result<(), FsError> {
        let staging = self.staging_dir()?;
        for (name, content) in &backup.files {
            let target = self.config_dir.join(name);
            match content {
                Some(text) => {
                    let tmp = staging.join(name);
                    fsutil::write_synced(&tmp, text.as_bytes(), 0o644)?;
                    fs::rename(&tmp, &target)
                        .map_err(|e| FsError::new("rename into", &target, e))?;
                }
                None => fsutil::remove_optional(&target)?,
            }
        }
        fsutil::fsync_dir(&self.config_dir)
    }

    /// `traffic_ctl server restart` (traffic_manager stays; it restarts traffic_server), then
    /// waits until traffic_server says it is fully initialized and the proxy is on.
    pub async fn restart_traffic_server(&self) -> Result<(), String> {
        if let Some(command) = &self.settings.restart_command {
            return self.run_restart_command(command).await;
        }
        let offset = self.logs.len("diags.log");
        self.ctl
            .run(&["server", "restart"])
            .await
            .map_err(|e| e.to_string())?;
        self.wait_started(offset).await
    }

    async fn wait_started(&self, diags_offset: u64) -> Result<(), String> {
        let started = Instant::now();
        loop {
            let (lines, _) = self.logs.lines_since("diags.log", diags_offset);
            if confirm::started(&lines) && self.ctl.proxy_on().await {
                return Ok(());
            }
            if started.elapsed() >= self.settings.restart_timeout {
                return Err(format!(
                    "traffic_server not up {:?} after the restart",
                    self.settings.restart_timeout
                ));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn run_restart_command(&self, command: &str) -> Result<(), String> {
        let offset = self.logs.len("diags.log");
        info!(command, "restarting ATS");
        let status = tokio::process::Command::new("sh")
            .args(["-c", command])
            .status()
            .await
            .map_err(|e| format!("restart command {command:?}: {e}"))?;
        if !status.success() {
            return Err(format!("restart command {command:?} failed: {status}"));
        }
        self.wait_started(offset).await
    }

    /// Start-up recovery: a journal means a crash mid-apply; the previous set is put back and
    /// ATS reloads it. Returns what was done, if anything.
    pub async fn recover(&self) -> Result<Option<String>, ApplyError> {
        let journal: Option<Journal> = self.state.read_json(JOURNAL)?;
        let Some(journal) = journal else {
            // A crash before the journal never touched the config dir.
            self.finish()?;
            return Ok(None);
        };
        warn!(hash = %journal.new_hash, files = ?journal.files, "an apply was interrupted; restoring the previous files");
        let running = self.ctl.proxy_on().await;
        let how = match self.state.read_json::<Backup>(BACKUP)? {
            Some(backup) => {
                self.put_back(&backup)?;
                if running {
                    let names: Vec<String> = backup.files.keys().cloned().collect();
                    match self
                        .reload_and_confirm(&names, self.guess_ats(&names))
                        .await
                    {
                        Ok(()) => "restored; ATS reloaded the previous files".to_owned(),
                        Err(ReloadFailure::Hung(_)) => match self.restart_traffic_server().await {
                            Ok(()) => {
                                "restored; the reload hung, traffic_server restarted".to_owned()
                            }
                            Err(e) => {
                                format!("restored; the reload hung and the restart failed: {e}")
                            }
                        },
                        Err(e) => format!("restored; reload: {e}"),
                    }
                } else {
                    "restored; ATS is not running and will read them when it starts".to_owned()
                }
            }
            None => "journal without backup (nothing had been renamed)".to_owned(),
        };
        self.finish()?;
        Ok(Some(format!(
            "interrupted apply of {} ({}): {how}",
            journal.new_hash,
            journal.files.join(", ")
        )))
    }
}

/// Sets a file's mtime to now without touching its contents.
fn touch(path: &Path) {
    let result = fs::OpenOptions::new()
        .append(true)
        .open(path)
        .and_then(|f| f.set_modified(std::time::SystemTime::now()));
    if let Err(e) = result {
        debug!(path = %path.display(), error = %e, "could not touch");
    }
}

/// Why a reload did not take.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ReloadFailure {
    /// traffic_ctl failed (ATS down?).
    #[error("traffic_ctl config reload failed: {0}")]
    Ctl(String),
    /// ATS refused lines.
    #[error("ATS rejected the config: {}", .0.join(" | "))]
    Rejected(Vec<String>),
    /// The 9.2 loader hang.
    #[error("ATS started loading {} and never finished (the ATS 9.2 config loader hang)", .0.join(", "))]
    Hung(Vec<String>),
    /// Nothing in the logs.
    #[error("reload not confirmed within {:?}: no log line for {}", .1, .0.join(", "))]
    NotConfirmed(Vec<String>, Duration),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An applier whose traffic_ctl does not exist: ATS is "not running", so these tests cover
    /// the file transaction alone (the real-ATS paths are in tests/apply_real_ats.rs).
    fn offline(dir: &Path) -> (Applier, StateDir, PathBuf) {
        let etc = dir.join("etc");
        fs::create_dir_all(&etc).unwrap();
        let state = StateDir::open(&dir.join("state")).unwrap();
        let applier = Applier::new(
            etc.clone(),
            state.clone(),
            TrafficCtl::new(
                "/nonexistent/traffic_ctl".into(),
                None,
                Duration::from_secs(1),
            ),
            LogFiles::new(dir.join("log")),
            LocalRecords::default(),
            ApplySettings::default(),
        );
        (applier, state, etc)
    }

    fn files(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(n, c)| ((*n).to_owned(), (*c).to_owned()))
            .collect()
    }

    #[tokio::test]
    async fn recovery_puts_the_complete_old_set_back() {
        let dir = tempfile::tempdir().unwrap();
        let (applier, state, etc) = offline(dir.path());
        fs::write(etc.join("a.config"), "old a").unwrap();
        fs::write(etc.join("b.config"), "old b").unwrap();
        // A crash after the first of three renames: a new, b old, c (new file) absent.
        state
            .write_json(
                BACKUP,
                &Backup {
                    files: [
                        ("a.config".to_owned(), Some("old a".to_owned())),
                        ("b.config".to_owned(), Some("old b".to_owned())),
                        ("c.config".to_owned(), None),
                    ]
                    .into(),
                },
            )
            .unwrap();
        state
            .write_json(
                JOURNAL,
                &Journal {
                    new_hash: ContentHash::of_files(&files(&[("a.config", "new a")])),
                    files: vec!["a.config".into(), "b.config".into(), "c.config".into()],
                    started_ms: 0,
                },
            )
            .unwrap();
        fs::write(etc.join("a.config"), "new a").unwrap();
        fs::create_dir_all(etc.join(STAGING)).unwrap();
        fs::write(etc.join(STAGING).join("b.config"), "new b").unwrap();
        fs::write(etc.join(STAGING).join("c.config"), "new c").unwrap();

        let note = applier.recover().await.unwrap().unwrap();
        assert!(note.contains("ATS is not running"), "{note}");
        assert_eq!(fs::read_to_string(etc.join("a.config")).unwrap(), "old a");
        assert_eq!(fs::read_to_string(etc.join("b.config")).unwrap(), "old b");
        assert!(!etc.join("c.config").exists());
        assert!(!etc.join(STAGING).exists());
        assert!(!state.path(JOURNAL).exists() && !state.path(BACKUP).exists());
        // Idempotent: nothing more to do.
        assert_eq!(applier.recover().await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_crash_before_the_journal_leaves_the_config_dir_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let (applier, state, etc) = offline(dir.path());
        fs::write(etc.join("a.config"), "old a").unwrap();
        state
            .write_json(
                BACKUP,
                &Backup {
                    files: [("a.config".to_owned(), Some("old a".to_owned()))].into(),
                },
            )
            .unwrap();
        fs::create_dir_all(etc.join(STAGING)).unwrap();
        fs::write(etc.join(STAGING).join("a.config"), "new a").unwrap();
        assert_eq!(applier.recover().await.unwrap(), None);
        assert_eq!(fs::read_to_string(etc.join("a.config")).unwrap(), "old a");
        assert!(!etc.join(STAGING).exists());
        assert!(!state.path(BACKUP).exists());
    }

    #[tokio::test]
    async fn a_failed_reload_restores_the_files() {
        let dir = tempfile::tempdir().unwrap();
        let (applier, state, etc) = offline(dir.path());
        let old = files(&[
            ("parent.config", "dest_domain=. go_direct=true\n"),
            (
                "records.config",
                "CONFIG proxy.config.http.server_ports STRING 8153\n",
            ),
            ("ip_allow.yaml", "ip_allow:\n"),
        ]);
        for (n, c) in &old {
            fs::write(etc.join(n), c).unwrap();
        }
        let mut new = old.clone();
        new.insert(
            "parent.config".into(),
            "dest_domain=. parent=\"p:1\" go_direct=false\n".into(),
        );
        let bundle =
            ValidBundle::check(ContentHash::of_files(&new), None, AtsMajor::V9, new).unwrap();
        // traffic_ctl is missing, so the reload fails: the old files must come back.
        let outcome = applier.apply(&bundle).await.unwrap();
        let ApplyOutcome::Failed { detail } = outcome else {
            panic!("{outcome:?}");
        };
        assert!(
            detail.contains("traffic_ctl config reload failed"),
            "{detail}"
        );
        for (n, c) in &old {
            assert_eq!(&fs::read_to_string(etc.join(n)).unwrap(), c, "{n}");
        }
        assert!(!state.path(JOURNAL).exists() && !state.path(BACKUP).exists());
    }

    #[test]
    fn local_records_only_apply_to_ats_9() {
        let local = LocalRecords::parse("CONFIG proxy.config.admin.user_id STRING ats\n").unwrap();
        let v9 = ValidBundle {
            hash: ContentHash::of_files(&BTreeMap::new()),
            version: None,
            ats: AtsMajor::V9,
            files: files(&[("records.config", "CONFIG proxy.config.a INT 1\n")]),
        };
        assert!(
            materialize(&v9, &local).unwrap()["records.config"]
                .contains("admin.user_id STRING ats")
        );
        let v10 = ValidBundle {
            ats: AtsMajor::V10,
            files: files(&[("records.yaml", "records:\n")]),
            ..v9
        };
        assert!(materialize(&v10, &local).unwrap_err().contains("ATS 10"));
    }
}
