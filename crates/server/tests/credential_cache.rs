//! Agent credentials are cached in memory (by hash) and the cache never outlives a change:
//! revocation, re-enrollment, reassignment, a change on another replica. Also the agents'
//! group-committed writes (an ACK is answered once stored) and bundles per ATS major.

mod common;

use std::time::{Duration, Instant};

use common::{Db, Srv, policy_with_domain};
use reqwest::StatusCode;
use serde_json::json;

both_dbs!(
    revoked_credential_is_refused_at_once,
    reenrollment_retires_the_cached_credential_at_once,
    assignment_reaches_an_agent_with_a_cached_credential,
    revocation_on_another_replica_reaches_this_replica,
    an_ack_is_stored_when_answered,
    bundles_follow_each_agents_ats_major
);

/// Admin token, an active config and an enrolled agent assigned to it.
async fn setup(s: &Srv, hostname: &str) -> (String, String, String, String) {
    let admin = s.root().await;
    let config = s.config(&admin, "c").await;
    s.activate(&admin, &config).await;
    let (proxy, agent) = s.enroll(&admin, hostname).await;
    let r = s
        .post(
            &format!("/api/v1/configs/{config}/proxies"),
            &admin,
            json!({"proxy_ids": [proxy]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    (admin, config, proxy, agent)
}

fn sync_path(hostname: &str) -> String {
    format!("/api/v1/sync?hostname={hostname}&wait=0&ats_version=9.2.5")
}

/// Syncs twice, so the second request is served from the cache.
async fn warm(s: &Srv, hostname: &str, agent: &str) {
    for _ in 0..2 {
        let r = s.get(&sync_path(hostname), agent).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    }
    assert!(
        !s.server.state.credentials.is_empty(),
        "the credential lookup was cached"
    );
}

async fn revoked_credential_is_refused_at_once(db: Db) {
    let s = Srv::start(db).await;
    let (admin, _, proxy, agent) = setup(&s, "edge-1").await;
    warm(&s, "edge-1", &agent).await;
    let r = s
        .post(
            &format!("/api/v1/proxies/{proxy}/revoke"),
            &admin,
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let detail = s
        .get(&sync_path("edge-1"), &agent)
        .await
        .problem(StatusCode::UNAUTHORIZED);
    assert!(detail.contains("revoked"), "{detail}");
    let hash = "a".repeat(64);
    s.post(
        "/api/v1/sync/ack",
        &agent,
        json!({"hostname": "edge-1", "hash": hash, "status": "ok"}),
    )
    .await
    .problem(StatusCode::UNAUTHORIZED);
    s.post(
        "/api/v1/sync/stats",
        &agent,
        json!({"hostname": "edge-1", "metrics": {"m": 1.0}}),
    )
    .await
    .problem(StatusCode::UNAUTHORIZED);
}

async fn reenrollment_retires_the_cached_credential_at_once(db: Db) {
    let s = Srv::start(db).await;
    let (admin, _, proxy, old) = setup(&s, "edge-1").await;
    warm(&s, "edge-1", &old).await;
    let (same, new) = s.enroll(&admin, "edge-1").await;
    assert_eq!(same, proxy);
    s.get(&sync_path("edge-1"), &old)
        .await
        .problem(StatusCode::UNAUTHORIZED);
    warm(&s, "edge-1", &new).await;
    // A third credential retires the second, cached one too.
    let (_, newest) = s.enroll(&admin, "edge-1").await;
    s.get(&sync_path("edge-1"), &new)
        .await
        .problem(StatusCode::UNAUTHORIZED);
    let r = s.get(&sync_path("edge-1"), &newest).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
}

async fn assignment_reaches_an_agent_with_a_cached_credential(db: Db) {
    let s = Srv::start(db).await;
    let admin = s.root().await;
    let (proxy, agent) = s.enroll(&admin, "edge-1").await;
    warm(&s, "edge-1", &agent).await;
    let r = s.get(&sync_path("edge-1"), &agent).await;
    assert_eq!(r.body["status"], "no_config", "{}", r.body);
    let config = s.config(&admin, "c").await;
    s.activate(&admin, &config).await;
    let r = s
        .post(
            &format!("/api/v1/configs/{config}/proxies"),
            &admin,
            json!({"proxy_ids": [proxy]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = s.get(&sync_path("edge-1"), &agent).await;
    assert_eq!(r.body["status"], "bundle", "{}", r.body);
    // Unassigned: the cached row must not keep the old config.
    let r = s
        .call(
            reqwest::Method::DELETE,
            &format!("/api/v1/configs/{config}/proxies/{proxy}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = s.get(&sync_path("edge-1"), &agent).await;
    assert_eq!(r.body["status"], "no_config", "{}", r.body);
}

/// Replica B caches the credential; it is revoked on replica A. B refuses it once its
/// generation poll (every 200 ms in tests) saw the change; the loop is bounded, not timed.
async fn revocation_on_another_replica_reaches_this_replica(db: Db) {
    let a = Srv::start(db).await;
    let (admin, _, proxy, agent) = setup(&a, "edge-1").await;
    let b = Srv::start_on(&a.database_url, tempfile::tempdir().expect("dir"), |_| {}).await;
    warm(&b, "edge-1", &agent).await;
    let r = a
        .post(
            &format!("/api/v1/proxies/{proxy}/revoke"),
            &admin,
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = b.get(&sync_path("edge-1"), &agent).await;
        if r.status == StatusCode::UNAUTHORIZED {
            break;
        }
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert!(
            Instant::now() < deadline,
            "replica B still accepts a credential revoked on replica A"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Many agents ack at once (one group-committed batch); each answer means its row is stored.
async fn an_ack_is_stored_when_answered(db: Db) {
    let s = Srv::start(db).await;
    let admin = s.root().await;
    let config = s.config(&admin, "c").await;
    s.activate(&admin, &config).await;
    let mut agents = Vec::new();
    for i in 0..12 {
        let host = format!("edge-{i}");
        let (proxy, token) = s.enroll(&admin, &host).await;
        let r = s
            .post(
                &format!("/api/v1/configs/{config}/proxies"),
                &admin,
                json!({"proxy_ids": [proxy]}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        agents.push((host, proxy, token));
    }
    let hash = s.get(&sync_path("edge-0"), &agents[0].2).await.body["hash"]
        .as_str()
        .expect("hash")
        .to_string();
    let mut acks = tokio::task::JoinSet::new();
    for (i, (host, proxy, token)) in agents.iter().cloned().enumerate() {
        let (http, base, admin, hash) =
            (s.http.clone(), s.base.clone(), admin.clone(), hash.clone());
        acks.spawn(async move {
            let body = if i % 3 == 0 {
                json!({"hostname": host, "hash": hash, "status": "error",
                       "error": format!("reload failed on {host}")})
            } else {
                json!({"hostname": host, "hash": hash, "status": "ok"})
            };
            let r = http
                .post(format!("{base}/api/v1/sync/ack"))
                .bearer_auth(&token)
                .json(&body)
                .send()
                .await
                .expect("ack");
            assert_eq!(r.status(), StatusCode::OK);
            // Answered means stored: the very next read sees it.
            let p: serde_json::Value = http
                .get(format!("{base}/api/v1/proxies/{proxy}"))
                .bearer_auth(&admin)
                .send()
                .await
                .expect("get")
                .json()
                .await
                .expect("json");
            if i % 3 == 0 {
                assert_eq!(p["applied_hash"], serde_json::Value::Null, "{p}");
                assert_eq!(p["last_error"], format!("reload failed on {host}"), "{p}");
                assert_eq!(p["last_error_hash"], hash.as_str(), "{p}");
            } else {
                assert_eq!(p["applied_hash"], hash.as_str(), "{p}");
                assert_eq!(p["in_sync"], true, "{p}");
            }
        });
    }
    while let Some(r) = acks.join_next().await {
        r.expect("ack task");
    }
}

/// Agents of one config on ATS 9 and ATS 10 each get their own rendering, also when the
/// answer is served from the per-bundle cache (second round).
async fn bundles_follow_each_agents_ats_major(db: Db) {
    let s = Srv::start(db).await;
    let (admin, config, _, agent9) = setup(&s, "edge-9").await;
    let (p10, agent10) = s.enroll(&admin, "edge-10").await;
    let r = s
        .post(
            &format!("/api/v1/configs/{config}/proxies"),
            &admin,
            json!({"proxy_ids": [p10]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = s
        .put(
            &format!("/api/v1/configs/{config}"),
            &admin,
            json!({"policy": policy_with_domain("major.example")}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    s.post(
        &format!("/api/v1/configs/{config}/submit"),
        &admin,
        json!({}),
    )
    .await;
    let r = s
        .post(
            &format!("/api/v1/configs/{config}/approve"),
            &admin,
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let hashes = &r.body["active"]["hashes"];
    assert_ne!(hashes["9"], hashes["10"]);
    assert!(r.body.get("proxies_unavailable").is_none(), "{}", r.body);
    assert_eq!(r.body["proxies"].as_array().expect("proxies").len(), 2);
    for _round in 0..2 {
        let r9 = s.get(&sync_path("edge-9"), &agent9).await;
        let r10 = s
            .get(
                "/api/v1/sync?hostname=edge-10&wait=0&ats_version=10.0.0",
                &agent10,
            )
            .await;
        assert_eq!(r9.body["status"], "bundle", "{}", r9.body);
        assert_eq!(r10.body["status"], "bundle", "{}", r10.body);
        assert_eq!(r9.body["hash"], hashes["9"]);
        assert_eq!(r10.body["hash"], hashes["10"]);
        assert_eq!(r9.body["ats_major"], "9");
        assert_eq!(r10.body["ats_major"], "10");
        assert!(
            r9.body["files"].get("records.config").is_some(),
            "{}",
            r9.body
        );
        assert!(
            r10.body["files"].get("records.yaml").is_some(),
            "{}",
            r10.body
        );
        assert_eq!(r9.content_type(), "application/json");
    }
}
