//! The batched metric insert ends in exactly the state of one insert per sample, on both engines.

use apm_store::Db;
use apm_store::telemetry::{
    NewSample, ROLLUP_MS, insert_sample, insert_samples, raw_series, rollup_series,
};
use common::proxy_row;

mod common;

async fn open(postgres: bool, dir: &std::path::Path) -> Db {
    let db = common::connect(postgres, dir, "t.db").await;
    db.migrate().await.expect("migrate");
    db
}

async fn proxy(db: &Db, name: &str) -> String {
    let mut tx = db.begin_write().await.expect("tx");
    let p = proxy_row(name);
    apm_store::proxies::insert_proxy(&mut tx, &p)
        .await
        .expect("proxy");
    tx.commit().await.expect("commit");
    p.id
}

/// A deterministic messy batch: repeated keys, out-of-order times, several buckets, metrics,
/// proxies, and more rows than one multi-row statement holds.
fn batch(proxies: &[String]) -> Vec<NewSample> {
    let mut out = Vec::new();
    let mut x: u64 = 12345;
    for _ in 0..1300 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let p = &proxies[(x >> 33) as usize % proxies.len()];
        let metric = format!("m{}", (x >> 20) % 3);
        let ts = ROLLUP_MS + ((x >> 8) % 40) as i64 * 17_000;
        let value = ((x >> 40) % 1000) as f64 / 4.0;
        out.push(NewSample {
            proxy_id: p.clone(),
            metric,
            ts,
            value,
        });
    }
    out
}

async fn same_state_as_one_by_one(pg: bool) {
    let dir = tempfile::tempdir().expect("dir");
    for d in ["a", "b"] {
        std::fs::create_dir_all(dir.path().join(d)).expect("mkdir");
    }
    let one = open(pg, &dir.path().join("a")).await;
    let many = open(pg, &dir.path().join("b")).await;
    let mut ids_one = Vec::new();
    let mut ids_many = Vec::new();
    for i in 0..3 {
        ids_one.push(proxy(&one, &format!("h{i}")).await);
        ids_many.push(proxy(&many, &format!("h{i}")).await);
    }
    let samples = batch(&ids_one);
    let mut tx = one.begin_write().await.expect("tx");
    for s in &samples {
        insert_sample(&mut tx, &s.proxy_id, &s.metric, s.ts, s.value)
            .await
            .expect("one");
    }
    tx.commit().await.expect("commit");
    // The same samples for the other database's proxy ids, written in two batches so the second
    // merges into stored rows.
    let mapped: Vec<NewSample> = samples
        .iter()
        .map(|s| NewSample {
            proxy_id: ids_many[ids_one
                .iter()
                .position(|p| *p == s.proxy_id)
                .expect("known")]
            .clone(),
            ..s.clone()
        })
        .collect();
    let (a, b) = mapped.split_at(700);
    for part in [a, b] {
        let mut tx = many.begin_write().await.expect("tx");
        insert_samples(&mut tx, part).await.expect("batch");
        tx.commit().await.expect("commit");
    }
    let mut c1 = one.pool().acquire().await.expect("conn");
    let mut c2 = many.pool().acquire().await.expect("conn");
    for i in 0..3 {
        for m in ["m0", "m1", "m2"] {
            let r1 = rollup_series(&mut c1, &ids_one[i], m, 0, 100 * ROLLUP_MS)
                .await
                .expect("r1");
            let r2 = rollup_series(&mut c2, &ids_many[i], m, 0, 100 * ROLLUP_MS)
                .await
                .expect("r2");
            assert_eq!(r1, r2, "rollups of proxy {i} metric {m}");
            assert!(!r1.is_empty());
            let s1 = raw_series(&mut c1, &ids_one[i], m, 0, 100 * ROLLUP_MS)
                .await
                .expect("s1");
            let s2 = raw_series(&mut c2, &ids_many[i], m, 0, 100 * ROLLUP_MS)
                .await
                .expect("s2");
            assert_eq!(s1, s2, "raw samples of proxy {i} metric {m}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite() {
    same_state_as_one_by_one(false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres() {
    same_state_as_one_by_one(true).await
}
