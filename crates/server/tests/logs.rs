//! Logs are JSON lines; every line written while serving a request carries its request id; no
//! secret (password, session token, API token, agent credential, enrollment token) is ever
//! written, even at debug level.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use common::{Db, ROOT_PW, Srv};
use reqwest::Method;
use serde_json::{Value, json};

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// One process-wide JSON subscriber writing into a buffer, configured like `apm server`'s.
fn captured() -> &'static Buffer {
    static BUFFER: OnceLock<Buffer> = OnceLock::new();
    BUFFER.get_or_init(|| {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        tracing_subscriber::fmt()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_env_filter("debug")
            .with_writer(move || writer.clone())
            .try_init()
            .expect("the only subscriber of this test binary");
        buffer
    })
}

both_dbs!(json_logs_have_request_ids_and_no_secrets);

async fn json_logs_have_request_ids_and_no_secrets(db: Db) {
    let buffer = captured();
    let s = Srv::start(db).await;
    let root = s.root().await;
    let (_, admin) = s.user(&root, "alice", "admin").await;
    let api = s
        .post("/api/v1/tokens", &admin, json!({"name": "ci"}))
        .await
        .body["token"]
        .as_str()
        .expect("t")
        .to_string();
    let r = s.post("/api/v1/enrollment-tokens", &admin, json!({})).await;
    let enrollment = r.body["token"].as_str().expect("t").to_string();
    let r = s
        .call(
            Method::POST,
            "/api/v1/agents/enroll",
            None,
            Some(json!({"token": enrollment, "hostname": "edge-9"})),
        )
        .await;
    let agent = r.body["agent_token"].as_str().expect("t").to_string();
    s.get("/api/v1/sync?hostname=edge-9&wait=0", &agent).await;
    s.get("/api/v1/configs", &api).await;
    s.call(
        Method::POST,
        "/api/v1/auth/login",
        None,
        Some(json!({"username": "root", "password": "Wrong-Secret-77"})),
    )
    .await;
    s.server.state.db.close().await;

    let text = String::from_utf8(buffer.0.lock().expect("lock").clone()).expect("utf8");
    for secret in [
        ROOT_PW,
        "alice-password",
        "Wrong-Secret-77",
        root.as_str(),
        admin.as_str(),
        api.as_str(),
        enrollment.as_str(),
        agent.as_str(),
    ] {
        assert!(!text.contains(secret), "a secret reached the log: {secret}");
    }
    let mut request_lines = 0;
    let mut responses = 0;
    for line in text.lines() {
        let v: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        if v["span"]["name"] == "request" {
            request_lines += 1;
            let id = v["span"]["request_id"].as_str().expect("request_id");
            assert_eq!(id.len(), 36, "{line}");
            if v["fields"]["message"] == "response" {
                responses += 1;
                assert!(v["fields"]["status"].is_u64(), "{line}");
            }
        }
    }
    assert!(
        responses >= 8,
        "expected one response line per request, got {responses}\n{text}"
    );
    assert!(request_lines >= responses);
}
