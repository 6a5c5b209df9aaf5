//! Metric pushes and their roll-up, on both engines: however pushes are batched and rolled up
//! (in small steps, by several writers at once, interrupted), the rollups end equal to one fold
//! of every push, each push counted exactly once; and the migration that introduced pushes
//! keeps the samples stored before it.

use apm_store::Db;
use apm_store::telemetry::{
    NewPush, Point, ROLLUP_MS, fold_rollups, insert_pushes, pending_pushes, pending_pushes_from,
    raw_series, roll_up_pending, rollup_series,
};
use common::proxy_row;

#[macro_use]
mod common;

async fn open(postgres: bool, dir: &std::path::Path) -> Db {
    let db = common::connect(postgres, dir, "t.db").await;
    db.migrate().await.expect("migrate");
    db
}

async fn proxies(db: &Db, n: usize) -> Vec<String> {
    let mut tx = db.begin_write().await.expect("tx");
    let mut ids = Vec::new();
    for i in 0..n {
        let p = proxy_row(&format!("h{i}"));
        apm_store::proxies::insert_proxy(&mut tx, &p)
            .await
            .expect("proxy");
        ids.push(p.id);
    }
    tx.commit().await.expect("commit");
    ids
}

/// A deterministic messy set of pushes: out-of-order times, several buckets, partial metric
/// sets, more rows than one multi-row statement holds; (proxy, time) never repeats.
fn pushes(proxies: &[String]) -> Vec<NewPush> {
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut x: u64 = 12345;
    while out.len() < 1300 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let p = &proxies[(x >> 33) as usize % proxies.len()];
        let ts = ROLLUP_MS + ((x >> 8) % 4000) as i64 * 170;
        if !seen.insert((p.clone(), ts)) {
            continue;
        }
        let metrics = (0..3)
            .filter(|m| (x >> (50 + m)) & 1 == 1 || *m == 0)
            .map(|m| (format!("m{m}"), ((x >> (40 + m)) % 1000) as f64 / 4.0))
            .collect();
        out.push(NewPush {
            proxy_id: p.clone(),
            ts,
            metrics,
        });
    }
    out
}

/// The series [`rollup_series`] must return for `pushes`, computed in memory.
fn expected_rollups(pushes: &[NewPush], proxy: &str, metric: &str) -> Vec<Point> {
    fold_rollups(pushes)
        .into_iter()
        .filter(|r| r.proxy_id == proxy && r.metric == metric)
        .map(|r| Point {
            t: r.bucket,
            count: r.count,
            avg: r.sum / r.count as f64,
            min: r.min,
            max: r.max,
            last: r.last,
        })
        .collect()
}

async fn insert(db: &Db, pushes: &[NewPush]) {
    let mut tx = db.begin_write().await.expect("tx");
    insert_pushes(&mut tx, pushes).await.expect("insert");
    tx.commit().await.expect("commit");
}

/// Rolls up in steps of `limit` until nothing is pending; returns the pushes taken.
async fn roll_up_all(db: Db, limit: usize) -> usize {
    let mut total = 0;
    loop {
        let mut tx = db.begin_write().await.expect("tx");
        let n = roll_up_pending(&mut tx, limit, None)
            .await
            .expect("roll up");
        tx.commit().await.expect("commit");
        total += n;
        if n == 0 {
            return total;
        }
    }
}

async fn check(db: &Db, ids: &[String], all: &[NewPush]) {
    let mut conn = db.pool().acquire().await.expect("conn");
    assert_eq!(pending_pushes(&mut conn).await.expect("pending"), 0);
    for id in ids {
        for m in ["m0", "m1", "m2"] {
            let got = rollup_series(&mut conn, id, m, 0, 100 * ROLLUP_MS)
                .await
                .expect("rollups");
            let want = expected_rollups(all, id, m);
            assert!(!want.is_empty());
            assert_eq!(got, want, "rollups of {id} {m}");
            let raw = raw_series(&mut conn, id, m, 0, 100 * ROLLUP_MS)
                .await
                .expect("raw");
            let mut want_raw: Vec<(i64, f64)> = all
                .iter()
                .filter(|p| p.proxy_id == *id)
                .filter_map(|p| {
                    p.metrics
                        .iter()
                        .find(|(n, _)| n == m)
                        .map(|(_, v)| (p.ts, *v))
                })
                .collect();
            want_raw.sort_by_key(|(t, _)| *t);
            assert_eq!(
                raw.iter().map(|p| (p.t, p.last)).collect::<Vec<_>>(),
                want_raw,
                "raw samples of {id} {m}"
            );
        }
    }
}

async fn rolled_up_in_steps_equals_one_fold(pg: bool) {
    let dir = tempfile::tempdir().expect("dir");
    let db = open(pg, dir.path()).await;
    let ids = proxies(&db, 3).await;
    let all = pushes(&ids);
    // Pushes arrive in batches while roll-ups run in small steps in between, so later pushes
    // add to rollup rows that already exist.
    let mut taken = 0;
    for part in all.chunks(400) {
        insert(&db, part).await;
        taken += roll_up_all(db.clone(), 37).await;
    }
    assert_eq!(taken, all.len(), "every push rolled up once");
    check(&db, &ids, &all).await;
}

async fn concurrent_roll_ups_count_each_push_once(pg: bool) {
    let dir = tempfile::tempdir().expect("dir");
    let db = open(pg, dir.path()).await;
    let ids = proxies(&db, 5).await;
    let all = pushes(&ids);
    insert(&db, &all).await;
    // Three replicas' roll-ups at once (on PostgreSQL each skips the rows another claimed).
    let tasks: Vec<_> = (0..3)
        .map(|_| tokio::spawn(roll_up_all(db.clone(), 50)))
        .collect();
    let mut taken = 0;
    for t in tasks {
        taken += t.await.expect("join");
    }
    assert_eq!(taken, all.len(), "no push claimed twice or left out");
    check(&db, &ids, &all).await;
}

async fn an_interrupted_roll_up_leaves_the_pushes_pending(pg: bool) {
    let dir = tempfile::tempdir().expect("dir");
    let db = open(pg, dir.path()).await;
    let ids = proxies(&db, 2).await;
    let all = pushes(&ids);
    insert(&db, &all).await;
    {
        let mut tx = db.begin_write().await.expect("tx");
        assert_eq!(
            roll_up_pending(&mut tx, 500, None).await.expect("roll up"),
            500
        );
        // The process dies before the commit: the transaction is dropped.
    }
    let mut conn = db.pool().acquire().await.expect("conn");
    assert_eq!(
        pending_pushes(&mut conn).await.expect("pending"),
        all.len() as i64
    );
    assert!(
        rollup_series(&mut conn, &ids[0], "m0", 0, 100 * ROLLUP_MS)
            .await
            .expect("rollups")
            .is_empty()
    );
    drop(conn);
    assert_eq!(roll_up_all(db.clone(), 5000).await, all.len());
    check(&db, &ids, &all).await;
}

async fn a_resent_push_replaces_the_stored_one(pg: bool) {
    let dir = tempfile::tempdir().expect("dir");
    let db = open(pg, dir.path()).await;
    let ids = proxies(&db, 1).await;
    let at = ROLLUP_MS + 10;
    let push = |v: f64| NewPush {
        proxy_id: ids[0].clone(),
        ts: at,
        metrics: vec![("m".into(), v)],
    };
    // Twice in one batch: the later wins (one statement may not touch a row twice).
    insert(&db, &[push(1.0), push(2.0)]).await;
    assert_eq!(roll_up_all(db.clone(), 10).await, 1);
    // Resent after its roll-up: raw shows the new value, the rollup counts it again.
    insert(&db, &[push(4.0)]).await;
    assert_eq!(roll_up_all(db.clone(), 10).await, 1);
    let mut conn = db.pool().acquire().await.expect("conn");
    let raw = raw_series(&mut conn, &ids[0], "m", 0, 10 * ROLLUP_MS)
        .await
        .expect("raw");
    assert_eq!(raw.iter().map(|p| p.last).collect::<Vec<_>>(), vec![4.0]);
    let r = rollup_series(&mut conn, &ids[0], "m", 0, 10 * ROLLUP_MS)
        .await
        .expect("rollups");
    assert_eq!((r[0].count, r[0].min, r[0].max), (2, 2.0, 4.0));
    // A value JSON cannot hold is refused with its name, and nothing is stored.
    let mut tx = db.begin_write().await.expect("tx");
    let err = insert_pushes(
        &mut tx,
        &[NewPush {
            proxy_id: ids[0].clone(),
            ts: at + 1,
            metrics: vec![("bad.metric".into(), f64::NAN)],
        }],
    )
    .await
    .expect_err("NaN");
    assert!(err.to_string().contains("bad.metric"), "{err}");
}

/// Samples stored one row each before migration 4 become pushes, already rolled up.
async fn migration_keeps_samples_stored_before_it(pg: bool) {
    use apm_store::migrate::MIGRATIONS;
    let dir = tempfile::tempdir().expect("dir");
    let db = common::connect(pg, dir.path(), "t.db").await;
    {
        let mut tx = db.begin_write().await.expect("tx");
        sqlx::query(
            "CREATE TABLE schema_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)",
        )
        .execute(&mut *tx)
        .await
        .expect("table");
        for m in MIGRATIONS.iter().filter(|m| m.version < 4) {
            let statements = if pg { m.postgres } else { m.sqlite };
            for s in statements {
                sqlx::query(sqlx::AssertSqlSafe(*s))
                    .execute(&mut *tx)
                    .await
                    .expect("old migration");
            }
            sqlx::query(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, 0)",
            )
            .bind(m.version)
            .bind(m.name)
            .execute(&mut *tx)
            .await
            .expect("record");
        }
        tx.commit().await.expect("commit");
    }
    let ids = proxies(&db, 1).await;
    let mut tx = db.begin_write().await.expect("tx");
    for (metric, ts, v) in [("a", 1000, 1.5), ("b", 1000, 2.0), ("a", 2000, 3.25)] {
        sqlx::query("INSERT INTO stats_raw (proxy_id, metric, ts, value) VALUES ($1, $2, $3, $4)")
            .bind(&ids[0])
            .bind(metric)
            .bind(ts as i64)
            .bind(v)
            .execute(&mut *tx)
            .await
            .expect("old sample");
    }
    tx.commit().await.expect("commit");
    assert_eq!(db.migrate().await.expect("migrate"), vec![4]);
    let mut conn = db.pool().acquire().await.expect("conn");
    assert_eq!(pending_pushes(&mut conn).await.expect("pending"), 0);
    let a = raw_series(&mut conn, &ids[0], "a", 0, 10_000)
        .await
        .expect("raw");
    assert_eq!(
        a.iter().map(|p| (p.t, p.last)).collect::<Vec<_>>(),
        vec![(1000, 1.5), (2000, 3.25)]
    );
    let b = raw_series(&mut conn, &ids[0], "b", 0, 10_000)
        .await
        .expect("raw");
    assert_eq!(
        b.iter().map(|p| (p.t, p.last)).collect::<Vec<_>>(),
        vec![(1000, 2.0)]
    );
}

/// A fleet-sized backlog (thousands of proxies, statistics gathered) is claimed in full chunks
/// until nothing is left: a claim that returns short ends a server's roll-up run early.
async fn a_large_backlog_is_claimed_in_full_chunks(pg: bool) {
    let dir = tempfile::tempdir().expect("dir");
    let db = open(pg, dir.path()).await;
    let ids = proxies(&db, 3000).await;
    let mut all = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        for k in 0..2 {
            all.push(NewPush {
                proxy_id: id.clone(),
                ts: ROLLUP_MS + k * 30_000 + i as i64,
                metrics: (0..15)
                    .map(|m| (format!("metric.{m}"), (m + k) as f64))
                    .collect(),
            });
        }
    }
    for part in all.chunks(500) {
        insert(&db, part).await;
    }
    // Half of it rolled up, so the pending rows sit behind rolled ones.
    let mut tx = db.begin_write().await.expect("tx");
    assert_eq!(
        roll_up_pending(&mut tx, 3000, None).await.expect("roll up"),
        3000
    );
    tx.commit().await.expect("commit");
    let mut tx = db.begin_write().await.expect("tx");
    sqlx::query("ANALYZE")
        .execute(&mut *tx)
        .await
        .expect("analyze");
    tx.commit().await.expect("commit");
    let mut chunks = Vec::new();
    loop {
        let mut tx = db.begin_write().await.expect("tx");
        let n = roll_up_pending(&mut tx, 500, None).await.expect("roll up");
        tx.commit().await.expect("commit");
        chunks.push(n);
        if n < 500 {
            break;
        }
    }
    assert_eq!(
        chunks,
        vec![500, 500, 500, 500, 500, 500, 0],
        "claimed per call"
    );
}

/// A roll-up bounded in time takes only older pushes, a proxy's pushes together (so a closed
/// bucket's rows are written once); the open bucket's backlog is counted up to a cap; and
/// folding in two passes ends where one fold does.
async fn a_bounded_roll_up_takes_closed_buckets_only(pg: bool) {
    let dir = tempfile::tempdir().expect("dir");
    let db = open(pg, dir.path()).await;
    let ids = proxies(&db, 4).await;
    let open_bucket = 3 * ROLLUP_MS;
    let mut all = Vec::new();
    for id in &ids {
        for k in 0..10 {
            // Ten pushes in a closed bucket, three in the open one, sent out of order.
            all.push(NewPush {
                proxy_id: id.clone(),
                ts: open_bucket - ROLLUP_MS + k * 30_000,
                metrics: vec![("m0".into(), k as f64)],
            });
            if k < 3 {
                all.push(NewPush {
                    proxy_id: id.clone(),
                    ts: open_bucket + k * 30_000,
                    metrics: vec![("m0".into(), 100.0 + k as f64)],
                });
            }
        }
    }
    insert(&db, &all).await;
    {
        let mut conn = db.pool().acquire().await.expect("conn");
        assert_eq!(
            pending_pushes_from(&mut conn, open_bucket, 100)
                .await
                .expect("count"),
            12
        );
        assert_eq!(
            pending_pushes_from(&mut conn, open_bucket, 5)
                .await
                .expect("count"),
            5,
            "counted up to the cap"
        );
    }
    // A chunk of 10 is exactly one proxy's closed bucket: claimed in (proxy, time) order.
    let mut tx = db.begin_write().await.expect("tx");
    assert_eq!(
        roll_up_pending(&mut tx, 10, Some(open_bucket))
            .await
            .expect("roll up"),
        10
    );
    tx.commit().await.expect("commit");
    let mut conn = db.pool().acquire().await.expect("conn");
    let mut sorted = ids.clone();
    sorted.sort();
    let first = rollup_series(&mut conn, &sorted[0], "m0", 0, 10 * ROLLUP_MS)
        .await
        .expect("rollups");
    assert_eq!(first.len(), 1, "only the closed bucket: {first:?}");
    assert_eq!((first[0].t, first[0].count), (open_bucket - ROLLUP_MS, 10));
    assert!(
        rollup_series(&mut conn, &sorted[1], "m0", 0, 10 * ROLLUP_MS)
            .await
            .expect("rollups")
            .is_empty(),
        "the next proxy waits for the next chunk"
    );
    drop(conn);
    let mut tx = db.begin_write().await.expect("tx");
    assert_eq!(
        roll_up_pending(&mut tx, 500, Some(open_bucket))
            .await
            .expect("roll up"),
        30,
        "the other closed buckets, nothing of the open one"
    );
    tx.commit().await.expect("commit");
    let mut conn = db.pool().acquire().await.expect("conn");
    assert_eq!(pending_pushes(&mut conn).await.expect("pending"), 12);
    drop(conn);
    assert_eq!(roll_up_all(db.clone(), 500).await, 12);
    check_m0(&db, &ids, &all).await;
    if !pg {
        // The bounded claim walks the pending index, never the index of every stored push.
        let mut conn = db.pool().acquire().await.expect("conn");
        let plan: Vec<(i64, i64, i64, String)> = sqlx::query_as(
            "EXPLAIN QUERY PLAN SELECT rowid FROM stats_push WHERE rolled = 0 AND +ts < ?
             ORDER BY proxy_id, ts LIMIT ?",
        )
        .bind(open_bucket)
        .bind(500i64)
        .fetch_all(&mut *conn)
        .await
        .expect("plan");
        let text: Vec<&str> = plan.iter().map(|r| r.3.as_str()).collect();
        assert!(
            text.iter().any(|d| d.contains("stats_push_pending"))
                && !text.iter().any(|d| d.contains("stats_push_ts")),
            "plan: {text:?}"
        );
    }
}

/// The m0 rollups of every proxy equal one in-memory fold of `all`.
async fn check_m0(db: &Db, ids: &[String], all: &[NewPush]) {
    let mut conn = db.pool().acquire().await.expect("conn");
    for id in ids {
        let got = rollup_series(&mut conn, id, "m0", 0, 100 * ROLLUP_MS)
            .await
            .expect("rollups");
        assert_eq!(got, expected_rollups(all, id, "m0"), "rollups of {id}");
    }
}

both!(
    a_bounded_roll_up_takes_closed_buckets_only,
    rolled_up_in_steps_equals_one_fold,
    concurrent_roll_ups_count_each_push_once,
    an_interrupted_roll_up_leaves_the_pushes_pending,
    a_resent_push_replaces_the_stored_one,
    migration_keeps_samples_stored_before_it,
    a_large_backlog_is_claimed_in_full_chunks
);
