//! HAR 1.2 exports (browser dev tools, proxies). Each entry becomes one exchange; a bad entry
//! is reported as `entry N` and skipped.

use base64::Engine as _;
use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::json_stream::{self, Lines};
use super::{InputError, Parsed};
use crate::model::{
    Body, Exchange, Header, InputFormat, Request, Response, SourceRef, split_target,
};

/// Parses a HAR file named `file`.
pub fn parse(file: &str, bytes: &[u8]) -> Parsed {
    let mut parsed = Parsed::default();
    let root: Value = match serde_json::from_slice(bytes) {
        Ok(v) => v,
        Err(e) => {
            let lines = Lines::new(bytes);
            parsed.errors.push(InputError {
                file: file.to_string(),
                position: lines.describe(json_stream::error_offset(bytes, &e)),
                message: json_stream::syntax_message(&e),
            });
            return parsed;
        }
    };
    let entries = match root.get("log").and_then(|l| l.get("entries")) {
        Some(Value::Array(entries)) => entries,
        _ => {
            parsed.errors.push(InputError {
                file: file.to_string(),
                position: "log.entries".into(),
                message: "not a HAR file: expected log.entries to be a list".into(),
            });
            return parsed;
        }
    };
    for (i, entry) in entries.iter().enumerate() {
        let source = SourceRef {
            format: InputFormat::Har,
            file: file.to_string(),
            position: format!("entry {}", i + 1),
        };
        match entry_to_exchange(entry, source.clone()) {
            Ok(ex) => parsed.exchanges.push(ex),
            Err(message) => parsed.errors.push(InputError {
                file: source.file,
                position: source.position,
                message,
            }),
        }
    }
    parsed
}

fn obj<'a>(v: &'a Value, what: &str) -> Result<&'a Map<String, Value>, String> {
    v.as_object()
        .ok_or_else(|| format!("{what} must be an object"))
}

fn string<'a>(m: &'a Map<String, Value>, key: &str, what: &str) -> Result<&'a str, String> {
    m.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("{what}.{key} is missing or not a string"))
}

fn entry_to_exchange(entry: &Value, source: SourceRef) -> Result<Exchange, String> {
    let entry = obj(entry, "entry")?;
    let request = obj(
        entry.get("request").ok_or("entry has no request")?,
        "request",
    )?;
    let response = obj(
        entry.get("response").ok_or("entry has no response")?,
        "response",
    )?;
    let method = string(request, "method", "request")?;
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err("request.method is not a method token".into());
    }
    let url = string(request, "url", "request")?;
    let (host, path, query) = split_target(url);
    let req_headers = headers(request.get("headers"), "request.headers")?;
    let req_body = match request.get("postData") {
        None | Some(Value::Null) => Body::default(),
        Some(pd) => post_data(obj(pd, "request.postData")?)?,
    };
    let status = response
        .get("status")
        .and_then(Value::as_u64)
        .ok_or("response.status is missing or not a number")?;
    if status == 0 {
        return Err("response.status is 0 (no response was received)".into());
    }
    let status = u16::try_from(status)
        .ok()
        .filter(|s| (100..=599).contains(s))
        .ok_or("response.status is not a status code 100-599")?;
    let mut resp_headers = headers(response.get("headers"), "response.headers")?;
    // HAR stores the decoded body (`content.text`), so the encoding header no longer applies.
    resp_headers.retain(|h| !h.name.eq_ignore_ascii_case("content-encoding"));
    let resp_body = match response.get("content") {
        None | Some(Value::Null) => Body::default(),
        Some(c) => content(obj(c, "response.content")?)?,
    };
    let captured_at = entry
        .get("startedDateTime")
        .and_then(Value::as_str)
        .and_then(|s| OffsetDateTime::parse(s, &Rfc3339).ok());
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
    let list = match v {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(l)) => l,
        Some(_) => return Err(format!("{what} must be a list")),
    };
    let mut out = Vec::with_capacity(list.len());
    for (i, h) in list.iter().enumerate() {
        let h = obj(h, &format!("{what}[{i}]"))?;
        let name = string(h, "name", &format!("{what}[{i}]"))?;
        if name.starts_with(':') {
            // HTTP/2 pseudo-headers duplicate method/url/status.
            continue;
        }
        let value = string(h, "value", &format!("{what}[{i}]"))?;
        out.push(Header::new(name, value));
    }
    Ok(out)
}

fn post_data(pd: &Map<String, Value>) -> Result<Body, String> {
    if let Some(text) = pd.get("text").and_then(Value::as_str) {
        let bytes = if pd.get("encoding").and_then(Value::as_str) == Some("base64") {
            base64::engine::general_purpose::STANDARD
                .decode(text.as_bytes())
                .map_err(|_| "request.postData.text is marked base64 but is not")?
        } else {
            text.as_bytes().to_vec()
        };
        return Ok(Body::complete(bytes));
    }
    if let Some(Value::Array(params)) = pd.get("params") {
        let mut ser = url::form_urlencoded::Serializer::new(String::new());
        for (i, p) in params.iter().enumerate() {
            let p = obj(p, &format!("request.postData.params[{i}]"))?;
            let name = string(p, "name", &format!("request.postData.params[{i}]"))?;
            let value = p.get("value").and_then(Value::as_str).unwrap_or("");
            ser.append_pair(name, value);
        }
        return Ok(Body::complete(ser.finish().into_bytes()));
    }
    Ok(Body::default())
}

fn content(c: &Map<String, Value>) -> Result<Body, String> {
    let size = c.get("size").and_then(Value::as_u64).unwrap_or(0);
    let Some(text) = c.get("text").and_then(Value::as_str) else {
        // The exporter left the body out: we know it existed, not what it was.
        return Ok(Body {
            bytes: Vec::new(),
            truncated: size > 0,
        });
    };
    let bytes = if c.get("encoding").and_then(Value::as_str) == Some("base64") {
        base64::engine::general_purpose::STANDARD
            .decode(text.as_bytes())
            .map_err(|_| "response.content.text is marked base64 but is not")?
    } else {
        text.as_bytes().to_vec()
    };
    Ok(Body::complete(bytes))
}
