//! The policy document as people write it (TOML files) and as the API carries it (JSON).
//!
//! These types are deliberately loose where a person can make a mistake (rule values, hosts,
//! CIDRs are strings): a bad value must reach [`crate::validate`], which names the field, the
//! rule index and the value, instead of failing inside the deserializer with a generic message.
//! Unknown fields are rejected so that a typo (`retry_time = 5` instead of `retry_time_s`)
//! is an error, not a silently ignored setting.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Default listen port of the local forward proxy.
pub const DEFAULT_LISTEN_PORT: u16 = 8153;

/// A routing policy: which destinations go DIRECT and which through the parent proxies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Port ATS listens on for clients (`proxy.config.http.server_ports`).
    #[serde(default = "default_listen_port")]
    pub listen_port: u32,
    /// What happens to a request no rule matches.
    pub default_action: Action,
    /// Parent proxies in priority order: the first is the primary.
    #[serde(default)]
    pub parents: Vec<Parent>,
    /// How ATS chooses among the parents and when it marks one down.
    #[serde(default)]
    pub failover: Failover,
    /// Ordered rules; the first match wins.
    #[serde(default)]
    pub rules: Vec<Rule>,
    /// Client networks allowed to use the proxy (CIDR or `a-b` ranges).
    #[serde(default = "default_allowed_clients")]
    pub allowed_clients: Vec<String>,
    /// Destination ports clients may CONNECT to: single ports (`443`), ranges (`8000-8100`)
    /// or `*` for any port.
    #[serde(default = "default_connect_ports")]
    pub connect_ports: Vec<String>,
    /// Escape hatch: extra ATS records rendered as they are. May not touch a record the
    /// policy itself sets.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ats_records: BTreeMap<String, RecordValue>,
}

/// Where a request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Straight to the origin server.
    Direct,
    /// Through the parent proxies, in the failover policy's order, never DIRECT.
    Parent,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Direct => "direct",
            Action::Parent => "parent",
        })
    }
}

/// A parent (upstream) proxy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Parent {
    /// IP address or host name.
    pub host: String,
    /// TCP port; ATS requires one.
    pub port: u32,
}

/// Failover behaviour among the parents and the records that tune it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Failover {
    /// Which parent ATS picks for a request.
    #[serde(default)]
    pub policy: FailoverPolicy,
    /// Connection failures before a parent is marked down.
    #[serde(default = "default_fail_threshold")]
    pub fail_threshold: u32,
    /// Seconds a parent stays marked down before ATS retries it.
    #[serde(default = "default_retry_time_s")]
    pub retry_time_s: u32,
    /// Connection attempts across all parents for one request.
    #[serde(default = "default_total_connect_attempts")]
    pub total_connect_attempts: u32,
    /// Connection attempts to one parent before trying the next.
    #[serde(default = "default_per_parent_connect_attempts")]
    pub per_parent_connect_attempts: u32,
    /// Seconds before a connection attempt to a parent times out.
    #[serde(default = "default_connect_timeout_s")]
    pub connect_timeout_s: u32,
}

impl Default for Failover {
    fn default() -> Self {
        Failover {
            policy: FailoverPolicy::default(),
            fail_threshold: default_fail_threshold(),
            retry_time_s: default_retry_time_s(),
            total_connect_attempts: default_total_connect_attempts(),
            per_parent_connect_attempts: default_per_parent_connect_attempts(),
            connect_timeout_s: default_connect_timeout_s(),
        }
    }
}

/// The ATS parent selection policies, by what they do rather than by ATS's value names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailoverPolicy {
    /// Always the first parent; the next only while it is marked down; fail back after
    /// `retry_time_s` (ATS `round_robin=false`).
    #[default]
    PrimaryFallback,
    /// Alternate parents on every request (ATS `round_robin=strict`).
    RoundRobinStrict,
    /// Parent chosen by a hash of the client IP (ATS `round_robin=true`).
    ClientIpHash,
    /// Stay on the current parent until it fails; no fail-back (ATS `round_robin=latched`).
    Latched,
    /// Parent chosen by a hash of the URL (ATS `round_robin=consistent_hash`).
    ConsistentHash,
}

impl FailoverPolicy {
    /// The value of `round_robin=` in parent.config.
    pub fn ats_round_robin(self) -> &'static str {
        match self {
            FailoverPolicy::PrimaryFallback => "false",
            FailoverPolicy::RoundRobinStrict => "strict",
            FailoverPolicy::ClientIpHash => "true",
            FailoverPolicy::Latched => "latched",
            FailoverPolicy::ConsistentHash => "consistent_hash",
        }
    }

    /// The name used in policy files.
    pub fn as_str(self) -> &'static str {
        match self {
            FailoverPolicy::PrimaryFallback => "primary_fallback",
            FailoverPolicy::RoundRobinStrict => "round_robin_strict",
            FailoverPolicy::ClientIpHash => "client_ip_hash",
            FailoverPolicy::Latched => "latched",
            FailoverPolicy::ConsistentHash => "consistent_hash",
        }
    }
}

/// One routing rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// What the rule compares the destination with.
    #[serde(rename = "match")]
    pub matcher: MatchKind,
    /// A CIDR or `a-b` range for `ip`; a domain for the domain matchers
    /// (`eec`, `.eec` and `*.eec` all mean "eec and its subdomains" for `domain_suffix`).
    pub value: String,
    /// Where matching requests go.
    pub action: Action,
    /// A note for people; not rendered into ATS files, so editing it changes no hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// The kind of destination a rule matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MatchKind {
    /// Destination IP address in a CIDR or range (IPv4 or IPv6). Needs DNS for host names.
    Ip,
    /// Destination host is the domain or one of its subdomains.
    DomainSuffix,
    /// Destination host is exactly this name.
    DomainExact,
}

impl fmt::Display for MatchKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MatchKind::Ip => "ip",
            MatchKind::DomainSuffix => "domain_suffix",
            MatchKind::DomainExact => "domain_exact",
        })
    }
}

/// The value of an extra ATS record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RecordValue {
    /// Rendered as `INT` 1 or 0.
    Bool(bool),
    /// Rendered as `INT`.
    Int(i64),
    /// Rendered as `FLOAT`.
    Float(f64),
    /// Rendered as `STRING`.
    String(String),
}

fn default_listen_port() -> u32 {
    u32::from(DEFAULT_LISTEN_PORT)
}
fn default_fail_threshold() -> u32 {
    10
}
fn default_retry_time_s() -> u32 {
    300
}
fn default_total_connect_attempts() -> u32 {
    4
}
fn default_per_parent_connect_attempts() -> u32 {
    2
}
fn default_connect_timeout_s() -> u32 {
    30
}

/// Loopback and the RFC 1918 private ranges: where the applications of a platform team live.
pub fn default_allowed_clients() -> Vec<String> {
    [
        "127.0.0.0/8",
        "::1/128",
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
    ]
    .into_iter()
    .map(String::from)
    .collect()
}

/// HTTPS only, ATS's own default.
pub fn default_connect_ports() -> Vec<String> {
    vec!["443".to_string()]
}

/// Errors reading a policy document.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// The TOML is malformed or does not have the policy's shape; the message names the line.
    #[error("{0}")]
    Toml(#[from] toml::de::Error),
    /// The JSON is malformed or does not have the policy's shape.
    #[error("{0}")]
    Json(#[from] serde_json::Error),
}

impl Policy {
    /// Reads a policy from TOML text.
    pub fn from_toml_str(text: &str) -> Result<Policy, ParseError> {
        Ok(toml::from_str(text)?)
    }

    /// Reads a policy from JSON text.
    pub fn from_json_str(text: &str) -> Result<Policy, ParseError> {
        Ok(serde_json::from_str(text)?)
    }

    /// The policy as TOML (without the template's explanatory comments).
    pub fn to_toml_string(&self) -> String {
        // Serializing a value of this shape cannot fail: every map key is a string and there
        // are no non-string-keyed maps or unsupported types.
        toml::to_string_pretty(self).unwrap_or_default()
    }
}
