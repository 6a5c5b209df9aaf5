//! `apm mock serve`: serve a mapping directory like WireMock does.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use apm_mock::files::read_mappings;
use apm_mock::server::{MockState, handle};
use clap::{Args, Subcommand};

/// Mock subcommands.
#[derive(Subcommand)]
pub enum MockCommand {
    /// Serve WireMock mappings (the subset `apm capture` generates) with WireMock's admin API subset.
    Serve(ServeArgs),
}

/// `apm mock serve`.
#[derive(Args)]
pub struct ServeArgs {
    /// Mapping directory (DIR/mappings/*.json or DIR/*.json). Without it, start empty and
    /// load stubs through /__admin/mappings.
    #[arg(long)]
    mappings: Option<PathBuf>,
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Serve Prometheus metrics on this address at /metrics.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<SocketAddr>,
    /// Refuse to start if any mapping file is invalid (default: report and skip it).
    #[arg(long)]
    strict: bool,
    /// Stop after this long (e.g. 10m); default: until Ctrl-C / SIGTERM.
    #[arg(long, value_parser = super::capture::parse_duration)]
    duration: Option<Duration>,
    /// Worker threads serving requests (default: one per CPU). Fewer than the CPUs leaves
    /// room for a load generator or other work on the same machine.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    workers: Option<u16>,
}

/// Runs a mock subcommand.
pub fn run(command: MockCommand) -> Result<ExitCode> {
    match command {
        MockCommand::Serve(args) => {
            let mut rt = tokio::runtime::Builder::new_multi_thread();
            if let Some(n) = args.workers {
                rt.worker_threads(usize::from(n));
            }
            rt.enable_all()
                .build()
                .context("starting the async runtime")?
                .block_on(serve(args))
        }
    }
}

async fn serve(args: ServeArgs) -> Result<ExitCode> {
    let (mappings, mut problems) = match &args.mappings {
        Some(dir) => read_mappings(dir).map_err(|e| anyhow::anyhow!("{e}"))?,
        None => (Vec::new(), Vec::new()),
    };
    let (state, rejected) = MockState::new(mappings);
    problems.extend(rejected);
    for p in &problems {
        eprintln!("skipped {p}");
    }
    if args.strict && !problems.is_empty() {
        bail!("{} mapping(s) invalid and --strict is set", problems.len());
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let local = listener.local_addr()?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let metrics_task = match args.metrics {
        Some(addr) => {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("listening on {addr} for metrics"))?;
            println!("metrics on http://{}/metrics", l.local_addr()?);
            let s = state.clone();
            let mut rx = stop_rx.clone();
            Some(tokio::spawn(apm_mock::http::serve_metrics(
                l,
                move || s.metrics_text(),
                async move {
                    let _ = rx.wait_for(|v| *v).await;
                },
            )))
        }
        None => None,
    };
    println!(
        "serving {} stubs on http://{local} (admin API at /__admin)",
        state.stub_count()
    );
    std::io::stdout().flush()?;
    let s = state.clone();
    apm_mock::http::serve(
        listener,
        move |req| handle(s.clone(), req),
        super::capture::shutdown_signal(args.duration),
        Duration::from_secs(2),
    )
    .await;
    let _ = stop_tx.send(true);
    if let Some(t) = metrics_task {
        let _ = t.await;
    }
    Ok(ExitCode::SUCCESS)
}
