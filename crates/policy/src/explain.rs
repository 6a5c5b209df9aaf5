//! `explain`: for a destination, which rule decides and where the request goes, following
//! ATS's first-match reading of the rendered `parent.config`.

use std::fmt;
use std::net::IpAddr;

use serde::Serialize;

use crate::model::Action;
use crate::validate::{Matcher, ValidPolicy, parse_domain};

/// What to explain: a destination host and, where given, a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The text the user gave.
    pub input: String,
    /// The destination host.
    pub host: TargetHost,
    /// The destination port, from the URL's scheme or `host:port`.
    pub port: Option<u16>,
}

/// A destination host: an address literal or a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetHost {
    /// An IP literal: only `ip` rules can match it.
    Ip(IpAddr),
    /// A DNS name: domain rules match it; `ip` rules match what it resolves to.
    Name(String),
}

impl fmt::Display for TargetHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetHost::Ip(ip) => write!(f, "{ip}"),
            TargetHost::Name(name) => f.write_str(name),
        }
    }
}

/// A target that is neither a URL nor `host[:port]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("\"{input}\" is not a URL or host[:port]: {reason}")]
pub struct TargetError {
    input: String,
    reason: String,
}

impl Target {
    /// Reads `https://example.com/x`, `example.com`, `example.com:8443`, `10.1.2.3`,
    /// `[2001:db8::1]:443` or `2001:db8::1`.
    pub fn parse(input: &str) -> Result<Target, TargetError> {
        let text = input.trim();
        let error = |reason: &str| TargetError {
            input: input.to_string(),
            reason: reason.to_string(),
        };
        if text.contains("://") {
            let url = url::Url::parse(text).map_err(|e| error(&e.to_string()))?;
            let host = match url.host() {
                Some(url::Host::Ipv4(ip)) => TargetHost::Ip(IpAddr::V4(ip)),
                Some(url::Host::Ipv6(ip)) => TargetHost::Ip(IpAddr::V6(ip)),
                Some(url::Host::Domain(name)) => {
                    TargetHost::Name(parse_domain(name).map_err(|e| error(&e))?.to_string())
                }
                None => return Err(error("the URL has no host")),
            };
            return Ok(Target {
                input: input.to_string(),
                host,
                port: url.port_or_known_default(),
            });
        }
        if let Ok(ip) = text.parse::<IpAddr>() {
            return Ok(Target {
                input: input.to_string(),
                host: TargetHost::Ip(ip),
                port: None,
            });
        }
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (host, after) = rest.split_once(']').ok_or_else(|| error("unclosed '['"))?;
            (host, after.strip_prefix(':'))
        } else {
            match text.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (text, None),
            }
        };
        let port = match port {
            Some(port) => Some(
                port.parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| error(&format!("\"{port}\" is not a port")))?,
            ),
            None => None,
        };
        let host = match host.parse::<IpAddr>() {
            Ok(ip) => TargetHost::Ip(ip),
            Err(_) => TargetHost::Name(parse_domain(host).map_err(|e| error(&e))?.to_string()),
        };
        Ok(Target {
            input: input.to_string(),
            host,
            port,
        })
    }
}

/// The decision for one target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Explanation {
    /// The target as given.
    pub target: String,
    /// The destination host.
    pub host: String,
    /// The destination port, if known.
    pub port: Option<u16>,
    /// DIRECT or PARENT.
    pub action: Action,
    /// Parents in the order ATS tries them (`host:port`); empty for DIRECT.
    pub parents: Vec<String>,
    /// The failover policy among `parents`, when the action is PARENT.
    pub failover: Option<&'static str>,
    /// Index of the deciding rule, or `None` for the default action.
    pub rule: Option<usize>,
    /// The deciding rule as text.
    pub rule_text: String,
    /// Whether the answer depends on what the host resolves to on the proxy.
    pub depends_on_dns: bool,
    /// What else the reader should know.
    pub notes: Vec<String>,
}

/// Explains where a request to `target` goes. `resolved` are the addresses the host resolves
/// to, when the caller looked them up; without them, `ip` rules cannot be decided for host
/// names and the explanation says so.
pub fn explain(policy: &ValidPolicy, target: &Target, resolved: &[IpAddr]) -> Explanation {
    let mut notes = Vec::new();
    let mut undecided_ip_rules = Vec::new();
    let mut decision: Option<(usize, Action)> = None;
    let name = match &target.host {
        TargetHost::Name(name) => Some(name.as_str()),
        TargetHost::Ip(_) => None,
    };
    let addresses: Vec<IpAddr> = match &target.host {
        TargetHost::Ip(ip) => vec![*ip],
        TargetHost::Name(_) => resolved.to_vec(),
    };
    let has_ip_rules = policy
        .rules
        .iter()
        .any(|rule| matches!(rule.matcher, Matcher::Ip(_)));

    for &position in &policy.line_order {
        let rule = &policy.rules[position];
        let matched = match (&rule.matcher, name) {
            (Matcher::Ip(range), _) => {
                if name.is_some() && addresses.is_empty() {
                    undecided_ip_rules.push(position);
                    false
                } else {
                    let inside: Vec<&IpAddr> =
                        addresses.iter().filter(|ip| range.contains(**ip)).collect();
                    if !inside.is_empty() && inside.len() < addresses.len() {
                        notes.push(format!(
                            "only some resolved addresses fall in rules[{}] ({}); ATS uses the address it connects to, so the answer may vary",
                            rule.index, rule.matcher
                        ));
                    }
                    !inside.is_empty()
                }
            }
            (Matcher::DomainSuffix(domain), Some(host)) => domain.is_suffix_of(host),
            (Matcher::DomainExact(domain), Some(host)) => domain.as_str() == host,
            (_, None) => false,
        };
        if matched {
            decision = Some((rule.index, rule.action));
            break;
        }
    }

    let (rule, action) = match decision {
        Some((index, action)) => (Some(index), action),
        None => (None, policy.policy().default_action),
    };
    let rule_text = match rule {
        Some(index) => {
            let valid = policy
                .rules
                .iter()
                .find(|r| r.index == index)
                .map(|r| r.matcher.to_string());
            format!("rules[{index}]: {} -> {action}", valid.unwrap_or_default())
        }
        None => format!("default_action -> {action}"),
    };
    let host = target.host.to_string();
    for position in &undecided_ip_rules {
        let earlier = &policy.rules[*position];
        if earlier.action != action {
            notes.push(format!(
                "if {host} resolves into {} (rules[{}]), it goes {} instead",
                match &earlier.matcher {
                    Matcher::Ip(range) => range.to_string(),
                    other => other.to_string(),
                },
                earlier.index,
                earlier.action.to_string().to_uppercase()
            ));
        }
    }
    if name.is_some() && has_ip_rules {
        notes.push(format!(
            "the policy has ip rules, so ATS resolves {host} before choosing a route; if the proxy cannot resolve it, ATS answers 500 \"Cannot find server\""
        ));
    }
    let parents = match action {
        Action::Parent => policy.parents.iter().map(ToString::to_string).collect(),
        Action::Direct => Vec::new(),
    };
    let failover = (action == Action::Parent).then(|| policy.policy().failover.policy.as_str());
    Explanation {
        target: target.input.clone(),
        host,
        port: target.port,
        action,
        parents,
        failover,
        rule,
        rule_text,
        depends_on_dns: !undecided_ip_rules.is_empty(),
        notes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template::default_policy;

    fn run(target: &str, resolved: &[IpAddr]) -> Explanation {
        let policy = default_policy().validate().unwrap();
        explain(&policy, &Target::parse(target).unwrap(), resolved)
    }

    #[test]
    fn ip_literal_in_private_range_goes_direct() {
        let e = run("http://10.1.2.3/x", &[]);
        assert_eq!((e.action, e.rule), (Action::Direct, Some(0)));
        assert!(!e.depends_on_dns);
        assert!(e.parents.is_empty());
    }

    #[test]
    fn internal_suffix_goes_direct_and_notes_dns() {
        let e = run("api.svc.cluster.local:8080", &[]);
        assert_eq!((e.action, e.rule), (Action::Direct, Some(7)));
        assert!(e.depends_on_dns);
        assert_eq!(e.port, Some(8080));
    }

    #[test]
    fn public_name_goes_to_parents_in_order() {
        let e = run("https://github.com", &[]);
        assert_eq!((e.action, e.rule), (Action::Parent, None));
        assert_eq!(e.parents, ["10.96.215.26:3128", "10.253.16.93:3128"]);
        assert_eq!(e.port, Some(443));
        assert!(
            e.notes
                .iter()
                .any(|n| n.contains("resolves into 10.0.0.0-10.255.255.255 (rules[0])"))
        );
    }

    #[test]
    fn resolved_addresses_decide_ip_rules() {
        let e = run("intranet.example.com", &["192.168.1.10".parse().unwrap()]);
        assert_eq!((e.action, e.rule), (Action::Direct, Some(2)));
        assert!(!e.depends_on_dns);
    }

    #[test]
    fn bad_targets_are_reported() {
        for bad in ["http://", "exa mple.com", "host:99999", "[::1"] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Target::parse("[::1]:443").unwrap().port, Some(443));
    }
}
