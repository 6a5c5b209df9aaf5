//! The admin API subset of `apm mock serve` and the loader against it: backup, replace,
//! batches, refused mappings, retries.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use apm_capture::metrics::Registry;
use apm_mock::load::{LoadConfig, load};
use apm_mock::server::{MockState, handle};
use serde_json::{Value, json};

fn stub(id: &str, path: &str, body: &str) -> Value {
    json!({"id": id, "request": {"method": "GET", "url": path}, "response": {"status": 200, "body": body}})
}

const ID1: &str = "11111111-1111-4111-8111-111111111111";
const ID2: &str = "22222222-2222-4222-8222-222222222222";
const ID3: &str = "33333333-3333-4333-8333-333333333333";

async fn get(c: &reqwest::Client, url: &str) -> (u16, String) {
    let r = c.get(url).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_subset() {
    let defaults = vec![apm_mock::files::LoadedMapping {
        origin: "d".into(),
        mapping: stub(ID1, "/a", "default"),
    }];
    let (state, errors) = MockState::new(defaults);
    assert!(errors.is_empty());
    let s = state.clone();
    let srv = common::spawn(move |req| handle(s.clone(), req)).await;
    let base = srv.url();
    let c = common::client();

    // POST one; id assigned when missing.
    let r = c
        .post(format!("{base}/__admin/mappings"))
        .json(&json!({"request": {"method": "GET", "url": "/b"}, "response": {"status": 202}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let created: Value = r.json().await.unwrap();
    let new_id = created["id"].as_str().unwrap().to_string();
    assert!(apm_mock::stub::is_uuid(&new_id), "{new_id}");
    assert_eq!(get(&c, &format!("{base}/b")).await.0, 202);

    // List: most recent first, with meta.total.
    let (st, body) = get(&c, &format!("{base}/__admin/mappings")).await;
    assert_eq!(st, 200);
    let list: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(list["meta"]["total"], 2);
    assert_eq!(list["mappings"][0]["id"], new_id.as_str());

    // Unknown top-level field → 422 naming it; nothing added.
    let r = c
        .post(format!("{base}/__admin/mappings"))
        .json(&json!({"request": {"url": "/x"}, "response": {}, "bogus": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 422);
    assert!(r.text().await.unwrap().contains("bogus"));

    // Import: IGNORE keeps the existing stub, OVERWRITE replaces it.
    let import = |policy: &str, body: &str, delete: bool| {
        json!({
            "mappings": [stub(ID1, "/a", body), stub(ID2, "/c", "c")],
            "importOptions": {"duplicatePolicy": policy, "deleteAllNotInImport": delete}
        })
    };
    let r = c
        .post(format!("{base}/__admin/mappings/import"))
        .json(&import("IGNORE", "ignored", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(get(&c, &format!("{base}/a")).await.1, "default");
    c.post(format!("{base}/__admin/mappings/import"))
        .json(&import("OVERWRITE", "new", false))
        .send()
        .await
        .unwrap();
    assert_eq!(get(&c, &format!("{base}/a")).await.1, "new");
    assert_eq!(state.stub_count(), 3);
    // deleteAllNotInImport removes /b.
    c.post(format!("{base}/__admin/mappings/import"))
        .json(&import("OVERWRITE", "new", true))
        .send()
        .await
        .unwrap();
    assert_eq!(state.stub_count(), 2);
    assert_eq!(get(&c, &format!("{base}/b")).await.0, 404);
    // A bad mapping in an import rejects the whole import.
    let bad = json!({"mappings": [stub(ID3, "/d", "d"), {"request": {"url": "/e", "cookies": {}}, "response": {}}]});
    let r = c
        .post(format!("{base}/__admin/mappings/import"))
        .json(&bad)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 422);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("mappings[1]: request.cookies")
    );
    assert_eq!(get(&c, &format!("{base}/d")).await.0, 404);

    // By id.
    assert_eq!(
        get(&c, &format!("{base}/__admin/mappings/{ID2}")).await.0,
        200
    );
    assert_eq!(
        c.delete(format!("{base}/__admin/mappings/{ID2}"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    assert_eq!(
        get(&c, &format!("{base}/__admin/mappings/{ID2}")).await.0,
        404
    );

    // Reset: back to the defaults loaded at start.
    assert_eq!(
        c.post(format!("{base}/__admin/reset"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    assert_eq!(get(&c, &format!("{base}/a")).await.1, "default");
    assert_eq!(state.stub_count(), 1);
    // Delete all.
    c.delete(format!("{base}/__admin/mappings"))
        .send()
        .await
        .unwrap();
    assert_eq!(state.stub_count(), 0);
    let (st, body) = get(&c, &format!("{base}/a")).await;
    assert_eq!(st, 404);
    assert!(body.contains("No stubs are loaded"), "{body}");
    assert_eq!(get(&c, &format!("{base}/__admin/health")).await.0, 200);
    assert_eq!(get(&c, &format!("{base}/__admin/requests")).await.0, 404);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenarios_step_through_states() {
    let maps = vec![
        json!({"id": ID1, "scenarioName": "job", "requiredScenarioState": "Started", "newScenarioState": "done",
               "request": {"method": "GET", "url": "/job"}, "response": {"status": 202, "body": "pending"}}),
        json!({"id": ID2, "scenarioName": "job", "requiredScenarioState": "done",
               "request": {"method": "GET", "url": "/job"}, "response": {"status": 200, "body": "finished"}}),
    ];
    let (state, _) = MockState::new(
        maps.into_iter()
            .map(|m| apm_mock::files::LoadedMapping {
                origin: "x".into(),
                mapping: m,
            })
            .collect(),
    );
    let s = state.clone();
    let srv = common::spawn(move |req| handle(s.clone(), req)).await;
    let c = common::client();
    let url = format!("{}/job", srv.url());
    assert_eq!(get(&c, &url).await, (202, "pending".into()));
    assert_eq!(get(&c, &url).await, (200, "finished".into()));
    assert_eq!(get(&c, &url).await, (200, "finished".into()));
    c.post(format!("{}/__admin/scenarios/reset", srv.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(get(&c, &url).await, (202, "pending".into()));
    srv.stop().await;
}

fn write_dir(maps: &[Value]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("mappings")).unwrap();
    for (i, m) in maps.iter().enumerate() {
        std::fs::write(
            dir.path().join(format!("mappings/m{i:02}.json")),
            serde_json::to_vec(m).unwrap(),
        )
        .unwrap();
    }
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loader_backs_up_replaces_batches_and_names_refused_files() {
    let (state, _) = MockState::new(vec![apm_mock::files::LoadedMapping {
        origin: "d".into(),
        mapping: stub(ID3, "/old", "old"),
    }]);
    let s = state.clone();
    let srv = common::spawn(move |req| handle(s.clone(), req)).await;
    let mut maps: Vec<Value> = (0..5)
        .map(|i| {
            stub(
                &format!("00000000-0000-4000-8000-00000000000{i}"),
                &format!("/p{i}"),
                "x",
            )
        })
        .collect();
    maps.push(json!({"request": {"url": "/bad", "customMatcher": {}}, "response": {}}));
    let dir = write_dir(&maps);
    std::fs::write(dir.path().join("mappings/zz-broken.json"), b"{ not json").unwrap();

    let mut cfg = LoadConfig::new(&srv.url(), dir.path());
    cfg.batch_size = 2;
    cfg.replace = true;
    cfg.backup = dir.path().join("backup.json");
    let mut metrics = Registry::new();
    let report = load(&cfg, &mut metrics).await.expect("load");
    assert_eq!(report.read, 6);
    assert_eq!(report.loaded, 5);
    assert_eq!(report.batches, 3);
    assert_eq!(report.backed_up, 1);
    assert!(report.replaced);
    assert_eq!(report.refused.len(), 1);
    assert!(
        report.refused[0].file.ends_with("m05.json"),
        "{:?}",
        report.refused
    );
    assert!(
        report.refused[0].message.contains("customMatcher"),
        "{:?}",
        report.refused
    );
    assert_eq!(report.invalid_files.len(), 1);
    assert!(report.invalid_files[0].file.ends_with("zz-broken.json"));
    let backup: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("backup.json")).unwrap()).unwrap();
    assert_eq!(backup["mappings"][0]["id"], ID3);
    assert_eq!(state.stub_count(), 5, "replace removed /old");
    let text = metrics.render();
    assert!(
        text.contains("wiremock_loader_mappings_processed_total{status=\"success\"} 5"),
        "{text}"
    );
    assert!(
        text.contains("wiremock_loader_mappings_errors_total{error_type=\"wiremock_api\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("wiremock_loader_mappings_errors_total{error_type=\"invalid_file\"} 1"),
        "{text}"
    );
    // One duration observation per request sent, by operation.
    for op in ["backup", "delete", "import", "create"] {
        let sent = metrics.get("wiremock_loader_requests_total", &[("operation", op)]);
        assert!(sent >= 1.0, "{op} was sent");
        assert_eq!(
            metrics.histogram_count(
                "wiremock_loader_wiremock_requests_duration_seconds",
                &[("operation", op)]
            ) as f64,
            sent,
            "{op}"
        );
    }
    assert!(
        text.contains("# TYPE wiremock_loader_wiremock_requests_duration_seconds histogram"),
        "{text}"
    );
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loader_retries_transient_failures_with_backoff() {
    // A target that answers 503 to the first two imports.
    let (state, _) = MockState::new(Vec::new());
    let failures = Arc::new(AtomicUsize::new(0));
    let (s, f) = (state.clone(), failures.clone());
    let srv = common::spawn(move |req: hyper::Request<hyper::body::Incoming>| {
        let (s, f) = (s.clone(), f.clone());
        async move {
            if req.uri().path() == "/__admin/mappings/import" {
                // Slow imports, so their durations land above the small buckets.
                tokio::time::sleep(Duration::from_millis(60)).await;
            }
            if req.uri().path() == "/__admin/mappings/import"
                && f.fetch_add(1, Ordering::SeqCst) < 2
            {
                return apm_mock::http::response(
                    hyper::StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    "busy",
                );
            }
            handle(s, req).await
        }
    })
    .await;
    let dir = write_dir(&[stub(ID1, "/r", "r")]);
    let mut cfg = LoadConfig::new(&srv.url(), dir.path());
    cfg.backoff = Duration::from_millis(20);
    let started = std::time::Instant::now();
    let mut metrics = Registry::new();
    let report = load(&cfg, &mut metrics).await.expect("load");
    assert_eq!((report.loaded, report.retries), (1, 2));
    assert!(
        started.elapsed() >= Duration::from_millis(60),
        "20 ms then 40 ms of backoff"
    );
    let text = metrics.render();
    assert!(
        text.contains("wiremock_loader_retries_total{operation=\"import\"} 2"),
        "{text}"
    );
    // Every attempt is timed: three imports of at least 60 ms each.
    for line in [
        "wiremock_loader_wiremock_requests_duration_seconds_bucket{operation=\"import\",le=\"0.05\"} 0",
        "wiremock_loader_wiremock_requests_duration_seconds_bucket{operation=\"import\",le=\"+Inf\"} 3",
        "wiremock_loader_wiremock_requests_duration_seconds_count{operation=\"import\"} 3",
        "wiremock_loader_wiremock_requests_duration_seconds_count{operation=\"backup\"} 1",
    ] {
        assert!(text.contains(line), "{line} in {text}");
    }
    let sum_line = text
        .lines()
        .find(|l| {
            l.starts_with(
                "wiremock_loader_wiremock_requests_duration_seconds_sum{operation=\"import\"}",
            )
        })
        .expect("sum");
    let sum: f64 = sum_line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(sum >= 0.18, "{sum_line}");
    assert!(
        dir.path().join("backups").is_dir(),
        "default backup location"
    );

    // A target that never answers: a clear error, after the configured attempts.
    srv.stop().await;
    let mut cfg = LoadConfig::new(&srv_url_closed().await, dir.path());
    cfg.attempts = 2;
    cfg.backoff = Duration::from_millis(10);
    let mut metrics = Registry::new();
    let err = load(&cfg, &mut metrics)
        .await
        .expect_err("unreachable target");
    assert!(
        err.to_string().contains("backup failed after 2 attempts"),
        "{err}"
    );
    // Failed attempts are timed too.
    assert_eq!(
        metrics.histogram_count(
            "wiremock_loader_wiremock_requests_duration_seconds",
            &[("operation", "backup")]
        ),
        2
    );
}

/// A loopback URL nothing listens on.
async fn srv_url_closed() -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    format!("http://{addr}")
}
