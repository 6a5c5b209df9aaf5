//! Parser robustness: arbitrary, truncated and mutated inputs never panic, every problem
//! is reported with a file and position, and good traces around bad ones still parse.

use apm_capture::{InputFormat, Pipeline, PipelineConfig, Sanitizer, parse_all};
use proptest::prelude::*;

const FORMATS: [InputFormat; 3] = [InputFormat::EnvoyTap, InputFormat::Har, InputFormat::Jsonl];

fn fixture(path: &str) -> Vec<u8> {
    std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(path),
    )
    .expect("fixture")
}

/// Parses and runs the whole pipeline (sanitize, dedupe, mappings): nothing may panic.
fn run_all(format: InputFormat, bytes: &[u8]) -> (usize, usize) {
    let parsed = parse_all(format, [("input", bytes)]);
    for e in &parsed.errors {
        assert_eq!(e.file, "input");
        assert!(!e.message.is_empty());
    }
    let (n, errs) = (parsed.exchanges.len(), parsed.errors.len());
    static S: std::sync::LazyLock<Sanitizer> = std::sync::LazyLock::new(Sanitizer::builtin);
    let mut p = Pipeline::new(PipelineConfig::default(), S.clone());
    for ex in parsed.exchanges {
        p.process(ex);
    }
    for m in p.mappings(time::OffsetDateTime::UNIX_EPOCH) {
        assert!(!m.bytes().is_empty());
    }
    (n, errs)
}

/// True when `full[..cut]` is a whole number of JSON documents (plus whitespace).
fn between_traces(full: &[u8], cut: usize) -> bool {
    let mut docs = serde_json::Deserializer::from_slice(full).into_iter::<serde_json::Value>();
    while let Some(Ok(_)) = docs.next() {
        let end = docs.byte_offset();
        if end <= cut && full[end..cut].iter().all(u8::is_ascii_whitespace) {
            return true;
        }
    }
    false
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        for f in FORMATS {
            run_all(f, &bytes);
        }
    }

    #[test]
    fn truncated_fixtures_never_panic_and_report_positions(cut in 0usize..10_000) {
        for (f, path) in [
            (InputFormat::EnvoyTap, "envoy/admin_tap_stream.json"),
            (InputFormat::EnvoyTap, "envoy/tap_1700000000000000001.json"),
            (InputFormat::Har, "har/shop.har"),
            (InputFormat::Jsonl, "jsonl/exchanges.jsonl"),
        ] {
            let full = fixture(path);
            let cut = cut % (full.len() + 1);
            let (n, errs) = run_all(f, &full[..cut]);
            let (full_n, _) = run_all(f, &full);
            prop_assert!(n <= full_n);
            // A cut between two traces of a stream loses the later ones without anything
            // being malformed; a cut anywhere else must be reported.
            if cut > 0 && cut < full.len() && f != InputFormat::Jsonl && n < full_n
                && !between_traces(&full, cut)
            {
                prop_assert!(errs > 0, "{path} cut at {cut}: lost traces without an error");
            }
        }
    }

    #[test]
    fn mutated_fixtures_never_panic(pos in 0usize..10_000, byte in any::<u8>()) {
        for (f, path) in [
            (InputFormat::EnvoyTap, "envoy/admin_tap_stream.json"),
            (InputFormat::Har, "har/shop.har"),
            (InputFormat::Jsonl, "jsonl/exchanges.jsonl"),
        ] {
            let mut bytes = fixture(path);
            let pos = pos % bytes.len();
            bytes[pos] = byte;
            run_all(f, &bytes);
        }
    }
}

#[test]
fn good_traces_around_garbage_still_parse() {
    let one = fixture("envoy/tap_1700000000000000002.json");
    let mut stream = Vec::new();
    stream.extend_from_slice(&one);
    stream.extend_from_slice(b"\nnot json at all\n");
    stream.extend_from_slice(&one);
    stream.extend_from_slice(b"\n{\"http_buffered_trace\": {\"request\": 7}}\n");
    stream.extend_from_slice(&one);
    let parsed = parse_all(InputFormat::EnvoyTap, [("mixed", stream.as_slice())]);
    assert_eq!(parsed.exchanges.len(), 3);
    let errors: Vec<String> = parsed.errors.iter().map(ToString::to_string).collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors[0].starts_with("mixed: line "), "{errors:?}");
    assert!(
        errors[1].contains("request must be an object"),
        "{errors:?}"
    );
}
