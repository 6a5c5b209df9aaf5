//! ATS 9 `records.config` lines: parsing, the records ATS applies only on restart, and the
//! host-local records an operator appends to the rendered file.

use std::collections::BTreeMap;

/// One `CONFIG|LOCAL name TYPE value` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordLine {
    /// `CONFIG` or `LOCAL`.
    pub scope: String,
    /// Full record name, e.g. `proxy.config.http.server_ports`.
    pub name: String,
    /// `INT`, `STRING`, `FLOAT` or `COUNTER`.
    pub kind: String,
    /// The value text (for STRING, everything after the type).
    pub value: String,
}

/// Parses one line: `Ok(None)` for blank lines and comments.
pub fn parse_line(line: &str) -> Result<Option<RecordLine>, String> {
    let trimmed = line.trim();
    if trimmed.is_empty() || trimmed.starts_with('#') {
        return Ok(None);
    }
    let mut parts = trimmed.splitn(4, char::is_whitespace);
    let scope = parts.next().unwrap_or_default();
    if !matches!(scope, "CONFIG" | "LOCAL") {
        return Err(format!(
            "expected `CONFIG name TYPE value`, found {:?}",
            truncate(trimmed)
        ));
    }
    let name = parts.next().unwrap_or_default();
    if !name.starts_with("proxy.")
        || name.contains(|c: char| !(c.is_ascii_alphanumeric() || "._-".contains(c)))
    {
        return Err(format!("{name:?} is not a record name"));
    }
    let kind = parts.next().unwrap_or_default();
    let value = parts.next().unwrap_or_default().trim();
    let ok = match kind {
        "INT" | "COUNTER" => is_int(value),
        "FLOAT" => value.parse::<f64>().is_ok(),
        "STRING" => true,
        _ => {
            return Err(format!(
                "{name}: type {kind:?} is not INT, STRING, FLOAT or COUNTER"
            ));
        }
    };
    if !ok {
        return Err(format!("{name}: {value:?} is not a valid {kind}"));
    }
    Ok(Some(RecordLine {
        scope: scope.to_owned(),
        name: name.to_owned(),
        kind: kind.to_owned(),
        value: value.to_owned(),
    }))
}

fn is_int(value: &str) -> bool {
    // ATS accepts a K/M/G/T multiplier suffix on integers.
    let digits = value.strip_suffix(['K', 'M', 'G', 'T']).unwrap_or(value);
    let digits = digits.strip_prefix('-').unwrap_or(digits);
    !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit())
}

fn truncate(text: &str) -> String {
    text.chars().take(60).collect()
}

/// Records ATS 9.2 reads only at start-up (a reload sets `restart_required`). Not complete —
/// the authoritative signal is the `proxy.node.config.restart_required.proxy` metric after a
/// reload — but it names the cause in messages and lets the agent predict the restart.
pub const RESTART_ONLY: &[&str] = &[
    "proxy.config.http.server_ports",
    "proxy.config.admin.user_id",
    "proxy.config.exec_thread.autoconfig",
    "proxy.config.exec_thread.autoconfig.scale",
    "proxy.config.exec_thread.limit",
    "proxy.config.accept_threads",
    "proxy.config.cache.ram_cache.size",
    "proxy.config.cache.ram_cache.algorithm",
    "proxy.config.hostdb.size",
    "proxy.config.net.connections_throttle",
];

/// One record whose change needs a restart.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RestartChange {
    /// Record name.
    pub name: String,
    /// Value before (None: not set).
    pub old: Option<String>,
    /// Value after (None: no longer set).
    pub new: Option<String>,
}

impl std::fmt::Display for RestartChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "(default)".to_owned());
        write!(f, "{} {} → {}", self.name, show(&self.old), show(&self.new))
    }
}

/// The restart-only records whose value differs between two records.config texts.
pub fn restart_only_changes(old: &str, new: &str) -> Vec<RestartChange> {
    let values = |text: &str| -> BTreeMap<String, String> {
        text.lines()
            .filter_map(|l| parse_line(l).ok().flatten())
            .map(|r| (r.name, r.value))
            .collect()
    };
    let (old, new) = (values(old), values(new));
    RESTART_ONLY
        .iter()
        .filter_map(|name| {
            let (o, n) = (old.get(*name), new.get(*name));
            (o != n).then(|| RestartChange {
                name: (*name).to_owned(),
                old: o.cloned(),
                new: n.cloned(),
            })
        })
        .collect()
}

/// Host-local records appended to every rendered `records.config` (e.g. `admin.user_id`,
/// cache sizes, a hosts file): things that belong to the machine, not to the fleet policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalRecords {
    lines: Vec<RecordLine>,
}

/// Marks where the local block starts in the written file.
pub const LOCAL_MARKER: &str = "# --- apm agent: host-local records (--local-records) ---";

impl LocalRecords {
    /// Parses a local records file; errors name the line.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut lines = Vec::new();
        for (i, l) in text.lines().enumerate() {
            match parse_line(l) {
                Ok(Some(r)) => lines.push(r),
                Ok(None) => {}
                Err(e) => return Err(format!("line {}: {e}", i + 1)),
            }
        }
        Ok(Self { lines })
    }

    /// True when there is nothing to append.
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// The rendered records.config with the local block appended. Refuses a local record the
    /// bundle sets too: the policy must not be overridden silently by one host.
    pub fn apply_to(&self, rendered: &str) -> Result<String, String> {
        if self.lines.is_empty() {
            return Ok(rendered.to_owned());
        }
        let bundle: BTreeMap<String, String> = rendered
            .lines()
            .filter_map(|l| parse_line(l).ok().flatten())
            .map(|r| (r.name, r.value))
            .collect();
        let clashes: Vec<&str> = self
            .lines
            .iter()
            .filter(|r| bundle.contains_key(&r.name))
            .map(|r| r.name.as_str())
            .collect();
        if !clashes.is_empty() {
            return Err(format!(
                "the local records file sets {clashes:?}, which the policy's records.config sets too; remove them from the local file or from the policy"
            ));
        }
        let mut out = rendered.to_owned();
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(LOCAL_MARKER);
        out.push('\n');
        for r in &self.lines {
            out.push_str(&format!("{} {} {} {}\n", r.scope, r.name, r.kind, r.value));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lines_and_refuses_garbage() {
        let r = parse_line("CONFIG proxy.config.http.server_ports STRING 8153 8153:ipv6")
            .unwrap()
            .unwrap();
        assert_eq!(r.value, "8153 8153:ipv6");
        assert!(parse_line("  # x").unwrap().is_none());
        assert!(
            parse_line("CONFIG proxy.config.a INT 64M")
                .unwrap()
                .is_some()
        );
        assert!(parse_line("CONFIG proxy.config.a INT abc").is_err());
        assert!(parse_line("CONFIG proxy.config.a BOOL 1").is_err());
        assert!(parse_line("garbage line here").is_err());
        assert!(parse_line("CONFIG a.b INT 1").is_err());
    }

    #[test]
    fn listen_port_change_is_restart_only() {
        let old = "CONFIG proxy.config.http.server_ports STRING 8153\nCONFIG proxy.config.http.parent_proxy.retry_time INT 300\n";
        let new = "CONFIG proxy.config.http.server_ports STRING 8154\nCONFIG proxy.config.http.parent_proxy.retry_time INT 30\n";
        let changes = restart_only_changes(old, new);
        assert_eq!(changes.len(), 1);
        assert_eq!(
            changes[0].to_string(),
            "proxy.config.http.server_ports 8153 → 8154"
        );
        assert!(restart_only_changes(old, old).is_empty());
    }

    #[test]
    fn local_records_are_appended_and_must_not_clash() {
        let local =
            LocalRecords::parse("# host\nCONFIG proxy.config.admin.user_id STRING #-1\n").unwrap();
        let out = local
            .apply_to("CONFIG proxy.config.http.server_ports STRING 8153")
            .unwrap();
        assert!(out.ends_with(&format!(
            "{LOCAL_MARKER}\nCONFIG proxy.config.admin.user_id STRING #-1\n"
        )));
        let clash =
            LocalRecords::parse("CONFIG proxy.config.http.server_ports STRING 1\n").unwrap();
        let err = clash
            .apply_to("CONFIG proxy.config.http.server_ports STRING 8153\n")
            .unwrap_err();
        assert!(err.contains("proxy.config.http.server_ports"), "{err}");
        let err = LocalRecords::parse("CONFIG proxy.config.x INT 1\nnope\n").unwrap_err();
        assert!(err.starts_with("line 2:"), "{err}");
    }
}
