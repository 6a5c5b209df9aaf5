//! Our JSON Lines shape: one exchange per line. Documented in docs/capture.md:
//!
//! ```json
//! {"time":"2026-11-21T10:00:00Z",
//!  "request":{"method":"POST","url":"https://api.example.com/v1/orders?x=1",
//!             "headers":{"content-type":"application/json"},"body":{"sku":"A1"}},
//!  "response":{"status":201,"headers":{"content-type":["application/json"]},
//!              "body":"{\"id\":7}"}}
//! ```
//!
//! `url` may be absolute or a path; `headers` is an object (string or list-of-strings values)
//! or a list of `[name, value]` pairs; `body` is a string (text), any other JSON value (sent as
//! JSON), or absent; `body_base64` carries binary bodies; `body_truncated` marks a cut body.
//! Blank lines and lines starting with `#` are ignored.

use base64::Engine as _;
use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::json_stream;
use super::{InputError, Parsed};
use crate::model::{
    Body, Exchange, Header, InputFormat, Request, Response, SourceRef, split_target,
};

/// Parses a JSONL file named `file`.
pub fn parse(file: &str, bytes: &[u8]) -> Parsed {
    let mut parsed = Parsed::default();
    for (i, line) in bytes.split(|b| *b == b'\n').enumerate() {
        let line_no = i + 1;
        let trimmed = line.trim_ascii();
        if trimmed.is_empty() || trimmed.starts_with(b"#") {
            continue;
        }
        let err = |position: String, message: String| InputError {
            file: file.to_string(),
            position,
            message,
        };
        let value: Value = match serde_json::from_slice(line) {
            Ok(v) => v,
            Err(e) => {
                let column = json_stream::error_offset(line, &e) + 1;
                parsed.errors.push(err(
                    format!("line {line_no}, column {column}"),
                    json_stream::syntax_message(&e),
                ));
                continue;
            }
        };
        let source = SourceRef {
            format: InputFormat::Jsonl,
            file: file.to_string(),
            position: format!("line {line_no}"),
        };
        match exchange(&value, source) {
            Ok(ex) => parsed.exchanges.push(ex),
            Err(message) => parsed.errors.push(err(format!("line {line_no}"), message)),
        }
    }
    parsed
}

fn obj<'a>(v: Option<&'a Value>, what: &str) -> Result<&'a Map<String, Value>, String> {
    v.and_then(Value::as_object)
        .ok_or_else(|| format!("{what} is missing or not an object"))
}

fn exchange(v: &Value, source: SourceRef) -> Result<Exchange, String> {
    let top = obj(Some(v), "the line")?;
    let req = obj(top.get("request"), "request")?;
    let resp = obj(top.get("response"), "response")?;
    let method = req
        .get("method")
        .and_then(Value::as_str)
        .ok_or("request.method is missing or not a string")?;
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err("request.method is not a method token".into());
    }
    let url = req
        .get("url")
        .and_then(Value::as_str)
        .ok_or("request.url is missing or not a string")?;
    let (host, path, query) = split_target(url);
    let req_headers = headers(req.get("headers"), "request.headers")?;
    let req_body = body(req, "request")?;
    let status = resp
        .get("status")
        .and_then(Value::as_u64)
        .and_then(|s| u16::try_from(s).ok())
        .filter(|s| (100..=599).contains(s))
        .ok_or("response.status is missing or not a status code 100-599")?;
    let resp_headers = headers(resp.get("headers"), "response.headers")?;
    let resp_body = body(resp, "response")?;
    let captured_at = match top.get("time") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => {
            Some(OffsetDateTime::parse(s, &Rfc3339).map_err(|_| "time is not an RFC 3339 time")?)
        }
        Some(_) => return Err("time must be an RFC 3339 string".into()),
    };
    let host = host.or_else(|| crate::model::header(&req_headers, "host").map(str::to_string));
    Ok(Exchange {
        source,
        captured_at,
        request: Request {
            method: method.to_ascii_uppercase(),
            host,
            path,
            query,
            headers: req_headers,
            body: req_body,
        },
        response: Response {
            status,
            headers: resp_headers,
            body: resp_body,
        },
    })
}

fn headers(v: Option<&Value>, what: &str) -> Result<Vec<Header>, String> {
    let mut out = Vec::new();
    match v {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) => {
            for (name, value) in m {
                match value {
                    Value::String(s) => out.push(Header::new(name, s)),
                    Value::Array(list) => {
                        for item in list {
                            let s = item
                                .as_str()
                                .ok_or_else(|| format!("{what}.{name}: values must be strings"))?;
                            out.push(Header::new(name, s));
                        }
                    }
                    _ => return Err(format!("{what}.{name}: value must be a string or a list")),
                }
            }
        }
        Some(Value::Array(list)) => {
            for (i, pair) in list.iter().enumerate() {
                match pair.as_array().map(Vec::as_slice) {
                    Some([Value::String(n), Value::String(v)]) => out.push(Header::new(n, v)),
                    _ => {
                        return Err(format!(
                            "{what}[{i}] must be a [name, value] pair of strings"
                        ));
                    }
                }
            }
        }
        Some(_) => return Err(format!("{what} must be an object or a list of pairs")),
    }
    Ok(out)
}

fn body(m: &Map<String, Value>, what: &str) -> Result<Body, String> {
    let truncated = matches!(m.get("body_truncated"), Some(Value::Bool(true)));
    let bytes = match (m.get("body"), m.get("body_base64")) {
        (Some(_), Some(_)) => return Err(format!("{what}: give body or body_base64, not both")),
        (Some(Value::Null), None) | (None, None) => Vec::new(),
        (Some(Value::String(s)), None) => s.as_bytes().to_vec(),
        (Some(other), None) => serde_json::to_vec(other).map_err(|e| e.to_string())?,
        (None, Some(Value::String(b))) => base64::engine::general_purpose::STANDARD
            .decode(b.as_bytes())
            .map_err(|_| format!("{what}.body_base64 is not base64"))?,
        (None, Some(_)) => return Err(format!("{what}.body_base64 must be a string")),
    };
    Ok(Body { bytes, truncated })
}
