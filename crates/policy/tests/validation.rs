//! Every kind of bad input gets an error that names the field, the rule index and the value.

use apm_policy::{Policy, template};

fn errors_of(toml_text: &str) -> Vec<String> {
    let policy = Policy::from_toml_str(toml_text).expect("parses");
    match policy.validate() {
        Ok(_) => Vec::new(),
        Err(errors) => errors.errors().iter().map(ToString::to_string).collect(),
    }
}

const PARENTS: &str = r#"
[[parents]]
host = "10.96.215.26"
port = 3128
"#;

fn with_rules(default_action: &str, rules: &str) -> String {
    format!("default_action = \"{default_action}\"\n{PARENTS}\n{rules}")
}

fn rule(kind: &str, value: &str, action: &str) -> String {
    format!("[[rules]]\nmatch = \"{kind}\"\nvalue = \"{value}\"\naction = \"{action}\"\n")
}

#[track_caller]
fn assert_error(errors: &[String], path: &str, fragment: &str) {
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with(&format!("{path}: ")) && e.contains(fragment)),
        "expected an error at {path} containing {fragment:?}, got {errors:#?}"
    );
}

#[test]
fn the_template_is_valid() {
    template::default_policy().validate().unwrap();
}

#[test]
fn invalid_cidr_and_range_name_the_rule_and_value() {
    let text = with_rules(
        "parent",
        &[
            rule("ip", "10.0.0.0/33", "direct"),
            rule("ip", "10.2.0.9-10.2.0.1", "direct"),
        ]
        .concat(),
    );
    let errors = errors_of(&text);
    assert_error(&errors, "rules[0].value", "\"10.0.0.0/33\"");
    assert_error(&errors, "rules[1].value", "reversed");
}

#[test]
fn host_and_port_out_of_range() {
    let text = "default_action = \"parent\"\n[[parents]]\nhost = \"bad host\"\nport = 70000\n\
                [[parents]]\nhost = \"::1\"\nport = 0\n";
    let errors = errors_of(text);
    assert_error(&errors, "parents[0].host", "\"bad host\"");
    assert_error(&errors, "parents[0].port", "70000");
    assert_error(&errors, "parents[1].host", "IPv6");
    assert_error(&errors, "parents[1].port", "0 is not a TCP port");
    let errors = errors_of(&format!("listen_port = 0\n{}", with_rules("parent", "")));
    assert_error(&errors, "listen_port", "0 is not a TCP port");
}

#[test]
fn duplicate_and_shadowed_rules() {
    let text = with_rules(
        "parent",
        &[
            rule("domain_suffix", "eec", "direct"),
            rule("domain_suffix", "*.EEC", "direct"),
            rule("domain_exact", "api.eec", "parent"),
            rule("ip", "10.0.0.0/8", "direct"),
            rule("ip", "10.1.0.0/16", "parent"),
        ]
        .concat(),
    );
    let errors = errors_of(&text);
    assert_error(&errors, "rules[1].value", "duplicates rules[0]");
    assert_error(&errors, "rules[2].value", "shadowed by rules[0]");
    assert_error(&errors, "rules[4].value", "shadowed by rules[3]");
}

#[test]
fn parent_actions_need_parents() {
    let text = format!(
        "default_action = \"parent\"\n{}",
        rule("ip", "10.0.0.0/8", "parent")
    );
    let errors = errors_of(&text);
    assert_error(&errors, "default_action", "no parents");
    assert_error(&errors, "rules[0].action", "no parents");
}

#[test]
fn an_empty_policy_is_refused() {
    let errors = errors_of("default_action = \"direct\"\n");
    assert_error(&errors, "rules", "empty");
}

#[test]
fn failover_numbers_are_checked() {
    let text = format!(
        "{}\n[failover]\nfail_threshold = 0\ntotal_connect_attempts = 2\nper_parent_connect_attempts = 3\n",
        with_rules("parent", "")
    );
    let errors = errors_of(&text);
    assert_error(&errors, "failover.fail_threshold", "at least 1");
    assert_error(
        &errors,
        "failover.per_parent_connect_attempts",
        "exceeds total_connect_attempts",
    );
}

#[test]
fn ats_records_cannot_undo_the_policy() {
    let text = format!(
        "{}\n[ats_records]\n\"proxy.config.http.uncacheable_requests_bypass_parent\" = 1\n\
         \"proxy.config.http.server_ports\" = \"9000\"\n\"Proxy.Bad Name\" = 1\n\
         \"proxy.config.a.b\" = 1\n\"proxy.config.a.b.c\" = 2\n\"proxy.config.s\" = \"two\\nlines\"\n",
        with_rules("parent", "")
    );
    let errors = errors_of(&text);
    assert_error(
        &errors,
        "ats_records.\"proxy.config.http.uncacheable_requests_bypass_parent\"",
        "set by the policy",
    );
    assert_error(
        &errors,
        "ats_records.\"proxy.config.http.server_ports\"",
        "set by the policy",
    );
    assert_error(
        &errors,
        "ats_records.\"Proxy.Bad Name\"",
        "not an ATS record name",
    );
    assert_error(&errors, "ats_records.\"proxy.config.a.b.c\"", "prefix");
    assert_error(&errors, "ats_records.\"proxy.config.s\"", "single-line");
}

#[test]
fn clients_and_connect_ports_are_checked() {
    let text = format!(
        "allowed_clients = [\"10.0.0.0/8\", \"nope\"]\nconnect_ports = [\"443\", \"9-1\", \"x\"]\n{}",
        with_rules("parent", "")
    );
    let errors = errors_of(&text);
    assert_error(&errors, "allowed_clients[1]", "\"nope\"");
    assert_error(&errors, "connect_ports[1]", "reversed");
    assert_error(&errors, "connect_ports[2]", "\"x\"");
}

#[test]
fn domain_mistakes_are_explained() {
    let text = with_rules(
        "parent",
        &[
            rule("domain_suffix", "10.1.2.3", "direct"),
            rule("domain_exact", "*.example.com", "direct"),
            rule("domain_suffix", "exa_mple..com", "direct"),
        ]
        .concat(),
    );
    let errors = errors_of(&text);
    assert_error(&errors, "rules[0].value", "use match = \"ip\"");
    assert_error(&errors, "rules[1].value", "wildcard");
    assert_error(&errors, "rules[2].value", "empty label");
}

#[test]
fn typos_in_field_names_are_parse_errors_with_a_line() {
    let error = Policy::from_toml_str("default_action = \"parent\"\n[failover]\nretry_time = 5\n")
        .unwrap_err()
        .to_string();
    assert!(error.contains("retry_time"), "{error}");
    assert!(error.contains("line 3"), "{error}");
    let error = Policy::from_toml_str("default_action = \"sideways\"\n")
        .unwrap_err()
        .to_string();
    assert!(error.contains("sideways"), "{error}");
}

#[test]
fn ats92_dest_ip_hang_is_reordered_when_meaning_allows() {
    let text = with_rules(
        "parent",
        &[
            rule("ip", "127.0.1.8-127.0.1.10", "direct"),
            rule("ip", "127.0.1.0-127.0.1.7", "direct"),
        ]
        .concat(),
    );
    let valid = Policy::from_toml_str(&text).unwrap().validate().unwrap();
    assert_eq!(valid.line_order, [1, 0]);
    let parent = &apm_policy::render(&valid, apm_policy::AtsMajor::V9).files["parent.config"];
    let first = parent.find("dest_ip=127.0.1.0-127.0.1.7").unwrap();
    let second = parent.find("dest_ip=127.0.1.8-127.0.1.10").unwrap();
    assert!(first < second, "{parent}");
}

#[test]
fn ats92_dest_ip_hang_is_refused_when_reordering_changes_meaning() {
    let text = with_rules(
        "parent",
        &[
            rule("ip", "127.0.1.8-127.0.1.10", "direct"),
            rule("domain_suffix", "example.com", "parent"),
            rule("ip", "127.0.1.0-127.0.1.7", "direct"),
        ]
        .concat(),
    );
    let errors = errors_of(&text);
    assert_error(&errors, "rules[2].value", "ATS 9.2 hangs");
}
