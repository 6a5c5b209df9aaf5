//! Filters applied before sanitizing: host and path include/exclude globs, methods and a
//! deterministic sampling rate.

use std::fmt;

use crate::model::Exchange;

/// A glob: `*` matches any run of characters, `?` exactly one. Case-insensitive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Glob(String);

impl Glob {
    /// Parses a glob. Empty patterns are rejected.
    pub fn new(pattern: &str) -> Result<Self, String> {
        if pattern.is_empty() {
            return Err("an empty pattern matches nothing; remove it".into());
        }
        Ok(Glob(pattern.to_ascii_lowercase()))
    }

    /// True when the whole of `text` matches.
    pub fn matches(&self, text: &str) -> bool {
        glob_match(self.0.as_bytes(), text.to_ascii_lowercase().as_bytes())
    }
}

impl fmt::Display for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn glob_match(p: &[u8], t: &[u8]) -> bool {
    // Iterative matcher with single-star backtracking: linear in practice, no recursion.
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == b'*' {
        pi += 1;
    }
    pi == p.len()
}

/// Filter settings.
#[derive(Clone, Debug, PartialEq)]
pub struct FilterConfig {
    /// Keep only hosts matching one of these (empty: all hosts).
    pub include_hosts: Vec<Glob>,
    /// Drop hosts matching any of these.
    pub exclude_hosts: Vec<Glob>,
    /// Keep only paths matching one of these (empty: all paths).
    pub include_paths: Vec<Glob>,
    /// Drop paths matching any of these.
    pub exclude_paths: Vec<Glob>,
    /// Keep only these methods (upper case; empty: all).
    pub methods: Vec<String>,
    /// Fraction of requests kept, 0.0–1.0. Deterministic: the same request is always kept or
    /// always dropped.
    pub sample_rate: f64,
}

impl Default for FilterConfig {
    fn default() -> Self {
        FilterConfig {
            include_hosts: Vec::new(),
            exclude_hosts: Vec::new(),
            include_paths: Vec::new(),
            exclude_paths: Vec::new(),
            methods: Vec::new(),
            sample_rate: 1.0,
        }
    }
}

/// Why an exchange was filtered out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FilterReason {
    /// Host not included or excluded.
    Host,
    /// Path not included or excluded.
    Path,
    /// Method not in the list.
    Method,
    /// Dropped by sampling.
    Sampled,
    /// A new request after the pipeline already holds its maximum number of stubs.
    StubLimit,
}

impl FilterReason {
    /// Lower-case name for reports and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            FilterReason::Host => "host",
            FilterReason::Path => "path",
            FilterReason::Method => "method",
            FilterReason::Sampled => "sampled",
            FilterReason::StubLimit => "stub_limit",
        }
    }
}

impl FilterConfig {
    /// Checks the config: the sampling rate must be within 0–1.
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.sample_rate) || self.sample_rate.is_nan() {
            return Err(format!(
                "sample rate {} is outside 0.0-1.0",
                self.sample_rate
            ));
        }
        Ok(())
    }

    /// Returns why the exchange is dropped, or `None` to keep it.
    pub fn check(&self, ex: &Exchange) -> Option<FilterReason> {
        let req = &ex.request;
        if !self.methods.is_empty()
            && !self
                .methods
                .iter()
                .any(|m| m.eq_ignore_ascii_case(&req.method))
        {
            return Some(FilterReason::Method);
        }
        let host = req.host.as_deref().unwrap_or("");
        let bare_host = strip_port(host);
        let host_match = |g: &Glob| g.matches(host) || g.matches(bare_host);
        if (!self.include_hosts.is_empty() && !self.include_hosts.iter().any(host_match))
            || self.exclude_hosts.iter().any(host_match)
        {
            return Some(FilterReason::Host);
        }
        if (!self.include_paths.is_empty()
            && !self.include_paths.iter().any(|g| g.matches(&req.path)))
            || self.exclude_paths.iter().any(|g| g.matches(&req.path))
        {
            return Some(FilterReason::Path);
        }
        if self.sample_rate < 1.0 && !sampled_in(ex, self.sample_rate) {
            return Some(FilterReason::Sampled);
        }
        None
    }
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split(']').next().map_or(host, |h| &h[1..]);
    }
    match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

/// FNV-1a over the request's identity, mapped to [0, 1).
fn sampled_in(ex: &Exchange, rate: f64) -> bool {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    };
    eat(ex.request.method.as_bytes());
    eat(ex.request.host.as_deref().unwrap_or("").as_bytes());
    eat(ex.request.path.as_bytes());
    for (k, v) in &ex.request.query {
        eat(k.as_bytes());
        eat(v.as_bytes());
    }
    eat(&ex.request.body.bytes);
    // Top 53 bits give an exact f64 in [0, 1).
    ((h >> 11) as f64 / (1u64 << 53) as f64) < rate
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        let g = Glob::new("*.example.com").expect("glob");
        assert!(g.matches("api.example.com"));
        assert!(g.matches("API.Example.COM"));
        assert!(!g.matches("example.com"));
        assert!(
            Glob::new("/v1/*/items")
                .expect("glob")
                .matches("/v1/a/b/items")
        );
        assert!(Glob::new("/v?").expect("glob").matches("/v2"));
        assert!(!Glob::new("/v?").expect("glob").matches("/v22"));
        assert!(Glob::new("*").expect("glob").matches(""));
        assert!(Glob::new("").is_err());
    }

    #[test]
    fn strip_ports() {
        assert_eq!(strip_port("a.com:8080"), "a.com");
        assert_eq!(strip_port("a.com"), "a.com");
        assert_eq!(strip_port("[::1]:80"), "::1");
    }
}
