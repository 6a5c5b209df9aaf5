//! The fleet-scale paths (see `apm bench fleet`): metric pushes stored by group commit, contact
//! times batched, and an approval waking only its own config's long-polls from a shared read.

mod common;

use std::time::{Duration, Instant};

use common::{Db, Srv, policy_with_domain};
use reqwest::StatusCode;
use serde_json::json;

both_dbs!(
    concurrent_pushes_are_all_stored,
    contact_time_advances_without_reporting_anything_new,
    approval_wakes_only_its_configs_agents,
    a_configs_answer_lists_at_most_a_thousand_proxies
);

async fn agent_of(s: &Srv, admin: &str, config: &str, hostname: &str) -> (String, String) {
    let (proxy, agent) = s.enroll(admin, hostname).await;
    let r = s
        .post(
            &format!("/api/v1/configs/{config}/proxies"),
            admin,
            json!({"proxy_ids": [proxy]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    (proxy, agent)
}

async fn concurrent_pushes_are_all_stored(db: Db) {
    let s = Srv::start(db).await;
    let root = s.root().await;
    let id = s.config(&root, "c").await;
    s.activate(&root, &id).await;
    let mut agents = Vec::new();
    for i in 0..4 {
        agents.push(agent_of(&s, &root, &id, &format!("edge-{i}")).await);
    }
    // 4 agents × 10 pushes at once, each with 3 metrics at its own second.
    let base = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        - 200;
    let mut pushes = tokio::task::JoinSet::new();
    for (i, (_, token)) in agents.iter().enumerate() {
        for k in 0..10u64 {
            let body = json!({
                "hostname": format!("edge-{i}"),
                "timestamp": (base + k).to_string(),
                "metrics": {"a": k as f64, "b": 2.0 * k as f64, "c": 1.0},
            });
            let (http, url, token) = (
                s.http.clone(),
                format!("{}/api/v1/sync/stats", s.base),
                token.clone(),
            );
            pushes.spawn(async move {
                let r = http.post(url).bearer_auth(token).json(&body).send().await;
                r.map(|r| r.status())
            });
        }
    }
    while let Some(r) = pushes.join_next().await {
        assert_eq!(r.expect("join").expect("sent"), StatusCode::OK);
    }
    for (proxy, _) in &agents {
        let r = s
            .get(
                &format!(
                    "/api/v1/proxies/{proxy}/stats?metric=a&resolution=raw&since={}&until={}",
                    base,
                    base + 100
                ),
                &root,
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let text = r.body.to_string();
        assert_eq!(
            text.matches("\"t_ms\"").count(),
            10,
            "every push of proxy {proxy} stored: {text}"
        );
    }
}

async fn contact_time_advances_without_reporting_anything_new(db: Db) {
    let s = Srv::start(db).await;
    let root = s.root().await;
    let id = s.config(&root, "c").await;
    s.activate(&root, &id).await;
    let (proxy, agent) = agent_of(&s, &root, &id, "edge-1").await;
    let sync = "/api/v1/sync?hostname=edge-1&wait=0&ats_version=9.2.5";
    assert_eq!(s.get(sync, &agent).await.status, StatusCode::OK);
    let first =
        s.get(&format!("/api/v1/proxies/{proxy}"), &root).await.body["last_seen_at"].clone();
    assert!(first.is_string(), "the first contact is written at once");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // Nothing new reported: the time is written by the batch within a quarter second.
    assert_eq!(s.get(sync, &agent).await.status, StatusCode::OK);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let now =
            s.get(&format!("/api/v1/proxies/{proxy}"), &root).await.body["last_seen_at"].clone();
        if now != first {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "last_seen_at never advanced from {first}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn approval_wakes_only_its_configs_agents(db: Db) {
    let s = Srv::start(db).await;
    let root = s.root().await;
    let a = s.config(&root, "a").await;
    s.activate(&root, &a).await;
    let b = s.config(&root, "b").await;
    s.activate(&root, &b).await;
    let (_, agent_a) = agent_of(&s, &root, &a, "edge-a").await;
    let (_, agent_b) = agent_of(&s, &root, &b, "edge-b").await;
    let hash_of = |r: &common::Resp| r.body["hash"].as_str().expect("hash").to_string();
    let ha = hash_of(&s.get("/api/v1/sync?hostname=edge-a&wait=0", &agent_a).await);
    let hb = hash_of(&s.get("/api/v1/sync?hostname=edge-b&wait=0", &agent_b).await);
    s.put(
        &format!("/api/v1/configs/{a}"),
        &root,
        json!({"policy": policy_with_domain("new.example")}),
    )
    .await;
    s.post(&format!("/api/v1/configs/{a}/submit"), &root, json!({}))
        .await;
    let started = Instant::now();
    let path_a = format!("/api/v1/sync?hostname=edge-a&hash={ha}&wait=4");
    let path_b = format!("/api/v1/sync?hostname=edge-b&hash={hb}&wait=4");
    let poll_a = s.get(&path_a, &agent_a);
    let poll_b = s.get(&path_b, &agent_b);
    let approve = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let r = s
            .post(&format!("/api/v1/configs/{a}/approve"), &root, json!({}))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    };
    let (ra, rb, ()) = tokio::join!(
        async {
            let r = poll_a.await;
            (r, started.elapsed())
        },
        async {
            let r = poll_b.await;
            (r, started.elapsed())
        },
        approve
    );
    assert_eq!(ra.0.body["status"], "bundle", "{}", ra.0.body);
    assert_ne!(hash_of(&ra.0), ha);
    assert!(ra.1 < Duration::from_secs(3), "a woke at once: {:?}", ra.1);
    assert_eq!(rb.0.body["status"], "unchanged", "{}", rb.0.body);
    assert_eq!(hash_of(&rb.0), hb);
    // b kept waiting to (nearly) its deadline: 4 s minus at most the 10 % jitter.
    assert!(
        rb.1 >= Duration::from_millis(3500),
        "b returned early: {:?}",
        rb.1
    );
}

/// A config's answers (GET, approval) list the first 1,000 proxies by hostname and say the list
/// is cut; `proxy_count` has them all.
async fn a_configs_answer_lists_at_most_a_thousand_proxies(db: Db) {
    let s = Srv::start(db).await;
    let root = s.root().await;
    let id = s.config(&root, "big").await;
    let mut ids = Vec::new();
    let mut tx = s.server.state.db.begin_write().await.expect("tx");
    for i in 0..1005 {
        let p = apm_store::proxies::ProxyRow::enrolled(
            apm_store::new_id(),
            format!("edge-{i:04}"),
            format!("hash-{i}"),
            0,
            None,
        );
        apm_store::proxies::insert_proxy(&mut tx, &p)
            .await
            .expect("proxy");
        ids.push(p.id);
    }
    tx.commit().await.expect("commit");
    let r = s
        .post(
            &format!("/api/v1/configs/{id}/proxies"),
            &root,
            json!({ "proxy_ids": ids }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = s.get(&format!("/api/v1/configs/{id}"), &root).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let listed = r.body["proxies"].as_array().expect("proxies");
    assert_eq!(listed.len(), 1000);
    assert_eq!(listed[0]["hostname"], "edge-0000");
    assert_eq!(listed[999]["hostname"], "edge-0999");
    assert_eq!(r.body["proxies_truncated"], true);
    assert_eq!(r.body["proxy_count"], 1005);
    let r = s
        .post(&format!("/api/v1/configs/{id}/submit"), &root, json!({}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = s
        .post(&format!("/api/v1/configs/{id}/approve"), &root, json!({}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["active_version"], 1, "{}", r.body);
    assert_eq!(r.body["proxies"].as_array().expect("proxies").len(), 1000);
    assert_eq!(r.body["proxies_truncated"], true);
    // A config with few proxies lists them all.
    let small = s.config(&root, "small").await;
    agent_of(&s, &root, &small, "edge-small").await;
    let r = s.get(&format!("/api/v1/configs/{small}"), &root).await;
    assert_eq!(r.body["proxies"].as_array().expect("proxies").len(), 1);
    assert_eq!(r.body["proxies_truncated"], false);
}
