//! WireMock stub mappings, shaped like WireMock's own recorder output.
//!
//! Every mapping uses only fields WireMock 3.x accepts at the top level (`id`, `name`,
//! `request`, `response`, `metadata`, scenario fields); our bookkeeping lives under
//! `metadata.apm`.

use base64::Engine as _;
use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::dedupe::DedupeKey;
use crate::sanitize::{BodyContent, SanitizedBody, SanitizedExchange};

/// Response headers never copied into a stub: hop-by-hop headers, and the ones describing an
/// encoding or length that no longer applies once the body is decoded and re-served.
const DROPPED_RESPONSE_HEADERS: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "content-encoding",
];

/// A scenario position for one stub of a repeated request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScenarioStep {
    /// Scenario name (shared by all states of one request).
    pub name: String,
    /// State the scenario must be in for this stub to match.
    pub required_state: String,
    /// State to move to after serving, if any.
    pub new_state: Option<String>,
}

/// A generated mapping and the file name it should be written under.
#[derive(Clone, Debug, PartialEq)]
pub struct MappingFile {
    /// Suggested file name (`get-v1-orders-1a2b3c4d.json`), unique per stub id.
    pub file_name: String,
    /// The stub id.
    pub id: String,
    /// The mapping.
    pub mapping: Value,
}

impl MappingFile {
    /// Pretty JSON with a trailing newline.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Sized for a typical stub up front: growing from serde_json's default is mostly
        // copying.
        let mut out = Vec::with_capacity(16 * 1024);
        if serde_json::to_writer_pretty(&mut out, &self.mapping).is_err() {
            out.clear();
        }
        out.push(b'\n');
        out
    }
}

/// Builds the mapping for one sanitized exchange.
///
/// `fallback_time` is used as the capture time when the input did not record one.
pub fn mapping(
    ex: &SanitizedExchange,
    key: &DedupeKey,
    state_index: u32,
    scenario: Option<&ScenarioStep>,
    fallback_time: OffsetDateTime,
) -> MappingFile {
    mapping_owned(ex.clone(), key, state_index, scenario, fallback_time)
}

/// [`mapping`], consuming the exchange so bodies move into the mapping instead of being
/// copied.
pub fn mapping_owned(
    mut ex: SanitizedExchange,
    key: &DedupeKey,
    state_index: u32,
    scenario: Option<&ScenarioStep>,
    fallback_time: OffsetDateTime,
) -> MappingFile {
    let request_body = std::mem::replace(&mut ex.request_body.content, BodyContent::Empty);
    let response_body = std::mem::replace(&mut ex.response_body.content, BodyContent::Empty);
    let ex = &ex;
    let id = key.stub_id(state_index);
    let mut request = Map::new();
    request.insert("method".into(), json!(ex.method()));
    let path_has_marker = has_marker(ex.path());
    if path_has_marker {
        // A sanitized segment matches any segment: the stub stands for every request that
        // sanitizes to it (which is exactly what dedupe grouped together).
        request.insert(
            "urlPathPattern".into(),
            json!(marker_regex(ex.path(), "[^/]+")),
        );
    } else if ex.query().is_empty() {
        request.insert("url".into(), json!(ex.path()));
    } else {
        request.insert("urlPath".into(), json!(ex.path()));
    }
    if !ex.query().is_empty() {
        let mut params: Map<String, Value> = Map::new();
        let mut names: Vec<&str> = Vec::new();
        for (k, _) in ex.query() {
            if !names.contains(&k.as_str()) {
                names.push(k);
            }
        }
        for name in names {
            let values: Vec<&str> = ex
                .query()
                .iter()
                .filter(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
                .collect();
            let matcher = if values.len() == 1 {
                value_matcher(values[0])
            } else {
                json!({ "hasExactly": values.iter().map(|v| value_matcher(v)).collect::<Vec<_>>() })
            };
            params.insert(name.to_string(), matcher);
        }
        request.insert("queryParameters".into(), Value::Object(params));
    }
    if let Some(pattern) = body_pattern(request_body, ex.request_body()) {
        request.insert("bodyPatterns".into(), json!([pattern]));
    }

    let mut response = Map::new();
    response.insert("status".into(), json!(ex.status()));
    let headers = response_headers(ex);
    if !headers.is_empty() {
        response.insert("headers".into(), Value::Object(headers));
    }
    match response_body {
        BodyContent::Empty => {}
        BodyContent::Json(v) => {
            response.insert("jsonBody".into(), v);
        }
        BodyContent::Text(t) => {
            response.insert("body".into(), Value::String(t));
        }
        BodyContent::Binary(b) => {
            response.insert(
                "base64Body".into(),
                json!(base64::engine::general_purpose::STANDARD.encode(b)),
            );
        }
    }

    let captured = ex.captured_at().unwrap_or(fallback_time);
    let mut apm = Map::new();
    apm.insert(
        "source".into(),
        json!({
            "format": ex.source().format.as_str(),
            "file": ex.source().file,
            "position": ex.source().position,
        }),
    );
    apm.insert("dedupeKey".into(), json!(key.hex()));
    apm.insert(
        "capturedAt".into(),
        json!(captured.format(&Rfc3339).unwrap_or_default()),
    );
    if let Some(host) = ex.host() {
        apm.insert("host".into(), json!(host));
    }
    for (name, body) in [
        ("requestBody", ex.request_body()),
        ("responseBody", ex.response_body()),
    ] {
        if body.truncated {
            apm.insert(format!("{name}Truncated"), json!(true));
        }
        if let Some(note) = body.note {
            apm.insert(format!("{name}Note"), json!(note));
        }
    }

    let mut m = Map::new();
    m.insert("id".into(), json!(id));
    m.insert(
        "name".into(),
        json!(format!("{} {}", ex.method(), ex.path())),
    );
    m.insert("request".into(), Value::Object(request));
    m.insert("response".into(), Value::Object(response));
    if let Some(s) = scenario {
        m.insert("scenarioName".into(), json!(s.name));
        m.insert("requiredScenarioState".into(), json!(s.required_state));
        if let Some(next) = &s.new_state {
            m.insert("newScenarioState".into(), json!(next));
        }
    }
    m.insert("metadata".into(), json!({ "apm": apm }));

    MappingFile {
        file_name: file_name(ex.method(), ex.path(), &id),
        id,
        mapping: Value::Object(m),
    }
}

/// Replacement markers start with this; values holding one are matched by pattern.
const MARKER: &str = "SANITIZED_";

fn has_marker(s: &str) -> bool {
    s.contains(MARKER)
}

/// A regex for a sanitized value: literal parts escaped, each marker matching `any`.
/// (Java's regex accepts the escapes `regex::escape` produces.)
pub fn marker_regex(s: &str, any: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find(MARKER) {
        out.push_str(&regex::escape(&rest[..i]));
        out.push_str(any);
        let tail = &rest[i + MARKER.len()..];
        let end = tail
            .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        rest = &tail[end..];
    }
    out.push_str(&regex::escape(rest));
    out
}

fn value_matcher(v: &str) -> Value {
    if has_marker(v) {
        json!({ "matches": marker_regex(v, ".+?") })
    } else {
        json!({ "equalTo": v })
    }
}

/// Replaces sanitized JSON values with JsonUnit placeholders (`equalToJson` with
/// `enablePlaceholders`), so a request that sanitizes to this body matches it. Returns
/// whether any placeholder was used.
fn placeholders(v: &mut Value) -> bool {
    match v {
        Value::String(s) if has_marker(s) => {
            *v = if s.starts_with(MARKER) && marker_regex(s, "").is_empty() {
                json!("${json-unit.ignore}")
            } else {
                json!(format!("${{json-unit.regex}}{}", marker_regex(s, ".+?")))
            };
            true
        }
        Value::Array(items) => items.iter_mut().fold(false, |acc, i| placeholders(i) | acc),
        Value::Object(m) => m.values_mut().fold(false, |acc, i| placeholders(i) | acc),
        _ => false,
    }
}

/// The request body matcher, or `None` for empty or truncated bodies (a partial body must
/// never become an exact matcher: the real request would not equal it).
fn body_pattern(content: BodyContent, body: &SanitizedBody) -> Option<Value> {
    if body.truncated {
        return None;
    }
    Some(match content {
        BodyContent::Empty => return None,
        BodyContent::Json(v) => {
            let mut expected = v;
            if placeholders(&mut expected) {
                json!({
                    "equalToJson": expected,
                    "ignoreArrayOrder": true,
                    "ignoreExtraElements": true,
                    "enablePlaceholders": true,
                })
            } else {
                json!({
                    "equalToJson": expected,
                    "ignoreArrayOrder": true,
                    "ignoreExtraElements": true,
                })
            }
        }
        BodyContent::Text(t) if has_marker(&t) => json!({ "matches": marker_regex(&t, ".+?") }),
        BodyContent::Text(t) => json!({ "equalTo": t }),
        BodyContent::Binary(b) => json!({
            "binaryEqualTo": base64::engine::general_purpose::STANDARD.encode(b)
        }),
    })
}

fn response_headers(ex: &SanitizedExchange) -> Map<String, Value> {
    let mut order: Vec<String> = Vec::new();
    let mut values: Vec<Vec<String>> = Vec::new();
    for h in ex.response_headers() {
        let lower = h.name.to_ascii_lowercase();
        if DROPPED_RESPONSE_HEADERS.contains(&lower.as_str()) {
            continue;
        }
        match order.iter().position(|n| n.eq_ignore_ascii_case(&h.name)) {
            Some(i) => values[i].push(h.value.clone()),
            None => {
                order.push(h.name.clone());
                values.push(vec![h.value.clone()]);
            }
        }
    }
    order
        .into_iter()
        .zip(values)
        .map(|(name, mut vals)| {
            let v = if vals.len() == 1 {
                json!(vals.remove(0))
            } else {
                json!(vals)
            };
            (name, v)
        })
        .collect()
}

/// `get-v1-orders-1a2b3c4d.json`: readable, filesystem-safe, unique through the id.
pub fn file_name(method: &str, path: &str, id: &str) -> String {
    let mut slug = String::new();
    for c in path.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_alphanumeric() {
            slug.push(c);
        } else if !slug.ends_with('-') {
            slug.push('-');
        }
        if slug.len() >= 60 {
            break;
        }
    }
    let slug = slug.trim_matches('-');
    let slug = if slug.is_empty() { "root" } else { slug };
    format!(
        "{}-{}-{}.json",
        method.to_ascii_lowercase(),
        slug,
        id.get(..8).unwrap_or(id)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_regexes() {
        assert_eq!(marker_regex("/u/SANITIZED_EMAIL/o", "[^/]+"), "/u/[^/]+/o");
        assert_eq!(marker_regex("a.b SANITIZED_CARD_X!", ".+?"), r"a\.b .+?!");
        assert_eq!(marker_regex("plain", ".+?"), "plain");
        let mut v = json!({"a": "SANITIZED_EMAIL", "b": ["x SANITIZED_PHONE"], "c": 1});
        assert!(placeholders(&mut v));
        assert_eq!(
            v,
            json!({"a": "${json-unit.ignore}", "b": ["${json-unit.regex}x .+?"], "c": 1})
        );
    }

    #[test]
    fn file_names_are_safe() {
        assert_eq!(
            file_name("GET", "/v1/orders/SANITIZED_EMAIL", "1a2b3c4d-xxxx"),
            "get-v1-orders-sanitized-email-1a2b3c4d.json"
        );
        assert_eq!(
            file_name("POST", "/", "abcdef012"),
            "post-root-abcdef01.json"
        );
        assert_eq!(
            file_name("GET", "/../../etc/passwd", "0123456789"),
            "get-etc-passwd-01234567.json"
        );
    }
}
