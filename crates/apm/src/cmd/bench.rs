//! `apm bench`: fleet-scale benchmark of the control plane (`apm bench fleet`), and the raw
//! hello-world server it uses as the machine's ceiling (`apm bench hello`, hidden).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use apm_bench::{Database, FleetOptions, TransportChoice};

/// `apm bench` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// Starts `apm server`, enrolls N simulated agents that run the sync protocol, measures
    /// propagation (long-poll vs plain polling), latency, CPU/RSS and stats ingestion.
    Fleet(FleetArgs),
    /// A raw HTTP hello-world server (the ceiling the fleet benchmark compares against).
    #[command(hide = true)]
    Hello {
        /// Listen address.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: std::net::SocketAddr,
    },
}

/// Database under the server.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum DbArg {
    /// Embedded SQLite in a temp data dir.
    Sqlite,
    /// A PostgreSQL started for the run (Debian binaries).
    Postgres,
}

/// Client transport.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum TransportArg {
    /// http1 when the descriptor limit allows a connection per agent lane, else h2.
    Auto,
    /// Own HTTP/1.1 connections per agent.
    Http1,
    /// Agents multiplexed over HTTP/2 connections (--agents-per-connection).
    H2,
}

/// Flags of `apm bench fleet`.
#[derive(Debug, clap::Args)]
pub struct FleetArgs {
    /// Simulated agents.
    #[arg(long, default_value_t = 1000)]
    agents: usize,
    /// Database of the server under test.
    #[arg(long, value_enum, default_value = "sqlite")]
    database: DbArg,
    /// Output directory (result.json, result.md, propagation.svg, server.log).
    #[arg(long, default_value = "bench-out")]
    out: PathBuf,
    /// Long-poll wait in seconds (the agent's sync interval).
    #[arg(long, default_value_t = 30)]
    wait: u64,
    /// Interval of the plain-polling baseline (the seed's 30 s), e.g. 30s, 5s.
    #[arg(long, default_value = "30s", value_parser = duration)]
    poll_interval: Duration,
    /// Interval of each agent's metric push.
    #[arg(long, default_value = "30s", value_parser = duration)]
    stats_interval: Duration,
    /// Minimum length of the stats-ingestion window.
    #[arg(long, default_value = "60s", value_parser = duration)]
    stats_window: Duration,
    /// Skip the plain-polling baseline.
    #[arg(long)]
    skip_polling: bool,
    /// Longest simulated ATS apply: each agent waits a random time up to this between receiving
    /// a new bundle and its ACK, as the real agent reloads ATS and confirms the reload first
    /// (0: ACK at once, the heaviest burst for the server).
    #[arg(long, default_value = "0s", value_parser = duration)]
    apply_time: Duration,
    /// Client transport.
    #[arg(long, value_enum, default_value = "auto")]
    transport: TransportArg,
    /// Agents per HTTP/2 connection (h2 transport).
    #[arg(long, default_value_t = 64)]
    agents_per_connection: usize,
    /// Concurrent enrollment requests.
    #[arg(long, default_value_t = 32)]
    enroll_concurrency: usize,
    /// Seconds of each ceiling load (hello-world and sync wait=0); 0 skips them.
    #[arg(long, default_value_t = 5.0)]
    ceiling_secs: f64,
    /// Seconds of idle-latency probes while the fleet long-polls.
    #[arg(long, default_value_t = 3.0)]
    probe_secs: f64,
    /// Longest wait for the fleet to get an approved change (long-poll phase).
    #[arg(long, default_value = "60s", value_parser = duration)]
    propagation_timeout: Duration,
    /// Log filter of the server under test (`info` logs a line per request: at 100k agents
    /// that is ~1 GB per 10 minutes).
    #[arg(long, default_value = "warn")]
    server_log_level: String,
    /// Extra `apm server` flag (repeatable), e.g. --server-arg=--database-max-connections --server-arg=20.
    #[arg(long = "server-arg", allow_hyphen_values = true)]
    server_args: Vec<String>,
}

fn duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map(|i| s.split_at(i))
        .unwrap_or((s, "s"));
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 30s, 500ms or 2m"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" | "" => n,
        "m" => n * 60.0,
        _ => return Err(format!("{s:?}: unit must be ms, s or m")),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("{s:?} is not a positive duration"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Runs an `apm bench` subcommand.
pub fn run(command: BenchCommand) -> anyhow::Result<ExitCode> {
    // No transparent huge pages for the simulator either (the server disables them for
    // itself): when a new version reaches 100,000 agents at once, their answers' buffers
    // fault in fresh 2 MiB pages, and zeroing those took a fifth of the simulator's CPU,
    // on the cores the measured server shares. Best effort, as in `apm server`.
    let _ = nix::sys::prctl::set_thp_disable(true);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    match command {
        BenchCommand::Hello { listen } => {
            runtime.block_on(apm_bench::hello::serve_hello(listen))?;
            Ok(ExitCode::SUCCESS)
        }
        BenchCommand::Fleet(a) => {
            let exe = std::env::current_exe().context("locating the apm executable")?;
            let mut o = FleetOptions::new(
                a.agents,
                match a.database {
                    DbArg::Sqlite => Database::Sqlite,
                    DbArg::Postgres => Database::Postgres,
                },
                a.out.clone(),
                exe,
            );
            o.wait_secs = a.wait;
            o.poll_interval = a.poll_interval;
            o.stats_interval = a.stats_interval;
            o.stats_window = a.stats_window;
            o.skip_polling = a.skip_polling;
            o.apply_time = a.apply_time;
            o.transport = match a.transport {
                TransportArg::Auto => TransportChoice::Auto,
                TransportArg::Http1 => TransportChoice::Http1,
                TransportArg::H2 => TransportChoice::H2(a.agents_per_connection),
            };
            o.enroll_concurrency = a.enroll_concurrency;
            o.ceiling_secs = a.ceiling_secs;
            o.probe_secs = a.probe_secs;
            o.propagation_timeout = a.propagation_timeout;
            o.server_log_level = a.server_log_level;
            o.server_args = a.server_args;
            // SIGINT/SIGTERM drop the run: its server, hello-world and PostgreSQL children are
            // stopped by their handles' Drop instead of being left running.
            let result = runtime.block_on(async {
                tokio::select! {
                    r = apm_bench::run_fleet(o) => r.map(Some),
                    () = super::capture::shutdown_signal(None) => Ok(None),
                }
            })?;
            let Some(result) = result else {
                eprintln!("apm bench: interrupted; the server and database it started are stopped");
                return Ok(ExitCode::from(130));
            };
            print!("{}", apm_bench::report::markdown(&result));
            println!(
                "\nwrote {}/result.json, result.md, propagation.svg",
                a.out.display()
            );
            Ok(if result.errors == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(duration("7"), Ok(Duration::from_secs(7)));
        assert!(duration("x").is_err());
        assert!(duration("3h").is_err());
    }
}
