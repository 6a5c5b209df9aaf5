//! The WireMock mapping subset `apm mock serve` understands, compiled for fast matching.
//!
//! Anything outside the subset is rejected with an error naming the field, rather than being
//! silently ignored: a stub that would match differently here than in WireMock is worse than
//! no stub.

use std::collections::HashMap;

use base64::Engine as _;
use bytes::Bytes;
use regex::Regex;
use serde_json::{Map, Value};

/// Why a mapping was rejected. The message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct StubError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, StubError> {
    Err(StubError(msg.into()))
}

const TOP_LEVEL: &[&str] = &[
    "id",
    "uuid",
    "name",
    "priority",
    "persistent",
    "request",
    "response",
    "metadata",
    "scenarioName",
    "requiredScenarioState",
    "newScenarioState",
    "insertionIndex",
];

/// A string matcher (`equalTo`, `contains`, `matches`, `doesNotMatch`, `absent`,
/// `hasExactly`, `includes`).
#[derive(Debug, Clone)]
pub enum StringMatcher {
    /// Exact (optionally case-insensitive) equality.
    EqualTo(String, bool),
    /// Substring.
    Contains(String),
    /// Whole-string regex.
    Matches(Regex),
    /// Whole-string regex must not match.
    DoesNotMatch(Regex),
    /// The parameter/header must be absent.
    Absent,
    /// All values, and only them, each matched by one of the matchers.
    HasExactly(Vec<StringMatcher>),
    /// Each matcher matches at least one value.
    Includes(Vec<StringMatcher>),
}

fn whole(re: &str, field: &str) -> Result<Regex, StubError> {
    Regex::new(&format!("^(?:{re})$"))
        .map_err(|e| StubError(format!("{field}: invalid regex: {e}")))
}

impl StringMatcher {
    fn parse(v: &Value, field: &str) -> Result<Self, StubError> {
        let Some(m) = v.as_object() else {
            return err(format!(
                "{field}: a matcher must be an object like {{\"equalTo\": …}}"
            ));
        };
        let ci = m
            .get("caseInsensitive")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let str_of = |k: &str| -> Result<String, StubError> {
            m.get(k)
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| StubError(format!("{field}.{k} must be a string")))
        };
        let list = |k: &str| -> Result<Vec<StringMatcher>, StubError> {
            m.get(k)
                .and_then(Value::as_array)
                .ok_or_else(|| StubError(format!("{field}.{k} must be a list of matchers")))?
                .iter()
                .map(|x| StringMatcher::parse(x, &format!("{field}.{k}")))
                .collect()
        };
        if m.contains_key("equalTo") {
            Ok(StringMatcher::EqualTo(str_of("equalTo")?, ci))
        } else if m.contains_key("contains") {
            Ok(StringMatcher::Contains(str_of("contains")?))
        } else if m.contains_key("matches") {
            Ok(StringMatcher::Matches(whole(&str_of("matches")?, field)?))
        } else if m.contains_key("doesNotMatch") {
            Ok(StringMatcher::DoesNotMatch(whole(
                &str_of("doesNotMatch")?,
                field,
            )?))
        } else if m.contains_key("absent") {
            Ok(StringMatcher::Absent)
        } else if m.contains_key("hasExactly") {
            Ok(StringMatcher::HasExactly(list("hasExactly")?))
        } else if m.contains_key("includes") {
            Ok(StringMatcher::Includes(list("includes")?))
        } else {
            let keys: Vec<&String> = m.keys().collect();
            err(format!(
                "{field}: unsupported matcher {keys:?} (supported: equalTo, contains, matches, doesNotMatch, absent, hasExactly, includes)"
            ))
        }
    }

    fn one(&self, s: &str) -> bool {
        match self {
            StringMatcher::EqualTo(e, false) => e == s,
            StringMatcher::EqualTo(e, true) => e.to_lowercase() == s.to_lowercase(),
            StringMatcher::Contains(c) => s.contains(c.as_str()),
            StringMatcher::Matches(r) => r.is_match(s),
            StringMatcher::DoesNotMatch(r) => !r.is_match(s),
            StringMatcher::Absent => false,
            StringMatcher::HasExactly(_) | StringMatcher::Includes(_) => false,
        }
    }

    /// Matches the values a request has for one name (empty when absent).
    pub fn matches_values(&self, values: &[&str]) -> bool {
        match self {
            StringMatcher::Absent => values.is_empty(),
            StringMatcher::HasExactly(ms) => {
                values.len() == ms.len()
                    && ms.iter().all(|m| values.iter().any(|v| m.one(v)))
                    && values.iter().all(|v| ms.iter().any(|m| m.one(v)))
            }
            StringMatcher::Includes(ms) => ms.iter().all(|m| values.iter().any(|v| m.one(v))),
            StringMatcher::DoesNotMatch(_) => values.iter().all(|v| self.one(v)),
            _ => values.iter().any(|v| self.one(v)),
        }
    }
}

/// A body matcher.
#[derive(Debug, Clone)]
pub enum BodyMatcher {
    /// Semantic JSON equality.
    EqualToJson {
        /// Expected document.
        expected: Value,
        /// Arrays may be in any order.
        ignore_array_order: bool,
        /// Extra object fields / array elements in the request are fine.
        ignore_extra_elements: bool,
        /// JsonUnit placeholders (`${json-unit.ignore}`, `${json-unit.regex}…`, …) compiled,
        /// when `enablePlaceholders` is set.
        placeholders: Option<HashMap<String, Regex>>,
    },
    /// Exact text.
    EqualTo(String, bool),
    /// Substring.
    Contains(String),
    /// Whole-body regex.
    Matches(Regex),
    /// Exact bytes.
    BinaryEqualTo(Vec<u8>),
}

impl BodyMatcher {
    fn parse(v: &Value, field: &str) -> Result<Self, StubError> {
        let Some(m) = v.as_object() else {
            return err(format!("{field} must be an object"));
        };
        if let Some(j) = m.get("equalToJson") {
            let expected = match j {
                Value::String(s) => serde_json::from_str(s).map_err(|e| {
                    StubError(format!("{field}.equalToJson is a string but not JSON: {e}"))
                })?,
                other => other.clone(),
            };
            let placeholders = if m.get("enablePlaceholders").and_then(Value::as_bool) == Some(true)
            {
                let mut res = HashMap::new();
                collect_placeholder_regexes(&expected, &mut res, field)?;
                Some(res)
            } else {
                None
            };
            return Ok(BodyMatcher::EqualToJson {
                expected,
                placeholders,
                ignore_array_order: m
                    .get("ignoreArrayOrder")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
                ignore_extra_elements: m
                    .get("ignoreExtraElements")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
            });
        }
        let s = |k: &str| -> Result<String, StubError> {
            m.get(k)
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| StubError(format!("{field}.{k} must be a string")))
        };
        if m.contains_key("equalTo") {
            let ci = m
                .get("caseInsensitive")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            Ok(BodyMatcher::EqualTo(s("equalTo")?, ci))
        } else if m.contains_key("contains") {
            Ok(BodyMatcher::Contains(s("contains")?))
        } else if m.contains_key("matches") {
            Ok(BodyMatcher::Matches(
                Regex::new(&format!("(?s)^(?:{})$", s("matches")?))
                    .map_err(|e| StubError(format!("{field}.matches: invalid regex: {e}")))?,
            ))
        } else if m.contains_key("binaryEqualTo") {
            let b = base64::engine::general_purpose::STANDARD
                .decode(s("binaryEqualTo")?.as_bytes())
                .map_err(|_| StubError(format!("{field}.binaryEqualTo is not base64")))?;
            Ok(BodyMatcher::BinaryEqualTo(b))
        } else {
            let keys: Vec<&String> = m.keys().collect();
            err(format!(
                "{field}: unsupported body pattern {keys:?} (supported: equalToJson, equalTo, contains, matches, binaryEqualTo)"
            ))
        }
    }

    fn matches(&self, body: &[u8]) -> bool {
        match self {
            BodyMatcher::EqualToJson {
                expected,
                ignore_array_order,
                ignore_extra_elements,
                placeholders,
            } => match serde_json::from_slice::<Value>(body) {
                Ok(actual) => json_eq_with(
                    expected,
                    &actual,
                    *ignore_array_order,
                    *ignore_extra_elements,
                    placeholders.as_ref(),
                ),
                Err(_) => false,
            },
            BodyMatcher::EqualTo(e, ci) => match std::str::from_utf8(body) {
                Ok(s) if *ci => s.to_lowercase() == e.to_lowercase(),
                Ok(s) => s == e,
                Err(_) => false,
            },
            BodyMatcher::Contains(c) => {
                std::str::from_utf8(body).is_ok_and(|s| s.contains(c.as_str()))
            }
            BodyMatcher::Matches(r) => std::str::from_utf8(body).is_ok_and(|s| r.is_match(s)),
            BodyMatcher::BinaryEqualTo(b) => body == b.as_slice(),
        }
    }
}

const REGEX_PLACEHOLDER: &str = "${json-unit.regex}";

fn collect_placeholder_regexes(
    v: &Value,
    out: &mut HashMap<String, Regex>,
    field: &str,
) -> Result<(), StubError> {
    match v {
        Value::String(s) => {
            if let Some(re) = s.strip_prefix(REGEX_PLACEHOLDER) {
                let compiled = whole(re, &format!("{field}.equalToJson placeholder"))?;
                out.insert(s.clone(), compiled);
            }
        }
        Value::Array(items) => {
            for i in items {
                collect_placeholder_regexes(i, out, field)?;
            }
        }
        Value::Object(m) => {
            for i in m.values() {
                collect_placeholder_regexes(i, out, field)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// JSON equality in WireMock's `equalToJson` sense.
pub fn json_eq(expected: &Value, actual: &Value, iao: bool, iee: bool) -> bool {
    json_eq_with(expected, actual, iao, iee, None)
}

/// JSON equality with optional JsonUnit placeholders.
pub fn json_eq_with(
    expected: &Value,
    actual: &Value,
    iao: bool,
    iee: bool,
    ph: Option<&HashMap<String, Regex>>,
) -> bool {
    if let (Some(ph), Value::String(e)) = (ph, expected)
        && e.starts_with("${json-unit.")
    {
        match e.as_str() {
            "${json-unit.ignore}" => return true,
            "${json-unit.any-string}" => return actual.is_string(),
            "${json-unit.any-number}" => return actual.is_number(),
            "${json-unit.any-boolean}" => return actual.is_boolean(),
            _ => {
                if let Some(re) = ph.get(e) {
                    return actual.as_str().is_some_and(|a| re.is_match(a));
                }
            }
        }
    }
    let json_eq = |e: &Value, a: &Value, iao: bool, iee: bool| json_eq_with(e, a, iao, iee, ph);
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            (iee || e.len() == a.len())
                && e.iter()
                    .all(|(k, ev)| a.get(k).is_some_and(|av| json_eq(ev, av, iao, iee)))
        }
        (Value::Array(e), Value::Array(a)) => {
            if !iee && e.len() != a.len() || e.len() > a.len() {
                return false;
            }
            if iao {
                let mut used = vec![false; a.len()];
                e.iter().all(|ev| {
                    match (0..a.len()).find(|&i| !used[i] && json_eq(ev, &a[i], iao, iee)) {
                        Some(i) => {
                            used[i] = true;
                            true
                        }
                        None => false,
                    }
                })
            } else {
                e.iter().zip(a).all(|(ev, av)| json_eq(ev, av, iao, iee))
            }
        }
        (Value::Number(e), Value::Number(a)) => e == a || e.as_f64() == a.as_f64(),
        (e, a) => e == a,
    }
}

/// How the URL is matched.
#[derive(Debug, Clone)]
pub enum UrlMatch {
    /// `url`: path and query, exactly as sent.
    Url(String),
    /// `urlPath`: path exactly.
    UrlPath(String),
    /// `urlPattern`: regex over path and query.
    UrlPattern(Regex),
    /// `urlPathPattern`: regex over the path.
    UrlPathPattern(Regex),
    /// No URL matcher: any URL.
    Any,
}

impl UrlMatch {
    /// The exact path this matcher needs, when it needs one: what the index is keyed by.
    pub fn exact_path(&self) -> Option<&str> {
        match self {
            UrlMatch::Url(u) => Some(u.split('?').next().unwrap_or(u)),
            UrlMatch::UrlPath(p) => Some(p),
            _ => None,
        }
    }
}

/// A precomputed response.
#[derive(Debug, Clone)]
pub struct StubResponse {
    /// Status code.
    pub status: u16,
    /// Headers in order.
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Bytes,
    /// Delay before answering.
    pub delay_ms: u64,
}

/// Scenario fields of a stub.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Scenario name.
    pub name: String,
    /// Required state (None: any state).
    pub required: Option<String>,
    /// State after serving.
    pub new_state: Option<String>,
}

/// A compiled stub.
#[derive(Debug, Clone)]
pub struct Stub {
    /// Stub id (UUID string).
    pub id: String,
    /// The mapping as given (with `id` set), for the admin API.
    pub mapping: Value,
    /// Priority: 1 is highest; default 5.
    pub priority: i64,
    /// Upper-case method, or None for `ANY`.
    pub method: Option<String>,
    /// URL matcher.
    pub url: UrlMatch,
    /// Query parameter matchers.
    pub query: Vec<(String, StringMatcher)>,
    /// Header matchers (names lower-case).
    pub headers: Vec<(String, StringMatcher)>,
    /// Body matchers (all must match).
    pub body: Vec<BodyMatcher>,
    /// Scenario, if any.
    pub scenario: Option<Scenario>,
    /// The response.
    pub response: StubResponse,
}

/// The parts of a request the matcher looks at.
pub struct RequestView<'a> {
    /// Method, upper-case.
    pub method: &'a str,
    /// Raw path (percent-encoded).
    pub path: &'a str,
    /// Raw query string, if any.
    pub raw_query: Option<&'a str>,
    /// Decoded query parameters.
    pub query: &'a HashMap<String, Vec<String>>,
    /// Headers, names lower-case.
    pub headers: &'a HashMap<String, Vec<String>>,
    /// Body bytes.
    pub body: &'a [u8],
}

fn values<'a>(map: &'a HashMap<String, Vec<String>>, name: &str) -> Vec<&'a str> {
    map.get(name)
        .map(|v| v.iter().map(String::as_str).collect())
        .unwrap_or_default()
}

impl Stub {
    /// True when everything but the scenario state matches.
    pub fn matches(&self, r: &RequestView<'_>) -> bool {
        if let Some(m) = &self.method
            && m != r.method
        {
            return false;
        }
        let url_ok = match &self.url {
            UrlMatch::Url(u) => match r.raw_query {
                Some(q) => {
                    u.len() == r.path.len() + 1 + q.len()
                        && u.starts_with(r.path)
                        && u[r.path.len()..].starts_with('?')
                        && &u[r.path.len() + 1..] == q
                }
                None => u == r.path,
            },
            UrlMatch::UrlPath(p) => p == r.path,
            UrlMatch::UrlPattern(re) => match r.raw_query {
                Some(q) => re.is_match(&format!("{}?{q}", r.path)),
                None => re.is_match(r.path),
            },
            UrlMatch::UrlPathPattern(re) => re.is_match(r.path),
            UrlMatch::Any => true,
        };
        url_ok
            && self
                .query
                .iter()
                .all(|(k, m)| m.matches_values(&values(r.query, k)))
            && self
                .headers
                .iter()
                .all(|(k, m)| m.matches_values(&values(r.headers, k)))
            && self.body.iter().all(|b| b.matches(r.body))
    }

    /// Parses and compiles a mapping. A missing id gets `fresh_id()`.
    pub fn parse(mut mapping: Value, fresh_id: impl FnOnce() -> String) -> Result<Stub, StubError> {
        let Some(top) = mapping.as_object_mut() else {
            return err("a mapping must be a JSON object");
        };
        for k in top.keys() {
            if !TOP_LEVEL.contains(&k.as_str()) {
                return err(format!("unsupported top-level field '{k}'"));
            }
        }
        let id = match top.get("id").or_else(|| top.get("uuid")) {
            Some(Value::String(s)) if is_uuid(s) => s.to_ascii_lowercase(),
            Some(_) => return err("id must be a UUID string"),
            None => fresh_id(),
        };
        top.insert("id".into(), Value::String(id.clone()));
        top.remove("uuid");
        let priority = match top.get("priority") {
            None | Some(Value::Null) => 5,
            Some(v) => v
                .as_i64()
                .ok_or_else(|| StubError("priority must be an integer".into()))?,
        };
        let request = top
            .get("request")
            .and_then(Value::as_object)
            .ok_or_else(|| StubError("request is missing or not an object".into()))?;
        let (method, url, query, headers, body) = parse_request(request)?;
        let response = parse_response(
            top.get("response")
                .and_then(Value::as_object)
                .ok_or_else(|| StubError("response is missing or not an object".into()))?,
        )?;
        let scenario = match top.get("scenarioName") {
            None | Some(Value::Null) => None,
            Some(Value::String(name)) => Some(Scenario {
                name: name.clone(),
                required: top
                    .get("requiredScenarioState")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                new_state: top
                    .get("newScenarioState")
                    .and_then(Value::as_str)
                    .map(str::to_string),
            }),
            Some(_) => return err("scenarioName must be a string"),
        };
        Ok(Stub {
            id,
            mapping,
            priority,
            method,
            url,
            query,
            headers,
            body,
            scenario,
            response,
        })
    }
}

type RequestParts = (
    Option<String>,
    UrlMatch,
    Vec<(String, StringMatcher)>,
    Vec<(String, StringMatcher)>,
    Vec<BodyMatcher>,
);

fn parse_request(r: &Map<String, Value>) -> Result<RequestParts, StubError> {
    const KNOWN: &[&str] = &[
        "method",
        "url",
        "urlPath",
        "urlPattern",
        "urlPathPattern",
        "queryParameters",
        "headers",
        "bodyPatterns",
    ];
    for k in r.keys() {
        if !KNOWN.contains(&k.as_str()) {
            return err(format!(
                "request.{k} is not supported by apm mock serve (supported: {})",
                KNOWN.join(", ")
            ));
        }
    }
    let method = match r.get("method") {
        None | Some(Value::Null) => None,
        Some(Value::String(m)) if m.eq_ignore_ascii_case("ANY") => None,
        Some(Value::String(m)) if !m.is_empty() && m.bytes().all(|b| b.is_ascii_alphabetic()) => {
            Some(m.to_ascii_uppercase())
        }
        Some(_) => return err("request.method must be a method name or ANY"),
    };
    let url_keys: Vec<&str> = ["url", "urlPath", "urlPattern", "urlPathPattern"]
        .into_iter()
        .filter(|k| r.contains_key(*k))
        .collect();
    if url_keys.len() > 1 {
        return err(format!(
            "request has more than one URL matcher: {url_keys:?}"
        ));
    }
    let s = |k: &str| -> Result<String, StubError> {
        r.get(k)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| StubError(format!("request.{k} must be a string")))
    };
    let url = match url_keys.first().copied() {
        Some("url") => UrlMatch::Url(s("url")?),
        Some("urlPath") => UrlMatch::UrlPath(s("urlPath")?),
        Some("urlPattern") => UrlMatch::UrlPattern(whole(&s("urlPattern")?, "request.urlPattern")?),
        Some("urlPathPattern") => {
            UrlMatch::UrlPathPattern(whole(&s("urlPathPattern")?, "request.urlPathPattern")?)
        }
        _ => UrlMatch::Any,
    };
    let named = |k: &str, lower: bool| -> Result<Vec<(String, StringMatcher)>, StubError> {
        match r.get(k) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Object(m)) => m
                .iter()
                .map(|(name, v)| {
                    let key = if lower {
                        name.to_ascii_lowercase()
                    } else {
                        name.clone()
                    };
                    Ok((
                        key,
                        StringMatcher::parse(v, &format!("request.{k}.{name}"))?,
                    ))
                })
                .collect(),
            Some(_) => err(format!("request.{k} must be an object")),
        }
    };
    let query = named("queryParameters", false)?;
    let headers = named("headers", true)?;
    let body = match r.get("bodyPatterns") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(list)) => list
            .iter()
            .enumerate()
            .map(|(i, b)| BodyMatcher::parse(b, &format!("request.bodyPatterns[{i}]")))
            .collect::<Result<_, _>>()?,
        Some(_) => return err("request.bodyPatterns must be a list"),
    };
    Ok((method, url, query, headers, body))
}

fn parse_response(r: &Map<String, Value>) -> Result<StubResponse, StubError> {
    const KNOWN: &[&str] = &[
        "status",
        "statusMessage",
        "headers",
        "body",
        "jsonBody",
        "base64Body",
        "fixedDelayMilliseconds",
    ];
    for k in r.keys() {
        if !KNOWN.contains(&k.as_str()) {
            return err(format!(
                "response.{k} is not supported by apm mock serve (supported: {})",
                KNOWN.join(", ")
            ));
        }
    }
    let status = match r.get("status") {
        None => 200,
        Some(v) => v
            .as_u64()
            .and_then(|s| u16::try_from(s).ok())
            .filter(|s| (100..=599).contains(s))
            .ok_or_else(|| StubError("response.status must be a status code 100-599".into()))?,
    };
    let mut headers = Vec::new();
    match r.get("headers") {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) => {
            for (name, v) in m {
                match v {
                    Value::String(s) => headers.push((name.clone(), s.clone())),
                    Value::Array(list) => {
                        for item in list {
                            let s = item.as_str().ok_or_else(|| {
                                StubError(format!(
                                    "response.headers.{name}: values must be strings"
                                ))
                            })?;
                            headers.push((name.clone(), s.to_string()));
                        }
                    }
                    _ => {
                        return err(format!(
                            "response.headers.{name} must be a string or a list of strings"
                        ));
                    }
                }
            }
        }
        Some(_) => return err("response.headers must be an object"),
    }
    let bodies: Vec<&str> = ["body", "jsonBody", "base64Body"]
        .into_iter()
        .filter(|k| r.contains_key(*k))
        .collect();
    if bodies.len() > 1 {
        return err(format!("response has more than one body: {bodies:?}"));
    }
    let body = match bodies.first().copied() {
        Some("body") => Bytes::from(
            r.get("body")
                .and_then(Value::as_str)
                .ok_or_else(|| StubError("response.body must be a string".into()))?
                .to_string(),
        ),
        Some("jsonBody") => Bytes::from(serde_json::to_vec(&r["jsonBody"]).unwrap_or_default()),
        Some("base64Body") => Bytes::from(
            base64::engine::general_purpose::STANDARD
                .decode(
                    r.get("base64Body")
                        .and_then(Value::as_str)
                        .ok_or_else(|| StubError("response.base64Body must be a string".into()))?
                        .as_bytes(),
                )
                .map_err(|_| StubError("response.base64Body is not base64".into()))?,
        ),
        _ => Bytes::new(),
    };
    let delay_ms = match r.get("fixedDelayMilliseconds") {
        None | Some(Value::Null) => 0,
        Some(v) => v
            .as_u64()
            .filter(|d| *d <= 600_000)
            .ok_or_else(|| StubError("response.fixedDelayMilliseconds must be 0-600000".into()))?,
    };
    Ok(StubResponse {
        status,
        headers,
        body,
        delay_ms,
    })
}

/// True for the 8-4-4-4-12 hex form Java's `UUID.fromString` accepts from our tools.
pub fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_equality_modes() {
        let e = json!({"a": [1, 2], "b": {"c": 1}});
        assert!(json_eq(
            &e,
            &json!({"b": {"c": 1.0}, "a": [1, 2]}),
            false,
            false
        ));
        assert!(!json_eq(
            &e,
            &json!({"a": [2, 1], "b": {"c": 1}}),
            false,
            false
        ));
        assert!(json_eq(
            &e,
            &json!({"a": [2, 1], "b": {"c": 1}}),
            true,
            false
        ));
        assert!(!json_eq(
            &e,
            &json!({"a": [1, 2], "b": {"c": 1}, "x": 0}),
            true,
            false
        ));
        assert!(json_eq(
            &e,
            &json!({"a": [1, 2, 3], "b": {"c": 1, "d": 2}, "x": 0}),
            true,
            true
        ));
        assert!(!json_eq(&e, &json!({"a": [1], "b": {"c": 1}}), true, true));
    }

    #[test]
    fn unknown_fields_are_rejected_with_their_name() {
        let e = Stub::parse(
            json!({"request": {"url": "/"}, "response": {}, "extra": 1}),
            || "x".into(),
        )
        .err();
        assert_eq!(
            e,
            Some(StubError("unsupported top-level field 'extra'".into()))
        );
        let e = Stub::parse(
            json!({"request": {"url": "/", "cookies": {}}, "response": {}}),
            || "x".into(),
        )
        .err()
        .map(|e| e.0)
        .unwrap_or_default();
        assert!(e.starts_with("request.cookies is not supported"), "{e}");
    }

    #[test]
    fn multi_value_matchers() {
        let m = StringMatcher::parse(
            &json!({"hasExactly": [{"equalTo": "1"}, {"equalTo": "2"}]}),
            "q",
        )
        .expect("matcher");
        assert!(m.matches_values(&["2", "1"]));
        assert!(!m.matches_values(&["1"]));
        assert!(!m.matches_values(&["1", "2", "3"]));
        let a = StringMatcher::Absent;
        assert!(a.matches_values(&[]));
        assert!(!a.matches_values(&["x"]));
    }
}
