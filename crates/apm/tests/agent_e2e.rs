//! End to end with real components: the `apm` binary as server (SQLite in a temp dir) and as
//! agent, beside a real ATS 9.2 from the harness, with loopback parents and origins.
//!
//! `control_plane_drives_ats`: approve → applied within one long-poll, routes follow, the
//! server shows applied = desired; metrics arrive; a log-capture window ships lines and ends
//! by itself; the server is killed → ATS keeps routing and the agent backs off, then recovers
//! when the server returns; a config ATS refuses (unknown record) and one the agent refuses
//! (a record that clashes with the host's local records) → NACK with the detail, old config
//! still routes.
//!
//! `sigkill_during_apply_leaves_a_complete_set`: the agent is SIGKILLed between two renames;
//! the restarted agent restores the complete old set, then applies the new one.

#[path = "../../agent/tests/support/mod.rs"]
mod support;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use apm_testkit::ats::AtsInstance;
use serde_json::{Value, json};
use support::{World, local_records, route};

const ROOT_PW: &str = "root-password-for-agent-e2e";
const ADMIN_PW: &str = "alice-password-for-agent-e2e";

fn apm() -> &'static str {
    env!("CARGO_BIN_EXE_apm")
}

/// A child process killed (SIGKILL) and reaped on drop.
struct Proc {
    child: Option<Child>,
    name: &'static str,
}

impl Proc {
    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then wait for the exit status.
    fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = c.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                let _ = c.kill();
                let _ = c.wait();
                eprintln!("{} did not stop on SIGTERM", self.name);
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

struct Server {
    proc: Proc,
    port: u16,
    data: PathBuf,
}

impl Server {
    fn start(data: &Path, port: u16) -> Server {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data.join("server.log"))
            .expect("server log");
        let child = Command::new(apm())
            .args([
                "server",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--data-dir",
            ])
            .arg(data.join("db"))
            .env("APM_ROOT_PASSWORD", ROOT_PW)
            .env("APM_SYNC_JITTER_PERCENT", "0")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup"))
            .stderr(out)
            .spawn()
            .expect("start apm server");
        let s = Server {
            proc: Proc {
                child: Some(child),
                name: "apm server",
            },
            port,
            data: data.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "apm server did not listen:\n{}",
                s.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        s
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(self.data.join("server.log")).unwrap_or_default()
    }
}

struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .timeout(Duration::from_secs(30));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.unwrap_or_else(|e| panic!("{path}: {e}"));
        let status = r.status().as_u16();
        let body = r.json::<Value>().await.unwrap_or(Value::Null);
        (status, body)
    }

    async fn get(&self, path: &str) -> Value {
        let (status, body) = self.call(reqwest::Method::GET, path, None).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        let (status, body) = self.call(reqwest::Method::POST, path, Some(body)).await;
        assert!((200..300).contains(&status), "POST {path}: {status} {body}");
        body
    }

    async fn login(base: &str, username: &str, password: &str) -> Api {
        let http = reqwest::Client::new();
        let r = http
            .post(format!("{base}/api/v1/auth/login"))
            .json(&json!({"username": username, "password": password}))
            .send()
            .await
            .expect("login");
        let body: Value = r.json().await.expect("login body");
        let token = body["token"]
            .as_str()
            .unwrap_or_else(|| panic!("login {username}: {body}"))
            .to_owned();
        Api {
            http,
            base: base.to_owned(),
            token,
        }
    }

    /// Root creates the admin `alice`; returns her session.
    async fn admin(base: &str) -> Api {
        let root = Api::login(base, "root", ROOT_PW).await;
        root.post(
            "/api/v1/users",
            json!({"username": "alice", "password": ADMIN_PW, "role": "admin"}),
        )
        .await;
        Api::login(base, "alice", ADMIN_PW).await
    }

    /// Edits (creating a new version when active), submits and approves.
    async fn approve_policy(&self, config: &str, policy: Value) {
        let (status, body) = self
            .call(
                reqwest::Method::PUT,
                &format!("/api/v1/configs/{config}"),
                Some(json!({"policy": policy})),
            )
            .await;
        assert!((200..300).contains(&status), "edit: {status} {body}");
        self.post(&format!("/api/v1/configs/{config}/submit"), json!({}))
            .await;
        self.post(&format!("/api/v1/configs/{config}/approve"), json!({}))
            .await;
    }

    async fn proxy(&self, id: &str) -> Value {
        self.get(&format!("/api/v1/proxies/{id}")).await
    }

    /// Polls the proxy until `pred` holds.
    async fn wait_proxy(
        &self,
        id: &str,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let p = self.proxy(id).await;
            if pred(&p) {
                return p;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {p:#}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

struct AgentSetup {
    state_dir: PathBuf,
    local_records: PathBuf,
    log: PathBuf,
}

impl AgentSetup {
    fn new(dir: &Path, ats: &AtsInstance) -> AgentSetup {
        let local_records = dir.join("local.records");
        std::fs::write(&local_records, local_records_text(ats)).expect("local records");
        AgentSetup {
            state_dir: dir.join("agent-state"),
            local_records,
            log: dir.join("agent.log"),
        }
    }

    fn spawn(&self, ats: &AtsInstance, backend: &str, token: Option<&str>, extra: &[&str]) -> Proc {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("agent log");
        let mut cmd = Command::new(apm());
        cmd.args(["agent", "--backend-url", backend, "--hostname", "edge-1"])
            .args([
                "--sync-interval",
                "3s",
                "--backoff-initial",
                "300ms",
                "--backoff-max",
                "1s",
            ])
            .args([
                "--metrics-interval",
                "1s",
                "--capture-flush",
                "500ms",
                "--capture-max",
                "40s",
            ])
            .args([
                "--confirm-timeout",
                "60s",
                "--nudge-interval",
                "5s",
                "--hang-timeout",
                "4s",
            ])
            .args(["--request-timeout", "5s", "--failed-retry", "10m"])
            .arg("--ats-runroot")
            .arg(ats.runroot_file())
            .arg("--state-dir")
            .arg(&self.state_dir)
            .arg("--local-records")
            .arg(&self.local_records)
            .args(extra)
            .env("RUST_LOG", "info,apm_agent=debug")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup"))
            .stderr(out);
        if let Some(t) = token {
            cmd.args(["--enroll-token", t]);
        }
        Proc {
            child: Some(cmd.spawn().expect("start apm agent")),
            name: "apm agent",
        }
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn tail(&self, n: usize) -> String {
        let text = self.logs();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    fn status_json(&self) -> Value {
        let out = Command::new(apm())
            .args(["agent", "status", "--json", "--state-dir"])
            .arg(&self.state_dir)
            .output()
            .expect("apm agent status");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("status json")
    }
}

fn local_records_text(ats: &AtsInstance) -> String {
    local_records(ats)
}

/// Waits until the agent enrolled; returns the proxy id.
async fn enrolled_proxy(admin: &Api, agent: &AgentSetup) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let list = admin.get("/api/v1/proxies").await;
        if let Some(p) = list
            .as_array()
            .and_then(|a| a.iter().find(|p| p["hostname"] == "edge-1"))
        {
            return p["id"].as_str().expect("id").to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "agent never enrolled:\n{}",
            agent.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn in_sync(p: &Value) -> bool {
    p["desired_hash"].is_string() && p["desired_hash"] == p["applied_hash"]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_plane_drives_ats() {
    let w = World::new();
    let ats = w.start_ats(&w.bundle("p1"));
    let url = w.internet_url("/e2e");
    assert_eq!(route(&ats, &url), (200, "p1".to_owned()));

    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let mut server = Server::start(dir.path(), port);
    let admin = Api::admin(&server.url()).await;
    let created = admin
        .post(
            "/api/v1/configs",
            json!({"name": "edge", "description": "e2e", "policy": w.policy_json("p2")}),
        )
        .await;
    let config = created["id"].as_str().expect("config id").to_owned();
    let token = admin.post("/api/v1/enrollment-tokens", json!({})).await["token"]
        .as_str()
        .expect("token")
        .to_owned();
    let agent = AgentSetup::new(dir.path(), &ats);
    let mut agent_proc = agent.spawn(&ats, &server.url(), Some(&token), &[]);
    let proxy = enrolled_proxy(&admin, &agent).await;
    admin
        .post(
            &format!("/api/v1/configs/{config}/proxies"),
            json!({"proxy_ids": [proxy]}),
        )
        .await;

    // Approve → applied within one long-poll; the server shows applied = desired.
    admin
        .post(&format!("/api/v1/configs/{config}/submit"), json!({}))
        .await;
    let approved = Instant::now();
    admin
        .post(&format!("/api/v1/configs/{config}/approve"), json!({}))
        .await;
    let p = admin
        .wait_proxy(
            &proxy,
            "applied = desired",
            Duration::from_secs(90),
            in_sync,
        )
        .await;
    eprintln!("config applied {:?} after approval", approved.elapsed());
    assert_eq!(
        route(&ats, &url),
        (200, "p2".to_owned()),
        "{}",
        agent.logs()
    );
    assert_eq!(
        p["ats_version"].as_str().map(|v| v.starts_with("9.")),
        Some(true),
        "{p:#}"
    );
    assert_eq!(p["os"], std::env::consts::OS);
    assert_eq!(p["arch"], std::env::consts::ARCH);
    let status = agent.status_json();
    assert_eq!(status["running_hash"], p["applied_hash"], "{status:#}");
    // The credential is kept in the state dir, private.
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(agent.state_dir.join("credential"))
            .expect("credential")
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);

    // Metrics samples arrive.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let stats = admin.get(&format!("/api/v1/proxies/{proxy}/stats")).await;
        if stats
            .to_string()
            .contains("proxy.process.http.incoming_requests")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no metrics: {stats}\n{}",
            agent.logs()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // A log-capture window ships lines and ends by itself (the agent's maximum is 40 s here).
    // Debug output may take ATS 9.2 up to ~30 s to switch on (`traffic_ctl config set` on a
    // loaded host), so the test also makes diags.log speak: the primary parent goes away while
    // the window is open, and ATS logs it as marked down.
    admin
        .post(
            &format!("/api/v1/proxies/{proxy}/logs"),
            json!({"duration_minutes": 1}),
        )
        .await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut parent_stopped = false;
    let captured = loop {
        if !parent_stopped && !agent.status_json()["capture"].is_null() {
            w.p2.stop();
            parent_stopped = true;
        }
        let _ = route(&ats, &w.internet_url("/captured"));
        let logs = admin.get(&format!("/api/v1/proxies/{proxy}/logs")).await;
        let lines: Vec<String> = logs["lines"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|l| l["line"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        if !lines.is_empty() {
            break lines;
        }
        assert!(
            Instant::now() < deadline,
            "no captured lines\n{}",
            agent.tail(40)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    eprintln!(
        "captured {} lines, first: {:?}",
        captured.len(),
        captured.first()
    );
    assert!(
        captured
            .iter()
            .all(|l| l.starts_with("diags.log: ") || l.starts_with("traffic.out: ")),
        "{captured:?}"
    );
    w.p2.restart().expect("restart p2");
    // The agent dies mid-window (SIGKILL: no cleanup); the window and the previous debug
    // settings are in its state dir, so the restarted agent still restores them at the end.
    let open = agent.status_json()["capture"].clone();
    assert!(!open.is_null(), "the window should still be open");
    assert_eq!(open["previous_enabled"], "0", "{open:#}");
    agent_proc.kill();
    let raised = ats
        .traffic_ctl(&["config", "get", "proxy.config.diags.debug.enabled"])
        .expect("config get");
    assert!(
        raised.stdout.contains(": 1"),
        "debug not raised: {}",
        raised.stdout
    );
    agent_proc = agent.spawn(&ats, &server.url(), None, &[]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !agent.status_json()["capture"].is_null() {
        assert!(
            Instant::now() < deadline,
            "capture window never ended\n{}",
            agent.logs()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let enabled = ats
        .traffic_ctl(&["config", "get", "proxy.config.diags.debug.enabled"])
        .expect("config get");
    assert!(
        enabled.stdout.contains(": 0"),
        "debug not restored: {}",
        enabled.stdout
    );

    // p2 was marked down; once ATS retries it (retry_time 4 s) it is the primary again.
    let deadline = Instant::now() + Duration::from_secs(30);
    while route(&ats, &url) != (200, "p2".to_owned()) {
        assert!(Instant::now() < deadline, "p2 never came back");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Control plane gone: ATS keeps routing with the last config, the agent backs off.
    server.proc.kill();
    for _ in 0..3 {
        assert_eq!(route(&ats, &url), (200, "p2".to_owned()));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = agent.status_json();
        if s["last_error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("unreachable"))
        {
            break;
        }
        assert!(Instant::now() < deadline, "agent did not notice: {s:#}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(agent.logs().contains("retry_in"), "no backoff logged");
    assert_eq!(route(&ats, &url), (200, "p2".to_owned()));

    // It returns: the agent recovers and applies what is approved next.
    server = Server::start(dir.path(), port);
    let admin = Api::login(&server.url(), "alice", ADMIN_PW).await;
    admin.approve_policy(&config, w.policy_json("p1")).await;
    let p = admin
        .wait_proxy(
            &proxy,
            "recovery after the outage",
            Duration::from_secs(90),
            in_sync,
        )
        .await;
    assert_eq!(
        route(&ats, &url),
        (200, "p1".to_owned()),
        "{}",
        agent.logs()
    );
    let good_hash = p["applied_hash"].clone();

    // ATS refuses a record it does not know: files restored, old config routes, NACK shown.
    let mut unknown = w.policy_json("p2");
    unknown["ats_records"]["proxy.config.nonexistent.thing"] = json!(3);
    admin.approve_policy(&config, unknown).await;
    let p = admin
        .wait_proxy(
            &proxy,
            "the NACK of the refused config",
            Duration::from_secs(120),
            |p| {
                p["last_error"]
                    .as_str()
                    .is_some_and(|e| e.contains("Unrecognized configuration value"))
            },
        )
        .await;
    assert_eq!(p["applied_hash"], good_hash, "{p:#}");
    assert!(!in_sync(&p));
    assert_eq!(
        route(&ats, &url),
        (200, "p1".to_owned()),
        "{}",
        agent.logs()
    );

    // The agent refuses a bundle that would override a host-local record: nothing written.
    let mut clash = w.policy_json("p2");
    clash["ats_records"]["proxy.config.admin.user_id"] = json!("nobody");
    admin.approve_policy(&config, clash).await;
    let p = admin
        .wait_proxy(
            &proxy,
            "the NACK of the clashing config",
            Duration::from_secs(60),
            |p| {
                p["last_error"]
                    .as_str()
                    .is_some_and(|e| e.contains("proxy.config.admin.user_id"))
            },
        )
        .await;
    assert_eq!(p["applied_hash"], good_hash, "{p:#}");
    assert_eq!(route(&ats, &url), (200, "p1".to_owned()));

    // SIGTERM: a clean exit.
    let status = agent_proc
        .terminate(Duration::from_secs(20))
        .expect("agent exited");
    assert!(status.success(), "agent exit {status:?}\n{}", agent.logs());
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_apply_leaves_a_complete_set() {
    let w = World::new();
    let ats = w.start_ats(&w.bundle("p1"));
    let url = w.internet_url("/kill");
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), free_port());
    let admin = Api::admin(&server.url()).await;
    let created = admin
        .post(
            "/api/v1/configs",
            json!({"name": "edge", "description": "e2e", "policy": w.policy_json("p1")}),
        )
        .await;
    let config = created["id"].as_str().expect("config id").to_owned();
    let token = admin.post("/api/v1/enrollment-tokens", json!({})).await["token"]
        .as_str()
        .expect("token")
        .to_owned();
    let agent = AgentSetup::new(dir.path(), &ats);
    let mut first = agent.spawn(&ats, &server.url(), Some(&token), &[]);
    let proxy = enrolled_proxy(&admin, &agent).await;
    admin
        .post(
            &format!("/api/v1/configs/{config}/proxies"),
            json!({"proxy_ids": [proxy]}),
        )
        .await;
    admin
        .post(&format!("/api/v1/configs/{config}/submit"), json!({}))
        .await;
    admin
        .post(&format!("/api/v1/configs/{config}/approve"), json!({}))
        .await;
    admin
        .wait_proxy(&proxy, "first apply", Duration::from_secs(90), in_sync)
        .await;
    let names = ["ip_allow.yaml", "parent.config", "records.config"];
    let read_set = || -> Vec<String> {
        names
            .iter()
            .map(|n| std::fs::read_to_string(ats.config_dir().join(n)).unwrap_or_default())
            .collect()
    };
    let old_set = read_set();
    // The same agent, restarted with a pause between renames, so the kill lands mid-apply.
    first.kill();
    let mut slow = agent.spawn(&ats, &server.url(), None, &["--apply-step-delay", "20s"]);
    admin.approve_policy(&config, w.policy_json("p2")).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = read_set();
        if now != old_set {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the slow apply never started\n{}",
            agent.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pid = slow.pid();
    slow.kill();
    let mixed = read_set();
    let changed = mixed.iter().zip(&old_set).filter(|(a, b)| a != b).count();
    eprintln!(
        "killed agent {pid} with {changed} of {} files renamed",
        names.len()
    );
    assert!(
        agent.state_dir.join("apply-journal.json").exists(),
        "journal missing at the kill"
    );

    // Restarted: the complete old set comes back first (the server is stopped so the new
    // bundle cannot be re-applied before we look), then the new one once it syncs.
    let mut server = server;
    server.proc.kill();
    let mut again = agent.spawn(&ats, &server.url(), None, &[]);
    let deadline = Instant::now() + Duration::from_secs(90);
    while agent.state_dir.join("apply-journal.json").exists() {
        assert!(
            Instant::now() < deadline,
            "recovery never finished\n{}",
            agent.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        read_set(),
        old_set,
        "after recovery the config dir must hold the complete old set"
    );
    assert_eq!(route(&ats, &url), (200, "p1".to_owned()));
    let server = Server::start(dir.path(), server.port);
    let admin = Api::login(&server.url(), "alice", ADMIN_PW).await;
    let p = admin
        .wait_proxy(
            &proxy,
            "the new config after recovery",
            Duration::from_secs(120),
            in_sync,
        )
        .await;
    let new_set = read_set();
    assert_ne!(new_set, old_set);
    assert_eq!(
        route(&ats, &url),
        (200, "p2".to_owned()),
        "{p:#}\n{}",
        agent.logs()
    );
    again.kill();
}

#[test]
fn misconfiguration_gets_a_clear_error_and_its_own_exit_code() {
    let dir = tempfile::tempdir().expect("tempdir");
    let etc = dir.path().join("etc");
    let log = dir.path().join("log");
    std::fs::create_dir_all(&etc).expect("etc");
    std::fs::create_dir_all(&log).expect("log");
    let run = |args: &[&str]| {
        let out = Command::new(apm())
            .arg("agent")
            .args(args)
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .output()
            .expect("run apm agent");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let etc_s = etc.to_str().expect("utf8");
    let log_s = log.to_str().expect("utf8");
    let base = [
        "--config-dir",
        etc_s,
        "--log-dir",
        log_s,
        "--log-format",
        "text",
    ];
    let cases: Vec<(Vec<&str>, u8, &str)> = vec![
        (vec!["--backend-url", "manager:8080"], 10, "--backend-url"),
        (vec!["--backend-url", "ftp://x"], 10, "scheme"),
        (vec![], 10, "missing"),
        (
            vec![
                "--backend-url",
                "http://127.0.0.1:1",
                "--config-dir",
                "/nonexistent/etc",
            ],
            11,
            "--config-dir /nonexistent/etc",
        ),
        (
            vec![
                "--backend-url",
                "http://127.0.0.1:1",
                "--traffic-ctl",
                "/nonexistent/traffic_ctl",
            ],
            12,
            "--traffic-ctl /nonexistent/traffic_ctl",
        ),
        (
            vec![
                "--backend-url",
                "http://127.0.0.1:1",
                "--hostname",
                "bad host",
            ],
            17,
            "--hostname",
        ),
        (
            vec!["--backend-url", "http://127.0.0.1:1"],
            14,
            "no credential",
        ),
    ];
    for (args, code, needle) in cases {
        // Later flags win over the base ones, so a case can replace --config-dir.
        let mut all: Vec<&str> = Vec::new();
        let overrides = |flag: &str| args.contains(&flag);
        for pair in base.chunks(2) {
            if !overrides(pair[0]) {
                all.extend_from_slice(pair);
            }
        }
        all.extend(args.iter().copied());
        let (got, stderr) = run(&all);
        assert_eq!(got, Some(i32::from(code)), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
    // A state dir that is a file.
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, "").expect("file");
    let out = Command::new(apm())
        .args([
            "agent",
            "--backend-url",
            "http://127.0.0.1:1",
            "--log-format",
            "text",
        ])
        .args(["--config-dir", etc_s, "--log-dir", log_s, "--state-dir"])
        .arg(&file)
        .output()
        .expect("run");
    assert_eq!(
        out.status.code(),
        Some(13),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Status of a state dir that does not exist.
    let out = Command::new(apm())
        .args(["agent", "status", "--state-dir", "/nonexistent/state"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(13));
}
