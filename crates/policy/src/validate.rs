//! Validation: turns a [`Policy`] document into a [`ValidPolicy`] of domain types, or into
//! a list of errors that each name the field (`rules[3].value`), the bad value and why.
//!
//! The promise: whatever passes validation renders to lines ATS will not drop or choke on.
//! That is why this module also decides the order of the `parent.config` lines (see
//! [`line_order`]): ATS 9.2 hangs on some `dest_ip` orderings, and a policy that cannot be
//! reordered safely is refused here, not discovered on a proxy.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

use serde::Serialize;

use crate::model::{Action, MatchKind, Policy, RecordValue};

/// One validation problem, located by a path into the document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ValidationError {
    /// Where: `listen_port`, `parents[1].port`, `rules[3].value`, `ats_records."name"` …
    pub path: String,
    /// What is wrong, quoting the bad value.
    pub message: String,
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every problem found in a policy (never empty).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(transparent)]
pub struct ValidationErrors(Vec<ValidationError>);

impl ValidationErrors {
    /// The individual errors, in document order.
    pub fn errors(&self) -> &[ValidationError] {
        &self.0
    }
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.0.len();
        write!(
            f,
            "the policy has {count} error{}:",
            if count == 1 { "" } else { "s" }
        )?;
        for error in &self.0 {
            write!(f, "\n  {error}")?;
        }
        Ok(())
    }
}

/// An inclusive range of addresses of one family. CIDRs are ranges too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IpRange {
    first: IpAddr,
    last: IpAddr,
}

impl IpRange {
    /// First address of the range.
    pub fn first(&self) -> IpAddr {
        self.first
    }
    /// Last address of the range.
    pub fn last(&self) -> IpAddr {
        self.last
    }
    /// Whether the address lies in the range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        same_family(self.first, ip) && self.first <= ip && ip <= self.last
    }
    /// Whether `other` lies entirely inside this range.
    pub fn covers(&self, other: &IpRange) -> bool {
        same_family(self.first, other.first) && self.first <= other.first && other.last <= self.last
    }
    /// Whether the two ranges share an address.
    pub fn overlaps(&self, other: &IpRange) -> bool {
        same_family(self.first, other.first) && self.first <= other.last && other.first <= self.last
    }
    /// Whether this range ends exactly one address below `other`'s start.
    pub fn ends_just_below(&self, other: &IpRange) -> bool {
        same_family(self.last, other.first)
            && as_u128(self.last).checked_add(1) == Some(as_u128(other.first))
    }
    /// Whether the range is one address.
    pub fn is_single(&self) -> bool {
        self.first == self.last
    }
    /// The smallest list of CIDR blocks covering exactly this range.
    pub fn to_cidrs(&self) -> Vec<ipnet::IpNet> {
        let (bits, mut start, end) = (
            family_bits(self.first),
            as_u128(self.first),
            as_u128(self.last),
        );
        let mut blocks = Vec::new();
        loop {
            // Largest block aligned at `start` that does not pass `end`.
            let mut size_log2 = if start == 0 {
                bits
            } else {
                start.trailing_zeros().min(bits)
            };
            while size_log2 > 0 && block_last(start, size_log2) > end {
                size_log2 -= 1;
            }
            let prefix = (bits - size_log2) as u8;
            let net = match self.first {
                IpAddr::V4(_) => ipnet::IpNet::V4(
                    ipnet::Ipv4Net::new(std::net::Ipv4Addr::from(start as u32), prefix)
                        .unwrap_or_default(),
                ),
                IpAddr::V6(_) => ipnet::IpNet::V6(
                    ipnet::Ipv6Net::new(std::net::Ipv6Addr::from(start), prefix)
                        .unwrap_or_default(),
                ),
            };
            blocks.push(net);
            let last = block_last(start, size_log2);
            if last >= end {
                return blocks;
            }
            start = last + 1;
        }
    }
}

impl fmt::Display for IpRange {
    /// ATS notation: a single address or `first-last`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_single() {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

fn block_last(start: u128, size_log2: u32) -> u128 {
    if size_log2 >= 128 {
        u128::MAX
    } else {
        start | ((1u128 << size_log2) - 1)
    }
}

fn family_bits(ip: IpAddr) -> u32 {
    match ip {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

fn same_family(a: IpAddr, b: IpAddr) -> bool {
    a.is_ipv4() == b.is_ipv4()
}

fn as_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// Parses `10.0.0.0/8`, `10.0.0.1`, `10.0.0.1-10.0.0.9`, `fd00::/8`, `::1`.
pub fn parse_ip_range(text: &str) -> Result<IpRange, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("is empty; expected a CIDR such as \"10.0.0.0/8\" or a range \"a-b\"".into());
    }
    if let Some((first, last)) = text.split_once('-') {
        let first: IpAddr = first
            .trim()
            .parse()
            .map_err(|_| format!("\"{text}\": \"{}\" is not an IP address", first.trim()))?;
        let last: IpAddr = last
            .trim()
            .parse()
            .map_err(|_| format!("\"{text}\": \"{}\" is not an IP address", last.trim()))?;
        if !same_family(first, last) {
            return Err(format!("\"{text}\" mixes IPv4 and IPv6"));
        }
        if first > last {
            return Err(format!(
                "\"{text}\" is reversed: {first} comes after {last}"
            ));
        }
        return Ok(IpRange { first, last });
    }
    if let Some((addr, prefix)) = text.split_once('/') {
        let net: ipnet::IpNet =
            text.parse()
                .map_err(|_| match (addr.parse::<IpAddr>(), prefix.parse::<u8>()) {
                    (Err(_), _) => format!("\"{text}\": \"{addr}\" is not an IP address"),
                    (Ok(ip), _) => format!(
                        "\"{text}\": prefix length \"{prefix}\" must be 0-{}",
                        family_bits(ip)
                    ),
                })?;
        if net.trunc() != net {
            return Err(format!(
                "\"{text}\" has host bits set; did you mean \"{}\"?",
                net.trunc()
            ));
        }
        return Ok(IpRange {
            first: net.network(),
            last: net.broadcast(),
        });
    }
    let ip: IpAddr = text.parse().map_err(|_| {
        format!("\"{text}\" is not an IP address, a CIDR (\"10.0.0.0/8\") or a range (\"a-b\")")
    })?;
    Ok(IpRange {
        first: ip,
        last: ip,
    })
}

/// A lower-case DNS name without a trailing dot, valid for ATS's host matchers.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DomainName(String);

impl DomainName {
    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// Whether `host` is this name or one of its subdomains.
    pub fn is_suffix_of(&self, host: &str) -> bool {
        host == self.0
            || (host.len() > self.0.len()
                && host.ends_with(self.0.as_str())
                && host.as_bytes()[host.len() - self.0.len() - 1] == b'.')
    }
}

impl fmt::Display for DomainName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Parses a DNS name (case-insensitive, trailing dot allowed).
pub fn parse_domain(text: &str) -> Result<DomainName, String> {
    let name = text.trim().trim_end_matches('.').to_ascii_lowercase();
    if name.is_empty() {
        return Err(format!("\"{text}\" is not a domain name"));
    }
    if name.parse::<IpAddr>().is_ok() || name.trim_matches(['[', ']']).parse::<IpAddr>().is_ok() {
        return Err(format!(
            "\"{text}\" is an IP address; use match = \"ip\" for addresses"
        ));
    }
    if name.len() > 253 {
        return Err(format!("\"{text}\" is longer than 253 characters"));
    }
    if name
        .rsplit('.')
        .next()
        .is_some_and(|tld| tld.chars().all(|c| c.is_ascii_digit()))
    {
        // Top-level domains are never numeric; ATS would also match such a suffix against
        // the text of IP literals.
        return Err(format!(
            "\"{text}\" ends in a numeric label; is it an IP address? use match = \"ip\""
        ));
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err(format!("\"{text}\" has an empty label"));
        }
        if label.len() > 63 {
            return Err(format!(
                "\"{text}\": label \"{label}\" is longer than 63 characters"
            ));
        }
        if let Some(bad) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
        {
            return Err(format!(
                "\"{text}\": character {bad:?} is not allowed in a domain name (letters, digits, '-', '_')"
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!(
                "\"{text}\": label \"{label}\" starts or ends with '-'"
            ));
        }
    }
    Ok(DomainName(name))
}

/// What a validated rule matches.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Matcher {
    /// Destination address in the range.
    Ip(IpRange),
    /// Destination host is the domain or a subdomain of it.
    DomainSuffix(DomainName),
    /// Destination host is exactly the name.
    DomainExact(DomainName),
}

impl Matcher {
    /// Whether every destination this matcher matches is also matched by `self`
    /// (so a later rule with `other` could never win).
    pub fn covers(&self, other: &Matcher) -> bool {
        match (self, other) {
            (Matcher::Ip(a), Matcher::Ip(b)) => a.covers(b),
            (Matcher::DomainSuffix(a), Matcher::DomainSuffix(b) | Matcher::DomainExact(b)) => {
                a.is_suffix_of(b.as_str())
            }
            (Matcher::DomainExact(a), Matcher::DomainExact(b)) => a == b,
            _ => false,
        }
    }

    /// Whether one destination could match both (domain vs IP: always possible through DNS).
    pub fn may_overlap(&self, other: &Matcher) -> bool {
        match (self, other) {
            (Matcher::Ip(a), Matcher::Ip(b)) => a.overlaps(b),
            (Matcher::Ip(_), _) | (_, Matcher::Ip(_)) => true,
            (a, b) => a.covers(b) || b.covers(a),
        }
    }
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Matcher::Ip(range) => write!(f, "ip {range}"),
            Matcher::DomainSuffix(domain) => write!(f, "domain_suffix {domain}"),
            Matcher::DomainExact(domain) => write!(f, "domain_exact {domain}"),
        }
    }
}

/// A validated rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidRule {
    /// Position in the policy's `rules` list.
    pub index: usize,
    /// What it matches.
    pub matcher: Matcher,
    /// Where matching requests go.
    pub action: Action,
}

/// A parent proxy address: ATS requires host and port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ParentAddr {
    /// IP address or DNS name (IPv6 without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl fmt::Display for ParentAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// A record name ATS knows by the `proxy.config.` prefix.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordName(String);

impl RecordName {
    /// Full dotted name, `proxy.config.…`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Records the policy renders itself; `ats_records` may not set them (ATS 9 names, plus the
/// ATS 10 spelling of the connect timeout).
pub const POLICY_OWNED_RECORDS: &[&str] = &[
    "proxy.config.http.server_ports",
    "proxy.config.url_remap.remap_required",
    "proxy.config.reverse_proxy.enabled",
    "proxy.config.http.connect_ports",
    "proxy.config.http.uncacheable_requests_bypass_parent",
    "proxy.config.http.parent_proxies",
    "proxy.config.http.parent_proxy.retry_time",
    "proxy.config.http.parent_proxy.fail_threshold",
    "proxy.config.http.parent_proxy.total_connect_attempts",
    "proxy.config.http.parent_proxy.per_parent_connect_attempts",
    "proxy.config.http.parent_proxy.connect_attempts_timeout",
    "proxy.config.http.connect_attempts_timeout",
    "proxy.config.http.no_dns_just_forward_to_parent",
    "proxy.config.http.parent_proxy_routing_enable",
    "proxy.config.ip_allow.filename",
    "proxy.config.http.parent_proxy.file",
];

/// A validated policy: domain types, and the order in which rules become `parent.config` lines.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidPolicy {
    policy: Policy,
    /// Listen port.
    pub listen_port: u16,
    /// Parents in priority order.
    pub parents: Vec<ParentAddr>,
    /// Rules in policy order.
    pub rules: Vec<ValidRule>,
    /// Indexes into `rules` in the order they are rendered (see [`line_order`]).
    pub line_order: Vec<usize>,
    /// Client networks admitted by ip_allow.
    pub allowed_clients: Vec<IpRange>,
    /// `proxy.config.http.connect_ports` value, space-separated, or `*`.
    pub connect_ports: String,
    /// Extra records, by name.
    pub ats_records: BTreeMap<RecordName, RecordValue>,
}

impl ValidPolicy {
    /// The normalized document this was validated from.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }
}

struct Errors(Vec<ValidationError>);

impl Errors {
    fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(ValidationError {
            path: path.into(),
            message: message.into(),
        });
    }
}

impl Policy {
    /// Checks everything and returns the validated policy or every error found.
    pub fn validate(&self) -> Result<ValidPolicy, ValidationErrors> {
        let mut errors = Errors(Vec::new());

        let listen_port = match u16::try_from(self.listen_port) {
            Ok(port) if port > 0 => port,
            _ => {
                errors.push(
                    "listen_port",
                    format!("{} is not a TCP port (1-65535)", self.listen_port),
                );
                0
            }
        };

        let parents = self.validate_parents(&mut errors);
        self.validate_failover(&mut errors);
        let rules = self.validate_rules(&mut errors);

        let uses_parent = self.default_action == Action::Parent
            || self.rules.iter().any(|rule| rule.action == Action::Parent);
        if self.parents.is_empty() {
            if self.default_action == Action::Parent {
                errors.push(
                    "default_action",
                    "is \"parent\" but no parents are configured: add [[parents]] or set default_action = \"direct\"",
                );
            }
            for (index, rule) in self.rules.iter().enumerate() {
                if rule.action == Action::Parent {
                    errors.push(
                        format!("rules[{index}].action"),
                        "is \"parent\" but no parents are configured",
                    );
                }
            }
            if !uses_parent && self.rules.is_empty() {
                errors.push(
                    "rules",
                    "the policy is empty: no rules and no parents, so the proxy would only send everything DIRECT",
                );
            }
        }

        let allowed_clients = self.validate_allowed_clients(&mut errors);
        let connect_ports = self.validate_connect_ports(&mut errors);
        let ats_records = self.validate_ats_records(&mut errors);

        let line_order = if rules.len() == self.rules.len() {
            match line_order(&rules) {
                Ok(order) => order,
                Err((earlier, later)) => {
                    errors.push(
                        format!("rules[{later}].value"),
                        format!(
                            "\"{}\" ends one address below rules[{earlier}] (\"{}\"), which comes first; ATS 9.2 hangs loading parent.config with that order, and reordering them would change which rule wins for rules in between. Put rules[{later}] before rules[{earlier}], or merge them",
                            self.rules[later].value, self.rules[earlier].value
                        ),
                    );
                    Vec::new()
                }
            }
        } else {
            Vec::new()
        };

        if !errors.0.is_empty() {
            return Err(ValidationErrors(errors.0));
        }
        Ok(ValidPolicy {
            policy: self.normalized(&rules),
            listen_port,
            parents,
            rules,
            line_order,
            allowed_clients,
            connect_ports,
            ats_records,
        })
    }

    /// The document with rule values in canonical form, so equal policies compare equal.
    fn normalized(&self, rules: &[ValidRule]) -> Policy {
        let mut policy = self.clone();
        for (rule, valid) in policy.rules.iter_mut().zip(rules) {
            rule.value = match &valid.matcher {
                Matcher::Ip(range) => canonical_range_text(range),
                Matcher::DomainSuffix(domain) | Matcher::DomainExact(domain) => domain.to_string(),
            };
        }
        policy
    }

    fn validate_parents(&self, errors: &mut Errors) -> Vec<ParentAddr> {
        let mut parents = Vec::new();
        let mut seen: BTreeMap<(String, u16), usize> = BTreeMap::new();
        for (index, parent) in self.parents.iter().enumerate() {
            let host = parent
                .host
                .trim()
                .trim_start_matches('[')
                .trim_end_matches(']');
            let host_ok = if let Ok(ip) = host.parse::<IpAddr>() {
                if ip.is_ipv6() {
                    // ATS splits `parent=` entries at the first ':'; an IPv6 literal breaks the line.
                    errors.push(
                        format!("parents[{index}].host"),
                        format!("\"{host}\" is an IPv6 address, which ATS parent.config cannot express; use a host name"),
                    );
                    None
                } else {
                    Some(ip.to_string())
                }
            } else {
                match parse_domain(host) {
                    Ok(name) => Some(name.to_string()),
                    Err(message) => {
                        errors.push(
                            format!("parents[{index}].host"),
                            format!("{message} (expected an IP address or a host name)"),
                        );
                        None
                    }
                }
            };
            let port = match u16::try_from(parent.port) {
                Ok(port) if port > 0 => Some(port),
                _ => {
                    errors.push(
                        format!("parents[{index}].port"),
                        format!("{} is not a TCP port (1-65535)", parent.port),
                    );
                    None
                }
            };
            if let (Some(host), Some(port)) = (host_ok, port) {
                if let Some(first) = seen.insert((host.clone(), port), index) {
                    errors.push(
                        format!("parents[{index}]"),
                        format!("{host}:{port} is listed twice (also parents[{first}])"),
                    );
                }
                parents.push(ParentAddr { host, port });
            }
        }
        parents
    }

    fn validate_failover(&self, errors: &mut Errors) {
        let failover = &self.failover;
        let positive = [
            ("fail_threshold", failover.fail_threshold),
            ("retry_time_s", failover.retry_time_s),
            ("total_connect_attempts", failover.total_connect_attempts),
            (
                "per_parent_connect_attempts",
                failover.per_parent_connect_attempts,
            ),
            ("connect_timeout_s", failover.connect_timeout_s),
        ];
        for (name, value) in positive {
            if value == 0 {
                errors.push(format!("failover.{name}"), "must be at least 1");
            } else if value > 86_400 {
                errors.push(
                    format!("failover.{name}"),
                    format!("{value} is above 86400"),
                );
            }
        }
        if failover.per_parent_connect_attempts > failover.total_connect_attempts {
            errors.push(
                "failover.per_parent_connect_attempts",
                format!(
                    "{} exceeds total_connect_attempts ({}): ATS would never reach the next parent",
                    failover.per_parent_connect_attempts, failover.total_connect_attempts
                ),
            );
        }
    }

    fn validate_rules(&self, errors: &mut Errors) -> Vec<ValidRule> {
        let mut rules: Vec<ValidRule> = Vec::new();
        for (index, rule) in self.rules.iter().enumerate() {
            let path = format!("rules[{index}].value");
            let matcher = match rule.matcher {
                MatchKind::Ip => parse_ip_range(&rule.value).map(Matcher::Ip),
                MatchKind::DomainSuffix => {
                    let value = rule.value.trim();
                    let value = value
                        .strip_prefix("*.")
                        .or_else(|| value.strip_prefix('.'))
                        .unwrap_or(value);
                    parse_domain(value).map(Matcher::DomainSuffix)
                }
                MatchKind::DomainExact => {
                    if rule.value.contains('*') {
                        Err(format!(
                            "\"{}\" has a wildcard; use match = \"domain_suffix\" for a domain and its subdomains",
                            rule.value
                        ))
                    } else {
                        parse_domain(&rule.value).map(Matcher::DomainExact)
                    }
                }
            };
            let matcher = match matcher {
                Ok(matcher) => matcher,
                Err(message) => {
                    errors.push(path, message);
                    continue;
                }
            };
            if let Some(comment) = &rule.comment
                && comment.contains(['\n', '\r'])
            {
                errors.push(format!("rules[{index}].comment"), "must be a single line");
            }
            if let Some(earlier) = rules
                .iter()
                .find(|earlier| earlier.matcher.covers(&matcher))
            {
                let message = if earlier.matcher == matcher {
                    format!(
                        "\"{}\" duplicates rules[{}] ({}); remove one",
                        rule.value, earlier.index, earlier.matcher
                    )
                } else {
                    format!(
                        "\"{}\" is shadowed by rules[{}] ({}), which comes first and matches everything it matches, so this rule can never apply",
                        rule.value, earlier.index, earlier.matcher
                    )
                };
                errors.push(path, message);
            }
            rules.push(ValidRule {
                index,
                matcher,
                action: rule.action,
            });
        }
        rules
    }

    fn validate_allowed_clients(&self, errors: &mut Errors) -> Vec<IpRange> {
        if self.allowed_clients.is_empty() {
            errors.push("allowed_clients", "is empty: no client could use the proxy");
        }
        let mut ranges = Vec::new();
        for (index, text) in self.allowed_clients.iter().enumerate() {
            match parse_ip_range(text) {
                Ok(range) => ranges.push(range),
                Err(message) => errors.push(format!("allowed_clients[{index}]"), message),
            }
        }
        ranges
    }

    fn validate_connect_ports(&self, errors: &mut Errors) -> String {
        if self.connect_ports.is_empty() {
            errors.push(
                "connect_ports",
                "is empty: HTTPS through the proxy (CONNECT) would be refused; use [\"443\"] or [\"*\"]",
            );
        }
        let mut parts = Vec::new();
        for (index, text) in self.connect_ports.iter().enumerate() {
            let text = text.trim();
            let path = format!("connect_ports[{index}]");
            if text == "*" {
                parts.push("*".to_string());
                continue;
            }
            let parse = |s: &str| s.trim().parse::<u16>().ok().filter(|port| *port > 0);
            match text.split_once('-') {
                Some((low, high)) => match (parse(low), parse(high)) {
                    (Some(low), Some(high)) if low <= high => parts.push(format!("{low}-{high}")),
                    (Some(_), Some(_)) => errors.push(path, format!("\"{text}\" is reversed")),
                    _ => errors.push(
                        path,
                        format!("\"{text}\" is not a port range (e.g. \"8000-8100\")"),
                    ),
                },
                None => match parse(text) {
                    Some(port) => parts.push(port.to_string()),
                    None => {
                        errors.push(path, format!("\"{text}\" is not a port (1-65535) or \"*\""))
                    }
                },
            }
        }
        if parts.iter().any(|part| part == "*") {
            return "*".to_string();
        }
        parts.join(" ")
    }

    fn validate_ats_records(&self, errors: &mut Errors) -> BTreeMap<RecordName, RecordValue> {
        let mut records = BTreeMap::new();
        for (name, value) in &self.ats_records {
            let path = format!("ats_records.\"{name}\"");
            if !name.starts_with("proxy.config.")
                || name.split('.').any(str::is_empty)
                || !name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.')
            {
                errors.push(
                    path,
                    "is not an ATS record name (expected \"proxy.config.…\": lower-case letters, digits, '_' and '.')",
                );
                continue;
            }
            if POLICY_OWNED_RECORDS.contains(&name.as_str()) {
                errors.push(
                    path,
                    "is set by the policy itself (listen port, parents, failover, CONNECT handling); change the policy field instead",
                );
                continue;
            }
            let value_ok = match value {
                RecordValue::String(text) => !text.contains(['\n', '\r']),
                RecordValue::Float(number) => number.is_finite(),
                RecordValue::Int(_) | RecordValue::Bool(_) => true,
            };
            if !value_ok {
                errors.push(
                    path,
                    "value must be a finite number or a single-line string",
                );
                continue;
            }
            records.insert(RecordName(name.clone()), value.clone());
        }
        // records.yaml nests names by their dots: `a.b` and `a.b.c` cannot both exist.
        let names: Vec<&RecordName> = records.keys().collect();
        for pair in names.windows(2) {
            if pair[1].0.starts_with(&format!("{}.", pair[0].0)) {
                errors.push(
                    format!("ats_records.\"{}\"", pair[1].0),
                    format!("cannot coexist with \"{}\", which is its prefix", pair[0].0),
                );
            }
        }
        records
    }
}

fn canonical_range_text(range: &IpRange) -> String {
    match range.to_cidrs().as_slice() {
        [single] => single.to_string(),
        _ => range.to_string(),
    }
}

/// Decides the order of the `parent.config` lines: the policy's order, except where ATS 9.2
/// would hang.
///
/// ATS 9.2's loader hangs when a later `dest_ip` line's range ends exactly one address below
/// an earlier one's start (see ats-notes). Such a pair is swapped when that keeps first-match
/// meaning: every pair of rules that could match the same request with different outcomes
/// keeps its relative order. When no order satisfies both, the pair `(earlier, later)` is
/// returned as the error.
pub fn line_order(rules: &[ValidRule]) -> Result<Vec<usize>, (usize, usize)> {
    let count = rules.len();
    // before[j] = set of rules that must be rendered before rule j.
    let mut before: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); count];
    let mut hang_pairs = Vec::new();
    for j in 0..count {
        for i in 0..j {
            let (earlier, later) = (&rules[i], &rules[j]);
            if let (Matcher::Ip(a), Matcher::Ip(b)) = (&earlier.matcher, &later.matcher) {
                if b.ends_just_below(a) {
                    // Must render `later` first; they are disjoint, so only their neighbours
                    // matter.
                    before[i].insert(j);
                    hang_pairs.push((i, j));
                    continue;
                }
                if a.ends_just_below(b) {
                    // Ascending adjacency is safe: keep it so, whatever else moves.
                    before[j].insert(i);
                    continue;
                }
            }
            let outcome_differs = earlier.action != later.action;
            if outcome_differs && earlier.matcher.may_overlap(&later.matcher) {
                before[j].insert(i);
            }
        }
    }
    if hang_pairs.is_empty() {
        return Ok((0..count).collect());
    }
    // Kahn's algorithm, always taking the lowest original index available: stable.
    let mut order = Vec::with_capacity(count);
    let mut placed = vec![false; count];
    while order.len() < count {
        let next = (0..count).find(|&j| !placed[j] && before[j].iter().all(|&i| placed[i]));
        match next {
            Some(j) => {
                placed[j] = true;
                order.push(j);
            }
            None => {
                let stuck = hang_pairs
                    .iter()
                    .find(|(i, j)| !placed[*i] || !placed[*j])
                    .copied()
                    .unwrap_or(hang_pairs[0]);
                return Err(stuck);
            }
        }
    }
    Ok(order)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(text: &str) -> IpRange {
        parse_ip_range(text).unwrap()
    }

    #[test]
    fn parses_cidr_range_and_single_addresses() {
        assert_eq!(range("10.0.0.0/8").to_string(), "10.0.0.0-10.255.255.255");
        assert_eq!(range("10.0.0.1").to_string(), "10.0.0.1");
        assert_eq!(
            range("10.0.0.1 - 10.0.0.9").to_string(),
            "10.0.0.1-10.0.0.9"
        );
        assert_eq!(
            range("fd00::/8").to_string(),
            "fd00::-fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
        );
        assert_eq!(range("0.0.0.0/0").to_string(), "0.0.0.0-255.255.255.255");
    }

    #[test]
    fn rejects_bad_ranges_with_reasons() {
        let cases = [
            ("10.0.0.0/33", "prefix length"),
            ("10.0.0.1/8", "did you mean \"10.0.0.0/8\""),
            ("10.0.0.9-10.0.0.1", "reversed"),
            ("10.0.0.1-::1", "mixes IPv4 and IPv6"),
            ("10.0.0.256", "not an IP address"),
            ("", "empty"),
            ("example.com", "not an IP address"),
        ];
        for (text, expected) in cases {
            let error = parse_ip_range(text).unwrap_err();
            assert!(error.contains(expected), "{text}: {error}");
        }
    }

    #[test]
    fn ranges_become_minimal_cidr_lists() {
        let cidrs: Vec<String> = range("10.0.0.1-10.0.0.10")
            .to_cidrs()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            cidrs,
            [
                "10.0.0.1/32",
                "10.0.0.2/31",
                "10.0.0.4/30",
                "10.0.0.8/31",
                "10.0.0.10/32"
            ]
        );
        assert_eq!(range("0.0.0.0/0").to_cidrs()[0].to_string(), "0.0.0.0/0");
        assert_eq!(range("::/0").to_cidrs()[0].to_string(), "::/0");
    }

    #[test]
    fn domains_are_normalized_and_checked() {
        assert_eq!(
            parse_domain("Svc.Cluster.Local.").unwrap().as_str(),
            "svc.cluster.local"
        );
        for bad in [
            "",
            "a..b",
            "exa mple.com",
            "-a.com",
            "10.0.0.1",
            "a.b/c",
            "10.0.5",
        ] {
            assert!(parse_domain(bad).is_err(), "{bad}");
        }
        let suffix = parse_domain("eec").unwrap();
        assert!(suffix.is_suffix_of("eec"));
        assert!(suffix.is_suffix_of("host.eec"));
        assert!(!suffix.is_suffix_of("foo-eec"));
        assert!(!suffix.is_suffix_of("eeca"));
    }

    #[test]
    fn adjacency_is_detected_in_both_families() {
        assert!(range("127.0.1.0-127.0.1.7").ends_just_below(&range("127.0.1.8-127.0.1.10")));
        assert!(!range("127.0.1.0-127.0.1.6").ends_just_below(&range("127.0.1.8-127.0.1.10")));
        assert!(range("::1").ends_just_below(&range("::2")));
        assert!(!range("255.255.255.255").ends_just_below(&range("::")));
    }
}
