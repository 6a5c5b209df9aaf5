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
}
