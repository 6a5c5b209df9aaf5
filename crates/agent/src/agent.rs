//! The agent's loops: sync (long-poll → validate → apply → ack), metrics, log capture.
//!
//! While the control plane is unreachable the agent backs off and leaves ATS alone; acks and
//! metric samples wait (bounded) and are delivered when it returns.

use std::sync::Arc;
use std::time::{Duration, Instant};

use apm_policy::AtsMajor;
use tokio::sync::{Mutex, watch};
use tracing::{debug, error, info, warn};

use crate::apply::{Applier, ApplyOutcome, ValidBundle};
use crate::ats::{LogFiles, TrafficCtl};
use crate::backoff::Backoff;
use crate::capture::Capturer;
use crate::client::ControlPlane;
use crate::config::{AgentConfig, ConfigError, EnrollToken};
use crate::metrics::{METRICS, Sample, SampleBuffer};
use crate::now_ms;
use crate::state::{AgentState, LastError, RestartPending, StateDir};
use crate::wire::{CaptureWindow, MAX_LOG_LINES_PER_REQUEST, SyncAnswer, SyncQuery, WireBundle};

const LAST_GOOD: &str = "last-good.json";

/// A running agent.
pub struct Agent {
    cfg: AgentConfig,
    state_dir: StateDir,
    state: Mutex<AgentState>,
    client: Mutex<ControlPlane>,
    applier: Applier,
    capturer: Capturer,
    ctl: TrafficCtl,
    ats_version: Mutex<Option<String>>,
    samples: Mutex<SampleBuffer>,
    /// Captured lines not yet shipped (bounded).
    pending_lines: Mutex<Vec<String>>,
}

/// Most captured lines kept while the control plane does not take them.
const MAX_PENDING_LINES: usize = 20_000;

impl Agent {
    /// Opens the state dir and builds the parts. Fails with a [`ConfigError`] (own exit code)
    /// when the state dir is unusable.
    pub fn new(cfg: AgentConfig) -> Result<Arc<Self>, ConfigError> {
        let state_err = |reason: String| ConfigError::StateDir {
            path: cfg.state_dir.clone(),
            reason,
        };
        let state_dir = StateDir::open(&cfg.state_dir).map_err(|e| state_err(e.to_string()))?;
        let state = state_dir.load().map_err(|e| state_err(e.to_string()))?;
        let ctl = TrafficCtl::new(
            cfg.traffic_ctl.clone(),
            cfg.runroot.clone(),
            cfg.ctl_timeout,
        );
        let logs = LogFiles::new(cfg.log_dir.clone());
        let applier = Applier::new(
            cfg.config_dir.clone(),
            state_dir.clone(),
            ctl.clone(),
            logs.clone(),
            cfg.local_records.clone(),
            cfg.apply.clone(),
        );
        let capturer = Capturer::new(ctl.clone(), logs, cfg.capture_tags.clone());
        let client =
            ControlPlane::new(cfg.backend_url.clone(), cfg.request_timeout).map_err(|reason| {
                ConfigError::BadUrl {
                    url: cfg.backend_url.to_string(),
                    reason,
                }
            })?;
        Ok(Arc::new(Self {
            samples: Mutex::new(SampleBuffer::new(cfg.metrics_buffer)),
            cfg,
            state_dir,
            state: Mutex::new(state),
            client: Mutex::new(client),
            applier,
            capturer,
            ctl,
            ats_version: Mutex::new(None),
            pending_lines: Mutex::new(Vec::new()),
        }))
    }

    async fn update<R>(&self, f: impl FnOnce(&mut AgentState) -> R) -> R {
        let mut state = self.state.lock().await;
        let r = f(&mut state);
        if let Err(e) = self.state_dir.save(&state) {
            error!(error = %e, "cannot save the agent state");
        }
        r
    }

    async fn note_error(&self, hash: Option<apm_policy::ContentHash>, message: String) {
        self.update(|s| {
            s.last_error = Some(LastError {
                at_ms: now_ms(),
                hash,
                message,
            })
        })
        .await;
    }

    /// Runs until `shutdown` turns true. Returns a [`ConfigError`] only for fatal
    /// misconfiguration discovered at run time (enrollment refused).
    pub async fn run(
        self: Arc<Self>,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<(), ConfigError> {
        match self.applier.recover().await {
            Ok(Some(done)) => {
                warn!(%done, "recovered from an interrupted apply");
                self.note_error(None, done).await;
            }
            Ok(None) => {}
            Err(e) => error!(error = %e, "recovery of an interrupted apply failed"),
        }
        self.check_drift().await;
        self.resume_capture().await;
        if !self.ensure_credential(&mut shutdown).await? {
            return Ok(());
        }
        let metrics = tokio::spawn(self.clone().metrics_loop(shutdown.clone()));
        let capture = tokio::spawn(self.clone().capture_loop(shutdown.clone()));
        self.clone().sync_loop(shutdown.clone()).await;
        let _ = metrics.await;
        let _ = capture.await;
        let open = self.state.lock().await.capture.clone();
        if let Some(window) = open {
            // Do not leave debug logging raised while no agent watches the window.
            self.close_capture(&window).await;
        }
        info!("agent stopped");
        Ok(())
    }

    /// On start: the running hash is the last-good bundle's only if the config dir still
    /// holds exactly its files; otherwise none, so the server sends the bundle again.
    async fn check_drift(&self) {
        let last_good: Option<ValidBundle> = match self.state_dir.read_json(LAST_GOOD) {
            Ok(v) => v,
            Err(e) => {
                warn!(error = %e, "last-good bundle unreadable; ignoring it");
                None
            }
        };
        let Some(good) = last_good else {
            return;
        };
        if self.applier.on_disk_matches(&good) {
            let hash = good.hash;
            self.update(|s| {
                if s.running_hash != Some(hash) {
                    s.running_hash = Some(hash);
                    s.running_version = good.version;
                    s.running_ats = Some(good.ats);
                }
            })
            .await;
        } else {
            let message = format!(
                "the files in {} differ from the last applied bundle {} (edited by hand?); asking the control plane for it again",
                self.cfg.config_dir.display(),
                good.hash
            );
            warn!(%message);
            self.update(|s| {
                s.running_hash = None;
                s.last_error = Some(LastError {
                    at_ms: now_ms(),
                    hash: Some(good.hash),
                    message,
                });
            })
            .await;
        }
    }

    async fn ensure_credential(
        &self,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<bool, ConfigError> {
        let stored = self
            .state_dir
            .credential()
            .map_err(|e| ConfigError::StateDir {
                path: self.cfg.state_dir.clone(),
                reason: e.to_string(),
            })?;
        if let Some(c) = stored {
            let mut client = self.client.lock().await;
            *client = client.clone().with_credential(c);
            return Ok(true);
        }
        let token = match &self.cfg.enroll_token {
            None => {
                return Err(ConfigError::Credential(format!(
                    "no credential in {} and no --enroll-token / --token-file to get one",
                    self.state_dir.path("credential").display()
                )));
            }
            Some(EnrollToken::Value(v)) => v.clone(),
            Some(EnrollToken::File(p)) => std::fs::read_to_string(p)
                .map_err(|e| ConfigError::Credential(format!("--token-file {}: {e}", p.display())))?
                .trim()
                .to_owned(),
        };
        if token.is_empty() {
            return Err(ConfigError::Credential(
                "the enrollment token is empty".into(),
            ));
        }
        let mut backoff = Backoff::new(self.cfg.backoff);
        loop {
            let result = self
                .client
                .lock()
                .await
                .enroll(&token, &self.cfg.hostname)
                .await;
            match result {
                Ok(r) => {
                    self.state_dir
                        .store_credential(&r.agent_token)
                        .map_err(|e| ConfigError::StateDir {
                            path: self.cfg.state_dir.clone(),
                            reason: e.to_string(),
                        })?;
                    info!(proxy_id = %r.proxy_id, hostname = %self.cfg.hostname, "enrolled; credential stored");
                    let mut client = self.client.lock().await;
                    *client = client.clone().with_credential(r.agent_token);
                    return Ok(true);
                }
                Err(e) if e.is_transient() => {
                    let delay = backoff.fail_random();
                    warn!(error = %e, retry_in = ?delay, "enrollment: control plane not reachable");
                    if sleep_or_shutdown(delay, shutdown).await {
                        return Ok(false);
                    }
                }
                Err(e) => return Err(ConfigError::Credential(e.to_string())),
            }
        }
    }

    async fn detect_version(&self) -> Option<String> {
        let mut known = self.ats_version.lock().await;
        if known.is_none() {
            match self.ctl.version().await {
                Ok(v) if AtsMajor::from_version(&v).is_some() => {
                    info!(ats_version = %v, "ATS version detected");
                    *known = Some(v);
                }
                Ok(v) => warn!(version = %v, "ATS reports a version this agent does not support"),
                Err(e) => debug!(error = %e, "ATS version not known yet"),
            }
        }
        known.clone()
    }

    async fn sync_loop(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut backoff = Backoff::new(self.cfg.backoff);
        let wait = self.cfg.sync_interval.as_secs().max(1);
        loop {
            if *shutdown.borrow() {
                return;
            }
            self.check_restart_pending().await;
            self.deliver_pending_ack().await;
            let version = self.detect_version().await;
            let running = self.state.lock().await.running_hash;
            let client = self.client.lock().await.clone();
            let query = SyncQuery {
                hostname: &self.cfg.hostname,
                hash: running.map(|h| h.to_string()),
                wait,
                ats_version: version.as_deref(),
                os: std::env::consts::OS,
                arch: std::env::consts::ARCH,
            };
            let started = Instant::now();
            let result = tokio::select! {
                r = client.sync(&query) => r,
                _ = shutdown.changed() => return,
            };
            let response = match result {
                Ok(r) => r,
                Err(e) => {
                    let delay = backoff.fail_random();
                    warn!(error = %e, retry_in = ?delay, failures = backoff.failures(), "sync failed; ATS keeps its current config");
                    self.note_error(None, e.to_string()).await;
                    if sleep_or_shutdown(delay, &mut shutdown).await {
                        return;
                    }
                    continue;
                }
            };
            backoff.reset();
            self.update(|s| s.last_sync_ms = Some(now_ms())).await;
            let capture_changed = self.on_capture_window(response.log_capture.as_ref()).await;
            let pause = match response.answer() {
                Err(reason) => {
                    warn!(%reason, "unreadable sync answer");
                    self.note_error(None, format!("unreadable sync answer: {reason}"))
                        .await;
                    true
                }
                Ok(SyncAnswer::Unchanged) => {
                    debug!("config unchanged");
                    !capture_changed && started.elapsed() < Duration::from_secs(1)
                }
                Ok(SyncAnswer::NoConfig(detail)) => {
                    info!(%detail, "the control plane has no config for this proxy");
                    !capture_changed && started.elapsed() < Duration::from_secs(1)
                }
                Ok(SyncAnswer::Bundle(bundle)) => {
                    !self.handle_bundle(bundle, version.as_deref()).await
                }
            };
            if pause {
                let rest = self.cfg.sync_interval.saturating_sub(started.elapsed());
                if sleep_or_shutdown(rest, &mut shutdown).await {
                    return;
                }
            }
        }
    }

    /// Validates and applies a bundle; returns true when it was applied (so the next poll can
    /// follow at once), false when it was skipped or failed (pause before polling again, so a
    /// bundle that keeps failing is not re-tried in a tight loop).
    async fn handle_bundle(&self, wire: WireBundle, ats_version: Option<&str>) -> bool {
        let hash = wire.hash;
        let should = self.state.lock().await.should_apply(
            &hash,
            i64::try_from(self.cfg.failed_retry.as_millis()).unwrap_or(i64::MAX),
            now_ms(),
        );
        if !should {
            debug!(%hash, "bundle already running, failed recently or waiting for a restart; not applying");
            return false;
        }
        let local_major = ats_version.and_then(AtsMajor::from_version);
        let checked = match local_major {
            Some(m) if m != wire.ats => Err(format!(
                "bundle refused by agent validation: it is rendered for ATS {} but this ATS is {}",
                wire.ats,
                ats_version.unwrap_or("?")
            )),
            _ => ValidBundle::check(wire.hash, wire.version, wire.ats, wire.files)
                .map_err(|e| e.to_string()),
        };
        let bundle = match checked {
            Ok(b) => b,
            Err(detail) => {
                warn!(%hash, %detail, "bundle refused; nothing written");
                self.fail(hash, detail).await;
                return false;
            }
        };
        info!(%hash, version = ?bundle.version, "applying bundle");
        let outcome = match self.applier.apply(&bundle).await {
            Ok(o) => o,
            Err(e) => ApplyOutcome::Failed {
                detail: format!("apply aborted: {e}"),
            },
        };
        match outcome {
            ApplyOutcome::Applied { changed } => {
                if let Err(e) = self.state_dir.write_json(LAST_GOOD, &bundle) {
                    error!(error = %e, "cannot persist the last-good bundle");
                }
                info!(%hash, ?changed, "bundle applied and confirmed");
                let ack = AgentState::ack(&self.cfg.hostname, hash, None);
                self.update(|s| {
                    s.applied(hash, bundle.version, bundle.ats, now_ms());
                    s.pending_ack = Some(ack);
                })
                .await;
                self.deliver_pending_ack().await;
                true
            }
            ApplyOutcome::RestartRequired { changes, note } => {
                if let Err(e) = self.state_dir.write_json(LAST_GOOD, &bundle) {
                    error!(error = %e, "cannot persist the last-good bundle");
                }
                let list: Vec<String> = changes.iter().map(ToString::to_string).collect();
                let mut detail = format!(
                    "restart required: the new files are in place and everything reloadable is live, but ATS applies {} only on restart; restart ATS (e.g. systemctl restart trafficserver) or run the agent with --restart-command",
                    if list.is_empty() {
                        "some changed records".to_owned()
                    } else {
                        list.join(", ")
                    }
                );
                if let Some(n) = note {
                    detail.push_str(&format!(" (the restart command failed: {n})"));
                }
                warn!(%hash, %detail);
                let kept = self.state.lock().await.running_hash;
                let ack = AgentState::ack(&self.cfg.hostname, hash, Some((detail.clone(), kept)));
                self.update(|s| {
                    s.restart_pending = Some(RestartPending {
                        hash,
                        changes,
                        since_ms: now_ms(),
                    });
                    s.last_error = Some(LastError {
                        at_ms: now_ms(),
                        hash: Some(hash),
                        message: detail,
                    });
                    s.pending_ack = Some(ack);
                })
                .await;
                self.deliver_pending_ack().await;
                false
            }
            ApplyOutcome::Failed { detail } => {
                warn!(%hash, %detail, "apply failed; previous config restored");
                self.fail(hash, detail).await;
                false
            }
        }
    }

    async fn fail(&self, hash: apm_policy::ContentHash, detail: String) {
        let kept = self.state.lock().await.running_hash;
        let ack = AgentState::ack(&self.cfg.hostname, hash, Some((detail.clone(), kept)));
        self.update(|s| {
            s.apply_failed(hash, detail, now_ms());
            s.pending_ack = Some(ack);
        })
        .await;
        self.deliver_pending_ack().await;
    }

    async fn deliver_pending_ack(&self) {
        let Some(ack) = self.state.lock().await.pending_ack.clone() else {
            return;
        };
        let client = self.client.lock().await.clone();
        match client.ack(&ack).await {
            Ok(()) => {
                debug!(hash = %ack.hash, status = ?ack.status, "ack delivered");
                self.update(|s| {
                    if s.pending_ack.as_ref() == Some(&ack) {
                        s.pending_ack = None;
                    }
                })
                .await;
            }
            Err(e) if e.is_transient() => debug!(error = %e, "ack not delivered yet"),
            Err(e) => {
                // The server will never take this one; do not resend it forever.
                warn!(error = %e, "ack refused by the control plane; dropped");
                self.update(|s| s.pending_ack = None).await;
            }
        }
    }

    /// A pending restart is done once ATS no longer flags it and, for a listen-port change,
    /// the new port answers.
    async fn check_restart_pending(&self) {
        let Some(pending) = self.state.lock().await.restart_pending.clone() else {
            return;
        };
        let flag = self
            .ctl
            .metric_text("proxy.node.config.restart_required.proxy")
            .await
            .ok();
        if flag.as_deref().map(str::trim) != Some("0") {
            return;
        }
        let port_ok = pending
            .changes
            .iter()
            .filter(|c| c.name == "proxy.config.http.server_ports")
            .filter_map(|c| c.new.as_deref())
            .filter_map(first_port)
            .all(|port| std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
        if !port_ok {
            return;
        }
        let good: Option<ValidBundle> = self.state_dir.read_json(LAST_GOOD).ok().flatten();
        let Some(good) = good.filter(|g| g.hash == pending.hash) else {
            return;
        };
        info!(hash = %pending.hash, "ATS was restarted; the pending bundle now runs fully");
        let ack = AgentState::ack(&self.cfg.hostname, pending.hash, None);
        self.update(|s| {
            s.applied(pending.hash, good.version, good.ats, now_ms());
            s.pending_ack = Some(ack);
        })
        .await;
    }

    async fn metrics_loop(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        loop {
            if sleep_or_shutdown(self.cfg.metrics_interval, &mut shutdown).await {
                return;
            }
            match self.ctl.metrics(METRICS).await {
                Ok(values) if !values.is_empty() => {
                    self.samples.lock().await.push(Sample {
                        ts_ms: now_ms(),
                        values,
                    });
                }
                Ok(_) => debug!("no metric values read"),
                Err(e) => debug!(error = %e, "metrics not read (ATS down?)"),
            }
            self.flush_samples().await;
        }
    }

    async fn flush_samples(&self) {
        let client = self.client.lock().await.clone();
        loop {
            let Some(sample) = self.samples.lock().await.front().cloned() else {
                return;
            };
            match client.stats(&self.cfg.hostname, &sample).await {
                Ok(()) => {
                    self.samples.lock().await.pop_front();
                }
                Err(e) if e.is_transient() => {
                    let buffered = self.samples.lock().await.len();
                    debug!(error = %e, buffered, "metrics kept for later");
                    return;
                }
                Err(e) => {
                    warn!(error = %e, "metrics sample refused by the control plane; dropped");
                    self.samples.lock().await.pop_front();
                }
            }
        }
    }

    /// Opens, extends or closes the window as the server announces it. Returns true when the
    /// local window state changed.
    async fn on_capture_window(&self, window: Option<&CaptureWindow>) -> bool {
        let current = self.state.lock().await.capture.clone();
        let max_until =
            now_ms() + i64::try_from(self.cfg.capture_max.as_millis()).unwrap_or(i64::MAX);
        match (current, window) {
            (None, None) => false,
            (Some(open), None) => {
                self.close_capture(&open).await;
                true
            }
            (Some(open), Some(w)) => {
                let until = w.until_ms.min(max_until);
                let same_window = open.id.as_deref() == Some(w.until_ms.to_string().as_str());
                if !same_window && until != open.until_ms {
                    self.update(|s| {
                        if let Some(c) = s.capture.as_mut() {
                            c.until_ms = until;
                        }
                    })
                    .await;
                    true
                } else {
                    false
                }
            }
            (None, Some(w)) => {
                let until = w.until_ms.min(max_until);
                let done = self.state.lock().await.capture_done_until;
                if until <= now_ms() || done == Some(w.until_ms) {
                    return false;
                }
                match self
                    .capturer
                    .prepare(Some(w.until_ms.to_string()), until)
                    .await
                {
                    Ok(prepared) => {
                        // Persist first: whatever happens next, a restart can restore.
                        self.update(|s| s.capture = Some(prepared.clone())).await;
                        self.raise_capture(prepared).await;
                        true
                    }
                    Err(e) => {
                        warn!(error = %e, "log capture: cannot read the current debug settings; window ignored");
                        false
                    }
                }
            }
        }
    }

    async fn resume_capture(&self) {
        let Some(open) = self.state.lock().await.capture.clone() else {
            return;
        };
        if open.until_ms <= now_ms() {
            info!("log capture window ended while the agent was down; restoring debug settings");
            self.close_capture(&open).await;
        } else {
            self.raise_capture(open).await;
        }
    }

    /// Raises debug logging for the persisted window `open` (again, after a restart) and
    /// records where ATS's confirmation is looked for; the capture loop then wakes
    /// traffic_manager until traffic_server confirms (see [`Capturer::check_raised`]).
    async fn raise_capture(&self, mut open: crate::state::CaptureState) {
        match self.capturer.raise(&mut open).await {
            Ok(()) => {
                self.update(|s| {
                    if let Some(c) = s.capture.as_mut()
                        && c.id == open.id
                    {
                        c.raised_offset = open.raised_offset;
                        c.confirmed_ms = open.confirmed_ms;
                    }
                })
                .await;
            }
            Err(e) => warn!(error = %e, "log capture: could not raise debug logging"),
        }
    }

    /// While ATS has not confirmed the raised settings, checks diags.log and wakes
    /// traffic_manager again.
    async fn confirm_capture(&self, open: &crate::state::CaptureState) {
        if open.confirmed_ms.is_some() || open.raised_offset.is_none() {
            return;
        }
        let mut checked = open.clone();
        if self.capturer.check_raised(&mut checked).await {
            self.update(|s| {
                if let Some(c) = s.capture.as_mut()
                    && c.id == checked.id
                {
                    c.confirmed_ms = checked.confirmed_ms;
                }
            })
            .await;
        }
    }

    async fn close_capture(&self, open: &crate::state::CaptureState) {
        // Ship what is left before the window goes.
        self.ship_lines().await;
        match self.capturer.restore(open).await {
            Ok(confirmation) => {
                if !confirmation.is_confirmed() {
                    warn!(
                        ?confirmation,
                        "log capture: traffic_server has not confirmed the restored debug settings yet"
                    );
                }
                let server_until = open.id.as_deref().and_then(|id| id.parse::<i64>().ok());
                self.update(|s| {
                    s.capture = None;
                    s.capture_done_until = server_until;
                })
                .await;
            }
            Err(e) => {
                // Keep the window persisted so the next start restores.
                warn!(error = %e, "log capture: could not restore the debug settings; will retry");
            }
        }
    }

    async fn ship_lines(&self) {
        let new_lines = {
            let mut state = self.state.lock().await;
            let Some(mut capture) = state.capture.clone() else {
                return;
            };
            let lines = self.capturer.collect(&mut capture);
            state.capture = Some(capture);
            if let Err(e) = self.state_dir.save(&state) {
                error!(error = %e, "cannot save the agent state");
            }
            lines
        };
        let mut pending = self.pending_lines.lock().await;
        pending.extend(new_lines);
        if pending.len() > MAX_PENDING_LINES {
            let excess = pending.len() - MAX_PENDING_LINES;
            pending.drain(..excess);
        }
        let client = self.client.lock().await.clone();
        while !pending.is_empty() {
            let n = pending.len().min(MAX_LOG_LINES_PER_REQUEST);
            match client.logs(&self.cfg.hostname, &pending[..n]).await {
                Ok(()) => {
                    pending.drain(..n);
                }
                Err(e) if e.is_transient() => {
                    debug!(error = %e, waiting = pending.len(), "captured lines kept for later");
                    return;
                }
                Err(e) => {
                    warn!(error = %e, "captured lines refused by the control plane; dropped");
                    pending.drain(..n);
                }
            }
        }
    }

    async fn capture_loop(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        loop {
            if sleep_or_shutdown(self.cfg.capture_flush, &mut shutdown).await {
                return;
            }
            let Some(open) = self.state.lock().await.capture.clone() else {
                continue;
            };
            if open.until_ms <= now_ms() {
                info!("log capture window over");
                self.close_capture(&open).await;
            } else {
                self.confirm_capture(&open).await;
                self.ship_lines().await;
            }
        }
    }
}

fn first_port(server_ports: &str) -> Option<u16> {
    let first = server_ports.split_whitespace().next()?;
    first.split(':').next()?.parse().ok()
}

/// Sleeps `d`; true when shutdown was requested meanwhile.
async fn sleep_or_shutdown(d: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
    if *shutdown.borrow() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => *shutdown.borrow(),
        _ = shutdown.changed() => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_port_of_server_ports() {
        assert_eq!(first_port("8153 8153:ipv6"), Some(8153));
        assert_eq!(first_port("8154:ssl"), Some(8154));
        assert_eq!(first_port(""), None);
    }
}
