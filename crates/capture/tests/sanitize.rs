//! Sanitizer behaviour: unit cases per type and properties (valid secrets never survive,
//! look-alikes do).

use apm_capture::sanitize::checks::{
    cnpj_check_digits, cnpj_valid, cpf_check_digits, cpf_valid, luhn,
};
use apm_capture::{
    Body, BodyContent, BodyLimits, Exchange, Header, InputFormat, Request, Response, SanitizeStats,
    Sanitizer, SanitizerConfig, SourceRef,
};
use base64::Engine as _;
use proptest::prelude::*;
use serde_json::{Value, json};

/// One sanitizer for all cases: building one compiles every rule.
fn shared() -> &'static Sanitizer {
    static S: std::sync::LazyLock<Sanitizer> = std::sync::LazyLock::new(Sanitizer::builtin);
    &S
}

fn text(s: &str) -> (String, SanitizeStats) {
    let mut stats = SanitizeStats::default();
    let out = shared().text(s, &mut stats).into_owned();
    (out, stats)
}

fn jwt(header: &Value, payload: &Value) -> String {
    let e = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    format!("{}.{}.c2lnbmF0dXJlLWJ5dGVz", e(header), e(payload))
}

#[test]
fn jwt_in_text_is_replaced_and_lookalikes_survive() {
    let token = jwt(
        &json!({"alg":"HS256","typ":"JWT"}),
        &json!({"sub":"123","name":"Ana"}),
    );
    let (out, stats) = text(&format!("Bearer {token} trailing"));
    assert_eq!(out, "Bearer SANITIZED_JWT trailing");
    assert_eq!(stats.get("jwt"), 1);
    // Starts like a JWT, but the parts are not base64url JSON.
    let (out, _) = text("eyJhbGciOiJub3Rqc29u.eyJzdWIiOjEyMw.sig");
    assert_eq!(out, "eyJhbGciOiJub3Rqc29u.eyJzdWIiOjEyMw.sig");
}

#[test]
fn cards_with_separators_are_replaced_only_when_luhn_passes() {
    for card in [
        "4111111111111111",
        "4111 1111 1111 1111",
        "4111-1111-1111-1111",
        "5555555555554444",
        "378282246310005",
        "3782 822463 10005",
        "6011111111111117",
    ] {
        let (out, stats) = text(&format!("pay with {card}."));
        assert_eq!(out, "pay with SANITIZED_CARD.", "{card}");
        assert_eq!(stats.get("card"), 1);
    }
    for lookalike in [
        "4111111111111112",
        "4111 1111 1111 1112",
        "1732190400000",    // epoch milliseconds
        "1732190400000000", // epoch microseconds
        "9111111111111111",
    ] {
        let (out, stats) = text(&format!("id {lookalike}"));
        assert_eq!(out, format!("id {lookalike}"), "{lookalike}");
        assert_eq!(stats.total(), 0);
    }
    // A card after an unrelated number group is still found.
    let (out, _) = text("ref 1234 4111 1111 1111 1111 ok");
    assert_eq!(out, "ref 1234 SANITIZED_CARD ok");
}

#[test]
fn cpf_and_cnpj_formatted_bare_and_alphanumeric() {
    for doc in [
        "529.982.247-25",
        "52998224725",
        "111.444.777-35",
        "11.222.333/0001-81",
        "11222333000181",
        "12.ABC.345/01DE-35",
        "12ABC34501DE35",
    ] {
        let (out, stats) = text(&format!("doc: {doc};"));
        assert_eq!(out, "doc: SANITIZED_DOCUMENT;", "{doc}");
        assert_eq!(stats.get("document"), 1, "{doc}");
    }
    for lookalike in [
        "529.982.247-26",
        "52998224726",
        "11.222.333/0001-82",
        "12ABC34501DE36",
        "111.111.111-11",
        "ABCDEFGHIJKLMN",
    ] {
        let (out, _) = text(&format!("doc: {lookalike};"));
        assert_eq!(out, format!("doc: {lookalike};"), "{lookalike}");
    }
}

#[test]
fn check_digit_vectors() {
    assert_eq!(cnpj_check_digits(b"12ABC34501DE"), Some((3, 5)));
    assert_eq!(cnpj_check_digits(b"112223330001"), Some((8, 1)));
    assert_eq!(cpf_check_digits(b"529982247"), Some((2, 5)));
    assert!(cnpj_valid(b"12ABC34501DE35"));
    assert!(cpf_valid(b"52998224725"));
    assert!(luhn(b"4111111111111111"));
}

#[test]
fn phones_and_emails() {
    for phone in [
        "+55 11 98765-4321",
        "+5511987654321",
        "(11) 98765-4321",
        "11 98765-4321",
        "+1 415 555 2671",
        "+44 (20) 7946 0958",
    ] {
        let (out, stats) = text(&format!("call {phone} now"));
        assert_eq!(out, "call SANITIZED_PHONE now", "{phone}");
        assert_eq!(stats.get("phone"), 1);
    }
    let (out, stats) = text("to: ana.souza+promo@mail.example.com.br, cc bob%40x.io");
    assert_eq!(out, "to: SANITIZED_EMAIL, cc SANITIZED_EMAIL");
    assert_eq!(stats.get("email"), 2);
}

#[test]
fn keyed_values_in_text() {
    let (out, stats) =
        text(r#"user=ana&password=hunter2&api_key=abc123 {"client_secret": "s3cr3t"}"#);
    assert_eq!(
        out,
        r#"user=ana&password=SANITIZED_PASSWORD&api_key=SANITIZED_SECRET {"client_secret": "SANITIZED_SECRET"}"#
    );
    assert_eq!(stats.get("password"), 1);
    assert_eq!(stats.get("secret"), 2);
}

#[test]
fn survivors_stay_byte_identical() {
    let s = "order ORD-2026-000123 at 2026-11-21T10:15:30.123Z id 550e8400-e29b-41d4-a716-446655440000 \
             ts 1732190400000 v1.2.3 zip 01310-100 sha da39a3ee5e6b4b0d3255bfef95601890afd80709 qty 12";
    let (out, stats) = text(s);
    assert_eq!(out, s);
    assert_eq!(stats.total(), 0);
}

fn exchange(
    req_headers: Vec<Header>,
    path: &str,
    query: Vec<(&str, &str)>,
    body: &[u8],
    resp_headers: Vec<Header>,
    resp_body: &[u8],
) -> Exchange {
    Exchange {
        source: SourceRef {
            format: InputFormat::Jsonl,
            file: "t".into(),
            position: "line 1".into(),
        },
        captured_at: None,
        request: Request {
            method: "POST".into(),
            host: Some("api.example.com".into()),
            path: path.into(),
            query: query
                .into_iter()
                .map(|(a, b)| (a.into(), b.into()))
                .collect(),
            headers: req_headers,
            body: Body::complete(body.to_vec()),
        },
        response: Response {
            status: 200,
            headers: resp_headers,
            body: Body::complete(resp_body.to_vec()),
        },
    }
}

#[test]
fn structure_aware_exchange_sanitizing() {
    let token = jwt(&json!({"alg":"RS256"}), &json!({"sub":"u1"}));
    let body = json!({
        "user": {"email": "ana@example.com", "Password": "hunter2", "profile": {"pwd": 1234}},
        "cards": [4111111111111111u64, "5555 5555 5555 4444"],
        "access_token": "opaque-abc",
        "note": format!("token {token}"),
        "order": "ORD-1"
    });
    let ex = exchange(
        vec![
            Header::new("Authorization", format!("Bearer {token}")),
            Header::new("X-Api-Key", "k-123"),
            Header::new("Cookie", "sid=abc"),
            Header::new("Content-Type", "application/json"),
            Header::new("X-Trace", "ana@example.com"),
        ],
        "/v1/users/ana%40example.com/orders",
        vec![
            ("email", "ana@example.com"),
            ("password", "x"),
            ("page", "2"),
        ],
        body.to_string().as_bytes(),
        vec![
            Header::new("Set-Cookie", "sid=abc; HttpOnly"),
            Header::new("Content-Type", "application/json"),
        ],
        br#"{"cpf":"529.982.247-25","phone":"+55 11 98765-4321"}"#,
    );
    let mut stats = SanitizeStats::default();
    let clean = Sanitizer::builtin().sanitize(ex, &BodyLimits::default(), &mut stats);
    assert_eq!(clean.path(), "/v1/users/SANITIZED_EMAIL/orders");
    assert_eq!(
        clean.query(),
        &[
            ("email".to_string(), "SANITIZED_EMAIL".to_string()),
            ("password".to_string(), "SANITIZED_PASSWORD".to_string()),
            ("page".to_string(), "2".to_string())
        ]
    );
    let hv: Vec<(&str, &str)> = clean
        .request_headers()
        .iter()
        .map(|h| (h.name.as_str(), h.value.as_str()))
        .collect();
    assert!(hv.contains(&("Authorization", "SANITIZED_HEADER")));
    assert!(hv.contains(&("X-Api-Key", "SANITIZED_HEADER")));
    assert!(hv.contains(&("Cookie", "SANITIZED_HEADER")));
    assert!(hv.contains(&("X-Trace", "SANITIZED_EMAIL")));
    let BodyContent::Json(req) = &clean.request_body().content else {
        panic!("json body expected")
    };
    assert_eq!(
        req.to_value(),
        json!({
            "user": {"email": "SANITIZED_EMAIL", "Password": "SANITIZED_PASSWORD", "profile": {"pwd": "SANITIZED_PASSWORD"}},
            "cards": ["SANITIZED_CARD", "SANITIZED_CARD"],
            "access_token": "SANITIZED_SECRET",
            "note": "token SANITIZED_JWT",
            "order": "ORD-1"
        })
    );
    let BodyContent::Json(resp) = &clean.response_body().content else {
        panic!("json body expected")
    };
    assert_eq!(
        resp.to_value(),
        json!({"cpf": "SANITIZED_DOCUMENT", "phone": "SANITIZED_PHONE"})
    );
    assert_eq!(clean.response_headers()[0].value, "SANITIZED_HEADER");
    assert_eq!(stats.get("cookie"), 2);
    assert_eq!(stats.get("header"), 2);
}

#[test]
fn form_and_truncated_json_bodies() {
    let ex = exchange(
        vec![Header::new(
            "Content-Type",
            "application/x-www-form-urlencoded",
        )],
        "/login",
        vec![],
        b"user=ana%40example.com&passwd=hunter2&remember=on",
        vec![Header::new("Content-Type", "application/json")],
        b"",
    );
    let mut stats = SanitizeStats::default();
    let clean = Sanitizer::builtin().sanitize(ex, &BodyLimits::default(), &mut stats);
    assert_eq!(
        clean.request_body().content,
        BodyContent::Text("user=SANITIZED_EMAIL&passwd=SANITIZED_PASSWORD&remember=on".into())
    );
    // A truncated JSON body is text: keyed values must still go.
    let mut ex = exchange(
        vec![Header::new("Content-Type", "application/json")],
        "/login",
        vec![],
        br#"{"login":"ana","password":"hunter2","card":"4111 1111 1111 1111","bio":"lorem ips"#,
        vec![],
        b"",
    );
    ex.request.body.truncated = true;
    let clean = Sanitizer::builtin().sanitize(ex, &BodyLimits::default(), &mut stats);
    assert_eq!(
        clean.request_body().content,
        BodyContent::Text(r#"{"login":"ana","password":"SANITIZED_PASSWORD","card":"SANITIZED_CARD","bio":"lorem ips"#.into())
    );
    assert!(clean.request_body().truncated);
}

#[test]
fn gzip_bodies_are_decoded_before_sanitizing_and_unknown_encodings_dropped() {
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(br#"{"email":"ana@example.com"}"#)
        .expect("gzip");
    let zipped = gz.finish().expect("gzip");
    let ex = exchange(
        vec![],
        "/a",
        vec![],
        b"",
        vec![
            Header::new("Content-Encoding", "gzip"),
            Header::new("Content-Type", "application/json"),
        ],
        &zipped,
    );
    let mut stats = SanitizeStats::default();
    let clean = Sanitizer::builtin().sanitize(ex.clone(), &BodyLimits::default(), &mut stats);
    let BodyContent::Json(decoded) = &clean.response_body().content else {
        panic!("json body expected")
    };
    assert_eq!(decoded.as_str(), r#"{"email":"SANITIZED_EMAIL"}"#);
    assert!(
        clean
            .response_headers()
            .iter()
            .all(|h| !h.name.eq_ignore_ascii_case("content-encoding"))
    );
    let mut br = ex;
    br.response.headers[0].value = "br".into();
    let clean = Sanitizer::builtin().sanitize(br, &BodyLimits::default(), &mut stats);
    assert!(clean.response_body().is_empty());
    assert!(clean.response_body().truncated);
    assert!(clean.response_body().note.is_some());
}

#[test]
fn body_limit_marks_truncation() {
    let ex = exchange(
        vec![Header::new("Content-Type", "text/plain")],
        "/a",
        vec![],
        &[b'a'; 100],
        vec![],
        b"",
    );
    let mut stats = SanitizeStats::default();
    let clean = Sanitizer::builtin().sanitize(ex, &BodyLimits { max_body: 10 }, &mut stats);
    assert_eq!(
        clean.request_body().content,
        BodyContent::Text("a".repeat(10))
    );
    assert!(clean.request_body().truncated);
}

#[test]
fn custom_patterns_from_toml() {
    let cfg = SanitizerConfig::from_toml(
        r#"
sensitive_headers = ["X-Customer"]
sensitive_fields = ["ssn"]
[[pattern]]
name = "custom_token"
pattern = "tk_[a-zA-Z0-9]{32}"
replacement = "SANITIZED_CUSTOM_TOKEN"
"#,
    )
    .expect("config");
    let s = Sanitizer::new(cfg).expect("sanitizer");
    let mut stats = SanitizeStats::default();
    let out = s.text("key tk_0123456789abcdef0123456789abcdef end", &mut stats);
    assert_eq!(out, "key SANITIZED_CUSTOM_TOKEN end");
    assert_eq!(stats.by_type(&s).get("custom_token"), Some(&1));
    let v = s.json(br#"{"ssn": "123"}"#, &mut stats).expect("json");
    assert_eq!(v, r#"{"ssn":"SANITIZED_SECRET"}"#);

    let bad =
        SanitizerConfig::from_toml("[[pattern]]\nname = \"x\"\npattern = \"(\"\n").expect("toml");
    let err = Sanitizer::new(bad)
        .err()
        .expect("bad regex rejected")
        .to_string();
    assert!(err.contains("pattern 'x'"), "{err}");
    let unknown = SanitizerConfig::from_toml("patterns = []\n").expect_err("unknown key rejected");
    assert!(unknown.to_string().contains("patterns"), "{unknown}");
    let empty =
        SanitizerConfig::from_toml("[[pattern]]\nname = \"e\"\npattern = \"a*\"\n").expect("toml");
    assert!(
        Sanitizer::new(empty).is_err(),
        "a pattern matching the empty string is rejected"
    );
}

// ---------- properties ----------

fn luhn_complete(mut digits: Vec<u8>) -> Vec<u8> {
    for d in 0..10u8 {
        digits.push(b'0' + d);
        if luhn(&digits) {
            return digits;
        }
        digits.pop();
    }
    unreachable!("one check digit always completes a Luhn number")
}

fn card() -> impl Strategy<Value = String> {
    (
        2u8..=6,
        13usize..=19,
        proptest::collection::vec(0u8..10, 18),
        0u8..3,
    )
        .prop_map(|(first, len, rest, style)| {
            let mut d = vec![b'0' + first];
            d.extend(rest.iter().take(len - 2).map(|x| b'0' + x));
            let d = luhn_complete(d);
            let s = String::from_utf8(d).expect("digits");
            match style {
                0 => s,
                n => {
                    let sep = if n == 1 { " " } else { "-" };
                    s.as_bytes()
                        .chunks(4)
                        .map(|c| std::str::from_utf8(c).expect("digits"))
                        .collect::<Vec<_>>()
                        .join(sep)
                }
            }
        })
        .prop_filter("not all equal digits", |s| {
            let d: Vec<char> = s.chars().filter(char::is_ascii_digit).collect();
            d.iter().any(|c| *c != d[0])
        })
}

fn cpf() -> impl Strategy<Value = String> {
    (proptest::collection::vec(0u8..10, 9), any::<bool>())
        .prop_filter("not all equal", |(d, _)| d.iter().any(|x| *x != d[0]))
        .prop_map(|(d, formatted)| {
            let base: Vec<u8> = d.iter().map(|x| b'0' + x).collect();
            let (a, b) = cpf_check_digits(&base).expect("9 digits");
            let s = format!("{}{a}{b}", String::from_utf8(base).expect("digits"));
            if formatted {
                format!("{}.{}.{}-{}", &s[0..3], &s[3..6], &s[6..9], &s[9..11])
            } else {
                s
            }
        })
}

fn cnpj() -> impl Strategy<Value = String> {
    (
        proptest::collection::vec(prop_oneof![3 => 0u8..10, 1 => 10u8..36], 12),
        any::<bool>(),
    )
        .prop_filter("not all equal", |(d, _)| d.iter().any(|x| *x != d[0]))
        .prop_map(|(d, formatted)| {
            let base: Vec<u8> = d
                .iter()
                .map(|x| if *x < 10 { b'0' + x } else { b'A' + x - 10 })
                .collect();
            let (a, b) = cnpj_check_digits(&base).expect("12 chars");
            let s = format!("{}{a}{b}", String::from_utf8(base).expect("ascii"));
            if formatted {
                format!(
                    "{}.{}.{}/{}-{}",
                    &s[0..2],
                    &s[2..5],
                    &s[5..8],
                    &s[8..12],
                    &s[12..14]
                )
            } else {
                s
            }
        })
}

fn email() -> impl Strategy<Value = String> {
    (
        "[a-z0-9][a-z0-9._]{0,10}",
        "[a-z][a-z0-9]{1,10}",
        "(com|org|io|com\\.br|net)",
    )
        .prop_map(|(l, d, t)| format!("{l}@{d}.{t}"))
}

fn any_jwt() -> impl Strategy<Value = String> {
    (
        "[a-zA-Z]{1,8}",
        "[a-zA-Z0-9 ]{0,20}",
        "[A-Za-z0-9_-]{10,40}",
    )
        .prop_map(|(k, v, sig)| {
            let e =
                |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
            format!(
                "{}.{}.{sig}",
                e(json!({"alg": "HS256", "typ": "JWT"})),
                e(json!({ k: v }))
            )
        })
}

/// Text around a secret: anything, ending/starting with a separator so the secret is a
/// token of its own (letters are allowed right next to digit-only secrets below).
fn around() -> impl Strategy<Value = (String, String)> {
    (
        "[a-zA-Z ,;:{}\\[\\]\"'=_()]{0,24}",
        "[ ,;\"'\\])}]",
        "[ ,;\"'(\\[{]",
        "[a-zA-Z ,;:{}\\[\\]\"'=_()]{0,24}",
    )
        .prop_map(|(a, s1, s2, b)| (format!("{a}{s2}"), format!("{s1}{b}")))
}

/// True when a maximal run of digits in `s` is itself a valid CPF or CNPJ.
fn has_document_run(s: &str) -> bool {
    s.split(|c: char| !c.is_ascii_digit())
        .any(|run| cpf_valid(run.as_bytes()) || cnpj_valid(run.as_bytes()))
}

/// True when some run of space-separated groups (not the whole) is itself a valid card.
fn has_valid_card_window(s: &str) -> bool {
    let groups: Vec<&str> = s.split(' ').collect();
    (0..groups.len()).any(|i| {
        (i..groups.len()).any(|j| {
            (i, j) != (0, groups.len() - 1)
                && apm_capture::sanitize::checks::card_valid(groups[i..=j].concat().as_bytes())
        })
    })
}

fn digits_of(s: &str) -> String {
    s.chars().filter(char::is_ascii_digit).collect()
}

/// Sanitizes the secret in every place an exchange can hold it and returns everything that
/// would be written.
fn everywhere(secret_text: &str) -> Vec<String> {
    let s = shared();
    let mut stats = SanitizeStats::default();
    let mut outputs = vec![s.text(secret_text, &mut stats).into_owned()];
    let v = json!({"a": {"b": [secret_text, {"c": secret_text}]}, secret_text: 1});
    outputs.push(
        s.json(v.to_string().as_bytes(), &mut stats)
            .expect("valid JSON"),
    );
    let ex = exchange(
        vec![
            Header::new("X-Note", secret_text),
            Header::new("Content-Type", "text/plain"),
        ],
        &format!(
            "/p/{}/q",
            url::form_urlencoded::byte_serialize(secret_text.as_bytes()).collect::<String>()
        ),
        vec![("q", secret_text)],
        secret_text.as_bytes(),
        vec![Header::new("Content-Type", "application/octet-stream")],
        &[&[0xff, 0xfe][..], secret_text.as_bytes()].concat(),
    );
    let clean = s.sanitize(ex, &BodyLimits::default(), &mut stats);
    outputs.push(clean.path().to_string());
    outputs.push(format!("{:?}", clean.query()));
    outputs.extend(clean.request_headers().iter().map(|h| h.value.clone()));
    outputs.push(format!("{:?}", clean.request_body().content));
    if let BodyContent::Binary(b) = &clean.response_body().content {
        outputs.push(String::from_utf8_lossy(b).into_owned());
    } else {
        outputs.push(format!("{:?}", clean.response_body().content));
    }
    outputs
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn valid_cards_never_survive(c in card(), (pre, post) in around(), glue in any::<bool>()) {
        // Digit-only cards may sit right next to letters too.
        let t = if glue && !c.contains([' ', '-']) { format!("ab{c}cd") } else { format!("{pre}{c}{post}") };
        for out in everywhere(&t) {
            prop_assert!(!digits_of(&out).contains(&digits_of(&c)), "card survived in {out:?}");
        }
    }

    #[test]
    fn valid_documents_never_survive(d in prop_oneof![cpf(), cnpj()], (pre, post) in around()) {
        let t = format!("{pre}{d}{post}");
        let bare: String = d.chars().filter(char::is_ascii_alphanumeric).collect();
        for out in everywhere(&t) {
            let o: String = out.chars().filter(char::is_ascii_alphanumeric).collect();
            prop_assert!(!o.contains(&bare), "document survived in {out:?}");
        }
    }

    #[test]
    fn emails_and_jwts_never_survive(e in email(), j in any_jwt(), (pre, post) in around()) {
        let t = format!("{pre}{e}{post} and {pre}{j}{post}");
        for out in everywhere(&t) {
            prop_assert!(!out.contains(&e), "email survived in {out:?}");
            prop_assert!(!out.contains(&j[..20]), "jwt survived in {out:?}");
        }
    }

    #[test]
    fn luhn_failing_lookalikes_survive(c in card(), bump in 1u8..10) {
        let mut bytes = c.into_bytes();
        let last = bytes.len() - 1;
        bytes[last] = b'0' + (bytes[last] - b'0' + bump) % 10;
        let s = String::from_utf8(bytes).expect("ascii");
        prop_assume!(!has_document_run(&s));
        prop_assume!(!has_valid_card_window(&s), "a genuine card inside the look-alike");
        let t = format!("ref {s} end");
        prop_assert_eq!(text(&t).0, t);
    }

    #[test]
    fn document_lookalikes_survive(d in prop_oneof![cpf(), cnpj()], bump in 1u8..10) {
        let mut bytes = d.into_bytes();
        let last = bytes.len() - 1;
        bytes[last] = b'0' + (bytes[last] - b'0' + bump) % 10;
        let s = String::from_utf8(bytes).expect("ascii");
        let digits = digits_of(&s);
        prop_assume!(!luhn(digits.as_bytes()) || !(b'2'..=b'6').contains(&digits.as_bytes()[0]));
        // A digit run inside may form another valid document (1 in 100): sanitized by design.
        prop_assume!(!has_document_run(&s));
        let t = format!("doc {s} end");
        prop_assert_eq!(text(&t).0, t);
    }

    #[test]
    fn ids_timestamps_and_uuids_survive(
        order in "ORD-[0-9]{1,12}",
        n in 0u32..1_000_000,
        ms in 1_000_000_000_000u64..1_999_999_999_999,
        secs in 1_000_000_000u64..1_999_999_999,
        uuid in "[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}",
        y in 2000u32..2100, mo in 1u32..13, d in 1u32..29, h in 0u32..24, mi in 0u32..60, frac in 0u32..1_000_000,
    ) {
        let od = digits_of(&order);
        prop_assume!(
            !cpf_valid(od.as_bytes())
                && !cnpj_valid(od.as_bytes())
                && !apm_capture::sanitize::checks::card_valid(od.as_bytes()),
            "an id that is itself a valid document number is sanitized, by design"
        );
        let t = format!(
            r##"{{"order":"{order}","seq":"#{n}","ts":{ms},"epoch":"{secs}","id":"{uuid}","at":"{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:00.{frac:06}Z"}}"##
        );
        prop_assert_eq!(text(&t).0, t);
    }
}
