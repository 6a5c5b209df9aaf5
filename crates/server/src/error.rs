//! Errors as RFC 9457 `application/problem+json`. Every client error names what is wrong and
//! where; server errors are logged with the request id and answered without internals.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Map, Value, json};
use utoipa::ToSchema;

/// The problem document (RFC 9457), as sent.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// A URI reference naming the problem type, e.g. `/problems/conflict` (served by the server:
    /// `GET /problems/{slug}` describes it).
    #[serde(rename = "type")]
    pub type_uri: String,
    /// Short, fixed summary of the type.
    pub title: String,
    /// HTTP status.
    pub status: u16,
    /// What went wrong in this occurrence.
    pub detail: String,
    /// Extension members (e.g. `errors` with located policy errors, `current_state`).
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub extensions: Map<String, Value>,
}

/// An API error: a status, a problem type slug and a detail.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    slug: &'static str,
    title: &'static str,
    detail: String,
    extensions: Map<String, Value>,
    retry_after: Option<u64>,
}

/// Result alias for handlers.
pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    fn new(
        status: StatusCode,
        slug: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        ApiError {
            status,
            slug,
            title,
            detail: detail.into(),
            extensions: Map::new(),
            retry_after: None,
        }
    }

    /// 400: the request is malformed.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "bad-request",
            "Bad request",
            detail,
        )
    }
    /// 422: well-formed but invalid content.
    pub fn invalid(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            "Invalid content",
            detail,
        )
    }
    /// 401: missing or bad credentials.
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Authentication required",
            detail,
        )
    }
    /// 403: authenticated but not allowed.
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", "Forbidden", detail)
    }
    /// 404.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", "Not found", detail)
    }
    /// 409: the current state does not allow this.
    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", "Conflict", detail)
    }
    /// 413.
    pub fn too_large(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-large",
            "Request body too large",
            detail,
        )
    }
    /// 415.
    pub fn unsupported_media(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "Unsupported media type",
            detail,
        )
    }
    /// 429 with Retry-After.
    pub fn rate_limited(detail: impl Into<String>, retry_after: u64) -> Self {
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate-limited",
            "Too many requests",
            detail,
        );
        e.retry_after = Some(retry_after);
        e
    }
    /// 405.
    pub fn method_not_allowed(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method-not-allowed",
            "Method not allowed",
            detail,
        )
    }
    /// 503: a dependency (the database) is not available.
    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "Service unavailable",
            detail,
        )
    }
    /// 500: logged in full, answered without internals.
    pub fn internal(error: impl std::fmt::Display) -> Self {
        tracing::error!(error = %error, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal server error",
            "the server failed to handle the request; the error is in the server log under this request id",
        )
    }

    /// Adds an extension member.
    pub fn with(mut self, key: &str, value: impl Serialize) -> Self {
        self.extensions.insert(
            key.to_string(),
            serde_json::to_value(value).unwrap_or(Value::Null),
        );
        self
    }

    /// The status.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = Problem {
            type_uri: format!("/problems/{}", self.slug),
            title: self.title.to_string(),
            status: self.status.as_u16(),
            detail: self.detail,
            extensions: self.extensions,
        };
        let body = serde_json::to_vec(&problem).unwrap_or_else(|_| b"{}".to_vec());
        let mut response = (self.status, body).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(secs) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&secs.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        response
    }
}

impl From<apm_store::StoreError> for ApiError {
    fn from(e: apm_store::StoreError) -> Self {
        match e {
            apm_store::StoreError::Conflict(what) => ApiError::conflict(what),
            apm_store::StoreError::Invalid(what) => ApiError::invalid(what),
            apm_store::StoreError::Db(sqlx_error) if is_unavailable(&sqlx_error) => {
                tracing::error!(error = %sqlx_error, "database unavailable");
                ApiError::unavailable("the database is not reachable; retry later")
            }
            other => ApiError::internal(other),
        }
    }
}

impl From<apm_store::SqlxError> for ApiError {
    fn from(e: apm_store::SqlxError) -> Self {
        ApiError::from(apm_store::StoreError::Db(e))
    }
}

fn is_unavailable(e: &apm_store::SqlxError) -> bool {
    matches!(
        e,
        apm_store::SqlxError::PoolTimedOut
            | apm_store::SqlxError::PoolClosed
            | apm_store::SqlxError::Io(_)
    )
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        match r {
            JsonRejection::JsonDataError(e) => {
                // axum's text carries serde's path (e.g. "policy.rules[2].action: unknown variant").
                ApiError::invalid(format!(
                    "request body: {}",
                    strip_axum_prefix(&e.body_text())
                ))
            }
            JsonRejection::JsonSyntaxError(e) => ApiError::bad_request(format!(
                "request body is not valid JSON: {}",
                strip_axum_prefix(&e.body_text())
            )),
            JsonRejection::MissingJsonContentType(_) => {
                ApiError::unsupported_media("send the body with Content-Type: application/json")
            }
            JsonRejection::BytesRejection(e) => {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::too_large("request body exceeds the server's max_body_bytes")
                } else {
                    ApiError::bad_request(format!("could not read the request body: {e}"))
                }
            }
            other => ApiError::bad_request(other.body_text()),
        }
    }
}

fn strip_axum_prefix(text: &str) -> &str {
    text.split_once("target type: ")
        .or_else(|| text.split_once("body as JSON: "))
        .map(|(_, rest)| rest)
        .unwrap_or(text)
}

fn describe_source(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text = s.to_string();
        source = s.source();
    }
    text
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::bad_request(format!("query string: {}", describe_source(&r)))
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        ApiError::bad_request(format!("path: {}", describe_source(&r)))
    }
}

/// `Json` that answers bad bodies with problem+json instead of axum's plain text.
#[derive(Debug, Clone, Copy, Default, axum::extract::FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct Json<T>(pub T);

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// `Query` with problem+json rejections.
#[derive(Debug, Clone, Copy, Default, axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct Query<T>(pub T);

/// `Path` with problem+json rejections.
#[derive(Debug, Clone, Copy, Default, axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct Path<T>(pub T);

/// Every problem type: slug, title, what it means and what to do.
pub const PROBLEM_TYPES: &[(&str, &str, &str)] = &[
    (
        "bad-request",
        "Bad request",
        "The request is malformed: invalid JSON, a bad query string or path parameter. `detail` names the part.",
    ),
    (
        "invalid",
        "Invalid content",
        "The body is well-formed but its content is invalid: a wrong type, an unknown or missing field, or a policy error. `errors[]` locates each problem (e.g. `policy.rules[3].value`).",
    ),
    (
        "unauthorized",
        "Authentication required",
        "No credential, or one that is unknown, expired, revoked or idle for too long. Log in again (or enroll the agent again).",
    ),
    (
        "forbidden",
        "Forbidden",
        "The credential is valid but its role may not do this, an approval rule forbids it, or a cookie-authenticated write came from another site.",
    ),
    (
        "not-found",
        "Not found",
        "No such route, or no entity with the id named in `detail`.",
    ),
    (
        "conflict",
        "Conflict",
        "The current state does not allow this (e.g. approving a draft; `current_state` says where the config is), a name is taken, or a proxy belongs to another config (`other_config_id`).",
    ),
    (
        "too-large",
        "Request body too large",
        "The body exceeds the server's max_body_bytes setting.",
    ),
    (
        "unsupported-media-type",
        "Unsupported media type",
        "Send JSON bodies with Content-Type: application/json.",
    ),
    (
        "rate-limited",
        "Too many requests",
        "Too many failed logins from this address for this username; wait the Retry-After seconds.",
    ),
    (
        "method-not-allowed",
        "Method not allowed",
        "The path exists but not with this HTTP method; see /api/openapi.json.",
    ),
    (
        "unavailable",
        "Service unavailable",
        "The database does not answer; retry later.",
    ),
    (
        "internal",
        "Internal server error",
        "A bug: the server log has the cause under the response's x-request-id.",
    ),
];

/// 404 for unknown routes.
pub async fn fallback(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no route for {}", uri.path()))
}

/// 405 for known paths with the wrong method.
pub async fn method_fallback(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::method_not_allowed(format!("{method} is not allowed on {}", uri.path()))
}

/// A `{"status": ...}` body used by simple acknowledgements.
pub fn ok_status() -> Value {
    json!({"status": "ok"})
}
