//! Test parent proxies: HTTP/1.1 forward proxies on loopback that ATS uses as its parents.
//!
//! A parent forwards absolute-form requests to the origin (adding `x-apm-parent: <name>` to the
//! response), tunnels `CONNECT`, counts requests per method, and can be stopped (its port then
//! refuses connections and its open connections are closed) and started again on the same
//! address and port, which is what the failover tests need.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::client::conn::http1 as client_http1;
use hyper::header::{HOST, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode, Uri, body::Incoming};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::net::Hosts;
use crate::origin::SeenRequest;
use crate::serve::{Running, Tasks, spawn_tracked};

/// Header a parent adds to every response it forwards or produces, with its name.
pub const PARENT_HEADER: &str = "x-apm-parent";

/// How long a parent waits to connect to an origin.
const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

type Body = BoxBody<Bytes, hyper::Error>;

struct Shared {
    name: String,
    hosts: Hosts,
    seen: Mutex<Vec<SeenRequest>>,
}

/// A test parent proxy. Dropping it stops it.
pub struct ParentProxy {
    shared: Arc<Shared>,
    addr: SocketAddr,
    running: Mutex<Option<Running>>,
}

impl ParentProxy {
    /// Starts a parent called `name` on `ip` and an ephemeral port; it resolves origin names
    /// with `hosts` (IP literals need no entry).
    pub fn start(name: &str, ip: IpAddr, hosts: Hosts) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            name: name.to_owned(),
            hosts,
            seen: Mutex::new(Vec::new()),
        });
        let running = serve(SocketAddr::new(ip, 0), shared.clone())?;
        Ok(Self {
            shared,
            addr: running.addr(),
            running: Mutex::new(Some(running)),
        })
    }

    /// The parent's name (the value of its `x-apm-parent` header).
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The address it listens on (the same before and after a [`ParentProxy::stop`]).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `IP:PORT`, as written in a policy's parent list or `parent.config`.
    pub fn host_port(&self) -> (String, u16) {
        (self.addr.ip().to_string(), self.addr.port())
    }

    /// Closes the listener and every open connection: ATS then gets "connection refused".
    pub fn stop(&self) {
        let running = self
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        drop(running);
    }

    /// Starts it again on the same address and port (a no-op when it is running).
    pub fn restart(&self) -> std::io::Result<()> {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        if running.is_none() {
            *running = Some(serve(self.addr, self.shared.clone())?);
        }
        Ok(())
    }

    /// Whether it is currently accepting connections.
    pub fn is_running(&self) -> bool {
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }

    /// Every request it has received, oldest first.
    pub fn requests(&self) -> Vec<SeenRequest> {
        self.shared
            .seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Number of requests received, per method.
    pub fn counts(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for r in self.requests() {
            *counts.entry(r.method).or_default() += 1;
        }
        counts
    }

    /// Number of requests received with `method` (`"GET"`, `"CONNECT"`, ...).
    pub fn count(&self, method: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.method.eq_ignore_ascii_case(method))
            .count()
    }

    /// Total number of requests received.
    pub fn total(&self) -> usize {
        self.requests().len()
    }
}

impl std::fmt::Debug for ParentProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParentProxy")
            .field("name", &self.shared.name)
            .field("addr", &self.addr)
            .field("running", &self.is_running())
            .finish()
    }
}

fn serve(addr: SocketAddr, shared: Arc<Shared>) -> std::io::Result<Running> {
    Running::start(addr, move |stream, tasks| {
        let shared = shared.clone();
        async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let shared = shared.clone();
                let tasks = tasks.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(shared, tasks, req).await) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await;
        }
    })
}

async fn handle(shared: Arc<Shared>, tasks: Tasks, req: Request<Incoming>) -> Response<Body> {
    shared
        .seen
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(SeenRequest::from_request(&req));
    let result = if req.method() == Method::CONNECT {
        tunnel(&shared, tasks, req).await
    } else {
        forward(&shared, req).await
    };
    let mut response = result.unwrap_or_else(|(status, why)| {
        Response::builder()
            .status(status)
            .header("content-type", "text/plain")
            .body(full(format!("parent {}: {why}\n", shared.name)))
            .unwrap_or_default()
    });
    if let Ok(value) = HeaderValue::from_str(&shared.name) {
        response.headers_mut().insert(PARENT_HEADER, value);
    }
    response
}

type Failure = (StatusCode, String);

fn target_addr(shared: &Shared, host: &str, port: u16) -> Result<SocketAddr, Failure> {
    shared
        .hosts
        .resolve(host)
        .map(|ip| SocketAddr::new(ip, port))
        .ok_or_else(|| (StatusCode::BAD_GATEWAY, format!("unknown host {host}")))
}

async fn connect(addr: SocketAddr) -> Result<TcpStream, Failure> {
    match tokio::time::timeout(UPSTREAM_CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err((StatusCode::BAD_GATEWAY, format!("connect {addr}: {e}"))),
        Err(_) => Err((
            StatusCode::GATEWAY_TIMEOUT,
            format!("connect {addr}: timeout"),
        )),
    }
}

async fn tunnel(
    shared: &Shared,
    tasks: Tasks,
    req: Request<Incoming>,
) -> Result<Response<Body>, Failure> {
    let authority = req
        .uri()
        .authority()
        .ok_or_else(|| {
            (
                StatusCode::BAD_REQUEST,
                "CONNECT without host:port".to_owned(),
            )
        })?
        .clone();
    let port = authority
        .port_u16()
        .ok_or_else(|| (StatusCode::BAD_REQUEST, "CONNECT without a port".to_owned()))?;
    let mut upstream = connect(target_addr(shared, authority.host(), port)?).await?;
    spawn_tracked(&tasks, async move {
        if let Ok(upgraded) = hyper::upgrade::on(req).await {
            let mut client = TokioIo::new(upgraded);
            let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
        }
    });
    Ok(Response::new(empty()))
}

async fn forward(shared: &Shared, req: Request<Incoming>) -> Result<Response<Body>, Failure> {
    let (mut parts, body) = req.into_parts();
    let authority = parts.uri.authority().cloned().ok_or_else(|| {
        (
            StatusCode::BAD_REQUEST,
            format!("a parent expects absolute-form targets, got {}", parts.uri),
        )
    })?;
    let port = authority.port_u16().unwrap_or(80);
    let upstream = connect(target_addr(shared, authority.host(), port)?).await?;
    let (mut sender, conn) = client_http1::handshake(TokioIo::new(upstream))
        .await
        .map_err(|e| (StatusCode::BAD_GATEWAY, format!("handshake: {e}")))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    parts.uri = path
        .parse::<Uri>()
        .map_err(|e| (StatusCode::BAD_REQUEST, format!("bad path {path}: {e}")))?;
    for hop in [
        "connection",
        "proxy-connection",
        "keep-alive",
        "proxy-authorization",
        "te",
        "upgrade",
    ] {
        parts.headers.remove(hop);
    }
    if !parts.headers.contains_key(HOST)
        && let Ok(v) = HeaderValue::from_str(authority.as_str())
    {
        parts.headers.insert(HOST, v);
    }
    let response = sender
        .send_request(Request::from_parts(parts, body))
        .await
        .map_err(|e| (StatusCode::BAD_GATEWAY, format!("upstream: {e}")))?;
    Ok(response.map(BodyExt::boxed))
}

fn full(text: String) -> Body {
    Full::new(Bytes::from(text))
        .map_err(|never| match never {})
        .boxed()
}

fn empty() -> Body {
    full(String::new())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::ProxyClient;
    use crate::net::loopback;
    use crate::origin::Origin;

    fn refused(addr: SocketAddr) -> bool {
        std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_err()
    }

    #[test]
    fn forwards_absolute_form_and_tunnels_connect() {
        let origin = Origin::start("o", loopback(10)).expect("origin");
        let hosts = Hosts::new().with("www.p.test", loopback(10));
        let parent = ParentProxy::start("px", loopback(11), hosts).expect("parent");
        let client = ProxyClient::new(parent.addr());
        let url = format!("http://www.p.test:{}/abs", origin.addr().port());
        let r = client.get(&url).expect("GET");
        assert_eq!(r.status, 200);
        assert_eq!(r.header(PARENT_HEADER), Some("px"));
        assert_eq!(r.header("x-apm-origin"), Some("o"));
        // The origin sees origin-form with the Host header of the absolute URL.
        let seen = &origin.requests()[0];
        assert_eq!(seen.target, "/abs");
        assert_eq!(
            seen.host.as_deref(),
            Some(url.trim_start_matches("http://").trim_end_matches("/abs"))
        );

        let authority = format!("www.p.test:{}", origin.addr().port());
        let t = client.connect_get(&authority, "/tunnel").expect("CONNECT");
        assert_eq!(t.connect.status, 200);
        assert_eq!(t.connect.header(PARENT_HEADER), Some("px"));
        let inner = t.inner.expect("tunnel");
        assert_eq!(inner.header("x-apm-origin"), Some("o"));
        assert_eq!(
            inner.header(PARENT_HEADER),
            None,
            "a tunnel cannot add headers"
        );
        assert_eq!(parent.count("GET"), 1);
        assert_eq!(parent.count("CONNECT"), 1);
        assert_eq!(parent.total(), 2);
    }

    #[test]
    fn unknown_hosts_and_origin_form_get_errors_from_the_parent() {
        let parent = ParentProxy::start("px", loopback(11), Hosts::new()).expect("parent");
        let client = ProxyClient::new(parent.addr());
        let r = client.get("http://nowhere.test/").expect("answer");
        assert_eq!(r.status, 502);
        assert_eq!(r.header(PARENT_HEADER), Some("px"));
        assert!(
            r.body_text().contains("unknown host nowhere.test"),
            "{}",
            r.body_text()
        );
        let t = client.connect_get("nowhere.test:443", "/").expect("answer");
        assert_eq!(t.connect.status, 502);
        assert!(t.inner.is_none());
    }

    #[test]
    fn stop_refuses_connections_and_restart_reuses_the_address() {
        let origin = Origin::start("o", loopback(10)).expect("origin");
        let parent = ParentProxy::start("px", loopback(12), Hosts::new()).expect("parent");
        let addr = parent.addr();
        let client = ProxyClient::new(addr).with_timeout(Duration::from_secs(2));
        assert_eq!(client.get(&origin.url("/1")).expect("GET").status, 200);
        parent.stop();
        assert!(!parent.is_running());
        assert!(refused(addr), "still accepting after stop");
        assert!(client.get(&origin.url("/2")).is_err());
        parent.restart().expect("restart");
        assert_eq!(parent.addr(), addr);
        assert_eq!(client.get(&origin.url("/3")).expect("GET").status, 200);
        assert_eq!(parent.count("GET"), 2);
    }
}
