//! Batched acks (`record_acks`) end in exactly the state of one `record_ack` per ack, in order,
//! on both engines; and the proxies-of-a-config queries use the config index.

use apm_store::proxies::{
    Ack, Report, get_proxy, record_ack, record_acks, record_contact, record_reports,
};
use apm_store::{Db, new_id};
use common::proxy_row;

#[macro_use]
mod common;

async fn open(postgres: bool, dir: &std::path::Path, name: &str) -> Db {
    let db = common::connect(postgres, dir, name).await;
    db.migrate().await.expect("migrate");
    db
}

async fn proxies(db: &Db, n: usize) -> Vec<String> {
    let mut tx = db.begin_write().await.expect("tx");
    let mut ids = Vec::new();
    for i in 0..n {
        let p = proxy_row(&format!("edge-{i:04}"));
        apm_store::proxies::insert_proxy(&mut tx, &p)
            .await
            .expect("proxy");
        ids.push(p.id);
    }
    tx.commit().await.expect("commit");
    ids
}

/// More acks than one statement holds, with repeats (later ones win), failures with and
/// without a running hash, and proxies never acked.
fn acks(ids: &[String]) -> Vec<Ack> {
    let mut out = Vec::new();
    let mut x: u64 = 99;
    for k in 0..1400u64 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let id = ids[(x >> 33) as usize % (ids.len() - 5)].clone();
        let hash = format!("{:064x}", x >> 7);
        let error = match k % 4 {
            0 => Some((format!("reload failed {k}"), format!("{:064x}", k))),
            _ => None,
        };
        let applied_hash = match k % 8 {
            0 => None,
            _ => Some(hash),
        };
        out.push(Ack {
            proxy_id: id,
            applied_hash,
            error,
            at: 1_700_000_000_000 + k as i64,
        });
    }
    out
}

type Seen = (
    Option<String>,
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<i64>,
);

async fn state(db: &Db, ids: &[String]) -> Vec<Seen> {
    let mut conn = db.pool().acquire().await.expect("conn");
    let mut out = Vec::new();
    for id in ids {
        let p = get_proxy(&mut conn, id).await.expect("get").expect("row");
        out.push((
            p.applied_hash,
            p.last_error,
            p.last_error_hash,
            p.last_ack_at,
            p.last_seen_at,
        ));
    }
    out
}

both!(
    batched_acks_match_one_by_one,
    batched_reports_match_one_by_one,
    config_counts_and_refs
);

async fn batched_acks_match_one_by_one(pg: bool) {
    let dir = tempfile::tempdir().expect("dir");
    let one = open(pg, dir.path(), "one.db").await;
    let many = open(pg, dir.path(), "many.db").await;
    let ids_one = proxies(&one, 700).await;
    let ids_many = proxies(&many, 700).await;
    let list = acks(&ids_one);
    {
        let mut tx = one.begin_write().await.expect("tx");
        for a in &list {
            let error = a.error.as_ref().map(|(m, h)| (m.as_str(), h.as_str()));
            record_ack(&mut tx, &a.proxy_id, a.applied_hash.as_deref(), error, a.at)
                .await
                .expect("ack");
        }
        tx.commit().await.expect("commit");
    }
    // The same acks against the other database's ids (same positions).
    let mapped: Vec<Ack> = list
        .iter()
        .map(|a| {
            let i = ids_one.iter().position(|x| *x == a.proxy_id).expect("pos");
            Ack {
                proxy_id: ids_many[i].clone(),
                ..a.clone()
            }
        })
        .collect();
    {
        let mut tx = many.begin_write().await.expect("tx");
        record_acks(&mut tx, &mapped).await.expect("acks");
        tx.commit().await.expect("commit");
    }
    let a = state(&one, &ids_one).await;
    let b = state(&many, &ids_many).await;
    assert_eq!(a, b);
    assert!(
        a.iter().rev().take(5).all(|s| s.3.is_none()),
        "proxies without an ack are untouched"
    );
    assert!(a.iter().filter(|s| s.1.is_some()).count() > 10);
    assert!(a.iter().filter(|s| s.0.is_none() && s.3.is_some()).count() > 0);
}

async fn config_counts_and_refs(pg: bool) {
    let dir = tempfile::tempdir().expect("dir");
    let db = open(pg, dir.path(), "c.db").await;
    let ids = proxies(&db, 30).await;
    let cfg = apm_store::configs::ConfigRow {
        id: new_id(),
        name: "c".into(),
        description: String::new(),
        active_version: None,
        created_by: "u".into(),
        created_at: 0,
        updated_at: 0,
    };
    let mut tx = db.begin_write().await.expect("tx");
    apm_store::configs::insert_config(&mut tx, &cfg)
        .await
        .expect("config");
    for id in ids.iter().step_by(3) {
        apm_store::proxies::set_proxy_config(&mut tx, id, Some(&cfg.id))
            .await
            .expect("assign");
    }
    tx.commit().await.expect("commit");
    let mut conn = db.pool().acquire().await.expect("conn");
    assert_eq!(
        apm_store::proxies::count_proxies_of_config(&mut conn, &cfg.id)
            .await
            .expect("count"),
        10
    );
    let refs = apm_store::proxies::list_proxy_refs_of_config(&mut conn, &cfg.id, 1000)
        .await
        .expect("refs");
    let first = apm_store::proxies::list_proxy_refs_of_config(&mut conn, &cfg.id, 3)
        .await
        .expect("refs");
    assert_eq!(first, refs[..3], "the limit keeps the first by hostname");
    let full = apm_store::proxies::list_proxies_of_config(&mut conn, &cfg.id)
        .await
        .expect("full");
    assert_eq!(
        refs,
        full.into_iter()
            .map(|p| (p.id, p.hostname))
            .collect::<Vec<_>>()
    );
}

/// Syncs that reported something: several proxies, repeats (the last wins), fields left out
/// (kept as they were), several distinct reports.
async fn batched_reports_match_one_by_one(pg: bool) {
    let dir = tempfile::tempdir().expect("dir");
    let one = open(pg, dir.path(), "r1.db").await;
    let many = open(pg, dir.path(), "r2.db").await;
    let ids_one = proxies(&one, 620).await;
    let ids_many = proxies(&many, 620).await;
    let mut reports = Vec::new();
    for k in 0..1500usize {
        let i = (k * 7919) % 615;
        let version = ["9.2.5", "10.0.0", "9.2.4"][k % 3];
        reports.push((
            i,
            (k % 5 != 0).then(|| version.to_string()),
            (k % 4 != 0).then(|| "linux".to_string()),
            (k % 6 != 0).then(|| ["x86_64", "aarch64"][k % 2].to_string()),
            1_700_000_000_000 + (k as i64 / 100),
        ));
    }
    {
        let mut tx = one.begin_write().await.expect("tx");
        for (i, v, os, arch, at) in &reports {
            record_contact(
                &mut tx,
                &ids_one[*i],
                v.as_deref(),
                os.as_deref(),
                arch.as_deref(),
                *at,
            )
            .await
            .expect("contact");
        }
        tx.commit().await.expect("commit");
    }
    let batch: Vec<Report> = reports
        .iter()
        .map(|(i, v, os, arch, at)| Report {
            proxy_id: ids_many[*i].clone(),
            ats_version: v.clone(),
            os: os.clone(),
            arch: arch.clone(),
            at: *at,
        })
        .collect();
    {
        let mut tx = many.begin_write().await.expect("tx");
        record_reports(&mut tx, &batch).await.expect("reports");
        tx.commit().await.expect("commit");
    }
    let read = |db: Db, ids: Vec<String>| async move {
        let mut conn = db.pool().acquire().await.expect("conn");
        let mut out = Vec::new();
        for id in &ids {
            let p = get_proxy(&mut conn, id).await.expect("get").expect("row");
            out.push((p.ats_version, p.os, p.arch, p.last_seen_at));
        }
        out
    };
    let a = read(one, ids_one).await;
    let b = read(many, ids_many).await;
    assert_eq!(a, b);
    assert!(a.iter().rev().take(5).all(|r| r.3.is_none()));
}
