//! `apm bench fleet`: how many agents one control plane serves, and how fast a change reaches
//! them.
//!
//! A run starts the real `apm server` as a child process (SQLite in a temp dir, or a throw-away
//! PostgreSQL), enrolls N simulated agents through the public API, assigns them to a config and
//! lets each run the agent's sync protocol ([`agents`]). It then measures, in one run: plain
//! polling (`wait=0` every interval, the seed's protocol) and long-poll propagation of an
//! approval to every agent, sync latency while the fleet is idle, metric-push ingestion, the
//! server's CPU and peak RSS, every error, and the machine's ceiling (a hello-world server and
//! the sync endpoint under closed-loop load). Output: `result.json`, `result.md`, `propagation.svg`.
//!
//! Every phase has a deadline, so a run always ends by itself; children are stopped by PID.

pub mod admin;
pub mod agents;
pub mod hello;
pub mod metrics;
pub mod net;
pub mod procs;
pub mod report;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::watch;

use crate::agents::{FleetCtx, Identity, Mode, Recorder, Target};
use crate::metrics::{Percentiles, propagation_curve};
use crate::net::{Lane, SharedH2, source_addresses};
use crate::procs::{Managed, Postgres, ServerProcess, ServerSpec, proc_usage};
use crate::report::*;

/// Why a run could not be carried out (measured errors are results, not this).
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A process or file could not be set up.
    #[error("setup: {0}")]
    Setup(String),
    /// An administrative API call failed.
    #[error("API: {0}")]
    Api(String),
    /// I/O.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// Bad options.
    #[error("invalid option: {0}")]
    Options(String),
}

/// Which database the server uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Database {
    /// Embedded SQLite in a temp data dir.
    Sqlite,
    /// A PostgreSQL cluster started for the run.
    Postgres,
}

impl Database {
    /// Name in results.
    pub fn as_str(self) -> &'static str {
        match self {
            Database::Sqlite => "sqlite",
            Database::Postgres => "postgres",
        }
    }
}

/// How simulated agents connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportChoice {
    /// HTTP/1.1 when the descriptor limit allows a connection per lane, else HTTP/2.
    Auto,
    /// Each agent has its own connections (one for sync and acks, one for metric pushes).
    Http1,
    /// Agents share HTTP/2 connections, `n` per connection (each agent's requests are its own
    /// streams, with its own credential).
    H2(usize),
}

/// Options of one run.
#[derive(Debug, Clone)]
pub struct FleetOptions {
    /// Simulated agents.
    pub agents: usize,
    /// Database.
    pub database: Database,
    /// Output directory.
    pub out: PathBuf,
    /// The `apm` executable (`server` and `bench hello` subcommands).
    pub exe: PathBuf,
    /// Long-poll `wait` (the agent's sync interval; 30 s by default).
    pub wait_secs: u64,
    /// Polling interval of the baseline (the seed's 30 s).
    pub poll_interval: Duration,
    /// Seconds between metric pushes of one agent.
    pub stats_interval: Duration,
    /// Minimum seconds over which stats ingestion is measured.
    pub stats_window: Duration,
    /// Skip the polling baseline (its propagation is then reported as empty).
    pub skip_polling: bool,
    /// Longest simulated apply: each agent waits a random time up to this long between
    /// receiving a new bundle and its ACK (and next sync), as the real agent writes the files,
    /// reloads ATS and waits for the reload to be confirmed. Zero: ACK at once.
    pub apply_time: Duration,
    /// Transport.
    pub transport: TransportChoice,
    /// Concurrent enrollments.
    pub enroll_concurrency: usize,
    /// Seconds of each ceiling load (0 = skip).
    pub ceiling_secs: f64,
    /// Requests in flight during the ceiling loads.
    pub ceiling_concurrency: usize,
    /// Seconds of idle-latency probes.
    pub probe_secs: f64,
    /// Server log filter.
    pub server_log_level: String,
    /// Extra `apm server` flags.
    pub server_args: Vec<String>,
    /// Longest wait for all agents to get a new hash after an approval (long-poll phase).
    pub propagation_timeout: Duration,
}

impl FleetOptions {
    /// Defaults for `agents` agents writing to `out`.
    pub fn new(agents: usize, database: Database, out: PathBuf, exe: PathBuf) -> Self {
        FleetOptions {
            agents,
            database,
            out,
            exe,
            wait_secs: 30,
            poll_interval: Duration::from_secs(30),
            stats_interval: Duration::from_secs(30),
            stats_window: Duration::from_secs(60),
            skip_polling: false,
            apply_time: Duration::ZERO,
            transport: TransportChoice::Auto,
            enroll_concurrency: 32,
            ceiling_secs: 5.0,
            ceiling_concurrency: 64,
            probe_secs: 3.0,
            server_log_level: "warn".into(),
            server_args: Vec::new(),
            propagation_timeout: Duration::from_secs(60),
        }
    }

    fn check(&self) -> Result<(), BenchError> {
        if self.agents == 0 {
            return Err(BenchError::Options("--agents must be at least 1".into()));
        }
        if self.agents > 1_000_000 {
            return Err(BenchError::Options("--agents: at most 1000000".into()));
        }
        if self.wait_secs == 0 {
            return Err(BenchError::Options(
                "--wait must be at least 1 second (0 is plain polling, measured separately)".into(),
            ));
        }
        if self.poll_interval.is_zero() || self.stats_interval.is_zero() {
            return Err(BenchError::Options(
                "--poll-interval and --stats-interval must be positive".into(),
            ));
        }
        if let TransportChoice::H2(n) = self.transport
            && !(1..=90).contains(&n)
        {
            return Err(BenchError::Options(
                "--agents-per-connection: 1..=90 (each agent may have 2 streams open; the server allows 200 per connection)".into(),
            ));
        }
        Ok(())
    }
}

fn policy_with_rule(template: &Value, marker: &str) -> Value {
    let mut p = template.clone();
    if let Some(rules) = p.get_mut("rules").and_then(Value::as_array_mut) {
        rules.push(json!({"match": "domain_suffix", "value": format!("{marker}.bench.example"), "action": "direct"}));
    }
    p
}

fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

/// CPU seconds of the server, of this process and of PostgreSQL (if started) at one moment.
struct CpuPair {
    server: f64,
    simulator: f64,
    database: Option<f64>,
}

impl CpuPair {
    fn now(server: &ServerProcess, pg: Option<&Postgres>) -> Self {
        CpuPair {
            server: server_cpu(server),
            simulator: proc_usage(std::process::id())
                .map(|u| u.cpu_secs)
                .unwrap_or(0.0),
            database: pg.map(Postgres::cpu_secs),
        }
    }

    fn since(
        &self,
        server: &ServerProcess,
        pg: Option<&Postgres>,
        started: Instant,
    ) -> DeliveryCpu {
        let end = CpuPair::now(server, pg);
        DeliveryCpu {
            wall_secs: secs(started.elapsed()),
            server_secs: end.server - self.server,
            simulator_secs: end.simulator - self.simulator,
            database_secs: end.database.zip(self.database).map(|(e, b)| e - b),
        }
    }
}

fn server_cpu(server: &ServerProcess) -> f64 {
    proc_usage(server.proc.pid())
        .map(|u| u.cpu_secs)
        .unwrap_or(0.0)
}

/// Waits until `cond` holds or `deadline` passes; true when it held.
async fn wait_until(deadline: Instant, mut cond: impl FnMut() -> bool) -> bool {
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn propagation(rec: &Recorder, phase: usize, t0_us: u64) -> (Vec<f64>, usize) {
    let times: Vec<f64> = rec.received[phase]
        .iter()
        .map(|a| a.load(Ordering::Relaxed))
        .filter(|t| *t > 0)
        .map(|t| t.saturating_sub(t0_us) as f64 / 1000.0)
        .collect();
    let n = times.len();
    (times, n)
}

fn received_count(rec: &Recorder, phase: usize) -> usize {
    rec.received[phase]
        .iter()
        .filter(|a| a.load(Ordering::Relaxed) > 0)
        .count()
}

/// Runs the benchmark and writes `result.json`, `result.md` and `propagation.svg` to `opts.out`.
pub async fn run_fleet(opts: FleetOptions) -> Result<FleetResult, BenchError> {
    opts.check()?;
    let started_wall = Instant::now();
    let started_at_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let load_start = procs::load_avg();
    std::fs::create_dir_all(&opts.out)?;
    let n = opts.agents;
    // Both processes need a descriptor per connection (the server inherits our limit).
    let fd_limit = net::raise_fd_limit(4 * n as u64 + 4096);
    let (h2_per_conn, note) = match opts.transport {
        TransportChoice::Http1 => (None, "chosen: http1".to_string()),
        TransportChoice::H2(k) => (Some(k), format!("chosen: h2, {k} agents per connection")),
        TransportChoice::Auto => {
            if (2 * n as u64) + 2048 <= fd_limit.0 {
                (
                    None,
                    "auto: a connection per agent lane fits the descriptor limit".into(),
                )
            } else {
                (
                    Some(64),
                    format!(
                        "auto: {n} agents × 2 connections exceed RLIMIT_NOFILE {} (hard limit, no CAP_SYS_RESOURCE to raise it), so agents share HTTP/2 connections",
                        fd_limit.0
                    ),
                )
            }
        }
    };
    if h2_per_conn.is_none() && (2 * n as u64) + 1024 > fd_limit.0 {
        return Err(BenchError::Options(format!(
            "--transport http1 needs {} descriptors per process, RLIMIT_NOFILE is {}; use --transport h2",
            2 * n + 1024,
            fd_limit.0
        )));
    }
    let h2 = h2_per_conn.is_some();
    let sources = source_addresses(if h2 {
        8
    } else {
        (2 * n).div_ceil(20_000).max(4) + 1
    });

    // The server under test.
    let work = tempfile::Builder::new().prefix("apm-bench-").tempdir()?;
    let pool = opts
        .server_args
        .iter()
        .position(|a| a == "--database-max-connections")
        .and_then(|i| opts.server_args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(10u32);
    let pg = match opts.database {
        Database::Postgres => Some(Postgres::start(pool + 20)?),
        Database::Sqlite => None,
    };
    let pg_url = pg.as_ref().map(Postgres::url);
    let password = format!("bench-{}", rand::random::<u64>());
    // The admin session idles while thousands of agents enroll and settle; the server's
    // 2-minute idle timeout would end it mid-run.
    let mut server_args = opts.server_args.clone();
    for (flag, value) in [
        ("--session-idle-timeout-secs", "86400"),
        ("--session-max-lifetime-secs", "86400"),
    ] {
        if !server_args.iter().any(|a| a == flag) {
            server_args.extend([flag.to_string(), value.to_string()]);
        }
    }
    let t = Instant::now();
    let server = ServerProcess::start(ServerSpec {
        exe: &opts.exe,
        data_dir: &work.path().join("data"),
        database_url: pg_url.as_deref(),
        root_password: &password,
        log_level: &opts.server_log_level,
        extra_args: &server_args,
        log_path: opts.out.join("server.log"),
    })
    .await?;
    let server_start_secs = secs(t.elapsed());
    let addr = server.addr;
    eprintln!(
        "apm bench: server pid {} on {addr} ({}), {} agents over {}",
        server.proc.pid(),
        opts.database.as_str(),
        n,
        if h2 { "HTTP/2" } else { "HTTP/1.1" }
    );

    let mut admin = admin::Admin::login(addr, &password).await?;
    let enroll_token = admin.enrollment_token().await?;
    let template = admin.template().await?;

    // Enrollment, as agents do it: one request each, a few at a time.
    let t = Instant::now();
    let mut identities: Vec<Option<Identity>> = vec![None; n];
    {
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for w in 0..opts.enroll_concurrency.clamp(1, 256) {
            let next = next.clone();
            let token = enroll_token.clone();
            let src = sources[w % sources.len()];
            tasks.push(tokio::spawn(async move {
                let mut lane = Lane::h1(addr, src);
                let mut out = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        return Ok::<_, BenchError>(out);
                    }
                    let hostname = format!("bench-agent-{i:06}");
                    let (tok, pid) = admin::enroll(&mut lane, addr, &token, &hostname).await?;
                    out.push((
                        i,
                        Identity {
                            hostname,
                            token: tok,
                            proxy_id: pid,
                        },
                    ));
                }
            }));
        }
        for task in tasks {
            let done = task
                .await
                .map_err(|e| BenchError::Setup(format!("enrollment task: {e}")))??;
            for (i, id) in done {
                identities[i] = Some(id);
            }
        }
    }
    let identities: Vec<Arc<Identity>> = identities
        .into_iter()
        .map(|i| {
            i.map(Arc::new)
                .ok_or_else(|| BenchError::Setup("an agent was not enrolled".into()))
        })
        .collect::<Result<_, _>>()?;
    let enroll_secs = secs(t.elapsed());
    eprintln!("apm bench: enrolled {n} agents in {enroll_secs:.1} s");

    let config_id = admin
        .create_config(
            &format!("bench-{}", rand::random::<u32>()),
            &policy_with_rule(&template, "v1"),
        )
        .await?;
    admin.submit(&config_id).await?;
    admin.approve(&config_id).await?;
    let t = Instant::now();
    let proxy_ids: Vec<String> = identities.iter().map(|i| i.proxy_id.clone()).collect();
    admin.assign(&config_id, &proxy_ids).await?;
    let assign_secs = secs(t.elapsed());

    // The fleet.
    let rec = Recorder::new(n, 2);
    let first_mode = if opts.skip_polling {
        Mode::LongPoll {
            wait: opts.wait_secs,
        }
    } else {
        Mode::Polling {
            interval: opts.poll_interval,
        }
    };
    let (mode_tx, mode_rx) = watch::channel(first_mode);
    let ctx = Arc::new(FleetCtx {
        server: addr,
        h2,
        mode: mode_rx,
        rec: rec.clone(),
        stats_interval: opts.stats_interval,
        ats_version: "9.2.5",
        apply_time: opts.apply_time,
    });
    let mut shared: Vec<Arc<SharedH2>> = Vec::new();
    let mut handles = Vec::with_capacity(2 * n);
    let fleet_start = rec.now_us();
    rec.stats_window_start.store(
        fleet_start + opts.stats_interval.as_micros() as u64,
        Ordering::Relaxed,
    );
    for (i, id) in identities.iter().enumerate() {
        let (sync_lane, stats_lane) = match h2_per_conn {
            Some(k) => {
                if i % k == 0 {
                    shared.push(SharedH2::new(addr, sources[shared.len() % sources.len()]));
                }
                let c = shared[shared.len() - 1].clone();
                (Lane::H2(c.clone()), Lane::H2(c))
            }
            None => (
                Lane::h1(addr, sources[(2 * i) % sources.len()]),
                Lane::h1(addr, sources[(2 * i + 1) % sources.len()]),
            ),
        };
        handles.push(tokio::spawn(agents::sync_loop(
            ctx.clone(),
            i,
            id.clone(),
            sync_lane,
        )));
        handles.push(tokio::spawn(agents::stats_loop(
            ctx.clone(),
            i,
            id.clone(),
            stats_lane,
        )));
    }

    // Phase 1: the seed's plain polling.
    let mut polling = Phase {
        wait_secs: 0,
        interval_secs: secs(opts.poll_interval),
        ..Phase::default()
    };
    let mut v = 1;
    if !opts.skip_polling {
        let phase_start = Instant::now();
        let cpu0 = server_cpu(&server);
        // Settle: every agent has polled once (and so runs v1).
        let settle_deadline = Instant::now() + opts.poll_interval * 2 + Duration::from_secs(30);
        tokio::time::sleep(opts.poll_interval).await;
        wait_until(settle_deadline, || {
            rec.acks_ok.load(Ordering::Relaxed) as usize >= n
        })
        .await;
        polling.settle_secs = secs(phase_start.elapsed());
        polling.apply_time_ms = opts.apply_time.as_secs_f64() * 1000.0;
        v += 1;
        let hash = admin
            .edit_policy(&config_id, &policy_with_rule(&template, &format!("v{v}")))
            .await?;
        admin.submit(&config_id).await?;
        *rec.target.write().unwrap_or_else(|p| p.into_inner()) = Target {
            phase: 0,
            hash: Some(hash),
        };
        let t0 = rec.now_us();
        let t = Instant::now();
        let cpu_at_approve = CpuPair::now(&server, pg.as_ref());
        admin.approve(&config_id).await?;
        polling.approve_ms = t.elapsed().as_secs_f64() * 1000.0;
        let deadline = t + opts.poll_interval + Duration::from_secs(30);
        wait_until(deadline, || received_count(&rec, 0) >= n).await;
        polling.delivery_cpu = cpu_at_approve.since(&server, pg.as_ref(), t);
        let (times, received) = propagation(&rec, 0, t0);
        polling.received = received;
        polling.missing = n - received;
        polling.propagation_ms = Percentiles::of(&times);
        polling.curve = propagation_curve(&times, n, 400);
        polling.server_cpu_secs = server_cpu(&server) - cpu0;
        polling.duration_secs = secs(phase_start.elapsed());
        eprintln!(
            "apm bench: polling every {:?}: {received}/{n} agents got the new hash, p99 {:.0} ms",
            opts.poll_interval, polling.propagation_ms.p99
        );
        let _ = mode_tx.send(Mode::LongPoll {
            wait: opts.wait_secs,
        });
    }
    let polling_latency = rec.poll_latency().percentiles();

    // Phase 2: long-poll.
    let mut long_poll = Phase {
        wait_secs: opts.wait_secs,
        interval_secs: opts.wait_secs as f64,
        ..Phase::default()
    };
    let phase_start = Instant::now();
    let cpu0 = server_cpu(&server);
    let settle_deadline = Instant::now() + Duration::from_secs(120);
    let mut held_since: Option<Instant> = None;
    wait_until(settle_deadline, || {
        if rec.inflight_long_polls.load(Ordering::Relaxed) >= n {
            let since = *held_since.get_or_insert_with(Instant::now);
            since.elapsed() >= Duration::from_secs(1)
        } else {
            held_since = None;
            false
        }
    })
    .await;
    let waiting_before_approval = admin.waiting().await.ok().flatten();
    // Idle sync latency: wait=0 requests with agents' credentials while the fleet long-polls.
    let current_hash = rec
        .target
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .hash
        .clone();
    let idle = if opts.probe_secs > 0.0 {
        let ids = identities.clone();
        let hash = current_hash.clone();
        let make: Arc<dyn Fn(usize) -> (String, Option<String>) + Send + Sync> =
            Arc::new(move |i| {
                let id = &ids[(i * 7919) % ids.len()];
                (
                    agents::sync_path(&id.hostname, hash.as_deref(), 0, "9.2.5"),
                    Some(id.token.clone()),
                )
            });
        let r = hello::closed_loop(addr, 4, opts.probe_secs, make).await;
        rec.errors_n("idle probe", r.failed, || {
            r.example.clone().unwrap_or_default()
        });
        r.latency
    } else {
        Percentiles::default()
    };
    long_poll.settle_secs = secs(phase_start.elapsed());
    long_poll.apply_time_ms = opts.apply_time.as_secs_f64() * 1000.0;
    v += 1;
    let hash = admin
        .edit_policy(&config_id, &policy_with_rule(&template, &format!("v{v}")))
        .await?;
    admin.submit(&config_id).await?;
    *rec.target.write().unwrap_or_else(|p| p.into_inner()) = Target {
        phase: 1,
        hash: Some(hash.clone()),
    };
    let t0 = rec.now_us();
    let t = Instant::now();
    let cpu_at_approve = CpuPair::now(&server, pg.as_ref());
    eprintln!("apm bench: long-poll: approving version {v}");
    admin.approve(&config_id).await?;
    long_poll.approve_ms = t.elapsed().as_secs_f64() * 1000.0;
    wait_until(t + opts.propagation_timeout, || {
        received_count(&rec, 1) >= n
    })
    .await;
    long_poll.delivery_cpu = cpu_at_approve.since(&server, pg.as_ref(), t);
    let (times, received) = propagation(&rec, 1, t0);
    long_poll.received = received;
    long_poll.missing = n - received;
    long_poll.propagation_ms = Percentiles::of(&times);
    long_poll.curve = propagation_curve(&times, n, 400);
    eprintln!(
        "apm bench: long-poll: {received}/{n} agents got the new hash, p99 {:.0} ms",
        long_poll.propagation_ms.p99
    );

    // Keep the fleet running until the stats window is long enough.
    let window_start = rec.stats_window_start.load(Ordering::Relaxed);
    let min_end = window_start + opts.stats_window.as_micros() as u64;
    while rec.now_us() < min_end {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    long_poll.server_cpu_secs = server_cpu(&server) - cpu0;
    long_poll.duration_secs = secs(phase_start.elapsed());
    let stop_us = rec.now_us();
    let _ = mode_tx.send(Mode::Stop);
    for h in handles {
        let _ = tokio::time::timeout(Duration::from_secs(10), h).await;
    }
    drop(shared);
    let window_secs = (stop_us.saturating_sub(window_start)) as f64 / 1e6;
    let in_window = rec.pushes_ok_in_window.load(Ordering::Relaxed) as f64;
    let offered = n as f64 / opts.stats_interval.as_secs_f64();
    let ingested = if window_secs > 0.0 {
        in_window / window_secs
    } else {
        0.0
    };
    let usage_before_ceiling = proc_usage(server.proc.pid()).unwrap_or_default();

    // The ceiling: the same client against a hello-world server and the sync endpoint.
    let mut ceiling = Ceiling {
        concurrency: opts.ceiling_concurrency,
        secs: opts.ceiling_secs,
        ..Ceiling::default()
    };
    if opts.ceiling_secs > 0.0 {
        let port = procs::free_port()?;
        let hello_addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let mut cmd = std::process::Command::new(&opts.exe);
        cmd.args(["bench", "hello", "--listen", &hello_addr.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let mut hello_proc = Managed::spawn(cmd, "hello-world server")?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(hello_addr).await.is_err() {
            hello_proc.check_alive()?;
            if Instant::now() > deadline {
                return Err(BenchError::Setup("hello-world server did not start".into()));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let r = hello::closed_loop(
            hello_addr,
            opts.ceiling_concurrency,
            opts.ceiling_secs,
            Arc::new(|_| ("/".to_string(), None)),
        )
        .await;
        hello_proc.stop(Duration::from_secs(2));
        rec.errors_n("ceiling: hello", r.failed, || {
            r.example.clone().unwrap_or_default()
        });
        ceiling.hello_rps = r.rps;
        ceiling.hello_latency_ms = r.latency;
        let ids = identities.clone();
        let h = Some(hash.clone());
        let r = hello::closed_loop(
            addr,
            opts.ceiling_concurrency,
            opts.ceiling_secs,
            Arc::new(move |i| {
                let id = &ids[i % ids.len()];
                (
                    agents::sync_path(&id.hostname, h.as_deref(), 0, "9.2.5"),
                    Some(id.token.clone()),
                )
            }),
        )
        .await;
        ceiling.sync_rps = r.rps;
        ceiling.sync_latency_ms = r.latency;
        rec.errors_n("ceiling: sync", r.failed, || {
            r.example.clone().unwrap_or_default()
        });
    }

    let server_metrics = admin
        .metrics_text()
        .await
        .ok()
        .flatten()
        .unwrap_or_default();
    let rolled_up_pushes =
        admin::sample(&server_metrics, "apm_stats_pushes_rolled_up_total").map(|f| f as u64);
    let rollup_last_run_secs = admin::sample(&server_metrics, "apm_stats_rollup_last_run_seconds");
    let rollup_busy_secs =
        admin::sample(&server_metrics, "apm_stats_rollup_busy_microseconds_total")
            .map(|us| us / 1e6);
    let end_usage = proc_usage(server.proc.pid()).unwrap_or_default();
    let db_cpu = pg.as_ref().map(Postgres::cpu_secs);
    let mut server = server;
    server.proc.stop(Duration::from_secs(10));
    let db_url = pg_url.clone().unwrap_or_else(|| {
        format!(
            "sqlite://{}",
            work.path().join("data").join("apm.db").display()
        )
    });
    let (rows_in_database, pending_rollup_in_database, pending_closed_buckets_in_database) =
        match count_rows(&db_url).await {
            Some((all, pending, closed)) => (Some(all), Some(pending), Some(closed)),
            None => (None, None, None),
        };
    drop(pg);

    for e in &admin.retried {
        rec.error("admin: retried", || e.clone());
    }
    let stats_latency = rec.stats_latency();
    let result = FleetResult {
        agents: n,
        database: opts.database.as_str().to_string(),
        errors: rec.error_count.load(Ordering::Relaxed),
        error_kinds: rec.errors(),
        propagation_ms: PropagationPair {
            long_poll: long_poll.propagation_ms,
            polling: polling.propagation_ms,
        },
        long_poll,
        polling,
        idle_sync_latency_ms: idle,
        polling_sync_latency_ms: polling_latency,
        stats: StatsResult {
            interval_secs: secs(opts.stats_interval),
            metrics_per_push: agents::METRICS.len(),
            offered_pushes_per_sec: offered,
            ingested_pushes_per_sec: ingested,
            ingested_samples_per_sec: ingested * agents::METRICS.len() as f64,
            pushes_ok: rec.pushes_ok.load(Ordering::Relaxed),
            pushes_failed: rec.pushes_failed.load(Ordering::Relaxed),
            latency_ms: stats_latency.percentiles(),
            window_secs,
            rows_in_database,
            pending_rollup_in_database,
            pending_closed_buckets_in_database,
            rolled_up_pushes,
            rollup_last_run_secs,
            rollup_busy_secs,
            keeping_up_ratio: if offered > 0.0 {
                ingested / offered
            } else {
                0.0
            },
        },
        server: ServerUsage {
            pid: server.proc.pid(),
            cpu_secs: usage_before_ceiling.cpu_secs,
            peak_rss_mib: end_usage.hwm_kib as f64 / 1024.0,
            end_rss_mib: usage_before_ceiling.rss_kib as f64 / 1024.0,
            waiting_before_approval,
            database_cpu_secs: db_cpu,
        },
        ceiling,
        setup: Setup {
            enroll_secs,
            enroll_per_sec: n as f64 / enroll_secs.max(1e-9),
            assign_secs,
            server_start_secs,
        },
        transport: Transport {
            mode: if h2 { "h2".into() } else { "http1".into() },
            agents_per_connection: h2_per_conn.unwrap_or(1),
            source_addresses: sources.len(),
            fd_limit,
            note,
        },
        machine: Machine {
            cores: std::thread::available_parallelism()
                .map(|c| c.get())
                .unwrap_or(0),
            load_avg_start: load_start,
            load_avg_end: procs::load_avg(),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_string(),
            build: if cfg!(debug_assertions) {
                "debug".into()
            } else {
                "release".into()
            },
        },
        duration_secs: secs(started_wall.elapsed()),
        started_at_unix,
    };
    write_outputs(&opts.out, &result)?;
    Ok(result)
}

/// Pushes stored, those not rolled up yet, and of those the ones in 5-minute buckets that had
/// closed (the server folds a large fleet's current bucket only once it closes), read from the
/// database after the run.
async fn count_rows(url: &str) -> Option<(u64, u64, u64)> {
    sqlx::any::install_default_drivers();
    let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(url)
        .await
        .ok()?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_millis() as i64;
    let open_bucket = now - now.rem_euclid(5 * 60 * 1000);
    // Not folded yet: pending (`rolled = 0`), or awaiting the roll-up's walk (`rolled = 2`)
    // and not passed by its frontier (a bucket and a proxy id).
    let (all, pending, closed): (i64, i64, i64) = sqlx::query_as(
        "SELECT COUNT(*), CAST(COALESCE(SUM(u), 0) AS BIGINT),
                CAST(COALESCE(SUM(CASE WHEN ts < $1 THEN u ELSE 0 END), 0) AS BIGINT)
         FROM (SELECT s.ts, CASE WHEN s.rolled = 0 OR (s.rolled = 2 AND (f.bucket IS NULL
                        OR s.ts >= f.bucket + 300000
                        OR (s.ts >= f.bucket AND s.proxy_id > f.after_proxy))) THEN 1 ELSE 0 END AS u
               FROM stats_push s LEFT JOIN stats_fold_frontier f ON f.id = 1) p",
    )
    .bind(open_bucket)
    .fetch_one(&mut conn)
    .await
    .ok()?;
    Some((all as u64, pending as u64, closed as u64))
}

/// Writes `result.json`, `result.md` and `propagation.svg`.
pub fn write_outputs(dir: &Path, r: &FleetResult) -> Result<(), BenchError> {
    let json = serde_json::to_string_pretty(r)
        .map_err(|e| BenchError::Setup(format!("serialising the result: {e}")))?;
    write_atomic(&dir.join("result.json"), json.as_bytes())?;
    write_atomic(&dir.join("result.md"), report::markdown(r).as_bytes())?;
    write_atomic(&dir.join("propagation.svg"), report::svg(r).as_bytes())?;
    Ok(())
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), BenchError> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_checked() {
        let mut o = FleetOptions::new(0, Database::Sqlite, "x".into(), "apm".into());
        assert!(o.check().is_err());
        o.agents = 10;
        assert!(o.check().is_ok());
        o.transport = TransportChoice::H2(500);
        assert!(o.check().is_err());
        o.transport = TransportChoice::Auto;
        o.wait_secs = 0;
        assert!(o.check().is_err());
    }

    #[test]
    fn each_version_changes_the_policy() {
        let t = json!({"rules": [{"match": "ip", "value": "10.0.0.0/8", "action": "direct"}]});
        let a = policy_with_rule(&t, "v2");
        let b = policy_with_rule(&t, "v3");
        assert_ne!(a, b);
        assert_eq!(a["rules"].as_array().map(Vec::len), Some(2));
    }
}
