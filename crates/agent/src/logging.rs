//! Process logging for `apm agent`: JSON lines on stderr (journald keeps them), level from
//! `RUST_LOG` (default `info`).

use tracing_subscriber::EnvFilter;

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable.
    Text,
}

/// Installs the global subscriber; a second call is a no-op.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Logs a fatal misconfiguration (also printed to stderr by the caller).
pub fn misconfigured(error: &dyn std::fmt::Display, exit_code: u8) {
    tracing::error!(error = %error, exit_code, "agent misconfigured");
}

/// Logs the signal that stops the agent.
pub fn stopping(signal: &str) {
    tracing::info!(signal, "shutting down");
}
