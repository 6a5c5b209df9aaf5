//! The store on both engines: migrations, constraints, conditional transitions, time series.

use apm_store::configs::{ConfigRow, VersionRow};
use apm_store::{Db, StoreError, new_id, now_ms};

#[macro_use]
mod common;

async fn open(postgres: bool, dir: &std::path::Path) -> Db {
    let db = common::connect(postgres, dir, "t.db").await;
    assert_eq!(db.migrate().await.expect("migrate"), vec![1, 2, 3, 4, 5]);
    db
}

/// Folds every push into the rollups (what the server's roll-up task does), the current
/// bucket included.
async fn roll_up(conn: &mut apm_store::AnyConnection) {
    let now = now_ms();
    let open_bucket = now - now.rem_euclid(apm_store::telemetry::ROLLUP_MS);
    while !apm_store::telemetry::roll_up_step(conn, 1000, open_bucket, true)
        .await
        .expect("roll up")
        .done
    {}
}

both!(
    migrations_are_idempotent,
    unique_names_are_conflicts,
    approval_is_conditional,
    rollups_and_retention,
    fleet_series_sum_gauges_and_rate_counters,
    only_waits_longer_than_the_threshold_count_as_slow
);

async fn only_waits_longer_than_the_threshold_count_as_slow(pg: bool) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = open(pg, dir.path()).await;
    let before = db.slow_acquires();
    // The test pool has 4 connections: taking them all waits for nothing.
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(db.acquire().await.expect("acquire"));
    }
    assert_eq!(db.slow_acquires(), before, "free connections are not slow");
    let waiter = {
        let db = db.clone();
        tokio::spawn(async move { db.acquire().await.map(drop) })
    };
    tokio::time::sleep(apm_store::SLOW_ACQUIRE + std::time::Duration::from_millis(300)).await;
    held.pop();
    waiter.await.expect("join").expect("acquire after the wait");
    assert_eq!(
        db.slow_acquires(),
        before + 1,
        "the wait past the threshold counts once"
    );
    drop(held);
}

async fn migrations_are_idempotent(pg: bool) {
    let dir = tempfile::tempdir().expect("dir");
    let db = open(pg, dir.path()).await;
    assert!(db.migrate().await.expect("again").is_empty());
    db.ping().await.expect("ping");
    let mut conn = db.pool().acquire().await.expect("conn");
    assert_eq!(
        apm_store::telemetry::generation(&mut conn)
            .await
            .expect("gen"),
        0
    );
}

fn config(name: &str) -> ConfigRow {
    ConfigRow {
        id: new_id(),
        name: name.into(),
        description: String::new(),
        created_by: "u".into(),
        created_at: now_ms(),
        updated_at: now_ms(),
        active_version: None,
    }
}

fn version(config_id: &str, n: i64) -> VersionRow {
    VersionRow {
        id: new_id(),
        config_id: config_id.into(),
        version: n,
        status: "draft".into(),
        policy: "{}".into(),
        hash_v9: "a".into(),
        hash_v10: "b".into(),
        created_by: "u".into(),
        created_at: now_ms(),
        updated_at: now_ms(),
        editors: "[\"u\"]".into(),
        submitted_by: None,
        submitted_at: None,
        approved_by: None,
        approved_at: None,
        rejected_by: None,
        rejected_at: None,
        reject_reason: None,
        restored_from: None,
    }
}

async fn unique_names_are_conflicts(pg: bool) {
    let dir = tempfile::tempdir().expect("dir");
    let db = open(pg, dir.path()).await;
    let mut tx = db.begin_write().await.expect("tx");
    apm_store::configs::insert_config(&mut tx, &config("x"))
        .await
        .expect("first");
    tx.commit().await.expect("commit");
    let mut tx = db.begin_write().await.expect("tx");
    match apm_store::configs::insert_config(&mut tx, &config("x")).await {
        Err(StoreError::Conflict(m)) => assert!(m.contains("\"x\""), "{m}"),
        other => panic!("expected a conflict, got {other:?}"),
    }
}

async fn approval_is_conditional(pg: bool) {
    let dir = tempfile::tempdir().expect("dir");
    let db = open(pg, dir.path()).await;
    let c = config("c");
    let v = version(&c.id, 1);
    let mut tx = db.begin_write().await.expect("tx");
    apm_store::configs::insert_config(&mut tx, &c)
        .await
        .expect("config");
    apm_store::configs::insert_version(&mut tx, &v)
        .await
        .expect("version");
    assert!(
        !apm_store::configs::mark_approved(&mut tx, &v.id, "u", 1)
            .await
            .expect("approve draft"),
        "a draft cannot be approved"
    );
    assert!(
        apm_store::configs::mark_submitted(&mut tx, &v.id, "u", 1)
            .await
            .expect("submit")
    );
    assert!(
        !apm_store::configs::mark_submitted(&mut tx, &v.id, "u", 1)
            .await
            .expect("submit twice")
    );
    tx.commit().await.expect("commit");
    // Many concurrent approvers, one winner.
    let mut tasks = Vec::new();
    for i in 0..6 {
        let db = db.clone();
        let id = v.id.clone();
        tasks.push(tokio::spawn(async move {
            let mut tx = db.begin_write().await.expect("tx");
            let won = apm_store::configs::mark_approved(&mut tx, &id, &format!("u{i}"), 2)
                .await
                .expect("approve");
            tx.commit().await.expect("commit");
            won
        }));
    }
    let mut winners = 0;
    for t in tasks {
        winners += usize::from(t.await.expect("join"));
    }
    assert_eq!(winners, 1);
}

async fn rollups_and_retention(pg: bool) {
    let dir = tempfile::tempdir().expect("dir");
    let db = open(pg, dir.path()).await;
    let mut tx = db.begin_write().await.expect("tx");
    let p = common::proxy_row("h");
    apm_store::proxies::insert_proxy(&mut tx, &p)
        .await
        .expect("proxy");
    let bucket = apm_store::telemetry::ROLLUP_MS;
    // Two buckets; the second sample arrives out of order and must not become `last`.
    let pushes: Vec<apm_store::telemetry::NewPush> = [
        (bucket, 5.0),
        (bucket + 2000, 9.0),
        (bucket + 1000, 1.0),
        (2 * bucket + 10, 3.0),
    ]
    .into_iter()
    .map(|(ts, v)| apm_store::telemetry::NewPush {
        proxy_id: p.id.clone(),
        ts,
        metrics: vec![("m".into(), v)],
    })
    .collect();
    apm_store::telemetry::insert_pushes(&mut tx, &pushes)
        .await
        .expect("pushes");
    roll_up(&mut tx).await;
    tx.commit().await.expect("commit");
    let mut conn = db.pool().acquire().await.expect("conn");
    let r = apm_store::telemetry::rollup_series(&mut conn, &p.id, "m", 0, 10 * bucket)
        .await
        .expect("rollup");
    assert_eq!(r.len(), 2);
    assert_eq!(
        (r[0].count, r[0].min, r[0].max, r[0].last, r[0].avg),
        (3, 1.0, 9.0, 9.0, 5.0)
    );
    assert_eq!(r[1].t, 2 * bucket);
    let raw = apm_store::telemetry::raw_series(&mut conn, &p.id, "m", 0, 10 * bucket)
        .await
        .expect("raw");
    assert_eq!(
        raw.iter().map(|p| p.t).collect::<Vec<_>>(),
        vec![bucket, bucket + 1000, bucket + 2000, 2 * bucket + 10]
    );
    // Retention drops raw before the horizon but keeps the rollups.
    let deleted = apm_store::telemetry::apply_retention(&mut conn, 2 * bucket, 0, 0)
        .await
        .expect("retention");
    assert_eq!(deleted, 3);
    assert_eq!(
        apm_store::telemetry::raw_series(&mut conn, &p.id, "m", 0, 10 * bucket)
            .await
            .expect("raw")
            .len(),
        1
    );
    assert_eq!(
        apm_store::telemetry::rollup_series(&mut conn, &p.id, "m", 0, 10 * bucket)
            .await
            .expect("rollup")
            .len(),
        2
    );
    apm_store::telemetry::apply_retention(&mut conn, 0, 2 * bucket, 0)
        .await
        .expect("retention");
    assert_eq!(
        apm_store::telemetry::rollup_series(&mut conn, &p.id, "m", 0, 10 * bucket)
            .await
            .expect("rollup")
            .len(),
        1
    );
}

async fn fleet_series_sum_gauges_and_rate_counters(pg: bool) {
    use apm_store::telemetry::{FleetPoint, ROLLUP_MS};
    let dir = tempfile::tempdir().expect("dir");
    let db = open(pg, dir.path()).await;
    let (a, b) = (common::proxy_row("a"), common::proxy_row("b"));
    let mut tx = db.begin_write().await.expect("tx");
    for p in [&a, &b] {
        apm_store::proxies::insert_proxy(&mut tx, p)
            .await
            .expect("proxy");
    }
    // Samples at the end of buckets 1..=4 (one per proxy and bucket, 300 s apart).
    // a's counter grows 600 per step (2/s) and is reset in bucket 4 (restart, now 150);
    // b's grows 300 per step (1/s) and only reports from bucket 2 on.
    let at = |k: i64| k * ROLLUP_MS + 1000;
    let samples: Vec<(&str, i64, &str, f64)> = vec![
        (&a.id, at(1), "hits", 1000.0),
        (&a.id, at(2), "hits", 1600.0),
        (&a.id, at(3), "hits", 2200.0),
        (&a.id, at(4), "hits", 150.0),
        (&b.id, at(2), "hits", 50.0),
        (&b.id, at(3), "hits", 350.0),
        (&b.id, at(4), "hits", 650.0),
        (&a.id, at(3), "conns", 7.0),
        (&b.id, at(3), "conns", 5.0),
        (&b.id, at(4), "conns", 4.0),
    ];
    // One push per (proxy, time), as an agent sends them.
    let mut pushes: Vec<apm_store::telemetry::NewPush> = Vec::new();
    for (id, ts, metric, v) in samples {
        match pushes.iter_mut().find(|p| p.proxy_id == id && p.ts == ts) {
            Some(p) => p.metrics.push((metric.into(), v)),
            None => pushes.push(apm_store::telemetry::NewPush {
                proxy_id: id.into(),
                ts,
                metrics: vec![(metric.into(), v)],
            }),
        }
    }
    apm_store::telemetry::insert_pushes(&mut tx, &pushes)
        .await
        .expect("pushes");
    roll_up(&mut tx).await;
    tx.commit().await.expect("commit");
    let mut conn = db.pool().acquire().await.expect("conn");
    let point = |k: i64, value: f64, proxies: i64| FleetPoint {
        t: k * ROLLUP_MS,
        value,
        proxies,
    };
    assert_eq!(
        apm_store::telemetry::fleet_gauge_series(&mut conn, "conns", 0, 10 * ROLLUP_MS)
            .await
            .expect("gauge"),
        vec![point(3, 12.0, 2), point(4, 4.0, 1)]
    );
    assert_eq!(
        apm_store::telemetry::fleet_counter_rates(&mut conn, "hits", 0, 10 * ROLLUP_MS)
            .await
            .expect("rates"),
        vec![point(2, 2.0, 1), point(3, 3.0, 2), point(4, 0.5 + 1.0, 2)]
    );
    // The bucket before `since` is read, so the first bucket in range still has a rate.
    assert_eq!(
        apm_store::telemetry::fleet_counter_rates(
            &mut conn,
            "hits",
            3 * ROLLUP_MS + 5,
            10 * ROLLUP_MS
        )
        .await
        .expect("rates"),
        vec![point(3, 3.0, 2), point(4, 1.5, 2)]
    );
    assert_eq!(
        apm_store::telemetry::fleet_metric_names(&mut conn, 4 * ROLLUP_MS)
            .await
            .expect("names"),
        vec!["conns".to_string(), "hits".to_string()]
    );
}
