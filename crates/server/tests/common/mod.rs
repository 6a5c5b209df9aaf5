//! Shared test harness: an in-process `apm server` on a free loopback port, on SQLite (temp dir)
//! or on the test process's real PostgreSQL (one cluster per process, one database per server).
#![allow(dead_code)]

use std::time::Duration;

use apm_server::{RunningServer, Settings};
use reqwest::{Method, StatusCode, header::HeaderMap};
use serde_json::{Value, json};

/// The two databases every test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    /// Embedded SQLite in a temp dir.
    Sqlite,
    /// Real PostgreSQL started by apm-testkit.
    Postgres,
}

/// Root's password in tests.
pub const ROOT_PW: &str = "root-password-for-tests";

/// Generates a `sqlite` and a `postgres` test for each async fn `name(db: Db)`.
#[macro_export]
macro_rules! both_dbs {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn sqlite() {
                    super::$name($crate::common::Db::Sqlite).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn postgres() {
                    super::$name($crate::common::Db::Postgres).await
                }
            }
        )*
    };
}

/// A running server and an HTTP client for it.
pub struct Srv {
    /// The server.
    pub server: RunningServer,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// Client without cookies.
    pub http: reqwest::Client,
    /// The database URL (to start replicas on the same database).
    pub database_url: String,
    _dir: tempfile::TempDir,
}

/// A database URL for a fresh, empty database of the kind.
pub async fn fresh_database(db: Db, dir: &std::path::Path) -> String {
    match db {
        Db::Sqlite => format!("sqlite://{}", dir.join("apm.db").display()),
        Db::Postgres => tokio::task::spawn_blocking(|| {
            apm_testkit::postgres::Postgres::shared()
                .and_then(|pg| pg.fresh_database())
                .expect("test PostgreSQL (run scripts/install-test-deps.sh)")
        })
        .await
        .expect("join"),
    }
}

/// Test settings: free port, fast knobs left at defaults unless `tweak` changes them.
pub fn settings(database_url: &str, dir: &std::path::Path) -> Settings {
    Settings {
        listen: "127.0.0.1:0".parse().expect("addr"),
        data_dir: dir.to_path_buf(),
        database_url: Some(database_url.to_string()),
        database_max_connections: 8,
        root_password: Some(ROOT_PW.to_string()),
        replica_poll_ms: 200,
        ..Settings::default()
    }
}

impl Srv {
    /// Starts a server on a fresh database.
    pub async fn start(db: Db) -> Srv {
        Srv::start_with(db, |_| {}).await
    }

    /// Starts a server on a fresh database with adjusted settings.
    pub async fn start_with(db: Db, tweak: impl FnOnce(&mut Settings)) -> Srv {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = fresh_database(db, dir.path()).await;
        Srv::start_on(&url, dir, tweak).await
    }

    /// Starts a server on an existing database (a second replica).
    pub async fn start_on(
        url: &str,
        dir: tempfile::TempDir,
        tweak: impl FnOnce(&mut Settings),
    ) -> Srv {
        let mut s = settings(url, dir.path());
        tweak(&mut s);
        let server = apm_server::spawn(s).await.expect("server starts");
        Srv {
            base: server.url(),
            server,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("client"),
            database_url: url.to_string(),
            _dir: dir,
        }
    }

    /// Sends a request; returns status, JSON body (Null when empty / not JSON) and headers.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Resp {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        Resp::from(req.send().await.expect("request sent")).await
    }

    /// GET.
    pub async fn get(&self, path: &str, token: &str) -> Resp {
        self.call(Method::GET, path, Some(token), None).await
    }

    /// POST with a JSON body.
    pub async fn post(&self, path: &str, token: &str, body: Value) -> Resp {
        self.call(Method::POST, path, Some(token), Some(body)).await
    }

    /// PUT with a JSON body.
    pub async fn put(&self, path: &str, token: &str, body: Value) -> Resp {
        self.call(Method::PUT, path, Some(token), Some(body)).await
    }

    /// Logs in, returns the session token.
    pub async fn login(&self, username: &str, password: &str) -> String {
        let r = self
            .call(
                Method::POST,
                "/api/v1/auth/login",
                None,
                Some(json!({"username": username, "password": password})),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "login {username}: {}", r.body);
        r.body["token"].as_str().expect("token").to_string()
    }

    /// Root's session token.
    pub async fn root(&self) -> String {
        self.login("root", ROOT_PW).await
    }

    /// Creates a user (as `by`) and logs them in; returns (user id, session token).
    pub async fn user(&self, by: &str, username: &str, role: &str) -> (String, String) {
        let pw = format!("{username}-password");
        let r = self
            .post(
                "/api/v1/users",
                by,
                json!({"username": username, "password": pw, "role": role}),
            )
            .await;
        assert_eq!(
            r.status,
            StatusCode::CREATED,
            "create {username}: {}",
            r.body
        );
        let id = r.body["id"].as_str().expect("id").to_string();
        (id, self.login(username, &pw).await)
    }

    /// Creates a config from the template policy; returns its id.
    pub async fn config(&self, admin: &str, name: &str) -> String {
        let r = self
            .post(
                "/api/v1/configs",
                admin,
                json!({"name": name, "description": "test", "policy": policy()}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "create config: {}", r.body);
        r.body["id"].as_str().expect("id").to_string()
    }

    /// Submits and approves (self_confirm: same admin).
    pub async fn activate(&self, admin: &str, config: &str) {
        let r = self
            .post(
                &format!("/api/v1/configs/{config}/submit"),
                admin,
                json!({}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "submit: {}", r.body);
        let r = self
            .post(
                &format!("/api/v1/configs/{config}/approve"),
                admin,
                json!({}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "approve: {}", r.body);
    }

    /// Creates an enrollment token and enrolls `hostname`; returns (proxy id, agent token).
    pub async fn enroll(&self, admin: &str, hostname: &str) -> (String, String) {
        let r = self
            .post("/api/v1/enrollment-tokens", admin, json!({}))
            .await;
        assert_eq!(
            r.status,
            StatusCode::CREATED,
            "enrollment token: {}",
            r.body
        );
        let token = r.body["token"].as_str().expect("token").to_string();
        let r = self
            .call(
                Method::POST,
                "/api/v1/agents/enroll",
                None,
                Some(json!({"token": token, "hostname": hostname})),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "enroll: {}", r.body);
        (
            r.body["proxy_id"].as_str().expect("proxy_id").to_string(),
            r.body["agent_token"]
                .as_str()
                .expect("agent_token")
                .to_string(),
        )
    }

    /// Number of audit rows.
    pub async fn audit_count(&self) -> i64 {
        let mut conn = self.server.state.db.pool().acquire().await.expect("conn");
        apm_store::audit::count(&mut conn).await.expect("count")
    }
}

/// A response, read fully.
#[derive(Debug)]
pub struct Resp {
    /// Status.
    pub status: StatusCode,
    /// JSON body or Null.
    pub body: Value,
    /// Raw text.
    pub text: String,
    /// Headers.
    pub headers: HeaderMap,
}

impl Resp {
    async fn from(r: reqwest::Response) -> Resp {
        let status = r.status();
        let headers = r.headers().clone();
        let text = r.text().await.expect("body");
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Resp {
            status,
            body,
            text,
            headers,
        }
    }

    /// Content-Type.
    pub fn content_type(&self) -> &str {
        self.headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// Asserts an RFC 9457 problem with this status; returns the detail.
    pub fn problem(&self, status: StatusCode) -> String {
        assert_eq!(
            self.status, status,
            "expected {status}, got {}: {}",
            self.status, self.text
        );
        assert_eq!(
            self.content_type(),
            "application/problem+json",
            "{}",
            self.text
        );
        assert_eq!(
            self.body["status"].as_u64(),
            Some(u64::from(status.as_u16()))
        );
        assert!(
            self.body["type"].as_str().is_some_and(|t| !t.is_empty()),
            "{}",
            self.text
        );
        assert!(self.body["title"].as_str().is_some(), "{}", self.text);
        let detail = self.body["detail"].as_str().expect("detail").to_string();
        assert!(!detail.is_empty());
        detail
    }
}

/// The template policy as JSON.
pub fn policy() -> Value {
    serde_json::to_value(apm_policy::template::default_policy()).expect("policy json")
}

/// The template policy with one more DIRECT domain rule (a different bundle).
pub fn policy_with_domain(domain: &str) -> Value {
    let mut p = policy();
    p["rules"].as_array_mut().expect("rules").insert(
        0,
        json!({"match": "domain_suffix", "value": domain, "action": "direct"}),
    );
    p
}
