//! `apm server`: the control plane (HTTP API, web console, agent sync). Settings come from flags, `APM_*`
//! environment variables and an optional TOML file (docs/configuration.md).

use std::process::ExitCode;

use anyhow::Context;

/// Flags of `apm server` (each also read from an `APM_*` variable).
pub type ServerArgs = apm_server::ServerArgs;

/// Runs the server until SIGINT or SIGTERM.
pub fn run(args: ServerArgs) -> anyhow::Result<ExitCode> {
    let settings = args.resolve()?;
    // No transparent huge pages for the server: with 100,000 long-polls its heap is many small
    // objects, and 2 MiB pages partly in use kept ~10% more resident memory (and page-zeroing
    // time) in `apm bench fleet`. Best effort: a kernel without THP has nothing to disable.
    let _ = nix::sys::prctl::set_thp_disable(true);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    // The web console is served by the same listener, in front of the API.
    runtime.block_on(apm_server::serve_with(settings, apm_console::router))?;
    Ok(ExitCode::SUCCESS)
}
