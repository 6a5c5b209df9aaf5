//! Round trip: record a local origin through `apm capture record`'s proxy, write the mappings,
//! stop the origin, and check `apm mock serve` answers the same requests with the recorded
//! responses (sanitized where they held customer data).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{client, gunzip, requests, same_body, send};

const RAW: &[&str] = &[
    "ana@example.com",
    "ana%40example.com",
    "hunter2",
    "529.982.247-25",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_then_serve_answers_like_the_origin() {
    let origin = common::origin().await;
    let (seen, recorder) = common::record(&origin).await;
    origin.stop().await;

    let (maps, report) =
        recorder.with_pipeline(|p| (p.mappings(time::OffsetDateTime::now_utc()), p.report()));
    assert_eq!((report.unique, report.duplicates), (10, 1), "{report:?}");
    assert!(
        report.sanitized.get("email").copied().unwrap_or(0) >= 3,
        "{report:?}"
    );
    let metrics = recorder.with_pipeline(|p| p.metrics().render());
    assert!(
        metrics.contains("collector_requests_total{method=\"GET\",status=\"success\"} 8"),
        "{metrics}"
    );
    assert!(
        metrics.contains("collector_deduplication_operations_total{result=\"duplicate\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("collector_sanitization_operations_total{type=\"email\"}"),
        "{metrics}"
    );

    let dir = tempfile::tempdir().unwrap();
    assert_eq!(
        apm_mock::files::write_mappings(dir.path(), &maps).unwrap(),
        10
    );
    for entry in std::fs::read_dir(dir.path().join("mappings")).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for raw in RAW {
            assert!(!text.contains(raw), "{raw} written to disk");
        }
    }

    let (mock, state) = common::mock(dir.path()).await;
    assert_eq!(state.stub_count(), 10);
    let c = client();
    for (rq, orig) in requests().iter().zip(&seen) {
        let got = send(&c, &mock.url(), rq).await;
        let what = format!("{} {}", rq.method, rq.path_and_query);
        assert_eq!(got.status, orig.status, "{what}");
        assert_eq!(got.content_type, orig.content_type, "{what}");
        assert_eq!(
            got.content_encoding, None,
            "{what}: bodies are served decoded"
        );
        let orig_body = if orig.content_encoding.as_deref() == Some("gzip") {
            gunzip(&orig.body)
        } else {
            orig.body.clone()
        };
        let orig_text = String::from_utf8_lossy(&orig_body);
        let got_text = String::from_utf8_lossy(&got.body);
        if RAW.iter().any(|r| orig_text.contains(r)) {
            assert!(got_text.contains("SANITIZED_"), "{what}: {got_text}");
            for raw in RAW {
                assert!(!got_text.contains(raw), "{what}: {raw} served");
            }
        } else {
            assert!(
                same_body(&got.body, &orig_body),
                "{what}: {got_text} vs {orig_text}"
            );
        }
    }

    // Requests that sanitize to the same thing match the same stub.
    let mut other = requests()[2].clone();
    other.body = br#"{"sku": "A-1", "qty": 2, "email": "bob@example.org"}"#.to_vec();
    assert_eq!(send(&c, &mock.url(), &other).await.status, 201);
    let mut other_user = requests()[7].clone();
    other_user.path_and_query = "/v1/users/bob%40example.org/profile".into();
    assert_eq!(send(&c, &mock.url(), &other_user).await.status, 200);
    // ...but a different order quantity does not.
    let mut qty = requests()[2].clone();
    qty.body = br#"{"sku": "A-1", "qty": 3, "email": "ana@example.com"}"#.to_vec();
    assert_eq!(send(&c, &mock.url(), &qty).await.status, 404);

    // Unmatched: 404 listing the closest stubs.
    let mut near = requests()[4].clone();
    near.path_and_query = "/v1/textt".into();
    let miss = send(&c, &mock.url(), &near).await;
    assert_eq!(miss.status, 404);
    let text = String::from_utf8_lossy(&miss.body);
    assert!(text.contains("Request was not matched"), "{text}");
    assert!(text.contains("1. GET /v1/text"), "{text}");

    let m = state.metrics_text();
    assert!(
        m.contains("mock_requests_total{result=\"unmatched\"} 2"),
        "{m}"
    );
    assert!(
        m.contains("mock_requests_total{result=\"matched\"} 13"),
        "{m}"
    );
    assert!(m.contains("mock_stubs 10"), "{m}");
    mock.stop().await;
}
