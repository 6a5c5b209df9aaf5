//! The ceiling: a raw hyper hello-world server (run as its own process, like `apm server`) and a
//! closed-loop load generator that drives it and the real sync endpoint with the same client.

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

use crate::BenchError;
use crate::metrics::{Percentiles, Reservoir};
use crate::net::{Lane, request, source_addresses};

/// Serves `hello world` on every path, HTTP/1.1 and HTTP/2 (prior knowledge), until killed.
pub async fn serve_hello(listen: SocketAddr) -> Result<(), BenchError> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(_) => {
                // Out of descriptors or a reset during accept: keep serving the others.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let svc = service_fn(|_req: Request<hyper::body::Incoming>| async {
                Ok::<_, Infallible>(
                    Response::builder()
                        .header("content-type", "text/plain")
                        .body(Full::new(Bytes::from_static(b"hello world\n")))
                        .unwrap_or_default(),
                )
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// Result of one closed-loop load.
pub struct LoadResult {
    /// Requests per second answered 200.
    pub rps: f64,
    /// Latency.
    pub latency: Percentiles,
    /// Failed requests (non-200 or transport errors).
    pub failed: u64,
    /// First failure.
    pub example: Option<String>,
}

/// `concurrency` workers, each on its own HTTP/1.1 keep-alive connection, send `make(i)` requests
/// back to back for `secs`.
pub async fn closed_loop(
    server: SocketAddr,
    concurrency: usize,
    secs: f64,
    make: Arc<dyn Fn(usize) -> (String, Option<String>) + Send + Sync>,
) -> LoadResult {
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let example = Arc::new(std::sync::Mutex::new(None::<String>));
    let until = Instant::now() + Duration::from_secs_f64(secs);
    let sources = source_addresses(8);
    let mut tasks = Vec::new();
    for w in 0..concurrency {
        let (ok, failed, example, make) =
            (ok.clone(), failed.clone(), example.clone(), make.clone());
        let src: Ipv4Addr = sources[w % sources.len()];
        tasks.push(tokio::spawn(async move {
            let mut lane = Lane::h1(server, src);
            let mut lat = Reservoir::new(50_000);
            let mut i = w;
            while Instant::now() < until {
                let (path, token) = make(i);
                i += concurrency;
                let req = request(Method::GET, server, &path, token.as_deref(), None, false);
                let t = Instant::now();
                match lane.send(req, Duration::from_secs(30)).await {
                    Ok((StatusCode::OK, _)) => {
                        lat.record(t.elapsed().as_secs_f64() * 1000.0);
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok((status, body)) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        let mut e = example.lock().unwrap_or_else(|p| p.into_inner());
                        e.get_or_insert_with(|| {
                            format!("HTTP {status}: {}", String::from_utf8_lossy(&body))
                        });
                    }
                    Err(err) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        let mut e = example.lock().unwrap_or_else(|p| p.into_inner());
                        e.get_or_insert_with(|| err.to_string());
                    }
                }
            }
            lat
        }));
    }
    let started = Instant::now();
    let mut all = Reservoir::new(200_000);
    for t in tasks {
        if let Ok(lat) = t.await {
            all.merge(&lat);
        }
    }
    let elapsed = started.elapsed().as_secs_f64().max(secs);
    let example = example.lock().unwrap_or_else(|p| p.into_inner()).clone();
    LoadResult {
        rps: ok.load(Ordering::Relaxed) as f64 / elapsed,
        latency: all.percentiles(),
        failed: failed.load(Ordering::Relaxed),
        example,
    }
}
