//! HTTP client for the control plane's agent endpoints.

use std::time::Duration;

use url::Url;

use crate::metrics::Sample;
use crate::wire::{
    Ack, EnrollRequest, EnrollResponse, LogsRequest, StatsRequest, SyncQuery, SyncResponse,
};

/// What went wrong talking to the control plane.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// No answer (connection refused, timeout, DNS…): back off and leave ATS alone.
    #[error("control plane unreachable at {url}: {reason}")]
    Unreachable {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// 401: the credential (or enrollment token) is unknown, expired or revoked.
    #[error("control plane refused the credential ({status}): {detail}")]
    Unauthorized {
        /// HTTP status.
        status: u16,
        /// The server's problem detail.
        detail: String,
    },
    /// Any other non-success status.
    #[error("control plane answered {status} to {what}: {detail}")]
    Rejected {
        /// What was sent.
        what: &'static str,
        /// HTTP status.
        status: u16,
        /// The server's problem detail.
        detail: String,
    },
    /// A body we could not read.
    #[error("control plane sent an unreadable answer to {what}: {reason}")]
    Protocol {
        /// What was sent.
        what: &'static str,
        /// Why.
        reason: String,
    },
}

impl ClientError {
    /// True for errors that say nothing about the request (retry later as is).
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Unreachable { .. } => true,
            ClientError::Rejected { status, .. } => *status >= 500 || *status == 429,
            _ => false,
        }
    }
}

/// The control plane, as an agent sees it.
#[derive(Debug, Clone)]
pub struct ControlPlane {
    http: reqwest::Client,
    base: Url,
    credential: Option<String>,
    request_timeout: Duration,
}

impl ControlPlane {
    /// A client for `base` (e.g. `http://manager:8080`), without credential yet.
    pub fn new(base: Url, request_timeout: Duration) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("apm-agent/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        Ok(Self {
            http,
            base,
            credential: None,
            request_timeout,
        })
    }

    /// Uses `credential` on every agent call.
    pub fn with_credential(mut self, credential: String) -> Self {
        self.credential = Some(credential);
        self
    }

    fn url(&self, path: &str) -> Url {
        let mut url = self.base.clone();
        let base_path = url.path().trim_end_matches('/').to_owned();
        url.set_path(&format!("{base_path}{path}"));
        url
    }

    fn authed(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.credential {
            Some(c) => req.bearer_auth(c),
            None => req,
        }
    }

    async fn send<T: serde::de::DeserializeOwned>(
        &self,
        what: &'static str,
        req: reqwest::RequestBuilder,
    ) -> Result<T, ClientError> {
        let url = self.base.to_string();
        let resp = req.send().await.map_err(|e| ClientError::Unreachable {
            url: url.clone(),
            reason: error_chain(&e),
        })?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| ClientError::Unreachable {
            url,
            reason: error_chain(&e),
        })?;
        if status.is_success() {
            return serde_json::from_slice(&body).map_err(|e| ClientError::Protocol {
                what,
                reason: e.to_string(),
            });
        }
        let detail = problem_detail(&body);
        if status.as_u16() == 401 {
            return Err(ClientError::Unauthorized {
                status: 401,
                detail,
            });
        }
        Err(ClientError::Rejected {
            what,
            status: status.as_u16(),
            detail,
        })
    }

    /// Exchanges an enrollment token for a credential.
    pub async fn enroll(&self, token: &str, hostname: &str) -> Result<EnrollResponse, ClientError> {
        let req = self
            .http
            .post(self.url("/api/v1/agents/enroll"))
            .timeout(self.request_timeout)
            .json(&EnrollRequest { token, hostname });
        self.send("enrollment", req).await
    }

    /// Long-polls for the desired config; the server may hold the request `query.wait` s.
    pub async fn sync(&self, query: &SyncQuery<'_>) -> Result<SyncResponse, ClientError> {
        let timeout = self.request_timeout + Duration::from_secs(query.wait);
        let mut url = self.url("/api/v1/sync");
        {
            let mut pairs = url.query_pairs_mut();
            pairs.append_pair("hostname", query.hostname);
            if let Some(h) = &query.hash {
                pairs.append_pair("hash", h);
            }
            pairs.append_pair("wait", &query.wait.to_string());
            if let Some(v) = query.ats_version {
                pairs.append_pair("ats_version", v);
            }
            pairs.append_pair("os", query.os);
            pairs.append_pair("arch", query.arch);
        }
        let req = self.authed(self.http.get(url)).timeout(timeout);
        self.send("sync", req).await
    }

    /// Reports an apply outcome.
    pub async fn ack(&self, ack: &Ack) -> Result<(), ClientError> {
        let req = self
            .authed(self.http.post(self.url("/api/v1/sync/ack")))
            .timeout(self.request_timeout)
            .json(ack);
        self.send::<serde_json::Value>("ack", req).await.map(|_| ())
    }

    /// Pushes one metrics sample.
    pub async fn stats(&self, hostname: &str, sample: &Sample) -> Result<(), ClientError> {
        let body = StatsRequest {
            hostname,
            timestamp: (sample.ts_ms / 1000).to_string(),
            metrics: &sample.values,
        };
        let req = self
            .authed(self.http.post(self.url("/api/v1/sync/stats")))
            .timeout(self.request_timeout)
            .json(&body);
        self.send::<serde_json::Value>("stats", req)
            .await
            .map(|_| ())
    }

    /// Ships captured log lines.
    pub async fn logs(&self, hostname: &str, lines: &[String]) -> Result<(), ClientError> {
        let req = self
            .authed(self.http.post(self.url("/api/v1/sync/logs")))
            .timeout(self.request_timeout)
            .json(&LogsRequest { hostname, lines });
        self.send::<serde_json::Value>("logs", req)
            .await
            .map(|_| ())
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The `detail` of an RFC 9457 problem body, else the body text (cut).
pub fn problem_detail(body: &[u8]) -> String {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body)
        && let Some(d) = v.get("detail").and_then(|d| d.as_str())
    {
        return d.to_owned();
    }
    String::from_utf8_lossy(body).chars().take(500).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problem_detail_prefers_the_detail_member() {
        assert_eq!(
            problem_detail(br#"{"title":"x","detail":"no config"}"#),
            "no config"
        );
        assert_eq!(problem_detail(b"plain"), "plain");
    }

    #[test]
    fn urls_keep_a_base_path() {
        let c = ControlPlane::new(
            "http://h:1/prefix/".parse().unwrap(),
            Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!(
            c.url("/api/v1/sync").as_str(),
            "http://h:1/prefix/api/v1/sync"
        );
    }

    #[tokio::test]
    async fn unreachable_is_transient() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let c = ControlPlane::new(
            format!("http://127.0.0.1:{port}").parse().unwrap(),
            Duration::from_secs(2),
        )
        .unwrap();
        let err = c.enroll("t", "h").await.unwrap_err();
        assert!(err.is_transient(), "{err}");
        assert!(err.to_string().contains("unreachable"), "{err}");
    }
}
