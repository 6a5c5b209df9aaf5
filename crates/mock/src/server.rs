//! `apm mock serve`: a mock server for the WireMock mapping subset, with WireMock's admin
//! subset so it can be loaded like WireMock.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use apm_capture::metrics::{MetricKind, Registry};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use serde_json::{Value, json};

use crate::files::{FileError, LoadedMapping};
use crate::http::{Resp, json as json_resp, response};
use crate::store::Store;
use crate::stub::{RequestView, Stub};

/// Largest request body accepted (admin imports of many stubs included).
const MAX_BODY: usize = 64 * 1024 * 1024;

/// Shared state of a running mock server.
pub struct MockState {
    store: RwLock<Store>,
    defaults: Vec<Value>,
    scenarios: Mutex<HashMap<String, String>>,
    matched: AtomicU64,
    unmatched: AtomicU64,
    admin: AtomicU64,
    id_counter: AtomicU64,
}

fn lock_err<T>(e: std::sync::PoisonError<T>) -> T {
    // A panic while holding the lock cannot leave the store half-updated in a way that
    // matters more than refusing all further requests would.
    e.into_inner()
}

impl MockState {
    /// A server state with these mappings as its defaults (what `/__admin/reset` restores).
    /// Returns the state and the mappings that were rejected.
    pub fn new(mappings: Vec<LoadedMapping>) -> (Arc<Self>, Vec<FileError>) {
        let mut state = MockState {
            store: RwLock::new(Store::new()),
            defaults: Vec::new(),
            scenarios: Mutex::new(HashMap::new()),
            matched: AtomicU64::new(0),
            unmatched: AtomicU64::new(0),
            admin: AtomicU64::new(0),
            id_counter: AtomicU64::new(0),
        };
        let mut errors = Vec::new();
        let mut defaults = Vec::new();
        {
            let mut store = state.store.write().unwrap_or_else(lock_err);
            for m in mappings {
                match Stub::parse(m.mapping, || state.fresh_id()) {
                    Ok(stub) => {
                        defaults.push(stub.mapping.clone());
                        store.insert(stub);
                    }
                    Err(e) => errors.push(FileError {
                        file: m.origin,
                        message: e.0,
                    }),
                }
            }
        }
        state.defaults = defaults;
        (Arc::new(state), errors)
    }

    fn fresh_id(&self) -> String {
        // Random-looking, unique per server: time + counter through SHA-256 would be overkill;
        // WireMock only needs a UUID-shaped unique string.
        let n = self.id_counter.fetch_add(1, Ordering::Relaxed);
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let x = format!("{:016x}{:016x}", (t as u64) ^ 0x5bd1_e995_0000_0000, n);
        format!(
            "{}-{}-4{}-8{}-{}",
            &x[0..8],
            &x[8..12],
            &x[13..16],
            &x[17..20],
            &x[20..32]
        )
    }

    /// Number of stubs.
    pub fn stub_count(&self) -> usize {
        self.store.read().unwrap_or_else(lock_err).len()
    }

    /// Prometheus text for `/metrics`.
    pub fn metrics_text(&self) -> String {
        let mut r = Registry::new();
        r.describe(
            "mock_requests_total",
            MetricKind::Counter,
            "Requests served by apm mock serve, by result (matched, unmatched, admin).",
        );
        r.describe("mock_stubs", MetricKind::Gauge, "Stubs loaded.");
        r.inc(
            "mock_requests_total",
            &[("result", "matched")],
            self.matched.load(Ordering::Relaxed),
        );
        r.inc(
            "mock_requests_total",
            &[("result", "unmatched")],
            self.unmatched.load(Ordering::Relaxed),
        );
        r.inc(
            "mock_requests_total",
            &[("result", "admin")],
            self.admin.load(Ordering::Relaxed),
        );
        r.set("mock_stubs", &[], self.stub_count() as f64);
        r.render()
    }

    fn reset(&self) {
        let mut store = self.store.write().unwrap_or_else(lock_err);
        store.clear();
        for m in &self.defaults {
            if let Ok(stub) = Stub::parse(m.clone(), || self.fresh_id()) {
                store.insert(stub);
            }
        }
        drop(store);
        self.scenarios.lock().unwrap_or_else(lock_err).clear();
    }
}

/// Handles one request.
pub async fn handle(state: Arc<MockState>, req: Request<Incoming>) -> Resp {
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return response(
                StatusCode::PAYLOAD_TOO_LARGE,
                "text/plain",
                format!("request body over {MAX_BODY} bytes or unreadable\n"),
            );
        }
    };
    let path = parts.uri.path();
    if path == "/__admin" || path.starts_with("/__admin/") {
        state.admin.fetch_add(1, Ordering::Relaxed);
        return admin(&state, &parts.method, path, &body);
    }
    let mut query: HashMap<String, Vec<String>> = HashMap::new();
    if let Some(q) = parts.uri.query() {
        for (k, v) in url::form_urlencoded::parse(q.as_bytes()) {
            query
                .entry(k.into_owned())
                .or_default()
                .push(v.into_owned());
        }
    }
    let mut headers: HashMap<String, Vec<String>> = HashMap::new();
    for (k, v) in &parts.headers {
        headers
            .entry(k.as_str().to_string())
            .or_default()
            .push(String::from_utf8_lossy(v.as_bytes()).into_owned());
    }
    let view = RequestView {
        method: parts.method.as_str(),
        path,
        raw_query: parts.uri.query(),
        query: &query,
        headers: &headers,
        body: &body,
    };
    let found = {
        let store = state.store.read().unwrap_or_else(lock_err);
        store.find(&view, |stub| match &stub.scenario {
            Some(sc) => match &sc.required {
                Some(required) => {
                    let states = state.scenarios.lock().unwrap_or_else(lock_err);
                    states.get(&sc.name).map_or("Started", String::as_str) == required
                }
                None => true,
            },
            None => true,
        })
    };
    let Some(stub) = found else {
        state.unmatched.fetch_add(1, Ordering::Relaxed);
        return not_matched(&state, &view);
    };
    state.matched.fetch_add(1, Ordering::Relaxed);
    if let Some(sc) = &stub.scenario
        && let Some(next) = &sc.new_state
    {
        state
            .scenarios
            .lock()
            .unwrap_or_else(lock_err)
            .insert(sc.name.clone(), next.clone());
    }
    let r = &stub.response;
    if r.delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(r.delay_ms)).await;
    }
    let mut resp = hyper::Response::new(Full::new(r.body.clone()));
    *resp.status_mut() = StatusCode::from_u16(r.status).unwrap_or(StatusCode::OK);
    let h = resp.headers_mut();
    for (name, value) in &r.headers {
        if let (Ok(n), Ok(v)) = (
            hyper::header::HeaderName::from_bytes(name.as_bytes()),
            hyper::header::HeaderValue::from_str(value),
        ) {
            h.append(n, v);
        }
    }
    if let Ok(v) = hyper::header::HeaderValue::from_str(&stub.id) {
        h.insert("matched-stub-id", v);
    }
    resp
}

fn not_matched(state: &MockState, r: &RequestView<'_>) -> Resp {
    let store = state.store.read().unwrap_or_else(lock_err);
    let mut text = String::from("Request was not matched\n=======================\n\n");
    text.push_str(&format!("{} {}", r.method, r.path));
    if let Some(q) = r.raw_query {
        text.push('?');
        text.push_str(q);
    }
    text.push_str("\n\n");
    if store.is_empty() {
        text.push_str("No stubs are loaded.\n");
    } else {
        text.push_str("Closest stubs:\n");
        for (i, (stub, d)) in store.closest(r, 3).iter().enumerate() {
            let method = stub.method.as_deref().unwrap_or("ANY");
            let url = stub
                .mapping
                .get("request")
                .and_then(|rq| {
                    ["url", "urlPath", "urlPattern", "urlPathPattern"]
                        .iter()
                        .find_map(|k| rq.get(*k).and_then(Value::as_str))
                })
                .unwrap_or("(any URL)");
            text.push_str(&format!(
                "  {}. {method} {url}  (id {}, distance {d})\n",
                i + 1,
                stub.id
            ));
        }
    }
    response(StatusCode::NOT_FOUND, "text/plain; charset=utf-8", text)
}

fn errors_json(errors: &[String]) -> Value {
    json!({ "errors": errors.iter().map(|e| json!({"code": 10, "title": e})).collect::<Vec<_>>() })
}

fn admin(state: &MockState, method: &Method, path: &str, body: &Bytes) -> Resp {
    let rest = path.trim_start_matches("/__admin").trim_end_matches('/');
    let parse_body = || serde_json::from_slice::<Value>(body);
    match (method.clone(), rest) {
        (Method::GET, "/health") => json_resp(StatusCode::OK, &json!({"status": "healthy"})),
        (Method::GET, "/mappings") => {
            let store = state.store.read().unwrap_or_else(lock_err);
            let all: Vec<Value> = store.all().iter().map(|s| s.mapping.clone()).collect();
            let total = all.len();
            json_resp(
                StatusCode::OK,
                &json!({"mappings": all, "meta": {"total": total}}),
            )
        }
        (Method::POST, "/mappings") => match parse_body() {
            Ok(v) => match Stub::parse(v, || state.fresh_id()) {
                Ok(stub) => {
                    let m = stub.mapping.clone();
                    state.store.write().unwrap_or_else(lock_err).insert(stub);
                    json_resp(StatusCode::CREATED, &m)
                }
                Err(e) => json_resp(StatusCode::UNPROCESSABLE_ENTITY, &errors_json(&[e.0])),
            },
            Err(e) => json_resp(
                StatusCode::BAD_REQUEST,
                &errors_json(&[format!("body is not JSON: {e}")]),
            ),
        },
        (Method::DELETE, "/mappings") => {
            state.store.write().unwrap_or_else(lock_err).clear();
            json_resp(StatusCode::OK, &json!({}))
        }
        (Method::POST, "/mappings/import") => import(state, parse_body()),
        (Method::POST, "/mappings/reset") | (Method::POST, "/reset") => {
            state.reset();
            json_resp(StatusCode::OK, &json!({}))
        }
        (Method::POST, "/scenarios/reset") => {
            state.scenarios.lock().unwrap_or_else(lock_err).clear();
            json_resp(StatusCode::OK, &json!({}))
        }
        (m, r) if r.starts_with("/mappings/") => {
            let id = r.trim_start_matches("/mappings/").to_ascii_lowercase();
            match m {
                Method::GET => match state.store.read().unwrap_or_else(lock_err).get(&id) {
                    Some(s) => json_resp(StatusCode::OK, &s.mapping),
                    None => json_resp(
                        StatusCode::NOT_FOUND,
                        &errors_json(&[format!("no stub with id {id}")]),
                    ),
                },
                Method::DELETE => match state.store.write().unwrap_or_else(lock_err).remove(&id) {
                    Some(_) => json_resp(StatusCode::OK, &json!({})),
                    None => json_resp(
                        StatusCode::NOT_FOUND,
                        &errors_json(&[format!("no stub with id {id}")]),
                    ),
                },
                Method::PUT => match parse_body() {
                    Ok(mut v) => {
                        if let Some(o) = v.as_object_mut() {
                            o.insert("id".into(), json!(id));
                        }
                        match Stub::parse(v, || id.clone()) {
                            Ok(stub) => {
                                let m = stub.mapping.clone();
                                state.store.write().unwrap_or_else(lock_err).insert(stub);
                                json_resp(StatusCode::OK, &m)
                            }
                            Err(e) => {
                                json_resp(StatusCode::UNPROCESSABLE_ENTITY, &errors_json(&[e.0]))
                            }
                        }
                    }
                    Err(e) => json_resp(
                        StatusCode::BAD_REQUEST,
                        &errors_json(&[format!("body is not JSON: {e}")]),
                    ),
                },
                _ => json_resp(
                    StatusCode::METHOD_NOT_ALLOWED,
                    &errors_json(&[format!("{m} is not supported on {path}")]),
                ),
            }
        }
        _ => json_resp(
            StatusCode::NOT_FOUND,
            &errors_json(&[format!(
                "{method} {path} is not part of the admin API subset apm mock serve implements"
            )]),
        ),
    }
}

fn import(state: &MockState, body: Result<Value, serde_json::Error>) -> Resp {
    let v = match body {
        Ok(v) => v,
        Err(e) => {
            return json_resp(
                StatusCode::BAD_REQUEST,
                &errors_json(&[format!("body is not JSON: {e}")]),
            );
        }
    };
    let Some(list) = v.get("mappings").and_then(Value::as_array) else {
        return json_resp(
            StatusCode::UNPROCESSABLE_ENTITY,
            &errors_json(&["mappings must be a list".into()]),
        );
    };
    let opts = v.get("importOptions");
    let policy = opts
        .and_then(|o| o.get("duplicatePolicy"))
        .and_then(Value::as_str)
        .unwrap_or("OVERWRITE");
    if policy != "OVERWRITE" && policy != "IGNORE" {
        return json_resp(
            StatusCode::UNPROCESSABLE_ENTITY,
            &errors_json(&["importOptions.duplicatePolicy must be OVERWRITE or IGNORE".into()]),
        );
    }
    let delete_others = opts
        .and_then(|o| o.get("deleteAllNotInImport"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    // All or nothing: validate every mapping before touching the store.
    let mut stubs = Vec::with_capacity(list.len());
    let mut errors = Vec::new();
    for (i, m) in list.iter().enumerate() {
        match Stub::parse(m.clone(), || state.fresh_id()) {
            Ok(s) => stubs.push(s),
            Err(e) => errors.push(format!("mappings[{i}]: {}", e.0)),
        }
    }
    if !errors.is_empty() {
        return json_resp(StatusCode::UNPROCESSABLE_ENTITY, &errors_json(&errors));
    }
    let mut store = state.store.write().unwrap_or_else(lock_err);
    if delete_others {
        let keep: std::collections::HashSet<&str> = stubs.iter().map(|s| s.id.as_str()).collect();
        let remove: Vec<String> = store
            .all()
            .iter()
            .filter(|s| !keep.contains(s.id.as_str()))
            .map(|s| s.id.clone())
            .collect();
        for id in remove {
            store.remove(&id);
        }
    }
    for s in stubs {
        if policy == "IGNORE" && store.get(&s.id).is_some() {
            continue;
        }
        store.insert(s);
    }
    json_resp(StatusCode::OK, &json!({}))
}
