//! The default policy a fresh install offers: the seed's table (PRODUCT.md).

use crate::model::Policy;

/// The default policy as a commented TOML file (`apm policy template`).
pub const DEFAULT_POLICY_TOML: &str = r#"# ATS Proxy Manager routing policy.
# Rules are checked in order; the first match wins. Anything no rule matches takes
# default_action. Validate with `apm policy validate FILE`, preview with `apm policy explain`.

# Port the local forward proxy listens on (clients set HTTP_PROXY/HTTPS_PROXY to it).
listen_port = 8153
# "parent": through the corporate proxies below; "direct": straight to the origin.
default_action = "parent"
# Client networks allowed to use the proxy.
allowed_clients = ["127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]
# Ports clients may open HTTPS tunnels (CONNECT) to: "443", "8000-8100", or "*".
connect_ports = ["443"]

# Parent proxies in priority order: the first is the primary.
[[parents]]
host = "10.96.215.26"
port = 3128

[[parents]]
host = "10.253.16.93"
port = 3128

[failover]
# primary_fallback: always the primary; the next parent only while it is marked down;
# back to the primary after retry_time_s. Others: round_robin_strict, client_ip_hash,
# latched, consistent_hash.
policy = "primary_fallback"
fail_threshold = 10
retry_time_s = 300
total_connect_attempts = 4
per_parent_connect_attempts = 2
connect_timeout_s = 30

[[rules]]
match = "ip"
value = "10.0.0.0/8"
action = "direct"
comment = "RFC 1918"

[[rules]]
match = "ip"
value = "172.16.0.0/12"
action = "direct"
comment = "RFC 1918"

[[rules]]
match = "ip"
value = "192.168.0.0/16"
action = "direct"
comment = "RFC 1918"

[[rules]]
match = "ip"
value = "198.18.0.0/16"
action = "direct"
comment = "internal benchmark range"

[[rules]]
match = "domain_suffix"
value = "eec"
action = "direct"

[[rules]]
match = "domain_suffix"
value = "eeca"
action = "direct"

[[rules]]
match = "domain_suffix"
value = "eeco"
action = "direct"

[[rules]]
match = "domain_suffix"
value = "svc.cluster.local"
action = "direct"
comment = "Kubernetes services"

[[rules]]
match = "domain_suffix"
value = "cluster.local"
action = "direct"
comment = "Kubernetes"

# Extra ATS records, rendered as they are. Records the policy sets itself are refused.
# [ats_records]
# "proxy.config.http.parent_proxy.self_detect" = 0
"#;

/// The default policy as a value.
pub fn default_policy() -> Policy {
    // The template is a constant checked by a unit test; failing to parse it is a build defect.
    Policy::from_toml_str(DEFAULT_POLICY_TOML).expect("the built-in template parses")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_parses_and_validates() {
        let policy = default_policy();
        assert_eq!(policy.rules.len(), 9);
        assert_eq!(policy.parents.len(), 2);
        policy.validate().unwrap();
    }
}
