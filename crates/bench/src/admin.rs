//! The administrator's side of a run, over the public API: log in as root, make an enrollment
//! token, enroll agents, create/submit/approve configs, assign proxies, read the server's gauges.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use crate::BenchError;
use crate::net::{Lane, request};

/// An API client with a root session.
pub struct Admin {
    server: SocketAddr,
    token: String,
    lane: Lane,
    /// Failed attempts that were retried (an overloaded server answers 503): each is an error
    /// of the run, reported, not hidden.
    pub retried: Vec<String>,
}

/// One API answer.
async fn call(
    lane: &mut Lane,
    server: SocketAddr,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> Result<(StatusCode, Value), BenchError> {
    let bytes = body.map(|b| serde_json::to_vec(b).unwrap_or_default());
    let req = request(method.clone(), server, path, token, bytes, false);
    let (status, body) = lane
        .send(req, Duration::from_secs(120))
        .await
        .map_err(|e| BenchError::Api(format!("{method} {path}: {e}")))?;
    let value = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()))
    };
    Ok((status, value))
}

fn expect(
    what: &str,
    (status, value): (StatusCode, Value),
    ok: &[u16],
) -> Result<Value, BenchError> {
    if ok.contains(&status.as_u16()) {
        Ok(value)
    } else {
        Err(BenchError::Api(format!(
            "{what}: HTTP {status}: {}",
            value.get("detail").cloned().unwrap_or(value)
        )))
    }
}

fn str_at<'a>(v: &'a Value, pointer: &str, what: &str) -> Result<&'a str, BenchError> {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .ok_or_else(|| BenchError::Api(format!("{what}: answer has no {pointer}: {v}")))
}

impl Admin {
    /// Logs in as root.
    pub async fn login(server: SocketAddr, password: &str) -> Result<Admin, BenchError> {
        let mut lane = Lane::h1(server, Ipv4Addr::LOCALHOST);
        let v = expect(
            "login",
            call(
                &mut lane,
                server,
                Method::POST,
                "/api/v1/auth/login",
                None,
                Some(&json!({"username": "root", "password": password})),
            )
            .await?,
            &[200],
        )?;
        let token = str_at(&v, "/token", "login")?.to_string();
        Ok(Admin {
            server,
            token,
            lane,
            retried: Vec::new(),
        })
    }

    async fn api(
        &mut self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        ok: &[u16],
    ) -> Result<Value, BenchError> {
        let what = format!("{method} {path}");
        let mut attempt = 0;
        loop {
            attempt += 1;
            let r = call(
                &mut self.lane,
                self.server,
                method.clone(),
                path,
                Some(&self.token),
                body,
            )
            .await;
            let retry = match &r {
                Ok((status, _)) => *status == StatusCode::SERVICE_UNAVAILABLE,
                Err(_) => true,
            };
            if !retry || attempt >= 5 {
                return expect(&what, r?, ok);
            }
            self.retried.push(match r {
                Ok((status, v)) => format!("{what}: HTTP {status}: {v}"),
                Err(e) => e.to_string(),
            });
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }

    /// An enrollment token good for any number of agents for a day.
    pub async fn enrollment_token(&mut self) -> Result<String, BenchError> {
        let v = self
            .api(
                Method::POST,
                "/api/v1/enrollment-tokens",
                Some(
                    &json!({"max_uses": 0, "expires_in_seconds": 86400, "note": "apm bench fleet"}),
                ),
                &[201],
            )
            .await?;
        Ok(str_at(&v, "/token", "enrollment token")?.to_string())
    }

    /// The default policy.
    pub async fn template(&mut self) -> Result<Value, BenchError> {
        self.api(Method::GET, "/api/v1/policy/template", None, &[200])
            .await
    }

    /// Creates a config with `policy`, returns its id.
    pub async fn create_config(
        &mut self,
        name: &str,
        policy: &Value,
    ) -> Result<String, BenchError> {
        let v = self
            .api(
                Method::POST,
                "/api/v1/configs",
                Some(&json!({"name": name, "description": "apm bench fleet", "policy": policy})),
                &[201],
            )
            .await?;
        Ok(str_at(&v, "/id", "create config")?.to_string())
    }

    /// Puts a new policy in the config's draft (creating the draft version); returns the ATS 9
    /// hash the new version will have.
    pub async fn edit_policy(&mut self, id: &str, policy: &Value) -> Result<String, BenchError> {
        let v = self
            .api(
                Method::PUT,
                &format!("/api/v1/configs/{id}"),
                Some(&json!({"policy": policy})),
                &[200],
            )
            .await?;
        Ok(str_at(&v, "/working/hashes/9", "edit config")?.to_string())
    }

    /// Submits the draft.
    pub async fn submit(&mut self, id: &str) -> Result<(), BenchError> {
        self.api(
            Method::POST,
            &format!("/api/v1/configs/{id}/submit"),
            None,
            &[200],
        )
        .await
        .map(drop)
    }

    /// Approves the pending version (self-confirm: root submitted it).
    pub async fn approve(&mut self, id: &str) -> Result<Value, BenchError> {
        self.api(
            Method::POST,
            &format!("/api/v1/configs/{id}/approve"),
            None,
            &[200],
        )
        .await
    }

    /// Assigns proxies, at most 10,000 per request (the API's limit).
    pub async fn assign(&mut self, id: &str, proxy_ids: &[String]) -> Result<(), BenchError> {
        for chunk in proxy_ids.chunks(10_000) {
            self.api(
                Method::POST,
                &format!("/api/v1/configs/{id}/proxies"),
                Some(&json!({"proxy_ids": chunk})),
                &[200],
            )
            .await?;
        }
        Ok(())
    }

    /// The server's `apm_sync_waiting` gauge (long-polls held), from /metrics.
    pub async fn waiting(&mut self) -> Result<Option<i64>, BenchError> {
        Ok(self
            .metrics_text()
            .await?
            .and_then(|text| gauge(&text, "apm_sync_waiting")))
    }

    /// The server's `/metrics` text (`None` when it does not answer 200).
    pub async fn metrics_text(&mut self) -> Result<Option<String>, BenchError> {
        let (status, v) = call(
            &mut self.lane,
            self.server,
            Method::GET,
            "/metrics",
            None,
            None,
        )
        .await?;
        if status != StatusCode::OK {
            return Ok(None);
        }
        Ok(v.as_str().map(str::to_string))
    }
}

/// Reads an unlabelled gauge from Prometheus text.
pub fn gauge(text: &str, name: &str) -> Option<i64> {
    sample(text, name).map(|f| f as i64)
}

/// Reads an unlabelled sample (gauge or counter) from Prometheus text.
pub fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == name).then(|| v.trim().parse::<f64>().ok())?
    })
}

/// Enrolls one agent; returns (credential, proxy id).
pub async fn enroll(
    lane: &mut Lane,
    server: SocketAddr,
    token: &str,
    hostname: &str,
) -> Result<(String, String), BenchError> {
    let v = expect(
        "enroll",
        call(
            lane,
            server,
            Method::POST,
            "/api/v1/agents/enroll",
            None,
            Some(&json!({"token": token, "hostname": hostname})),
        )
        .await?,
        &[201],
    )?;
    Ok((
        str_at(&v, "/agent_token", "enroll")?.to_string(),
        str_at(&v, "/proxy_id", "enroll")?.to_string(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_gauge_and_not_its_prefix_twins() {
        let text =
            "# TYPE apm_sync_waiting gauge\napm_sync_waiting_total 3\napm_sync_waiting 1234\n";
        assert_eq!(gauge(text, "apm_sync_waiting"), Some(1234));
        assert_eq!(gauge(text, "missing"), None);
    }
}
