//! Approval modes and concurrent approvals.

mod common;

use apm_server::ApprovalMode;
use common::{Db, Srv, policy_with_domain};
use reqwest::StatusCode;
use serde_json::json;

both_dbs!(
    self_confirm_is_the_default,
    four_eyes_mode,
    concurrent_approvals_activate_exactly_one
);

async fn self_confirm_is_the_default(db: Db) {
    let s = Srv::start(db).await;
    assert_eq!(
        s.server.state.settings.approval_mode,
        ApprovalMode::SelfConfirm
    );
    let root = s.root().await;
    let (_, alice) = s.user(&root, "alice", "admin").await;
    let (_, bob) = s.user(&root, "bob", "admin").await;
    let id = s.config(&alice, "c").await;
    s.post(&format!("/api/v1/configs/{id}/submit"), &alice, json!({}))
        .await;
    // Someone else cannot confirm in self_confirm mode.
    let detail = s
        .post(&format!("/api/v1/configs/{id}/approve"), &bob, json!({}))
        .await
        .problem(StatusCode::FORBIDDEN);
    assert!(detail.contains("self_confirm"), "{detail}");
    // The submitter's second, deliberate step activates it.
    let r = s
        .post(&format!("/api/v1/configs/{id}/approve"), &alice, json!({}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["status"], "active");
}

async fn four_eyes_mode(db: Db) {
    let s = Srv::start_with(db, |st| st.approval_mode = ApprovalMode::FourEyes).await;
    let root = s.root().await;
    let (_, alice) = s.user(&root, "alice", "admin").await;
    let (_, bob) = s.user(&root, "bob", "admin").await;
    let (carol_id, carol) = s.user(&root, "carol", "admin").await;
    let id = s.config(&alice, "c").await;
    // Bob edits the draft, alice submits: neither may approve.
    let r = s
        .put(
            &format!("/api/v1/configs/{id}"),
            &bob,
            json!({"policy": policy_with_domain("bob.example")}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        r.body["working"]["editors"]
            .as_array()
            .expect("editors")
            .len(),
        2
    );
    s.post(&format!("/api/v1/configs/{id}/submit"), &alice, json!({}))
        .await;
    let detail = s
        .post(&format!("/api/v1/configs/{id}/approve"), &alice, json!({}))
        .await
        .problem(StatusCode::FORBIDDEN);
    assert!(
        detail.contains("four_eyes") && detail.contains("submitter"),
        "{detail}"
    );
    let detail = s
        .post(&format!("/api/v1/configs/{id}/approve"), &bob, json!({}))
        .await
        .problem(StatusCode::FORBIDDEN);
    assert!(detail.contains("edited"), "{detail}");
    // Carol did neither.
    let r = s
        .post(&format!("/api/v1/configs/{id}/approve"), &carol, json!({}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["active"]["approved_by"], carol_id.as_str());
    // Root is an approver too, under the same rule.
    s.put(
        &format!("/api/v1/configs/{id}"),
        &root,
        json!({"policy": policy_with_domain("root.example")}),
    )
    .await;
    s.post(&format!("/api/v1/configs/{id}/submit"), &root, json!({}))
        .await;
    s.post(&format!("/api/v1/configs/{id}/approve"), &root, json!({}))
        .await
        .problem(StatusCode::FORBIDDEN);
    assert_eq!(
        s.post(&format!("/api/v1/configs/{id}/approve"), &alice, json!({}))
            .await
            .status,
        StatusCode::OK
    );
}

/// Two admins approve the same pending version at the same moment, several rounds: each round
/// exactly one wins (200) and the other gets 409, and exactly one version is active.
async fn concurrent_approvals_activate_exactly_one(db: Db) {
    let s = Srv::start_with(db, |st| st.approval_mode = ApprovalMode::FourEyes).await;
    let root = s.root().await;
    let (_, alice) = s.user(&root, "alice", "admin").await;
    let (_, bob) = s.user(&root, "bob", "admin").await;
    let (_, carol) = s.user(&root, "carol", "admin").await;
    let id = s.config(&alice, "race").await;
    for round in 0..6 {
        if round > 0 {
            let r = s
                .put(
                    &format!("/api/v1/configs/{id}"),
                    &alice,
                    json!({"policy": policy_with_domain(&format!("r{round}.example"))}),
                )
                .await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        }
        s.post(&format!("/api/v1/configs/{id}/submit"), &alice, json!({}))
            .await;
        let path = format!("/api/v1/configs/{id}/approve");
        let (a, b) = tokio::join!(
            s.post(&path, &bob, json!({})),
            s.post(&path, &carol, json!({}))
        );
        let mut statuses = [a.status, b.status];
        statuses.sort();
        assert_eq!(
            statuses,
            [StatusCode::OK, StatusCode::CONFLICT],
            "round {round}: {} / {}",
            a.text,
            b.text
        );
        let loser = if a.status == StatusCode::CONFLICT {
            &a
        } else {
            &b
        };
        loser.problem(StatusCode::CONFLICT);
        let versions = s
            .get(&format!("/api/v1/configs/{id}/versions"), &root)
            .await;
        let active: Vec<_> = versions
            .body
            .as_array()
            .expect("versions")
            .iter()
            .filter(|v| v["status"] == "active")
            .collect();
        assert_eq!(active.len(), 1, "round {round}: {}", versions.body);
        assert_eq!(active[0]["version"], round + 1);
    }
    // Exactly one approval row per round in the audit trail.
    let r = s
        .get(
            &format!("/api/v1/audit?entity_id={id}&action=config.approve"),
            &root,
        )
        .await;
    assert_eq!(
        r.body["items"].as_array().expect("items").len(),
        6,
        "{}",
        r.body
    );
    // Same submitter double-clicking in self_confirm mode: one activation as well.
    let s2 = Srv::start(db).await;
    let root2 = s2.root().await;
    let id2 = s2.config(&root2, "dbl").await;
    s2.post(&format!("/api/v1/configs/{id2}/submit"), &root2, json!({}))
        .await;
    let path = format!("/api/v1/configs/{id2}/approve");
    let (a, b) = tokio::join!(
        s2.post(&path, &root2, json!({})),
        s2.post(&path, &root2, json!({}))
    );
    let mut statuses = [a.status, b.status];
    statuses.sort();
    assert_eq!(
        statuses,
        [StatusCode::OK, StatusCode::CONFLICT],
        "{} / {}",
        a.text,
        b.text
    );
}
