//! Authentication and authorization: password hashing (argon2id), random tokens stored as
//! SHA-256 hashes, the [`Caller`] (user) and [`Agent`] (proxy) extractors, roles, CSRF guard
//! for cookie sessions and the login rate limiter.
//!
//! Tokens are 256-bit random values, so a fast hash (SHA-256) is enough to make the stored form
//! useless to a database thief; passwords are low-entropy and get argon2id.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::Argon2;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use axum::extract::FromRequestParts;
use axum::http::{Method, header, request::Parts};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// Session cookie name.
pub const SESSION_COOKIE: &str = "apm_session";

/// Token prefixes tell the kinds apart (and make leaked tokens easy to grep for).
pub mod prefix {
    /// Login session.
    pub const SESSION: &str = "apms_";
    /// API token.
    pub const API: &str = "apmt_";
    /// Agent credential.
    pub const AGENT: &str = "apma_";
    /// Enrollment token.
    pub const ENROLL: &str = "apme_";
}

/// A user's role. Ordered: regular < admin < root.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Read-only.
    Regular,
    /// Configs, approvals, log captures, enrollment, regular users.
    Admin,
    /// Everything, including admins. Exactly one, created on first start.
    Root,
}

impl Role {
    /// Wire/storage name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Regular => "regular",
            Role::Admin => "admin",
            Role::Root => "root",
        }
    }

    /// Parses a stored role.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "regular" => Some(Role::Regular),
            "admin" => Some(Role::Admin),
            "root" => Some(Role::Root),
            _ => None,
        }
    }
}

/// Hashes a password with argon2id and a random salt (PHC string).
pub fn hash_password(password: &str) -> ApiResult<String> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(ApiError::internal)
}

/// Checks a password against a PHC string.
pub fn verify_password(password: &str, phc: &str) -> bool {
    Argon2::default()
        .verify_password(password.as_bytes(), phc)
        .is_ok()
}

/// Runs argon2 off the async workers (it is deliberately slow).
pub async fn hash_password_blocking(password: String) -> ApiResult<String> {
    tokio::task::spawn_blocking(move || hash_password(&password))
        .await
        .map_err(ApiError::internal)?
}

/// Verifies off the async workers.
pub async fn verify_password_blocking(password: String, phc: String) -> bool {
    tokio::task::spawn_blocking(move || verify_password(&password, &phc))
        .await
        .unwrap_or(false)
}

/// A new random token: prefix + 64 hex chars (256 bits).
pub fn new_token(prefix: &str) -> String {
    let bytes: [u8; 32] = rand::random();
    format!("{prefix}{}", hex::encode(bytes))
}

/// The stored form of a token.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A random password for root (printed once at first start).
pub fn generate_password() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    (0..20)
        .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// How the caller authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthKind {
    /// Login session, with the session id; `cookie` when it came from the cookie.
    Session {
        /// Session id.
        id: String,
        /// Whether it was sent as a cookie (then CSRF rules apply).
        cookie: bool,
    },
    /// API token, with the token id.
    ApiToken {
        /// Token id.
        id: String,
    },
}

/// An authenticated user and the request's id (for audit rows).
#[derive(Debug, Clone)]
pub struct Caller {
    /// User id.
    pub user_id: String,
    /// Username.
    pub username: String,
    /// Role.
    pub role: Role,
    /// Credential kind.
    pub auth: AuthKind,
    /// `x-request-id` of this request.
    pub request_id: Option<String>,
}

impl Caller {
    /// 403 unless the caller has at least `min`.
    pub fn require(&self, min: Role) -> ApiResult<()> {
        if self.role >= min {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "this action requires the {} role; you are {}",
                min.as_str(),
                self.role.as_str()
            )))
        }
    }
}

/// The request id set by the request-id layer.
pub fn request_id(parts: &Parts) -> Option<String> {
    parts
        .headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn cookie(parts: &Parts, name: &str) -> Option<String> {
    parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// Cookie-authenticated unsafe requests must come from our own origin: browsers send
/// `Sec-Fetch-Site` and `Origin`; a cross-site form or fetch carries a foreign one.
fn check_csrf(parts: &Parts) -> ApiResult<()> {
    if matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok(());
    }
    if let Some(site) = parts
        .headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        && site != "same-origin"
        && site != "none"
    {
        return Err(ApiError::forbidden(
            "cross-site request refused: cookie sessions only accept same-origin writes",
        ));
    }
    let origin = parts
        .headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok());
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok());
    match (origin, host) {
        (Some(origin), Some(host)) => {
            let origin_host = origin.split_once("://").map(|(_, h)| h).unwrap_or(origin);
            if origin_host == host {
                Ok(())
            } else {
                Err(ApiError::forbidden(format!(
                    "cross-site request refused: Origin {origin} does not match host {host}"
                )))
            }
        }
        (None, _) if parts.headers.contains_key("x-requested-with") => Ok(()),
        _ => Err(ApiError::forbidden(
            "cookie-authenticated writes need an Origin header (browsers send it) or X-Requested-With; API clients should use Authorization: Bearer",
        )),
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let (token, from_cookie) = match bearer(parts) {
            Some(t) => (t.to_string(), false),
            None => match cookie(parts, SESSION_COOKIE) {
                Some(t) => (t, true),
                None => {
                    return Err(ApiError::unauthorized(
                        "authentication required: send Authorization: Bearer TOKEN (get one from POST /api/v1/auth/login)",
                    ));
                }
            },
        };
        if from_cookie {
            check_csrf(parts)?;
        }
        let now = apm_store::now_ms();
        let mut conn = state.db.acquire().await?;
        let (user_id, auth) = if token.starts_with(prefix::SESSION) {
            let session = apm_store::auth::find_session(&mut conn, &token_hash(&token))
                .await?
                .ok_or_else(|| ApiError::unauthorized("unknown session token; log in again"))?;
            if session.revoked_at.is_some() {
                return Err(ApiError::unauthorized(
                    "this session has ended (logged out or revoked); log in again",
                ));
            }
            if session.expires_at <= now {
                return Err(ApiError::unauthorized(
                    "this session reached its maximum lifetime; log in again",
                ));
            }
            let idle_ms = state.settings.session_idle_timeout_secs as i64 * 1000;
            if now - session.last_seen_at > idle_ms {
                return Err(ApiError::unauthorized(format!(
                    "this session expired: no beacon or request for more than {} s; log in again",
                    state.settings.session_idle_timeout_secs
                )));
            }
            // Write at most a few times per idle period, not on every request.
            if now - session.last_seen_at > (idle_ms / 4).min(15_000) {
                let mut w = state.db.write_conn().await?;
                apm_store::auth::touch_session(&mut w, &session.id, now).await?;
            }
            (
                session.user_id,
                AuthKind::Session {
                    id: session.id,
                    cookie: from_cookie,
                },
            )
        } else if token.starts_with(prefix::API) {
            let t = apm_store::auth::find_api_token(&mut conn, &token_hash(&token))
                .await?
                .ok_or_else(|| ApiError::unauthorized("unknown API token"))?;
            if t.revoked_at.is_some() {
                return Err(ApiError::unauthorized("this API token was revoked"));
            }
            if t.expires_at.is_some_and(|e| e <= now) {
                return Err(ApiError::unauthorized("this API token has expired"));
            }
            if t.last_used_at.is_none_or(|u| now - u > 60_000) {
                let mut w = state.db.write_conn().await?;
                apm_store::auth::touch_api_token(&mut w, &t.id, now).await?;
            }
            (t.user_id, AuthKind::ApiToken { id: t.id })
        } else {
            return Err(ApiError::unauthorized(
                "unrecognised token: user requests take a session token (apms_...) or an API token (apmt_...)",
            ));
        };
        let user = apm_store::auth::get_user(&mut conn, &user_id)
            .await?
            .ok_or_else(|| ApiError::unauthorized("the account of this token no longer exists"))?;
        if user.disabled != 0 {
            return Err(ApiError::unauthorized("this account is disabled"));
        }
        let role = Role::parse(&user.role).ok_or_else(|| {
            ApiError::internal(format!("user {} has unknown role {:?}", user.id, user.role))
        })?;
        Ok(Caller {
            user_id: user.id,
            username: user.username,
            role,
            auth,
            request_id: request_id(parts),
        })
    }
}

/// An authenticated agent (proxy credential).
#[derive(Debug, Clone)]
pub struct Agent {
    /// The proxy row (shared with the credential cache: clone it to change it).
    pub proxy: std::sync::Arc<apm_store::proxies::ProxyRow>,
    /// `x-request-id` of this request.
    pub request_id: Option<String>,
    /// The sync hub's generation just before `proxy` was read: while it has not moved, no
    /// notified change can be missing from the row, so the sync handler need not read it again.
    pub read_at: crate::sync::Wake,
    /// SHA-256 of the credential (the credential cache's key; never the token itself).
    pub credential: crate::credentials::CredentialKey,
}

impl FromRequestParts<AppState> for Agent {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = parts
            .headers
            .get("x-agent-token")
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .or_else(|| bearer(parts))
            .ok_or_else(|| {
                ApiError::unauthorized(
                    "agent credential required: send Authorization: Bearer apma_... or X-Agent-Token (get one from POST /api/v1/agents/enroll)",
                )
            })?;
        if !token.starts_with(prefix::AGENT) {
            return Err(ApiError::unauthorized(
                "not an agent credential (they start with apma_)",
            ));
        }
        let credential: crate::credentials::CredentialKey = Sha256::digest(token.as_bytes()).into();
        let read_at = state.hub.current();
        if let Some(proxy) = state.credentials.get(&credential, read_at.proxies) {
            return Ok(Agent {
                proxy,
                request_id: request_id(parts),
                read_at,
                credential,
            });
        }
        // Counters first, then the read: a change committed meanwhile leaves the entry stale.
        let stamp = state.credentials.stamp(read_at.proxies);
        let mut conn = state.db.acquire().await?;
        let proxy =
            apm_store::proxies::find_proxy_by_credential(&mut conn, &hex::encode(credential))
                .await?
                .ok_or_else(|| ApiError::unauthorized("unknown agent credential; enroll again"))?;
        drop(conn);
        if proxy.revoked_at.is_some() {
            return Err(ApiError::unauthorized(format!(
                "the credential of proxy {} was revoked; enroll again",
                proxy.hostname
            )));
        }
        let proxy = std::sync::Arc::new(proxy);
        state.credentials.insert(credential, proxy.clone(), stamp);
        Ok(Agent {
            proxy,
            request_id: request_id(parts),
            read_at,
            credential,
        })
    }
}

/// Counts failed logins per (client address, username) in a sliding window. Kept in memory:
/// with several replicas each enforces its own limit, which still bounds guessing to
/// `replicas × limit` per window.
pub struct LoginLimiter {
    max_failures: usize,
    window: Duration,
    failures: Mutex<HashMap<(String, String), Vec<Instant>>>,
}

impl LoginLimiter {
    /// New limiter.
    pub fn new(max_failures: u32, window: Duration) -> Self {
        LoginLimiter {
            max_failures: max_failures as usize,
            window,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Err(seconds to wait) when the key is over the limit.
    pub fn check(&self, client: &str, username: &str) -> Result<(), u64> {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let key = (client.to_string(), username.to_lowercase());
        if let Some(list) = map.get_mut(&key) {
            list.retain(|t| now.duration_since(*t) < self.window);
            if list.len() >= self.max_failures
                && let Some(oldest) = list.first()
            {
                let wait = self.window.saturating_sub(now.duration_since(*oldest));
                return Err(wait.as_secs().max(1));
            }
        }
        Ok(())
    }

    /// Records a failure.
    pub fn fail(&self, client: &str, username: &str) {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() > 100_000 {
            // Bound memory under a spray of usernames: forget everything old.
            let now = Instant::now();
            map.retain(|_, v| {
                v.last()
                    .is_some_and(|t| now.duration_since(*t) < self.window)
            });
        }
        map.entry((client.to_string(), username.to_lowercase()))
            .or_default()
            .push(Instant::now());
    }

    /// Clears the key after a success.
    pub fn succeed(&self, client: &str, username: &str) {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(&(client.to_string(), username.to_lowercase()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_roundtrip_and_rejection() {
        let h = hash_password("correct horse").expect("hash");
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("wrong horse", &h));
        assert!(!verify_password("x", "not a phc string"));
    }

    #[test]
    fn tokens_are_prefixed_random_and_hashed() {
        let a = new_token(prefix::API);
        let b = new_token(prefix::API);
        assert_ne!(a, b);
        assert!(a.starts_with("apmt_") && a.len() == 5 + 64);
        assert_eq!(token_hash(&a).len(), 64);
        assert_ne!(token_hash(&a), token_hash(&b));
    }

    #[test]
    fn limiter_blocks_after_max_failures_and_resets_on_success() {
        let l = LoginLimiter::new(2, Duration::from_secs(60));
        assert!(l.check("1.2.3.4", "root").is_ok());
        l.fail("1.2.3.4", "root");
        l.fail("1.2.3.4", "ROOT");
        assert!(l.check("1.2.3.4", "root").is_err());
        assert!(
            l.check("5.6.7.8", "root").is_ok(),
            "other clients are not blocked"
        );
        l.succeed("1.2.3.4", "root");
        assert!(l.check("1.2.3.4", "root").is_ok());
    }

    #[test]
    fn roles_are_ordered() {
        assert!(Role::Root > Role::Admin && Role::Admin > Role::Regular);
        assert_eq!(Role::parse("admin"), Some(Role::Admin));
        assert_eq!(Role::parse("superuser"), None);
    }
}
