//! The rule editor's form model: a policy as the strings a person typed, so an invalid entry
//! survives a round trip to the server and is shown back with its error next to it.
//!
//! Input names are the policy's own paths (`rules[3].value`, `failover.retry_time_s`), so the
//! located errors the API answers (`policy.rules[3].value: …`) map onto inputs by name with no
//! translation table. Nothing here validates a policy: numbers that do not parse are sent as
//! strings and the server's answer names the field.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

/// One parent proxy row.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ParentRow {
    /// Host or address.
    pub host: String,
    /// Port, as typed.
    pub port: String,
}

/// One routing rule row.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RuleRow {
    /// `ip` | `domain_suffix` | `domain_exact`.
    pub kind: String,
    /// CIDR, range, address or domain.
    pub value: String,
    /// `direct` | `parent`.
    pub action: String,
    /// Optional note.
    pub comment: String,
}

/// The failover settings as typed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FailoverForm {
    /// Failover policy name.
    pub policy: String,
    /// Failures before a parent is marked down.
    pub fail_threshold: String,
    /// Seconds before a down parent is retried.
    pub retry_time_s: String,
    /// Total connect attempts.
    pub total_connect_attempts: String,
    /// Connect attempts per parent.
    pub per_parent_connect_attempts: String,
    /// Connect timeout in seconds.
    pub connect_timeout_s: String,
}

/// The whole editable policy.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EditorForm {
    /// Port ATS listens on.
    pub listen_port: String,
    /// Action when no rule matches.
    pub default_action: String,
    /// Parents, in priority order.
    pub parents: Vec<ParentRow>,
    /// Failover settings.
    pub failover: FailoverForm,
    /// Rules, first match wins.
    pub rules: Vec<RuleRow>,
    /// One CIDR per line.
    pub allowed_clients: String,
    /// One port per line (or comma separated).
    pub connect_ports: String,
    /// Extra ATS records as a JSON object (advanced).
    pub ats_records: String,
}

/// Failover policies offered in the editor, with their labels.
pub const FAILOVER_POLICIES: [(&str, &str); 5] = [
    (
        "primary_fallback",
        "Primary with fallback (round_robin=false)",
    ),
    ("round_robin_strict", "Strict round robin"),
    ("client_ip_hash", "Client IP hash"),
    ("latched", "Latched"),
    ("consistent_hash", "Consistent hash"),
];

/// Rule match kinds with their labels.
pub const MATCH_KINDS: [(&str, &str); 3] = [
    ("ip", "IP / CIDR / range"),
    ("domain_suffix", "Domain suffix"),
    ("domain_exact", "Exact host"),
];

fn text(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

fn lines(v: Option<&Value>) -> String {
    match v {
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| text(Some(i)))
            .collect::<Vec<_>>()
            .join("\n"),
        other => text(other),
    }
}

/// A typed number when it parses, else the text itself (the server names the bad field).
fn number(s: &str) -> Value {
    let t = s.trim();
    match t.parse::<u64>() {
        Ok(n) => json!(n),
        Err(_) => Value::String(t.to_string()),
    }
}

fn list(s: &str) -> Value {
    Value::Array(
        s.split(['\n', ','])
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(|l| Value::String(l.to_string()))
            .collect(),
    )
}

impl EditorForm {
    /// The form for a policy document (as the API returns it).
    pub fn from_policy(policy: &Value) -> EditorForm {
        let get = |k: &str| policy.get(k);
        let failover = get("failover");
        let f = |k: &str| text(failover.and_then(|f| f.get(k)));
        EditorForm {
            listen_port: text(get("listen_port")),
            default_action: text(get("default_action")),
            parents: get("parents")
                .and_then(Value::as_array)
                .map(|ps| {
                    ps.iter()
                        .map(|p| ParentRow {
                            host: text(p.get("host")),
                            port: text(p.get("port")),
                        })
                        .collect()
                })
                .unwrap_or_default(),
            failover: FailoverForm {
                policy: f("policy"),
                fail_threshold: f("fail_threshold"),
                retry_time_s: f("retry_time_s"),
                total_connect_attempts: f("total_connect_attempts"),
                per_parent_connect_attempts: f("per_parent_connect_attempts"),
                connect_timeout_s: f("connect_timeout_s"),
            },
            rules: get("rules")
                .and_then(Value::as_array)
                .map(|rs| {
                    rs.iter()
                        .map(|r| RuleRow {
                            kind: text(r.get("match")),
                            value: text(r.get("value")),
                            action: text(r.get("action")),
                            comment: text(r.get("comment")),
                        })
                        .collect()
                })
                .unwrap_or_default(),
            allowed_clients: lines(get("allowed_clients")),
            connect_ports: lines(get("connect_ports")),
            ats_records: match get("ats_records") {
                Some(Value::Object(m)) if !m.is_empty() => {
                    serde_json::to_string_pretty(&Value::Object(m.clone())).unwrap_or_default()
                }
                _ => String::new(),
            },
        }
    }

    /// Reads the posted form. Row fields are named `rules[i].field` / `parents[i].field`;
    /// rows are ordered by index, and gaps are closed.
    pub fn from_pairs(pairs: &[(String, String)]) -> EditorForm {
        let mut form = EditorForm::default();
        let mut rules: BTreeMap<usize, RuleRow> = BTreeMap::new();
        let mut parents: BTreeMap<usize, ParentRow> = BTreeMap::new();
        for (k, v) in pairs {
            match k.as_str() {
                "listen_port" => form.listen_port = v.clone(),
                "default_action" => form.default_action = v.clone(),
                "allowed_clients" => form.allowed_clients = v.clone(),
                "connect_ports" => form.connect_ports = v.clone(),
                "ats_records" => form.ats_records = v.clone(),
                "failover.policy" => form.failover.policy = v.clone(),
                "failover.fail_threshold" => form.failover.fail_threshold = v.clone(),
                "failover.retry_time_s" => form.failover.retry_time_s = v.clone(),
                "failover.total_connect_attempts" => {
                    form.failover.total_connect_attempts = v.clone()
                }
                "failover.per_parent_connect_attempts" => {
                    form.failover.per_parent_connect_attempts = v.clone()
                }
                "failover.connect_timeout_s" => form.failover.connect_timeout_s = v.clone(),
                _ => {
                    if let Some((i, field)) = indexed(k, "rules") {
                        let row = rules.entry(i).or_default();
                        match field {
                            "match" => row.kind = v.clone(),
                            "value" => row.value = v.clone(),
                            "action" => row.action = v.clone(),
                            "comment" => row.comment = v.clone(),
                            _ => {}
                        }
                    } else if let Some((i, field)) = indexed(k, "parents") {
                        let row = parents.entry(i).or_default();
                        match field {
                            "host" => row.host = v.clone(),
                            "port" => row.port = v.clone(),
                            _ => {}
                        }
                    }
                }
            }
        }
        form.rules = rules.into_values().collect();
        form.parents = parents.into_values().collect();
        form
    }

    /// The policy document to send. `ats_records` that is not a JSON object is sent as text so
    /// the server reports it at `ats_records`.
    pub fn to_policy(&self) -> Value {
        let mut p = Map::new();
        p.insert("listen_port".into(), number(&self.listen_port));
        p.insert(
            "default_action".into(),
            Value::String(self.default_action.trim().to_string()),
        );
        p.insert(
            "parents".into(),
            Value::Array(
                self.parents
                    .iter()
                    .map(|r| json!({"host": r.host.trim(), "port": number(&r.port)}))
                    .collect(),
            ),
        );
        let f = &self.failover;
        p.insert(
            "failover".into(),
            json!({
                "policy": f.policy.trim(),
                "fail_threshold": number(&f.fail_threshold),
                "retry_time_s": number(&f.retry_time_s),
                "total_connect_attempts": number(&f.total_connect_attempts),
                "per_parent_connect_attempts": number(&f.per_parent_connect_attempts),
                "connect_timeout_s": number(&f.connect_timeout_s),
            }),
        );
        p.insert(
            "rules".into(),
            Value::Array(
                self.rules
                    .iter()
                    .map(|r| {
                        let mut rule = json!({"match": r.kind.trim(), "value": r.value.trim(), "action": r.action.trim()});
                        if !r.comment.trim().is_empty() {
                            rule["comment"] = Value::String(r.comment.trim().to_string());
                        }
                        rule
                    })
                    .collect(),
            ),
        );
        p.insert("allowed_clients".into(), list(&self.allowed_clients));
        p.insert("connect_ports".into(), list(&self.connect_ports));
        let records = self.ats_records.trim();
        if !records.is_empty() {
            let value = serde_json::from_str::<Value>(records)
                .ok()
                .filter(Value::is_object)
                .unwrap_or_else(|| Value::String(records.to_string()));
            p.insert("ats_records".into(), value);
        }
        Value::Object(p)
    }

    /// Applies a structural edit named by an editor button (`add_rule`, `del_rule:3`,
    /// `up_rule:3`, `down_rule:3`, and the same for `parent`). Returns the input name to focus.
    pub fn apply(&mut self, op: &str) -> Option<String> {
        let (verb, index) = match op.split_once(':') {
            Some((v, i)) => (v, i.parse::<usize>().ok()),
            None => (op, None),
        };
        match (verb, index) {
            ("add_rule", _) => {
                self.rules.push(RuleRow {
                    kind: "domain_suffix".into(),
                    value: String::new(),
                    action: "direct".into(),
                    comment: String::new(),
                });
                Some(format!("rules[{}].value", self.rules.len() - 1))
            }
            ("add_parent", _) => {
                self.parents.push(ParentRow {
                    host: String::new(),
                    port: "3128".into(),
                });
                Some(format!("parents[{}].host", self.parents.len() - 1))
            }
            ("del_rule", Some(i)) if i < self.rules.len() => {
                self.rules.remove(i);
                Some("add_rule".into())
            }
            ("del_parent", Some(i)) if i < self.parents.len() => {
                self.parents.remove(i);
                Some("add_parent".into())
            }
            ("up_rule", Some(i)) if i > 0 && i < self.rules.len() => {
                self.rules.swap(i, i - 1);
                Some(format!("rules[{}].value", i - 1))
            }
            ("down_rule", Some(i)) if i + 1 < self.rules.len() => {
                self.rules.swap(i, i + 1);
                Some(format!("rules[{}].value", i + 1))
            }
            ("up_parent", Some(i)) if i > 0 && i < self.parents.len() => {
                self.parents.swap(i, i - 1);
                Some(format!("parents[{}].host", i - 1))
            }
            ("down_parent", Some(i)) if i + 1 < self.parents.len() => {
                self.parents.swap(i, i + 1);
                Some(format!("parents[{}].host", i + 1))
            }
            _ => None,
        }
    }
}

/// `rules[3].value` → `(3, "value")` for prefix `rules`.
fn indexed<'a>(key: &'a str, prefix: &str) -> Option<(usize, &'a str)> {
    let rest = key.strip_prefix(prefix)?.strip_prefix('[')?;
    let (index, field) = rest.split_once("].")?;
    Some((index.parse().ok()?, field))
}

/// A located error attached to a form field.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    /// Policy path as the server sent it, without the `policy.` prefix.
    pub path: String,
    /// The message.
    pub message: String,
}

/// Where the located errors go: by input name, and those that match no input.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ErrorMap {
    /// Input name → messages.
    pub by_field: BTreeMap<String, Vec<String>>,
    /// Errors with no input of their own (shown in the summary only).
    pub unplaced: Vec<FieldError>,
}

impl ErrorMap {
    /// Messages for an input.
    pub fn get(&self, name: &str) -> Vec<String> {
        self.by_field.get(name).cloned().unwrap_or_default()
    }

    /// Whether an input has errors.
    pub fn has(&self, name: &str) -> bool {
        self.by_field.contains_key(name)
    }

    /// Whether there are no errors at all.
    pub fn is_empty(&self) -> bool {
        self.by_field.is_empty() && self.unplaced.is_empty()
    }
}

/// Attaches each error to the input whose name is the longest prefix of its path
/// (`allowed_clients[2]` → the `allowed_clients` textarea; `rules[3]` → the rule's value; a path
/// naming a whole list → its "add" button).
pub fn place_errors(form: &EditorForm, errors: &[FieldError]) -> ErrorMap {
    let mut names: Vec<String> = [
        "listen_port",
        "default_action",
        "allowed_clients",
        "connect_ports",
        "ats_records",
        "failover.policy",
        "failover.fail_threshold",
        "failover.retry_time_s",
        "failover.total_connect_attempts",
        "failover.per_parent_connect_attempts",
        "failover.connect_timeout_s",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for i in 0..form.rules.len() {
        for f in ["match", "value", "action", "comment"] {
            names.push(format!("rules[{i}].{f}"));
        }
    }
    for i in 0..form.parents.len() {
        for f in ["host", "port"] {
            names.push(format!("parents[{i}].{f}"));
        }
    }
    let mut map = ErrorMap::default();
    for e in errors {
        let path = e.path.strip_prefix("policy.").unwrap_or(&e.path);
        let path = if path == "policy" { "" } else { path };
        let target = if let Some(exact) = names.iter().find(|n| n.as_str() == path) {
            Some(exact.clone())
        } else if let Some(n) = names
            .iter()
            .filter(|n| {
                path.starts_with(n.as_str())
                    && matches!(path[n.len()..].chars().next(), Some('[') | Some('.'))
            })
            .max_by_key(|n| n.len())
        {
            Some(n.clone())
        } else if let Some((i, _)) = indexed(&format!("{path}.x"), "rules") {
            (i < form.rules.len()).then(|| format!("rules[{i}].value"))
        } else if let Some((i, _)) = indexed(&format!("{path}.x"), "parents") {
            (i < form.parents.len()).then(|| format!("parents[{i}].host"))
        } else if path == "rules" {
            Some("add_rule".into())
        } else if path == "parents" {
            Some("add_parent".into())
        } else if path == "failover" {
            Some("failover.policy".into())
        } else {
            None
        };
        match target {
            Some(name) => map
                .by_field
                .entry(name)
                .or_default()
                .push(e.message.clone()),
            None => map.unplaced.push(FieldError {
                path: path.to_string(),
                message: e.message.clone(),
            }),
        }
    }
    map
}

/// What a person calls an input (`rules[3].value` → "Rule 4 destination").
pub fn field_label(name: &str) -> String {
    let fixed = [
        ("listen_port", "Listen port"),
        ("default_action", "When no rule matches"),
        ("allowed_clients", "Clients allowed to use the proxy"),
        ("connect_ports", "Ports allowed for CONNECT"),
        ("ats_records", "Extra ATS records"),
        ("failover.policy", "Failover policy"),
        (
            "failover.fail_threshold",
            "Failures before marking a parent down",
        ),
        ("failover.retry_time_s", "Retry a down parent after"),
        (
            "failover.total_connect_attempts",
            "Connect attempts in total",
        ),
        (
            "failover.per_parent_connect_attempts",
            "Connect attempts per parent",
        ),
        ("failover.connect_timeout_s", "Connect timeout"),
        ("add_rule", "Rules"),
        ("add_parent", "Parent proxies"),
    ];
    if let Some((_, label)) = fixed.iter().find(|(k, _)| *k == name) {
        return label.to_string();
    }
    if let Some((i, field)) = indexed(name, "rules") {
        let what = match field {
            "match" => "match",
            "value" => "destination",
            "action" => "action",
            _ => "comment",
        };
        return format!("Rule {} {what}", i + 1);
    }
    if let Some((i, field)) = indexed(name, "parents") {
        return format!("Parent {} {field}", i + 1);
    }
    name.to_string()
}

/// The HTML id of an input name (`rules[3].value` → `f-rules-3-value`).
pub fn field_id(name: &str) -> String {
    let mut id = String::from("f-");
    for c in name.chars() {
        if c.is_ascii_alphanumeric() || c == '_' {
            id.push(c);
        } else if !id.ends_with('-') {
            id.push('-');
        }
    }
    id.trim_end_matches('-').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template() -> Value {
        serde_json::to_value(apm_policy::template::default_policy()).expect("template json")
    }

    #[test]
    fn the_default_template_round_trips_through_the_form() {
        let policy = template();
        let form = EditorForm::from_policy(&policy);
        assert!(!form.rules.is_empty() && form.parents.len() == 2);
        let back = form.to_policy();
        let reparsed: apm_policy::Policy =
            serde_json::from_value(back.clone()).expect("policy from form");
        assert_eq!(reparsed, apm_policy::template::default_policy());
        // And through posted pairs, as the browser sends them.
        let mut pairs = vec![
            ("listen_port".to_string(), form.listen_port.clone()),
            ("default_action".into(), form.default_action.clone()),
            ("allowed_clients".into(), form.allowed_clients.clone()),
            ("connect_ports".into(), form.connect_ports.clone()),
            ("ats_records".into(), form.ats_records.clone()),
            ("failover.policy".into(), form.failover.policy.clone()),
            (
                "failover.fail_threshold".into(),
                form.failover.fail_threshold.clone(),
            ),
            (
                "failover.retry_time_s".into(),
                form.failover.retry_time_s.clone(),
            ),
            (
                "failover.total_connect_attempts".into(),
                form.failover.total_connect_attempts.clone(),
            ),
            (
                "failover.per_parent_connect_attempts".into(),
                form.failover.per_parent_connect_attempts.clone(),
            ),
            (
                "failover.connect_timeout_s".into(),
                form.failover.connect_timeout_s.clone(),
            ),
        ];
        // Out of order on purpose: the index decides the order.
        for (i, r) in form.rules.iter().enumerate().rev() {
            pairs.push((format!("rules[{i}].match"), r.kind.clone()));
            pairs.push((format!("rules[{i}].value"), r.value.clone()));
            pairs.push((format!("rules[{i}].action"), r.action.clone()));
            pairs.push((format!("rules[{i}].comment"), r.comment.clone()));
        }
        for (i, p) in form.parents.iter().enumerate() {
            pairs.push((format!("parents[{i}].host"), p.host.clone()));
            pairs.push((format!("parents[{i}].port"), p.port.clone()));
        }
        assert_eq!(EditorForm::from_pairs(&pairs), form);
    }

    #[test]
    fn unparsable_numbers_are_sent_as_text_for_the_server_to_name() {
        let mut form = EditorForm::from_policy(&template());
        form.listen_port = "80a".into();
        assert_eq!(form.to_policy()["listen_port"], json!("80a"));
        form.ats_records = "not json".into();
        assert_eq!(form.to_policy()["ats_records"], json!("not json"));
    }

    #[test]
    fn structural_edits_move_rows_and_name_the_input_to_focus() {
        let mut form = EditorForm::default();
        assert_eq!(form.apply("add_rule").as_deref(), Some("rules[0].value"));
        form.rules[0].value = "a".into();
        form.apply("add_rule");
        form.rules[1].value = "b".into();
        assert_eq!(form.apply("up_rule:1").as_deref(), Some("rules[0].value"));
        assert_eq!(form.rules[0].value, "b");
        assert_eq!(form.apply("down_rule:0").as_deref(), Some("rules[1].value"));
        assert_eq!(form.rules[1].value, "b");
        assert_eq!(form.apply("up_rule:0"), None, "first row cannot go up");
        assert_eq!(form.apply("down_rule:1"), None, "last row cannot go down");
        assert_eq!(form.apply("del_rule:9"), None);
        form.apply("del_rule:0");
        assert_eq!(form.rules.len(), 1);
        assert_eq!(form.rules[0].value, "b");
        assert_eq!(form.apply("add_parent").as_deref(), Some("parents[0].host"));
        assert_eq!(form.apply("bogus"), None);
    }

    #[test]
    fn located_errors_land_on_their_inputs() {
        let mut form = EditorForm::from_policy(&template());
        form.rules.truncate(4);
        let errors = [
            ("policy.rules[3].value", "not a CIDR"),
            ("policy.allowed_clients[1]", "bad client"),
            ("policy.failover.retry_time_s", "too big"),
            ("policy.rules[2]", "shadowed"),
            ("policy.parents", "need one"),
            ("policy", "missing field"),
            ("policy.rules[99].value", "gone"),
        ]
        .map(|(p, m)| FieldError {
            path: p.into(),
            message: m.into(),
        });
        let map = place_errors(&form, &errors);
        assert_eq!(map.get("rules[3].value"), vec!["not a CIDR"]);
        assert_eq!(map.get("allowed_clients"), vec!["bad client"]);
        assert_eq!(map.get("failover.retry_time_s"), vec!["too big"]);
        assert_eq!(map.get("rules[2].value"), vec!["shadowed"]);
        assert_eq!(map.get("add_parent"), vec!["need one"]);
        assert_eq!(map.unplaced.len(), 2, "{:?}", map.unplaced);
        assert!(!map.is_empty());
    }

    #[test]
    fn fields_have_human_labels() {
        assert_eq!(field_label("rules[3].value"), "Rule 4 destination");
        assert_eq!(field_label("parents[0].port"), "Parent 1 port");
        assert_eq!(
            field_label("failover.retry_time_s"),
            "Retry a down parent after"
        );
        assert_eq!(field_label("something.else"), "something.else");
    }

    #[test]
    fn field_ids_are_html_safe() {
        assert_eq!(field_id("rules[3].value"), "f-rules-3-value");
        assert_eq!(field_id("failover.retry_time_s"), "f-failover-retry_time_s");
    }
}
