//! Talking to the local ATS: `traffic_ctl` (with the runroot), and its log files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

use crate::metrics::{failed_metric, parse_metric_output};

/// Tag of the plugin message [`TrafficCtl::wake_manager`] sends (no plugin listens to it).
pub const WAKE_TAG: &str = "apm-agent.wake";

/// A `traffic_ctl` failure.
#[derive(Debug, Clone, thiserror::Error)]
#[error("traffic_ctl {args}: {reason}{}", detail(stdout, stderr))]
pub struct CtlError {
    /// The arguments.
    pub args: String,
    /// Exit status, timeout or spawn failure.
    pub reason: String,
    /// Its stdout.
    pub stdout: String,
    /// Its stderr.
    pub stderr: String,
}

fn detail(stdout: &str, stderr: &str) -> String {
    let text: Vec<&str> = stderr
        .lines()
        .chain(stdout.lines())
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("NOTE: using"))
        .collect();
    if text.is_empty() {
        String::new()
    } else {
        format!(": {}", text.join(" | "))
    }
}

/// Output of a successful call.
#[derive(Debug, Clone)]
pub struct CtlOutput {
    /// stdout.
    pub stdout: String,
    /// stderr.
    pub stderr: String,
}

/// Runs `traffic_ctl` against one ATS.
#[derive(Debug, Clone)]
pub struct TrafficCtl {
    program: PathBuf,
    runroot: Option<PathBuf>,
    timeout: Duration,
}

impl TrafficCtl {
    /// `program` is the traffic_ctl path; `runroot` the `runroot.yaml` (set as `TS_RUNROOT`).
    pub fn new(program: PathBuf, runroot: Option<PathBuf>, timeout: Duration) -> Self {
        Self {
            program,
            runroot,
            timeout,
        }
    }

    /// Runs `traffic_ctl ARGS`; non-zero exit is an error carrying the output.
    pub async fn run(&self, args: &[&str]) -> Result<CtlOutput, CtlError> {
        let joined = args.join(" ");
        let mut cmd = Command::new(&self.program);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        match &self.runroot {
            Some(r) => {
                cmd.env("TS_RUNROOT", r);
            }
            None => {
                cmd.env_remove("TS_RUNROOT");
            }
        }
        let err = |reason: String, stdout: String, stderr: String| CtlError {
            args: joined.clone(),
            reason,
            stdout,
            stderr,
        };
        let child = cmd.spawn().map_err(|e| {
            err(
                format!("cannot run {}: {e}", self.program.display()),
                String::new(),
                String::new(),
            )
        })?;
        let output = match tokio::time::timeout(self.timeout, child.wait_with_output()).await {
            Ok(Ok(o)) => o,
            Ok(Err(e)) => return Err(err(e.to_string(), String::new(), String::new())),
            Err(_) => {
                return Err(err(
                    format!("no answer within {:?}", self.timeout),
                    String::new(),
                    String::new(),
                ));
            }
        };
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        if output.status.success() {
            Ok(CtlOutput { stdout, stderr })
        } else {
            Err(err(output.status.to_string(), stdout, stderr))
        }
    }

    /// Reads metrics; a name ATS does not know is skipped (9.2 fails the whole call at the
    /// first unknown name, so the call is repeated without it).
    pub async fn metrics(&self, names: &[&str]) -> Result<BTreeMap<String, f64>, CtlError> {
        let mut wanted: Vec<&str> = names.to_vec();
        let mut values = BTreeMap::new();
        for _ in 0..names.len().max(1) {
            if wanted.is_empty() {
                break;
            }
            let mut args = vec!["metric", "get"];
            args.extend(wanted.iter().copied());
            match self.run(&args).await {
                Ok(out) => {
                    values.extend(parse_metric_output(&out.stdout, names));
                    return Ok(values);
                }
                Err(e) => {
                    values.extend(parse_metric_output(&e.stdout, names));
                    let Some(bad) = failed_metric(&e.stderr).or_else(|| failed_metric(&e.stdout))
                    else {
                        return Err(e);
                    };
                    wanted.retain(|n| *n != bad && !values.contains_key(*n));
                }
            }
        }
        Ok(values)
    }

    /// One metric's raw value text.
    pub async fn metric_text(&self, name: &str) -> Result<String, CtlError> {
        let out = self.run(&["metric", "get", name]).await?;
        out.stdout
            .lines()
            .find_map(|l| l.trim().strip_prefix(name).map(|v| v.trim().to_owned()))
            .ok_or_else(|| CtlError {
                args: format!("metric get {name}"),
                reason: "unexpected output".into(),
                stdout: out.stdout.clone(),
                stderr: out.stderr.clone(),
            })
    }

    /// `config get NAME` → the value text (`name: value`).
    pub async fn config_get(&self, name: &str) -> Result<String, CtlError> {
        let out = self.run(&["config", "get", name]).await?;
        out.stdout
            .lines()
            .find_map(|l| {
                l.trim()
                    .strip_prefix(name)?
                    .strip_prefix(':')
                    .map(|v| v.trim().to_owned())
            })
            .ok_or_else(|| CtlError {
                args: format!("config get {name}"),
                reason: "unexpected output".into(),
                stdout: out.stdout.clone(),
                stderr: out.stderr.clone(),
            })
    }

    /// `config set NAME VALUE` (runtime only in 9.2).
    pub async fn config_set(&self, name: &str, value: &str) -> Result<(), CtlError> {
        self.run(&["config", "set", name, value]).await.map(|_| ())
    }

    /// Makes ATS 9's traffic_manager pass queued record changes (a `config set`, or the
    /// "file changed" record behind a reload) on to traffic_server now.
    ///
    /// traffic_manager forwards those changes only when its loop over the traffic_server
    /// socket has been idle for `proxy.config.lm.pserver_timeout_secs` (1 s), and
    /// traffic_server pushes its stats every `proxy.config.remote_sync_interval_ms`; on a busy
    /// host that loop may never go idle, and a change then waits for tens of seconds. Any
    /// other management event ends the wait; a plugin lifecycle message is one that changes
    /// nothing (a plugin reacts only to its own tag). ATS 10 has no traffic_manager; there the
    /// message goes to traffic_server's plugins and is equally harmless. Callers ignore errors.
    pub async fn wake_manager(&self) -> Result<(), CtlError> {
        self.run(&["plugin", "msg", WAKE_TAG, "wake"])
            .await
            .map(|_| ())
    }

    /// The ATS version (`9.2.9`), from the running ATS.
    pub async fn version(&self) -> Result<String, CtlError> {
        match self.metric_text("proxy.node.version.manager.short").await {
            Ok(v) => Ok(v),
            Err(_) => self.metric_text("proxy.process.version.server.short").await,
        }
    }

    /// Whether ATS answers and says the proxy is on.
    pub async fn proxy_on(&self) -> bool {
        match self.run(&["server", "status"]).await {
            Ok(out) => out.stdout.contains("Proxy -- on") || out.stdout.contains("\"on\""),
            Err(_) => false,
        }
    }
}

/// ATS's log files, read from byte offsets (the agent never holds them open between reads,
/// so log rotation only costs a re-read from the start).
#[derive(Debug, Clone)]
pub struct LogFiles {
    dir: PathBuf,
}

impl LogFiles {
    /// Logs in `dir`.
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    /// The log dir.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path of one log.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Current length of a log (0 when missing).
    pub fn len(&self, name: &str) -> u64 {
        std::fs::metadata(self.path(name))
            .map(|m| m.len())
            .unwrap_or(0)
    }

    /// Complete lines written after `offset`, and the offset after the last complete line.
    /// When the file shrank (rotated), reading restarts at 0.
    pub fn lines_since(&self, name: &str, offset: u64) -> (Vec<String>, u64) {
        use std::io::{Read, Seek, SeekFrom};
        let Ok(mut file) = std::fs::File::open(self.path(name)) else {
            return (Vec::new(), offset);
        };
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let start = if offset > len { 0 } else { offset };
        let mut tail = Vec::new();
        if file.seek(SeekFrom::Start(start)).is_err() || file.read_to_end(&mut tail).is_err() {
            return (Vec::new(), offset);
        }
        let complete = match tail.iter().rposition(|b| *b == b'\n') {
            Some(i) => i + 1,
            None => 0,
        };
        let text = String::from_utf8_lossy(&tail[..complete]);
        (
            text.lines().map(str::to_owned).collect(),
            start + complete as u64,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_since_reads_complete_lines_and_survives_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let logs = LogFiles::new(dir.path().to_path_buf());
        assert_eq!(logs.lines_since("diags.log", 0), (vec![], 0));
        std::fs::write(logs.path("diags.log"), "a\nb\npartial").unwrap();
        let (lines, off) = logs.lines_since("diags.log", 0);
        assert_eq!(lines, ["a", "b"]);
        assert_eq!(off, 4);
        std::fs::write(logs.path("diags.log"), "x\n").unwrap();
        let (lines, off) = logs.lines_since("diags.log", off);
        assert_eq!(lines, ["x"]);
        assert_eq!(off, 2);
    }

    #[tokio::test]
    async fn missing_traffic_ctl_is_a_clear_error() {
        let ctl = TrafficCtl::new(
            "/nonexistent/traffic_ctl".into(),
            None,
            Duration::from_secs(1),
        );
        let err = ctl
            .run(&["server", "status"])
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("cannot run /nonexistent/traffic_ctl"), "{err}");
    }
}
