//! Sanitization: removes customer data from an [`Exchange`] before anything is written.
//!
//! | type | where | replacement |
//! |---|---|---|
//! | `jwt` | anywhere in text: `eyJ….eyJ….…` whose first two parts decode to JSON objects | `SANITIZED_JWT` |
//! | `header` | `Authorization`, `Proxy-Authorization`, headers whose name contains key/token/secret | `SANITIZED_HEADER` |
//! | `cookie` | `Cookie`, `Set-Cookie` | `SANITIZED_HEADER` |
//! | `password` | JSON fields, form/query params and `key=value`/`"key": value` text whose key contains password/passwd/pwd | `SANITIZED_PASSWORD` |
//! | `secret` | the same for keys containing token/secret, api_key, access_key, private_key | `SANITIZED_SECRET` |
//! | `card` | 13–19 digits (spaces/dashes allowed), first digit 2–6, passing Luhn | `SANITIZED_CARD` |
//! | `document` | CPF / CNPJ (formatted or bare, alphanumeric CNPJ too) with valid check digits | `SANITIZED_DOCUMENT` |
//! | `phone` | `+CC …` international numbers (8–15 digits) and Brazilian `(11) 98765-4321` / `11 98765-4321` | `SANITIZED_PHONE` |
//! | `email` | `local@domain.tld` (also `%40`) | `SANITIZED_EMAIL` |
//! | custom | patterns from the config file | the configured replacement |
//!
//! Applied to headers, query names and values, path segments, JSON bodies (structure-aware:
//! keys and string/number values at any depth), form bodies, text and binary bodies.

mod body;
pub mod checks;
mod scan;
pub(crate) mod stream;
mod text;
/// The fourth pass' text rules, frozen: the reference for `text`'s equivalence tests.
#[cfg(test)]
mod v4;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::{Mutex, TryLockError};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::dedupe::{DedupeKey, dedupe_key};
use crate::model::{Exchange, Header, Response, SourceRef};
pub use body::{BodyContent, BodyLimits, JsonText, SanitizedBody};
use stream::NameCache;
use text::{CustomRule, TextRules};

/// The kind of a replacement, used for counting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Jwt,
    Header,
    Cookie,
    Password,
    Secret,
    Card,
    Document,
    Phone,
    Email,
    Custom(usize),
}

const BUILTIN: [&str; 9] = [
    "jwt", "header", "cookie", "password", "secret", "card", "document", "phone", "email",
];

impl Kind {
    fn slot(self) -> Option<usize> {
        Some(match self {
            Kind::Jwt => 0,
            Kind::Header => 1,
            Kind::Cookie => 2,
            Kind::Password => 3,
            Kind::Secret => 4,
            Kind::Card => 5,
            Kind::Document => 6,
            Kind::Phone => 7,
            Kind::Email => 8,
            Kind::Custom(_) => return None,
        })
    }

    pub(crate) fn marker(self) -> &'static str {
        match self {
            Kind::Jwt => "SANITIZED_JWT",
            Kind::Header | Kind::Cookie => "SANITIZED_HEADER",
            Kind::Password => "SANITIZED_PASSWORD",
            Kind::Secret => "SANITIZED_SECRET",
            Kind::Card => "SANITIZED_CARD",
            Kind::Document => "SANITIZED_DOCUMENT",
            Kind::Phone => "SANITIZED_PHONE",
            Kind::Email => "SANITIZED_EMAIL",
            Kind::Custom(_) => "SANITIZED_CUSTOM",
        }
    }
}

/// Replacement counts per type.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SanitizeStats {
    builtin: [u64; 9],
    custom: Vec<u64>,
}

impl SanitizeStats {
    pub(crate) fn add(&mut self, kind: Kind) {
        match kind.slot() {
            Some(i) => self.builtin[i] += 1,
            None => {
                if let Kind::Custom(i) = kind {
                    if self.custom.len() <= i {
                        self.custom.resize(i + 1, 0);
                    }
                    self.custom[i] += 1;
                }
            }
        }
    }

    /// Total replacements.
    pub fn total(&self) -> u64 {
        self.builtin.iter().sum::<u64>() + self.custom.iter().sum::<u64>()
    }

    /// Count for a built-in type name (`jwt`, `card`, …).
    pub fn get(&self, name: &str) -> u64 {
        BUILTIN
            .iter()
            .position(|n| *n == name)
            .map_or(0, |i| self.builtin[i])
    }

    /// Adds another set of counts.
    pub fn merge(&mut self, other: &SanitizeStats) {
        for (a, b) in self.builtin.iter_mut().zip(other.builtin) {
            *a += b;
        }
        if self.custom.len() < other.custom.len() {
            self.custom.resize(other.custom.len(), 0);
        }
        for (a, b) in self.custom.iter_mut().zip(&other.custom) {
            *a += b;
        }
    }

    /// Non-zero counts by type name; custom patterns are named by the sanitizer's config.
    pub fn by_type(&self, sanitizer: &Sanitizer) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for (name, n) in BUILTIN.iter().zip(self.builtin) {
            if n > 0 {
                out.insert((*name).to_string(), n);
            }
        }
        for (i, n) in self.custom.iter().enumerate() {
            if *n > 0 {
                let name = sanitizer
                    .config
                    .patterns
                    .get(i)
                    .map_or_else(|| format!("custom_{i}"), |p| p.name.clone());
                *out.entry(name).or_default() += n;
            }
        }
        out
    }
}

/// A custom pattern (config file `[[pattern]]` tables).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CustomPattern {
    /// Type name used in counts and metrics (`[a-z0-9_]+`).
    pub name: String,
    /// Regular expression (Rust `regex` syntax).
    pub pattern: String,
    /// Replacement text. Defaults to `SANITIZED_<NAME>`.
    #[serde(default)]
    pub replacement: Option<String>,
}

/// Sanitizer configuration, usually read from a TOML file (see docs/capture.md).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SanitizerConfig {
    /// Extra patterns, applied to all text after JWT and email detection.
    #[serde(default, rename = "pattern")]
    pub patterns: Vec<CustomPattern>,
    /// Extra header names (case-insensitive, exact) whose values are always replaced.
    #[serde(default)]
    pub sensitive_headers: Vec<String>,
    /// Extra JSON field / form / query names (case-insensitive, exact) whose values are
    /// always replaced with `SANITIZED_SECRET`.
    #[serde(default)]
    pub sensitive_fields: Vec<String>,
}

/// A configuration error, naming the pattern at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The TOML did not parse or has unknown keys.
    #[error("sanitizer config: {0}")]
    Toml(String),
    /// A pattern is invalid.
    #[error("sanitizer config: pattern '{name}': {message}")]
    Pattern {
        /// The pattern's name.
        name: String,
        /// What is wrong.
        message: String,
    },
}

impl SanitizerConfig {
    /// Parses the TOML configuration format.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Toml(e.to_string()))
    }
}

/// Removes customer data. Build once, use for every exchange (it holds compiled regexes;
/// clones share them).
pub struct Sanitizer {
    rules: TextRules,
    config: SanitizerConfig,
    /// JSON member names decided before (see `stream::NameCache`). Each clone starts with
    /// its own; a thread that finds it in use walks with an empty one instead of waiting.
    names: Mutex<Box<NameCache>>,
}

impl Clone for Sanitizer {
    fn clone(&self) -> Self {
        Sanitizer::with_rules(self.rules.clone(), self.config.clone())
    }
}

impl Sanitizer {
    /// Compiles the built-in rules and the configured custom patterns.
    pub fn new(config: SanitizerConfig) -> Result<Self, ConfigError> {
        let mut custom = Vec::new();
        for (index, p) in config.patterns.iter().enumerate() {
            if p.name.is_empty()
                || !p
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            {
                return Err(ConfigError::Pattern {
                    name: p.name.clone(),
                    message: "name must be non-empty [a-z0-9_]".into(),
                });
            }
            if BUILTIN.contains(&p.name.as_str()) {
                return Err(ConfigError::Pattern {
                    name: p.name.clone(),
                    message: "name is a built-in type".into(),
                });
            }
            let regex = regex::bytes::Regex::new(&p.pattern).map_err(|e| ConfigError::Pattern {
                name: p.name.clone(),
                message: e.to_string(),
            })?;
            if regex.is_match(b"") {
                return Err(ConfigError::Pattern {
                    name: p.name.clone(),
                    message: "pattern matches the empty string".into(),
                });
            }
            let replacement = p
                .replacement
                .clone()
                .unwrap_or_else(|| format!("SANITIZED_{}", p.name.to_ascii_uppercase()));
            custom.push(CustomRule {
                index,
                regex,
                replacement: replacement.into_bytes(),
            });
        }
        Ok(Sanitizer::with_rules(TextRules::new(custom), config))
    }

    /// A sanitizer with only the built-in rules.
    pub fn builtin() -> Self {
        Sanitizer::with_rules(TextRules::new(Vec::new()), SanitizerConfig::default())
    }

    fn with_rules(rules: TextRules, config: SanitizerConfig) -> Self {
        Sanitizer {
            rules,
            config,
            names: Mutex::new(Box::default()),
        }
    }

    /// Runs `f` with this sanitizer's member-name cache (or an empty one while another
    /// thread holds it).
    pub(crate) fn with_names<T>(&self, f: impl FnOnce(&mut NameCache) -> T) -> T {
        match self.names.try_lock() {
            Ok(mut names) => f(&mut names),
            // A panic elsewhere cannot leave an entry half written: the cache stays usable.
            Err(TryLockError::Poisoned(p)) => f(&mut p.into_inner()),
            Err(TryLockError::WouldBlock) => f(&mut NameCache::default()),
        }
    }

    /// Sanitizes free text.
    pub fn text<'a>(&self, s: &'a str, stats: &mut SanitizeStats) -> Cow<'a, str> {
        // Rules replace whole ASCII-delimited matches with ASCII, so UTF-8 stays valid; the
        // lossy path in `text_classified` only guards against a custom pattern cutting a
        // character.
        self.text_classified(s, None, stats)
    }

    /// [`Self::text`] with the string's byte classes already known (see `text::classify`).
    pub(crate) fn text_classified<'a>(
        &self,
        s: &'a str,
        class: Option<u8>,
        stats: &mut SanitizeStats,
    ) -> Cow<'a, str> {
        match self.rewrite_text(s.as_bytes(), class, stats) {
            Some(new) => Cow::Owned(new),
            None => Cow::Borrowed(s),
        }
    }

    /// The text rules on UTF-8 bytes with known `classify` bits: the new text, or `None`
    /// when nothing was replaced.
    pub(crate) fn rewrite_text(
        &self,
        s: &[u8],
        class: Option<u8>,
        stats: &mut SanitizeStats,
    ) -> Option<String> {
        self.rules.apply_classified(s, class, stats).map(|bytes| {
            String::from_utf8(bytes)
                .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
        })
    }

    /// True when the text rules never change a string with these `text::classify` bits.
    pub(crate) fn leaves_class_alone(&self, class: u8) -> bool {
        self.rules.leaves_class_alone(class)
    }

    /// Sanitizes bytes (binary bodies).
    pub fn bytes<'a>(&self, b: &'a [u8], stats: &mut SanitizeStats) -> Cow<'a, [u8]> {
        match self.rules.apply(b, stats) {
            Some(out) => Cow::Owned(out),
            None => Cow::Borrowed(b),
        }
    }

    fn field_kind(&self, key: &str) -> Option<Kind> {
        self.field_kind_bytes(key.as_bytes())
    }

    /// [`Self::field_kind`] of a name given as (UTF-8) bytes.
    fn field_kind_bytes(&self, key: &[u8]) -> Option<Kind> {
        self.rules.key_kind(key).or_else(|| {
            self.config
                .sensitive_fields
                .iter()
                .any(|f| f.as_bytes().eq_ignore_ascii_case(key))
                .then_some(Kind::Secret)
        })
    }

    /// Sanitizes a `name=value` pair (query or form parameter).
    fn param(&self, name: &str, value: &str, stats: &mut SanitizeStats) -> (String, String) {
        let new_name = self.text(name, stats).into_owned();
        let new_value = match self.field_kind(name) {
            Some(kind) if !value.is_empty() => {
                stats.add(kind);
                kind.marker().to_string()
            }
            _ => self.text(value, stats).into_owned(),
        };
        (new_name, new_value)
    }

    /// [`Self::param`] for a pair the caller owns: what is not replaced keeps its string.
    fn param_owned(
        &self,
        name: String,
        value: String,
        stats: &mut SanitizeStats,
    ) -> (String, String) {
        // The value's rule depends on the name as sent.
        let kind = self.field_kind(&name);
        let new_name = match self.text(&name, stats) {
            Cow::Owned(new) => new,
            Cow::Borrowed(_) => name,
        };
        let new_value = match kind {
            Some(kind) if !value.is_empty() => {
                stats.add(kind);
                kind.marker().to_string()
            }
            _ => match self.text(&value, stats) {
                Cow::Owned(new) => new,
                Cow::Borrowed(_) => value,
            },
        };
        (new_name, new_value)
    }

    /// Sanitizes a JSON document, structure-aware, in one pass without building a tree: members
    /// whose name is sensitive have their value replaced at any depth, other keys, strings and
    /// long integers go through the text rules. Returns compact JSON, or `None` (nothing
    /// counted) when `input` is not a valid JSON document.
    pub fn json(&self, input: &[u8], stats: &mut SanitizeStats) -> Option<String> {
        let out = stream::sanitize(self, input.to_vec(), stats).ok()?;
        String::from_utf8(out).ok()
    }

    fn headers(&self, headers: Vec<Header>, stats: &mut SanitizeStats) -> Vec<Header> {
        headers
            .into_iter()
            .map(|h| {
                let name = h.name.as_bytes();
                let kind = if name.eq_ignore_ascii_case(b"cookie")
                    || name.eq_ignore_ascii_case(b"set-cookie")
                {
                    Some(Kind::Cookie)
                } else if name.eq_ignore_ascii_case(b"authorization")
                    || name.eq_ignore_ascii_case(b"proxy-authorization")
                    || names_a_secret(name)
                    || self
                        .config
                        .sensitive_headers
                        .iter()
                        .any(|s| s.eq_ignore_ascii_case(&h.name))
                {
                    Some(Kind::Header)
                } else {
                    None
                };
                match kind {
                    Some(kind) => {
                        stats.add(kind);
                        Header::new(h.name, "SANITIZED_HEADER")
                    }
                    None => {
                        // An unchanged value keeps its string (no copy).
                        let value = match self.text(&h.value, stats) {
                            Cow::Owned(new) => new,
                            Cow::Borrowed(_) => h.value,
                        };
                        Header::new(h.name, value)
                    }
                }
            })
            .collect()
    }

    /// Sanitizes a percent-encoded path, segment by segment.
    pub fn path(&self, path: &str, stats: &mut SanitizeStats) -> String {
        self.path_cow(path, stats).into_owned()
    }

    /// [`Self::path`] for a path the caller owns: unchanged, it keeps its string.
    fn path_owned(&self, path: String, stats: &mut SanitizeStats) -> String {
        match self.path_cow(&path, stats) {
            Cow::Owned(new) => new,
            Cow::Borrowed(_) => path,
        }
    }

    /// [`Self::path`], borrowing the path when no segment changes.
    fn path_cow<'p>(&self, path: &'p str, stats: &mut SanitizeStats) -> Cow<'p, str> {
        // Built only from the first segment that changes.
        let mut out: Option<String> = None;
        let mut at = 0;
        for (i, seg) in path.split('/').enumerate() {
            if i > 0 {
                at += 1;
                if let Some(out) = &mut out {
                    out.push('/');
                }
            }
            // Most segments hold no escape: they are their own decoded text.
            let decoded = if seg.contains('%') {
                percent_encoding::percent_decode_str(seg).decode_utf8_lossy()
            } else {
                Cow::Borrowed(seg)
            };
            let mut sanitized = self.text(&decoded, stats);
            if matches!(sanitized, Cow::Borrowed(_)) && decoded.contains('+') {
                // Many clients write spaces in paths as '+': look at that reading too.
                let spaced = decoded.replace('+', " ");
                if let Cow::Owned(new) = self.text(&spaced, stats) {
                    sanitized = Cow::Owned(new);
                }
            }
            match sanitized {
                Cow::Borrowed(_) => {
                    if let Some(out) = &mut out {
                        out.push_str(seg);
                    }
                }
                Cow::Owned(new) => {
                    let out = out.get_or_insert_with(|| {
                        let mut out = String::with_capacity(path.len() + 16);
                        out.push_str(&path[..at]);
                        out
                    });
                    out.extend(percent_encoding::utf8_percent_encode(&new, PATH_SEGMENT));
                }
            }
            at += seg.len();
        }
        match out {
            Some(out) => Cow::Owned(out),
            None => Cow::Borrowed(path),
        }
    }

    /// Sanitizes a whole exchange. Bodies are decoded (gzip/deflate) and cut to the limits
    /// first, so what is sanitized is exactly what can be written.
    pub fn sanitize(
        &self,
        ex: Exchange,
        limits: &BodyLimits,
        stats: &mut SanitizeStats,
    ) -> SanitizedExchange {
        let pending = self.sanitize_request(ex, limits, stats);
        self.finish(pending, limits, stats)
    }

    /// Sanitizes the request only: enough for the dedupe key ([`PendingExchange::dedupe_key`]).
    /// The response stays raw inside the result, which can only be finished by
    /// [`Self::finish`] or dropped (a repeated request's response is never looked at).
    pub fn sanitize_request(
        &self,
        ex: Exchange,
        limits: &BodyLimits,
        stats: &mut SanitizeStats,
    ) -> PendingExchange {
        let Exchange {
            source,
            captured_at,
            request,
            response,
        } = ex;
        let host = request
            .host
            .as_deref()
            .map(|h| self.text(h, stats).into_owned());
        let path = self.path_owned(request.path, stats);
        let query = request
            .query
            .into_iter()
            .map(|(k, v)| self.param_owned(k, v, stats))
            .collect();
        let (req_body, req_headers) = body::prepare(request.body, request.headers, limits);
        let request_body = self.body(req_body, &req_headers, stats);
        let request_headers = self.headers(req_headers, stats);
        PendingExchange {
            clean: SanitizedExchange {
                source,
                captured_at,
                method: request.method,
                host,
                path,
                query,
                request_headers,
                request_body,
                status: response.status,
                response_headers: Vec::new(),
                response_body: SanitizedBody {
                    content: BodyContent::Empty,
                    truncated: false,
                    note: None,
                },
            },
            response,
        }
    }

    /// Sanitizes the response of an exchange whose request [`Self::sanitize_request`]
    /// sanitized.
    pub fn finish(
        &self,
        pending: PendingExchange,
        limits: &BodyLimits,
        stats: &mut SanitizeStats,
    ) -> SanitizedExchange {
        let PendingExchange {
            mut clean,
            response,
        } = pending;
        let (resp_body, resp_headers) = body::prepare(response.body, response.headers, limits);
        clean.response_body = self.body(resp_body, &resp_headers, stats);
        clean.response_headers = self.headers(resp_headers, stats);
        clean
    }

    fn body(
        &self,
        prepared: body::Prepared,
        headers: &[Header],
        stats: &mut SanitizeStats,
    ) -> SanitizedBody {
        body::sanitize(self, prepared, headers, stats)
    }
}

/// Whether a header name contains `key`, `token` or `secret` (any case), in one pass: only
/// the bytes that can start one of them (`k`, `t`, `s`, any case) look further.
fn names_a_secret(name: &[u8]) -> bool {
    let at = |i: usize, word: &[u8]| {
        name.get(i..i + word.len())
            .is_some_and(|h| h.eq_ignore_ascii_case(word))
    };
    name.iter().enumerate().any(|(i, &b)| match b | 0x20 {
        b'k' => at(i, b"key"),
        b't' => at(i, b"token"),
        b's' => at(i, b"secret"),
        _ => false,
    })
}

/// Characters escaped in a path segment we rebuild.
const PATH_SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'/')
    .add(b'%');

/// An exchange whose request is sanitized and whose response is still raw (in memory only:
/// no `Debug`, no `Serialize`, and no accessor for the response). The pipeline computes the
/// dedupe key from the request and finishes only exchanges it will write.
pub struct PendingExchange {
    /// The request part; the response fields are empty until [`Sanitizer::finish`].
    clean: SanitizedExchange,
    response: Response,
}

impl PendingExchange {
    /// The dedupe key: it depends only on the sanitized request (see [`dedupe_key`]).
    pub fn dedupe_key(&self, body_prefix: usize) -> DedupeKey {
        dedupe_key(&self.clean, body_prefix)
    }

    /// The upper-case method.
    pub fn method(&self) -> &str {
        &self.clean.method
    }
}

/// An exchange after sanitization: the only input the mapping generator accepts.
///
/// It can only be built by [`Sanitizer::sanitize`], so holding one proves the data went
/// through the sanitizer.
#[derive(Clone, Debug)]
pub struct SanitizedExchange {
    pub(crate) source: SourceRef,
    pub(crate) captured_at: Option<OffsetDateTime>,
    pub(crate) method: String,
    pub(crate) host: Option<String>,
    pub(crate) path: String,
    pub(crate) query: Vec<(String, String)>,
    pub(crate) request_headers: Vec<Header>,
    pub(crate) request_body: SanitizedBody,
    pub(crate) status: u16,
    pub(crate) response_headers: Vec<Header>,
    pub(crate) response_body: SanitizedBody,
}

impl SanitizedExchange {
    /// Where the exchange came from.
    pub fn source(&self) -> &SourceRef {
        &self.source
    }
    /// Capture time, if known.
    pub fn captured_at(&self) -> Option<OffsetDateTime> {
        self.captured_at
    }
    /// Upper-case method.
    pub fn method(&self) -> &str {
        &self.method
    }
    /// Sanitized host, if known.
    pub fn host(&self) -> Option<&str> {
        self.host.as_deref()
    }
    /// Sanitized, percent-encoded path.
    pub fn path(&self) -> &str {
        &self.path
    }
    /// Sanitized, decoded query parameters in order.
    pub fn query(&self) -> &[(String, String)] {
        &self.query
    }
    /// Sanitized request headers.
    pub fn request_headers(&self) -> &[Header] {
        &self.request_headers
    }
    /// Sanitized request body.
    pub fn request_body(&self) -> &SanitizedBody {
        &self.request_body
    }
    /// Response status.
    pub fn status(&self) -> u16 {
        self.status
    }
    /// Sanitized response headers (`Content-Encoding` removed when the body was decoded).
    pub fn response_headers(&self) -> &[Header] {
        &self.response_headers
    }
    /// Sanitized response body.
    pub fn response_body(&self) -> &SanitizedBody {
        &self.response_body
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The lower-casing form of the header-name rules the byte comparisons replaced.
    fn header_kind_reference(name: &str) -> Option<Kind> {
        let lower = name.to_ascii_lowercase();
        if lower == "cookie" || lower == "set-cookie" {
            Some(Kind::Cookie)
        } else if lower == "authorization"
            || lower == "proxy-authorization"
            || lower.contains("key")
            || lower.contains("token")
            || lower.contains("secret")
        {
            Some(Kind::Header)
        } else {
            None
        }
    }

    proptest! {
        #[test]
        fn header_name_rules_equal_the_lower_case_form(
            name in prop_oneof![
                proptest::sample::select(&[
                    "Cookie", "SET-COOKIE", "authorization", "Proxy-Authorization", "X-Api-Key",
                    "x-auth-TOKEN", "X-Secret-Thing", "MonKey", "Keep-Alive", "X-Request-Id",
                    "Content-Type", "Cookie2", "X-Tok-En", "K", "",
                ][..]).prop_map(String::from),
                "[a-zA-Z-]{0,14}",
                any::<String>(),
            ]
        ) {
            let s = Sanitizer::builtin();
            let mut stats = SanitizeStats::default();
            let out = s.headers(vec![Header::new(name.clone(), "v")], &mut stats);
            let expected = header_kind_reference(&name);
            prop_assert_eq!(out[0].value == "SANITIZED_HEADER", expected.is_some());
            prop_assert_eq!(stats.get("cookie"), u64::from(expected == Some(Kind::Cookie)));
            prop_assert_eq!(stats.get("header"), u64::from(expected == Some(Kind::Header)));
        }
    }

    /// `Sanitizer::path` as the fourth pass left it (a new string built segment by
    /// segment): the reference for the borrowing form.
    fn path_reference(s: &Sanitizer, path: &str, stats: &mut SanitizeStats) -> String {
        let mut out = String::with_capacity(path.len());
        for (i, seg) in path.split('/').enumerate() {
            if i > 0 {
                out.push('/');
            }
            let decoded = if seg.contains('%') {
                percent_encoding::percent_decode_str(seg).decode_utf8_lossy()
            } else {
                Cow::Borrowed(seg)
            };
            let mut sanitized = s.text(&decoded, stats);
            if matches!(sanitized, Cow::Borrowed(_)) && decoded.contains('+') {
                let spaced = decoded.replace('+', " ");
                if let Cow::Owned(new) = s.text(&spaced, stats) {
                    sanitized = Cow::Owned(new);
                }
            }
            match sanitized {
                Cow::Borrowed(_) => out.push_str(seg),
                Cow::Owned(new) => {
                    out.extend(percent_encoding::utf8_percent_encode(&new, PATH_SEGMENT))
                }
            }
        }
        out
    }

    /// Path segments and parameters: plain words, ids, secrets of each kind (raw, encoded,
    /// with `+` for spaces), empty ones, key words.
    fn path_piece() -> impl Strategy<Value = String> {
        prop_oneof![
            proptest::sample::select(
                &[
                    "api",
                    "v1",
                    "customers",
                    "123",
                    "orders",
                    "ana@example.com",
                    "ana%40example.com",
                    "529.982.247-25",
                    "52998224725",
                    "4111+1111+1111+1111",
                    "4111%201111%201111%201111",
                    "+55+11+98765-4321",
                    "token",
                    "password",
                    "%",
                    "%zz",
                    "%C3%A9",
                    "",
                    "+",
                    "/",
                ][..]
            )
            .prop_map(String::from),
            "[a-z0-9%+.@-]{0,10}",
            any::<String>(),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// The path built only from the first changed segment (borrowed when none changes)
        /// equals the fourth pass' segment-by-segment copy: same path, same counts.
        #[test]
        fn path_equals_the_fourth_pass(parts in proptest::collection::vec(path_piece(), 0..8)) {
            let s = Sanitizer::builtin();
            let path = parts.join("/");
            let (mut a, mut b, mut c) = Default::default();
            let want = path_reference(&s, &path, &mut b);
            prop_assert_eq!(&s.path(&path, &mut a), &want);
            prop_assert_eq!(s.path_owned(path.clone(), &mut c), want);
            prop_assert_eq!(&a, &b);
            prop_assert_eq!(c, b);
        }

        /// A parameter sanitized from owned strings equals the borrowing form.
        #[test]
        fn owned_param_equals_param(name in path_piece(), value in path_piece()) {
            let s = Sanitizer::builtin();
            let (mut a, mut b) = (SanitizeStats::default(), SanitizeStats::default());
            prop_assert_eq!(
                s.param_owned(name.clone(), value.clone(), &mut a),
                s.param(&name, &value, &mut b)
            );
            prop_assert_eq!(a, b);
        }
    }
}
