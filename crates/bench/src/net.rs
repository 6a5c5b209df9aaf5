//! The simulator's HTTP client: connections from many 127.0.0.x source addresses (one
//! source/destination pair only has ~28k ephemeral ports), HTTP/1.1 with a connection per lane or
//! HTTP/2 (prior knowledge) with many agents multiplexed on one connection, and the
//! file-descriptor limit.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper::{Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpSocket, TcpStream};

/// Why a request failed, coarse enough to group errors by kind.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// TCP connect (or bind to the source address) failed.
    #[error("connect from {source_addr}: {error}")]
    Connect {
        /// Source address used.
        source_addr: Ipv4Addr,
        /// Cause.
        error: std::io::Error,
    },
    /// The HTTP exchange failed (connection reset, protocol error, ...).
    #[error("http: {0}")]
    Http(#[from] hyper::Error),
    /// No complete answer within the deadline.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
}

impl NetError {
    /// A short kind for grouping.
    pub fn kind(&self) -> &'static str {
        match self {
            NetError::Connect { .. } => "connect",
            NetError::Http(_) => "http",
            NetError::Timeout(_) => "timeout",
        }
    }
}

/// Raises RLIMIT_NOFILE's soft limit to the hard limit (children inherit it) and returns
/// (soft, hard) in effect. Raising the hard limit needs CAP_SYS_RESOURCE; we try `want` first.
pub fn raise_fd_limit(want: u64) -> (u64, u64) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap_or((1024, 1024));
    if want > hard && setrlimit(Resource::RLIMIT_NOFILE, want, want).is_ok() {
        return (want, want);
    }
    if soft < hard {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
    getrlimit(Resource::RLIMIT_NOFILE).unwrap_or((soft, hard))
}

/// `count` loopback source addresses 127.0.0.2, 127.0.0.3, ... (the server listens on .1).
pub fn source_addresses(count: usize) -> Vec<Ipv4Addr> {
    (0..count.clamp(1, 250))
        .map(|i| {
            Ipv4Addr::new(
                127,
                0,
                (((i + 2) >> 8) & 0xff) as u8,
                ((i + 2) & 0xff) as u8,
            )
        })
        .collect()
}

async fn connect(server: SocketAddr, source_addr: Ipv4Addr) -> Result<TcpStream, NetError> {
    let err = |error| NetError::Connect { source_addr, error };
    let socket = TcpSocket::new_v4().map_err(err)?;
    socket
        .bind(SocketAddr::new(source_addr.into(), 0))
        .map_err(err)?;
    let stream = socket.connect(server).await.map_err(err)?;
    stream.set_nodelay(true).map_err(err)?;
    Ok(stream)
}

/// One HTTP/2 connection shared by several agents; reconnects when it closed.
pub struct SharedH2 {
    server: SocketAddr,
    source_addr: Ipv4Addr,
    tx: tokio::sync::Mutex<Option<http2::SendRequest<Full<Bytes>>>>,
}

impl SharedH2 {
    /// A lazily opened connection.
    pub fn new(server: SocketAddr, source_addr: Ipv4Addr) -> Arc<Self> {
        Arc::new(SharedH2 {
            server,
            source_addr,
            tx: tokio::sync::Mutex::new(None),
        })
    }

    async fn sender(&self) -> Result<http2::SendRequest<Full<Bytes>>, NetError> {
        let mut guard = self.tx.lock().await;
        if let Some(tx) = guard.as_ref()
            && !tx.is_closed()
        {
            return Ok(tx.clone());
        }
        let stream = connect(self.server, self.source_addr).await?;
        let (tx, conn) = http2::Builder::new(TokioExecutor::new())
            .initial_stream_window_size(1 << 20)
            .initial_connection_window_size(16 << 20)
            .max_concurrent_reset_streams(1000)
            .handshake(TokioIo::new(stream))
            .await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        *guard = Some(tx.clone());
        Ok(tx)
    }
}

/// Where an agent sends one kind of request: its own HTTP/1.1 connection, or a stream on a
/// shared HTTP/2 connection.
pub enum Lane {
    /// A dedicated keep-alive HTTP/1.1 connection (opened on first use, reopened after errors).
    H1 {
        /// Server.
        server: SocketAddr,
        /// Source address.
        source_addr: Ipv4Addr,
        /// The open connection.
        tx: Option<http1::SendRequest<Full<Bytes>>>,
    },
    /// A shared HTTP/2 connection.
    H2(Arc<SharedH2>),
}

impl Lane {
    /// A dedicated HTTP/1.1 lane.
    pub fn h1(server: SocketAddr, source_addr: Ipv4Addr) -> Lane {
        Lane::H1 {
            server,
            source_addr,
            tx: None,
        }
    }

    /// Sends `req` and reads the whole answer within `timeout`.
    pub async fn send(
        &mut self,
        req: Request<Full<Bytes>>,
        timeout: Duration,
    ) -> Result<(StatusCode, Bytes), NetError> {
        match tokio::time::timeout(timeout, self.exchange(req)).await {
            Ok(r) => r,
            Err(_) => {
                // A timed-out HTTP/1.1 connection may still deliver the late answer; drop it.
                if let Lane::H1 { tx, .. } = self {
                    *tx = None;
                }
                Err(NetError::Timeout(timeout))
            }
        }
    }

    async fn exchange(
        &mut self,
        req: Request<Full<Bytes>>,
    ) -> Result<(StatusCode, Bytes), NetError> {
        match self {
            Lane::H1 {
                server,
                source_addr,
                tx,
            } => {
                let sender = match tx.take() {
                    Some(t) if !t.is_closed() => tx.insert(t),
                    _ => {
                        let stream = connect(*server, *source_addr).await?;
                        let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
                        tokio::spawn(async move {
                            let _ = conn.await;
                        });
                        tx.insert(sender)
                    }
                };
                let result = async {
                    sender.ready().await?;
                    let res = sender.send_request(req).await?;
                    let status = res.status();
                    let body = res.into_body().collect().await?.to_bytes();
                    Ok::<_, hyper::Error>((status, body))
                }
                .await;
                if result.is_err() {
                    *tx = None;
                }
                Ok(result?)
            }
            Lane::H2(shared) => {
                let mut sender = shared.sender().await?;
                sender.ready().await?;
                let res = sender.send_request(req).await?;
                let status = res.status();
                let body = res.into_body().collect().await?.to_bytes();
                Ok((status, body))
            }
        }
    }
}

/// Builds a request with the headers every call carries.
pub fn request(
    method: hyper::Method,
    server: SocketAddr,
    path_and_query: &str,
    bearer: Option<&str>,
    json: Option<Vec<u8>>,
    h2: bool,
) -> Request<Full<Bytes>> {
    let uri = if h2 {
        // HTTP/2 carries the authority in the :authority pseudo-header, from an absolute URI.
        format!("http://{server}{path_and_query}")
    } else {
        path_and_query.to_string()
    };
    let mut b = Request::builder().method(method).uri(uri);
    if !h2 {
        b = b.header(hyper::header::HOST, server.to_string());
    }
    if let Some(t) = bearer {
        b = b.header(hyper::header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let body = match json {
        Some(j) => {
            b = b.header(hyper::header::CONTENT_TYPE, "application/json");
            Full::new(Bytes::from(j))
        }
        None => Full::new(Bytes::new()),
    };
    b.body(body)
        .unwrap_or_else(|_| Request::new(Full::new(Bytes::new())))
}

/// Percent-encodes a query value (hostnames and hashes are plain, but stay safe).
pub fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_addresses_skip_the_server_address() {
        let a = source_addresses(3);
        assert_eq!(
            a,
            vec![
                Ipv4Addr::new(127, 0, 0, 2),
                Ipv4Addr::new(127, 0, 0, 3),
                Ipv4Addr::new(127, 0, 0, 4)
            ]
        );
        assert_eq!(source_addresses(0).len(), 1);
        assert!(source_addresses(250).iter().all(|a| a.is_loopback()));
    }

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(enc("agent-1.example"), "agent-1.example");
        assert_eq!(enc("a b&c"), "a%20b%26c");
    }
}
