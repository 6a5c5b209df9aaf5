//! The long-poll: answers within about a second of an approval (same replica and another
//! replica on the same database), honours the wait cap, wakes on log-capture windows.

mod common;

use std::time::{Duration, Instant};

use common::{Db, Srv, policy_with_domain};
use reqwest::StatusCode;
use serde_json::json;

both_dbs!(
    long_poll_wakes_on_approval,
    long_poll_wait_is_capped_and_unchanged,
    long_poll_across_replicas,
    long_poll_wakes_on_log_capture
);

/// Sets up an admin, an active config and an enrolled, assigned agent that runs v1.
async fn setup(s: &Srv) -> (String, String, String, String) {
    let root = s.root().await;
    let (_, admin) = s.user(&root, "alice", "admin").await;
    let id = s.config(&admin, "c").await;
    s.activate(&admin, &id).await;
    let (proxy, agent) = s.enroll(&admin, "edge-1").await;
    s.post(
        &format!("/api/v1/configs/{id}/proxies"),
        &admin,
        json!({"proxy_ids": [proxy]}),
    )
    .await;
    let r = s.get("/api/v1/sync?hostname=edge-1&wait=0", &agent).await;
    let hash = r.body["hash"].as_str().expect("hash").to_string();
    (admin, id, agent, hash)
}

async fn long_poll_wakes_on_approval(db: Db) {
    let s = Srv::start(db).await;
    let (admin, id, agent, hash) = setup(&s).await;
    s.put(
        &format!("/api/v1/configs/{id}"),
        &admin,
        json!({"policy": policy_with_domain("new.example")}),
    )
    .await;
    s.post(&format!("/api/v1/configs/{id}/submit"), &admin, json!({}))
        .await;

    let started = Instant::now();
    let poll_path = format!("/api/v1/sync?hostname=edge-1&hash={hash}&wait=30");
    let poll = s.get(&poll_path, &agent);
    let approve = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let r = s
            .post(&format!("/api/v1/configs/{id}/approve"), &admin, json!({}))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        Instant::now()
    };
    let (r, approved_at) = tokio::join!(poll, approve);
    let returned_at = Instant::now();
    assert_eq!(r.body["status"], "bundle", "{}", r.body);
    assert_eq!(r.body["version"], 2);
    assert!(
        r.body["files"]["parent.config"]
            .as_str()
            .expect("file")
            .contains("new.example")
    );
    let latency = returned_at.saturating_duration_since(approved_at);
    println!(
        "long-poll returned {latency:?} after the approval response ({:?} after the request)",
        started.elapsed()
    );
    // Generous bound: the point is that it did not wait for its 30 s.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "long-poll held {:?}",
        started.elapsed()
    );
}

async fn long_poll_wait_is_capped_and_unchanged(db: Db) {
    let s = Srv::start_with(db, |st| {
        st.sync_max_wait_secs = 1;
        st.sync_jitter_percent = 0;
    })
    .await;
    let (_, _, agent, hash) = setup(&s).await;
    let started = Instant::now();
    let r = s
        .get(
            &format!("/api/v1/sync?hostname=edge-1&hash={hash}&wait=600"),
            &agent,
        )
        .await;
    let held = started.elapsed();
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["status"], "unchanged");
    assert_eq!(r.body["unchanged"], true);
    assert!(r.body["files"].is_null());
    assert!(held >= Duration::from_millis(900), "held only {held:?}");
    assert!(held < Duration::from_secs(10), "cap ignored: {held:?}");
    // wait=0 is a plain poll.
    let started = Instant::now();
    let r = s
        .get(
            &format!("/api/v1/sync?hostname=edge-1&hash={hash}&wait=0"),
            &agent,
        )
        .await;
    assert_eq!(r.body["status"], "unchanged");
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// Two replicas on one database: the agent waits on replica B, the approval happens on
/// replica A; B notices through the database generation counter.
async fn long_poll_across_replicas(db: Db) {
    let a = Srv::start(db).await;
    let (admin, id, agent, hash) = setup(&a).await;
    let b = Srv::start_on(&a.database_url, tempfile::tempdir().expect("dir"), |_| {}).await;
    a.put(
        &format!("/api/v1/configs/{id}"),
        &admin,
        json!({"policy": policy_with_domain("replica.example")}),
    )
    .await;
    a.post(&format!("/api/v1/configs/{id}/submit"), &admin, json!({}))
        .await;
    let started = Instant::now();
    let poll_path = format!("/api/v1/sync?hostname=edge-1&hash={hash}&wait=30");
    let poll = b.get(&poll_path, &agent);
    let approve = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let r = a
            .post(&format!("/api/v1/configs/{id}/approve"), &admin, json!({}))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        Instant::now()
    };
    let (r, approved_at) = tokio::join!(poll, approve);
    assert_eq!(r.body["status"], "bundle", "{}", r.body);
    println!(
        "cross-replica long-poll returned {:?} after the approval",
        Instant::now().saturating_duration_since(approved_at)
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "held {:?}",
        started.elapsed()
    );
}

async fn long_poll_wakes_on_log_capture(db: Db) {
    let s = Srv::start(db).await;
    let (admin, _, agent, hash) = setup(&s).await;
    let proxy = s.get("/api/v1/proxies", &admin).await.body[0]["id"]
        .as_str()
        .expect("id")
        .to_string();
    let started = Instant::now();
    let poll_path = format!("/api/v1/sync?hostname=edge-1&hash={hash}&wait=30");
    let poll = s.get(&poll_path, &agent);
    let open = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let r = s
            .post(
                &format!("/api/v1/proxies/{proxy}/logs"),
                &admin,
                json!({"duration_minutes": 2}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    };
    let (r, ()) = tokio::join!(poll, open);
    assert_eq!(r.body["status"], "unchanged", "{}", r.body);
    assert!(
        r.body["log_capture"]["until_ms"].as_i64().is_some(),
        "{}",
        r.body
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

both_dbs!(stale_stored_hashes_are_refreshed_at_start);

/// A renderer upgrade changes bundles: the stored desired hash must follow, or agents would get
/// the same bundle on every sync. Simulated by corrupting the stored hashes, then restarting.
async fn stale_stored_hashes_are_refreshed_at_start(db: Db) {
    let s = Srv::start(db).await;
    let (_, _, agent, hash) = setup(&s).await;
    {
        let mut conn = s.server.state.db.pool().acquire().await.expect("conn");
        for v in apm_store::configs::list_all_versions(&mut conn)
            .await
            .expect("versions")
        {
            apm_store::configs::update_hashes(&mut conn, &v.id, &"0".repeat(64), &"1".repeat(64))
                .await
                .expect("corrupt");
        }
    }
    let url = s.database_url.clone();
    s.server.stop().await;
    let s = Srv::start_on(&url, tempfile::tempdir().expect("dir"), |_| {}).await;
    let r = s
        .get(
            &format!("/api/v1/sync?hostname=edge-1&hash={hash}&wait=0"),
            &agent,
        )
        .await;
    assert_eq!(r.body["status"], "unchanged", "{}", r.body);
    assert_eq!(r.body["hash"], hash.as_str());
}
