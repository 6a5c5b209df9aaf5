//! `apm agent`: runs beside one ATS and applies what the control plane says (crates/agent).
//! `apm agent status` prints the local state.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use apm_agent::apply::ApplySettings;
use apm_agent::backoff::BackoffPolicy;
use apm_agent::config::{self, AgentConfig, ConfigError, EnrollToken, parse_duration};
use apm_agent::logging::{self, LogFormat};
use apm_agent::records::LocalRecords;
use apm_agent::state::StateDir;
use clap::{Args, Subcommand};

/// `apm agent [FLAGS]` runs the agent; `apm agent status` reads its state dir.
#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AgentArgs {
    #[command(subcommand)]
    command: Option<AgentCommand>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum AgentCommand {
    /// Print the running hash, last sync and last error from the state dir.
    Status(StatusArgs),
}

#[derive(Args)]
struct StatusArgs {
    /// The agent's state dir.
    #[arg(
        long,
        env = "APM_AGENT_STATE_DIR",
        default_value = "/var/lib/apm-agent"
    )]
    state_dir: PathBuf,
    /// Print the state as JSON.
    #[arg(long)]
    json: bool,
}

fn duration(text: &str) -> Result<Duration, String> {
    parse_duration(text)
}

#[derive(Args)]
struct RunArgs {
    /// Control plane URL, e.g. http://manager.example:8080.
    #[arg(long, env = "APM_BACKEND_URL")]
    backend_url: Option<String>,
    /// This proxy's name at the control plane (default: the host name).
    #[arg(long, env = "APM_AGENT_HOSTNAME")]
    hostname: Option<String>,
    /// Long-poll wait, and the polling period when the server answers at once.
    #[arg(long, env = "APM_SYNC_INTERVAL", default_value = "30s", value_parser = duration)]
    sync_interval: Duration,
    /// ATS config dir (default: the runroot's sysconfdir, else /etc/trafficserver).
    #[arg(long, env = "APM_ATS_CONFIG_DIR")]
    config_dir: Option<PathBuf>,
    /// ATS log dir (default: the runroot's logdir, else /var/log/trafficserver).
    #[arg(long, env = "APM_ATS_LOG_DIR")]
    log_dir: Option<PathBuf>,
    /// The agent's state dir (credential, state, last-good bundle, apply journal).
    #[arg(
        long,
        env = "APM_AGENT_STATE_DIR",
        default_value = "/var/lib/apm-agent"
    )]
    state_dir: PathBuf,
    /// runroot.yaml (or its dir) passed to traffic_ctl as TS_RUNROOT.
    #[arg(long, env = "APM_ATS_RUNROOT")]
    ats_runroot: Option<PathBuf>,
    /// traffic_ctl program.
    #[arg(long, env = "APM_TRAFFIC_CTL", default_value = "traffic_ctl")]
    traffic_ctl: PathBuf,
    /// Enrollment token (used once, when the state dir has no credential).
    #[arg(long, env = "APM_ENROLL_TOKEN", conflicts_with = "token_file")]
    enroll_token: Option<String>,
    /// File holding the enrollment token (keeps it out of `ps`).
    #[arg(long, env = "APM_ENROLL_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// Host-local records appended to the rendered records.config (ATS 9).
    #[arg(long, env = "APM_LOCAL_RECORDS")]
    local_records: Option<PathBuf>,
    /// Command that restarts ATS when a change needs a restart (e.g. "systemctl restart
    /// trafficserver"); without it the agent reports "restart required".
    #[arg(long, env = "APM_RESTART_COMMAND")]
    restart_command: Option<String>,
    /// First backoff delay after a control-plane error.
    #[arg(long, default_value = "30s", value_parser = duration)]
    backoff_initial: Duration,
    /// Longest backoff delay.
    #[arg(long, default_value = "180s", value_parser = duration)]
    backoff_max: Duration,
    /// Period of metric samples (default: the sync interval).
    #[arg(long, value_parser = duration)]
    metrics_interval: Option<Duration>,
    /// Samples kept while the control plane is unreachable.
    #[arg(long, default_value_t = 1000)]
    metrics_buffer: usize,
    /// How long to wait for ATS to confirm a reload in its logs.
    #[arg(long, default_value = "60s", value_parser = duration)]
    confirm_timeout: Duration,
    /// With no reload log line after this long, touch the changed files and reload again.
    #[arg(long, default_value = "8s", value_parser = duration)]
    nudge_interval: Duration,
    /// A config file still "loading" this long is the ATS 9.2 loader hang (restart needed).
    #[arg(long, default_value = "5s", value_parser = duration)]
    hang_timeout: Duration,
    /// How long to wait for traffic_server after a restart.
    #[arg(long, default_value = "60s", value_parser = duration)]
    restart_timeout: Duration,
    /// A bundle that failed is retried after this long (a different bundle is applied at once).
    #[arg(long, default_value = "10m", value_parser = duration)]
    failed_retry: Duration,
    /// ATS debug tags raised during a log-capture window.
    #[arg(long, env = "APM_CAPTURE_TAGS", default_value = "http|parent_select")]
    capture_tags: String,
    /// Longest capture window the agent honours (the control plane allows at most 5 minutes).
    #[arg(long, default_value = "5m", value_parser = duration)]
    capture_max: Duration,
    /// How often captured lines are shipped.
    #[arg(long, default_value = "2s", value_parser = duration)]
    capture_flush: Duration,
    /// Timeout of one traffic_ctl call.
    #[arg(long, default_value = "20s", value_parser = duration)]
    ctl_timeout: Duration,
    /// Timeout of one control-plane request (added to the long-poll wait).
    #[arg(long, default_value = "15s", value_parser = duration)]
    request_timeout: Duration,
    /// Log format.
    #[arg(long, default_value = "json", value_parser = ["json", "text"])]
    log_format: String,
    /// Test hook: pause between the renames of one apply (widens the crash window).
    #[arg(long, hide = true, default_value = "0s", value_parser = duration)]
    apply_step_delay: Duration,
}

/// Runs `apm agent`.
pub fn run(args: AgentArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        Some(AgentCommand::Status(s)) => status(s),
        None => run_agent(args.run),
    }
}

fn fail(error: &ConfigError) -> ExitCode {
    logging::misconfigured(error, error.exit_code());
    eprintln!("error: {error}");
    ExitCode::from(error.exit_code())
}

fn build_config(a: RunArgs) -> Result<AgentConfig, ConfigError> {
    let Some(url) = a.backend_url.as_deref() else {
        return Err(ConfigError::BadUrl {
            url: String::new(),
            reason: "missing: pass --backend-url or set APM_BACKEND_URL".into(),
        });
    };
    let backend_url = config::check_url(url)?;
    let hostname = a.hostname.unwrap_or_else(config::system_hostname);
    config::check_hostname(&hostname)?;
    let (runroot, root_etc, root_log) = match &a.ats_runroot {
        Some(p) => {
            let (file, etc, log) = config::read_runroot(p)?;
            (Some(file), etc, log)
        }
        None => (None, None, None),
    };
    let config_dir = a
        .config_dir
        .or(root_etc)
        .unwrap_or_else(|| PathBuf::from("/etc/trafficserver"));
    config::check_config_dir(&config_dir)?;
    let log_dir = a
        .log_dir
        .or(root_log)
        .unwrap_or_else(|| PathBuf::from("/var/log/trafficserver"));
    config::check_log_dir(&log_dir)?;
    let traffic_ctl = config::resolve_traffic_ctl(&a.traffic_ctl)?;
    let local_records = match &a.local_records {
        Some(p) => config::load_local_records(p)?,
        None => LocalRecords::default(),
    };
    let enroll_token = match (a.enroll_token, a.token_file) {
        (Some(t), _) => Some(EnrollToken::Value(t)),
        (None, Some(f)) => Some(EnrollToken::File(f)),
        (None, None) => None,
    };
    Ok(AgentConfig {
        backend_url,
        hostname,
        sync_interval: a.sync_interval.max(Duration::from_secs(1)),
        config_dir,
        log_dir,
        state_dir: a.state_dir,
        runroot,
        traffic_ctl,
        enroll_token,
        backoff: BackoffPolicy {
            initial: a.backoff_initial,
            max: a.backoff_max.max(a.backoff_initial),
            ..BackoffPolicy::default()
        },
        metrics_interval: a
            .metrics_interval
            .unwrap_or(a.sync_interval)
            .max(Duration::from_millis(100)),
        metrics_buffer: a.metrics_buffer,
        failed_retry: a.failed_retry,
        capture_tags: a.capture_tags,
        capture_flush: a.capture_flush.max(Duration::from_millis(100)),
        capture_max: a.capture_max.min(Duration::from_secs(300)),
        ctl_timeout: a.ctl_timeout,
        request_timeout: a.request_timeout,
        apply: ApplySettings {
            confirm_timeout: a.confirm_timeout,
            hang_timeout: a.hang_timeout,
            nudge_interval: a.nudge_interval,
            restart_timeout: a.restart_timeout,
            step_delay: a.apply_step_delay,
            restart_command: a.restart_command,
        },
        local_records,
    })
}

fn run_agent(args: RunArgs) -> anyhow::Result<ExitCode> {
    logging::init(if args.log_format == "text" {
        LogFormat::Text
    } else {
        LogFormat::Json
    });
    let cfg = match build_config(args) {
        Ok(c) => c,
        Err(e) => return Ok(fail(&e)),
    };
    let agent = match apm_agent::agent::Agent::new(cfg) {
        Ok(a) => a,
        Err(e) => return Ok(fail(&e)),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let result = runtime.block_on(async move {
        let (tx, rx) = tokio::sync::watch::channel(false);
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("installing the SIGTERM handler")?;
        let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
            .context("installing the SIGINT handler")?;
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => logging::stopping("SIGTERM"),
                _ = int.recv() => logging::stopping("SIGINT"),
            }
            let _ = tx.send(true);
        });
        anyhow::Ok(agent.run(rx).await)
    })?;
    match result {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => Ok(fail(&e)),
    }
}

fn fmt_ms(ms: Option<i64>) -> String {
    match ms {
        None => "never".to_owned(),
        Some(ms) => {
            let ago = (apm_agent::now_ms() - ms) / 1000;
            format!("{} ({ago} s ago)", apm_agent::format_utc(ms))
        }
    }
}

/// The status line of an open log-capture window: an operator must see when ATS has not taken
/// the debug settings, since no debug line flows until it has.
fn capture_line(c: &apm_agent::state::CaptureState) -> String {
    let taken = match c.confirmed_ms {
        Some(t) => format!("ATS took the debug settings at {}", fmt_ms(Some(t))),
        None => {
            "ATS has NOT confirmed the debug settings yet: no debug lines until it does".to_owned()
        }
    };
    format!(
        "log capture open until {}; {taken}",
        fmt_ms(Some(c.until_ms))
    )
}

fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    if !args.state_dir.is_dir() {
        eprintln!(
            "error: --state-dir {}: no such directory (has the agent run here?)",
            args.state_dir.display()
        );
        return Ok(ExitCode::from(13));
    }
    let dir = StateDir::read_only(&args.state_dir);
    let state = match dir.load() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(13));
        }
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&state)?);
        return Ok(ExitCode::SUCCESS);
    }
    let hash = |h: Option<apm_policy::ContentHash>| h.map_or("none".to_owned(), |h| h.to_string());
    println!("state dir:     {}", args.state_dir.display());
    println!("running hash:  {}", hash(state.running_hash));
    if let Some(v) = state.running_version {
        println!("version:       {v}");
    }
    println!("last sync:     {}", fmt_ms(state.last_sync_ms));
    println!("last apply:    {}", fmt_ms(state.last_apply_ms));
    match &state.last_error {
        Some(e) => println!("last error:    {} at {}", e.message, fmt_ms(Some(e.at_ms))),
        None => println!("last error:    none"),
    }
    if let Some(r) = &state.restart_pending {
        let changes: Vec<String> = r.changes.iter().map(ToString::to_string).collect();
        println!("RESTART REQUIRED for {}: {}", r.hash, changes.join(", "));
    }
    if let Some(a) = &state.pending_ack {
        println!("ack not yet delivered: {} {:?}", a.hash, a.status);
    }
    if let Some(c) = &state.capture {
        println!("{}", capture_line(c));
    }
    let credential = dir.credential().ok().flatten().is_some();
    println!("enrolled:      {}", if credential { "yes" } else { "no" });
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_capture_line_says_whether_ats_took_the_settings() {
        let mut c = apm_agent::state::CaptureState {
            id: None,
            until_ms: 1_700_000_300_000,
            previous_enabled: "0".into(),
            previous_tags: String::new(),
            offsets: Default::default(),
            raised_offset: Some(0),
            confirmed_ms: None,
        };
        let line = capture_line(&c);
        assert!(
            line.contains(&apm_agent::format_utc(1_700_000_300_000)),
            "{line}"
        );
        assert!(line.contains("NOT confirmed"), "{line}");
        c.confirmed_ms = Some(1_700_000_012_000);
        let line = capture_line(&c);
        assert!(
            line.contains("took the debug settings at")
                && line.contains(&apm_agent::format_utc(1_700_000_012_000)),
            "{line}"
        );
    }
}
