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
            "--metrics-file",
        ])
        .arg(envoy_out.path().join("loader.prom"))
        .arg("--mappings")
        .arg(envoy_out.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // The loader's metrics, request durations included, in the textfile format.
    let prom = std::fs::read_to_string(envoy_out.path().join("loader.prom")).unwrap();
    for line in [
        "# TYPE wiremock_loader_wiremock_requests_duration_seconds histogram",
        "wiremock_loader_wiremock_requests_duration_seconds_count{operation=\"backup\"} 1",
        "wiremock_loader_wiremock_requests_duration_seconds_count{operation=\"delete\"} 1",
        "wiremock_loader_wiremock_requests_duration_seconds_bucket{operation=\"import\",le=\"+Inf\"} 1",
        "wiremock_loader_requests_total{operation=\"import\"} 1",
    ] {
        assert!(prom.contains(line), "{line} in {prom}");
    }
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

/// A loopback TLS origin with a certificate made for this test (self-signed, for 127.0.0.1):
/// answers every request with a JSON body naming the path and holding an email. Returns the
/// https URL and the certificate as PEM. Bounded to 50 connections.
fn tls_origin() -> (String, String) {
    let key = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let pem = key.cert.pem();
    let cert = key.cert.der().clone();
    let private = rustls::pki_types::PrivateKeyDer::Pkcs8(key.signing_key.serialize_der().into());
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], private)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    l.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let l = tokio::net::TcpListener::from_std(l).unwrap();
            for _ in 0..50 {
                let Ok((tcp, _)) = l.accept().await else { continue };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    // A client that does not trust the certificate fails the handshake here.
                    let Ok(mut s) = acceptor.accept(tcp).await else { return };
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&buf);
                    let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
                    let body =
                        format!(r#"{{"path":"{path}","owner":"ana@example.com","tls":true}}"#);
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = s.write_all(resp.as_bytes()).await;
                    let _ = s.shutdown().await;
                });
            }
        });
    });
    (format!("https://{addr}"), pem)
}

fn wait_exit(p: &mut Proc) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while p.0.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "record did not stop after --duration"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn record_https_target_trusted_through_target_ca_then_serve() {
    let (target, pem) = tls_origin();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("origin-ca.pem");
    std::fs::write(&ca, &pem).unwrap();

    // Without --target-ca the certificate is not trusted: the request fails, nothing is
    // recorded (there is no insecure mode to fall back to).
    let untrusted = dir.path().join("untrusted");
    let (mut rec, url) = start(&[
        "capture",
        "record",
        "--listen",
        "127.0.0.1:0",
        "--duration",
        "2s",
        "--target",
        &target,
        "--out",
        untrusted.to_str().unwrap(),
    ]);
    let (status, body) = get(&format!("{url}/secure/1"));
    assert_eq!(status, 502, "{body}");
    assert!(!body.contains("ana@example.com"));
    wait_exit(&mut rec);
    let recorded = std::fs::read_dir(untrusted.join("mappings"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(recorded, 0, "a failed exchange is not recorded");

    // A file that holds no certificate is refused up front, naming the file.
    let bogus = dir.path().join("bogus.pem");
    std::fs::write(&bogus, "not a certificate\n").unwrap();
    let o = Command::new(APM)
        .args([
            "capture",
            "record",
            "--listen",
            "127.0.0.1:0",
            "--target",
            &target,
        ])
        .arg("--target-ca")
        .arg(&bogus)
        .arg("--out")
        .arg(dir.path().join("never"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("--target-ca") && err.contains("bogus.pem"),
        "{err}"
    );

    // With the origin's certificate trusted: recorded over TLS, then replayed by mock serve.
    let out = dir.path().join("trusted");
    let (mut rec, url) = start(&[
        "capture",
        "record",
        "--listen",
        "127.0.0.1:0",
        "--duration",
        "3s",
        "--target",
        &target,
        "--target-ca",
        ca.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    let mut seen = Vec::new();
    for p in ["/secure/1", "/secure/2?x=1"] {
        seen.push(get(&format!("{url}{p}")));
    }
    assert_eq!(seen[0].0, 200, "{}", seen[0].1);
    assert!(seen[0].1.contains("\"tls\":true") && seen[0].1.contains("ana@example.com"));
    wait_exit(&mut rec);
    let files: Vec<PathBuf> = std::fs::read_dir(out.join("mappings"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 2);
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        assert!(!text.contains("ana@example.com"), "{text}");
    }
    let (_serve, mock) = start(&[
        "mock",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--duration",
        "60s",
        "--mappings",
        out.to_str().unwrap(),
    ]);
    for (p, (status, body)) in ["/secure/1", "/secure/2?x=1"].iter().zip(&seen) {
        let (s, b) = get(&format!("{mock}{p}"));
        assert_eq!(s, *status);
        let want: serde_json::Value =
            serde_json::from_str(&body.replace("ana@example.com", "SANITIZED_EMAIL")).unwrap();
        assert_eq!(serde_json::from_str::<serde_json::Value>(&b).unwrap(), want);
    }
}

/// The tokio worker threads of a running process (named `tokio-rt-worker`; older tokio
/// releases named them `tokio-runtime-worker`, which the kernel cuts to 15 bytes).
fn worker_threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|comm| matches!(comm.trim_end(), "tokio-rt-worker" | "tokio-runtime-w"))
        .count()
}

#[test]
fn mock_serve_runs_the_requested_worker_threads() {
    let out = tempfile::tempdir().unwrap();
    let o = Command::new(APM)
        .args(["capture", "ingest", "--from", "har", "--out"])
        .arg(out.path())
        .arg(fixtures().join("har/shop.har"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // 1 (the brief's setting for a pinned server) and 5 (more than the CPUs of a small
    // machine, so a default runtime could not be taken for it).
    for workers in [1usize, 5] {
        let (serve, url) = start(&[
            "mock",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--duration",
            "60s",
            "--workers",
            &workers.to_string(),
            "--mappings",
            out.path().to_str().unwrap(),
        ]);
        assert_eq!(
            get(&format!("{url}/logo.png")).0,
            200,
            "--workers {workers}"
        );
        assert_eq!(get(&format!("{url}/nope")).0, 404);
        assert_eq!(worker_threads(serve.0.id()), workers, "--workers {workers}");
        drop(serve);
    }
    // Zero workers is refused before anything starts, naming the flag.
    let o = Command::new(APM)
        .args(["mock", "serve", "--listen", "127.0.0.1:0", "--workers", "0"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("--workers"), "{err}");
}
