//! Body preparation (content decoding, limits) and structure-aware body sanitization.

use std::io::Read;

use serde_json::Value;

use super::{SanitizeStats, Sanitizer, stream};
use crate::model::{Body, Header, header};

/// Body limits applied before sanitizing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BodyLimits {
    /// Bodies are cut to this many bytes (after decoding) and marked truncated. Default 8 KiB.
    pub max_body: usize,
}

impl Default for BodyLimits {
    fn default() -> Self {
        BodyLimits { max_body: 8 * 1024 }
    }
}

/// What a sanitized body holds.
#[derive(Clone, Debug, PartialEq)]
pub enum BodyContent {
    /// No body.
    Empty,
    /// A complete JSON document (sanitized, compact).
    Json(JsonText),
    /// UTF-8 text (including form bodies and truncated JSON).
    Text(String),
    /// Bytes that are not UTF-8.
    Binary(Vec<u8>),
}

/// A sanitized JSON document as compact JSON text (valid UTF-8), kept as bytes so it is
/// embedded in mappings as it is, never re-parsed or re-serialised.
#[derive(Clone, PartialEq, Eq)]
pub struct JsonText(Vec<u8>);

impl JsonText {
    /// The JSON text.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The JSON text as a string.
    pub fn as_str(&self) -> &str {
        // Built only from validated UTF-8 and UTF-8 replacements.
        std::str::from_utf8(&self.0).unwrap_or("")
    }

    /// The document as a `serde_json::Value` (for callers that inspect it; the pipeline never
    /// needs to).
    pub fn to_value(&self) -> Value {
        serde_json::from_slice(&self.0).unwrap_or(Value::Null)
    }
}

impl std::fmt::Debug for JsonText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "JsonText({})", self.as_str())
    }
}

/// A sanitized body with what we know about its completeness.
#[derive(Clone, Debug, PartialEq)]
pub struct SanitizedBody {
    /// The content.
    pub content: BodyContent,
    /// True when the body is incomplete (cut by the capture or the limit, or dropped).
    pub truncated: bool,
    /// Why the body is not what was sent, when it is not (e.g. an unsupported encoding).
    pub note: Option<&'static str>,
}

impl SanitizedBody {
    /// True when there is no content.
    pub fn is_empty(&self) -> bool {
        matches!(self.content, BodyContent::Empty)
    }
}

pub(crate) struct Prepared {
    bytes: Vec<u8>,
    truncated: bool,
    note: Option<&'static str>,
}

/// Decodes `Content-Encoding` and applies the size limit. The header is removed when the body
/// was decoded (or dropped), since what we keep is no longer encoded.
pub(crate) fn prepare(
    body: Body,
    mut headers: Vec<Header>,
    limits: &BodyLimits,
) -> (Prepared, Vec<Header>) {
    let mut bytes = body.bytes;
    let mut truncated = body.truncated;
    let mut note = None;
    let encoding = header(&headers, "content-encoding").map(|e| e.to_ascii_lowercase());
    if let Some(encoding) = encoding {
        if !bytes.is_empty() {
            // Encodings apply in order, so undo them last-first.
            for enc in encoding.rsplit(',').map(str::trim) {
                match enc {
                    "identity" | "" => {}
                    "gzip" | "x-gzip" | "deflate" => {
                        match decode(&bytes, enc, limits.max_body, truncated) {
                            Ok((out, cut)) => {
                                bytes = out;
                                truncated |= cut;
                            }
                            Err(()) => {
                                bytes = Vec::new();
                                truncated = true;
                                note = Some("body could not be decoded; dropped");
                                break;
                            }
                        }
                    }
                    _ => {
                        // We cannot look inside, so we cannot sanitize: never keep it.
                        bytes = Vec::new();
                        truncated = true;
                        note = Some("unsupported content-encoding; body dropped");
                        break;
                    }
                }
            }
        }
        headers.retain(|h| !h.name.eq_ignore_ascii_case("content-encoding"));
    }
    if bytes.len() > limits.max_body {
        bytes.truncate(limits.max_body);
        truncated = true;
    }
    (
        Prepared {
            bytes,
            truncated,
            note,
        },
        headers,
    )
}

/// Decodes gzip/deflate, reading at most `limit + 1` bytes of output (zip bombs stay small).
/// A body that does not start like the encoding is taken as already decoded (HAR exports
/// keep the header but store the decoded text).
fn decode(
    bytes: &[u8],
    enc: &str,
    limit: usize,
    input_truncated: bool,
) -> Result<(Vec<u8>, bool), ()> {
    let mut out = Vec::new();
    let cap = limit as u64 + 1;
    let result = if enc == "deflate" {
        if bytes.first() == Some(&0x78) {
            flate2::read::ZlibDecoder::new(bytes)
                .take(cap)
                .read_to_end(&mut out)
        } else {
            let r = flate2::read::DeflateDecoder::new(bytes)
                .take(cap)
                .read_to_end(&mut out);
            if r.is_err() && out.is_empty() {
                return Ok((bytes.to_vec(), false));
            }
            r
        }
    } else {
        if !bytes.starts_with(&[0x1f, 0x8b]) {
            return Ok((bytes.to_vec(), false));
        }
        flate2::read::MultiGzDecoder::new(bytes)
            .take(cap)
            .read_to_end(&mut out)
    };
    match result {
        Ok(_) => Ok((out, false)),
        // A capture cut mid-stream decodes partially: keep what we got, marked truncated.
        Err(_) if input_truncated && !out.is_empty() => Ok((out, true)),
        Err(_) => Err(()),
    }
}

fn is_json_type(ct: Option<&str>) -> bool {
    ct.is_some_and(|c| {
        let c = c.to_ascii_lowercase();
        let essence = c.split(';').next().unwrap_or("").trim().to_string();
        essence.ends_with("/json") || essence.ends_with("+json")
    })
}

fn is_form_type(ct: Option<&str>) -> bool {
    ct.is_some_and(|c| {
        c.to_ascii_lowercase()
            .starts_with("application/x-www-form-urlencoded")
    })
}

pub(crate) fn sanitize(
    s: &Sanitizer,
    p: Prepared,
    headers: &[Header],
    stats: &mut SanitizeStats,
) -> SanitizedBody {
    let Prepared {
        bytes,
        truncated,
        note,
    } = p;
    let done = |content| SanitizedBody {
        content,
        truncated,
        note,
    };
    if bytes.is_empty() {
        return done(BodyContent::Empty);
    }
    let ct = header(headers, "content-type");
    let looks_json = matches!(
        bytes.iter().find(|b| !b.is_ascii_whitespace()),
        Some(b'{' | b'[')
    );
    let mut bytes = bytes;
    if !truncated && (is_json_type(ct) || (ct.is_none() && looks_json)) {
        match stream::sanitize(s, bytes, stats) {
            Ok(json) => return done(BodyContent::Json(JsonText(json))),
            // Not valid JSON: the text rules below still apply to every byte.
            Err(back) => bytes = back,
        }
    }
    match String::from_utf8(bytes) {
        Ok(text) => {
            if is_form_type(ct) {
                let before = stats.total();
                let mut ser = url::form_urlencoded::Serializer::new(String::new());
                for (k, v) in url::form_urlencoded::parse(text.as_bytes()) {
                    let (k, v) = s.param(&k, &v, stats);
                    ser.append_pair(&k, &v);
                }
                // Keep the client's exact encoding when nothing was replaced, so an `equalTo`
                // matcher on the body still matches what the client sends.
                let out = if stats.total() == before {
                    text
                } else {
                    ser.finish()
                };
                return done(BodyContent::Text(out));
            }
            done(BodyContent::Text(s.text(&text, stats).into_owned()))
        }
        Err(e) => done(BodyContent::Binary(
            s.bytes(e.as_bytes(), stats).into_owned(),
        )),
    }
}
