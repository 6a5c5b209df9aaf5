//! Metric pushes and their roll-up, on both engines: however pushes are batched and rolled up
//! (in small steps, by several writers at once, interrupted, while more pushes arrive, late
//! ones behind the walk's frontier), the rollups end equal to one fold of every push, each push
//! counted exactly once; and the migration that introduced pushes keeps the samples stored
//! before it.

use apm_store::Db;
use apm_store::telemetry::{
    NewPush, Point, ROLLUP_MS, RollupProgress, fold_rollups, insert_pushes, raw_series,
    roll_up_step, rollup_series, unfolded_pushes,
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

/// The bucket the tests' "now" falls in: after every push they make.
const OPEN_BUCKET: i64 = 1000 * ROLLUP_MS;

/// One roll-up step in its own transaction.
async fn step(db: &Db, limit: usize, open_bucket: i64, include_open: bool) -> RollupProgress {
    let mut tx = db.begin_write().await.expect("tx");
    let p = roll_up_step(&mut tx, limit, open_bucket, include_open)
        .await
        .expect("roll up");
    tx.commit().await.expect("commit");
    p
}

/// Steps until one reports done; returns the pushes each step before it folded.
async fn steps_until_done(
    db: &Db,
    limit: usize,
    open_bucket: i64,
    include_open: bool,
) -> Vec<usize> {
    let mut steps = Vec::new();
    loop {
        let p = step(db, limit, open_bucket, include_open).await;
        if p.done {
            return steps;
        }
        steps.push(p.pushes);
    }
}

/// Rolls up in steps of `limit` until done; returns the pushes folded.
async fn roll_up_all(db: Db, limit: usize) -> usize {
    steps_until_done(&db, limit, OPEN_BUCKET, true)
        .await
        .iter()
        .sum()
}

async fn unfolded(db: &Db) -> i64 {
    let mut conn = db.pool().acquire().await.expect("conn");
    unfolded_pushes(&mut conn, i64::MAX)
        .await
        .expect("unfolded")
}

async fn check(db: &Db, ids: &[String], all: &[NewPush]) {
    assert_eq!(unfolded(db).await, 0);
    let mut conn = db.pool().acquire().await.expect("conn");
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
    // land behind the frontier (pending) and add to rollup rows that already exist.
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
    // Three replicas' roll-ups at once (on PostgreSQL each skips the rows another claimed,
    // and the walk's frontier is locked).
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

/// Pushes stored while roll-ups run (two replicas stepping, one storing batches that land
/// ahead of the frontier, in its bucket, and behind it) are each folded exactly once: a
/// push is never stored as awaiting the walk after the walk has passed it.
async fn pushes_stored_during_roll_ups_are_each_folded_once(pg: bool) {
    let dir = tempfile::tempdir().expect("dir");
    let db = open(pg, dir.path()).await;
    let ids = proxies(&db, 40).await;
    let all = pushes(&ids);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let rollers: Vec<_> = (0..2)
        .map(|_| {
            let (db, stop) = (db.clone(), stop.clone());
            tokio::spawn(async move {
                let mut taken = 0;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    // A small limit: the walk passes a few proxies per step, so the frontier
                    // is inside a bucket while batches come in.
                    taken += step(&db, 20, OPEN_BUCKET, true).await.pushes;
                    tokio::task::yield_now().await;
                }
                taken
            })
        })
        .collect();
    for part in all.chunks(25) {
        insert(&db, part).await;
        tokio::task::yield_now().await;
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut taken = 0;
    for t in rollers {
        taken += t.await.expect("join");
    }
    taken += roll_up_all(db.clone(), 500).await;
    assert_eq!(taken, all.len(), "every push folded once");
    check(&db, &ids, &all).await;
}

async fn an_interrupted_roll_up_leaves_the_pushes_unfolded(pg: bool) {
    let dir = tempfile::tempdir().expect("dir");
    let db = open(pg, dir.path()).await;
    let ids = proxies(&db, 2).await;
    let all = pushes(&ids);
    insert(&db, &all[..700]).await;
    // Some walked, so the rest arrive behind the frontier and are pending.
    assert!(step(&db, 10, OPEN_BUCKET, true).await.pushes > 0);
    insert(&db, &all[700..]).await;
    for _ in 0..2 {
        let mut tx = db.begin_write().await.expect("tx");
        let p = roll_up_step(&mut tx, 500, OPEN_BUCKET, true)
            .await
            .expect("roll up");
        assert!(p.pushes > 0, "{p:?}");
        // The process dies before the commit: the transaction is dropped.
    }
    let before = unfolded(&db).await;
    assert!(before > 0 && before < all.len() as i64, "{before}");
    let mut conn = db.pool().acquire().await.expect("conn");
    let folded: i64 = sqlx::query_scalar(
        "SELECT CAST(COALESCE(SUM(count), 0) AS BIGINT) FROM stats_rollup WHERE metric = 'm0'",
    )
    .fetch_one(&mut *conn)
    .await
    .expect("folded");
    assert_eq!(
        folded + before,
        all.len() as i64,
        "every m0 sample folded or unfolded"
    );
    drop(conn);
    assert_eq!(roll_up_all(db.clone(), 5000).await as i64, before);
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
    assert_eq!(db.migrate().await.expect("migrate"), vec![4, 5]);
    assert_eq!(unfolded(&db).await, 0);
    let mut conn = db.pool().acquire().await.expect("conn");
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

/// A fleet-sized backlog (a thousand proxies, a closed bucket of pushes) is walked in steps
/// of about the limit, and pushes that arrive behind the frontier are claimed in full chunks:
/// a step that returns short or reports done early ends a server's roll-up run early.
async fn a_large_backlog_is_folded_in_full_steps(pg: bool) {
    let dir = tempfile::tempdir().expect("dir");
    let db = open(pg, dir.path()).await;
    let ids = proxies(&db, 1000).await;
    let push = |id: &String, ts: i64, k: i64| NewPush {
        proxy_id: id.clone(),
        ts,
        metrics: (0..5)
            .map(|m| (format!("metric.{m}"), (m + k) as f64))
            .collect(),
    };
    let mut all = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        for k in 0..10 {
            all.push(push(id, ROLLUP_MS + k * 30_000 + i as i64, k));
        }
    }
    for part in all.chunks(500) {
        insert(&db, part).await;
    }
    let open_bucket = 3 * ROLLUP_MS;
    let steps = steps_until_done(&db, 500, open_bucket, false).await;
    // 50 proxies of 10 pushes a step; one step moves the frontier to the open bucket.
    assert_eq!(steps.len(), 21, "{steps:?}");
    assert!(steps[..20].iter().all(|n| *n == 500), "{steps:?}");
    assert_eq!(steps[20], 0);
    // Late pushes of the walked bucket (the agents were offline) are pending.
    let late: Vec<NewPush> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| push(id, ROLLUP_MS + 290_000 + i as i64 % 1000, 99))
        .collect();
    for part in late.chunks(500) {
        insert(&db, part).await;
    }
    let mut tx = db.begin_write().await.expect("tx");
    sqlx::query("ANALYZE")
        .execute(&mut *tx)
        .await
        .expect("analyze");
    tx.commit().await.expect("commit");
    let steps = steps_until_done(&db, 500, open_bucket, false).await;
    assert_eq!(steps, vec![500; 2], "claimed per step");
    assert_eq!(unfolded(&db).await, 0);
    let mut every = all;
    every.extend(late);
    let mut conn = db.pool().acquire().await.expect("conn");
    for id in [&ids[0], &ids[567], &ids[999]] {
        let got = rollup_series(&mut conn, id, "metric.3", 0, 10 * ROLLUP_MS)
            .await
            .expect("rollups");
        assert_eq!(got, expected_rollups(&every, id, "metric.3"), "{id}");
    }
}

/// A roll-up that leaves the open bucket out folds only closed buckets, a proxy's pushes of a
/// bucket together (so a closed bucket's rows are written once), and walks them by primary
/// key; the open bucket waits until it is included; late pushes of a walked bucket are claimed
/// even when the open bucket is left out. Folding in several passes ends where one fold does.
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
    // The frontier first moves from where the migration put it to the first bucket with
    // pushes; then a step of 10 is one proxy's closed bucket, in proxy order.
    let mut first = step(&db, 10, open_bucket, false).await;
    while first.pushes == 0 {
        assert!(!first.done, "nothing folded");
        first = step(&db, 10, open_bucket, false).await;
    }
    assert_eq!(first.pushes, 10);
    let mut conn = db.pool().acquire().await.expect("conn");
    let mut sorted = ids.clone();
    sorted.sort();
    let rows = rollup_series(&mut conn, &sorted[0], "m0", 0, 10 * ROLLUP_MS)
        .await
        .expect("rollups");
    assert_eq!(rows.len(), 1, "only the closed bucket: {rows:?}");
    assert_eq!((rows[0].t, rows[0].count), (open_bucket - ROLLUP_MS, 10));
    assert!(
        rollup_series(&mut conn, &sorted[1], "m0", 0, 10 * ROLLUP_MS)
            .await
            .expect("rollups")
            .is_empty(),
        "the next proxy waits for the next step"
    );
    drop(conn);
    let taken: usize = steps_until_done(&db, 10, open_bucket, false)
        .await
        .iter()
        .sum();
    assert_eq!(
        taken, 30,
        "the other closed buckets, nothing of the open one"
    );
    assert_eq!(unfolded(&db).await, 12);
    // A late push of the walked bucket is claimed without the open bucket.
    let late = NewPush {
        proxy_id: sorted[2].clone(),
        ts: open_bucket - 1,
        metrics: vec![("m0".into(), 7.5)],
    };
    insert(&db, std::slice::from_ref(&late)).await;
    assert_eq!(step(&db, 10, open_bucket, false).await.pushes, 1);
    assert!(step(&db, 10, open_bucket, false).await.done);
    assert_eq!(unfolded(&db).await, 12);
    all.push(late);
    let taken: usize = steps_until_done(&db, 10, open_bucket, true)
        .await
        .iter()
        .sum();
    assert_eq!(taken, 12, "the open bucket once included");
    check_m0(&db, &ids, &all).await;
    if !pg {
        let mut conn = db.pool().acquire().await.expect("conn");
        // The claim walks the pending index, never the index of every stored push; the walk
        // seeks each proxy's bucket by primary key.
        for (sql, want, never) in [
            (
                "EXPLAIN QUERY PLAN SELECT rowid FROM stats_push WHERE rolled = 0 AND +ts < ?
                 ORDER BY proxy_id, ts LIMIT 500",
                "stats_push_pending",
                "stats_push_ts",
            ),
            (
                "EXPLAIN QUERY PLAN SELECT proxy_id, ts, metrics FROM stats_push
                 WHERE ts >= 600000 AND ts < ? AND rolled = 2 AND proxy_id IN ('a', 'b', 'c')",
                "sqlite_autoindex_stats_push_1",
                "stats_push_ts",
            ),
        ] {
            let plan: Vec<(i64, i64, i64, String)> = sqlx::query_as(sql)
                .bind(open_bucket)
                .fetch_all(&mut *conn)
                .await
                .expect("plan");
            let text: Vec<&str> = plan.iter().map(|r| r.3.as_str()).collect();
            assert!(
                text.iter().any(|d| d.contains(want)) && !text.iter().any(|d| d.contains(never)),
                "plan: {text:?}"
            );
        }
    }
}

/// Buckets nobody pushed in are skipped in one step, and a bucket few proxies pushed in is
/// crossed a couple of thousand proxies a step, not `limit / 10` of them.
async fn empty_and_sparse_buckets_are_crossed_in_few_steps(pg: bool) {
    let dir = tempfile::tempdir().expect("dir");
    let db = open(pg, dir.path()).await;
    let ids = proxies(&db, 2500).await;
    let mut sorted = ids.clone();
    sorted.sort();
    let bucket = 20 * ROLLUP_MS;
    let all: Vec<NewPush> = [&sorted[3], &sorted[2100]]
        .into_iter()
        .map(|id| NewPush {
            proxy_id: id.clone(),
            ts: bucket + 1000,
            metrics: vec![("m0".into(), 1.0)],
        })
        .collect();
    insert(&db, &all).await;
    let steps = steps_until_done(&db, 500, 30 * ROLLUP_MS, false).await;
    // Empty buckets 1..20 skipped at once; 2,000 proxies (one push), the other 500 (one
    // push); then on to the open bucket.
    assert_eq!(steps, vec![0, 1, 1, 0], "{steps:?}");
    assert_eq!(unfolded(&db).await, 0);
    check_m0(&db, &[sorted[3].clone(), sorted[2100].clone()], &all).await;
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
    pushes_stored_during_roll_ups_are_each_folded_once,
    an_interrupted_roll_up_leaves_the_pushes_unfolded,
    a_resent_push_replaces_the_stored_one,
    migration_keeps_samples_stored_before_it,
    a_large_backlog_is_folded_in_full_steps,
    empty_and_sparse_buckets_are_crossed_in_few_steps
);
