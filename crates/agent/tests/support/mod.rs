//! Test world for the agent: a real ATS 9.2 (apm-testkit), two loopback parents, origins, and
//! policies rendered by apm-policy. Shared by crates/agent/tests and crates/apm/tests (via
//! `#[path]`), so the end-to-end tests and the apply tests speak about the same world.
#![allow(dead_code)]

use apm_policy::{AtsMajor, Bundle, Policy};
use apm_testkit::ats::{AtsConfig, AtsInstance};
use apm_testkit::client::ProxyClient;
use apm_testkit::net::{Hosts, free_port, loopback};
use apm_testkit::origin::Origin;
use apm_testkit::parent::ParentProxy;

/// Origins, parents, the listen port, and the names ATS resolves.
pub struct World {
    pub hosts: Hosts,
    pub internet: Origin,
    pub intra: Origin,
    pub p1: ParentProxy,
    pub p2: ParentProxy,
    pub port: u16,
}

impl World {
    pub fn new() -> Self {
        let hosts = Hosts::new()
            .with("www.internet.test", loopback(6))
            .with("intra.corp.test", loopback(2));
        Self {
            internet: Origin::start("internet", loopback(6)).expect("origin internet"),
            intra: Origin::start("intra", loopback(2)).expect("origin intra"),
            p1: ParentProxy::start("p1", loopback(3), hosts.clone()).expect("parent p1"),
            p2: ParentProxy::start("p2", loopback(4), hosts.clone()).expect("parent p2"),
            port: free_port().expect("free port"),
            hosts,
        }
    }

    /// The test policy (TOML): default → parents in the given order ("p1" / "p2"),
    /// `intra.corp.test` DIRECT, plus `extra` appended verbatim.
    pub fn policy_toml(&self, first: &str, listen_port: u16, extra: &str) -> String {
        let (p1h, p1p) = self.p1.host_port();
        let (p2h, p2p) = self.p2.host_port();
        let (a, b) = if first == "p1" {
            ((p1h, p1p), (p2h, p2p))
        } else {
            ((p2h, p2p), (p1h, p1p))
        };
        format!(
            r#"
listen_port = {listen_port}
default_action = "parent"
allowed_clients = ["127.0.0.0/8", "::1/128"]
connect_ports = ["*"]

[[parents]]
host = "{}"
port = {}

[[parents]]
host = "{}"
port = {}

[failover]
policy = "primary_fallback"
fail_threshold = 1
retry_time_s = 4
total_connect_attempts = 2
per_parent_connect_attempts = 1
connect_timeout_s = 2

[[rules]]
match = "domain_suffix"
value = "corp.test"
action = "direct"
{extra}
[ats_records]
"proxy.config.http.parent_proxy.self_detect" = 0
"#,
            a.0, a.1, b.0, b.1
        )
    }

    pub fn policy_json(&self, first: &str) -> serde_json::Value {
        let toml = self.policy_toml(first, self.port, "");
        let policy = Policy::from_toml_str(&toml).expect("policy");
        serde_json::to_value(policy).expect("json")
    }

    pub fn bundle(&self, first: &str) -> Bundle {
        self.bundle_with(first, self.port, "")
    }

    pub fn bundle_with(&self, first: &str, listen_port: u16, extra: &str) -> Bundle {
        let toml = self.policy_toml(first, listen_port, extra);
        let policy = Policy::from_toml_str(&toml).unwrap_or_else(|e| panic!("parse: {e}\n{toml}"));
        let valid = policy
            .validate()
            .unwrap_or_else(|e| panic!("validate: {e}\n{toml}"));
        apm_policy::render(&valid, AtsMajor::V9)
    }

    /// ATS running `bundle` (the harness appends its host records).
    pub fn start_ats(&self, bundle: &Bundle) -> AtsInstance {
        AtsInstance::start(
            AtsConfig::new(self.port)
                .files(bundle.files.clone())
                .hosts(self.hosts.clone()),
        )
        .unwrap_or_else(|e| panic!("ATS did not start: {e}"))
    }

    /// ATS running the Debian default files only (nothing of ours yet), on the world's port.
    pub fn start_bare_ats(&self) -> AtsInstance {
        AtsInstance::start(AtsConfig::new(self.port).hosts(self.hosts.clone()))
            .unwrap_or_else(|e| panic!("ATS did not start: {e}"))
    }

    pub fn internet_url(&self, path: &str) -> String {
        format!(
            "http://www.internet.test:{}{path}",
            self.internet.addr().port()
        )
    }

    pub fn intra_url(&self, path: &str) -> String {
        format!("http://intra.corp.test:{}{path}", self.intra.addr().port())
    }
}

/// The harness's host records, as the agent's `--local-records` file.
pub fn local_records(ats: &AtsInstance) -> String {
    ats.harness_records()
        .iter()
        .map(|r| format!("{r}\n"))
        .collect()
}

/// Which parent served a GET of `url` through ATS ("direct" when none), with the status.
pub fn route(ats: &AtsInstance, url: &str) -> (u16, String) {
    let r = ProxyClient::new(ats.proxy_addr())
        .get(url)
        .unwrap_or_else(|e| panic!("GET {url}: {e}\n{}", ats.log_tails(30)));
    let via = r.header("x-apm-parent").unwrap_or("direct").to_owned();
    (r.status, via)
}
