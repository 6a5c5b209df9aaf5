//! Bad input never produces a 5xx: malformed JSON, wrong types, unknown fields, oversized
//! bodies, bad query strings and paths all get a 4xx application/problem+json naming the problem.

mod common;

use common::{Db, Srv};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

both_dbs!(
    bad_bodies_are_problems,
    garbage_on_every_write_endpoint_is_4xx
);

async fn raw(
    s: &Srv,
    method: Method,
    path: &str,
    token: Option<&str>,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> common::Resp {
    let mut req = s
        .http
        .request(method, format!("{}{path}", s.base))
        .body(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    let r = req.send().await.expect("send");
    let status = r.status();
    let headers = r.headers().clone();
    let text = r.text().await.expect("text");
    common::Resp {
        status,
        body: serde_json::from_str(&text).unwrap_or(Value::Null),
        text,
        headers,
    }
}

async fn bad_bodies_are_problems(db: Db) {
    let s = Srv::start_with(db, |st| st.max_body_bytes = 4096).await;
    let root = s.root().await;
    let json_ct = Some("application/json");
    // Malformed JSON.
    let detail = raw(
        &s,
        Method::POST,
        "/api/v1/users",
        Some(&root),
        json_ct,
        b"{\"username\": ".to_vec(),
    )
    .await
    .problem(StatusCode::BAD_REQUEST);
    assert!(detail.contains("not valid JSON"), "{detail}");
    // Wrong types name the field.
    let r = s
        .post(
            "/api/v1/users",
            &root,
            json!({"username": 5, "password": "password-1", "role": "regular"}),
        )
        .await;
    let detail = r.problem(StatusCode::UNPROCESSABLE_ENTITY);
    assert!(detail.contains("username"), "{detail}");
    let detail = s
        .post(
            "/api/v1/users",
            &root,
            json!({"username": "u", "password": "password-1", "role": "king"}),
        )
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        detail.contains("role") && detail.contains("king"),
        "{detail}"
    );
    // Unknown fields are refused, not ignored.
    let detail = s
        .post(
            "/api/v1/users",
            &root,
            json!({"username": "u", "password": "password-1", "role": "regular", "admin": true}),
        )
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY);
    assert!(detail.contains("admin"), "{detail}");
    // Missing fields.
    let detail = s
        .post("/api/v1/users", &root, json!({"username": "u"}))
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY);
    assert!(detail.contains("password"), "{detail}");
    // Wrong content type.
    raw(
        &s,
        Method::POST,
        "/api/v1/users",
        Some(&root),
        Some("text/plain"),
        b"{}".to_vec(),
    )
    .await
    .problem(StatusCode::UNSUPPORTED_MEDIA_TYPE);
    raw(
        &s,
        Method::POST,
        "/api/v1/users",
        Some(&root),
        None,
        b"{}".to_vec(),
    )
    .await
    .problem(StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // Oversized body.
    let big = json!({"name": "x".repeat(10_000), "policy": {}});
    let detail = s
        .post("/api/v1/configs", &root, big)
        .await
        .problem(StatusCode::PAYLOAD_TOO_LARGE);
    assert!(detail.contains("max_body_bytes"), "{detail}");
    // Bad numbers in bodies and queries.
    s.post(
        "/api/v1/proxies/x/logs",
        &root,
        json!({"duration_minutes": -1}),
    )
    .await
    .problem(StatusCode::UNPROCESSABLE_ENTITY);
    s.post(
        "/api/v1/proxies/x/logs",
        &root,
        json!({"duration_minutes": 1e300}),
    )
    .await
    .problem(StatusCode::UNPROCESSABLE_ENTITY);
    let detail = s
        .get("/api/v1/configs/x/diff?from=one&to=2", &root)
        .await
        .problem(StatusCode::BAD_REQUEST);
    assert!(detail.contains("from"), "{detail}");
    s.get("/api/v1/configs/x/versions/abc", &root)
        .await
        .problem(StatusCode::BAD_REQUEST);
    s.get("/api/v1/configs/x/versions/99999999999999999999999", &root)
        .await
        .problem(StatusCode::BAD_REQUEST);
    // Extreme times are refused or answered, never overflow.
    let (proxy, _) = s.enroll(&root, "edge-x").await;
    for q in [
        "until=-9223372036854775",
        "since=-9223372036854775&until=9223372036854775",
        "since=9223372036854775807",
    ] {
        let r = s
            .get(
                &format!("/api/v1/proxies/{proxy}/stats?metric=m&{q}"),
                &root,
            )
            .await;
        assert!(
            r.status.is_client_error() || r.status.is_success(),
            "{q}: {} {}",
            r.status,
            r.text
        );
    }
    for q in [
        "since=-9223372036854775",
        "until=9223372036854775",
        "before=-1",
    ] {
        let r = s.get(&format!("/api/v1/audit?{q}"), &root).await;
        assert!(
            r.status.is_client_error() || r.status.is_success(),
            "{q}: {} {}",
            r.status,
            r.text
        );
    }

    let (_, agent) = s.enroll(&root, "edge-y").await;
    for t in ["-9223372036854775", "9223372036854775", "0"] {
        let r = s
            .post(
                "/api/v1/sync/stats",
                &agent,
                json!({"hostname": "edge-y", "timestamp": t, "metrics": {"m": 1}}),
            )
            .await;
        r.problem(StatusCode::UNPROCESSABLE_ENTITY);
    }

    // Unknown route and wrong method.
    s.get("/api/v1/nothing-here", &root)
        .await
        .problem(StatusCode::NOT_FOUND);
    s.call(Method::DELETE, "/api/v1/configs", Some(&root), None)
        .await
        .problem(StatusCode::METHOD_NOT_ALLOWED);
    // Very deep JSON.
    let deep = format!("{}{}", "[".repeat(10_00), "]".repeat(10_00));
    let r = raw(
        &s,
        Method::POST,
        "/api/v1/users",
        Some(&root),
        json_ct,
        deep.into_bytes(),
    )
    .await;
    assert!(r.status.is_client_error(), "{}", r.status);
    assert_eq!(r.content_type(), "application/problem+json");
    // Non-UTF-8.
    let r = raw(
        &s,
        Method::POST,
        "/api/v1/users",
        Some(&root),
        json_ct,
        vec![0xff, 0xfe, 0x00],
    )
    .await;
    r.problem(StatusCode::BAD_REQUEST);
}

/// Every documented write endpoint gets a set of garbage bodies from a caller allowed to use it.
async fn garbage_on_every_write_endpoint_is_4xx(db: Db) {
    let s = Srv::start(db).await;
    let root = s.root().await;
    let (_, agent) = s.enroll(&root, "edge-1").await;
    let doc = s
        .call(Method::GET, "/api/openapi.json", None, None)
        .await
        .body;
    let garbage: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"null".to_vec(),
        b"[]".to_vec(),
        b"\"text\"".to_vec(),
        b"42".to_vec(),
        b"{".to_vec(),
        b"{\"a\":1}".to_vec(),
        br#"{"name": null, "policy": [], "username": {}, "proxy_ids": "x", "duration_minutes": "5", "hostname": 1, "metrics": [], "lines": {}}"#.to_vec(),
        serde_json::to_vec(&json!({"name": "\u{0000}\u{202e}", "policy": {"rules": [{"match": "ip", "value": "1.2.3.4/99", "action": "direct"}]}})).expect("json"),
    ];
    let mut failures = Vec::new();
    let mut tried = 0;
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in ["post", "put", "patch", "delete"] {
            if item.get(method).is_none() {
                continue;
            }
            let concrete = path
                .replace("{id}", "x")
                .replace("{version}", "1")
                .replace("{proxy_id}", "y");
            let token = if path.starts_with("/api/v1/sync") {
                Some(agent.as_str())
            } else if path == "/api/v1/auth/logout" {
                None
            } else {
                Some(root.as_str())
            };
            for body in &garbage {
                tried += 1;
                let m = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
                let r = raw(
                    &s,
                    m,
                    &concrete,
                    token,
                    Some("application/json"),
                    body.clone(),
                )
                .await;
                let ok = r.status.is_client_error()
                    && r.content_type() == "application/problem+json"
                    || r.status.is_success();
                if r.status.is_server_error() || !ok {
                    failures.push(format!(
                        "{method} {path} body {:?}: {} {}",
                        String::from_utf8_lossy(body),
                        r.status,
                        r.text
                    ));
                }
            }
        }
    }
    assert!(tried > 100, "only {tried} requests");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
