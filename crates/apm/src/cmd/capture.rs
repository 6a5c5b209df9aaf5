//! `apm capture ingest|record|load`: captured traffic → sanitized WireMock mappings → WireMock.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use apm_capture::{
    BodyLimits, FilterConfig, Glob, InputError, InputFormat, Pipeline, PipelineConfig, Report,
    Sanitizer, SanitizerConfig, parse_all,
};
use apm_mock::files::write_mappings;
use apm_mock::load::{LoadConfig, LoadReport, load};
use apm_mock::record::Recorder;
use clap::{Args, Subcommand};

/// Capture subcommands.
#[derive(Subcommand)]
pub enum CaptureCommand {
    /// Read traces (Envoy tap, HAR, JSONL) and write sanitized WireMock mappings.
    ///
    /// The report's `sanitized` counts are of what was sanitized: every request, and the
    /// responses that may be written (a repeated request's response only with --scenarios).
    Ingest(IngestArgs),
    /// Run a recording reverse proxy in front of a service and write mappings when it stops.
    Record(RecordArgs),
    /// Bulk-load a mapping directory into a WireMock (real or `apm mock serve`).
    Load(LoadArgs),
}

/// Filter, sanitizer and dedupe options shared by `ingest` and `record`.
#[derive(Args, Clone)]
pub struct PipelineArgs {
    /// Keep only hosts matching this glob (repeatable; `*` and `?` wildcards).
    #[arg(long = "include-host", value_name = "GLOB")]
    include_hosts: Vec<String>,
    /// Drop hosts matching this glob (repeatable).
    #[arg(long = "exclude-host", value_name = "GLOB")]
    exclude_hosts: Vec<String>,
    /// Keep only paths matching this glob (repeatable).
    #[arg(long = "include-path", value_name = "GLOB")]
    include_paths: Vec<String>,
    /// Drop paths matching this glob (repeatable).
    #[arg(long = "exclude-path", value_name = "GLOB")]
    exclude_paths: Vec<String>,
    /// Keep only these methods (repeatable).
    #[arg(long = "method", value_name = "METHOD")]
    methods: Vec<String>,
    /// Fraction of requests kept (0.0-1.0), deterministic per request.
    #[arg(long, default_value_t = 1.0)]
    sample_rate: f64,
    /// Bodies are cut to this many bytes (after decoding) and marked truncated.
    #[arg(long, default_value_t = 8192)]
    body_limit: usize,
    /// Size of the dedupe LRU.
    #[arg(long, default_value_t = 10_000)]
    dedupe_capacity: usize,
    /// Keep repeats whose response differs as WireMock scenario states (every repeat's
    /// response is then sanitized and counted, to compare it; without this flag it is
    /// dropped unread).
    #[arg(long)]
    scenarios: bool,
    /// Most distinct stubs kept in memory; new requests past it are counted as filtered.
    #[arg(long, default_value_t = 100_000)]
    max_stubs: usize,
    /// TOML file with custom sanitizer patterns (see docs/capture.md).
    #[arg(long, value_name = "FILE")]
    sanitize_config: Option<PathBuf>,
}

impl PipelineArgs {
    fn build(&self) -> Result<Pipeline> {
        let globs = |list: &[String], flag: &str| -> Result<Vec<Glob>> {
            list.iter()
                .map(|g| Glob::new(g).map_err(|e| anyhow::anyhow!("--{flag} '{g}': {e}")))
                .collect()
        };
        let filter = FilterConfig {
            include_hosts: globs(&self.include_hosts, "include-host")?,
            exclude_hosts: globs(&self.exclude_hosts, "exclude-host")?,
            include_paths: globs(&self.include_paths, "include-path")?,
            exclude_paths: globs(&self.exclude_paths, "exclude-path")?,
            methods: self
                .methods
                .iter()
                .map(|m| m.to_ascii_uppercase())
                .collect(),
            sample_rate: self.sample_rate,
        };
        filter
            .validate()
            .map_err(|e| anyhow::anyhow!("--sample-rate: {e}"))?;
        if self.body_limit == 0 {
            bail!("--body-limit must be at least 1 byte");
        }
        let sanitizer = match &self.sanitize_config {
            None => Sanitizer::builtin(),
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                let cfg = SanitizerConfig::from_toml(&text)
                    .with_context(|| format!("in {}", path.display()))?;
                Sanitizer::new(cfg).with_context(|| format!("in {}", path.display()))?
            }
        };
        let config = PipelineConfig {
            filter,
            limits: BodyLimits {
                max_body: self.body_limit,
            },
            dedupe_capacity: self.dedupe_capacity.max(1),
            scenarios: self.scenarios,
            max_stubs: self.max_stubs.max(1),
            ..PipelineConfig::default()
        };
        Ok(Pipeline::new(config, sanitizer))
    }
}

/// `apm capture ingest`.
#[derive(Args)]
pub struct IngestArgs {
    /// Input format: envoy-tap, har or jsonl.
    #[arg(long = "from", value_name = "FORMAT")]
    from: InputFormat,
    /// Input files or directories (directories are read recursively, in name order).
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    /// Output directory; mappings go to OUT/mappings/*.json.
    #[arg(long)]
    out: PathBuf,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    pipeline: PipelineArgs,
}

/// `apm capture record`.
#[derive(Args)]
pub struct RecordArgs {
    /// Address to listen on, e.g. 127.0.0.1:8081 (port 0 picks a free port).
    #[arg(long)]
    listen: SocketAddr,
    /// The service to record, e.g. http://orders.internal:8080.
    #[arg(long)]
    target: String,
    /// PEM file of CA certificates to trust for an https target, in addition to the
    /// system's (a private CA, or the target's self-signed certificate). Certificates are
    /// always verified.
    #[arg(long, value_name = "FILE")]
    target_ca: Option<PathBuf>,
    /// Output directory; mappings go to OUT/mappings/*.json.
    #[arg(long)]
    out: PathBuf,
    /// Stop after this long (e.g. 90s, 15m, 2h); default: until Ctrl-C / SIGTERM.
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Serve Prometheus metrics on this address at /metrics.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<SocketAddr>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    pipeline: PipelineArgs,
}

/// `apm capture load`.
#[derive(Args)]
pub struct LoadArgs {
    /// WireMock base URL, e.g. http://127.0.0.1:8080.
    #[arg(long)]
    wiremock: String,
    /// Mapping directory (DIR/mappings/*.json or DIR/*.json).
    #[arg(long)]
    mappings: PathBuf,
    /// Delete the target's mappings first (after backing them up).
    #[arg(long)]
    replace: bool,
    /// Backup file for the target's current mappings (default DIR/backups/wiremock-mappings-<time>.json).
    #[arg(long)]
    backup: Option<PathBuf>,
    /// Mappings per import request.
    #[arg(long, default_value_t = 100)]
    batch_size: usize,
    /// Attempts per request before giving up (exponential backoff between them).
    #[arg(long, default_value_t = 5)]
    attempts: u32,
    /// Write the loader's Prometheus counters to this file (textfile-collector format).
    #[arg(long, value_name = "FILE")]
    metrics_file: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// Parses `90s`, `15m`, `2h`, `500ms` or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a duration like 90s, 15m or 2h"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("'{s}': unknown unit '{unit}' (use ms, s, m or h)")),
    };
    if !secs.is_finite() || secs <= 0.0 {
        return Err(format!("'{s}' must be a positive duration"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Runs a capture subcommand.
pub fn run(command: CaptureCommand) -> Result<ExitCode> {
    match command {
        CaptureCommand::Ingest(args) => ingest(args),
        CaptureCommand::Record(args) => runtime()?.block_on(record(args)),
        CaptureCommand::Load(args) => runtime()?.block_on(load_cmd(args)),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn collect_files(path: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    if path.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                !p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            })
            .collect();
        entries.sort();
        for e in entries {
            collect_files(&e, out)?;
        }
    } else {
        out.push(path.to_path_buf());
    }
    Ok(())
}

fn ingest(args: IngestArgs) -> Result<ExitCode> {
    let mut pipeline = args.pipeline.build()?;
    let mut files = Vec::new();
    for f in &args.files {
        if !f.exists() {
            bail!("{}: no such file or directory", f.display());
        }
        collect_files(f, &mut files).with_context(|| format!("listing {}", f.display()))?;
    }
    let mut inputs = Vec::new();
    for f in &files {
        match std::fs::read(f) {
            Ok(bytes) => inputs.push((f.display().to_string(), bytes)),
            Err(e) => pipeline.malformed(InputError {
                file: f.display().to_string(),
                position: String::new(),
                message: format!("cannot read: {e}"),
            }),
        }
    }
    let parsed = parse_all(
        args.from,
        inputs.iter().map(|(n, b)| (n.as_str(), b.as_slice())),
    );
    drop(inputs);
    for e in parsed.errors {
        pipeline.malformed(e);
    }
    for ex in parsed.exchanges {
        pipeline.process(ex);
    }
    let mut report = pipeline.report();
    let maps = pipeline.mappings(time::OffsetDateTime::now_utc());
    let written = write_mappings(&args.out, &maps)
        .with_context(|| format!("writing mappings under {}", args.out.display()))?;
    report.written = written as u64;
    print_report(&report, &args.out, args.json)?;
    Ok(ExitCode::SUCCESS)
}

fn print_report(r: &Report, out: &Path, json: bool) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut stdout, r)?;
        writeln!(stdout)?;
        return Ok(());
    }
    writeln!(stdout, "ingested    {}", r.ingested)?;
    writeln!(stdout, "malformed   {}", r.malformed)?;
    for e in &r.errors {
        writeln!(stdout, "  {e}")?;
    }
    let join = |m: &std::collections::BTreeMap<String, u64>| {
        if m.is_empty() {
            "0".to_string()
        } else {
            m.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ")
        }
    };
    writeln!(stdout, "filtered    {}", join(&r.filtered))?;
    writeln!(stdout, "sanitized   {}", join(&r.sanitized))?;
    writeln!(stdout, "duplicates  {}", r.duplicates)?;
    writeln!(stdout, "unique      {}", r.unique)?;
    if r.scenario_states > 0 {
        writeln!(stdout, "scenario states {}", r.scenario_states)?;
    }
    writeln!(
        stdout,
        "written     {} mappings to {}",
        r.written,
        out.join("mappings").display()
    )?;
    Ok(())
}

pub(crate) async fn shutdown_signal(duration: Option<Duration>) {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    let timer = async {
        match duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
        () = timer => {},
    }
}

async fn record(args: RecordArgs) -> Result<ExitCode> {
    let pipeline = args.pipeline.build()?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let local = listener.local_addr()?;
    let ca = match &args.target_ca {
        Some(path) => Some(
            std::fs::read(path)
                .with_context(|| format!("--target-ca {}: reading", path.display()))?,
        ),
        None => None,
    };
    let recorder = Recorder::new(&args.target, pipeline, &local.to_string(), ca.as_deref())
        .map_err(|e| match (&e, &args.target_ca) {
            (apm_mock::record::RecordError::Ca(_), Some(path)) => {
                anyhow::anyhow!("--target-ca {}: {e}", path.display())
            }
            _ => anyhow::anyhow!("--target: {e}"),
        })?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let metrics_task = match args.metrics {
        Some(addr) => {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("listening on {addr} for metrics"))?;
            println!("metrics on http://{}/metrics", l.local_addr()?);
            let r = recorder.clone();
            let mut rx = stop_rx.clone();
            Some(tokio::spawn(apm_mock::http::serve_metrics(
                l,
                move || r.with_pipeline(|p| p.metrics().render()),
                async move {
                    let _ = rx.wait_for(|v| *v).await;
                },
            )))
        }
        None => None,
    };
    println!("recording on http://{local} -> {}", args.target);
    std::io::stdout().flush()?;
    let r = recorder.clone();
    apm_mock::http::serve(
        listener,
        move |req| r.clone().handle(req),
        shutdown_signal(args.duration),
        Duration::from_secs(5),
    )
    .await;
    let _ = stop_tx.send(true);
    if let Some(t) = metrics_task {
        let _ = t.await;
    }
    let (maps, mut report) =
        recorder.with_pipeline(|p| (p.mappings(time::OffsetDateTime::now_utc()), p.report()));
    let written = write_mappings(&args.out, &maps)
        .with_context(|| format!("writing mappings under {}", args.out.display()))?;
    report.written = written as u64;
    print_report(&report, &args.out, args.json)?;
    Ok(ExitCode::SUCCESS)
}

async fn load_cmd(args: LoadArgs) -> Result<ExitCode> {
    let mut cfg = LoadConfig::new(&args.wiremock, &args.mappings);
    cfg.replace = args.replace;
    cfg.batch_size = args.batch_size.max(1);
    cfg.attempts = args.attempts.max(1);
    if let Some(b) = args.backup {
        cfg.backup = b;
    }
    url::Url::parse(&cfg.wiremock).map_err(|e| anyhow::anyhow!("--wiremock: {e}"))?;
    let mut metrics = apm_capture::metrics::Registry::new();
    let result = load(&cfg, &mut metrics).await;
    if let Some(path) = &args.metrics_file {
        apm_mock::files::write_atomic(path, metrics.render().as_bytes())
            .with_context(|| format!("writing metrics to {}", path.display()))?;
    }
    let report = result?;
    print_load_report(&report, args.json)?;
    let ok = report.refused.is_empty() && report.invalid_files.is_empty();
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn print_load_report(r: &LoadReport, json: bool) -> Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, r)?;
        writeln!(out)?;
        return Ok(());
    }
    writeln!(
        out,
        "backup      {} mappings saved to {}",
        r.backed_up,
        r.backup.display()
    )?;
    if r.replaced {
        writeln!(out, "replaced    the target's mappings were deleted first")?;
    }
    writeln!(out, "read        {}", r.read)?;
    for e in &r.invalid_files {
        writeln!(out, "  invalid   {e}")?;
    }
    writeln!(out, "loaded      {} in {} batches", r.loaded, r.batches)?;
    writeln!(out, "retries     {}", r.retries)?;
    writeln!(out, "refused     {}", r.refused.len())?;
    for f in &r.refused {
        writeln!(out, "  {} (HTTP {}): {}", f.file, f.status, f.message)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("3d").is_err());
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("x").is_err());
    }
}
