//! Smoke runs of `apm bench fleet`, so the benchmark cannot rot: a small fleet on each database
//! and transport runs the whole protocol, every agent gets both approved changes, nothing fails
//! and the three output files are written. No timing is asserted.

use std::path::Path;
use std::process::Command;

fn run_fleet(out: &Path, extra: &[&str]) -> serde_json::Value {
    let output = Command::new(env!("CARGO_BIN_EXE_apm"))
        .args(["bench", "fleet", "--out"])
        .arg(out)
        .args([
            "--poll-interval",
            "2s",
            "--stats-interval",
            "1s",
            "--stats-window",
            "2s",
            "--wait",
            "20",
            "--ceiling-secs",
            "0.5",
            "--probe-secs",
            "0.5",
            "--server-log-level",
            "warn",
        ])
        .args(extra)
        .output()
        .expect("apm runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let text = std::fs::read_to_string(out.join("result.json"))
        .unwrap_or_else(|e| panic!("no result.json ({e}); stdout:\n{stdout}\nstderr:\n{stderr}"));
    let r: serde_json::Value = serde_json::from_str(&text).expect("result.json is JSON");
    assert!(
        output.status.success(),
        "apm bench fleet failed ({}); errors: {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status,
        r["error_kinds"]
    );
    r
}

fn check(r: &serde_json::Value, out: &Path, agents: u64) {
    assert_eq!(r["agents"], agents);
    assert_eq!(r["errors"], 0, "errors: {}", r["error_kinds"]);
    for phase in ["long_poll", "polling"] {
        assert_eq!(
            r[phase]["received"], agents,
            "{phase}: every agent got the new hash"
        );
        assert_eq!(r[phase]["missing"], 0);
        for k in ["p50", "p90", "p99", "max"] {
            assert!(r["propagation_ms"][phase][k].is_number(), "{phase}.{k}");
        }
        // The delivery window ends when the last agent had the new hash, so it covers the
        // slowest delivery; CPU seconds are counted in 10 ms ticks and may be 0 at 200 agents.
        let cpu = &r[phase]["delivery_cpu"];
        let slowest_ms = r["propagation_ms"][phase]["max"]
            .as_f64()
            .unwrap_or(f64::NAN);
        let wall_ms = cpu["wall_secs"].as_f64().unwrap_or(f64::NAN) * 1000.0;
        assert!(
            wall_ms + 1.0 >= slowest_ms,
            "{phase}: {cpu} vs max {slowest_ms} ms"
        );
        for k in ["server_secs", "simulator_secs"] {
            assert!(cpu[k].as_f64().is_some_and(|s| s >= 0.0), "{phase}: {cpu}");
        }
    }
    assert!(r["stats"]["pushes_ok"].as_u64().unwrap_or(0) > 0);
    assert!(r["stats"]["rows_in_database"].as_u64().unwrap_or(0) > 0);
    assert!(r["server"]["peak_rss_mib"].as_f64().unwrap_or(0.0) > 0.0);
    assert!(r["ceiling"]["hello_rps"].as_f64().unwrap_or(0.0) > 0.0);
    assert!(r["ceiling"]["sync_rps"].as_f64().unwrap_or(0.0) > 0.0);
    let md = std::fs::read_to_string(out.join("result.md")).expect("result.md");
    assert!(md.contains("| propagation, long-poll"));
    let svg = std::fs::read_to_string(out.join("propagation.svg")).expect("propagation.svg");
    assert!(svg.starts_with("<svg") && svg.contains("<polyline"));
}

#[test]
fn fleet_smoke_sqlite_http1() {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = run_fleet(dir.path(), &["--agents", "200", "--transport", "http1"]);
    check(&r, dir.path(), 200);
    assert_eq!(r["transport"]["mode"], "http1");
    // No database process of its own: its work is in the server's CPU.
    assert!(r["long_poll"]["delivery_cpu"]["database_secs"].is_null());
}

#[test]
fn fleet_smoke_postgres_h2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = run_fleet(
        dir.path(),
        &[
            "--agents",
            "150",
            "--database",
            "postgres",
            "--transport",
            "h2",
            "--agents-per-connection",
            "16",
        ],
    );
    check(&r, dir.path(), 150);
    assert_eq!(r["transport"]["mode"], "h2");
    assert_eq!(r["database"], "postgres");
    let db = r["long_poll"]["delivery_cpu"]["database_secs"].as_f64();
    assert!(
        db.is_some_and(|s| s >= 0.0),
        "{}",
        r["long_poll"]["delivery_cpu"]
    );
}

/// SIGTERM to a running `apm bench fleet` (as `timeout` sends) stops the server it started: it
/// is not left running with the benchmark gone.
#[test]
fn a_terminated_fleet_run_stops_its_server() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().expect("dir");
    let mut bench = Command::new(env!("CARGO_BIN_EXE_apm"))
        .args(["bench", "fleet", "--agents", "20", "--out"])
        .arg(dir.path())
        // A long polling interval keeps the run busy until it is terminated.
        .args(["--poll-interval", "120s", "--server-log-level", "warn"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("apm runs");
    let stderr = bench.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let server_pid = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                if let Some(rest) = line.strip_prefix("apm bench: server pid ") {
                    let pid: i32 = rest
                        .split_whitespace()
                        .next()
                        .and_then(|p| p.parse().ok())
                        .expect("a pid");
                    break pid;
                }
            }
            Err(e) => {
                let _ = bench.kill();
                let _ = bench.wait();
                panic!("no server pid announced: {e}");
            }
        }
    };
    // Let the run get past enrollment into its polling phase.
    std::thread::sleep(std::time::Duration::from_secs(3));
    let bench_pid = nix::unistd::Pid::from_raw(bench.id() as i32);
    nix::sys::signal::kill(bench_pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    let mut status = None;
    for _ in 0..300 {
        if let Some(s) = bench.try_wait().expect("wait") {
            status = Some(s);
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let server_alive = || std::path::Path::new(&format!("/proc/{server_pid}")).exists();
    let mut waited = 0;
    while server_alive() && waited < 100 {
        std::thread::sleep(std::time::Duration::from_millis(100));
        waited += 1;
    }
    let left_running = server_alive();
    if status.is_none() {
        let _ = bench.kill();
        let _ = bench.wait();
    }
    if left_running {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(server_pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let status = status.expect("apm bench fleet exits within 30 s of SIGTERM");
    assert_eq!(status.code(), Some(130), "{status}");
    assert!(
        !left_running,
        "the server (pid {server_pid}) was left running"
    );
}
