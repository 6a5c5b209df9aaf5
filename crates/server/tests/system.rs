//! Health, readiness, Prometheus metrics, OpenAPI, request ids.

mod common;

use common::{Db, Srv};
use reqwest::{Method, StatusCode};

both_dbs!(health_ready_metrics_and_request_ids);

async fn health_ready_metrics_and_request_ids(db: Db) {
    let s = Srv::start(db).await;
    let r = s.call(Method::GET, "/health", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["status"], "ok");
    let r = s.call(Method::GET, "/health/ready", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.body["database"],
        if db == Db::Sqlite {
            "sqlite"
        } else {
            "postgres"
        }
    );
    assert_eq!(
        r.body["schema_version"],
        apm_store::migrate::latest_version()
    );

    // Request ids: generated when absent, kept when sent.
    let id = r
        .headers
        .get("x-request-id")
        .expect("x-request-id")
        .to_str()
        .expect("text")
        .to_string();
    assert_eq!(id.len(), 36, "{id}");
    let r = s
        .http
        .get(format!("{}/health", s.base))
        .header("x-request-id", "my-trace-123")
        .send()
        .await
        .expect("send");
    assert_eq!(r.headers().get("x-request-id").expect("id"), "my-trace-123");

    // Metrics after some traffic.
    let root = s.root().await;
    s.get("/api/v1/configs", &root).await;
    let r = s.call(Method::GET, "/metrics", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.text.contains("apm_http_requests_total"), "{}", r.text);
    assert!(r.text.contains("route=\"/api/v1/configs\""), "{}", r.text);
    assert!(
        r.text.contains("apm_http_request_duration_seconds"),
        "{}",
        r.text
    );
    assert!(r.text.contains("apm_proxies_online"), "{}", r.text);
    assert!(r.text.contains("apm_pending_approvals"), "{}", r.text);

    // OpenAPI 3.1 with both security schemes and a problem schema.
    let r = s.call(Method::GET, "/api/openapi.json", None, None).await;
    assert!(
        r.body["openapi"]
            .as_str()
            .expect("version")
            .starts_with("3.1")
    );
    assert!(r.body["components"]["securitySchemes"]["bearer"].is_object());
    assert!(r.body["components"]["securitySchemes"]["agent"].is_object());
    assert!(r.body["components"]["schemas"]["Problem"].is_object());
    assert!(
        r.body["paths"]["/api/v1/sync"]["get"]["parameters"]
            .as_array()
            .expect("params")
            .len()
            >= 3
    );

    // Problem types are described where they point.
    let r = s.call(Method::GET, "/problems/conflict", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["type"], "/problems/conflict");
    assert!(
        r.body["description"]
            .as_str()
            .expect("description")
            .contains("current_state")
    );
    let missing = s.call(Method::GET, "/problems/nope", None, None).await;
    assert_eq!(missing.body["type"], "/problems/not-found");
    let r = s
        .call(
            Method::GET,
            missing.body["type"].as_str().expect("type"),
            None,
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);

    // Readiness fails cleanly (503 problem) when the database is gone.
    s.server.state.db.close().await;
    let r = s.call(Method::GET, "/health/ready", None, None).await;
    r.problem(StatusCode::SERVICE_UNAVAILABLE);
    let r = s.call(Method::GET, "/health", None, None).await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "liveness does not depend on the database"
    );
}
