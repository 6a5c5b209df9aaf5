//! Audit completeness: every mutation writes exactly one row, with its actor, its old and new
//! values and the request id of the HTTP request; reads write nothing; filters and pages work.

mod common;

use common::{Db, ROOT_PW, Resp, Srv, policy_with_domain};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

both_dbs!(every_mutation_writes_one_row, audit_filters_and_pages);

/// What a mutation must have left in the trail.
struct Expect {
    action: &'static str,
    actor: &'static str,
    old: bool,
    new: bool,
}

async fn latest(s: &Srv) -> apm_store::audit::AuditRow {
    let mut conn = s.server.state.db.pool().acquire().await.expect("conn");
    apm_store::audit::query(
        &mut conn,
        &apm_store::audit::AuditFilter {
            limit: 1,
            ..Default::default()
        },
    )
    .await
    .expect("query")
    .remove(0)
}

async fn check(s: &Srv, before: i64, r: &Resp, e: Expect) {
    assert!(
        r.status.is_success(),
        "{}: {} {}",
        e.action,
        r.status,
        r.text
    );
    assert_eq!(
        s.audit_count().await,
        before + 1,
        "{} must write exactly one audit row",
        e.action
    );
    let row = latest(s).await;
    assert_eq!(row.action, e.action);
    assert_eq!(row.actor, e.actor, "{}", e.action);
    assert_eq!(
        row.old_value.is_some(),
        e.old,
        "{} old value: {:?}",
        e.action,
        row.old_value
    );
    assert_eq!(
        row.new_value.is_some(),
        e.new,
        "{} new value: {:?}",
        e.action,
        row.new_value
    );
    for v in [&row.old_value, &row.new_value].into_iter().flatten() {
        serde_json::from_str::<Value>(v).expect("values are JSON");
        for secret in [
            "argon2",
            "apms_",
            "apmt_",
            "apma_",
            "apme_",
            "password-for",
            "-password\"",
        ] {
            assert!(!v.contains(secret), "{} leaks {secret}: {v}", e.action);
        }
    }
    let header = r
        .headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .expect("x-request-id");
    assert_eq!(
        row.request_id.as_deref(),
        Some(header),
        "{} request id",
        e.action
    );
}

macro_rules! mutation {
    ($s:expr, $expect:expr, $call:expr) => {{
        let before = $s.audit_count().await;
        let r = $call;
        check(&$s, before, &r, $expect).await;
        r
    }};
}

async fn every_mutation_writes_one_row(db: Db) {
    let s = Srv::start(db).await;
    let login = |u: &'static str, p: &'static str| json!({"username": u, "password": p});
    let r = mutation!(
        s,
        Expect {
            action: "auth.login",
            actor: "root",
            old: false,
            new: true
        },
        s.call(
            Method::POST,
            "/api/v1/auth/login",
            None,
            Some(login("root", ROOT_PW))
        )
        .await
    );
    let root = r.body["token"].as_str().expect("token").to_string();
    // A failed login is a 401 and still leaves one row.
    let before = s.audit_count().await;
    s.call(
        Method::POST,
        "/api/v1/auth/login",
        None,
        Some(login("root", "nope-nope")),
    )
    .await
    .problem(StatusCode::UNAUTHORIZED);
    assert_eq!(s.audit_count().await, before + 1);
    assert_eq!(latest(&s).await.action, "auth.login_failed");
    let r = mutation!(
        s,
        Expect {
            action: "user.create",
            actor: "root",
            old: false,
            new: true
        },
        s.post(
            "/api/v1/users",
            &root,
            json!({"username": "alice", "password": "alice-password", "role": "admin"})
        )
        .await
    );
    let alice_id = r.body["id"].as_str().expect("id").to_string();
    let r = mutation!(
        s,
        Expect {
            action: "auth.login",
            actor: "alice",
            old: false,
            new: true
        },
        s.call(
            Method::POST,
            "/api/v1/auth/login",
            None,
            Some(login("alice", "alice-password"))
        )
        .await
    );
    let admin = r.body["token"].as_str().expect("token").to_string();
    let r = mutation!(
        s,
        Expect {
            action: "user.create",
            actor: "alice",
            old: false,
            new: true
        },
        s.post(
            "/api/v1/users",
            &admin,
            json!({"username": "rita", "password": "rita-password", "role": "regular"})
        )
        .await
    );
    let rita = r.body["id"].as_str().expect("id").to_string();
    mutation!(
        s,
        Expect {
            action: "user.update",
            actor: "alice",
            old: true,
            new: true
        },
        s.call(
            Method::PATCH,
            &format!("/api/v1/users/{rita}"),
            Some(&admin),
            Some(json!({"password": "another-password"}))
        )
        .await
    );
    let r = mutation!(
        s,
        Expect {
            action: "token.create",
            actor: "alice",
            old: false,
            new: true
        },
        s.post("/api/v1/tokens", &admin, json!({"name": "ci"}))
            .await
    );
    let token_id = r.body["id"].as_str().expect("id").to_string();
    mutation!(
        s,
        Expect {
            action: "token.revoke",
            actor: "alice",
            old: true,
            new: true
        },
        s.call(
            Method::DELETE,
            &format!("/api/v1/tokens/{token_id}"),
            Some(&admin),
            None
        )
        .await
    );
    let r = mutation!(
        s,
        Expect {
            action: "config.create",
            actor: "alice",
            old: false,
            new: true
        },
        s.post(
            "/api/v1/configs",
            &admin,
            json!({"name": "c", "policy": common::policy()})
        )
        .await
    );
    let id = r.body["id"].as_str().expect("id").to_string();
    mutation!(
        s,
        Expect {
            action: "config.update",
            actor: "alice",
            old: true,
            new: true
        },
        s.put(
            &format!("/api/v1/configs/{id}"),
            &admin,
            json!({"description": "d2"})
        )
        .await
    );
    mutation!(
        s,
        Expect {
            action: "config.edit",
            actor: "alice",
            old: true,
            new: true
        },
        s.put(
            &format!("/api/v1/configs/{id}"),
            &admin,
            json!({"name": "c2", "policy": policy_with_domain("a.example")})
        )
        .await
    );
    mutation!(
        s,
        Expect {
            action: "config.submit",
            actor: "alice",
            old: true,
            new: true
        },
        s.post(&format!("/api/v1/configs/{id}/submit"), &admin, json!({}))
            .await
    );
    mutation!(
        s,
        Expect {
            action: "config.reject",
            actor: "alice",
            old: true,
            new: true
        },
        s.post(
            &format!("/api/v1/configs/{id}/reject"),
            &admin,
            json!({"reason": "no"})
        )
        .await
    );
    s.post(&format!("/api/v1/configs/{id}/submit"), &admin, json!({}))
        .await;
    mutation!(
        s,
        Expect {
            action: "config.approve",
            actor: "alice",
            old: true,
            new: true
        },
        s.post(&format!("/api/v1/configs/{id}/approve"), &admin, json!({}))
            .await
    );
    mutation!(
        s,
        Expect {
            action: "config.new_version",
            actor: "alice",
            old: true,
            new: true
        },
        s.put(
            &format!("/api/v1/configs/{id}"),
            &admin,
            json!({"policy": policy_with_domain("b.example")})
        )
        .await
    );
    s.post(&format!("/api/v1/configs/{id}/submit"), &admin, json!({}))
        .await;
    s.post(&format!("/api/v1/configs/{id}/approve"), &admin, json!({}))
        .await;
    mutation!(
        s,
        Expect {
            action: "config.restore",
            actor: "alice",
            old: true,
            new: true
        },
        s.post(
            &format!("/api/v1/configs/{id}/versions/1/restore"),
            &admin,
            json!({})
        )
        .await
    );
    let r = mutation!(
        s,
        Expect {
            action: "enrollment_token.create",
            actor: "alice",
            old: false,
            new: true
        },
        s.post("/api/v1/enrollment-tokens", &admin, json!({"max_uses": 5}))
            .await
    );
    let et = r.body["token"].as_str().expect("token").to_string();
    let et_id = r.body["id"].as_str().expect("id").to_string();
    let r = mutation!(
        s,
        Expect {
            action: "agent.enroll",
            actor: "agent:edge-1",
            old: false,
            new: true
        },
        s.call(
            Method::POST,
            "/api/v1/agents/enroll",
            None,
            Some(json!({"token": et, "hostname": "edge-1"}))
        )
        .await
    );
    let proxy = r.body["proxy_id"].as_str().expect("id").to_string();
    mutation!(
        s,
        Expect {
            action: "config.assign_proxies",
            actor: "alice",
            old: true,
            new: true
        },
        s.post(
            &format!("/api/v1/configs/{id}/proxies"),
            &admin,
            json!({"proxy_ids": [proxy]})
        )
        .await
    );
    mutation!(
        s,
        Expect {
            action: "config.unassign_proxy",
            actor: "alice",
            old: true,
            new: true
        },
        s.call(
            Method::DELETE,
            &format!("/api/v1/configs/{id}/proxies/{proxy}"),
            Some(&admin),
            None
        )
        .await
    );
    mutation!(
        s,
        Expect {
            action: "proxy.logs.open",
            actor: "alice",
            old: true,
            new: true
        },
        s.post(
            &format!("/api/v1/proxies/{proxy}/logs"),
            &admin,
            json!({"duration_minutes": 1})
        )
        .await
    );
    mutation!(
        s,
        Expect {
            action: "proxy.revoke",
            actor: "alice",
            old: true,
            new: true
        },
        s.post(
            &format!("/api/v1/proxies/{proxy}/revoke"),
            &admin,
            json!({})
        )
        .await
    );
    mutation!(
        s,
        Expect {
            action: "agent.reenroll",
            actor: "agent:edge-1",
            old: false,
            new: true
        },
        s.call(
            Method::POST,
            "/api/v1/agents/enroll",
            None,
            Some(json!({"token": et, "hostname": "edge-1"}))
        )
        .await
    );
    mutation!(
        s,
        Expect {
            action: "enrollment_token.revoke",
            actor: "alice",
            old: true,
            new: true
        },
        s.call(
            Method::DELETE,
            &format!("/api/v1/enrollment-tokens/{et_id}"),
            Some(&admin),
            None
        )
        .await
    );
    mutation!(
        s,
        Expect {
            action: "user.update",
            actor: "root",
            old: true,
            new: true
        },
        s.call(
            Method::PATCH,
            &format!("/api/v1/users/{alice_id}"),
            Some(&root),
            Some(json!({"role": "regular"}))
        )
        .await
    );
    mutation!(
        s,
        Expect {
            action: "auth.logout",
            actor: "root",
            old: false,
            new: false
        },
        s.call(Method::POST, "/api/v1/auth/logout", Some(&root), None)
            .await
    );

    // Reads and beacons write nothing.
    let root = s.root().await;
    let before = s.audit_count().await;
    for path in [
        "/api/v1/configs",
        "/api/v1/users",
        "/api/v1/proxies",
        "/api/v1/audit",
        "/api/v1/dashboard",
        "/api/v1/auth/me",
    ] {
        assert_eq!(s.get(path, &root).await.status, StatusCode::OK, "{path}");
    }
    s.call(Method::POST, "/api/v1/auth/beacon", Some(&root), None)
        .await;
    assert_eq!(s.audit_count().await, before);
    // Refused mutations write nothing either.
    s.post(
        "/api/v1/configs",
        &root,
        json!({"name": "bad", "policy": {"listen_port": "x"}}),
    )
    .await
    .problem(StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(s.audit_count().await, before);
}

async fn audit_filters_and_pages(db: Db) {
    let s = Srv::start(db).await;
    let root = s.root().await;
    let (_, admin) = s.user(&root, "alice", "admin").await;
    let a = s.config(&admin, "a").await;
    let b = s.config(&admin, "b").await;
    s.activate(&admin, &a).await;
    let (_, regular) = s.user(&admin, "rita", "regular").await;
    // By entity.
    let r = s
        .get(&format!("/api/v1/audit?entity_id={a}"), &regular)
        .await;
    let actions: Vec<&str> = r.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|i| i["action"].as_str())
        .collect();
    assert_eq!(
        actions,
        vec!["config.approve", "config.submit", "config.create"]
    );
    assert_eq!(r.body["items"][0]["new_value"]["status"], "active");
    assert_eq!(
        r.body["items"][0]["old_value"]["status"],
        "pending_approval"
    );
    // By action prefix and actor.
    let r = s
        .get("/api/v1/audit?action=config.&actor=alice", &regular)
        .await;
    assert_eq!(r.body["items"].as_array().expect("items").len(), 4);
    let r = s
        .get(
            &format!("/api/v1/audit?entity_id={b}&action=config.create"),
            &regular,
        )
        .await;
    assert_eq!(r.body["items"].as_array().expect("items").len(), 1);
    // Time window.
    let r = s.get("/api/v1/audit?until=0", &regular).await;
    assert!(r.body["items"].as_array().expect("items").is_empty());
    let r = s
        .get("/api/v1/audit?since=2000-01-01T00:00:00Z", &regular)
        .await;
    let all = r.body["items"].as_array().expect("items").len();
    assert!(all >= 8, "{all}");
    // Pages of 3 cover everything once, newest first.
    let mut seen = Vec::new();
    let mut cursor: Option<i64> = None;
    loop {
        let path = match cursor {
            Some(c) => format!("/api/v1/audit?limit=3&before={c}"),
            None => "/api/v1/audit?limit=3".to_string(),
        };
        let r = s.get(&path, &regular).await;
        for i in r.body["items"].as_array().expect("items") {
            seen.push(i["id"].as_i64().expect("id"));
        }
        match r.body["next_before"].as_i64() {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    let mut sorted = seen.clone();
    sorted.sort_by(|x, y| y.cmp(x));
    sorted.dedup();
    assert_eq!(seen, sorted, "pages overlap or are out of order");
    assert!(seen.len() >= all);
    s.get("/api/v1/audit?limit=0", &regular)
        .await
        .problem(StatusCode::BAD_REQUEST);
    s.get("/api/v1/audit?since=yesterday", &regular)
        .await
        .problem(StatusCode::BAD_REQUEST);
    s.get("/api/v1/audit?colour=red", &regular)
        .await
        .problem(StatusCode::BAD_REQUEST);
}
