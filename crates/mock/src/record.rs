//! `apm capture record`: a recording reverse proxy. Each exchange is forwarded to the target,
//! captured in memory, sanitized and deduped at once (the raw copy is dropped right there);
//! mappings are written when recording stops.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use apm_capture::Pipeline;
use apm_capture::model::split_target;
use apm_capture::model::{Body, Exchange, Header, InputFormat, Request, Response, SourceRef};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{StatusCode, header};
use time::OffsetDateTime;

use crate::http::{Resp, response};

/// Largest request or response body forwarded (larger ones get 413/502: we buffer).
pub const MAX_FORWARD_BODY: usize = 32 * 1024 * 1024;

/// Headers that describe one connection, not the message, and are never forwarded.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Shared state of a recording proxy.
pub struct Recorder {
    target: url::Url,
    client: reqwest::Client,
    pipeline: Mutex<Pipeline>,
    listen: String,
}

/// Why the recorder could not start.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The target URL is not usable.
    #[error("target URL: {0}")]
    Target(String),
    /// The HTTP client could not be built.
    #[error("HTTP client: {0}")]
    Client(String),
    /// The CA certificates to trust for the target could not be used.
    #[error("target CA certificates: {0}")]
    Ca(String),
}

impl Recorder {
    /// A recorder forwarding to `target` (`http://host:port` or `https://…`, optionally with a
    /// base path) and feeding `pipeline`. An https target's certificate is verified against
    /// the system's roots plus `target_ca` (PEM certificates, e.g. a private CA or the
    /// target's self-signed certificate); verification is never turned off.
    pub fn new(
        target: &str,
        pipeline: Pipeline,
        listen: &str,
        target_ca: Option<&[u8]>,
    ) -> Result<Arc<Self>, RecordError> {
        let target = url::Url::parse(target).map_err(|e| RecordError::Target(e.to_string()))?;
        if !matches!(target.scheme(), "http" | "https") || target.host_str().is_none() {
            return Err(RecordError::Target(
                "must be an absolute http:// or https:// URL with a host".into(),
            ));
        }
        if target.query().is_some() || target.fragment().is_some() {
            return Err(RecordError::Target(
                "must not have a query or fragment".into(),
            ));
        }
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(60));
        if let Some(pem) = target_ca {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| RecordError::Ca(format!("not PEM certificates: {e}")))?;
            if certs.is_empty() {
                return Err(RecordError::Ca("no PEM certificate found".into()));
            }
            builder = builder.tls_certs_merge(certs);
        }
        let client = builder
            .build()
            .map_err(|e| RecordError::Client(e.to_string()))?;
        Ok(Arc::new(Recorder {
            target,
            client,
            pipeline: Mutex::new(pipeline),
            listen: listen.to_string(),
        }))
    }

    /// Runs `f` with the pipeline (for metrics, reports and mappings).
    pub fn with_pipeline<T>(&self, f: impl FnOnce(&mut Pipeline) -> T) -> T {
        let mut p = self.pipeline.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut p)
    }

    fn upstream_url(&self, path_and_query: &str) -> String {
        let base = self.target.as_str().trim_end_matches('/');
        format!("{base}{path_and_query}")
    }

    /// Forwards one request and records the exchange.
    pub async fn handle(self: Arc<Self>, req: hyper::Request<Incoming>) -> Resp {
        let (parts, body) = req.into_parts();
        let body = match Limited::new(body, MAX_FORWARD_BODY).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => {
                return response(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "text/plain",
                    "request body too large to record\n",
                );
            }
        };
        let path_and_query = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        let Ok(method) = reqwest::Method::from_bytes(parts.method.as_str().as_bytes()) else {
            return response(StatusCode::BAD_REQUEST, "text/plain", "bad method\n");
        };
        let mut fwd = self
            .client
            .request(method, self.upstream_url(&path_and_query));
        let mut req_headers = Vec::new();
        for (name, value) in &parts.headers {
            let n = name.as_str();
            if HOP_BY_HOP.contains(&n) || name == header::HOST || name == header::CONTENT_LENGTH {
                continue;
            }
            fwd = fwd.header(name.as_str(), value.as_bytes());
            req_headers.push(Header::new(n, String::from_utf8_lossy(value.as_bytes())));
        }
        let upstream = match fwd.body(body.clone()).send().await {
            Ok(r) => r,
            Err(e) => {
                // reqwest's message includes the URL, which holds captured path and query
                // values: report only the kind of failure.
                let kind = if e.is_timeout() {
                    "timeout"
                } else if e.is_connect() {
                    "connection failed"
                } else {
                    "request failed"
                };
                tracing::warn!(kind, "upstream error while recording");
                return response(
                    StatusCode::BAD_GATEWAY,
                    "text/plain",
                    format!("upstream {kind}\n"),
                );
            }
        };
        let status = upstream.status().as_u16();
        let mut resp_headers = Vec::new();
        let mut out = hyper::Response::builder().status(status);
        for (name, value) in upstream.headers() {
            let n = name.as_str();
            if HOP_BY_HOP.contains(&n) || name == header::CONTENT_LENGTH {
                continue;
            }
            out = out.header(name.as_str(), value.as_bytes());
            resp_headers.push(Header::new(n, String::from_utf8_lossy(value.as_bytes())));
        }
        let resp_body = match read_limited(upstream).await {
            Some(b) => b,
            None => {
                return response(
                    StatusCode::BAD_GATEWAY,
                    "text/plain",
                    "upstream body unreadable or too large\n",
                );
            }
        };
        let (_, path, query) = split_target(&path_and_query);
        let ex = Exchange {
            source: SourceRef {
                format: InputFormat::Record,
                file: self.listen.clone(),
                position: String::new(),
            },
            captured_at: Some(OffsetDateTime::now_utc()),
            request: Request {
                method: parts.method.as_str().to_ascii_uppercase(),
                host: self.target.host_str().map(|h| match self.target.port() {
                    Some(p) => format!("{h}:{p}"),
                    None => h.to_string(),
                }),
                path,
                query,
                headers: req_headers,
                body: Body::complete(body.to_vec()),
            },
            response: Response {
                status,
                headers: resp_headers,
                body: Body::complete(resp_body.to_vec()),
            },
        };
        self.with_pipeline(|p| p.process(ex));
        out.body(Full::new(resp_body)).unwrap_or_else(|_| {
            response(
                StatusCode::BAD_GATEWAY,
                "text/plain",
                "upstream response could not be relayed\n",
            )
        })
    }
}

async fn read_limited(mut r: reqwest::Response) -> Option<Bytes> {
    let mut buf = Vec::new();
    while let Some(chunk) = r.chunk().await.ok()? {
        if buf.len() + chunk.len() > MAX_FORWARD_BODY {
            return None;
        }
        buf.extend_from_slice(&chunk);
    }
    Some(Bytes::from(buf))
}
