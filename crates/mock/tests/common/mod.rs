//! Shared test harness: a local origin service, a recorder and a mock server on loopback, and
//! the request set the round-trip tests replay.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use apm_capture::{Pipeline, PipelineConfig, Sanitizer};
use apm_mock::http::{Resp, response};
use apm_mock::record::Recorder;
use apm_mock::server::{MockState, handle};
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::StatusCode;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

pub mod wiremock;

/// A running server; dropping it stops it.
pub struct Running {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Running {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops the server and waits for in-flight requests.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

pub async fn spawn<F, Fut>(handler: F) -> Running
where
    F: Fn(hyper::Request<hyper::body::Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Resp> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(apm_mock::http::serve(
        listener,
        handler,
        async move {
            let _ = rx.await;
        },
        Duration::from_secs(5),
    ));
    Running {
        addr,
        stop: Some(tx),
        task: Some(task),
    }
}

fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

/// The origin service being recorded.
pub async fn origin() -> Running {
    spawn(|req: hyper::Request<hyper::body::Incoming>| async move {
        let method = req.method().as_str().to_string();
        let path = req.uri().path().to_string();
        let query = req.uri().query().unwrap_or("").to_string();
        let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        let json = |status: StatusCode, v: serde_json::Value| {
            let mut r = response(status, "application/json", serde_json::to_vec_pretty(&v).unwrap());
            r.headers_mut().insert("x-origin", "yes".parse().unwrap());
            r
        };
        match (method.as_str(), path.as_str()) {
            ("GET", "/v1/products") if query.contains("category=books") => json(
                StatusCode::OK,
                serde_json::json!({"items": [{"sku": "B-1", "title": "Dune"}, {"sku": "B-2", "title": "Emma"}], "page": 2}),
            ),
            ("GET", "/v1/products") => json(
                StatusCode::OK,
                serde_json::json!({"items": [{"sku": "G-9", "title": "Chess"}], "query": query}),
            ),
            ("POST", "/v1/orders") => {
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                json(
                    StatusCode::CREATED,
                    serde_json::json!({"order_id": "ORD-2026-000777", "qty": v["qty"], "contact": v["email"]}),
                )
            }
            ("GET", "/v1/gz") => {
                let mut r = response(StatusCode::OK, "text/plain", gzip(b"compressed hello, 2026-11-21"));
                r.headers_mut().insert("content-encoding", "gzip".parse().unwrap());
                r
            }
            ("GET", "/v1/text") => response(StatusCode::OK, "text/plain; charset=utf-8", "plain hello\n"),
            ("GET", "/v1/binary") => response(StatusCode::OK, "application/octet-stream", Bytes::from_static(&[0, 1, 2, 255, 254])),
            ("DELETE", p) if p.starts_with("/v1/orders/") => response(StatusCode::NO_CONTENT, "text/plain", ""),
            ("GET", p) if p.starts_with("/v1/users/") => json(
                StatusCode::OK,
                serde_json::json!({"name": "Ana", "email": "ana@example.com", "cpf": "529.982.247-25", "plan": "gold"}),
            ),
            ("POST", "/v1/login") => response(StatusCode::OK, "text/plain", format!("welcome, {} bytes", body.len())),
            _ => json(StatusCode::NOT_FOUND, serde_json::json!({"error": "not found", "path": path})),
        }
    })
    .await
}

/// A request of the replay set.
#[derive(Clone, Debug)]
pub struct Req {
    pub method: &'static str,
    pub path_and_query: String,
    pub headers: Vec<(&'static str, &'static str)>,
    pub body: Vec<u8>,
}

fn req(method: &'static str, pq: &str) -> Req {
    Req {
        method,
        path_and_query: pq.to_string(),
        headers: Vec::new(),
        body: Vec::new(),
    }
}

/// The requests recorded and replayed.
pub fn requests() -> Vec<Req> {
    let mut order = req("POST", "/v1/orders");
    order.headers.push(("content-type", "application/json"));
    order.body = br#"{"sku": "A-1", "qty": 2, "email": "ana@example.com"}"#.to_vec();
    let mut login = req("POST", "/v1/login");
    login
        .headers
        .push(("content-type", "application/x-www-form-urlencoded"));
    login.body = b"user=ana&password=hunter2".to_vec();
    vec![
        req("GET", "/v1/products?category=books&page=2"),
        req("GET", "/v1/products?category=games"),
        order,
        req("GET", "/v1/gz"),
        req("GET", "/v1/text"),
        req("GET", "/v1/binary"),
        req("DELETE", "/v1/orders/ORD-2026-000777"),
        req("GET", "/v1/users/ana%40example.com/profile"),
        req("GET", "/v1/nothing-here"),
        login,
        // A repeat: deduped.
        req("GET", "/v1/text"),
    ]
}

/// What a client saw.
#[derive(Clone, Debug, PartialEq)]
pub struct Seen {
    pub status: u16,
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
    pub body: Vec<u8>,
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

pub async fn send(client: &reqwest::Client, base: &str, r: &Req) -> Seen {
    let mut b = client.request(
        reqwest::Method::from_bytes(r.method.as_bytes()).unwrap(),
        format!("{base}{}", r.path_and_query),
    );
    for (k, v) in &r.headers {
        b = b.header(*k, *v);
    }
    let resp = b.body(r.body.clone()).send().await.expect("request");
    let h = |n: &str| {
        resp.headers()
            .get(n)
            .map(|v| v.to_str().unwrap().to_string())
    };
    let (content_type, content_encoding) = (h("content-type"), h("content-encoding"));
    Seen {
        status: resp.status().as_u16(),
        content_type,
        content_encoding,
        body: resp.bytes().await.unwrap().to_vec(),
    }
}

/// Records `requests()` through a recorder in front of `origin`; returns what the client saw
/// and the recorder (for mappings, report and metrics).
pub async fn record(origin: &Running) -> (Vec<Seen>, Arc<Recorder>) {
    let pipeline = Pipeline::new(PipelineConfig::default(), Sanitizer::builtin());
    let recorder = Recorder::new(&origin.url(), pipeline, "test", None).expect("recorder");
    let r = recorder.clone();
    let proxy = spawn(move |req| r.clone().handle(req)).await;
    let c = client();
    let mut seen = Vec::new();
    for rq in requests() {
        seen.push(send(&c, &proxy.url(), &rq).await);
    }
    proxy.stop().await;
    (seen, recorder)
}

/// Serves a mapping directory with `apm mock serve`'s library.
pub async fn mock(dir: &std::path::Path) -> (Running, Arc<MockState>) {
    let (mappings, errors) = apm_mock::files::read_mappings(dir).expect("read mappings");
    assert!(errors.is_empty(), "{errors:?}");
    let (state, rejected) = MockState::new(mappings);
    assert!(rejected.is_empty(), "{rejected:?}");
    let s = state.clone();
    (spawn(move |req| handle(s.clone(), req)).await, state)
}

pub fn gunzip(b: &[u8]) -> Vec<u8> {
    use std::io::Read as _;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(b)
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// True when two bodies are the same document (JSON compared semantically, else bytes).
pub fn same_body(a: &[u8], b: &[u8]) -> bool {
    match (
        serde_json::from_slice::<serde_json::Value>(a),
        serde_json::from_slice::<serde_json::Value>(b),
    ) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}
