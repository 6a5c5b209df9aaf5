//! Page handlers, one module per area. Each turns a browser request into API calls and renders
//! a template; none decides anything the API decides.

pub mod audit;
pub mod auth;
pub mod configs;
pub mod dashboard;
pub mod proxies;
pub mod users;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// First 12 hex chars of a hash, or an em dash.
pub fn short_hash(h: Option<&str>) -> String {
    match h {
        Some(h) if !h.is_empty() => h.chars().take(12).collect(),
        _ => "—".into(),
    }
}

/// "2026-11-21 22:10:05 UTC" for an RFC 3339 time (the input itself if it does not parse).
pub fn when(rfc3339: &str) -> String {
    match OffsetDateTime::parse(rfc3339, &Rfc3339) {
        Ok(t) => {
            let t = t.to_offset(time::UtcOffset::UTC);
            format!(
                "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second()
            )
        }
        Err(_) => rfc3339.to_string(),
    }
}

/// "42 s ago", "5 min ago", "3 h ago", "2 d ago" relative to `now`.
pub fn ago_at(rfc3339: &str, now: OffsetDateTime) -> String {
    match OffsetDateTime::parse(rfc3339, &Rfc3339) {
        Ok(t) => {
            let s = (now - t).whole_seconds();
            if s < 0 {
                "just now".into()
            } else if s < 90 {
                format!("{s} s ago")
            } else if s < 90 * 60 {
                format!("{} min ago", s / 60)
            } else if s < 36 * 3600 {
                format!("{} h ago", s / 3600)
            } else {
                format!("{} d ago", s / 86_400)
            }
        }
        Err(_) => rfc3339.to_string(),
    }
}

/// [`ago_at`] now; "never" for none.
pub fn ago(t: Option<&str>) -> String {
    match t {
        Some(t) => ago_at(t, OffsetDateTime::now_utc()),
        None => "never".into(),
    }
}

/// A friendly label for well-known ATS metric names.
pub fn metric_label(name: &str) -> String {
    let known = [
        (
            "proxy.process.http.current_client_connections",
            "Client connections (current)",
        ),
        (
            "proxy.process.http.total_client_connections",
            "Client connections (total)",
        ),
        (
            "proxy.process.http.current_server_connections",
            "Server connections (current)",
        ),
        ("proxy.process.cache.ram_cache.hits", "RAM cache hits"),
        ("proxy.process.cache.ram_cache.misses", "RAM cache misses"),
        ("proxy.process.http.incoming_requests", "Incoming requests"),
        (
            "proxy.process.http.total_parent_proxy_connections",
            "Parent proxy connections",
        ),
        (
            "proxy.process.http.err_connect_fail_count_stat",
            "Connect failures",
        ),
    ];
    known
        .iter()
        .find(|(k, _)| *k == name)
        .map(|(_, l)| l.to_string())
        .unwrap_or_else(|| name.to_string())
}

/// Pretty JSON for display.
pub fn pretty(v: &serde_json::Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

/// One line of a unified diff, classified for colouring.
#[derive(Debug, Clone, PartialEq)]
pub struct DiffLine {
    /// add | del | hunk | meta | ctx.
    pub kind: &'static str,
    /// The text.
    pub text: String,
}

/// Classifies the lines of a unified diff.
pub fn diff_lines(diff: &str) -> Vec<DiffLine> {
    diff.lines()
        .map(|l| DiffLine {
            kind: if l.starts_with("+++") || l.starts_with("---") {
                "meta"
            } else if l.starts_with('+') {
                "add"
            } else if l.starts_with('-') {
                "del"
            } else if l.starts_with("@@") {
                "hunk"
            } else {
                "ctx"
            },
            text: l.to_string(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn relative_and_absolute_times() {
        let now = datetime!(2026-11-21 12:00:00 UTC);
        assert_eq!(ago_at("2026-11-21T11:59:30Z", now), "30 s ago");
        assert_eq!(ago_at("2026-11-21T11:30:00Z", now), "30 min ago");
        assert_eq!(ago_at("2026-11-21T06:00:00Z", now), "6 h ago");
        assert_eq!(ago_at("2026-11-18T12:00:00Z", now), "3 d ago");
        assert_eq!(ago_at("2026-11-21T12:00:10Z", now), "just now");
        assert_eq!(ago_at("garbage", now), "garbage");
        assert_eq!(when("2026-11-21T11:59:30.5Z"), "2026-11-21 11:59:30 UTC");
        assert_eq!(ago(None), "never");
    }

    #[test]
    fn hashes_and_diffs() {
        assert_eq!(short_hash(Some("0123456789abcdef")), "0123456789ab");
        assert_eq!(short_hash(None), "—");
        let lines = diff_lines("--- a\n+++ b\n@@ -1 +1 @@\n-old\n+new\n same");
        let kinds: Vec<_> = lines.iter().map(|l| l.kind).collect();
        assert_eq!(kinds, ["meta", "meta", "hunk", "del", "add", "ctx"]);
    }
}
