//! The README flow against the real `apm` binary: start `apm server` on a fresh data dir, read
//! the root password it prints once, then with plain HTTP calls (what the README does with
//! curl) log in, create an admin, create and approve a config, enroll an agent and see a
//! long-poll sync return the bundle. Then restart with `--reset-root-password`.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The server process; stopped (SIGTERM, then SIGKILL) when dropped, also on panic.
struct Server {
    child: Child,
    base: String,
    stderr: mpsc::Receiver<String>,
}

impl Server {
    fn start(data_dir: &std::path::Path, env: &[(&str, &str)], extra: &[&str]) -> Server {
        let port = TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_apm"));
        cmd.args([
            "server",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(data_dir)
        .args(extra)
        .env_remove("APM_ROOT_PASSWORD")
        .env_remove("APM_DATABASE_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn apm server");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Server {
            child,
            base: format!("http://127.0.0.1:{port}"),
            stderr: rx,
        }
    }

    /// Reads stderr until the server logged that it started; returns the lines read.
    fn wait_started(&self) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut lines = Vec::new();
        while Instant::now() < deadline {
            match self.stderr.recv_timeout(Duration::from_millis(200)) {
                Ok(line) => {
                    let started = line.contains("apm server started");
                    lines.push(line);
                    if started {
                        return lines;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        panic!("apm server did not start:\n{}", lines.join("\n"));
    }

    fn stop(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        self.child.wait().expect("wait")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

async fn call(
    base: &str,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let client = reqwest::Client::new();
    let mut req = client
        .request(method, format!("{base}{path}"))
        .timeout(Duration::from_secs(60));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.expect("request");
    let status = r.status().as_u16();
    let text = r.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn login(base: &str, user: &str, password: &str) -> (u16, Value) {
    call(
        base,
        reqwest::Method::POST,
        "/api/v1/auth/login",
        None,
        Some(json!({"username": user, "password": password})),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_flow_on_the_real_binary_sqlite() {
    readme_flow(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_flow_on_the_real_binary_postgres() {
    let url = tokio::task::spawn_blocking(|| {
        apm_testkit::postgres::Postgres::shared()
            .and_then(|pg| pg.fresh_database())
            .expect("test PostgreSQL (scripts/install-test-deps.sh)")
    })
    .await
    .expect("join");
    readme_flow(Some(url)).await;
}

async fn readme_flow(database_url: Option<String>) {
    use reqwest::Method;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let db_args: Vec<&str> = match &database_url {
        Some(url) => vec!["--database-url", url.as_str()],
        None => vec![],
    };
    let mut server = Server::start(&data, &[], &db_args);
    let lines = server.wait_started();
    let password = lines
        .iter()
        .find_map(|l| l.split("root password (shown once, store it now): ").nth(1))
        .map(|p| p.trim().to_string())
        .unwrap_or_else(|| panic!("no root password printed:\n{}", lines.join("\n")));
    if database_url.is_none() {
        assert!(
            data.join("apm.db").exists(),
            "SQLite database created in the data dir"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&data)
            .expect("data dir")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700, "the data dir is owner-only");
    }
    // Logs are JSON and do not contain the password.
    let log_lines: Vec<&String> = lines.iter().filter(|l| l.starts_with('{')).collect();
    assert!(!log_lines.is_empty());
    assert!(log_lines.iter().all(|l| !l.contains(&password)));
    let base = server.base.clone();

    // 1. Log in as root.
    let (status, body) = login(&base, "root", &password).await;
    assert_eq!(status, 200, "{body}");
    let root = body["token"].as_str().expect("token").to_string();
    // 2. Create an admin and log in as them.
    let (status, body) = call(
        &base,
        Method::POST,
        "/api/v1/users",
        Some(&root),
        Some(json!({"username": "alice", "password": "alice-secret-1", "role": "admin"})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (_, body) = login(&base, "alice", "alice-secret-1").await;
    let admin = body["token"].as_str().expect("token").to_string();
    // 3. Create a config from the template policy, submit, approve.
    let (_, policy) = call(
        &base,
        Method::GET,
        "/api/v1/policy/template",
        Some(&admin),
        None,
    )
    .await;
    let (status, body) = call(
        &base,
        Method::POST,
        "/api/v1/configs",
        Some(&admin),
        Some(json!({"name": "prod", "description": "first", "policy": policy})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().expect("id").to_string();
    let (status, _) = call(
        &base,
        Method::POST,
        &format!("/api/v1/configs/{id}/submit"),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (status, body) = call(
        &base,
        Method::POST,
        &format!("/api/v1/configs/{id}/approve"),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "active");
    // 4. Enroll an agent identity and assign it.
    let (status, body) = call(
        &base,
        Method::POST,
        "/api/v1/enrollment-tokens",
        Some(&admin),
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let enrollment = body["token"].as_str().expect("token").to_string();
    let (status, body) = call(
        &base,
        Method::POST,
        "/api/v1/agents/enroll",
        None,
        Some(json!({"token": enrollment, "hostname": "edge-1"})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let agent = body["agent_token"]
        .as_str()
        .expect("agent token")
        .to_string();
    let proxy = body["proxy_id"].as_str().expect("proxy id").to_string();
    let (status, _) = call(
        &base,
        Method::POST,
        &format!("/api/v1/configs/{id}/proxies"),
        Some(&admin),
        Some(json!({"proxy_ids": [proxy]})),
    )
    .await;
    assert_eq!(status, 200);
    // 5. A long-poll sync returns the bundle.
    let (status, body) = call(
        &base,
        Method::GET,
        "/api/v1/sync?hostname=edge-1&wait=30",
        Some(&agent),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "bundle");
    assert!(
        body["files"]["parent.config"]
            .as_str()
            .expect("parent.config")
            .contains("go_direct=true")
    );
    // ...and the next one, with that hash, is woken by the next approval.
    let hash = body["hash"].as_str().expect("hash").to_string();
    let mut edited = policy.clone();
    edited["rules"].as_array_mut().expect("rules").insert(
        0,
        json!({"match": "domain_suffix", "value": "new.example", "action": "direct"}),
    );
    call(
        &base,
        Method::PUT,
        &format!("/api/v1/configs/{id}"),
        Some(&admin),
        Some(json!({"policy": edited})),
    )
    .await;
    call(
        &base,
        Method::POST,
        &format!("/api/v1/configs/{id}/submit"),
        Some(&admin),
        None,
    )
    .await;
    let poll_path = format!("/api/v1/sync?hostname=edge-1&hash={hash}&wait=30");
    let started = Instant::now();
    let poll = call(&base, Method::GET, &poll_path, Some(&agent), None);
    let approve = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        call(
            &base,
            Method::POST,
            &format!("/api/v1/configs/{id}/approve"),
            Some(&admin),
            None,
        )
        .await
    };
    let ((status, body), (approved, _)) = tokio::join!(poll, approve);
    assert_eq!((status, approved), (200, 200));
    assert_eq!(body["version"], 2, "{body}");
    assert!(started.elapsed() < Duration::from_secs(10));

    // Graceful stop on SIGTERM.
    let status = server.stop();
    assert!(status.success(), "{status:?}");

    // Restart on the same data dir: no new password; APM_ROOT_PASSWORD alone changes nothing.
    let mut server = Server::start(
        &data,
        &[("APM_ROOT_PASSWORD", "ignored-password")],
        &db_args,
    );
    let lines = server.wait_started();
    assert!(
        lines.iter().all(|l| !l.contains("root password")),
        "{}",
        lines.join("\n")
    );
    assert_eq!(login(&server.base, "root", &password).await.0, 200);
    assert_eq!(login(&server.base, "root", "ignored-password").await.0, 401);
    server.stop();
    // --reset-root-password with APM_ROOT_PASSWORD sets it.
    let mut server = Server::start(
        &data,
        &[("APM_ROOT_PASSWORD", "new-root-password")],
        &["--reset-root-password"],
    );
    server.wait_started();
    assert_eq!(
        login(&server.base, "root", "new-root-password").await.0,
        200
    );
    assert_eq!(login(&server.base, "root", &password).await.0, 401);
    server.stop();
}

#[test]
fn bad_settings_are_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("apm.toml");
    std::fs::write(
        &file,
        "listen = \"127.0.0.1:1\"\nsesion_idle_timeout_secs = 5\n",
    )
    .expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_apm"))
        .args(["server", "--config"])
        .arg(&file)
        .output()
        .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("sesion_idle_timeout_secs"), "{stderr}");
    let out = Command::new(env!("CARGO_BIN_EXE_apm"))
        .args(["server", "--database-url", "mysql://x/y", "--data-dir"])
        .arg(dir.path())
        .output()
        .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unsupported database URL"), "{stderr}");
}
