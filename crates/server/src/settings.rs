//! Server settings: command-line flags, `APM_*` environment variables and an optional TOML file.
//! Precedence: flag > environment > file > built-in default. Every key is documented in
//! docs/configuration.md; the file keys are the field names of [`Settings`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// How a pending config version gets approved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalMode {
    /// The submitter confirms in a second, deliberate step (the original design's choice).
    #[value(alias = "self_confirm")]
    SelfConfirm,
    /// The approver must differ from the submitter and from everyone who edited the version.
    #[value(alias = "four_eyes")]
    FourEyes,
}

impl ApprovalMode {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalMode::SelfConfirm => "self_confirm",
            ApprovalMode::FourEyes => "four_eyes",
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// One JSON object per line (default; for log shippers).
    Json,
    /// Human-readable lines.
    Text,
}

/// Every server setting, resolved.
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Address the HTTP server listens on.
    pub listen: SocketAddr,
    /// Directory for the embedded SQLite database (created on first start).
    pub data_dir: PathBuf,
    /// `sqlite://PATH` or `postgres://USER:PASS@HOST/DB`; default: SQLite in `data_dir`.
    pub database_url: Option<String>,
    /// Connection pool size.
    pub database_max_connections: u32,
    /// Approval mode for config versions.
    pub approval_mode: ApprovalMode,
    /// A session with no beacon (or request) for this long is dead.
    pub session_idle_timeout_secs: u64,
    /// Absolute session lifetime.
    pub session_max_lifetime_secs: u64,
    /// Mark the session cookie `Secure` (set when served over HTTPS).
    pub cookie_secure: bool,
    /// Failed logins allowed per (client address, username) within the window.
    pub login_max_failures: u32,
    /// Window of the login rate limit.
    pub login_window_secs: u64,
    /// Cap on the `wait` of a long-poll sync.
    pub sync_max_wait_secs: u64,
    /// Random shortening of each long-poll hold, in percent of `wait`, so agents spread out.
    pub sync_jitter_percent: u64,
    /// A proxy seen within this window counts as online.
    pub online_window_secs: u64,
    /// Raw metric samples are kept this long.
    pub stats_raw_retention_hours: u64,
    /// 5-minute rollups are kept this long.
    pub stats_rollup_retention_days: u64,
    /// How often pending metric pushes are folded into the 5-minute rollups (charts of long
    /// windows and of the fleet trail the pushes by up to this much).
    pub stats_rollup_interval_ms: u64,
    /// Captured log lines are kept this long.
    pub log_retention_days: u64,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// How often a replica checks the database for changes made by other replicas.
    pub replica_poll_ms: u64,
    /// Log format.
    pub log_format: LogFormat,
    /// Log filter (tracing `EnvFilter` syntax), e.g. `info` or `apm_server=debug`.
    pub log_level: String,
    /// Initial root password (env `APM_ROOT_PASSWORD` only; never a flag or file key).
    #[serde(skip)]
    pub root_password: Option<String>,
    /// Set the root password again at start (from `APM_ROOT_PASSWORD`, else generated).
    #[serde(skip)]
    pub reset_root_password: bool,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("listen", &self.listen)
            .field("data_dir", &self.data_dir)
            .field(
                "database_url",
                &self.database_url.as_deref().map(apm_store::redact_url),
            )
            .field("approval_mode", &self.approval_mode)
            .field("root_password", &self.root_password.as_ref().map(|_| "***"))
            .finish_non_exhaustive()
    }
}

/// Longest roll-up interval: a rollup bucket (5 minutes); longer would leave whole buckets out of
/// the charts.
const ROLLUP_INTERVAL_MAX_MS: u64 = 300_000;

impl Default for Settings {
    fn default() -> Self {
        Settings {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("apm-data"),
            database_url: None,
            database_max_connections: 10,
            approval_mode: ApprovalMode::SelfConfirm,
            session_idle_timeout_secs: 120,
            session_max_lifetime_secs: 12 * 3600,
            cookie_secure: false,
            login_max_failures: 5,
            login_window_secs: 300,
            sync_max_wait_secs: 60,
            sync_jitter_percent: 10,
            online_window_secs: 90,
            stats_raw_retention_hours: 48,
            stats_rollup_retention_days: 30,
            stats_rollup_interval_ms: 60_000,
            log_retention_days: 7,
            max_body_bytes: 1024 * 1024,
            replica_poll_ms: 1000,
            log_format: LogFormat::Json,
            log_level: "info".to_string(),
            root_password: None,
            reset_root_password: false,
        }
    }
}

impl Settings {
    /// The database URL in effect (SQLite in the data dir unless one was given).
    pub fn effective_database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.clone(),
            None => format!("sqlite://{}", self.data_dir.join("apm.db").display()),
        }
    }

    /// Reads a TOML settings file.
    pub fn from_file(path: &Path) -> Result<Settings, SettingsError> {
        let text = std::fs::read_to_string(path).map_err(|e| SettingsError::Read {
            path: path.to_path_buf(),
            source: e,
        })?;
        toml::from_str(&text).map_err(|e| SettingsError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// Checks values that have no meaning out of range.
    pub fn validate(&self) -> Result<(), SettingsError> {
        let bad = |key: &'static str, message: &str| {
            Err(SettingsError::Invalid {
                key,
                message: message.to_string(),
            })
        };
        if self.session_idle_timeout_secs == 0 {
            return bad("session_idle_timeout_secs", "must be at least 1");
        }
        if self.session_max_lifetime_secs < self.session_idle_timeout_secs {
            return bad(
                "session_max_lifetime_secs",
                "must be at least session_idle_timeout_secs",
            );
        }
        if self.sync_jitter_percent > 50 {
            return bad("sync_jitter_percent", "must be between 0 and 50");
        }
        if self.max_body_bytes < 1024 {
            return bad("max_body_bytes", "must be at least 1024");
        }
        if self.database_max_connections == 0 {
            return bad("database_max_connections", "must be at least 1");
        }
        if self.login_max_failures == 0 {
            return bad("login_max_failures", "must be at least 1");
        }
        if self.stats_raw_retention_hours > 24 * 3650 {
            return bad(
                "stats_raw_retention_hours",
                "must be at most 87600 (ten years)",
            );
        }
        if self.stats_rollup_retention_days > 3650 || self.log_retention_days > 3650 {
            return bad(
                "stats_rollup_retention_days / log_retention_days",
                "must be at most 3650 (ten years)",
            );
        }
        if self.session_max_lifetime_secs > 366 * 86_400 {
            return bad("session_max_lifetime_secs", "must be at most one year");
        }
        if self.online_window_secs > 86_400 * 365 || self.sync_max_wait_secs > 3600 {
            return bad(
                "online_window_secs / sync_max_wait_secs",
                "online window at most a year, long-poll wait at most 3600 s",
            );
        }
        if !(50..=ROLLUP_INTERVAL_MAX_MS).contains(&self.stats_rollup_interval_ms) {
            return bad(
                "stats_rollup_interval_ms",
                "must be between 50 and 300000 (one rollup bucket)",
            );
        }
        if self.replica_poll_ms < 50 {
            return bad("replica_poll_ms", "must be at least 50");
        }
        Ok(())
    }
}

/// Why settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The file could not be read.
    #[error("cannot read settings file {path}: {source}")]
    Read {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The file is not valid TOML for these settings.
    #[error("invalid settings file {path}: {message}")]
    Parse {
        /// File.
        path: PathBuf,
        /// What is wrong and where.
        message: String,
    },
    /// A value is out of range.
    #[error("invalid setting {key}: {message}")]
    Invalid {
        /// Setting key.
        key: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// The `apm server` flags. Every flag also reads an `APM_*` variable; unset ones fall back to
/// the `--config` file, then to the defaults.
#[derive(Debug, Default, clap::Args)]
pub struct ServerArgs {
    /// TOML settings file (keys as in docs/configuration.md).
    #[arg(long, env = "APM_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Listen address [default: 127.0.0.1:8080].
    #[arg(long, env = "APM_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Data directory for the embedded SQLite database [default: ./apm-data].
    #[arg(long, env = "APM_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Database URL: sqlite://PATH or postgres://USER:PASS@HOST:PORT/DB [default: SQLite in the data dir].
    #[arg(
        long,
        env = "APM_DATABASE_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    pub database_url: Option<String>,
    /// Database connection pool size [default: 10].
    #[arg(long, env = "APM_DATABASE_MAX_CONNECTIONS")]
    pub database_max_connections: Option<u32>,
    /// Approval mode for config versions [default: self-confirm].
    #[arg(long, env = "APM_APPROVAL_MODE", value_enum)]
    pub approval_mode: Option<ApprovalMode>,
    /// Seconds without beacon after which a session is dead [default: 120].
    #[arg(long, env = "APM_SESSION_IDLE_TIMEOUT_SECS")]
    pub session_idle_timeout_secs: Option<u64>,
    /// Absolute session lifetime in seconds [default: 43200].
    #[arg(long, env = "APM_SESSION_MAX_LIFETIME_SECS")]
    pub session_max_lifetime_secs: Option<u64>,
    /// Mark the session cookie Secure (behind HTTPS) [default: false].
    #[arg(long, env = "APM_COOKIE_SECURE")]
    pub cookie_secure: Option<bool>,
    /// Failed logins allowed per client and username within the window [default: 5].
    #[arg(long, env = "APM_LOGIN_MAX_FAILURES")]
    pub login_max_failures: Option<u32>,
    /// Login rate-limit window in seconds [default: 300].
    #[arg(long, env = "APM_LOGIN_WINDOW_SECS")]
    pub login_window_secs: Option<u64>,
    /// Cap on a long-poll sync's wait, seconds [default: 60].
    #[arg(long, env = "APM_SYNC_MAX_WAIT_SECS")]
    pub sync_max_wait_secs: Option<u64>,
    /// Jitter of long-poll holds, percent [default: 10].
    #[arg(long, env = "APM_SYNC_JITTER_PERCENT")]
    pub sync_jitter_percent: Option<u64>,
    /// A proxy seen within this many seconds is online [default: 90].
    #[arg(long, env = "APM_ONLINE_WINDOW_SECS")]
    pub online_window_secs: Option<u64>,
    /// Raw metric retention, hours [default: 48].
    #[arg(long, env = "APM_STATS_RAW_RETENTION_HOURS")]
    pub stats_raw_retention_hours: Option<u64>,
    /// 5-minute rollup retention, days [default: 30].
    #[arg(long, env = "APM_STATS_ROLLUP_RETENTION_DAYS")]
    pub stats_rollup_retention_days: Option<u64>,
    /// Milliseconds between roll-ups of pending metric pushes [default: 60000].
    #[arg(long, env = "APM_STATS_ROLLUP_INTERVAL_MS")]
    pub stats_rollup_interval_ms: Option<u64>,
    /// Captured log retention, days [default: 7].
    #[arg(long, env = "APM_LOG_RETENTION_DAYS")]
    pub log_retention_days: Option<u64>,
    /// Largest accepted request body in bytes [default: 1048576].
    #[arg(long, env = "APM_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Milliseconds between checks for changes made by other replicas [default: 1000].
    #[arg(long, env = "APM_REPLICA_POLL_MS")]
    pub replica_poll_ms: Option<u64>,
    /// Log format [default: json].
    #[arg(long, env = "APM_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Log filter, e.g. info or apm_server=debug [default: info].
    #[arg(long, env = "APM_LOG", value_name = "FILTER")]
    pub log_level: Option<String>,
    /// Set the root password again at start: from APM_ROOT_PASSWORD, else a generated one is printed.
    #[arg(long)]
    pub reset_root_password: bool,
}

impl ServerArgs {
    /// Resolves flags/env over the file over the defaults.
    pub fn resolve(self) -> Result<Settings, SettingsError> {
        let mut s = match &self.config {
            Some(path) => Settings::from_file(path)?,
            None => Settings::default(),
        };
        macro_rules! take {
            ($($field:ident),*) => { $( if let Some(v) = self.$field { s.$field = v; } )* };
        }
        take!(
            listen,
            data_dir,
            database_max_connections,
            approval_mode,
            session_idle_timeout_secs,
            session_max_lifetime_secs,
            cookie_secure,
            login_max_failures,
            login_window_secs,
            sync_max_wait_secs,
            sync_jitter_percent,
            online_window_secs,
            stats_raw_retention_hours,
            stats_rollup_retention_days,
            stats_rollup_interval_ms,
            log_retention_days,
            max_body_bytes,
            replica_poll_ms,
            log_format,
            log_level
        );
        if let Some(url) = self.database_url {
            s.database_url = Some(url);
        }
        s.root_password = std::env::var("APM_ROOT_PASSWORD")
            .ok()
            .filter(|p| !p.is_empty());
        s.reset_root_password = self.reset_root_password;
        s.validate()?;
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_values_apply_and_flags_win() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("apm.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:9999\"\napproval_mode = \"four_eyes\"\nsession_idle_timeout_secs = 30\n",
        )
        .expect("write");
        let args = ServerArgs {
            config: Some(path.clone()),
            session_idle_timeout_secs: Some(45),
            ..Default::default()
        };
        let s = args.resolve().expect("resolve");
        assert_eq!(s.listen.port(), 9999);
        assert_eq!(s.approval_mode, ApprovalMode::FourEyes);
        assert_eq!(s.session_idle_timeout_secs, 45);
        assert_eq!(s.sync_max_wait_secs, 60);
    }

    #[test]
    fn approval_mode_accepts_both_spellings() {
        use clap::ValueEnum;
        for (text, mode) in [
            ("four-eyes", ApprovalMode::FourEyes),
            ("four_eyes", ApprovalMode::FourEyes),
            ("self_confirm", ApprovalMode::SelfConfirm),
        ] {
            assert_eq!(ApprovalMode::from_str(text, false), Ok(mode), "{text}");
        }
    }

    #[test]
    fn unknown_file_key_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("apm.toml");
        std::fs::write(&path, "lisen = \"127.0.0.1:1\"\n").expect("write");
        let err = Settings::from_file(&path).expect_err("must fail");
        assert!(err.to_string().contains("lisen"), "{err}");
    }

    #[test]
    fn out_of_range_values_are_rejected() {
        for s in [
            Settings {
                sync_jitter_percent: 90,
                ..Settings::default()
            },
            Settings {
                stats_raw_retention_hours: u64::MAX,
                ..Settings::default()
            },
            Settings {
                session_max_lifetime_secs: u64::MAX,
                ..Settings::default()
            },
            Settings {
                sync_max_wait_secs: 1 << 40,
                ..Settings::default()
            },
            Settings {
                stats_rollup_interval_ms: 10,
                ..Settings::default()
            },
            Settings {
                stats_rollup_interval_ms: 3_600_000,
                ..Settings::default()
            },
        ] {
            assert!(s.validate().is_err(), "{s:?}");
        }
        assert!(Settings::default().validate().is_ok());
    }

    #[test]
    fn debug_hides_secrets() {
        let s = Settings {
            database_url: Some("postgres://u:pw@h/db".into()),
            root_password: Some("hunter22".into()),
            ..Settings::default()
        };
        let text = format!("{s:?}");
        assert!(
            !text.contains("pw@") && !text.contains("hunter22"),
            "{text}"
        );
    }
}
