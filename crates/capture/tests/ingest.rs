//! Parsers and the whole pipeline on realistic fixtures, with golden mappings.
//!
//! Regenerate the golden files with `UPDATE_GOLDEN=1 cargo test -p apm-capture --test ingest`
//! and review the diff.

use std::path::{Path, PathBuf};

use apm_capture::{InputFormat, Outcome, Pipeline, PipelineConfig, Sanitizer, parse_all};
use serde_json::Value;
use time::macros::datetime;

fn fixtures(dir: &str) -> Vec<(String, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("fixture dir")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let name = format!("{dir}/{}", p.file_name().expect("name").to_string_lossy());
            (name, std::fs::read(&p).expect("read fixture"))
        })
        .collect()
}

/// Raw values planted in the fixtures; none may appear in any output.
const RAW: &[&str] = &[
    "maria.silva",
    "529.982.247-25",
    "98765-4321",
    "4111 1111 1111 1111",
    "s3nh4",
    "eyJhbGci",
    "ak_live",
    "session=abc123",
    "11.222.333/0001-81",
    "suporte@loja",
    "3456-7890",
    "415 555 2671",
    "hunter2",
    "12.ABC.345/01DE-35",
    "ana@example.com",
    "joao",
    "Tr0ub4dor",
    "sid=xyz",
    "11144477735",
    "99876-5432",
    "YWxhZGRpbjpvcGVuc2VzYW1l",
    "tok_9f8e7d",
];

fn run(format: InputFormat, dir: &str) -> (Pipeline, Vec<apm_capture::MappingFile>, Vec<String>) {
    let inputs = fixtures(dir);
    let parsed = parse_all(
        format,
        inputs.iter().map(|(n, b)| (n.as_str(), b.as_slice())),
    );
    let errors: Vec<String> = parsed.errors.iter().map(ToString::to_string).collect();
    let mut p = Pipeline::new(PipelineConfig::default(), Sanitizer::builtin());
    for e in parsed.errors {
        p.malformed(e);
    }
    for ex in parsed.exchanges {
        p.process(ex);
    }
    let maps = p.mappings(datetime!(2026-11-21 00:00 UTC));
    (p, maps, errors)
}

fn golden(name: &str, maps: &[apm_capture::MappingFile]) {
    let actual = Value::Array(maps.iter().map(|m| m.to_value()).collect());
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        let mut text = serde_json::to_string_pretty(&actual).expect("json");
        text.push('\n');
        std::fs::write(&path, text).expect("write golden");
    }
    let expected: Value = serde_json::from_slice(
        &std::fs::read(&path).expect("golden file (UPDATE_GOLDEN=1 creates it)"),
    )
    .expect("golden json");
    if expected != actual {
        let e = serde_json::to_string_pretty(&expected).expect("json");
        let a = serde_json::to_string_pretty(&actual).expect("json");
        let diff = similar::TextDiff::from_lines(&e, &a);
        panic!("{name} differs from golden:\n{}", diff.unified_diff());
    }
}

fn assert_clean(maps: &[apm_capture::MappingFile], errors: &[String]) {
    for m in maps {
        let text = String::from_utf8(m.bytes().to_vec()).expect("utf8");
        for raw in RAW {
            assert!(
                !text.contains(raw),
                "raw value {raw:?} leaked into {}",
                m.file_name
            );
        }
        // Only fields real WireMock accepts at the top level.
        for k in m.to_value().as_object().expect("object").keys() {
            assert!(
                [
                    "id",
                    "name",
                    "request",
                    "response",
                    "metadata",
                    "scenarioName",
                    "requiredScenarioState",
                    "newScenarioState"
                ]
                .contains(&k.as_str()),
                "top-level field {k}"
            );
        }
    }
    for e in errors {
        for raw in RAW {
            assert!(!e.contains(raw), "raw value {raw:?} leaked into error {e}");
        }
    }
}

#[test]
fn envoy_tap_files_and_admin_stream() {
    let (p, maps, errors) = run(InputFormat::EnvoyTap, "envoy");
    assert_eq!(
        errors,
        vec![
            "envoy/admin_tap_stream.json: line 43, column 57: key must be a string".to_string(),
            "envoy/admin_tap_stream.json: line 127, column 1: streamed trace 9: request or response headers never arrived; skipped".to_string(),
        ]
    );
    let r = p.report();
    assert_eq!(
        (r.ingested, r.malformed, r.unique, r.duplicates),
        (6, 2, 5, 1)
    );
    assert_eq!(maps.len(), 5);
    // The streamed trace, stitched across two files, has the whole request body.
    let stitched = maps
        .iter()
        .find(|m| {
            m.to_value()["request"]["method"] == "POST"
                && m.to_value()["request"]["url"] == "/search"
        })
        .expect("stitched trace");
    assert_eq!(
        stitched.to_value()["request"]["bodyPatterns"][0]["equalToJson"]["filters"]["brand"][1],
        "globex"
    );
    // gzip decoded, encoding headers dropped.
    let cart = maps
        .iter()
        .find(|m| m.to_value()["request"]["url"] == "/v2/carts/42")
        .expect("cart");
    assert_eq!(cart.to_value()["response"]["jsonBody"]["total"], 3);
    assert!(
        cart.to_value()["response"]["headers"]
            .get("content-encoding")
            .is_none()
    );
    assert!(
        cart.to_value()["response"]["headers"]
            .get("transfer-encoding")
            .is_none()
    );
    // A truncated request body is never an exact matcher and is flagged.
    let upload = maps
        .iter()
        .find(|m| m.to_value()["request"]["url"] == "/v1/documents")
        .expect("upload");
    assert!(upload.to_value()["request"].get("bodyPatterns").is_none());
    assert_eq!(
        upload.to_value()["metadata"]["apm"]["requestBodyTruncated"],
        true
    );
    assert_eq!(r.sanitized.get("header"), Some(&2), "{:?}", r.sanitized);
    assert_eq!(r.sanitized.get("card"), Some(&1), "{:?}", r.sanitized);
    assert_clean(&maps, &errors);
    golden("envoy.json", &maps);
}

#[test]
fn har_export() {
    let (p, maps, errors) = run(InputFormat::Har, "har");
    assert_eq!(
        errors,
        vec![
            "har/shop.har: entry 3: response.status is 0 (no response was received)".to_string(),
            "har/shop.har: entry 5: request.url is missing or not a string".to_string(),
        ]
    );
    assert_eq!(p.report().unique, 3);
    let orders = maps
        .iter()
        .find(|m| m.to_value()["request"]["urlPath"] == "/api/orders")
        .expect("orders");
    assert_eq!(
        orders.to_value()["request"]["queryParameters"]["status"],
        serde_json::json!({"hasExactly": [{"equalTo": "open"}, {"equalTo": "paid"}]})
    );
    // A sanitized value matches by pattern, so replays with real values still hit the stub.
    assert_eq!(
        orders.to_value()["request"]["queryParameters"]["customer"],
        serde_json::json!({"matches": ".+?"})
    );
    let login = maps
        .iter()
        .find(|m| m.to_value()["request"]["url"] == "/api/login")
        .expect("login");
    assert_eq!(
        login.to_value()["response"]["jsonBody"]["access_token"],
        "SANITIZED_SECRET"
    );
    assert_eq!(
        login.to_value()["response"]["headers"]["set-cookie"],
        "SANITIZED_HEADER"
    );
    let logo = maps
        .iter()
        .find(|m| m.to_value()["request"]["url"] == "/logo.png")
        .expect("logo");
    assert!(logo.to_value()["response"]["base64Body"].is_string());
    assert_clean(&maps, &errors);
    golden("har.json", &maps);
}

#[test]
fn jsonl_lines() {
    let (p, maps, errors) = run(InputFormat::Jsonl, "jsonl");
    assert_eq!(
        errors,
        vec![
            "jsonl/exchanges.jsonl: line 3, column 46: EOF while parsing an object".to_string(),
            "jsonl/exchanges.jsonl: line 4: response.status is missing or not a status code 100-599".to_string(),
        ]
    );
    assert_eq!(p.report().unique, 2);
    assert_clean(&maps, &errors);
    golden("jsonl.json", &maps);
}

#[test]
fn dedupe_is_deterministic_and_ignores_query_order_and_json_whitespace() {
    let mk = |body: &str, q: &str| {
        let line = format!(
            r#"{{"request":{{"method":"post","url":"/a?{q}","headers":{{"content-type":"application/json"}},"body":{body}}},"response":{{"status":200}}}}"#
        );
        let parsed = parse_all(InputFormat::Jsonl, [("x", line.as_bytes())]);
        parsed.exchanges.into_iter().next().expect("exchange")
    };
    let mut p = Pipeline::new(PipelineConfig::default(), Sanitizer::builtin());
    let a = p.process(mk(r#"{"x":1,"y":[1,2]}"#, "b=2&a=1"));
    let b = p.process(mk(r#"{"y":[1,2],"x":1}"#, "a=1&b=2"));
    let c = p.process(mk(r#"{"y":[2,1],"x":1}"#, "a=1&b=2"));
    let Outcome::New(ka) = a else {
        panic!("first is new")
    };
    assert_eq!(
        b,
        Outcome::Duplicate(ka),
        "key order and query order do not matter"
    );
    assert!(matches!(c, Outcome::New(_)), "array order does");
    // Those bodies were JSON values in the JSONL line, which the parser re-serialises with
    // sorted keys. A body captured as text (Envoy, HAR, record) enters the key as the
    // sanitizer stores it: compact, so whitespace does not matter, in the client's order.
    let t1 = p.process(mk(r#""{\"k\": 1, \"l\": [1, 2]}""#, ""));
    let t2 = p.process(mk(r#""{\"k\":1,\"l\":[1,2]}""#, ""));
    let t3 = p.process(mk(r#""{\"l\":[1,2],\"k\":1}""#, ""));
    let Outcome::New(kt) = t1 else {
        panic!("first text body is new")
    };
    assert_eq!(t2, Outcome::Duplicate(kt), "whitespace does not matter");
    assert!(
        matches!(t3, Outcome::New(_)),
        "member order of a text body does"
    );
    // Two emails that sanitize to the same marker are the same request after sanitizing.
    let d = p.process(mk(r#"{"u":"ana@example.com"}"#, ""));
    let e = p.process(mk(r#"{"u":"bob@example.org"}"#, ""));
    assert!(matches!(d, Outcome::New(_)));
    assert!(matches!(e, Outcome::Duplicate(_)));
    // Same inputs, fresh pipeline: same keys, same ids, same mappings.
    let mut q = Pipeline::new(PipelineConfig::default(), Sanitizer::builtin());
    q.process(mk(r#"{"x":1,"y":[1,2]}"#, "b=2&a=1"));
    let t = datetime!(2026-11-21 00:00 UTC);
    assert_eq!(p.mappings(t)[..1].len(), 1);
    let first_p = p
        .mappings(t)
        .into_iter()
        .find(|m| m.to_value()["metadata"]["apm"]["dedupeKey"] == ka.hex())
        .expect("mapping");
    assert_eq!(first_p, q.mappings(t)[0]);
    // Body beyond the first KiB does not change the key.
    let long_a = format!(r#""{}A""#, "x".repeat(2000));
    let long_b = format!(r#""{}B""#, "x".repeat(2000));
    let mut r = Pipeline::new(PipelineConfig::default(), Sanitizer::builtin());
    assert!(matches!(r.process(mk(&long_a, "")), Outcome::New(_)));
    assert!(matches!(r.process(mk(&long_b, "")), Outcome::Duplicate(_)));
}

#[test]
fn repeats_with_different_responses_become_scenarios() {
    let line = |status: u16, body: &str| {
        format!(
            r#"{{"request":{{"method":"GET","url":"/job/1"}},"response":{{"status":{status},"body":"{body}"}}}}"#
        )
    };
    let text = [
        line(202, "pending"),
        line(202, "pending"),
        line(200, "done"),
    ]
    .join("\n");
    let parsed = parse_all(InputFormat::Jsonl, [("x", text.as_bytes())]);
    let cfg = PipelineConfig {
        scenarios: true,
        ..PipelineConfig::default()
    };
    let mut p = Pipeline::new(cfg, Sanitizer::builtin());
    for ex in parsed.exchanges {
        p.process(ex);
    }
    let maps = p.mappings(datetime!(2026-11-21 00:00 UTC));
    assert_eq!(maps.len(), 2);
    assert_eq!(p.report().scenario_states, 1);
    assert_eq!(maps[0].to_value()["requiredScenarioState"], "Started");
    assert_eq!(
        maps[0].to_value()["newScenarioState"],
        maps[1].to_value()["requiredScenarioState"]
    );
    assert!(maps[1].to_value().get("newScenarioState").is_none());
    assert_eq!(maps[1].to_value()["response"]["body"], "done");
    assert_ne!(maps[0].id, maps[1].id);
}

/// A repeated request's response is never sanitized (it is not written), so nothing in it is
/// counted; with `--scenarios` every repeat's response is sanitized (to compare it with the
/// states kept) and counted, and no raw value reaches a mapping either way.
#[test]
fn a_repeats_response_is_sanitized_and_counted_only_in_scenario_mode() {
    let line = |email: &str| {
        format!(
            r#"{{"request":{{"method":"GET","url":"/customer/7","headers":{{"x-api-key":"k1"}}}},"response":{{"status":200,"headers":{{"content-type":"application/json","set-cookie":"sid=1"}},"body":"{{\"email\":\"{email}\",\"phone\":\"+55 11 98765-4321\"}}"}}}}"#
        )
    };
    let text = [
        line("ana@example.com"),
        line("bia@example.com"),
        line("ana@example.com"),
    ]
    .join("\n");
    let run = |scenarios: bool| {
        let parsed = parse_all(InputFormat::Jsonl, [("x", text.as_bytes())]);
        assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
        let cfg = PipelineConfig {
            scenarios,
            ..PipelineConfig::default()
        };
        let mut p = Pipeline::new(cfg, Sanitizer::builtin());
        let outcomes: Vec<Outcome> = parsed.exchanges.into_iter().map(|e| p.process(e)).collect();
        let maps = p.mappings(datetime!(2026-11-21 00:00 UTC));
        (outcomes, p.report(), maps)
    };

    let (outcomes, report, maps) = run(false);
    assert!(matches!(outcomes[0], Outcome::New(_)));
    assert!(matches!(outcomes[1], Outcome::Duplicate(_)));
    assert!(matches!(outcomes[2], Outcome::Duplicate(_)));
    assert_eq!(maps.len(), 1);
    // Requests: 3 × the api-key header. Responses: only the first one's email, phone, cookie.
    assert_eq!(report.sanitized.get("header"), Some(&3));
    assert_eq!(report.sanitized.get("email"), Some(&1));
    assert_eq!(report.sanitized.get("phone"), Some(&1));
    assert_eq!(report.sanitized.get("cookie"), Some(&1));
    assert_clean(&maps, &[]);

    let (_, report, maps) = run(true);
    // Every response is sanitized; the emails sanitize alike, so the repeats add no state.
    assert_eq!(report.sanitized.get("header"), Some(&3));
    assert_eq!(report.sanitized.get("email"), Some(&3));
    assert_eq!(report.sanitized.get("phone"), Some(&3));
    assert_eq!(report.sanitized.get("cookie"), Some(&3));
    assert_eq!(report.scenario_states, 0);
    assert_eq!(maps.len(), 1);
    assert_clean(&maps, &[]);
    for m in &maps {
        let text = String::from_utf8_lossy(m.bytes());
        for raw in [
            "ana@example.com",
            "bia@example.com",
            "98765-4321",
            "sid=1",
            "k1\"",
        ] {
            assert!(!text.contains(raw), "{raw} survived in {}", m.file_name);
        }
    }
}

#[test]
fn filters_and_sampling() {
    use apm_capture::{FilterConfig, Glob};
    let text: String = (0..200)
        .map(|i| {
            format!(
                r#"{{"request":{{"method":"{}","url":"https://{}/p/{i}"}},"response":{{"status":200}}}}"#,
                if i % 2 == 0 { "GET" } else { "POST" },
                if i % 3 == 0 { "api.example.com" } else { "static.example.com:8443" }
            ) + "\n"
        })
        .collect();
    let run = |filter: FilterConfig| {
        let parsed = parse_all(InputFormat::Jsonl, [("x", text.as_bytes())]);
        let mut p = Pipeline::new(
            PipelineConfig {
                filter,
                ..PipelineConfig::default()
            },
            Sanitizer::builtin(),
        );
        for ex in parsed.exchanges {
            p.process(ex);
        }
        p.report()
    };
    let r = run(FilterConfig {
        exclude_hosts: vec![Glob::new("static.*").expect("glob")],
        ..FilterConfig::default()
    });
    assert_eq!(r.filtered.get("host"), Some(&133));
    let r = run(FilterConfig {
        methods: vec!["GET".into()],
        include_paths: vec![Glob::new("/p/1*").expect("glob")],
        ..FilterConfig::default()
    });
    assert_eq!(r.unique, 55, "GET and /p/1… of 200: {r:?}");
    // The stub cap: new requests past it are counted, not kept.
    let parsed = parse_all(InputFormat::Jsonl, [("x", text.as_bytes())]);
    let mut capped = Pipeline::new(
        PipelineConfig {
            max_stubs: 10,
            ..PipelineConfig::default()
        },
        Sanitizer::builtin(),
    );
    for ex in parsed.exchanges {
        capped.process(ex);
    }
    assert_eq!(capped.stub_count(), 10);
    assert_eq!(capped.report().filtered.get("stub_limit"), Some(&190));
    let a = run(FilterConfig {
        sample_rate: 0.25,
        ..FilterConfig::default()
    });
    let b = run(FilterConfig {
        sample_rate: 0.25,
        ..FilterConfig::default()
    });
    assert_eq!(a, b, "sampling is deterministic");
    assert!(
        (25..=75).contains(&a.unique),
        "about a quarter kept: {}",
        a.unique
    );
}
