//! Runs the real WireMock standalone jar (npm `wiremock@3.13.2`) on loopback for tests and
//! benchmarks. Installed by scripts/install-test-deps.sh.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The jar: `APM_WIREMOCK_JAR`, else where scripts/install-test-deps.sh puts it.
pub fn jar() -> PathBuf {
    if let Some(p) = std::env::var_os("APM_WIREMOCK_JAR") {
        return PathBuf::from(p);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/test-deps/wiremock/node_modules/wiremock/build/wiremock-standalone-3.13.2.jar")
}

/// A WireMock process; killed (by PID) and reaped on drop.
pub struct WireMock {
    child: Child,
    pub port: u16,
    _root: tempfile::TempDir,
}

impl WireMock {
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts WireMock on 127.0.0.1 with a free port and waits (at most 90 s) until its admin
    /// API answers. Panics with install instructions when Java or the jar is missing.
    pub fn start(extra: &[&str]) -> WireMock {
        let jar = jar();
        assert!(
            jar.is_file(),
            "WireMock jar not found at {}.\nInstall the test dependencies with \
             `scripts/install-test-deps.sh` (Debian openjdk-17-jre-headless and npm \
             wiremock@3.13.2 into target/test-deps/wiremock), or set APM_WIREMOCK_JAR.",
            jar.display()
        );
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("mappings")).unwrap();
        let child = Command::new("java")
            .args(["-Xmx512m", "-jar"])
            .arg(&jar)
            .args([
                "--port",
                &port.to_string(),
                "--bind-address",
                "127.0.0.1",
                "--disable-banner",
            ])
            .arg("--root-dir")
            .arg(root.path())
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run java ({e}). Install the test dependencies with \
                     `scripts/install-test-deps.sh` (Debian openjdk-17-jre-headless)."
                )
            });
        let mut wm = WireMock {
            child,
            port,
            _root: root,
        };
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Ok(Some(status)) = wm.child.try_wait() {
                panic!("WireMock exited during startup: {status}");
            }
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
                use std::io::{Read, Write};
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let _ = s.write_all(
                    b"GET /__admin/mappings HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                );
                let mut buf = [0u8; 12];
                if s.read_exact(&mut buf).is_ok() && &buf[9..12] == b"200" {
                    return wm;
                }
            }
            assert!(
                Instant::now() < deadline,
                "WireMock did not become ready within 90 s"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for WireMock {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
