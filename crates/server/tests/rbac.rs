//! The RBAC matrix: every endpoint of the OpenAPI document × anonymous / agent / regular /
//! admin / root, driven from one table. A new endpoint missing from the table fails
//! `table_covers_every_documented_endpoint`, so it cannot be forgotten.

mod common;

use std::collections::BTreeSet;

use common::{Db, Srv, policy};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// Who may call an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// No credential needed (health, metrics).
    Public,
    /// Authenticates with something in the body (login, enroll): every caller gets the same answer.
    Body,
    /// Any logged-in user (read-only for regular).
    User,
    /// Admin or root.
    Admin,
    /// Agent credential only.
    Agent,
}

struct Route {
    method: &'static str,
    /// As in the OpenAPI document.
    template: &'static str,
    access: Access,
    /// Query string appended to the concrete path.
    query: &'static str,
    body: fn(&Fixture, &str) -> Option<Value>,
    /// Logs in afresh for each identity (the call ends the session).
    fresh_session: bool,
}

fn none(_: &Fixture, _: &str) -> Option<Value> {
    None
}
fn empty(_: &Fixture, _: &str) -> Option<Value> {
    Some(json!({}))
}

const ROUTES: &[Route] = &[
    Route {
        method: "GET",
        template: "/health",
        access: Access::Public,
        query: "",
        body: none,
        fresh_session: false,
    },
    Route {
        method: "GET",
        template: "/health/ready",
        access: Access::Public,
        query: "",
        body: none,
        fresh_session: false,
    },
    Route {
        method: "GET",
        template: "/metrics",
        access: Access::Public,
        query: "",
        body: none,
        fresh_session: false,
    },
    Route {
        method: "GET",
        template: "/problems/{slug}",
        access: Access::Public,
        query: "",
        body: none,
        fresh_session: false,
    },
    Route {
        method: "POST",
        template: "/api/v1/auth/login",
        access: Access::Body,
        query: "",
        body: |_, _| Some(json!({"username": "nobody", "password": "wrong-password"})),
        fresh_session: false,
    },
    Route {
        method: "POST",
        template: "/api/v1/agents/enroll",
        access: Access::Body,
        query: "",
        body: |_, _| Some(json!({"token": "apme_invalid", "hostname": "x"})),
        fresh_session: false,
    },
    Route {
        method: "POST",
        template: "/api/v1/auth/beacon",
        access: Access::User,
        query: "",
        body: none,
        fresh_session: false,
    },
    Route {
        method: "GET",
        template: "/api/v1/auth/me",
        access: Access::User,
        query: "",
        body: none,
        fresh_session: false,
    },
    Route {
        method: "POST",
        template: "/api/v1/auth/logout",
        access: Access::User,
        query: "",
        body: none,
        fresh_session: true,
    },
    Route {
        method: "GET",
        template: "/api/v1/tokens",
        access: Access::User,
        query: "",
        body: none,
        fresh_session: false,
    },
    Route {
        method: "POST",
        template: "/api/v1/tokens",
        access: Access::User,
        query: "",
        body: |_, who| Some(json!({"name": format!("rbac-{who}")})),
        fresh_session: false,
    },
    Route {
        method: "DELETE",
        template: "/api/v1/tokens/{id}",
        access: Access::User,
        query: "",
        body: none,
        fresh_session: false,
    },
    Route {
        method: "GET",
        template: "/api/v1/users",
        access: Access::User,
        query: "",
        body: none,
        fresh_session: false,
    },
    Route {
        method: "POST",
        template: "/api/v1/users",
        access: Access::Admin,
        query: "",
        body: |_, who| {
            Some(
                json!({"username": format!("new-{who}"), "password": "password-1234", "role": "regular"}),
            )
        },
        fresh_session: false,
    },
    Route {
        method: "GET",
        template: "/api/v1/users/{id}",
        access: Access::User,
        query: "",
        body: none,
        fresh_session: false,
    },
    Route {
        method: "PATCH",
        template: "/api/v1/users/{id}",
        access: Access::Admin,
        query: "",
        body: |_, _| Some(json!({"disabled": false})),
        fresh_session: false,
    },
    Route {
        method: "GET",
        template: "/api/v1/configs",
        access: Access::User,
        query: "",
        body: none,
        fresh_session: false,
    },
    Route {
        method: "POST",
        template: "/api/v1/configs",
        access: Access::Admin,
        query: "",
        body: |_, who| Some(json!({"name": format!("rbac-{who}"), "policy": policy()})),
        fresh_session: false,
    },
    Route {
        method: "GET",
        template: "/api/v1/configs/{id}",
        access: Access::User,
        query: "",
        body: none,
        fresh_session: false,
    },
    Route {
        method: "PUT",
        template: "/api/v1/configs/{id}",
        access: Access::Admin,
        query: "",
        body: |_, who| Some(json!({"description": format!("edited by {who}")})),
        fresh_session: false,
    },
    Route {
        method: "POST",
        template: "/api/v1/configs/{id}/submit",
        access: Access::Admin,
        query: "",
        body: empty,
        fresh_session: false,
    },
    Route {
        method: "POST",
        template: "/api/v1/configs/{id}/approve",
        access: Access::Admin,
        query: "",
        body: empty,
        fresh_session: false,
    },
    Route {
        method: "POST",
        template: "/api/v1/configs/{id}/reject",
        access: Access::Admin,
        query: "",
        body: |_, _| Some(json!({"reason": "rbac"})),
        fresh_session: false,
    },
    Route {
        method: "GET",
        template: "/api/v1/configs/{id}/versions",
        access: Access::User,
        query: "",
        body: none,
        fresh_session: false,
    },
    Route {
        method: "GET",
        template: "/api/v1/configs/{id}/versions/{version}",
        access: Access::User,
        query: "",
        body: none,
        fresh_session: false,
    },
    Route {
        method: "POST",
        template: "/api/v1/configs/{id}/versions/{version}/restore",
        access: Access::Admin,
        query: "",
        body: empty,
        fresh_session: false,
    },
    Route {
        method: "GET",
        template: "/api/v1/configs/{id}/diff",
        access: Access::User,
        query: "?from=1&to=1",
        body: none,
        fresh_session: false,
    },
    Route {
        method: "POST",
        template: "/api/v1/configs/{id}/proxies",
        access: Access::Admin,
        query: "",
        body: |f, _| Some(json!({"proxy_ids": [f.proxy2]})),
        fresh_session: false,
    },
    Route {
        method: "DELETE",
        template: "/api/v1/configs/{id}/proxies/{proxy_id}",
        access: Access::Admin,
        query: "",
        body: none,
        fresh_session: false,
    },
    Route {
        method: "GET",
        template: "/api/v1/policy/template",
        access: Access::User,
        query: "",
        body: none,
        fresh_session: false,
    },
    Route {
        method: "GET",
        template: "/api/v1/enrollment-tokens",
        access: Access::User,
        query: "",
        body: none,
        fresh_session: false,
    },
    Route {
        method: "POST",
        template: "/api/v1/enrollment-tokens",
        access: Access::Admin,
        query: "",
        body: empty,
        fresh_session: false,
    },
    Route {
        method: "DELETE",
        template: "/api/v1/enrollment-tokens/{id}",
        access: Access::Admin,
        query: "",
        body: none,
        fresh_session: false,
    },
    Route {
        method: "GET",
        template: "/api/v1/proxies",
        access: Access::User,
        query: "",
        body: none,
        fresh_session: false,
    },
    Route {
        method: "GET",
        template: "/api/v1/proxies/{id}",
        access: Access::User,
        query: "",
        body: none,
        fresh_session: false,
    },
    Route {
        method: "POST",
        template: "/api/v1/proxies/{id}/revoke",
        access: Access::Admin,
        query: "",
        body: empty,
        fresh_session: false,
    },
    Route {
        method: "GET",
        template: "/api/v1/proxies/{id}/logs",
        access: Access::User,
        query: "",
        body: none,
        fresh_session: false,
    },
    Route {
        method: "POST",
        template: "/api/v1/proxies/{id}/logs",
        access: Access::Admin,
        query: "",
        body: |_, _| Some(json!({"duration_minutes": 1})),
        fresh_session: false,
    },
    Route {
        method: "GET",
        template: "/api/v1/proxies/{id}/stats",
        access: Access::User,
        query: "",
        body: none,
        fresh_session: false,
    },
    Route {
        method: "GET",
        template: "/api/v1/stats/fleet",
        access: Access::User,
        query: "?metric=proxy.process.http.incoming_requests",
        body: none,
        fresh_session: false,
    },
    Route {
        method: "GET",
        template: "/api/v1/sync",
        access: Access::Agent,
        query: "?hostname=edge-1&wait=0",
        body: none,
        fresh_session: false,
    },
    Route {
        method: "POST",
        template: "/api/v1/sync/ack",
        access: Access::Agent,
        query: "",
        body: |_, _| Some(json!({"hostname": "edge-1", "hash": "0".repeat(64), "status": "ok"})),
        fresh_session: false,
    },
    Route {
        method: "POST",
        template: "/api/v1/sync/stats",
        access: Access::Agent,
        query: "",
        body: |_, _| Some(json!({"hostname": "edge-1", "metrics": {"m": 1}})),
        fresh_session: false,
    },
    Route {
        method: "POST",
        template: "/api/v1/sync/logs",
        access: Access::Agent,
        query: "",
        body: |_, _| Some(json!({"hostname": "edge-1", "lines": ["l"]})),
        fresh_session: false,
    },
    Route {
        method: "GET",
        template: "/api/v1/audit",
        access: Access::User,
        query: "",
        body: none,
        fresh_session: false,
    },
    Route {
        method: "GET",
        template: "/api/v1/dashboard",
        access: Access::User,
        query: "",
        body: none,
        fresh_session: false,
    },
];

struct Fixture {
    config: String,
    proxy2: String,
    victim_user: String,
    root_api_token_id: String,
    enrollment_token_id: String,
}

impl Fixture {
    /// The concrete path of a template (path parameters depend on the endpoint family).
    fn path(&self, r: &Route) -> String {
        let t = r.template;
        let id = if t.starts_with("/api/v1/configs/") {
            &self.config
        } else if t.starts_with("/api/v1/proxies/") {
            &self.proxy2
        } else if t.starts_with("/api/v1/users/") {
            &self.victim_user
        } else if t.starts_with("/api/v1/tokens/") {
            &self.root_api_token_id
        } else {
            &self.enrollment_token_id
        };
        let p = t
            .replace("{id}", id)
            .replace("{version}", "1")
            .replace("{proxy_id}", &self.proxy2)
            .replace("{slug}", "conflict");
        format!("{p}{}", r.query)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Anonymous,
    Agent,
    Regular,
    Admin,
    Root,
}

const EVERYONE: [Who; 5] = [
    Who::Anonymous,
    Who::Agent,
    Who::Regular,
    Who::Admin,
    Who::Root,
];

/// Whether `who` should get past authentication and authorization on `access`.
fn allowed(access: Access, who: Who) -> bool {
    match access {
        Access::Public | Access::Body => true,
        Access::Agent => who == Who::Agent,
        Access::User => matches!(who, Who::Regular | Who::Admin | Who::Root),
        Access::Admin => matches!(who, Who::Admin | Who::Root),
    }
}

fn expected_denial(access: Access, who: Who) -> StatusCode {
    match (access, who) {
        (Access::Admin, Who::Regular) => StatusCode::FORBIDDEN,
        _ => StatusCode::UNAUTHORIZED,
    }
}

both_dbs!(rbac_matrix, admins_are_managed_by_root_only);

async fn rbac_matrix(db: Db) {
    let s = Srv::start(db).await;
    let root = s.root().await;
    let (_, admin) = s.user(&root, "alice", "admin").await;
    let (_, regular) = s.user(&admin, "rita", "regular").await;
    let (victim_user, _) = s.user(&admin, "victor", "regular").await;
    let config = s.config(&admin, "rbac").await;
    let (_proxy1, agent) = s.enroll(&admin, "edge-1").await;
    let (proxy2, _) = s.enroll(&admin, "edge-2").await;
    let r = s
        .post("/api/v1/tokens", &root, json!({"name": "root-automation"}))
        .await;
    let root_api_token_id = r.body["id"].as_str().expect("id").to_string();
    let r = s.post("/api/v1/enrollment-tokens", &admin, json!({})).await;
    let enrollment_token_id = r.body["id"].as_str().expect("id").to_string();
    let f = Fixture {
        config,
        proxy2,
        victim_user,
        root_api_token_id,
        enrollment_token_id,
    };

    let mut failures = Vec::new();
    for route in ROUTES {
        for who in EVERYONE {
            let name = format!("{who:?}").to_lowercase();
            let token = match who {
                Who::Anonymous => None,
                Who::Agent => Some(agent.clone()),
                Who::Regular if route.fresh_session => Some(s.login("rita", "rita-password").await),
                Who::Admin if route.fresh_session => Some(s.login("alice", "alice-password").await),
                Who::Root if route.fresh_session => Some(s.root().await),
                Who::Regular => Some(regular.clone()),
                Who::Admin => Some(admin.clone()),
                Who::Root => Some(root.clone()),
            };
            let method = Method::from_bytes(route.method.as_bytes()).expect("method");
            let r = s
                .call(
                    method,
                    &f.path(route),
                    token.as_deref(),
                    (route.body)(&f, &name),
                )
                .await;
            let status = r.status;
            if status.is_server_error() {
                failures.push(format!(
                    "{} {} as {name}: server error {status}: {}",
                    route.method, route.template, r.text
                ));
                continue;
            }
            if allowed(route.access, who) {
                let denied = status == StatusCode::UNAUTHORIZED && route.access != Access::Body
                    || status == StatusCode::FORBIDDEN;
                if denied {
                    failures.push(format!(
                        "{} {} as {name}: expected access, got {status}: {}",
                        route.method, route.template, r.text
                    ));
                }
            } else {
                let want = expected_denial(route.access, who);
                if status != want {
                    failures.push(format!(
                        "{} {} as {name}: expected {want}, got {status}: {}",
                        route.method, route.template, r.text
                    ));
                } else if r.content_type() != "application/problem+json" {
                    failures.push(format!(
                        "{} {} as {name}: denial is not problem+json",
                        route.method, route.template
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "RBAC matrix failures:\n{}",
        failures.join("\n")
    );
    s.server.state.db.close().await;
}

async fn admins_are_managed_by_root_only(db: Db) {
    let s = Srv::start(db).await;
    let root = s.root().await;
    let (alice_id, admin) = s.user(&root, "alice", "admin").await;
    let (bob_id, _) = s.user(&root, "bob", "admin").await;
    let (rita_id, regular) = s.user(&admin, "rita", "regular").await;
    let root_id = s.get("/api/v1/auth/me", &root).await.body["user"]["id"]
        .as_str()
        .expect("id")
        .to_string();

    // Admins cannot create, change or promote admins; nobody creates a second root.
    let detail = s
        .post(
            "/api/v1/users",
            &admin,
            json!({"username": "eve", "password": "password-1234", "role": "admin"}),
        )
        .await
        .problem(StatusCode::FORBIDDEN);
    assert!(detail.contains("root"), "{detail}");
    s.post(
        "/api/v1/users",
        &root,
        json!({"username": "eve", "password": "password-1234", "role": "root"}),
    )
    .await
    .problem(StatusCode::FORBIDDEN);
    s.call(
        Method::PATCH,
        &format!("/api/v1/users/{bob_id}"),
        Some(&admin),
        Some(json!({"disabled": true})),
    )
    .await
    .problem(StatusCode::FORBIDDEN);
    s.call(
        Method::PATCH,
        &format!("/api/v1/users/{rita_id}"),
        Some(&admin),
        Some(json!({"role": "admin"})),
    )
    .await
    .problem(StatusCode::FORBIDDEN);
    s.call(
        Method::PATCH,
        &format!("/api/v1/users/{root_id}"),
        Some(&root),
        Some(json!({"disabled": true})),
    )
    .await
    .problem(StatusCode::FORBIDDEN);
    // Regular users cannot manage anyone but may change their own password.
    s.call(
        Method::PATCH,
        &format!("/api/v1/users/{alice_id}"),
        Some(&regular),
        Some(json!({"disabled": true})),
    )
    .await
    .problem(StatusCode::FORBIDDEN);
    let r = s
        .call(
            Method::PATCH,
            &format!("/api/v1/users/{rita_id}"),
            Some(&regular),
            Some(json!({"password": "a-new-password"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    s.login("rita", "a-new-password").await;
    // Root manages admins: demote bob, disable him; his sessions die.
    let bob = s.login("bob", "bob-password").await;
    let r = s
        .call(
            Method::PATCH,
            &format!("/api/v1/users/{bob_id}"),
            Some(&root),
            Some(json!({"disabled": true})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["disabled"], true);
    s.get("/api/v1/configs", &bob)
        .await
        .problem(StatusCode::UNAUTHORIZED);
    let r = s
        .call(
            Method::POST,
            "/api/v1/auth/login",
            None,
            Some(json!({"username": "bob", "password": "bob-password"})),
        )
        .await;
    assert!(r.problem(StatusCode::UNAUTHORIZED).contains("disabled"));
    // Admin manages regular users.
    let r = s
        .call(
            Method::PATCH,
            &format!("/api/v1/users/{rita_id}"),
            Some(&admin),
            Some(json!({"disabled": true})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    // Listing never shows password hashes.
    let r = s.get("/api/v1/users", &admin).await;
    assert!(
        !r.text.contains("argon2") && !r.text.contains("password"),
        "{}",
        r.text
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_covers_every_documented_endpoint() {
    let s = Srv::start(Db::Sqlite).await;
    let r = s.call(Method::GET, "/api/openapi.json", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.body["openapi"]
            .as_str()
            .expect("openapi")
            .starts_with("3.1"),
        "{}",
        r.body["openapi"]
    );
    let mut documented = BTreeSet::new();
    for (path, item) in r.body["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("item").keys() {
            if ["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                documented.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    let table: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|r| (r.method.to_string(), r.template.to_string()))
        .collect();
    let missing: Vec<_> = documented.difference(&table).collect();
    let stale: Vec<_> = table.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "endpoints missing from the RBAC table: {missing:?}"
    );
    assert!(
        stale.is_empty(),
        "RBAC table rows that are not documented endpoints: {stale:?}"
    );
    assert_eq!(
        ROUTES.len(),
        table.len(),
        "duplicate rows in the RBAC table"
    );
}
