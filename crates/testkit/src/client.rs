//! A small blocking HTTP/1.1 client that talks to a forward proxy the way browsers and curl do:
//! absolute-form `GET http://host/path`, and `CONNECT host:port` followed by a plain request
//! inside the tunnel. Every request uses `Connection: close` and bounded timeouts.
//!
//! It is deliberately raw (a few dozen lines over `std::net`) so that what goes on the wire is
//! exactly what the test says, with no client-side proxy logic of its own.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Errors of [`ProxyClient`].
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The connection, a read or a write failed (including timeouts).
    #[error("{what}: {source}")]
    Io {
        /// What was being done, with the proxy address and target.
        what: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The peer sent something that is not an HTTP/1.x response.
    #[error("{what}: malformed response: {detail}")]
    Malformed {
        /// What was being done.
        what: String,
        /// What was wrong.
        detail: String,
    },
}

/// A parsed HTTP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// Header fields in order, names lowercased.
    pub headers: Vec<(String, String)>,
    /// The body (de-chunked).
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (lossy).
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// The outcome of a `CONNECT` through the proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelResponse {
    /// The proxy's answer to `CONNECT` (body read only when the status is not 2xx).
    pub connect: HttpResponse,
    /// The response to the request sent inside the tunnel, when the tunnel was opened.
    pub inner: Option<HttpResponse>,
}

/// A client bound to one proxy address.
#[derive(Debug, Clone)]
pub struct ProxyClient {
    proxy: SocketAddr,
    timeout: Duration,
}

impl ProxyClient {
    /// A client for the proxy at `proxy`, with a 10 s connect/read/write timeout.
    pub fn new(proxy: SocketAddr) -> Self {
        Self {
            proxy,
            timeout: Duration::from_secs(10),
        }
    }

    /// Same client with another timeout (applies to connect and to each read/write).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    fn open(&self, what: &str) -> Result<BufReader<TcpStream>, ClientError> {
        let io = |source| ClientError::Io {
            what: what.to_owned(),
            source,
        };
        let stream = TcpStream::connect_timeout(&self.proxy, self.timeout).map_err(io)?;
        stream.set_read_timeout(Some(self.timeout)).map_err(io)?;
        stream.set_write_timeout(Some(self.timeout)).map_err(io)?;
        Ok(BufReader::new(stream))
    }

    /// `GET url` in absolute form (`url` like `http://www.example.test:8080/path`).
    pub fn get(&self, url: &str) -> Result<HttpResponse, ClientError> {
        let what = format!("GET {url} via proxy {}", self.proxy);
        let host = url
            .strip_prefix("http://")
            .and_then(|rest| rest.split('/').next())
            .filter(|h| !h.is_empty())
            .ok_or_else(|| ClientError::Malformed {
                what: what.clone(),
                detail: "the URL must look like http://host[:port]/path".to_owned(),
            })?;
        let mut conn = self.open(&what)?;
        let request = format!("GET {url} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        send(&mut conn, &request, &what)?;
        read_response(&mut conn, &what, true)
    }

    /// `CONNECT authority` (`host:port`), then, when the proxy answers 2xx,
    /// `GET path` with `Host: authority` inside the tunnel.
    pub fn connect_get(&self, authority: &str, path: &str) -> Result<TunnelResponse, ClientError> {
        let what = format!("CONNECT {authority} via proxy {}", self.proxy);
        let mut conn = self.open(&what)?;
        send(
            &mut conn,
            &format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n"),
            &what,
        )?;
        let connect = read_response(&mut conn, &what, false)?;
        if !(200..300).contains(&connect.status) {
            // The proxy answered with an error page; read it for the diagnostics.
            let mut connect = connect;
            read_body(&mut conn, &mut connect, &what)?;
            return Ok(TunnelResponse {
                connect,
                inner: None,
            });
        }
        let inner_what = format!("{what}, then GET {path} inside the tunnel");
        send(
            &mut conn,
            &format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"),
            &inner_what,
        )?;
        let inner = read_response(&mut conn, &inner_what, true)?;
        Ok(TunnelResponse {
            connect,
            inner: Some(inner),
        })
    }
}

fn send(conn: &mut BufReader<TcpStream>, request: &str, what: &str) -> Result<(), ClientError> {
    conn.get_mut()
        .write_all(request.as_bytes())
        .map_err(|source| ClientError::Io {
            what: what.to_owned(),
            source,
        })
}

/// Reads a status line and headers, then (when `with_body`) the body.
fn read_response(
    conn: &mut BufReader<TcpStream>,
    what: &str,
    with_body: bool,
) -> Result<HttpResponse, ClientError> {
    let io = |source| ClientError::Io {
        what: what.to_owned(),
        source,
    };
    let malformed = |detail: String| ClientError::Malformed {
        what: what.to_owned(),
        detail,
    };
    let mut line = String::new();
    conn.read_line(&mut line).map_err(io)?;
    if line.is_empty() {
        return Err(malformed(
            "connection closed before a status line".to_owned(),
        ));
    }
    let mut parts = line.split_whitespace();
    let version = parts.next().unwrap_or_default();
    let status = parts
        .next()
        .and_then(|s| s.parse::<u16>().ok())
        .filter(|_| version.starts_with("HTTP/1."))
        .ok_or_else(|| malformed(format!("bad status line {line:?}")))?;
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        conn.read_line(&mut h).map_err(io)?;
        let h = h.trim_end_matches(['\r', '\n']);
        if h.is_empty() {
            break;
        }
        let (name, value) = h
            .split_once(':')
            .ok_or_else(|| malformed(format!("bad header line {h:?}")))?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    let mut response = HttpResponse {
        status,
        headers,
        body: Vec::new(),
    };
    if with_body {
        read_body(conn, &mut response, what)?;
    }
    Ok(response)
}

/// Reads the body framed by `Transfer-Encoding: chunked`, `Content-Length`, or the end of
/// the connection.
fn read_body(
    conn: &mut BufReader<TcpStream>,
    response: &mut HttpResponse,
    what: &str,
) -> Result<(), ClientError> {
    let io = |source| ClientError::Io {
        what: what.to_owned(),
        source,
    };
    let chunked = response
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        response.body = read_chunked(conn, what)?;
    } else if let Some(len) = response.header("content-length") {
        let len: usize = len.parse().map_err(|_| ClientError::Malformed {
            what: what.to_owned(),
            detail: format!("bad content-length {len:?}"),
        })?;
        let mut body = vec![0; len];
        conn.read_exact(&mut body).map_err(io)?;
        response.body = body;
    } else {
        conn.read_to_end(&mut response.body).map_err(io)?;
    }
    Ok(())
}

fn read_chunked(conn: &mut BufReader<TcpStream>, what: &str) -> Result<Vec<u8>, ClientError> {
    let io = |source| ClientError::Io {
        what: what.to_owned(),
        source,
    };
    let mut body = Vec::new();
    loop {
        let mut size_line = String::new();
        conn.read_line(&mut size_line).map_err(io)?;
        let size_hex = size_line.trim().split(';').next().unwrap_or_default();
        let size = usize::from_str_radix(size_hex, 16).map_err(|_| ClientError::Malformed {
            what: what.to_owned(),
            detail: format!("bad chunk size {size_line:?}"),
        })?;
        if size == 0 {
            // Trailers, up to the empty line.
            loop {
                let mut t = String::new();
                let n = conn.read_line(&mut t).map_err(io)?;
                if n == 0 || t.trim().is_empty() {
                    return Ok(body);
                }
            }
        }
        let start = body.len();
        body.resize(start + size, 0);
        conn.read_exact(&mut body[start..]).map_err(io)?;
        let mut crlf = [0u8; 2];
        conn.read_exact(&mut crlf).map_err(io)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::loopback;
    use crate::origin::Origin;
    use std::net::TcpListener;

    /// A one-shot raw server that answers the first request with `reply`.
    fn raw_server(reply: &'static str) -> SocketAddr {
        let l = TcpListener::bind((loopback(8), 0)).expect("bind");
        let addr = l.local_addr().expect("addr");
        std::thread::spawn(move || {
            if let Ok((mut s, _)) = l.accept() {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf);
                let _ = s.write_all(reply.as_bytes());
            }
        });
        addr
    }

    #[test]
    fn decodes_chunked_bodies_and_headers() {
        let addr = raw_server(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: b\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n",
        );
        let r = ProxyClient::new(addr)
            .get("http://x.test/")
            .expect("response");
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-a"), Some("b"));
        assert_eq!(r.body_text(), "abcde");
    }

    #[test]
    fn rejects_a_non_http_reply() {
        let addr = raw_server("SSH-2.0-nope\r\n");
        let err = ProxyClient::new(addr)
            .get("http://x.test/")
            .expect_err("not http");
        assert!(matches!(err, ClientError::Malformed { .. }), "{err}");
    }

    #[test]
    fn times_out_on_a_silent_server() {
        let l = TcpListener::bind((loopback(8), 0)).expect("bind");
        let addr = l.local_addr().expect("addr");
        let err = ProxyClient::new(addr)
            .with_timeout(Duration::from_millis(300))
            .get("http://x.test/")
            .expect_err("silence");
        assert!(matches!(err, ClientError::Io { .. }), "{err}");
        drop(l);
    }

    #[test]
    fn origin_answers_with_its_name_when_asked_directly() {
        let origin = Origin::start("o1", loopback(2)).expect("origin");
        // An origin accepts absolute-form too, so the client can talk to it as if it were a proxy.
        let r = ProxyClient::new(origin.addr())
            .get(&origin.url("/hello"))
            .expect("response");
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-apm-origin"), Some("o1"));
        assert!(r.body_text().contains("origin=o1"), "{}", r.body_text());
        assert_eq!(origin.request_count(), 1);
    }
}
