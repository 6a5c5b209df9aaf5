//! The result of a fleet run and its renderings: `result.json`, a Markdown table and an SVG chart
//! of the propagation curves. Pure: everything here is computed from [`FleetResult`].

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::metrics::Percentiles;

/// Everything one `apm bench fleet` run measured.
#[derive(Debug, Clone, Serialize)]
pub struct FleetResult {
    /// Simulated agents.
    pub agents: usize,
    /// `sqlite` or `postgres`.
    pub database: String,
    /// Every failed request or unexpected answer, summed over all kinds.
    pub errors: u64,
    /// Errors by kind, each with a count and the first message seen.
    pub error_kinds: BTreeMap<String, ErrorKind>,
    /// Time from approval to each agent holding the new hash, for both protocols.
    pub propagation_ms: PropagationPair,
    /// The long-poll phase.
    pub long_poll: Phase,
    /// The plain-polling baseline phase (the seed's protocol).
    pub polling: Phase,
    /// `wait=0` sync requests sent while every other agent held a long-poll: the cost of one
    /// sync answer on a loaded server.
    pub idle_sync_latency_ms: Percentiles,
    /// `wait=0` polls of the polling phase (every agent polling).
    pub polling_sync_latency_ms: Percentiles,
    /// Metric pushes.
    pub stats: StatsResult,
    /// The `apm server` child process, from /proc.
    pub server: ServerUsage,
    /// The same machine's raw ceiling.
    pub ceiling: Ceiling,
    /// Enrollment and assignment.
    pub setup: Setup,
    /// How the simulated agents reach the server.
    pub transport: Transport,
    /// Where it ran.
    pub machine: Machine,
    /// Wall time of the whole run.
    pub duration_secs: f64,
    /// Start, Unix seconds.
    pub started_at_unix: u64,
}

/// One kind of error.
#[derive(Debug, Clone, Serialize, Default)]
pub struct ErrorKind {
    /// Occurrences.
    pub count: u64,
    /// The first message of this kind.
    pub example: String,
}

/// Propagation percentiles of both protocols.
#[derive(Debug, Clone, Serialize)]
pub struct PropagationPair {
    /// Long-poll (`wait=N`).
    pub long_poll: Percentiles,
    /// Plain polling (`wait=0` every interval).
    pub polling: Percentiles,
}

/// One propagation measurement.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Phase {
    /// `wait` sent with each sync (0 for polling).
    pub wait_secs: u64,
    /// Time between polls (polling) or the agent's sync interval (long-poll).
    pub interval_secs: f64,
    /// Seconds the fleet ran before the approval.
    pub settle_secs: f64,
    /// Longest simulated apply before each ACK, ms (0: ACK at once).
    pub apply_time_ms: f64,
    /// Latency of the approve request itself.
    pub approve_ms: f64,
    /// Agents that received the new hash.
    pub received: usize,
    /// Agents that did not within the phase's deadline.
    pub missing: usize,
    /// Approval → agent has the new hash.
    pub propagation_ms: Percentiles,
    /// (ms, fraction) points of the cumulative curve.
    pub curve: Vec<(f64, f64)>,
    /// Server CPU seconds spent during this phase.
    pub server_cpu_secs: f64,
    /// From the approval until the last agent had the new hash: CPU seconds of the server and
    /// of the simulator (this process), and the wall seconds; their sum against 2 × wall shows
    /// how much of the machine the delivery had and who used it.
    pub delivery_cpu: DeliveryCpu,
    /// Length of the phase.
    pub duration_secs: f64,
}

/// CPU used while a new version was being delivered (see [`Phase::delivery_cpu`]).
#[derive(Debug, Clone, Copy, Serialize, Default)]
pub struct DeliveryCpu {
    /// Wall seconds from the approve request to the last receipt (or the phase deadline).
    pub wall_secs: f64,
    /// Server CPU seconds in that time.
    pub server_secs: f64,
    /// Simulator CPU seconds in that time.
    pub simulator_secs: f64,
    /// PostgreSQL's CPU seconds in that time (all its processes; absent on SQLite).
    pub database_secs: Option<f64>,
}

/// Metric pushes, over the whole run.
#[derive(Debug, Clone, Serialize, Default)]
pub struct StatsResult {
    /// Seconds between pushes of one agent.
    pub interval_secs: f64,
    /// Metrics per push (the agent's list).
    pub metrics_per_push: usize,
    /// Pushes the fleet should make per second (agents / interval).
    pub offered_pushes_per_sec: f64,
    /// Pushes answered 200 per second over the measuring window.
    pub ingested_pushes_per_sec: f64,
    /// Samples (metric values) stored per second.
    pub ingested_samples_per_sec: f64,
    /// Pushes answered 200.
    pub pushes_ok: u64,
    /// Pushes that failed (also counted in `errors`).
    pub pushes_failed: u64,
    /// Latency of a push.
    pub latency_ms: Percentiles,
    /// The measuring window (from the first push to the end of the run).
    pub window_secs: f64,
    /// Pushes stored (`stats_push` rows) after the run, read from the database.
    pub rows_in_database: Option<u64>,
    /// Of those, pushes not yet folded into the rollups when the server stopped (at most
    /// about one roll-up interval of pushes when the roll-up keeps up).
    pub pending_rollup_in_database: Option<u64>,
    /// Of the pending pushes, those in 5-minute buckets that had closed by the end of the run
    /// (the current bucket of a large fleet is folded once it closes, by design).
    pub pending_closed_buckets_in_database: Option<u64>,
    /// Pushes the server's roll-up had folded into rollups by the end of the run.
    pub rolled_up_pushes: Option<u64>,
    /// Seconds the server spent folding (its pauses between chunks excluded);
    /// `rolled_up_pushes / rollup_busy_secs` is the roll-up's capacity in pushes per second.
    pub rollup_busy_secs: Option<f64>,
    /// Duration of the server's last roll-up run, seconds (keeping up: well under the
    /// roll-up interval).
    pub rollup_last_run_secs: Option<f64>,
    /// `ingested / offered`; 1.0 = keeping up.
    pub keeping_up_ratio: f64,
}

/// CPU and memory of the server process.
#[derive(Debug, Clone, Serialize, Default)]
pub struct ServerUsage {
    /// PID of the child.
    pub pid: u32,
    /// user + system CPU seconds, whole run.
    pub cpu_secs: f64,
    /// Peak resident set size (VmHWM), MiB.
    pub peak_rss_mib: f64,
    /// RSS at the end, MiB.
    pub end_rss_mib: f64,
    /// Long-polls the server reported holding (its `apm_sync_waiting` gauge) before approval.
    pub waiting_before_approval: Option<i64>,
    /// CPU seconds of the PostgreSQL processes (postmaster and backends), when used.
    pub database_cpu_secs: Option<f64>,
}

/// The raw ceiling of this machine, measured with the same client.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Ceiling {
    /// Concurrent requests in flight.
    pub concurrency: usize,
    /// Seconds each test ran.
    pub secs: f64,
    /// A hyper hello-world server: requests per second.
    pub hello_rps: f64,
    /// Its latency.
    pub hello_latency_ms: Percentiles,
    /// `apm server` `GET /api/v1/sync?wait=0` (unchanged answers): requests per second.
    pub sync_rps: f64,
    /// Its latency.
    pub sync_latency_ms: Percentiles,
}

/// Enrollment and assignment.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Setup {
    /// Seconds to enroll every agent.
    pub enroll_secs: f64,
    /// Enrollments per second.
    pub enroll_per_sec: f64,
    /// Seconds to assign every agent to the config.
    pub assign_secs: f64,
    /// Seconds from server start to ready.
    pub server_start_secs: f64,
}

/// How agents reach the server.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Transport {
    /// `http1` (a connection per agent) or `h2` (agents multiplexed over HTTP/2).
    pub mode: String,
    /// Agents sharing one connection (1 for http1).
    pub agents_per_connection: usize,
    /// Client source addresses (127.0.0.x).
    pub source_addresses: usize,
    /// RLIMIT_NOFILE in effect (soft/hard) for the simulator and the server.
    pub fd_limit: (u64, u64),
    /// Why this mode (when picked automatically).
    pub note: String,
}

/// The machine.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Machine {
    /// CPUs online.
    pub cores: usize,
    /// 1-minute load average before the run.
    pub load_avg_start: f64,
    /// 1-minute load average after the run.
    pub load_avg_end: f64,
    /// Kernel release.
    pub kernel: String,
    /// Debug or release build of the benchmark (and the server it starts).
    pub build: String,
}

fn fmt_p(p: &Percentiles) -> String {
    format!(
        "{} / {} / {} / {}",
        fmt_ms(p.p50),
        fmt_ms(p.p90),
        fmt_ms(p.p99),
        fmt_ms(p.max)
    )
}

fn fmt_ms(ms: f64) -> String {
    if ms >= 10_000.0 {
        format!("{:.1} s", ms / 1000.0)
    } else if ms >= 100.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{ms:.1} ms")
    }
}

/// A Markdown table of the headline figures.
pub fn markdown(r: &FleetResult) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "### {} agents, {} ({} build, {} cores, load {:.2} → {:.2})\n",
        r.agents,
        r.database,
        r.machine.build,
        r.machine.cores,
        r.machine.load_avg_start,
        r.machine.load_avg_end
    );
    let _ = writeln!(s, "| measure | value |\n|---|---|");
    let row = |s: &mut String, k: &str, v: String| {
        let _ = writeln!(s, "| {k} | {v} |");
    };
    row(
        &mut s,
        &format!(
            "propagation, long-poll (wait={} s) p50 / p90 / p99 / max",
            r.long_poll.wait_secs
        ),
        fmt_p(&r.propagation_ms.long_poll),
    );
    row(
        &mut s,
        "long-poll: agents with the new hash",
        format!("{} of {}", r.long_poll.received, r.agents),
    );
    row(
        &mut s,
        "simulated apply before each ACK",
        if r.long_poll.apply_time_ms > 0.0 {
            format!("random, up to {:.0} ms", r.long_poll.apply_time_ms)
        } else {
            "none (ACK at once)".to_owned()
        },
    );
    row(
        &mut s,
        &format!(
            "propagation, plain polling (every {} s) p50 / p90 / p99 / max",
            r.polling.interval_secs
        ),
        fmt_p(&r.propagation_ms.polling),
    );
    row(
        &mut s,
        "polling: agents with the new hash",
        format!("{} of {}", r.polling.received, r.agents),
    );
    row(
        &mut s,
        "idle sync latency (wait=0 while the fleet long-polls) p50 / p99",
        format!(
            "{} / {} ({} requests)",
            fmt_ms(r.idle_sync_latency_ms.p50),
            fmt_ms(r.idle_sync_latency_ms.p99),
            r.idle_sync_latency_ms.count
        ),
    );
    row(
        &mut s,
        "polling request latency p50 / p99",
        format!(
            "{} / {}",
            fmt_ms(r.polling_sync_latency_ms.p50),
            fmt_ms(r.polling_sync_latency_ms.p99)
        ),
    );
    row(
        &mut s,
        "stats: offered → ingested pushes/s (samples/s)",
        format!(
            "{:.0} → {:.0} ({:.0} samples/s, ratio {:.3}, push p99 {})",
            r.stats.offered_pushes_per_sec,
            r.stats.ingested_pushes_per_sec,
            r.stats.ingested_samples_per_sec,
            r.stats.keeping_up_ratio,
            fmt_ms(r.stats.latency_ms.p99)
        ),
    );
    row(
        &mut s,
        "stats: pushes stored / rolled up / pending at the end (last roll-up run)",
        format!(
            "{} / {} / {} ({})",
            r.stats
                .rows_in_database
                .map_or("?".into(), |n| n.to_string()),
            r.stats
                .rolled_up_pushes
                .map_or("?".into(), |n| n.to_string()),
            r.stats
                .pending_rollup_in_database
                .map_or("?".into(), |n| n.to_string()),
            r.stats
                .rollup_last_run_secs
                .map_or("?".into(), |t| format!("{t:.2} s")),
        ),
    );
    row(
        &mut s,
        "stats: roll-up capacity (pushes folded per second of folding) / pending in closed buckets",
        format!(
            "{} / {}",
            match (r.stats.rolled_up_pushes, r.stats.rollup_busy_secs) {
                (Some(n), Some(t)) if t > 0.0 => format!("{:.0}/s ({n} in {t:.1} s)", n as f64 / t),
                _ => "?".into(),
            },
            r.stats
                .pending_closed_buckets_in_database
                .map_or("?".into(), |n| n.to_string()),
        ),
    );
    row(
        &mut s,
        "server CPU (whole run / long-poll phase / polling phase)",
        format!(
            "{:.1} s / {:.1} s / {:.1} s",
            r.server.cpu_secs, r.long_poll.server_cpu_secs, r.polling.server_cpu_secs
        ),
    );
    for (name, p) in [("long-poll", &r.long_poll), ("polling", &r.polling)] {
        let d = p.delivery_cpu;
        if d.wall_secs > 0.0 {
            row(
                &mut s,
                &format!("{name} delivery: wall / server CPU / simulator CPU / database CPU"),
                format!(
                    "{:.2} s / {:.2} s / {:.2} s / {}",
                    d.wall_secs,
                    d.server_secs,
                    d.simulator_secs,
                    d.database_secs
                        .map_or("in the server (SQLite)".into(), |s| format!("{s:.2} s"))
                ),
            );
        }
    }
    row(
        &mut s,
        "server peak RSS",
        format!("{:.0} MiB", r.server.peak_rss_mib),
    );
    row(
        &mut s,
        "enrollment",
        format!(
            "{:.1} s ({:.0}/s)",
            r.setup.enroll_secs, r.setup.enroll_per_sec
        ),
    );
    row(
        &mut s,
        &format!(
            "ceiling: hello-world vs sync wait=0 ({} in flight)",
            r.ceiling.concurrency
        ),
        format!(
            "{:.0} req/s (p99 {}) vs {:.0} req/s (p99 {})",
            r.ceiling.hello_rps,
            fmt_ms(r.ceiling.hello_latency_ms.p99),
            r.ceiling.sync_rps,
            fmt_ms(r.ceiling.sync_latency_ms.p99)
        ),
    );
    row(
        &mut s,
        "transport",
        format!(
            "{} ({} agents/connection, {} source addresses)",
            r.transport.mode, r.transport.agents_per_connection, r.transport.source_addresses
        ),
    );
    row(&mut s, "errors", r.errors.to_string());
    for (kind, e) in &r.error_kinds {
        row(
            &mut s,
            &format!("error: {kind}"),
            format!("{} (e.g. {})", e.count, e.example.replace('|', "\\|")),
        );
    }
    s
}

/// An SVG chart of both propagation curves (fraction of agents vs time after approval, log
/// time axis from 1 ms so the sub-second long-poll curve and the polling curve both show).
pub fn svg(r: &FleetResult) -> String {
    let (w, h) = (720.0_f64, 420.0_f64);
    let (left, right, top, bottom) = (60.0, 20.0, 40.0, 50.0);
    let pw = w - left - right;
    let ph = h - top - bottom;
    let max_ms = r
        .long_poll
        .curve
        .iter()
        .chain(r.polling.curve.iter())
        .map(|p| p.0)
        .fold(10.0_f64, f64::max);
    let lo = 0.0_f64; // log10(1 ms)
    let hi = max_ms.log10().ceil().max(1.0);
    let x = |ms: f64| left + pw * ((ms.max(1.0).log10() - lo) / (hi - lo)).clamp(0.0, 1.0);
    let y = |f: f64| top + ph * (1.0 - f.clamp(0.0, 1.0));
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="20" text-anchor="middle" font-size="14">Config propagation, {} agents, {}</text>"#,
        w / 2.0,
        r.agents,
        r.database
    );
    for k in 0..=(hi as i64) {
        let ms = 10f64.powi(k as i32);
        let xx = x(ms);
        let label = if ms >= 1000.0 {
            format!("{} s", ms / 1000.0)
        } else {
            format!("{ms} ms")
        };
        let _ = writeln!(
            s,
            r##"<line x1="{xx:.1}" y1="{top}" x2="{xx:.1}" y2="{}" stroke="#ddd"/><text x="{xx:.1}" y="{}" text-anchor="middle">{label}</text>"##,
            top + ph,
            top + ph + 16.0
        );
    }
    for pct in [0, 25, 50, 75, 90, 99, 100] {
        let yy = y(f64::from(pct) / 100.0);
        let _ = writeln!(
            s,
            r##"<line x1="{left}" y1="{yy:.1}" x2="{}" y2="{yy:.1}" stroke="#eee"/><text x="{}" y="{:.1}" text-anchor="end">{pct}%</text>"##,
            left + pw,
            left - 6.0,
            yy + 4.0
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">time after approval (log scale)</text>"#,
        left + pw / 2.0,
        h - 12.0
    );
    let _ = writeln!(
        s,
        r##"<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#444"/>"##
    );
    let curves = [
        (
            &r.long_poll.curve,
            "#1f77b4",
            format!("long-poll (wait={} s)", r.long_poll.wait_secs),
        ),
        (
            &r.polling.curve,
            "#d62728",
            format!("polling every {} s", r.polling.interval_secs),
        ),
    ];
    for (i, (curve, color, label)) in curves.iter().enumerate() {
        let mut points = String::new();
        let mut prev_f = 0.0;
        for (ms, f) in curve.iter() {
            // A step curve: horizontal to the new time, then up.
            let _ = write!(points, "{:.1},{:.1} ", x(*ms), y(prev_f));
            let _ = write!(points, "{:.1},{:.1} ", x(*ms), y(*f));
            prev_f = *f;
        }
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
            points.trim_end()
        );
        let ly = top + 16.0 + 18.0 * i as f64;
        let _ = writeln!(
            s,
            r#"<line x1="{}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" stroke-width="3"/><text x="{}" y="{}">{}</text>"#,
            left + 10.0,
            left + 34.0,
            left + 40.0,
            ly + 4.0,
            xml_escape(label)
        );
    }
    s.push_str("</svg>\n");
    s
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::propagation_curve;

    fn sample() -> FleetResult {
        let lp: Vec<f64> = (0..100).map(|i| 5.0 + f64::from(i)).collect();
        let poll: Vec<f64> = (0..100).map(|i| 300.0 * f64::from(i)).collect();
        FleetResult {
            agents: 100,
            database: "sqlite".into(),
            errors: 1,
            error_kinds: BTreeMap::from([(
                "sync: http 500".to_string(),
                ErrorKind {
                    count: 1,
                    example: "boom | pipe".into(),
                },
            )]),
            propagation_ms: PropagationPair {
                long_poll: Percentiles::of(&lp),
                polling: Percentiles::of(&poll),
            },
            long_poll: Phase {
                wait_secs: 60,
                received: 100,
                curve: propagation_curve(&lp, 100, 50),
                ..Phase::default()
            },
            polling: Phase {
                interval_secs: 30.0,
                received: 100,
                curve: propagation_curve(&poll, 100, 50),
                ..Phase::default()
            },
            idle_sync_latency_ms: Percentiles::default(),
            polling_sync_latency_ms: Percentiles::default(),
            stats: StatsResult::default(),
            server: ServerUsage::default(),
            ceiling: Ceiling::default(),
            setup: Setup::default(),
            transport: Transport::default(),
            machine: Machine::default(),
            duration_secs: 1.0,
            started_at_unix: 0,
        }
    }

    #[test]
    fn markdown_has_the_headline_rows_and_escapes_pipes() {
        let md = markdown(&sample());
        assert!(md.contains("| propagation, long-poll (wait=60 s) p50 / p90 / p99 / max |"));
        assert!(md.contains("| errors | 1 |"));
        assert!(md.contains("boom \\| pipe"));
        for line in md.lines().filter(|l| l.starts_with("| ")) {
            assert_eq!(line.matches(" | ").count(), 1, "two columns: {line}");
        }
    }

    #[test]
    fn svg_is_well_formed_with_two_curves() {
        let s = svg(&sample());
        assert!(s.starts_with("<svg") && s.trim_end().ends_with("</svg>"));
        assert_eq!(s.matches("<polyline").count(), 2);
        // Every coordinate is a finite number inside the canvas.
        for pts in s.split("points=\"").skip(1) {
            let pts = pts.split('"').next().unwrap_or_default();
            for pair in pts.split_whitespace() {
                let (x, y) = pair.split_once(',').expect("x,y");
                let (x, y): (f64, f64) = (x.parse().expect("x"), y.parse().expect("y"));
                assert!(
                    (0.0..=720.0).contains(&x) && (0.0..=420.0).contains(&y),
                    "{pair}"
                );
            }
        }
    }

    #[test]
    fn result_json_has_the_required_members() {
        let v = serde_json::to_value(sample()).expect("json");
        for side in ["long_poll", "polling"] {
            for k in ["p50", "p90", "p99", "max"] {
                assert!(v["propagation_ms"][side][k].is_number(), "{side}.{k}");
            }
        }
        assert_eq!(v["agents"], 100);
        assert_eq!(v["errors"], 1);
    }
}
