//! The console's only way to read or change anything: requests to the control plane's own HTTP
//! API, dispatched in-process through its router (no socket, no second implementation).
//!
//! Every console action therefore runs the API handler itself — the same role checks, the same
//! validation with located errors, the same audit row in the same transaction — authenticated
//! with the browser's session token as `Authorization: Bearer`.

use std::net::SocketAddr;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tower::ServiceExt;

/// An answer of the API.
#[derive(Debug)]
pub struct Reply {
    /// HTTP status.
    pub status: StatusCode,
    /// Response headers (e.g. `Set-Cookie` from login).
    pub headers: HeaderMap,
    /// Body bytes.
    pub body: bytes::Bytes,
}

/// A `problem+json` answer, reduced to what pages show.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Problem {
    /// Short title.
    #[serde(default)]
    pub title: String,
    /// What went wrong.
    #[serde(default)]
    pub detail: String,
    /// Located errors (policy validation).
    #[serde(default)]
    pub errors: Vec<LocatedError>,
    /// For 409: where the entity stands.
    #[serde(default)]
    pub current_state: Option<String>,
}

/// One located error of a problem.
#[derive(Debug, Clone, Deserialize)]
pub struct LocatedError {
    /// e.g. `policy.rules[3].value`.
    pub path: String,
    /// What is wrong there.
    pub message: String,
}

/// An API call that did not succeed.
#[derive(Debug, Clone)]
pub struct ApiFailure {
    /// HTTP status.
    pub status: StatusCode,
    /// The problem document.
    pub problem: Problem,
}

impl ApiFailure {
    /// The detail, or the title when there is none.
    pub fn message(&self) -> String {
        if self.problem.detail.is_empty() {
            format!("{} ({})", self.problem.title, self.status)
        } else {
            self.problem.detail.clone()
        }
    }
}

impl Reply {
    /// Decodes a 2xx body, or turns the answer into an [`ApiFailure`].
    pub fn json<T: DeserializeOwned>(self) -> Result<T, ApiFailure> {
        if !self.status.is_success() {
            return Err(self.failure());
        }
        serde_json::from_slice(&self.body).map_err(|e| ApiFailure {
            status: StatusCode::BAD_GATEWAY,
            problem: Problem {
                title: "Unexpected API answer".into(),
                detail: format!("the console could not read the API's answer: {e}"),
                ..Problem::default()
            },
        })
    }

    /// `Ok(())` for 2xx, else the failure.
    pub fn ok(self) -> Result<Reply, ApiFailure> {
        if self.status.is_success() {
            Ok(self)
        } else {
            Err(self.failure())
        }
    }

    /// The answer as a failure (its problem document, or the raw text).
    pub fn failure(&self) -> ApiFailure {
        let problem = serde_json::from_slice::<Problem>(&self.body).unwrap_or_else(|_| Problem {
            title: self
                .status
                .canonical_reason()
                .unwrap_or("error")
                .to_string(),
            detail: String::from_utf8_lossy(&self.body)
                .chars()
                .take(500)
                .collect(),
            ..Problem::default()
        });
        ApiFailure {
            status: self.status,
            problem,
        }
    }
}

/// Calls the API on behalf of one browser request.
#[derive(Clone)]
pub struct Api {
    router: Router,
    token: Option<String>,
    peer: Option<ConnectInfo<SocketAddr>>,
    request_id: Option<HeaderValue>,
}

impl Api {
    /// A client for the API router, carrying the caller's session token and address.
    pub fn new(
        router: Router,
        token: Option<String>,
        peer: Option<ConnectInfo<SocketAddr>>,
        request_id: Option<HeaderValue>,
    ) -> Api {
        Api {
            router,
            token,
            peer,
            request_id,
        }
    }

    /// Sends a request; `body` is sent as JSON.
    pub async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Reply {
        let mut builder = Request::builder().method(method).uri(path);
        if let Some(token) = &self.token
            && let Ok(v) = HeaderValue::from_str(&format!("Bearer {token}"))
        {
            builder = builder.header(header::AUTHORIZATION, v);
        }
        if let Some(id) = &self.request_id {
            builder = builder.header("x-request-id", id.clone());
        }
        let body = match body {
            Some(v) => {
                builder = builder.header(header::CONTENT_TYPE, "application/json");
                Body::from(serde_json::to_vec(v).unwrap_or_default())
            }
            None => Body::empty(),
        };
        let mut request = match builder.body(body) {
            Ok(r) => r,
            Err(e) => {
                return Reply {
                    status: StatusCode::BAD_REQUEST,
                    headers: HeaderMap::new(),
                    body: bytes::Bytes::from(
                        serde_json::json!({"title": "Bad request", "detail": format!("invalid request to {path}: {e}")})
                            .to_string(),
                    ),
                };
            }
        };
        if let Some(peer) = self.peer {
            request.extensions_mut().insert(peer);
        }
        // The router's error type is Infallible.
        let response = match self.router.clone().oneshot(request).await {
            Ok(r) => r,
            Err(never) => match never {},
        };
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    /// GET and decode.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ApiFailure> {
        self.call(Method::GET, path, None).await.json()
    }

    /// POST JSON and decode.
    pub async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &Value,
    ) -> Result<T, ApiFailure> {
        self.call(Method::POST, path, Some(body)).await.json()
    }
}

/// Percent-encodes a query value.
pub fn q(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
