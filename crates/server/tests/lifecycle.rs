//! The whole life of a config, from the first login to an agent running the approved bundle,
//! on SQLite and on PostgreSQL.

mod common;

use common::{Db, Srv, policy, policy_with_domain};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

both_dbs!(
    full_lifecycle,
    invalid_policies_and_illegal_transitions,
    proxies_and_telemetry
);

async fn full_lifecycle(db: Db) {
    let s = Srv::start(db).await;
    let root = s.root().await;
    let (admin_id, admin) = s.user(&root, "alice", "admin").await;
    let (_, regular) = s.user(&admin, "rita", "regular").await;

    // Draft v1.
    let r = s
        .post(
            "/api/v1/configs",
            &admin,
            json!({"name": "prod", "description": "production", "policy": policy()}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let id = r.body["id"].as_str().expect("id").to_string();
    assert_eq!(r.body["status"], "draft");
    assert_eq!(r.body["working"]["version"], 1);
    assert_eq!(r.body["working"]["editors"], json!([admin_id]));
    assert!(r.body["active"].is_null());
    let hash_v9_v1 = r.body["working"]["hashes"]["9"]
        .as_str()
        .expect("hash")
        .to_string();
    assert_eq!(hash_v9_v1.len(), 64);

    // Regular users read everything but change nothing.
    assert_eq!(
        s.get(&format!("/api/v1/configs/{id}"), &regular)
            .await
            .status,
        StatusCode::OK
    );
    s.post(&format!("/api/v1/configs/{id}/submit"), &regular, json!({}))
        .await
        .problem(StatusCode::FORBIDDEN);

    // Enroll an agent and assign it.
    let (proxy_id, agent) = s.enroll(&admin, "edge-1").await;
    let r = s
        .post(
            &format!("/api/v1/configs/{id}/proxies"),
            &admin,
            json!({"proxy_ids": [proxy_id]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["proxies"][0]["hostname"], "edge-1");

    // No approved version yet: the agent is told clearly.
    let r = s.get("/api/v1/sync?hostname=edge-1&wait=0", &agent).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["status"], "no_config");
    assert!(
        r.body["detail"]
            .as_str()
            .expect("detail")
            .contains("no approved version"),
        "{}",
        r.body
    );

    // Submit + self-confirm.
    s.activate(&admin, &id).await;
    let r = s.get(&format!("/api/v1/configs/{id}"), &admin).await;
    assert_eq!(r.body["status"], "active");
    assert_eq!(r.body["active_version"], 1);
    assert_eq!(r.body["active"]["approved_by"], admin_id.as_str());

    // The agent gets the bundle rendered for ATS 9 (nothing reported yet).
    let r = s
        .get("/api/v1/sync?hostname=edge-1&hash=&wait=0", &agent)
        .await;
    assert_eq!(r.body["status"], "bundle", "{}", r.body);
    assert_eq!(r.body["hash"], hash_v9_v1.as_str());
    assert_eq!(r.body["version"], 1);
    assert_eq!(r.body["ats_major"], "9");
    let files = r.body["files"].as_object().expect("files");
    assert!(
        files.contains_key("parent.config") && files.contains_key("records.config"),
        "{files:?}"
    );
    assert!(
        files["parent.config"]
            .as_str()
            .expect("text")
            .contains("dest_domain=eec go_direct=true")
    );

    // Same hash → unchanged.
    let r = s
        .get(
            &format!("/api/v1/sync?hostname=edge-1&hash={hash_v9_v1}&wait=0"),
            &agent,
        )
        .await;
    assert_eq!(r.body["status"], "unchanged");
    assert_eq!(r.body["unchanged"], true);

    // Ack → in sync.
    let r = s
        .post(
            "/api/v1/sync/ack",
            &agent,
            json!({"hostname": "edge-1", "hash": hash_v9_v1, "status": "ok"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = s
        .get(&format!("/api/v1/proxies/{proxy_id}"), &regular)
        .await;
    assert_eq!(r.body["in_sync"], true, "{}", r.body);
    assert_eq!(r.body["online"], true);
    assert_eq!(r.body["applied_hash"], hash_v9_v1.as_str());

    // ATS 10 reported → records.yaml bundle with another hash.
    let r = s
        .get(&format!("/api/v1/sync?hostname=edge-1&hash={hash_v9_v1}&wait=0&ats_version=10.1.0&os=linux&arch=x86_64"), &agent)
        .await;
    assert_eq!(r.body["status"], "bundle", "{}", r.body);
    assert_eq!(r.body["ats_major"], "10");
    assert!(r.body["files"]["records.yaml"].is_string(), "{}", r.body);
    let hash_v10_v1 = r.body["hash"].as_str().expect("hash").to_string();
    assert_ne!(hash_v10_v1, hash_v9_v1);
    let r = s
        .get(&format!("/api/v1/proxies/{proxy_id}"), &regular)
        .await;
    assert_eq!(r.body["ats_version"], "10.1.0");
    assert_eq!(r.body["os"], "linux");
    assert_eq!(r.body["in_sync"], false, "drift is visible: {}", r.body);
    s.post(
        "/api/v1/sync/ack",
        &agent,
        json!({"hostname": "edge-1", "hash": hash_v10_v1, "status": "ok"}),
    )
    .await;

    // Editing the active config opens draft v2; v1 stays active.
    let r = s
        .put(
            &format!("/api/v1/configs/{id}"),
            &admin,
            json!({"policy": policy_with_domain("corp.example")}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["working"]["version"], 2);
    assert_eq!(r.body["working"]["status"], "draft");
    assert_eq!(r.body["active_version"], 1);
    // A second edit changes the same draft.
    let r = s
        .put(
            &format!("/api/v1/configs/{id}"),
            &admin,
            json!({"policy": policy_with_domain("corp2.example")}),
        )
        .await;
    assert_eq!(r.body["working"]["version"], 2, "{}", r.body);

    // Diff v1..v2: policy and rendered files.
    let r = s
        .get(&format!("/api/v1/configs/{id}/diff?from=1&to=2"), &regular)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(
        r.body["policy_diff"]
            .as_str()
            .expect("diff")
            .contains("+      \"value\": \"corp2.example\""),
        "{}",
        r.body["policy_diff"]
    );
    let parent = r.body["files"]
        .as_array()
        .expect("files")
        .iter()
        .find(|f| f["name"] == "parent.config")
        .expect("parent.config");
    assert_eq!(parent["status"], "changed");
    assert!(
        parent["diff"]
            .as_str()
            .expect("diff")
            .contains("+dest_domain=corp2.example go_direct=true"),
        "{}",
        parent["diff"]
    );
    let r = s
        .get(
            &format!("/api/v1/configs/{id}/diff?from=1&to=2&ats=10"),
            &regular,
        )
        .await;
    assert_eq!(r.body["ats_major"], "10");

    // Reject with a reason → draft again; resubmit; approve → v1 superseded atomically.
    s.post(&format!("/api/v1/configs/{id}/submit"), &admin, json!({}))
        .await;
    let r = s
        .post(
            &format!("/api/v1/configs/{id}/reject"),
            &admin,
            json!({"reason": "typo in domain"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["working"]["status"], "draft");
    assert_eq!(r.body["working"]["reject_reason"], "typo in domain");
    s.activate(&admin, &id).await;
    let r = s
        .get(&format!("/api/v1/configs/{id}/versions"), &regular)
        .await;
    let statuses: Vec<_> = r
        .body
        .as_array()
        .expect("versions")
        .iter()
        .map(|v| (v["version"].clone(), v["status"].clone()))
        .collect();
    assert_eq!(
        statuses,
        vec![(json!(2), json!("active")), (json!(1), json!("superseded"))]
    );

    // The agent sees v2.
    let r = s
        .get(
            &format!("/api/v1/sync?hostname=edge-1&hash={hash_v10_v1}&wait=0"),
            &agent,
        )
        .await;
    assert_eq!(r.body["status"], "bundle");
    assert_eq!(r.body["version"], 2);

    // Restore v1 as draft v3.
    let r = s
        .post(
            &format!("/api/v1/configs/{id}/versions/1/restore"),
            &admin,
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["working"]["version"], 3);
    assert_eq!(r.body["working"]["restored_from"], 1);
    assert_eq!(
        r.body["working"]["hashes"]["9"],
        hash_v9_v1.as_str(),
        "same policy, same hash"
    );
    let r = s
        .get(&format!("/api/v1/configs/{id}/versions/3"), &regular)
        .await;
    assert_eq!(r.body["status"], "draft");

    // The dashboard sees one online proxy and no pending approval.
    let r = s.get("/api/v1/dashboard", &regular).await;
    assert_eq!(r.body["proxies"]["online"], 1, "{}", r.body);
    assert_eq!(r.body["pending_approvals"], 0);
    assert_eq!(
        r.body["drift"].as_array().expect("drift").len(),
        1,
        "v2 not acked yet: {}",
        r.body
    );

    // Logout ends the session.
    let r = s
        .call(Method::POST, "/api/v1/auth/logout", Some(&admin), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    s.get("/api/v1/configs", &admin)
        .await
        .problem(StatusCode::UNAUTHORIZED);
    s.server.state.db.close().await;
}

async fn invalid_policies_and_illegal_transitions(db: Db) {
    let s = Srv::start(db).await;
    let root = s.root().await;
    let (_, admin) = s.user(&root, "alice", "admin").await;

    // Validation errors are located.
    let mut bad = policy();
    bad["rules"][1]["value"] = json!("10.0.0.0/33");
    bad["listen_port"] = json!(0);
    let r = s
        .post(
            "/api/v1/configs",
            &admin,
            json!({"name": "bad", "policy": bad}),
        )
        .await;
    r.problem(StatusCode::UNPROCESSABLE_ENTITY);
    let paths: Vec<&str> = r.body["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .filter_map(|e| e["path"].as_str())
        .collect();
    assert!(paths.contains(&"policy.rules[1].value"), "{}", r.body);
    assert!(paths.contains(&"policy.listen_port"), "{}", r.body);
    // Shape errors are located too.
    let mut wrong = policy();
    wrong["rules"][0]["action"] = json!("teleport");
    let r = s
        .post(
            "/api/v1/configs",
            &admin,
            json!({"name": "bad", "policy": wrong}),
        )
        .await;
    let detail = r.problem(StatusCode::UNPROCESSABLE_ENTITY);
    assert!(detail.contains("rules[0].action"), "{detail}");

    let id = s.config(&admin, "c1").await;
    // Names are unique.
    let r = s
        .post(
            "/api/v1/configs",
            &admin,
            json!({"name": "c1", "policy": policy()}),
        )
        .await;
    assert!(r.problem(StatusCode::CONFLICT).contains("c1"));

    // Approve a draft → 409 naming the state.
    let r = s
        .post(&format!("/api/v1/configs/{id}/approve"), &admin, json!({}))
        .await;
    let detail = r.problem(StatusCode::CONFLICT);
    assert!(detail.contains("version 1 is draft"), "{detail}");
    assert_eq!(r.body["current_state"], "version 1 is draft");
    // Reject a draft → 409.
    s.post(
        &format!("/api/v1/configs/{id}/reject"),
        &admin,
        json!({"reason": "x"}),
    )
    .await
    .problem(StatusCode::CONFLICT);
    // Submit twice → 409 naming pending_approval.
    s.post(&format!("/api/v1/configs/{id}/submit"), &admin, json!({}))
        .await;
    let detail = s
        .post(&format!("/api/v1/configs/{id}/submit"), &admin, json!({}))
        .await
        .problem(StatusCode::CONFLICT);
    assert!(detail.contains("pending_approval"), "{detail}");
    // Editing a pending version → 409.
    let r = s
        .put(
            &format!("/api/v1/configs/{id}"),
            &admin,
            json!({"policy": policy()}),
        )
        .await;
    assert!(r.problem(StatusCode::CONFLICT).contains("pending_approval"));
    // Reject needs a reason.
    s.post(
        &format!("/api/v1/configs/{id}/reject"),
        &admin,
        json!({"reason": "  "}),
    )
    .await
    .problem(StatusCode::UNPROCESSABLE_ENTITY);
    s.post(&format!("/api/v1/configs/{id}/approve"), &admin, json!({}))
        .await;
    // Active, no draft: submit/approve → 409 naming the active version.
    let detail = s
        .post(&format!("/api/v1/configs/{id}/submit"), &admin, json!({}))
        .await
        .problem(StatusCode::CONFLICT);
    assert!(detail.contains("version 1 is active"), "{detail}");
    // Restore while a draft exists → 409.
    s.put(
        &format!("/api/v1/configs/{id}"),
        &admin,
        json!({"policy": policy_with_domain("x.example")}),
    )
    .await;
    let detail = s
        .post(
            &format!("/api/v1/configs/{id}/versions/1/restore"),
            &admin,
            json!({}),
        )
        .await
        .problem(StatusCode::CONFLICT);
    assert!(detail.contains("version 2"), "{detail}");
    // Unknown things → 404 naming them.
    let detail = s
        .get("/api/v1/configs/nope", &admin)
        .await
        .problem(StatusCode::NOT_FOUND);
    assert!(detail.contains("nope"));
    s.get(&format!("/api/v1/configs/{id}/versions/99"), &admin)
        .await
        .problem(StatusCode::NOT_FOUND);
    s.get(&format!("/api/v1/configs/{id}/diff?from=1&to=99"), &admin)
        .await
        .problem(StatusCode::NOT_FOUND);
    s.get(
        &format!("/api/v1/configs/{id}/diff?from=1&to=2&ats=8"),
        &admin,
    )
    .await
    .problem(StatusCode::BAD_REQUEST);
    // Metadata edit alone does not create a version.
    let r = s
        .put(
            &format!("/api/v1/configs/{id}"),
            &admin,
            json!({"description": "new text"}),
        )
        .await;
    assert_eq!(r.body["description"], "new text");
    assert_eq!(r.body["working"]["version"], 2);
}

async fn proxies_and_telemetry(db: Db) {
    let s = Srv::start(db).await;
    let root = s.root().await;
    let (_, admin) = s.user(&root, "alice", "admin").await;
    let (_, regular) = s.user(&admin, "rita", "regular").await;
    let a = s.config(&admin, "a").await;
    let b = s.config(&admin, "b").await;
    s.activate(&admin, &a).await;
    let (p1, agent1) = s.enroll(&admin, "edge-1").await;

    // A proxy belongs to at most one config.
    s.post(
        &format!("/api/v1/configs/{a}/proxies"),
        &admin,
        json!({"proxy_ids": [p1]}),
    )
    .await;
    let r = s
        .post(
            &format!("/api/v1/configs/{b}/proxies"),
            &admin,
            json!({"proxy_ids": [p1]}),
        )
        .await;
    let detail = r.problem(StatusCode::CONFLICT);
    assert!(
        detail.contains("\"a\"") && detail.contains("edge-1"),
        "{detail}"
    );
    assert_eq!(r.body["other_config_id"], a.as_str());
    // Unknown proxy → 404 naming the position.
    let detail = s
        .post(
            &format!("/api/v1/configs/{b}/proxies"),
            &admin,
            json!({"proxy_ids": ["zzz"]}),
        )
        .await
        .problem(StatusCode::NOT_FOUND);
    assert!(detail.contains("proxy_ids[0]"), "{detail}");
    // Unassign, then the other config may take it.
    let r = s
        .call(
            Method::DELETE,
            &format!("/api/v1/configs/{a}/proxies/{p1}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    let r = s.get("/api/v1/sync?hostname=edge-1&wait=0", &agent1).await;
    assert_eq!(r.body["status"], "no_config");
    assert!(
        r.body["detail"]
            .as_str()
            .expect("detail")
            .contains("no config assigned"),
        "{}",
        r.body
    );
    s.post(
        &format!("/api/v1/configs/{a}/proxies"),
        &admin,
        json!({"proxy_ids": [p1]}),
    )
    .await;

    // Hostname must match the credential.
    let detail = s
        .get("/api/v1/sync?hostname=other&wait=0", &agent1)
        .await
        .problem(StatusCode::FORBIDDEN);
    assert!(detail.contains("edge-1"));

    // NACK keeps the running hash and shows the error.
    let r = s.get("/api/v1/sync?hostname=edge-1&wait=0", &agent1).await;
    let h = r.body["hash"].as_str().expect("hash").to_string();
    let r = s
        .post("/api/v1/sync/ack", &agent1, json!({"hostname": "edge-1", "hash": h, "status": "error", "error": "traffic_ctl reload failed"}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = s.get(&format!("/api/v1/proxies/{p1}"), &regular).await;
    assert_eq!(r.body["last_error"], "traffic_ctl reload failed");
    assert_eq!(r.body["last_error_hash"], h.as_str());
    assert!(r.body["applied_hash"].is_null());
    assert_eq!(r.body["in_sync"], false);
    s.post(
        "/api/v1/sync/ack",
        &agent1,
        json!({"hostname": "edge-1", "hash": h, "status": "error"}),
    )
    .await
    .problem(StatusCode::UNPROCESSABLE_ENTITY);
    s.post(
        "/api/v1/sync/ack",
        &agent1,
        json!({"hostname": "edge-1", "hash": "abc", "status": "ok"}),
    )
    .await
    .problem(StatusCode::UNPROCESSABLE_ENTITY);

    // Stats: raw and rollups, then dashboard aggregation.
    for (i, v) in [10.0, 20.0, 30.0].iter().enumerate() {
        let ts = 1_700_000_000 + i as i64 * 10;
        let r = s
            .post("/api/v1/sync/stats", &agent1, json!({"hostname": "edge-1", "timestamp": ts.to_string(),
                "metrics": {"proxy.process.http.current_client_connections": v, "proxy.process.cache.ram_cache.hits": 5}}))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    }
    // Raw series read the pushes themselves; names come from the latest push before any
    // roll-up.
    let r = s
        .get(&format!("/api/v1/proxies/{p1}/stats"), &regular)
        .await;
    assert_eq!(
        r.body["available_metrics"].as_array().expect("names").len(),
        2,
        "{}",
        r.body
    );
    let r = s
        .get(&format!("/api/v1/proxies/{p1}/stats?metric=proxy.process.http.current_client_connections&since=1699999999&until=1700000100&resolution=raw"), &regular)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let avgs: Vec<f64> = r.body["points"]
        .as_array()
        .expect("points")
        .iter()
        .map(|p| p["avg"].as_f64().expect("avg"))
        .collect();
    assert_eq!(avgs, vec![10.0, 20.0, 30.0]);
    // Rollups hold what the roll-up (periodic in the server, called here) folded in.
    assert_eq!(
        apm_server::roll_up_stats_now(&s.server.state.db)
            .await
            .expect("roll up"),
        3
    );
    let r = s
        .get(&format!("/api/v1/proxies/{p1}/stats?metric=proxy.process.http.current_client_connections&since=1699999999&until=1700000100&resolution=5m"), &regular)
        .await;
    let points = r.body["points"].as_array().expect("points");
    assert_eq!(points.len(), 1, "{}", r.body);
    assert_eq!(points[0]["count"], 3);
    assert_eq!(points[0]["avg"], 20.0);
    assert_eq!(points[0]["min"], 10.0);
    assert_eq!(points[0]["max"], 30.0);
    assert_eq!(points[0]["last"], 30.0);
    assert_eq!(
        r.body["available_metrics"].as_array().expect("names").len(),
        2
    );
    // A counter's answer says so and carries per-second rates (constant here: rate 0).
    let r = s
        .get(&format!("/api/v1/proxies/{p1}/stats?metric=proxy.process.cache.ram_cache.hits&since=1699999999&until=1700000100&resolution=raw"), &regular)
        .await;
    assert_eq!(r.body["kind"], "counter", "{}", r.body);
    let rates: Vec<Value> = r.body["points"]
        .as_array()
        .expect("points")
        .iter()
        .map(|p| p["rate_per_s"].clone())
        .collect();
    assert_eq!(rates, vec![Value::Null, json!(0.0), json!(0.0)]);

    // The fleet series: a second proxy, three 5-minute steps; the gauge is summed, the
    // counter becomes the fleet's per-second rate.
    let (_, agent2) = s.enroll(&admin, "edge-2").await;
    let t0: i64 = 1_700_001_000; // a multiple of 300 s: steps start on bucket boundaries
    for (k, (hits1, hits2)) in [(1000, 0), (1600, 300), (2200, 600)]
        .into_iter()
        .enumerate()
    {
        let ts = (t0 + k as i64 * 300 + 10).to_string();
        for (agent, host, hits, conns) in
            [(&agent1, "edge-1", hits1, 4), (&agent2, "edge-2", hits2, 6)]
        {
            let r = s.post("/api/v1/sync/stats", agent, json!({"hostname": host, "timestamp": ts,
                "metrics": {"proxy.process.http.current_client_connections": conns, "proxy.process.http.incoming_requests": hits}}))
                .await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        }
    }
    apm_server::roll_up_stats_now(&s.server.state.db)
        .await
        .expect("roll up");
    let window = format!("since={t0}&until={}", t0 + 900);
    let r = s
        .get(
            &format!("/api/v1/stats/fleet?metric=proxy.process.http.incoming_requests&{window}"),
            &regular,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["kind"], "counter");
    assert_eq!(r.body["step_seconds"], 300);
    let steps: Vec<(f64, i64)> = r.body["points"]
        .as_array()
        .expect("points")
        .iter()
        .map(|p| {
            (
                p["value"].as_f64().expect("value"),
                p["proxies"].as_i64().expect("proxies"),
            )
        })
        .collect();
    assert_eq!(
        steps,
        vec![(3.0, 2), (3.0, 2)],
        "2/s + 1/s, from the second step on"
    );
    let r = s
        .get(
            &format!(
                "/api/v1/stats/fleet?metric=proxy.process.http.current_client_connections&{window}"
            ),
            &regular,
        )
        .await;
    assert_eq!(r.body["kind"], "gauge");
    let sums: Vec<f64> = r.body["points"]
        .as_array()
        .expect("points")
        .iter()
        .map(|p| p["value"].as_f64().expect("value"))
        .collect();
    assert_eq!(sums, vec![10.0, 10.0, 10.0]);
    let r = s
        .get(&format!("/api/v1/stats/fleet?{window}"), &regular)
        .await;
    assert_eq!(
        r.body["available_metrics"],
        json!([
            "proxy.process.http.current_client_connections",
            "proxy.process.http.incoming_requests"
        ])
    );
    s.get(
        "/api/v1/stats/fleet?since=2000-01-01T00:00:00Z&until=1999-01-01T00:00:00Z",
        &regular,
    )
    .await
    .problem(StatusCode::BAD_REQUEST);
    s.get("/api/v1/stats/fleet?step=60", &regular)
        .await
        .problem(StatusCode::BAD_REQUEST);

    s.get(
        &format!("/api/v1/proxies/{p1}/stats?resolution=1h"),
        &regular,
    )
    .await
    .problem(StatusCode::BAD_REQUEST);
    s.post(
        "/api/v1/sync/stats",
        &agent1,
        json!({"hostname": "edge-1", "metrics": {}}),
    )
    .await
    .problem(StatusCode::UNPROCESSABLE_ENTITY);
    s.post(
        "/api/v1/sync/stats",
        &agent1,
        json!({"hostname": "edge-1", "metrics": {"bad name!": 1}}),
    )
    .await
    .problem(StatusCode::UNPROCESSABLE_ENTITY);
    let r = s.post("/api/v1/sync/stats", &agent1, json!({"hostname": "edge-1", "metrics": {"proxy.process.http.current_client_connections": 7}})).await;
    assert_eq!(r.status, StatusCode::OK);
    apm_server::roll_up_stats_now(&s.server.state.db)
        .await
        .expect("roll up");
    let r = s.get("/api/v1/dashboard", &regular).await;
    assert_eq!(
        r.body["stats"]["proxy.process.http.current_client_connections"], 7.0,
        "{}",
        r.body
    );

    // Log capture: closed → 409; open (≤ 5 min) → agent sees the window; lines readable.
    s.post(
        "/api/v1/sync/logs",
        &agent1,
        json!({"hostname": "edge-1", "lines": ["x"]}),
    )
    .await
    .problem(StatusCode::CONFLICT);
    s.post(
        &format!("/api/v1/proxies/{p1}/logs"),
        &admin,
        json!({"duration_minutes": 6}),
    )
    .await
    .problem(StatusCode::UNPROCESSABLE_ENTITY);
    s.post(
        &format!("/api/v1/proxies/{p1}/logs"),
        &regular,
        json!({"duration_minutes": 1}),
    )
    .await
    .problem(StatusCode::FORBIDDEN);
    let r = s
        .post(
            &format!("/api/v1/proxies/{p1}/logs"),
            &admin,
            json!({"duration_minutes": 5}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let r = s
        .get(
            &format!("/api/v1/sync?hostname=edge-1&hash={h}&wait=0"),
            &agent1,
        )
        .await;
    assert!(
        r.body["log_capture"]["until_ms"].as_i64().is_some(),
        "{}",
        r.body
    );
    let r = s
        .post(
            "/api/v1/sync/logs",
            &agent1,
            json!({"hostname": "edge-1", "lines": ["first line", "second line"]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = s.get(&format!("/api/v1/proxies/{p1}/logs"), &regular).await;
    let lines: Vec<&str> = r.body["lines"]
        .as_array()
        .expect("lines")
        .iter()
        .filter_map(|l| l["line"].as_str())
        .collect();
    assert_eq!(lines, vec!["first line", "second line"]);
    assert_eq!(r.body["capture"]["open"], true);
    let after = r.body["next_after"].as_i64().expect("next_after");
    let r = s
        .get(
            &format!("/api/v1/proxies/{p1}/logs?after={after}"),
            &regular,
        )
        .await;
    assert!(r.body["lines"].as_array().expect("lines").is_empty());

    // Enrollment tokens: single use by default, revocable, expiring.
    let r = s
        .post(
            "/api/v1/enrollment-tokens",
            &admin,
            json!({"max_uses": 1, "note": "edge-2"}),
        )
        .await;
    let tok = r.body["token"].as_str().expect("token").to_string();
    let tok_id = r.body["id"].as_str().expect("id").to_string();
    let enroll = |host: &str| json!({"token": tok, "hostname": host});
    let r = s
        .call(
            Method::POST,
            "/api/v1/agents/enroll",
            None,
            Some(enroll("edge-2")),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let detail = s
        .call(
            Method::POST,
            "/api/v1/agents/enroll",
            None,
            Some(enroll("edge-3")),
        )
        .await
        .problem(StatusCode::UNAUTHORIZED);
    assert!(detail.contains("used up"), "{detail}");
    let r = s
        .post("/api/v1/enrollment-tokens", &admin, json!({"max_uses": 0}))
        .await;
    let multi = r.body["token"].as_str().expect("token").to_string();
    let multi_id = r.body["id"].as_str().expect("id").to_string();
    let r = s
        .call(
            Method::DELETE,
            &format!("/api/v1/enrollment-tokens/{multi_id}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let detail = s
        .call(
            Method::POST,
            "/api/v1/agents/enroll",
            None,
            Some(json!({"token": multi, "hostname": "edge-4"})),
        )
        .await
        .problem(StatusCode::UNAUTHORIZED);
    assert!(detail.contains("revoked"), "{detail}");
    s.call(
        Method::POST,
        "/api/v1/agents/enroll",
        None,
        Some(json!({"token": "apme_nope", "hostname": "edge-4"})),
    )
    .await
    .problem(StatusCode::UNAUTHORIZED);
    s.call(
        Method::POST,
        "/api/v1/agents/enroll",
        None,
        Some(json!({"token": multi, "hostname": "bad host"})),
    )
    .await
    .problem(StatusCode::UNPROCESSABLE_ENTITY);
    s.post(
        "/api/v1/enrollment-tokens",
        &admin,
        json!({"expires_in_seconds": 0}),
    )
    .await
    .problem(StatusCode::UNPROCESSABLE_ENTITY);
    let r = s.get("/api/v1/enrollment-tokens", &regular).await;
    let listed = r.body.as_array().expect("tokens");
    assert!(
        listed
            .iter()
            .all(|t| t.get("token").is_none() && t.get("token_hash").is_none()),
        "{}",
        r.body
    );
    assert!(
        listed
            .iter()
            .any(|t| t["id"] == tok_id.as_str() && t["usable"] == false)
    );

    // Revoked credential → 401; re-enrollment issues a new one for the same proxy.
    let r = s
        .post(&format!("/api/v1/proxies/{p1}/revoke"), &admin, json!({}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let detail = s
        .get("/api/v1/sync?hostname=edge-1&wait=0", &agent1)
        .await
        .problem(StatusCode::UNAUTHORIZED);
    assert!(detail.contains("revoked"), "{detail}");
    let (p1_again, agent1_new) = s.enroll(&admin, "edge-1").await;
    assert_eq!(p1_again, p1);
    assert_eq!(
        s.get("/api/v1/sync?hostname=edge-1&wait=0", &agent1_new)
            .await
            .status,
        StatusCode::OK
    );
    s.get("/api/v1/sync?hostname=edge-1&wait=0", &agent1)
        .await
        .problem(StatusCode::UNAUTHORIZED);
    // User tokens are not agent credentials and vice versa.
    s.get("/api/v1/sync?hostname=edge-1&wait=0", &admin)
        .await
        .problem(StatusCode::UNAUTHORIZED);
    s.get("/api/v1/proxies", &agent1_new)
        .await
        .problem(StatusCode::UNAUTHORIZED);
    // X-Agent-Token works as well.
    let r = s
        .http
        .get(format!("{}/api/v1/sync?hostname=edge-1&wait=0", s.base))
        .header("x-agent-token", &agent1_new)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::OK);
    let list = s.get("/api/v1/proxies", &regular).await;
    assert_eq!(list.body.as_array().expect("proxies").len(), 2);
}

both_dbs!(expiry_and_offline);

/// Enrollment tokens expire; proxies go offline when they stop calling.
async fn expiry_and_offline(db: Db) {
    let s = Srv::start_with(db, |st| st.online_window_secs = 1).await;
    let root = s.root().await;
    let r = s
        .post(
            "/api/v1/enrollment-tokens",
            &root,
            json!({"expires_in_seconds": 1}),
        )
        .await;
    let token = r.body["token"].as_str().expect("token").to_string();
    let (proxy, agent) = s.enroll(&root, "edge-1").await;
    assert_eq!(
        s.get("/api/v1/sync?hostname=edge-1&wait=0", &agent)
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        s.get(&format!("/api/v1/proxies/{proxy}"), &root).await.body["online"],
        true
    );
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let detail = s
        .call(
            Method::POST,
            "/api/v1/agents/enroll",
            None,
            Some(json!({"token": token, "hostname": "edge-2"})),
        )
        .await
        .problem(StatusCode::UNAUTHORIZED);
    assert!(detail.contains("expired"), "{detail}");
    let r = s.get(&format!("/api/v1/proxies/{proxy}"), &root).await;
    assert_eq!(r.body["online"], false, "{}", r.body);
    let r = s.get("/api/v1/dashboard", &root).await;
    assert_eq!(r.body["proxies"]["offline"], 1, "{}", r.body);
    assert_eq!(r.body["proxies"]["online"], 0);
}

both_dbs!(pushes_reach_the_rollups_on_their_own);

/// The server's periodic roll-up folds pushes into the rollups without anyone asking, and the
/// roll-up counter of `/metrics` says so.
async fn pushes_reach_the_rollups_on_their_own(db: Db) {
    let s = Srv::start_with(db, |c| c.stats_rollup_interval_ms = 100).await;
    let root = s.root().await;
    let (p, agent) = s.enroll(&root, "edge-r").await;
    let ts: i64 = 1_700_000_010;
    for (i, v) in [3.0, 5.0].into_iter().enumerate() {
        let r = s
            .post(
                "/api/v1/sync/stats",
                &agent,
                json!({"hostname": "edge-r", "timestamp": (ts + i as i64).to_string(), "metrics": {"m": v}}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let r = s
            .get(
                &format!(
                    "/api/v1/proxies/{p}/stats?metric=m&since={ts}&until={}&resolution=5m",
                    ts + 10
                ),
                &root,
            )
            .await;
        let points = r.body["points"].as_array().expect("points").clone();
        if !points.is_empty() && points[0]["count"] == 2 {
            assert_eq!(
                (points[0]["avg"].as_f64(), points[0]["last"].as_f64()),
                (Some(4.0), Some(5.0))
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never rolled up: {}",
            r.body
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let metrics = s
        .http
        .get(format!("{}/metrics", s.base))
        .send()
        .await
        .expect("metrics");
    let text = metrics.text().await.expect("text");
    assert!(
        text.lines()
            .any(|l| l.starts_with("apm_stats_pushes_rolled_up_total") && !l.ends_with(" 0")),
        "{text}"
    );
}
