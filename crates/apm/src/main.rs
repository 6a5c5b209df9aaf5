//! `apm`: the ATS Proxy Manager binary. A thin command line over the library crates.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cmd;

/// The process allocator, chosen by the binary (libraries leave it alone). A server holding
/// 100,000 long-polls allocates and frees small objects at a high rate on two threads; glibc's
/// malloc spent ~19% of the server's CPU in `apm bench fleet` (perf) and fragments.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// ATS Proxy Manager: one routing policy for a fleet of Apache Traffic Server forward proxies.
#[derive(Parser)]
#[command(name = "apm", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Offline policy tools: template, validate, render, explain, PAC, NO_PROXY.
    #[command(subcommand)]
    Policy(cmd::policy::PolicyCommand),
    /// The agent beside each ATS: sync, validate, apply atomically, confirm, roll back, report.
    Agent(Box<cmd::agent::AgentArgs>),
    /// The control plane: HTTP API, agent sync (SQLite by default, PostgreSQL with --database-url).
    Server(cmd::server::ServerArgs),
    /// Capture → mocks: ingest traces or record traffic into sanitized WireMock mappings, load them.
    #[command(subcommand)]
    Capture(cmd::capture::CaptureCommand),
    /// Built-in mock server for the WireMock mappings `apm capture` writes.
    #[command(subcommand)]
    Mock(cmd::mock::MockCommand),
    /// Benchmarks: `apm bench fleet` simulates a fleet of agents against a real `apm server`.
    #[command(subcommand)]
    Bench(cmd::bench::BenchCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Policy(command) => cmd::policy::run(command),
        Command::Agent(args) => cmd::agent::run(*args),
        Command::Server(args) => cmd::server::run(args),
        Command::Capture(command) => cmd::capture::run(command),
        Command::Mock(command) => cmd::mock::run(command),
        Command::Bench(command) => cmd::bench::run(command),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}
