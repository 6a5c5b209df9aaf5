//! Envoy HTTP tap traces.
//!
//! Accepts what the `file_per_tap` sink writes with `JSON_BODY_AS_STRING` or
//! `JSON_BODY_AS_BYTES` (one `{"http_buffered_trace": …}` per file, or streamed
//! `{"http_streamed_trace_segment": …}` objects) and the admin `/tap` stream (the same objects
//! concatenated, pretty-printed, with no delimiter). Streamed segments are stitched by
//! `trace_id`, across files, by [`EnvoyStitcher`].

use std::collections::BTreeMap;

use base64::Engine as _;
use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::json_stream::{self, Item, Lines};
use super::{InputError, Parsed};
use crate::model::{
    Body, Exchange, Header, InputFormat, Request, Response, SourceRef, split_target,
};

/// Collects streamed trace segments by `trace_id` across files and turns buffered traces
/// into exchanges directly.
#[derive(Default)]
pub struct EnvoyStitcher {
    streams: BTreeMap<String, Stream>,
}

#[derive(Default)]
struct Stream {
    source: Option<SourceRef>,
    request_headers: Option<Vec<Header>>,
    request_body: Body,
    response_headers: Option<Vec<Header>>,
    response_body: Body,
}

impl EnvoyStitcher {
    /// A stitcher with no pending segments.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses one file (or admin stream capture) named `file`.
    ///
    /// Buffered traces come back at once; streamed segments are kept until [`Self::finish`].
    pub fn feed(&mut self, file: &str, bytes: &[u8]) -> Parsed {
        let lines = Lines::new(bytes);
        let mut parsed = Parsed::default();
        for item in json_stream::split(bytes) {
            match item {
                Item::Error(offset, message) => parsed.errors.push(InputError {
                    file: file.to_string(),
                    position: lines.describe(offset),
                    message,
                }),
                Item::Value(offset, value) => {
                    let source = SourceRef {
                        format: InputFormat::EnvoyTap,
                        file: file.to_string(),
                        position: lines.describe(offset),
                    };
                    if let Err(message) = self.value(value, source.clone(), &mut parsed) {
                        parsed.errors.push(InputError {
                            file: source.file,
                            position: source.position,
                            message,
                        });
                    }
                }
            }
        }
        parsed
    }

    fn value(&mut self, value: Value, source: SourceRef, out: &mut Parsed) -> Result<(), String> {
        let Value::Object(mut top) = value else {
            return Err("a tap trace must be a JSON object".into());
        };
        if let Some(trace) = top.remove("http_buffered_trace") {
            let trace = as_object(trace, "http_buffered_trace")?;
            out.exchanges.push(buffered(trace, source)?);
            Ok(())
        } else if let Some(segment) = top.remove("http_streamed_trace_segment") {
            let segment = as_object(segment, "http_streamed_trace_segment")?;
            self.segment(segment, source)
        } else if top.contains_key("request") && top.contains_key("response") {
            // An unwrapped HttpBufferedTrace, as some tools re-emit it.
            out.exchanges.push(buffered(top, source)?);
            Ok(())
        } else if top.contains_key("socket_buffered_trace")
            || top.contains_key("socket_streamed_trace_segment")
        {
            Err("a socket (transport) tap trace, not an HTTP one: not supported".into())
        } else {
            Err("not an Envoy tap trace: expected http_buffered_trace or \
                 http_streamed_trace_segment"
                .into())
        }
    }

    fn segment(&mut self, mut seg: Map<String, Value>, source: SourceRef) -> Result<(), String> {
        let id = match seg.remove("trace_id") {
            // proto3 JSON writes uint64 as a string; accept a number too.
            Some(Value::String(s)) => s,
            Some(Value::Number(n)) => n.to_string(),
            _ => return Err("http_streamed_trace_segment: missing trace_id".into()),
        };
        let stream = self.streams.entry(id).or_default();
        if stream.source.is_none() {
            stream.source = Some(source);
        }
        if let Some(h) = seg.remove("request_headers") {
            stream.request_headers = Some(header_map(h, "request_headers")?);
        }
        if let Some(b) = seg.remove("request_body_chunk") {
            append_chunk(&mut stream.request_body, b, "request_body_chunk")?;
        }
        if let Some(h) = seg.remove("response_headers") {
            stream.response_headers = Some(header_map(h, "response_headers")?);
        }
        if let Some(b) = seg.remove("response_body_chunk") {
            append_chunk(&mut stream.response_body, b, "response_body_chunk")?;
        }
        // Trailers are accepted and not used: mappings have no trailer support.
        Ok(())
    }

    /// Turns every stitched stream into an exchange; incomplete streams become errors.
    pub fn finish(self) -> Parsed {
        let mut parsed = Parsed::default();
        for (id, stream) in self.streams {
            let source = stream.source.unwrap_or(SourceRef {
                format: InputFormat::EnvoyTap,
                file: String::new(),
                position: String::new(),
            });
            let (Some(req_headers), Some(resp_headers)) =
                (stream.request_headers, stream.response_headers)
            else {
                parsed.errors.push(InputError {
                    file: source.file,
                    position: source.position,
                    message: format!(
                        "streamed trace {id}: request or response headers never arrived; skipped"
                    ),
                });
                continue;
            };
            match exchange(
                req_headers,
                stream.request_body,
                resp_headers,
                stream.response_body,
                None,
                source.clone(),
            ) {
                Ok(ex) => parsed.exchanges.push(ex),
                Err(message) => parsed.errors.push(InputError {
                    file: source.file,
                    position: source.position,
                    message: format!("streamed trace {id}: {message}"),
                }),
            }
        }
        parsed
    }
}

fn as_object(v: Value, what: &str) -> Result<Map<String, Value>, String> {
    match v {
        Value::Object(m) => Ok(m),
        _ => Err(format!("{what} must be an object")),
    }
}

fn buffered(mut trace: Map<String, Value>, source: SourceRef) -> Result<Exchange, String> {
    let mut request = as_object(
        trace
            .remove("request")
            .ok_or("http_buffered_trace: missing request")?,
        "request",
    )?;
    let mut response = as_object(
        trace
            .remove("response")
            .ok_or("http_buffered_trace: missing response")?,
        "response",
    )?;
    let req_headers = headers(request.remove("headers"), "request.headers")?;
    let resp_headers = headers(response.remove("headers"), "response.headers")?;
    let req_body = body(request.remove("body"), "request.body")?;
    let resp_body = body(response.remove("body"), "response.body")?;
    let captured_at = match request.remove("headers_received_time") {
        Some(Value::String(s)) => Some(
            OffsetDateTime::parse(&s, &Rfc3339)
                .map_err(|_| "request.headers_received_time is not an RFC 3339 time")?,
        ),
        _ => None,
    };
    exchange(
        req_headers,
        req_body,
        resp_headers,
        resp_body,
        captured_at,
        source,
    )
}

fn exchange(
    req_headers: Vec<Header>,
    req_body: Body,
    resp_headers: Vec<Header>,
    resp_body: Body,
    captured_at: Option<OffsetDateTime>,
    source: SourceRef,
) -> Result<Exchange, String> {
    let mut method = None;
    let mut target = None;
    let mut authority = None;
    let mut request_headers = Vec::with_capacity(req_headers.len());
    for h in req_headers {
        match h.name.as_str() {
            ":method" => method = Some(h.value),
            ":path" => target = Some(h.value),
            ":authority" => authority = Some(h.value),
            n if n.starts_with(':') => {}
            _ => request_headers.push(h),
        }
    }
    let method = method.ok_or("request has no :method pseudo-header")?;
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err("request :method is not a method token".into());
    }
    let target = target.ok_or("request has no :path pseudo-header")?;
    let (url_authority, path, query) = split_target(&target);
    let host = authority
        .or(url_authority)
        .or_else(|| crate::model::header(&request_headers, "host").map(str::to_string));
    let mut status = None;
    let mut response_headers = Vec::with_capacity(resp_headers.len());
    for h in resp_headers {
        match h.name.as_str() {
            ":status" => status = Some(h.value),
            n if n.starts_with(':') => {}
            _ => response_headers.push(h),
        }
    }
    let status: u16 = status
        .ok_or("response has no :status pseudo-header")?
        .trim()
        .parse()
        .ok()
        .filter(|s| (100..=599).contains(s))
        .ok_or("response :status is not a status code 100-599")?;
    Ok(Exchange {
        source,
        captured_at,
        request: Request {
            method: method.to_ascii_uppercase(),
            host,
            path,
            query,
            headers: request_headers,
            body: req_body,
        },
        response: Response {
            status,
            headers: response_headers,
            body: resp_body,
        },
    })
}

fn header_map(v: Value, what: &str) -> Result<Vec<Header>, String> {
    let mut m = as_object(v, what)?;
    headers(m.remove("headers"), what)
}

fn headers(v: Option<Value>, what: &str) -> Result<Vec<Header>, String> {
    let list = match v {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(list)) => list,
        Some(_) => return Err(format!("{what} must be a list of {{key, value}}")),
    };
    let mut out = Vec::with_capacity(list.len());
    for (i, item) in list.into_iter().enumerate() {
        let Value::Object(mut h) = item else {
            return Err(format!("{what}[{i}] must be an object"));
        };
        let Some(Value::String(key)) = h.remove("key") else {
            return Err(format!("{what}[{i}]: missing key"));
        };
        let value = match (h.remove("value"), h.remove("raw_value")) {
            (Some(Value::String(v)), _) => v,
            (_, Some(Value::String(raw))) => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(raw.as_bytes())
                    .map_err(|_| format!("{what}[{i}].raw_value is not base64"))?;
                String::from_utf8_lossy(&bytes).into_owned()
            }
            (None | Some(Value::Null), None | Some(Value::Null)) => String::new(),
            _ => return Err(format!("{what}[{i}].value must be a string")),
        };
        out.push(Header { name: key, value });
    }
    Ok(out)
}

fn body(v: Option<Value>, what: &str) -> Result<Body, String> {
    let mut m = match v {
        None | Some(Value::Null) => return Ok(Body::default()),
        Some(Value::Object(m)) => m,
        Some(_) => return Err(format!("{what} must be an object")),
    };
    let truncated = matches!(m.remove("truncated"), Some(Value::Bool(true)));
    let bytes = match (m.remove("as_string"), m.remove("as_bytes")) {
        (Some(Value::String(s)), _) => s.into_bytes(),
        (_, Some(Value::String(b))) => base64::engine::general_purpose::STANDARD
            .decode(b.as_bytes())
            .map_err(|_| format!("{what}.as_bytes is not base64"))?,
        (None, None) => Vec::new(),
        _ => return Err(format!("{what}: as_string/as_bytes must be a string")),
    };
    Ok(Body { bytes, truncated })
}

fn append_chunk(body: &mut Body, v: Value, what: &str) -> Result<(), String> {
    let chunk = self::body(Some(v), what)?;
    body.bytes.extend_from_slice(&chunk.bytes);
    body.truncated |= chunk.truncated;
    Ok(())
}
