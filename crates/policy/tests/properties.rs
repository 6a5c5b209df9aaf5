//! Properties of rendering, hashing and explain over generated policies.

use std::net::{IpAddr, Ipv4Addr};

use apm_policy::model::{Action, Failover, MatchKind, Parent, Policy, Rule};
use apm_policy::{AtsMajor, Target, ValidPolicy, explain, render};
use proptest::prelude::*;

/// Addresses come from 10.0.0.0/26 and names from a tiny alphabet so that rules and targets
/// collide often: overlaps, adjacency and suffixes are what the properties are about.
fn ip_value() -> impl Strategy<Value = String> {
    prop_oneof![
        (0u8..64).prop_map(|a| format!("10.0.0.{a}")),
        (0u8..64, 0u8..16)
            .prop_map(|(a, n)| format!("10.0.0.{a}-10.0.0.{}", a.saturating_add(n).min(63))),
        (26u8..=30, 0u8..64).prop_map(|(prefix, a)| {
            let size = 1u8 << (32 - prefix);
            format!("10.0.0.{}/{prefix}", a / size * size)
        }),
    ]
}

fn name() -> impl Strategy<Value = String> {
    proptest::collection::vec(prop_oneof![Just("a"), Just("b"), Just("c")], 1..4)
        .prop_map(|labels| labels.join("."))
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![Just(Action::Direct), Just(Action::Parent)]
}

fn rule() -> impl Strategy<Value = Rule> {
    prop_oneof![
        (ip_value(), action()).prop_map(|(value, action)| Rule {
            matcher: MatchKind::Ip,
            value,
            action,
            comment: None
        }),
        (name(), action()).prop_map(|(value, action)| Rule {
            matcher: MatchKind::DomainSuffix,
            value,
            action,
            comment: None
        }),
        (name(), action()).prop_map(|(value, action)| Rule {
            matcher: MatchKind::DomainExact,
            value,
            action,
            comment: None
        }),
    ]
}

fn policy() -> impl Strategy<Value = Policy> {
    (proptest::collection::vec(rule(), 0..8), action(), 1usize..3).prop_map(
        |(rules, default_action, parents)| {
            let mut policy = apm_policy::template::default_policy();
            policy.rules = rules;
            policy.default_action = default_action;
            policy.parents = (0..parents)
                .map(|i| Parent {
                    host: format!("192.0.2.{}", i + 1),
                    port: 3128,
                })
                .collect();
            policy.failover = Failover::default();
            policy
        },
    )
}

/// Generated policies that pass validation (many do not: shadowed rules are common).
fn valid_policy() -> impl Strategy<Value = (Policy, ValidPolicy)> {
    policy().prop_filter_map("invalid policy", |policy| {
        let valid = policy.validate().ok()?;
        Some((policy, valid))
    })
}

/// The same policy written differently: domains in upper case with `*.` prefixes, CIDRs as
/// ranges, comments added.
fn reformatted(policy: &Policy) -> Policy {
    let mut other = policy.clone();
    for (index, rule) in other.rules.iter_mut().enumerate() {
        rule.comment = Some(format!("note {index}"));
        match rule.matcher {
            MatchKind::DomainSuffix => rule.value = format!("*.{}", rule.value.to_uppercase()),
            MatchKind::DomainExact => rule.value = format!("{}.", rule.value.to_uppercase()),
            MatchKind::Ip => {
                let range = apm_policy::validate::parse_ip_range(&rule.value).unwrap();
                rule.value = format!("{} - {}", range.first(), range.last());
            }
        }
    }
    other
}

/// An independent reading of parent.config with ATS's semantics: the first line whose
/// primary matcher matches wins; `dest_domain=.` matches everything.
fn route_by_parent_config(
    parent_config: &str,
    host: &str,
    ip: Option<IpAddr>,
) -> (Action, Vec<String>) {
    for line in parent_config
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let mut fields = line.split_whitespace();
        let primary = fields.next().unwrap();
        let (key, value) = primary.split_once('=').unwrap();
        let matches = match key {
            "dest_domain" => value == "." || host == value || host.ends_with(&format!(".{value}")),
            "dest_host" => host == value,
            "dest_ip" => {
                let (first, last) = value.split_once('-').unwrap_or((value, value));
                let (first, last): (IpAddr, IpAddr) =
                    (first.parse().unwrap(), last.parse().unwrap());
                ip.is_some_and(|ip| first <= ip && ip <= last)
            }
            other => panic!("unexpected matcher {other} in {line}"),
        };
        if !matches {
            continue;
        }
        let rest: Vec<&str> = fields.collect();
        if rest.contains(&"go_direct=true") {
            return (Action::Direct, Vec::new());
        }
        let parents = rest
            .iter()
            .find_map(|f| f.strip_prefix("parent=\""))
            .map(|list| {
                list.trim_end_matches('"')
                    .split(';')
                    .map(String::from)
                    .collect()
            })
            .unwrap();
        return (Action::Parent, parents);
    }
    panic!("no line matched {host}: the catch-all is missing");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn rendering_is_deterministic((_, valid) in valid_policy()) {
        for ats in [AtsMajor::V9, AtsMajor::V10] {
            prop_assert_eq!(render(&valid, ats), render(&valid, ats));
        }
    }

    #[test]
    fn the_hash_ignores_formatting((policy, valid) in valid_policy()) {
        let via_toml = Policy::from_toml_str(&policy.to_toml_string()).unwrap();
        let via_json = Policy::from_json_str(&serde_json::to_string_pretty(&policy).unwrap()).unwrap();
        let rewritten = reformatted(&policy);
        for ats in [AtsMajor::V9, AtsMajor::V10] {
            let hash = render(&valid, ats).hash;
            for variant in [&via_toml, &via_json, &rewritten] {
                let other = variant.validate().unwrap();
                prop_assert_eq!(render(&other, ats).hash, hash);
            }
        }
    }

    #[test]
    fn different_routing_means_a_different_hash((_, valid) in valid_policy()) {
        let mut changed = valid.policy().clone();
        changed.default_action = match changed.default_action {
            Action::Direct => Action::Parent,
            Action::Parent => Action::Direct,
        };
        if let Ok(changed) = changed.validate() {
            prop_assert_ne!(render(&changed, AtsMajor::V9).hash, render(&valid, AtsMajor::V9).hash);
        }
    }

    #[test]
    fn explain_agrees_with_the_rendered_parent_config(
        (_, valid) in valid_policy(),
        host in prop_oneof![name().prop_map(|n| format!("x.{n}")), name()],
        last_octet in 0u8..70,
        literal in any::<bool>(),
    ) {
        let parent_config = render(&valid, AtsMajor::V9).files["parent.config"].clone();
        let ip = IpAddr::V4(Ipv4Addr::new(10, 0, 0, last_octet));
        let (target, host_text, resolved) = if literal {
            (Target::parse(&ip.to_string()).unwrap(), ip.to_string(), vec![])
        } else {
            (Target::parse(&host).unwrap(), host.clone(), vec![ip])
        };
        let explanation = explain(&valid, &target, &resolved);
        let expected = route_by_parent_config(&parent_config, &host_text, Some(ip));
        prop_assert_eq!((explanation.action, explanation.parents.clone()), expected, "{}", parent_config);
    }

    #[test]
    fn rendered_parent_config_never_has_the_ats92_hang_pattern((_, valid) in valid_policy()) {
        let parent_config = render(&valid, AtsMajor::V9).files["parent.config"].clone();
        let ranges: Vec<(u32, u32)> = parent_config
            .lines()
            .filter_map(|l| l.strip_prefix("dest_ip="))
            .map(|l| {
                let value = l.split_whitespace().next().unwrap();
                let (a, b) = value.split_once('-').unwrap_or((value, value));
                let a: Ipv4Addr = a.parse().unwrap();
                let b: Ipv4Addr = b.parse().unwrap();
                (u32::from(a), u32::from(b))
            })
            .collect();
        for (i, earlier) in ranges.iter().enumerate() {
            for later in &ranges[i + 1..] {
                prop_assert!(later.1.checked_add(1) != Some(earlier.0), "{}", parent_config);
            }
        }
    }
}
