//! WireMock stub mappings, shaped like WireMock's own recorder output.
//!
//! Every mapping uses only fields WireMock 3.x accepts at the top level (`id`, `name`,
//! `request`, `response`, `metadata`, scenario fields); our bookkeeping lives under
//! `metadata.apm`.

use std::borrow::Cow;
use std::io::Write as _;

use base64::Engine as _;
use serde_json::Value;
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
    /// The file's bytes: pretty JSON with a trailing newline; bodies are embedded as the
    /// sanitizer wrote them (compact), never re-serialised.
    bytes: Vec<u8>,
}

impl MappingFile {
    /// The file's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The mapping as a `serde_json::Value` (for inspection; writing uses [`Self::bytes`]).
    pub fn to_value(&self) -> Value {
        serde_json::from_slice(&self.bytes).unwrap_or(Value::Null)
    }
}

fn write_str(out: &mut Vec<u8>, v: &str) {
    // serde_json escapes only control characters, `"` and `\\`; most strings of a mapping
    // (member names, ids, paths, header values) hold none and are copied as they are.
    if !needs_escape(v.as_bytes()) {
        out.reserve(v.len() + 2);
        out.push(b'"');
        out.extend_from_slice(v.as_bytes());
        out.push(b'"');
    } else {
        // Writing a str into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, v);
    }
}

/// Whether `v` holds a byte serde_json escapes (control characters, `"`, `\\`), eight
/// bytes at a time.
fn needs_escape(v: &[u8]) -> bool {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    // Non-zero exactly when some byte of the word is below `n` (n <= 128).
    let below = |x: u64, n: u8| x.wrapping_sub(LO * u64::from(n)) & !x & HI;
    let word = |x: u64| {
        below(x, 0x20)
            | below(x ^ (LO * u64::from(b'"')), 1)
            | below(x ^ (LO * u64::from(b'\\')), 1)
            != 0
    };
    let mut chunks = v.chunks_exact(8);
    for c in &mut chunks {
        let mut b = [0u8; 8];
        b.copy_from_slice(c);
        if word(u64::from_le_bytes(b)) {
            return true;
        }
    }
    chunks
        .remainder()
        .iter()
        .any(|&b| b < 0x20 || b == b'"' || b == b'\\')
}

fn indent(out: &mut Vec<u8>, depth: usize) {
    // A newline and up to 31 levels of indentation in one copy (mappings nest 8 deep).
    const NEWLINE_AND_SPACES: &[u8; 63] =
        b"\n                                                              ";
    match NEWLINE_AND_SPACES.get(..1 + 2 * depth) {
        Some(run) => out.extend_from_slice(run),
        None => {
            out.push(b'\n');
            out.resize(out.len() + 2 * depth, b' ');
        }
    }
}

/// serde_json's pretty layout (two spaces, `"key": value`), written while the mapping is
/// walked: no intermediate tree. Members are written in sorted order by the caller (WireMock
/// and serde_json's default map keep them sorted), so files read the same as before.
struct Pretty {
    out: Vec<u8>,
    depth: usize,
    /// Nothing written yet in the innermost open object or array.
    first: bool,
}

impl Pretty {
    fn open(&mut self, bracket: u8) {
        self.out.push(bracket);
        self.depth += 1;
        self.first = true;
    }

    fn close(&mut self, bracket: u8) {
        self.depth -= 1;
        if !self.first {
            indent(&mut self.out, self.depth);
        }
        self.out.push(bracket);
        self.first = false;
    }

    /// Starts an array element.
    fn item(&mut self) {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        indent(&mut self.out, self.depth);
    }

    /// Starts an object member named by data (escaped as needed).
    fn key(&mut self, k: &str) {
        self.item();
        write_str(&mut self.out, k);
        self.out.extend_from_slice(b": ");
    }

    /// Starts an object member with one of our own names (plain ASCII: nothing to escape).
    fn lit(&mut self, k: &'static str) {
        debug_assert!(!needs_escape(k.as_bytes()));
        self.item();
        self.out.push(b'"');
        self.out.extend_from_slice(k.as_bytes());
        self.out.extend_from_slice(b"\": ");
    }

    fn str(&mut self, k: &'static str, v: &str) {
        self.lit(k);
        write_str(&mut self.out, v);
    }

    fn raw(&mut self, k: &'static str, v: &[u8]) {
        self.lit(k);
        self.out.extend_from_slice(v);
    }

    fn bool(&mut self, k: &'static str, v: bool) {
        self.raw(k, if v { &b"true"[..] } else { &b"false"[..] });
    }

    /// `{"<k>": "<v>"}` as an element or member value.
    fn one(&mut self, k: &'static str, v: &str) {
        self.open(b'{');
        self.str(k, v);
        self.close(b'}');
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
    let id = key.stub_id(state_index);
    let mut w = Pretty {
        out: Vec::with_capacity(
            1024 + json_len(ex.request_body()) * 2 + json_len(ex.response_body()) * 2,
        ),
        depth: 0,
        first: true,
    };
    // Every object's members below are in sorted order.
    w.open(b'{');
    w.str("id", &id);
    w.lit("metadata");
    w.open(b'{');
    w.lit("apm");
    metadata(&mut w, ex, key, fallback_time);
    w.close(b'}');
    w.lit("name");
    write_str_pair(&mut w.out, ex.method(), ex.path());
    if let Some(next) = scenario.and_then(|sc| sc.new_state.as_deref()) {
        w.str("newScenarioState", next);
    }
    w.lit("request");
    request(&mut w, ex);
    if let Some(sc) = scenario {
        w.str("requiredScenarioState", &sc.required_state);
    }
    w.lit("response");
    response(&mut w, ex);
    if let Some(sc) = scenario {
        w.str("scenarioName", &sc.name);
    }
    w.close(b'}');
    let mut bytes = w.out;
    bytes.push(b'\n');
    MappingFile {
        file_name: file_name(ex.method(), ex.path(), &id),
        id,
        bytes,
    }
}

/// `"<method> <path>"`, escaped as serde_json would.
fn write_str_pair(out: &mut Vec<u8>, method: &str, path: &str) {
    if needs_escape(method.as_bytes()) || needs_escape(path.as_bytes()) {
        write_str(out, &format!("{method} {path}"));
    } else {
        out.reserve(method.len() + path.len() + 3);
        out.push(b'"');
        out.extend_from_slice(method.as_bytes());
        out.push(b' ');
        out.extend_from_slice(path.as_bytes());
        out.push(b'"');
    }
}

fn metadata(
    w: &mut Pretty,
    ex: &SanitizedExchange,
    key: &DedupeKey,
    fallback_time: OffsetDateTime,
) {
    let captured = ex.captured_at().unwrap_or(fallback_time);
    w.open(b'{');
    // Both written straight into the file (an RFC 3339 time and hex digits need no escapes).
    w.lit("capturedAt");
    w.out.push(b'"');
    let mark = w.out.len();
    if captured.format_into(&mut w.out, &Rfc3339).is_err() {
        w.out.truncate(mark);
    }
    w.out.push(b'"');
    w.lit("dedupeKey");
    w.out.push(b'"');
    key.write_hex(&mut w.out);
    w.out.push(b'"');
    if let Some(host) = ex.host() {
        w.str("host", host);
    }
    for (note_name, truncated_name, body) in [
        ("requestBodyNote", "requestBodyTruncated", ex.request_body()),
        (
            "responseBodyNote",
            "responseBodyTruncated",
            ex.response_body(),
        ),
    ] {
        if let Some(note) = body.note {
            w.str(note_name, note);
        }
        if body.truncated {
            w.bool(truncated_name, true);
        }
    }
    w.lit("source");
    w.open(b'{');
    w.str("format", ex.source().format.as_str());
    w.str("file", &ex.source().file);
    w.str("position", &ex.source().position);
    w.close(b'}');
    w.close(b'}');
}

fn request(w: &mut Pretty, ex: &SanitizedExchange) {
    w.open(b'{');
    let body = ex.request_body();
    if !body.truncated && !body.is_empty() {
        w.lit("bodyPatterns");
        w.open(b'[');
        w.item();
        body_pattern(w, body);
        w.close(b']');
    }
    w.str("method", ex.method());
    let query = ex.query();
    if !query.is_empty() {
        w.lit("queryParameters");
        w.open(b'{');
        for (i, (name, _)) in query.iter().enumerate() {
            // Each name once, where it first appears, with all its values.
            if query[..i].iter().any(|(k, _)| k == name) {
                continue;
            }
            w.key(name);
            let mut values = query[i..].iter().filter(|(k, _)| k == name);
            let first = values.next().map_or("", |(_, v)| v.as_str());
            if query[i + 1..].iter().any(|(k, _)| k == name) {
                w.open(b'{');
                w.lit("hasExactly");
                w.open(b'[');
                w.item();
                value_matcher(w, first);
                for (_, v) in values {
                    w.item();
                    value_matcher(w, v);
                }
                w.close(b']');
                w.close(b'}');
            } else {
                value_matcher(w, first);
            }
        }
        w.close(b'}');
    }
    if has_marker(ex.path()) {
        // A sanitized segment matches any segment: the stub stands for every request that
        // sanitizes to it (which is exactly what dedupe grouped together).
        w.str("urlPathPattern", &marker_regex(ex.path(), "[^/]+"));
    } else if query.is_empty() {
        w.str("url", ex.path());
    } else {
        w.str("urlPath", ex.path());
    }
    w.close(b'}');
}

fn response(w: &mut Pretty, ex: &SanitizedExchange) {
    w.open(b'{');
    let content = &ex.response_body().content;
    match content {
        BodyContent::Binary(b) => w.str(
            "base64Body",
            &base64::engine::general_purpose::STANDARD.encode(b),
        ),
        BodyContent::Text(t) => w.str("body", t),
        BodyContent::Empty | BodyContent::Json(_) => {}
    }
    response_headers(w, ex);
    if let BodyContent::Json(j) = content {
        w.raw("jsonBody", j.as_bytes());
    }
    w.lit("status");
    // Writing into a Vec cannot fail.
    let _ = write!(w.out, "{}", ex.status());
    w.close(b'}');
}

fn json_len(b: &SanitizedBody) -> usize {
    match &b.content {
        BodyContent::Json(j) => j.as_bytes().len(),
        BodyContent::Text(t) => t.len(),
        BodyContent::Binary(b) => b.len(),
        BodyContent::Empty => 0,
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

fn value_matcher(w: &mut Pretty, v: &str) {
    if has_marker(v) {
        w.one("matches", &marker_regex(v, ".+?"));
    } else {
        w.one("equalTo", v);
    }
}

/// A JsonUnit placeholder for a sanitized string value (`equalToJson` with
/// `enablePlaceholders`), so a request that sanitizes to this body matches it.
fn placeholder(v: &str) -> String {
    if is_whole_marker(v) {
        "${json-unit.ignore}".to_string()
    } else {
        format!("${{json-unit.regex}}{}", marker_regex(v, ".+?"))
    }
}

/// True when `v` is markers only (what `marker_regex(v, "")` turns into nothing): a marker,
/// then only `A-Z`, `0-9` and `_`, which the first marker's name swallows.
fn is_whole_marker(v: &str) -> bool {
    v.strip_prefix(MARKER).is_some_and(|rest| {
        rest.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
    })
}

/// The JSON with sanitized string values replaced by placeholders, and whether any was.
///
/// `json` is the sanitizer's output, so it is valid JSON and quotes occur only around
/// strings: a scan from quote to quote finds every string token without a full parse. A
/// token followed by `:` is a key and stays as it is.
fn with_placeholders(json: &[u8]) -> (Cow<'_, [u8]>, bool) {
    // Built once: a searcher's set-up cost as much as the search in these short bodies.
    static FINDER: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(MARKER.as_bytes()));
    let finder = &*FINDER;
    let Some(first) = finder.find(json) else {
        return (Cow::Borrowed(json), false);
    };
    let mut out = Vec::with_capacity(json.len() + 64);
    let mut copied = 0;
    let mut next_marker = Some(first);
    while let Some(marker) = next_marker {
        // Markers only occur inside strings, so the string holding this one opens at the
        // last quote before it that no backslash escapes: no scan from the start.
        let Some(start) = opening_quote(json, marker) else {
            break;
        };
        let Some(end) = string_end(json, start) else {
            break;
        };
        next_marker = finder.find(&json[end..]).map(|k| end + k);
        let is_key = json[end..]
            .iter()
            .find(|b| !b.is_ascii_whitespace())
            .is_some_and(|b| *b == b':');
        if is_key {
            continue;
        }
        let token = &json[start..end];
        // Without escapes the token's text is the bytes between the quotes (the sanitizer's
        // output is valid UTF-8); escapes are decoded by serde_json.
        let text = match std::str::from_utf8(&token[1..token.len() - 1]) {
            Ok(t) if !t.contains('\\') => Cow::Borrowed(t),
            _ => match serde_json::from_slice::<Cow<'_, str>>(token) {
                Ok(t) => t,
                Err(_) => continue,
            },
        };
        out.extend_from_slice(&json[copied..start]);
        write_str(&mut out, &placeholder(&text));
        copied = end;
    }
    if copied == 0 {
        return (Cow::Borrowed(json), false);
    }
    out.extend_from_slice(&json[copied..]);
    (Cow::Owned(out), true)
}

/// The position of the last quote before `at` that is not escaped (preceded by an even
/// number of backslashes).
fn opening_quote(json: &[u8], at: usize) -> Option<usize> {
    let mut upto = at;
    loop {
        let q = memchr::memrchr(b'"', &json[..upto])?;
        let backslashes = json[..q].iter().rev().take_while(|b| **b == b'\\').count();
        if backslashes % 2 == 0 {
            return Some(q);
        }
        upto = q;
    }
}

/// The end (one past the closing quote) of the string token opening at `start`.
fn string_end(json: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    loop {
        let k = memchr::memchr2(b'"', b'\\', json.get(i..)?)?;
        if json[i + k] == b'"' {
            return Some(i + k + 1);
        }
        i += k + 2;
    }
}

/// The request body matcher of a complete, non-empty body (a partial body must never become
/// an exact matcher: the real request would not equal it).
fn body_pattern(w: &mut Pretty, body: &SanitizedBody) {
    match &body.content {
        BodyContent::Empty => w.out.extend_from_slice(b"{}"),
        BodyContent::Json(j) => {
            let (expected, used) = with_placeholders(j.as_bytes());
            w.open(b'{');
            if used {
                w.bool("enablePlaceholders", true);
            }
            w.raw("equalToJson", &expected);
            w.bool("ignoreArrayOrder", true);
            w.bool("ignoreExtraElements", true);
            w.close(b'}');
        }
        BodyContent::Text(t) if has_marker(t) => w.one("matches", &marker_regex(t, ".+?")),
        BodyContent::Text(t) => w.one("equalTo", t),
        BodyContent::Binary(b) => w.one(
            "binaryEqualTo",
            &base64::engine::general_purpose::STANDARD.encode(b),
        ),
    }
}

/// The `headers` member of the response, if any header is kept: names sorted, each name
/// once (in its first spelling), a repeated header as an array of its values.
fn response_headers(w: &mut Pretty, ex: &SanitizedExchange) {
    let kept = |name: &str| {
        !DROPPED_RESPONSE_HEADERS
            .iter()
            .any(|d| d.eq_ignore_ascii_case(name))
    };
    let headers = ex.response_headers();
    // (name, index of its first occurrence) for each distinct kept name.
    let mut names: Vec<(&str, usize)> = Vec::new();
    for (i, h) in headers.iter().enumerate() {
        if kept(&h.name) && !names.iter().any(|(n, _)| n.eq_ignore_ascii_case(&h.name)) {
            names.push((&h.name, i));
        }
    }
    if names.is_empty() {
        return;
    }
    names.sort_by(|a, b| a.0.cmp(b.0));
    w.lit("headers");
    w.open(b'{');
    for (name, first) in names {
        w.key(name);
        let mut values = headers[first..]
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name));
        let one = values.next().map_or("", |h| h.value.as_str());
        if headers[first + 1..]
            .iter()
            .any(|h| h.name.eq_ignore_ascii_case(name))
        {
            w.open(b'[');
            w.item();
            write_str(&mut w.out, one);
            for h in values {
                w.item();
                write_str(&mut w.out, &h.value);
            }
            w.close(b']');
        } else {
            write_str(&mut w.out, one);
        }
    }
    w.close(b'}');
}

/// `get-v1-orders-1a2b3c4d.json`: readable, filesystem-safe, unique through the id.
pub fn file_name(method: &str, path: &str, id: &str) -> String {
    let id = id.get(..8).unwrap_or(id);
    // One buffer: the method, then the slug written in place and trimmed there.
    let mut name: Vec<u8> = Vec::with_capacity(method.len() + 64 + id.len() + 7);
    name.extend(method.bytes().map(|b| b.to_ascii_lowercase()));
    name.push(b'-');
    let slug_start = name.len();
    // Every non-ASCII character becomes one dash, as each of its bytes is non-alphanumeric
    // and dashes never repeat.
    for &b in path.as_bytes() {
        let b = b.to_ascii_lowercase();
        if b.is_ascii_alphanumeric() {
            name.push(b);
        } else if name.len() == slug_start || name.last() != Some(&b'-') {
            name.push(b'-');
        }
        if name.len() - slug_start >= 60 {
            break;
        }
    }
    if name.last() == Some(&b'-') && name.len() > slug_start {
        name.pop();
    }
    if name.get(slug_start) == Some(&b'-') {
        name.remove(slug_start);
    }
    if name.len() == slug_start {
        name.extend_from_slice(b"root");
    }
    name.push(b'-');
    name.extend_from_slice(id.as_bytes());
    name.extend_from_slice(b".json");
    // The method and id are str, everything else ASCII.
    String::from_utf8(name).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use crate::model::InputFormat;
    use crate::sanitize::{BodyLimits, SanitizeStats, Sanitizer};

    /// The tree-based mapping writer the direct one replaced (build a small JSON tree, sort
    /// each object's members, print it): the reference for [`mapping`].
    mod reference {
        use base64::Engine as _;

        use super::super::*;

        /// A small JSON tree for the parts of a mapping we build, with raw JSON leaves for bodies.
        enum J<'a> {
            Str(Cow<'a, str>),
            Int(u64),
            Bool(bool),
            /// Valid JSON text, written as it is.
            Raw(&'a [u8]),
            Obj(Vec<(Cow<'a, str>, J<'a>)>),
            Arr(Vec<J<'a>>),
        }

        fn s<'a>(v: impl Into<Cow<'a, str>>) -> J<'a> {
            J::Str(v.into())
        }

        fn obj<'a>(members: Vec<(&'static str, J<'a>)>) -> J<'a> {
            J::Obj(
                members
                    .into_iter()
                    .map(|(k, v)| (Cow::Borrowed(k), v))
                    .collect(),
            )
        }

        /// serde_json's pretty layout (two spaces, `"key": value`).
        fn write_pretty(out: &mut Vec<u8>, v: &J<'_>, depth: usize) {
            match v {
                J::Str(t) => write_str(out, t),
                J::Int(n) => out.extend_from_slice(n.to_string().as_bytes()),
                J::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
                J::Raw(r) => out.extend_from_slice(r),
                J::Obj(m) if m.is_empty() => out.extend_from_slice(b"{}"),
                J::Arr(a) if a.is_empty() => out.extend_from_slice(b"[]"),
                J::Obj(m) => {
                    out.push(b'{');
                    for (i, (k, v)) in m.iter().enumerate() {
                        if i > 0 {
                            out.push(b',');
                        }
                        indent(out, depth + 1);
                        write_str(out, k);
                        out.extend_from_slice(b": ");
                        write_pretty(out, v, depth + 1);
                    }
                    indent(out, depth);
                    out.push(b'}');
                }
                J::Arr(a) => {
                    out.push(b'[');
                    for (i, v) in a.iter().enumerate() {
                        if i > 0 {
                            out.push(b',');
                        }
                        indent(out, depth + 1);
                        write_pretty(out, v, depth + 1);
                    }
                    indent(out, depth);
                    out.push(b']');
                }
            }
        }

        /// Builds the mapping for one sanitized exchange.
        ///
        /// `fallback_time` is used as the capture time when the input did not record one.
        pub(super) fn mapping(
            ex: &SanitizedExchange,
            key: &DedupeKey,
            state_index: u32,
            scenario: Option<&ScenarioStep>,
            fallback_time: OffsetDateTime,
        ) -> MappingFile {
            let id = key.stub_id(state_index);
            let mut request = vec![("method", s(ex.method()))];
            if has_marker(ex.path()) {
                // A sanitized segment matches any segment: the stub stands for every request that
                // sanitizes to it (which is exactly what dedupe grouped together).
                request.push(("urlPathPattern", s(marker_regex(ex.path(), "[^/]+"))));
            } else if ex.query().is_empty() {
                request.push(("url", s(ex.path())));
            } else {
                request.push(("urlPath", s(ex.path())));
            }
            if !ex.query().is_empty() {
                let mut names: Vec<&str> = Vec::new();
                for (k, _) in ex.query() {
                    if !names.contains(&k.as_str()) {
                        names.push(k);
                    }
                }
                let params = names
                    .into_iter()
                    .map(|name| {
                        let values: Vec<&str> = ex
                            .query()
                            .iter()
                            .filter(|(k, _)| k == name)
                            .map(|(_, v)| v.as_str())
                            .collect();
                        let matcher = if values.len() == 1 {
                            value_matcher(values[0])
                        } else {
                            obj(vec![(
                                "hasExactly",
                                J::Arr(values.into_iter().map(value_matcher).collect()),
                            )])
                        };
                        (Cow::Borrowed(name), matcher)
                    })
                    .collect();
                request.push(("queryParameters", J::Obj(params)));
            }
            let mut placeholder_body = Vec::new();
            if let Some(pattern) = body_pattern(ex.request_body(), &mut placeholder_body) {
                request.push(("bodyPatterns", J::Arr(vec![pattern])));
            }

            let mut response = vec![("status", J::Int(u64::from(ex.status())))];
            let headers = response_headers(ex);
            if !headers.is_empty() {
                response.push(("headers", J::Obj(headers)));
            }
            match &ex.response_body().content {
                BodyContent::Empty => {}
                BodyContent::Json(j) => response.push(("jsonBody", J::Raw(j.as_bytes()))),
                BodyContent::Text(t) => response.push(("body", s(t.as_str()))),
                BodyContent::Binary(b) => response.push((
                    "base64Body",
                    s(base64::engine::general_purpose::STANDARD.encode(b)),
                )),
            }

            let captured = ex.captured_at().unwrap_or(fallback_time);
            let mut apm = vec![
                (
                    "source",
                    obj(vec![
                        ("format", s(ex.source().format.as_str())),
                        ("file", s(ex.source().file.as_str())),
                        ("position", s(ex.source().position.as_str())),
                    ]),
                ),
                ("dedupeKey", s(key.hex())),
                (
                    "capturedAt",
                    s(captured.format(&Rfc3339).unwrap_or_default()),
                ),
            ];
            if let Some(host) = ex.host() {
                apm.push(("host", s(host)));
            }
            for (truncated_name, note_name, body) in [
                ("requestBodyTruncated", "requestBodyNote", ex.request_body()),
                (
                    "responseBodyTruncated",
                    "responseBodyNote",
                    ex.response_body(),
                ),
            ] {
                if body.truncated {
                    apm.push((truncated_name, J::Bool(true)));
                }
                if let Some(note) = body.note {
                    apm.push((note_name, s(note)));
                }
            }
            // WireMock keeps top-level members sorted in its own output; ours follow serde_json's
            // default (sorted) map order too, so files read the same as before.
            let mut m = vec![
                ("id", s(id.as_str())),
                ("metadata", obj(vec![("apm", obj(sorted(apm)))])),
                ("name", s(format!("{} {}", ex.method(), ex.path()))),
                ("request", obj(sorted(request))),
                ("response", obj(sorted(response))),
            ];
            if let Some(sc) = scenario {
                if let Some(next) = &sc.new_state {
                    m.push(("newScenarioState", s(next.as_str())));
                }
                m.push(("requiredScenarioState", s(sc.required_state.as_str())));
                m.push(("scenarioName", s(sc.name.as_str())));
            }
            let m = sorted(m);
            let mut bytes = Vec::with_capacity(
                1024 + json_len(ex.request_body()) * 2 + json_len(ex.response_body()) * 2,
            );
            write_pretty(&mut bytes, &obj(m), 0);
            bytes.push(b'\n');
            MappingFile {
                file_name: file_name(ex.method(), ex.path(), &id),
                id,
                bytes,
            }
        }

        fn sorted<'a>(mut members: Vec<(&'static str, J<'a>)>) -> Vec<(&'static str, J<'a>)> {
            members.sort_by(|a, b| a.0.cmp(b.0));
            members
        }

        fn value_matcher(v: &str) -> J<'static> {
            if has_marker(v) {
                obj(vec![("matches", s(marker_regex(v, ".+?")))])
            } else {
                obj(vec![("equalTo", s(v.to_string()))])
            }
        }

        /// The request body matcher, or `None` for empty or truncated bodies (a partial body must
        /// never become an exact matcher: the real request would not equal it). `store` holds a
        /// rewritten JSON body the matcher borrows.
        fn body_pattern<'a>(body: &'a SanitizedBody, store: &'a mut Vec<u8>) -> Option<J<'a>> {
            if body.truncated {
                return None;
            }
            Some(match &body.content {
                BodyContent::Empty => return None,
                BodyContent::Json(j) => {
                    let (expected, used) = with_placeholders(j.as_bytes());
                    let expected = match expected {
                        Cow::Borrowed(b) => J::Raw(b),
                        Cow::Owned(o) => {
                            *store = o;
                            J::Raw(store.as_slice())
                        }
                    };
                    let mut m = vec![
                        ("equalToJson", expected),
                        ("ignoreArrayOrder", J::Bool(true)),
                        ("ignoreExtraElements", J::Bool(true)),
                    ];
                    if used {
                        m.push(("enablePlaceholders", J::Bool(true)));
                    }
                    obj(sorted(m))
                }
                BodyContent::Text(t) if has_marker(t) => {
                    obj(vec![("matches", s(marker_regex(t, ".+?")))])
                }
                BodyContent::Text(t) => obj(vec![("equalTo", s(t.as_str()))]),
                BodyContent::Binary(b) => obj(vec![(
                    "binaryEqualTo",
                    s(base64::engine::general_purpose::STANDARD.encode(b)),
                )]),
            })
        }

        fn response_headers(ex: &SanitizedExchange) -> Vec<(Cow<'_, str>, J<'_>)> {
            let mut out: Vec<(Cow<'_, str>, Vec<&str>)> = Vec::new();
            for h in ex.response_headers() {
                if DROPPED_RESPONSE_HEADERS
                    .iter()
                    .any(|d| d.eq_ignore_ascii_case(&h.name))
                {
                    continue;
                }
                match out
                    .iter_mut()
                    .find(|(n, _)| n.eq_ignore_ascii_case(&h.name))
                {
                    Some((_, vals)) => vals.push(&h.value),
                    None => out.push((Cow::Borrowed(h.name.as_str()), vec![h.value.as_str()])),
                }
            }
            let mut out: Vec<(Cow<'_, str>, J<'_>)> = out
                .into_iter()
                .map(|(name, vals)| {
                    let v = if vals.len() == 1 {
                        s(vals[0])
                    } else {
                        J::Arr(vals.into_iter().map(s).collect())
                    };
                    (name, v)
                })
                .collect();
            // serde_json's default map is ordered by key; keep that layout.
            out.sort_by(|a, b| a.0.cmp(&b.0));
            out
        }
    }
    use base64::Engine as _;

    use super::*;
    use crate::sanitize::Kind;
    use crate::sanitize::stream::{KeyAction, NameCache, Rewrite, rewrite};

    #[test]
    fn marker_regexes() {
        assert_eq!(marker_regex("/u/SANITIZED_EMAIL/o", "[^/]+"), "/u/[^/]+/o");
        assert_eq!(marker_regex("a.b SANITIZED_CARD_X!", ".+?"), r"a\.b .+?!");
        assert_eq!(marker_regex("plain", ".+?"), "plain");
        let v = br#"{"a": "SANITIZED_EMAIL", "b": ["x SANITIZED_PHONE"], "SANITIZED_EMAIL": 1}"#;
        let (out, used) = with_placeholders(v);
        assert!(used);
        assert_eq!(
            std::str::from_utf8(&out).expect("utf8"),
            r#"{"a": "${json-unit.ignore}", "b": ["${json-unit.regex}x .+?"], "SANITIZED_EMAIL": 1}"#
        );
        let (out, used) = with_placeholders(br#"{"a": 1}"#);
        assert!(!used);
        assert_eq!(&*out, br#"{"a": 1}"#);
    }

    /// The walker-based form of the placeholder rewrite: the reference for the quote scan.
    struct Placeholders;

    impl Rewrite for Placeholders {
        fn key(&mut self, _: &[u8], _: Option<u8>) -> KeyAction {
            KeyAction {
                key: None,
                value: None,
            }
        }
        fn string(&mut self, v: &[u8], _: Option<u8>) -> Option<String> {
            let v = std::str::from_utf8(v).expect("the walker hands over UTF-8");
            has_marker(v).then(|| placeholder(v))
        }
        fn integer(&mut self, _: &[u8]) -> Option<String> {
            None
        }
        fn replaced(&mut self, _: Kind) {}
    }

    proptest::proptest! {
        #[test]
        fn placeholder_scan_equals_the_walker(
            doc in proptest::collection::vec(
                (
                    proptest::sample::select(&["k", "SANITIZED_EMAIL", "a\\\"b", "x SANITIZED_PHONE", "k\\", "SANITIZED_CARD\\"][..]),
                    proptest::sample::select(&[
                        "\"SANITIZED_EMAIL\"", "\"a \\\"SANITIZED_CARD\\\" b\"", "1", "null",
                        "[\"SANITIZED_JWT\",\"x\"]", "{\"SANITIZED_PHONE\":\"SANITIZED_PHONE\"}",
                        "\"plain\"", "\"\\u00e9 SANITIZED_DOCUMENT\"",
                        // Backslashes right before a quote: escaped ones and escaped quotes.
                        "\"\\\\\"", "\"x\\\\\\\" SANITIZED_PHONE\\\\\"", "[\"a\\\\\",\"SANITIZED_JWT\"]",
                    ][..]),
                ),
                0..6,
            )
        ) {
            let members: Vec<String> = doc
                .iter()
                .map(|(k, v)| format!("{}:{v}", serde_json::to_string(k).expect("key")))
                .collect();
            let json = format!("{{{}}}", members.join(","));
            let (scan, used) = with_placeholders(json.as_bytes());
            let (walk, changed) = rewrite(
                json.clone().into_bytes(),
                &mut Placeholders,
                &mut NameCache::default(),
            )
            .expect("json");
            proptest::prop_assert_eq!(used, changed);
            let scan: Value = serde_json::from_slice(&scan).expect("json");
            let walk: Value = serde_json::from_slice(&walk).expect("json");
            proptest::prop_assert_eq!(scan, walk);
        }
    }

    proptest::proptest! {
        /// The direct test equals asking `marker_regex` whether nothing but markers is left.
        #[test]
        fn whole_marker_check_equals_the_regex_form(
            v in proptest::prop_oneof![
                "(SANITIZED_[A-Z_]{0,8}|[A-Za-z0-9_ .-]{0,4}){0,3}",
                proptest::prelude::any::<String>(),
            ]
        ) {
            proptest::prop_assert_eq!(
                is_whole_marker(&v),
                v.starts_with(MARKER) && marker_regex(&v, "").is_empty()
            );
        }
    }

    /// The char-based slug the byte-based one replaced: the reference.
    fn file_name_reference(method: &str, path: &str, id: &str) -> String {
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

    proptest::proptest! {
        #[test]
        fn file_name_equals_the_char_based_slug(
            method in "[A-Za-z]{1,7}",
            path in proptest::prop_oneof![
                "(/[a-zA-Z0-9_.%~-]{0,12}){0,8}",
                proptest::prelude::any::<String>(),
            ],
            id in "[0-9a-f-]{0,36}",
        ) {
            proptest::prop_assert_eq!(
                file_name(&method, &path, &id),
                file_name_reference(&method, &path, &id)
            );
        }

        /// The copy fast path writes exactly what serde_json writes.
        #[test]
        fn write_str_equals_serde_json(
            v in proptest::prop_oneof![
                proptest::prelude::any::<String>(),
                "[ -~\u{0}-\u{1f}\u{7f}\u{80}-\u{ff}]{0,40}",
                "[a-z]{0,20}[\"\\\\\u{1f}\u{0}]?[a-z]{0,20}",
            ]
        ) {
            let mut out = Vec::new();
            write_str(&mut out, &v);
            proptest::prop_assert_eq!(out, serde_json::to_vec(&v).expect("json"));
        }
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

    /// Every mapping of `exchanges` (a JSONL text) written both ways, plain and as scenario
    /// states, with a body limit small enough to truncate some bodies.
    fn both_ways(jsonl: &str, files: &[(&str, InputFormat)]) -> Result<usize, TestCaseError> {
        let mut inputs: Vec<(InputFormat, String, Vec<u8>)> = vec![(
            InputFormat::Jsonl,
            "t.jsonl".into(),
            jsonl.as_bytes().to_vec(),
        )];
        for (path, format) in files {
            let full = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
            inputs.push((
                *format,
                path.to_string(),
                std::fs::read(full).expect("fixture"),
            ));
        }
        let sanitizer = Sanitizer::builtin();
        let now = OffsetDateTime::UNIX_EPOCH;
        let mut n = 0;
        for limit in [8 * 1024, 40] {
            let limits = BodyLimits { max_body: limit };
            for (format, file, bytes) in &inputs {
                let parsed = crate::parse_all(*format, [(file.as_str(), bytes.as_slice())]);
                for ex in parsed.exchanges {
                    let mut stats = SanitizeStats::default();
                    let pending = sanitizer.sanitize_request(ex, &limits, &mut stats);
                    let key = pending.dedupe_key(1024);
                    let clean = sanitizer.finish(pending, &limits, &mut stats);
                    let steps = [
                        None,
                        Some(ScenarioStep {
                            name: "apm-0123".into(),
                            required_state: "Started".into(),
                            new_state: Some("state-2".into()),
                        }),
                        Some(ScenarioStep {
                            name: "apm-0123".into(),
                            required_state: "state-2".into(),
                            new_state: None,
                        }),
                    ];
                    for (i, step) in steps.iter().enumerate() {
                        let direct = mapping(&clean, &key, i as u32, step.as_ref(), now);
                        let tree = reference::mapping(&clean, &key, i as u32, step.as_ref(), now);
                        prop_assert_eq!(
                            String::from_utf8_lossy(direct.bytes()),
                            String::from_utf8_lossy(tree.bytes())
                        );
                        prop_assert_eq!(&direct, &tree);
                        n += 1;
                    }
                }
            }
        }
        Ok(n)
    }

    /// One JSONL exchange from generated parts.
    #[allow(clippy::too_many_arguments)]
    fn jsonl_line(
        method: &str,
        path: &str,
        query: &[(String, String)],
        req_headers: &[(String, String)],
        req_body: &Option<String>,
        status: u16,
        resp_headers: &[(String, String)],
        resp_body: &(u8, String),
    ) -> String {
        let mut url = path.to_string();
        for (i, (k, v)) in query.iter().enumerate() {
            url.push(if i == 0 { '?' } else { '&' });
            url.push_str(&format!("{k}={v}"));
        }
        let mut request = serde_json::json!({"method": method, "url": url, "headers": req_headers});
        if let Some(b) = req_body {
            request["body"] = Value::from(b.as_str());
        }
        let mut response = serde_json::json!({"status": status, "headers": resp_headers});
        match resp_body.0 {
            0 => {}
            1 => response["body"] = Value::from(resp_body.1.as_str()),
            2 => {
                response["body_base64"] = Value::from(
                    base64::engine::general_purpose::STANDARD.encode([0xff, 0xfe, 0x00, 0x81]),
                )
            }
            _ => {
                response["body"] = Value::from(resp_body.1.as_str());
                response["body_truncated"] = Value::from(true);
            }
        }
        serde_json::json!({"time": "2026-11-20T16:00:00Z", "request": request, "response": response})
            .to_string()
    }

    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            proptest::sample::select(
                &[
                    "a",
                    "ana@example.com",
                    "52998224725",
                    "x\"y",
                    "tab\there",
                    "é",
                    "1",
                    "SANITIZED_X",
                    "+55 11 98765-4321",
                    "",
                    "q w",
                ][..]
            )
            .prop_map(String::from),
            "[a-zA-Z0-9 ._-]{0,8}",
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// The direct writer gives byte for byte what the tree-based writer gave: paths with
        /// and without sanitized segments, repeated and sanitized query parameters, repeated,
        /// dropped and differently spelt response headers, JSON (with placeholders), text,
        /// binary, empty and truncated bodies, scenario states, notes and hosts.
        #[test]
        fn direct_writer_equals_the_tree_writer(
            method in proptest::sample::select(&["GET", "POST", "PUT", "DELETE"][..]),
            path in prop_oneof![
                "(/[a-z0-9]{1,6}){0,3}",
                Just("/u/ana@example.com/orders".to_string()),
                Just("https://api.example.com/v1/x".to_string()),
                Just("/a\"b/c".to_string()),
            ],
            query in proptest::collection::vec(
                (proptest::sample::select(&["a", "b", "email", "token", "c d"][..]).prop_map(String::from), text()),
                0..4,
            ),
            req_body in proptest::option::of(prop_oneof![
                text(),
                Just(r#"{"email":"ana@example.com","n":[1,2],"password":"x","s":"a\"b"}"#.to_string()),
                Just(r#"{"a":"SANITIZED_EMAIL","b":{"c":"x 52998224725"}}"#.to_string()),
                Just("name=ana&password=1".to_string()),
            ]),
            status in proptest::sample::select(&[200u16, 201, 204, 404, 500][..]),
            resp_headers in proptest::collection::vec(
                (
                    proptest::sample::select(&[
                        "content-type", "Content-Type", "x-a", "X-A", "set-cookie", "connection",
                        "Content-Length", "x-b", "x-\"q",
                    ][..]).prop_map(String::from),
                    text(),
                ),
                0..5,
            ),
            resp_body in (0u8..4, prop_oneof![
                text(),
                Just(r#"{"ok":true,"owner":"ana@example.com"}"#.to_string()),
                Just("[1,2,3]".to_string()),
            ]),
        ) {
            let line = jsonl_line(
                method,
                &path,
                &query,
                &[("x-h".into(), "1".into())],
                &req_body,
                status,
                &resp_headers,
                &resp_body,
            );
            both_ways(&line, &[])?;
        }
    }

    /// The same on every fixture (Envoy taps, HAR, JSONL).
    #[test]
    fn direct_writer_equals_the_tree_writer_on_the_fixtures() {
        let n = both_ways(
            "",
            &[
                (
                    "tests/fixtures/envoy/tap_1700000000000000001.json",
                    InputFormat::EnvoyTap,
                ),
                (
                    "tests/fixtures/envoy/tap_1700000000000000002.json",
                    InputFormat::EnvoyTap,
                ),
                (
                    "tests/fixtures/envoy/tap_1700000000000000005.json",
                    InputFormat::EnvoyTap,
                ),
                (
                    "tests/fixtures/envoy/admin_tap_stream.json",
                    InputFormat::EnvoyTap,
                ),
                ("tests/fixtures/har/shop.har", InputFormat::Har),
                ("tests/fixtures/jsonl/exchanges.jsonl", InputFormat::Jsonl),
            ],
        )
        .expect("equal");
        assert!(n > 30, "{n} mappings compared");
    }
}
