//! Simulated agents: each runs the agent's sync protocol against the real server — sync with
//! the hash it runs (long-poll `wait=N`, or plain polling `wait=0` every interval), ACK every new
//! bundle, push a metrics sample every interval — without ATS. Everything they observe is
//! recorded in [`Recorder`]; every failure is counted by kind, none is dropped.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use hyper::{Method, StatusCode};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::watch;

use crate::metrics::Reservoir;
use crate::net::{Lane, NetError, enc, request};
use crate::report::ErrorKind;

/// The metric names a real agent pushes (`traffic_ctl metric get`), one sample each per push.
pub const METRICS: &[&str] = &[
    "proxy.process.http.current_client_connections",
    "proxy.process.http.total_client_connections",
    "proxy.process.http.current_active_client_connections",
    "proxy.process.http.current_server_connections",
    "proxy.process.http.current_parent_proxy_connections",
    "proxy.process.http.total_parent_proxy_connections",
    "proxy.process.http.incoming_requests",
    "proxy.process.http.completed_requests",
    "proxy.process.cache.ram_cache.hits",
    "proxy.process.cache.ram_cache.misses",
    "proxy.process.http.cache_hit_fresh",
    "proxy.process.http.cache_miss_cold",
    "proxy.process.http.err_connect_fail_count_stat",
    "proxy.process.http.4xx_responses",
    "proxy.process.http.5xx_responses",
];

/// What the fleet is doing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// Plain polling: `wait=0` every interval.
    Polling {
        /// Seconds between polls.
        interval: Duration,
    },
    /// Long-poll: `wait=N` (the agent's sync interval), again at once after each answer.
    LongPoll {
        /// Seconds the server may hold the request.
        wait: u64,
    },
    /// Stop everything.
    Stop,
}

/// One enrolled agent.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Hostname.
    pub hostname: String,
    /// Agent credential.
    pub token: String,
    /// Proxy id.
    pub proxy_id: String,
}

/// The hash a phase waits for, and where receipts go.
#[derive(Debug, Clone, Default)]
pub struct Target {
    /// Phase index into [`Recorder::received`].
    pub phase: usize,
    /// The awaited hash.
    pub hash: Option<String>,
}

const SHARDS: usize = 64;

/// Everything agents observe.
pub struct Recorder {
    /// Start of the run (all times are microseconds since).
    pub epoch: Instant,
    /// Per phase, per agent: when the target hash arrived (µs since epoch, 0 = not yet).
    pub received: Vec<Vec<AtomicU64>>,
    /// The currently awaited hash.
    pub target: RwLock<Target>,
    /// Errors by kind.
    errors: Mutex<BTreeMap<String, ErrorKind>>,
    /// Total errors.
    pub error_count: AtomicU64,
    /// wait=0 poll latency (ms), sharded.
    poll_latency: Vec<Mutex<Reservoir>>,
    /// Stats push latency (ms), sharded.
    stats_latency: Vec<Mutex<Reservoir>>,
    /// Successful pushes.
    pub pushes_ok: AtomicU64,
    /// Successful pushes sent at or after `stats_window_start`.
    pub pushes_ok_in_window: AtomicU64,
    /// Failed pushes.
    pub pushes_failed: AtomicU64,
    /// µs since epoch from which pushes count for the ingestion rate (u64::MAX = not yet).
    pub stats_window_start: AtomicU64,
    /// Long-polls currently in flight that carry the agent's current hash.
    pub inflight_long_polls: AtomicUsize,
    /// Bundles received.
    pub bundles: AtomicU64,
    /// Acks answered 200.
    pub acks_ok: AtomicU64,
}

impl Recorder {
    /// A recorder for `agents` agents and `phases` propagation phases.
    pub fn new(agents: usize, phases: usize) -> Arc<Recorder> {
        Arc::new(Recorder {
            epoch: Instant::now(),
            received: (0..phases)
                .map(|_| (0..agents).map(|_| AtomicU64::new(0)).collect())
                .collect(),
            target: RwLock::new(Target::default()),
            errors: Mutex::new(BTreeMap::new()),
            error_count: AtomicU64::new(0),
            poll_latency: (0..SHARDS)
                .map(|_| Mutex::new(Reservoir::new(20_000)))
                .collect(),
            stats_latency: (0..SHARDS)
                .map(|_| Mutex::new(Reservoir::new(20_000)))
                .collect(),
            pushes_ok: AtomicU64::new(0),
            pushes_ok_in_window: AtomicU64::new(0),
            pushes_failed: AtomicU64::new(0),
            stats_window_start: AtomicU64::new(u64::MAX),
            inflight_long_polls: AtomicUsize::new(0),
            bundles: AtomicU64::new(0),
            acks_ok: AtomicU64::new(0),
        })
    }

    /// µs since the epoch.
    pub fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    /// Counts an error of `kind`, keeping the first message as the example.
    pub fn error(&self, kind: &str, message: impl FnOnce() -> String) {
        self.errors_n(kind, 1, message);
    }

    /// Counts `n` errors of `kind` at once.
    pub fn errors_n(&self, kind: &str, n: u64, message: impl FnOnce() -> String) {
        if n == 0 {
            return;
        }
        self.error_count.fetch_add(n, Ordering::Relaxed);
        let mut map = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        let e = map.entry(kind.to_string()).or_default();
        if e.count == 0 {
            e.example = message().chars().take(300).collect();
        }
        e.count += n;
    }

    /// A copy of the errors so far.
    pub fn errors(&self) -> BTreeMap<String, ErrorKind> {
        self.errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn record_poll_latency(&self, agent: usize, ms: f64) {
        self.poll_latency[agent % SHARDS]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .record(ms);
    }

    /// Merged wait=0 poll latencies.
    pub fn poll_latency(&self) -> Reservoir {
        merged(&self.poll_latency)
    }

    /// Merged stats push latencies.
    pub fn stats_latency(&self) -> Reservoir {
        merged(&self.stats_latency)
    }

    fn note_hash(&self, agent: usize, hash: &str) {
        let t = self.target.read().unwrap_or_else(|p| p.into_inner());
        if t.hash.as_deref() == Some(hash)
            && let Some(slot) = self.received.get(t.phase).and_then(|v| v.get(agent))
        {
            let _ = slot.compare_exchange(
                0,
                self.now_us().max(1),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }
}

fn merged(shards: &[Mutex<Reservoir>]) -> Reservoir {
    let mut all = Reservoir::new(200_000);
    for s in shards {
        all.merge(&s.lock().unwrap_or_else(|p| p.into_inner()));
    }
    all
}

/// The part of a sync answer an agent looks at (files are skipped without being built).
#[derive(Deserialize)]
struct SyncAnswer {
    status: String,
    hash: Option<String>,
}

/// Shared settings of every agent task.
pub struct FleetCtx {
    /// Server.
    pub server: SocketAddr,
    /// HTTP/2 (absolute URIs) or HTTP/1.1.
    pub h2: bool,
    /// What to do.
    pub mode: watch::Receiver<Mode>,
    /// Observations.
    pub rec: Arc<Recorder>,
    /// Seconds between metric pushes.
    pub stats_interval: Duration,
    /// ATS version the agents report (picks the rendering).
    pub ats_version: &'static str,
    /// Longest simulated apply before an ACK (uniformly random up to it).
    pub apply_time: Duration,
}

/// The sync path of one agent's request.
pub fn sync_path(hostname: &str, hash: Option<&str>, wait: u64, ats_version: &str) -> String {
    format!(
        "/api/v1/sync?hostname={}&hash={}&wait={wait}&ats_version={}&os=linux&arch=x86_64",
        enc(hostname),
        hash.map(enc).unwrap_or_default(),
        enc(ats_version)
    )
}

fn status_error(rec: &Recorder, what: &str, status: StatusCode, body: &[u8]) {
    rec.error(&format!("{what}: HTTP {}", status.as_u16()), || {
        String::from_utf8_lossy(body).into_owned()
    });
}

fn net_error(rec: &Recorder, what: &str, e: &NetError) {
    rec.error(&format!("{what}: {}", e.kind()), || e.to_string());
}

/// Runs one agent's sync loop until [`Mode::Stop`].
pub async fn sync_loop(ctx: Arc<FleetCtx>, index: usize, id: Arc<Identity>, mut lane: Lane) {
    let rec = &ctx.rec;
    let mut mode_rx = ctx.mode.clone();
    let mut hash: Option<String> = None;
    // Polling agents spread evenly over the interval, as a real fleet started at random times.
    let phase_offset = rand::random_range(0.0..1.0_f64);
    let mut next_poll: Option<tokio::time::Instant> = None;
    loop {
        let mode = *mode_rx.borrow_and_update();
        let wait = match mode {
            Mode::Stop => return,
            Mode::Polling { interval } => {
                let at = *next_poll.get_or_insert_with(|| {
                    tokio::time::Instant::now() + interval.mul_f64(phase_offset)
                });
                tokio::select! {
                    _ = tokio::time::sleep_until(at) => {}
                    _ = mode_rx.changed() => { next_poll = None; continue; }
                }
                next_poll = Some(at + interval);
                0
            }
            Mode::LongPoll { wait } => {
                next_poll = None;
                wait
            }
        };
        let path = sync_path(&id.hostname, hash.as_deref(), wait, ctx.ats_version);
        let req = request(
            Method::GET,
            ctx.server,
            &path,
            Some(&id.token),
            None,
            ctx.h2,
        );
        let started = Instant::now();
        let long = wait > 0 && hash.is_some();
        if long {
            rec.inflight_long_polls.fetch_add(1, Ordering::Relaxed);
        }
        let timeout = Duration::from_secs(wait + 30);
        let result = tokio::select! {
            r = lane.send(req, timeout) => Some(r),
            _ = stopped(&mut mode_rx) => None,
        };
        if long {
            rec.inflight_long_polls.fetch_sub(1, Ordering::Relaxed);
        }
        let Some(result) = result else { return };
        let (status, body) = match result {
            Ok(r) => r,
            Err(e) => {
                net_error(rec, "sync", &e);
                backoff(&mut mode_rx).await;
                continue;
            }
        };
        if wait == 0 {
            rec.record_poll_latency(index, started.elapsed().as_secs_f64() * 1000.0);
        }
        if status != StatusCode::OK {
            status_error(rec, "sync", status, &body);
            backoff(&mut mode_rx).await;
            continue;
        }
        let answer: SyncAnswer = match serde_json::from_slice(&body) {
            Ok(a) => a,
            Err(e) => {
                rec.error("sync: unreadable answer", || e.to_string());
                backoff(&mut mode_rx).await;
                continue;
            }
        };
        match (answer.status.as_str(), answer.hash) {
            ("bundle", Some(new)) => {
                rec.note_hash(index, &new);
                rec.bundles.fetch_add(1, Ordering::Relaxed);
                if !ctx.apply_time.is_zero() {
                    pause(
                        &mut mode_rx,
                        ctx.apply_time.mul_f64(rand::random_range(0.0..1.0_f64)),
                    )
                    .await;
                }
                let body = json!({"hostname": id.hostname, "hash": new, "status": "ok"});
                let req = request(
                    Method::POST,
                    ctx.server,
                    "/api/v1/sync/ack",
                    Some(&id.token),
                    Some(body.to_string().into_bytes()),
                    ctx.h2,
                );
                match lane.send(req, Duration::from_secs(30)).await {
                    Ok((StatusCode::OK, _)) => {
                        rec.acks_ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok((status, body)) => status_error(rec, "ack", status, &body),
                    Err(e) => net_error(rec, "ack", &e),
                }
                hash = Some(new);
            }
            ("unchanged", h) => {
                if h.is_some() && h != hash {
                    rec.error("sync: unchanged answer names another hash", || {
                        format!("agent runs {hash:?}, server says unchanged with {h:?}")
                    });
                }
                // The real agent pauses when an unchanged answer came back quickly (so a server
                // that does not hold requests is not hammered).
                if wait > 0 && started.elapsed() < Duration::from_secs(1) {
                    pause(&mut mode_rx, Duration::from_secs(wait)).await;
                }
            }
            (other, _) => {
                rec.error(&format!("sync: status {other}"), || {
                    String::from_utf8_lossy(&body).into_owned()
                });
                backoff(&mut mode_rx).await;
            }
        }
    }
}

/// Resolves when the mode becomes Stop (or the sender is gone).
async fn stopped(rx: &mut watch::Receiver<Mode>) {
    loop {
        if *rx.borrow() == Mode::Stop || rx.changed().await.is_err() {
            return;
        }
    }
}

async fn pause(rx: &mut watch::Receiver<Mode>, d: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = rx.changed() => {}
    }
}

/// After an error: wait a little before retrying (bounded: the benchmark wants to see every
/// error, not to hide the server's state behind the agent's 30 s → 180 s backoff).
async fn backoff(rx: &mut watch::Receiver<Mode>) {
    let ms = rand::random_range(500..1500);
    pause(rx, Duration::from_millis(ms)).await;
}

/// Pushes a metrics sample every interval until [`Mode::Stop`].
pub async fn stats_loop(ctx: Arc<FleetCtx>, index: usize, id: Arc<Identity>, mut lane: Lane) {
    let rec = &ctx.rec;
    let mut mode_rx = ctx.mode.clone();
    let first = ctx.stats_interval.mul_f64(rand::random_range(0.0..1.0_f64));
    let mut next = tokio::time::Instant::now() + first;
    let mut counter = 0u64;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            _ = stopped(&mut mode_rx) => return,
        }
        next += ctx.stats_interval;
        counter += 1;
        let metrics: BTreeMap<&str, f64> = METRICS
            .iter()
            .enumerate()
            .map(|(k, m)| (*m, (counter * 10 + k as u64) as f64))
            .collect();
        let body = json!({
            "hostname": id.hostname,
            "timestamp": (std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0))
            .to_string(),
            "metrics": metrics,
        });
        let req = request(
            Method::POST,
            ctx.server,
            "/api/v1/sync/stats",
            Some(&id.token),
            Some(body.to_string().into_bytes()),
            ctx.h2,
        );
        let sent_us = rec.now_us();
        let started = Instant::now();
        let result = tokio::select! {
            r = lane.send(req, Duration::from_secs(60)) => r,
            _ = stopped(&mut mode_rx) => return,
        };
        match result {
            Ok((StatusCode::OK, _)) => {
                rec.pushes_ok.fetch_add(1, Ordering::Relaxed);
                if sent_us >= rec.stats_window_start.load(Ordering::Relaxed) {
                    rec.pushes_ok_in_window.fetch_add(1, Ordering::Relaxed);
                }
                rec.stats_latency[index % SHARDS]
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .record(started.elapsed().as_secs_f64() * 1000.0);
            }
            Ok((status, body)) => {
                rec.pushes_failed.fetch_add(1, Ordering::Relaxed);
                status_error(rec, "stats", status, &body);
            }
            Err(e) => {
                rec.pushes_failed.fetch_add(1, Ordering::Relaxed);
                net_error(rec, "stats", &e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_path_carries_the_protocol_parameters() {
        let p = sync_path("agent-7", Some("ab12"), 30, "9.2.5");
        assert_eq!(
            p,
            "/api/v1/sync?hostname=agent-7&hash=ab12&wait=30&ats_version=9.2.5&os=linux&arch=x86_64"
        );
        assert!(sync_path("a", None, 0, "9.2.5").contains("&hash=&wait=0&"));
    }

    #[test]
    fn receipts_are_recorded_once_and_only_for_the_target() {
        let rec = Recorder::new(2, 1);
        rec.note_hash(0, "x");
        assert_eq!(
            rec.received[0][0].load(Ordering::Relaxed),
            0,
            "no target yet"
        );
        *rec.target.write().expect("lock") = Target {
            phase: 0,
            hash: Some("x".into()),
        };
        rec.note_hash(0, "y");
        assert_eq!(rec.received[0][0].load(Ordering::Relaxed), 0);
        rec.note_hash(0, "x");
        let first = rec.received[0][0].load(Ordering::Relaxed);
        assert!(first > 0);
        std::thread::sleep(Duration::from_millis(2));
        rec.note_hash(0, "x");
        assert_eq!(rec.received[0][0].load(Ordering::Relaxed), first);
    }

    #[test]
    fn errors_are_counted_by_kind_with_the_first_example() {
        let rec = Recorder::new(1, 1);
        rec.error("sync: HTTP 500", || "first".into());
        rec.error("sync: HTTP 500", || "second".into());
        rec.error("stats: timeout", || "t".into());
        assert_eq!(rec.error_count.load(Ordering::Relaxed), 3);
        let e = rec.errors();
        assert_eq!(e["sync: HTTP 500"].count, 2);
        assert_eq!(e["sync: HTTP 500"].example, "first");
    }
}
