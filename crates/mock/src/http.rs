//! A small HTTP/1.1 server loop on hyper, shared by the mock server, the recorder and the
//! metrics endpoint.

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// Our response type: a fully buffered body.
pub type Resp = Response<Full<Bytes>>;

/// A response with a body and content type.
pub fn response(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Resp {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

/// A JSON response.
pub fn json(status: StatusCode, v: &serde_json::Value) -> Resp {
    response(
        status,
        "application/json",
        serde_json::to_vec(v).unwrap_or_default(),
    )
}

/// Serves HTTP/1.1 on `listener` until `shutdown` completes, then lets in-flight connections
/// finish for up to `drain` before returning.
pub async fn serve<F, Fut>(
    listener: TcpListener,
    handler: F,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Resp> + Send + 'static,
{
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let h = handler.clone();
                let svc = service_fn(move |req| {
                    let h = h.clone();
                    async move { Ok::<_, Infallible>(h(req).await) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc);
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    let _ = tokio::time::timeout(drain, graceful.shutdown()).await;
}

/// Serves `GET /metrics` with the text `render` returns.
pub async fn serve_metrics<R>(listener: TcpListener, render: R, shutdown: impl Future<Output = ()>)
where
    R: Fn() -> String + Clone + Send + Sync + 'static,
{
    serve(
        listener,
        move |req: Request<Incoming>| {
            let render = render.clone();
            async move {
                if req.method() == hyper::Method::GET && req.uri().path() == "/metrics" {
                    response(
                        StatusCode::OK,
                        "text/plain; version=0.0.4; charset=utf-8",
                        render(),
                    )
                } else {
                    response(
                        StatusCode::NOT_FOUND,
                        "text/plain",
                        "only GET /metrics here\n",
                    )
                }
            }
        },
        shutdown,
        Duration::from_secs(1),
    )
    .await;
}
