//! The trace model every input format is parsed into.
//!
//! An [`Exchange`] holds *raw* captured data. It lives in memory only: the sanitizer turns it
//! into a [`crate::SanitizedExchange`], and only that type can reach the mapping generator.
//! `Exchange` deliberately does not implement `Debug` or `Serialize`, so raw values cannot be
//! logged or written by accident.

use std::fmt;

use time::OffsetDateTime;

/// Which input format a trace came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum InputFormat {
    /// Envoy HTTP tap output (`file_per_tap` JSON files or the admin `/tap` stream).
    EnvoyTap,
    /// A HAR 1.2 export.
    Har,
    /// Our documented JSON Lines shape (see docs/capture.md).
    Jsonl,
    /// The recording reverse proxy (`apm capture record`).
    Record,
}

impl InputFormat {
    /// The name used on the command line and in mapping metadata.
    pub fn as_str(self) -> &'static str {
        match self {
            InputFormat::EnvoyTap => "envoy-tap",
            InputFormat::Har => "har",
            InputFormat::Jsonl => "jsonl",
            InputFormat::Record => "record",
        }
    }
}

impl fmt::Display for InputFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for InputFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "envoy-tap" | "envoy" => Ok(InputFormat::EnvoyTap),
            "har" => Ok(InputFormat::Har),
            "jsonl" => Ok(InputFormat::Jsonl),
            other => Err(format!(
                "unknown input format '{other}': expected envoy-tap, har or jsonl"
            )),
        }
    }
}

/// Where a trace came from: format, file (as given by the caller) and a position inside it.
///
/// Positions never contain captured values, so a `SourceRef` is safe to log and to write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceRef {
    /// Input format.
    pub format: InputFormat,
    /// File name or listener description.
    pub file: String,
    /// Human-readable position, e.g. `line 3, column 1` or `entry 4`.
    pub position: String,
}

impl fmt::Display for SourceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{} ({})", self.file, self.position, self.format)
    }
}

/// One header as captured. Names keep their captured case; comparisons are case-insensitive.
#[derive(Clone, PartialEq, Eq)]
pub struct Header {
    /// Header name.
    pub name: String,
    /// Header value.
    pub value: String,
}

impl Header {
    /// A header from name and value.
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Self {
        Header {
            name: name.into(),
            value: value.into(),
        }
    }
}

impl fmt::Debug for Header {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Headers are printed by name only: a raw value must never reach a log.
        write!(f, "{}: …", self.name)
    }
}

/// A captured body: the bytes we have and whether the capture cut it short.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Body {
    /// The (possibly partial) body.
    pub bytes: Vec<u8>,
    /// True when the capturing side or our body limit cut the body short.
    pub truncated: bool,
}

impl Body {
    /// A complete body.
    pub fn complete(bytes: impl Into<Vec<u8>>) -> Self {
        Body {
            bytes: bytes.into(),
            truncated: false,
        }
    }
}

/// A captured request.
#[derive(Clone, PartialEq, Eq)]
pub struct Request {
    /// Upper-case method, e.g. `GET`.
    pub method: String,
    /// Host (authority) the request was sent to, when known.
    pub host: Option<String>,
    /// The path as sent (percent-encoded), without the query. Always starts with `/`.
    pub path: String,
    /// Query parameters in order, percent-decoded.
    pub query: Vec<(String, String)>,
    /// Request headers (pseudo-headers removed).
    pub headers: Vec<Header>,
    /// Request body.
    pub body: Body,
}

/// A captured response.
#[derive(Clone, PartialEq, Eq)]
pub struct Response {
    /// HTTP status code.
    pub status: u16,
    /// Response headers (pseudo-headers removed).
    pub headers: Vec<Header>,
    /// Response body.
    pub body: Body,
}

/// One captured request/response pair, raw. Memory only (see the module docs).
#[derive(Clone)]
pub struct Exchange {
    /// Where it came from.
    pub source: SourceRef,
    /// When it was captured, if the input says.
    pub captured_at: Option<OffsetDateTime>,
    /// The request.
    pub request: Request,
    /// The response.
    pub response: Response,
}

/// Finds the first header with this name (case-insensitive).
pub fn header<'a>(headers: &'a [Header], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value.as_str())
}

/// Splits a request target (`/path?query`) into the path and decoded query parameters.
///
/// An absolute URL (`http://host/path`) is accepted too; its authority is returned.
pub fn split_target(target: &str) -> (Option<String>, String, Vec<(String, String)>) {
    let (authority, rest) = match target.find("://") {
        Some(i) if target[..i].chars().all(|c| c.is_ascii_alphabetic()) => {
            let after = &target[i + 3..];
            let end = after.find(['/', '?', '#']).unwrap_or(after.len());
            (Some(after[..end].to_string()), &after[end..])
        }
        _ => (None, target),
    };
    let rest = rest.split('#').next().unwrap_or("");
    let (path, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    };
    let path = if path.is_empty() {
        "/".to_string()
    } else if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    };
    let query = query
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect()
        })
        .unwrap_or_default();
    (authority, path, query)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_target_handles_relative_absolute_and_query() {
        let (a, p, q) = split_target("/v1/orders?id=7&x=a%20b&flag");
        assert_eq!(a, None);
        assert_eq!(p, "/v1/orders");
        assert_eq!(
            q,
            vec![
                ("id".into(), "7".into()),
                ("x".into(), "a b".into()),
                ("flag".into(), String::new())
            ]
        );
        let (a, p, q) = split_target("https://api.example.com:8443/a/b?c=d#frag");
        assert_eq!(a.as_deref(), Some("api.example.com:8443"));
        assert_eq!(p, "/a/b");
        assert_eq!(q, vec![("c".into(), "d".into())]);
        let (a, p, q) = split_target("http://example.com");
        assert_eq!(
            (a.as_deref(), p.as_str(), q.len()),
            (Some("example.com"), "/", 0)
        );
    }
}
