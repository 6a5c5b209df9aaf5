//! Test origin servers: plain HTTP/1.1 on a loopback address, answering every request with
//! `200`, an `x-apm-origin: <name>` header and a body naming the origin, and counting requests.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, body::Incoming};
use hyper_util::rt::TokioIo;

use crate::serve::Running;

/// Header every origin response carries, with the origin's name.
pub const ORIGIN_HEADER: &str = "x-apm-origin";

/// One request as a test server saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenRequest {
    /// The method (`GET`, `CONNECT`, ...).
    pub method: String,
    /// The request target as sent (origin-form `/p`, absolute-form `http://h/p`, or `h:p`).
    pub target: String,
    /// The `Host` header, if any.
    pub host: Option<String>,
    /// The `Via` header, if any (ATS adds one when it forwards).
    pub via: Option<String>,
}

impl SeenRequest {
    pub(crate) fn from_request<B>(req: &Request<B>) -> Self {
        let header = |name: &str| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        Self {
            method: req.method().as_str().to_owned(),
            target: req.uri().to_string(),
            host: header("host"),
            via: header("via"),
        }
    }
}

/// A running origin server. Dropping it stops it.
pub struct Origin {
    name: String,
    seen: Arc<Mutex<Vec<SeenRequest>>>,
    running: Running,
}

impl Origin {
    /// Starts an origin called `name` on `ip` and an ephemeral port.
    ///
    /// Use `127.0.0.2` and up, never `127.0.0.1` (ATS never sends that host to a parent).
    pub fn start(name: &str, ip: IpAddr) -> std::io::Result<Self> {
        let seen: Arc<Mutex<Vec<SeenRequest>>> = Arc::default();
        let owned_name: Arc<str> = Arc::from(name);
        let log = seen.clone();
        let running = Running::start(SocketAddr::new(ip, 0), move |stream, _tasks| {
            let name = owned_name.clone();
            let log = log.clone();
            async move {
                let service = service_fn(move |req: Request<Incoming>| {
                    let name = name.clone();
                    let log = log.clone();
                    async move {
                        let seen = SeenRequest::from_request(&req);
                        let body = format!("origin={name} target={}\n", seen.target);
                        log.lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .push(seen);
                        Ok::<_, Infallible>(
                            Response::builder()
                                .status(200)
                                .header(ORIGIN_HEADER, &*name)
                                // Keep ATS from caching: every request must reach an origin, or
                                // the routing assertions would be checking the cache.
                                .header("cache-control", "no-store")
                                .header("content-type", "text/plain")
                                .body(Full::new(Bytes::from(body)))
                                .unwrap_or_default(),
                        )
                    }
                });
                // A client that goes away mid-request is not an origin failure.
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            }
        })?;
        Ok(Self {
            name: name.to_owned(),
            seen,
            running,
        })
    }

    /// The origin's name (the value of its `x-apm-origin` header).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.running.addr()
    }

    /// `http://IP:PORT` + `path` (`path` starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr())
    }

    /// How many requests it has answered so far.
    pub fn request_count(&self) -> usize {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Every request it has seen, oldest first.
    pub fn requests(&self) -> Vec<SeenRequest> {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl std::fmt::Debug for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Origin")
            .field("name", &self.name)
            .field("addr", &self.addr())
            .finish()
    }
}
