//! Real WireMock 3.13.2: every mapping we generate is accepted, and WireMock answers the
//! recorded requests exactly as `apm mock serve` does.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use apm_capture::metrics::Registry;
use apm_capture::{InputFormat, Pipeline, PipelineConfig, Sanitizer, parse_all};
use apm_mock::load::{LoadConfig, load};
use common::wiremock::WireMock;
use common::{client, requests, same_body, send};

fn ingest_fixtures(out: &Path) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../capture/tests/fixtures");
    let mut total = 0;
    for (format, dir) in [
        (InputFormat::EnvoyTap, "envoy"),
        (InputFormat::Har, "har"),
        (InputFormat::Jsonl, "jsonl"),
    ] {
        let mut files: Vec<_> = std::fs::read_dir(root.join(dir))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        let inputs: Vec<(String, Vec<u8>)> = files
            .iter()
            .map(|p| (p.display().to_string(), std::fs::read(p).unwrap()))
            .collect();
        let parsed = parse_all(
            format,
            inputs.iter().map(|(n, b)| (n.as_str(), b.as_slice())),
        );
        let cfg = PipelineConfig {
            scenarios: true,
            ..PipelineConfig::default()
        };
        let mut p = Pipeline::new(cfg, Sanitizer::builtin());
        for ex in parsed.exchanges {
            p.process(ex);
        }
        total += apm_mock::files::write_mappings(out, &p.mappings(time::OffsetDateTime::now_utc()))
            .unwrap();
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wiremock_accepts_our_mappings_and_answers_like_mock_serve() {
    let wm = WireMock::start(&["--no-request-journal"]);

    // 1. Every mapping generated from the fixtures is accepted by real WireMock.
    let fixtures = tempfile::tempdir().unwrap();
    let n = ingest_fixtures(fixtures.path());
    assert!(n >= 10, "{n}");
    let mut cfg = LoadConfig::new(&wm.url(), fixtures.path());
    cfg.replace = true;
    let report = load(&cfg, &mut Registry::new())
        .await
        .expect("load fixtures");
    assert!(
        report.refused.is_empty(),
        "WireMock refused: {:?}",
        report.refused
    );
    assert_eq!(report.loaded, n);

    // 2. Repeats with different responses, kept as scenario states, step the same way.
    let lines = [(202, "pending"), (202, "pending"), (200, "done")]
        .map(|(st, b)| format!(r#"{{"request":{{"method":"GET","url":"/job/7"}},"response":{{"status":{st},"body":"{b}"}}}}"#))
        .join("\n");
    let parsed = parse_all(InputFormat::Jsonl, [("jobs.jsonl", lines.as_bytes())]);
    let mut p = Pipeline::new(
        PipelineConfig {
            scenarios: true,
            ..PipelineConfig::default()
        },
        Sanitizer::builtin(),
    );
    for ex in parsed.exchanges {
        p.process(ex);
    }
    let jobs = tempfile::tempdir().unwrap();
    apm_mock::files::write_mappings(jobs.path(), &p.mappings(time::OffsetDateTime::now_utc()))
        .unwrap();
    let mut cfg = LoadConfig::new(&wm.url(), jobs.path());
    cfg.replace = true;
    let report = load(&cfg, &mut Registry::new())
        .await
        .expect("load scenarios");
    assert!(report.refused.is_empty(), "{:?}", report.refused);
    assert_eq!(report.loaded, 2);
    let (jobs_mock, _) = common::mock(jobs.path()).await;
    let c = client();
    let job = common::Req {
        method: "GET",
        path_and_query: "/job/7".into(),
        headers: vec![],
        body: vec![],
    };
    for expected in [(202, "pending"), (200, "done"), (200, "done")] {
        for base in [wm.url(), jobs_mock.url()] {
            let got = send(&c, &base, &job).await;
            assert_eq!(
                (got.status, String::from_utf8_lossy(&got.body).as_ref()),
                expected,
                "{base}"
            );
        }
    }
    jobs_mock.stop().await;

    // 3. Recorded traffic: loaded into WireMock with the loader, served by both.
    let origin = common::origin().await;
    let (seen, recorder) = common::record(&origin).await;
    origin.stop().await;
    let maps = recorder.with_pipeline(|p| p.mappings(time::OffsetDateTime::now_utc()));
    let dir = tempfile::tempdir().unwrap();
    apm_mock::files::write_mappings(dir.path(), &maps).unwrap();
    let mut cfg = LoadConfig::new(&wm.url(), dir.path());
    cfg.replace = true;
    let report = load(&cfg, &mut Registry::new())
        .await
        .expect("load recorded");
    assert!(report.refused.is_empty(), "{:?}", report.refused);
    assert_eq!((report.loaded, report.backed_up), (maps.len(), 2));

    let (mock, _) = common::mock(dir.path()).await;
    let mut replays = requests();
    // Variants: same after sanitizing (must match in both), and a real difference (neither).
    let mut bob = replays[2].clone();
    bob.body = br#"{"sku": "A-1", "qty": 2, "email": "bob@example.org"}"#.to_vec();
    let mut qty = replays[2].clone();
    qty.body = br#"{"email": "ana@example.com", "qty": 3, "sku": "A-1"}"#.to_vec();
    let mut user = replays[7].clone();
    user.path_and_query = "/v1/users/bob%40example.org/profile".into();
    replays.extend([bob, qty, user]);
    for (i, rq) in replays.iter().enumerate() {
        let what = format!("{} {}", rq.method, rq.path_and_query);
        let ours = send(&c, &mock.url(), rq).await;
        let theirs = send(&c, &wm.url(), rq).await;
        assert_eq!(ours.status, theirs.status, "{what}");
        if ours.status == 404 && i >= seen.len() {
            continue; // both unmatched; the 404 bodies are each server's own report
        }
        assert!(
            same_body(&ours.body, &theirs.body),
            "{what}: {:?} vs {:?}",
            String::from_utf8_lossy(&ours.body),
            String::from_utf8_lossy(&theirs.body)
        );
        assert_eq!(ours.content_type, theirs.content_type, "{what}");
        assert_eq!(ours.content_encoding, theirs.content_encoding, "{what}");
        if i < seen.len() {
            assert_eq!(ours.status, seen[i].status, "{what}");
        }
    }
    mock.stop().await;
}
