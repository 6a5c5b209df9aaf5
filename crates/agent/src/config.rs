//! Agent settings, checked at start-up: every misconfiguration is a clear error with its own
//! exit code, before the agent touches anything.

use std::path::{Path, PathBuf};
use std::time::Duration;

use url::Url;

use crate::apply::ApplySettings;
use crate::backoff::BackoffPolicy;
use crate::records::LocalRecords;

/// A setting that makes the agent unable to run. Each kind has its own exit code so that
/// systemd and scripts can tell them apart.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `--backend-url` is not an http(s) URL.
    #[error("--backend-url {url:?}: {reason}")]
    BadUrl {
        /// The value.
        url: String,
        /// Why.
        reason: String,
    },
    /// The ATS config dir cannot be read or written.
    #[error("--config-dir {}: {reason}", path.display())]
    ConfigDir {
        /// The dir.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// traffic_ctl cannot be run.
    #[error("--traffic-ctl {}: {reason}", path.display())]
    TrafficCtl {
        /// The path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The state dir cannot be used.
    #[error("--state-dir {}: {reason}", path.display())]
    StateDir {
        /// The dir.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// No credential and no way to get one, or the server refused enrollment.
    #[error("enrollment: {0}")]
    Credential(String),
    /// The runroot file is missing or unreadable.
    #[error("--ats-runroot {}: {reason}", path.display())]
    Runroot {
        /// The path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The local records file is unreadable or invalid.
    #[error("--local-records {}: {reason}", path.display())]
    LocalRecords {
        /// The path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The hostname is not usable.
    #[error("--hostname {0:?}: letters, digits, '.', '-', '_' only, 1-253 characters")]
    Hostname(String),
    /// The ATS log dir cannot be read.
    #[error("--log-dir {}: {reason}", path.display())]
    LogDir {
        /// The dir.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

impl ConfigError {
    /// The process exit code for this error (documented in docs/agent.md).
    pub fn exit_code(&self) -> u8 {
        match self {
            ConfigError::BadUrl { .. } => 10,
            ConfigError::ConfigDir { .. } => 11,
            ConfigError::TrafficCtl { .. } => 12,
            ConfigError::StateDir { .. } => 13,
            ConfigError::Credential(_) => 14,
            ConfigError::Runroot { .. } => 15,
            ConfigError::LocalRecords { .. } => 16,
            ConfigError::Hostname(_) => 17,
            ConfigError::LogDir { .. } => 18,
        }
    }
}

/// Where the credential comes from when the state dir has none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnrollToken {
    /// Given on the command line / environment.
    Value(String),
    /// Read from a file (keeps it out of `ps`).
    File(PathBuf),
}

/// Everything the agent needs, already checked.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Control plane base URL.
    pub backend_url: Url,
    /// This host's name as the control plane knows it.
    pub hostname: String,
    /// Long-poll wait, and the polling period when the server answers at once.
    pub sync_interval: Duration,
    /// ATS config dir (sysconfdir).
    pub config_dir: PathBuf,
    /// ATS log dir (diags.log, manager.log, traffic.out).
    pub log_dir: PathBuf,
    /// Agent state dir.
    pub state_dir: PathBuf,
    /// runroot.yaml passed to traffic_ctl as TS_RUNROOT.
    pub runroot: Option<PathBuf>,
    /// traffic_ctl program.
    pub traffic_ctl: PathBuf,
    /// Enrollment token source, used only when the state dir has no credential.
    pub enroll_token: Option<EnrollToken>,
    /// Backoff on control-plane errors.
    pub backoff: BackoffPolicy,
    /// Period of metric samples.
    pub metrics_interval: Duration,
    /// Samples kept while the control plane is unreachable.
    pub metrics_buffer: usize,
    /// A bundle that failed is retried after this long (unless a different one arrives).
    pub failed_retry: Duration,
    /// Debug tags raised during a capture window.
    pub capture_tags: String,
    /// How often captured lines are shipped.
    pub capture_flush: Duration,
    /// Longest capture window the agent honours.
    pub capture_max: Duration,
    /// Timeout of one traffic_ctl call.
    pub ctl_timeout: Duration,
    /// Timeout of one control-plane request (added to the long-poll wait).
    pub request_timeout: Duration,
    /// Apply settings.
    pub apply: ApplySettings,
    /// Host-local records appended to records.config.
    pub local_records: LocalRecords,
}

/// Reads `sysconfdir` and `logdir` from a runroot.yaml (or a dir holding one).
pub fn read_runroot(
    path: &Path,
) -> Result<(PathBuf, Option<PathBuf>, Option<PathBuf>), ConfigError> {
    let file = if path.is_dir() {
        path.join("runroot.yaml")
    } else {
        path.to_path_buf()
    };
    let text = std::fs::read_to_string(&file).map_err(|e| ConfigError::Runroot {
        path: file.clone(),
        reason: e.to_string(),
    })?;
    let value = |key: &str| {
        text.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == key).then(|| PathBuf::from(v.trim().trim_matches('"')))
        })
    };
    Ok((file.clone(), value("sysconfdir"), value("logdir")))
}

/// Checks a backend URL.
pub fn check_url(text: &str) -> Result<Url, ConfigError> {
    let bad = |reason: String| ConfigError::BadUrl {
        url: text.to_owned(),
        reason,
    };
    let url = Url::parse(text).map_err(|e| bad(format!("not a URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad(format!(
            "scheme {:?}: use http:// or https://",
            url.scheme()
        )));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("no host".to_owned()));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("must not carry a query or fragment".to_owned()));
    }
    Ok(url)
}

/// Checks the config dir is a readable, writable directory.
pub fn check_config_dir(path: &Path) -> Result<(), ConfigError> {
    let bad = |reason: String| ConfigError::ConfigDir {
        path: path.to_path_buf(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|e| bad(e.to_string()))?;
    if !meta.is_dir() {
        return Err(bad("not a directory".to_owned()));
    }
    std::fs::read_dir(path).map_err(|e| bad(format!("cannot list it: {e}")))?;
    let probe = path.join(".apm-write-probe");
    std::fs::write(&probe, b"")
        .and_then(|()| std::fs::remove_file(&probe))
        .map_err(|e| bad(format!("cannot write in it: {e}")))?;
    Ok(())
}

/// Checks the log dir exists (ATS creates the logs in it).
pub fn check_log_dir(path: &Path) -> Result<(), ConfigError> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(ConfigError::LogDir {
            path: path.to_path_buf(),
            reason: "not a directory".into(),
        }),
        Err(e) => Err(ConfigError::LogDir {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }),
    }
}

/// Resolves traffic_ctl (a path, or a name looked up in PATH) and checks it is executable.
pub fn resolve_traffic_ctl(given: &Path) -> Result<PathBuf, ConfigError> {
    use std::os::unix::fs::PermissionsExt;
    let bad = |reason: String| ConfigError::TrafficCtl {
        path: given.to_path_buf(),
        reason,
    };
    let candidate = if given.components().count() > 1 || given.is_absolute() {
        given.to_path_buf()
    } else {
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .map(|d| d.join(given))
            .find(|p| p.is_file())
            .ok_or_else(|| bad("not found in PATH (install Debian's trafficserver package or pass --traffic-ctl /path/to/traffic_ctl)".to_owned()))?
    };
    let meta = std::fs::metadata(&candidate).map_err(|e| bad(e.to_string()))?;
    if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
        return Err(bad("not an executable file".to_owned()));
    }
    Ok(candidate)
}

/// Checks a hostname for the control plane.
pub fn check_hostname(name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-_".contains(c));
    if ok {
        Ok(())
    } else {
        Err(ConfigError::Hostname(name.to_owned()))
    }
}

/// This machine's host name.
pub fn system_hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// Reads and parses a local records file.
pub fn load_local_records(path: &Path) -> Result<LocalRecords, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::LocalRecords {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    LocalRecords::parse(&text).map_err(|reason| ConfigError::LocalRecords {
        path: path.to_path_buf(),
        reason,
    })
}

/// Parses `30s`, `500ms`, `2m`, `1h` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (examples: 30s, 500ms, 2m)"))?;
    let secs = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => {
            return Err(format!(
                "{text:?}: unknown unit {other:?} (use ms, s, m or h)"
            ));
        }
    };
    if !secs.is_finite() || !(0.0..=86_400.0 * 365.0).contains(&secs) {
        return Err(format!("{text:?} is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("30").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("3 weeks").is_err());
    }

    #[test]
    fn urls_are_checked() {
        assert!(check_url("http://127.0.0.1:8080").is_ok());
        assert!(check_url("https://manager.example/base/").is_ok());
        for bad in [
            "manager:8080",
            "ftp://x",
            "http://",
            "not a url",
            "http://h/?x=1",
        ] {
            let e = check_url(bad).unwrap_err();
            assert_eq!(e.exit_code(), 10, "{bad}: {e}");
            assert!(e.to_string().contains("--backend-url"), "{e}");
        }
    }

    #[test]
    fn config_dir_must_be_a_writable_dir() {
        let dir = tempfile::tempdir().unwrap();
        check_config_dir(dir.path()).unwrap();
        let e = check_config_dir(&dir.path().join("missing")).unwrap_err();
        assert_eq!(e.exit_code(), 11);
        let file = dir.path().join("f");
        std::fs::write(&file, "").unwrap();
        assert!(
            check_config_dir(&file)
                .unwrap_err()
                .to_string()
                .contains("not a directory")
        );
    }

    #[test]
    fn traffic_ctl_must_exist_and_run() {
        let e = resolve_traffic_ctl(Path::new("/nonexistent/traffic_ctl")).unwrap_err();
        assert_eq!(e.exit_code(), 12);
        let e = resolve_traffic_ctl(Path::new("no-such-traffic-ctl-here")).unwrap_err();
        assert!(e.to_string().contains("not found in PATH"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("traffic_ctl");
        std::fs::write(&f, "").unwrap();
        assert!(
            resolve_traffic_ctl(&f)
                .unwrap_err()
                .to_string()
                .contains("not an executable")
        );
        assert_eq!(
            resolve_traffic_ctl(Path::new("sh"))
                .unwrap()
                .file_name()
                .unwrap(),
            "sh"
        );
    }

    #[test]
    fn runroot_gives_config_and_log_dirs() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("runroot.yaml"),
            "prefix: /x\nsysconfdir: /x/etc\nlogdir: /x/log\n",
        )
        .unwrap();
        let (file, etc, log) = read_runroot(dir.path()).unwrap();
        assert_eq!(file, dir.path().join("runroot.yaml"));
        assert_eq!(etc, Some(PathBuf::from("/x/etc")));
        assert_eq!(log, Some(PathBuf::from("/x/log")));
        assert_eq!(
            read_runroot(&dir.path().join("nope.yaml"))
                .unwrap_err()
                .exit_code(),
            15
        );
    }

    #[test]
    fn hostnames() {
        check_hostname("proxy-01.example").unwrap();
        assert_eq!(check_hostname("bad host").unwrap_err().exit_code(), 17);
        assert!(!system_hostname().is_empty());
    }
}
