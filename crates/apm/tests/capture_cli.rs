//! The capture → mocks commands end to end through the real binary: `apm capture ingest`,
//! `apm capture record`, `apm mock serve` and `apm capture load`, on loopback.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const APM: &str = env!("CARGO_BIN_EXE_apm");

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../capture/tests/fixtures")
}

/// A child process killed by PID (and reaped) on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `apm` with `args` and returns it with the first `http://…` URL it prints.
fn start(args: &[&str]) -> (Proc, String) {
    let mut child = Command::new(APM)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let proc = Proc(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(i) = line.find("http://") {
                let url: String = line[i..]
                    .chars()
                    .take_while(|c| !c.is_whitespace())
                    .collect();
                if !url.ends_with("/metrics") {
                    let _ = tx.send(url);
                }
            }
        }
    });
    let url = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the command printed its URL");
    (proc, url)
}

/// A tiny origin: answers every request with a JSON body naming the path, holding an email.
fn origin() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in l.incoming().take(50) {
            let Ok(mut s) = stream else { continue };
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let head = String::from_utf8_lossy(&buf);
            let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
            let body = format!(r#"{{"path":"{path}","owner":"ana@example.com","n":7}}"#);
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    format!("http://{addr}")
}

fn get(url: &str) -> (u16, String) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let r = reqwest::Client::new().get(url).send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    })
}

#[test]
fn ingest_serve_and_load_through_the_binary() {
    let out = tempfile::tempdir().unwrap();
    let o = Command::new(APM)
        .args(["capture", "ingest", "--from", "har", "--json", "--out"])
        .arg(out.path())
        .arg(fixtures().join("har/shop.har"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["written"], 3);
    assert_eq!(report["errors"][0]["position"], "entry 3");
    let written: Vec<_> = std::fs::read_dir(out.path().join("mappings"))
        .unwrap()
        .collect();
    assert_eq!(written.len(), 3);

    // Bad input is a clear error naming what is wrong.
    let o = Command::new(APM)
        .args(["capture", "ingest", "--from", "har", "--out"])
        .arg(out.path())
        .arg("/nonexistent/x.har")
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("/nonexistent/x.har: no such file"));

    let (_serve, url) = start(&[
        "mock",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--duration",
        "60s",
        "--mappings",
        out.path().to_str().unwrap(),
    ]);
    let (status, body) = get(&format!("{url}/logo.png"));
    assert_eq!(status, 200);
    assert!(body.starts_with("\u{fffd}PNG"), "{body:?}");
    assert_eq!(get(&format!("{url}/nope")).0, 404);

    // Load the envoy fixtures' mappings into the running server, replacing its stubs.
    let envoy_out = tempfile::tempdir().unwrap();
    let o = Command::new(APM)
        .args(["capture", "ingest", "--from", "envoy-tap", "--out"])
        .arg(envoy_out.path())
        .arg(fixtures().join("envoy"))
        .output()
        .unwrap();
    assert!(o.status.success());
    let o = Command::new(APM)
        .args([
            "capture",
            "load",
            "--json",
            "--replace",
            "--wiremock",
            &url,
            "--mappings",
        ])
        .arg(envoy_out.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (r["loaded"].as_u64(), r["backed_up"].as_u64()),
        (Some(5), Some(3))
    );
    assert!(Path::new(r["backup"].as_str().unwrap()).is_file());
    assert_eq!(get(&format!("{url}/logo.png")).0, 404, "replaced");
    assert_eq!(get(&format!("{url}/v2/carts/42")).0, 200);
}

#[test]
fn record_then_serve_through_the_binary() {
    let target = origin();
    let out = tempfile::tempdir().unwrap();
    let (mut rec, url) = start(&[
        "capture",
        "record",
        "--listen",
        "127.0.0.1:0",
        "--duration",
        "3s",
        "--json",
        "--target",
        &target,
        "--out",
        out.path().to_str().unwrap(),
    ]);
    let mut seen = Vec::new();
    for p in ["/a/1", "/b?x=1", "/a/1"] {
        seen.push(get(&format!("{url}{p}")));
    }
    assert!(
        seen[0].1.contains("ana@example.com"),
        "the proxy relays the real response"
    );
    // The recorder stops by itself after --duration and writes the mappings.
    let deadline = Instant::now() + Duration::from_secs(30);
    while rec.0.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "record did not stop after --duration"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let files: Vec<PathBuf> = std::fs::read_dir(out.path().join("mappings"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 2, "two distinct requests");
    for f in &files {
        assert!(
            !std::fs::read_to_string(f)
                .unwrap()
                .contains("ana@example.com")
        );
    }
    let (_serve, mock) = start(&[
        "mock",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--duration",
        "60s",
        "--mappings",
        out.path().to_str().unwrap(),
    ]);
    for (p, (status, body)) in ["/a/1", "/b?x=1"].iter().zip(&seen) {
        let (s, b) = get(&format!("{mock}{p}"));
        assert_eq!(s, *status);
        let want: serde_json::Value =
            serde_json::from_str(&body.replace("ana@example.com", "SANITIZED_EMAIL")).unwrap();
        assert_eq!(serde_json::from_str::<serde_json::Value>(&b).unwrap(), want);
    }
}
