//! Checks a bundle before anything is written. The server renders bundles with the policy
//! crate, which already refuses what ATS would drop; the agent checks again because a bad
//! `parent.config` line does not fail a reload — ATS drops it silently and traffic goes DIRECT.
//! A bundle that fails here is never written.

use std::collections::BTreeMap;
use std::fmt;

use apm_policy::validate::{IpRange, parse_ip_range};
use apm_policy::{AtsMajor, ContentHash};

use crate::records::{self, RecordLine};

/// Files that may appear in a bundle besides the required ones.
const OPTIONAL_FILES: &[&str] = &["sni.yaml", "strategies.yaml"];

/// The files a bundle must carry for an ATS major version.
pub fn required_files(ats: AtsMajor) -> [&'static str; 3] {
    ["parent.config", ats.records_file(), "ip_allow.yaml"]
}

/// One reason a bundle is refused, located by file and line where that applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file concerned, if any.
    pub file: Option<String>,
    /// 1-based line number, if any.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.file, self.line) {
            (Some(file), Some(line)) => write!(f, "{file}:{line}: {}", self.message),
            (Some(file), None) => write!(f, "{file}: {}", self.message),
            _ => f.write_str(&self.message),
        }
    }
}

/// Every problem found in a bundle (never empty).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct InvalidBundle(pub Vec<Problem>);

impl fmt::Display for InvalidBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("bundle refused by agent validation: ")?;
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

fn problem(file: Option<&str>, line: Option<usize>, message: impl Into<String>) -> Problem {
    Problem {
        file: file.map(str::to_owned),
        line,
        message: message.into(),
    }
}

/// Validates files and their claimed hash for `ats`. Also refuses, for ATS 9, the
/// `dest_ip` ordering that hangs the 9.2 config loader.
pub fn validate_bundle(
    ats: AtsMajor,
    files: &BTreeMap<String, String>,
    claimed: &ContentHash,
) -> Result<(), InvalidBundle> {
    let mut problems = Vec::new();
    let actual = ContentHash::of_files(files);
    if &actual != claimed {
        problems.push(problem(
            None,
            None,
            format!(
                "content hash mismatch: the bundle claims {claimed}, its files hash to {actual}"
            ),
        ));
    }
    for required in required_files(ats) {
        if !files.contains_key(required) {
            problems.push(problem(
                Some(required),
                None,
                format!("missing: an ATS {ats} bundle must carry {required}"),
            ));
        }
    }
    for name in files.keys() {
        if !is_plain_file_name(name) {
            problems.push(problem(
                Some(name),
                None,
                "not a plain file name (no '/', no leading '.')",
            ));
        } else if !required_files(ats).contains(&name.as_str())
            && !OPTIONAL_FILES.contains(&name.as_str())
        {
            problems.push(problem(
                Some(name),
                None,
                format!("unexpected file for ATS {ats}: the agent manages only {:?} and {OPTIONAL_FILES:?}", required_files(ats)),
            ));
        }
    }
    if let Some(text) = files.get("parent.config") {
        problems.extend(check_parent_config(text, ats));
    }
    if let Some(text) = files.get("records.config") {
        problems.extend(check_records_config(text));
    }
    if let Some(text) = files.get("records.yaml")
        && !text.lines().any(|l| l.trim_end() == "records:")
    {
        problems.push(problem(
            Some("records.yaml"),
            None,
            "has no top-level `records:` key",
        ));
    }
    if let Some(text) = files.get("ip_allow.yaml")
        && !text.lines().any(|l| l.trim_end() == "ip_allow:")
    {
        problems.push(problem(
            Some("ip_allow.yaml"),
            None,
            "has no top-level `ip_allow:` key",
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(InvalidBundle(problems))
    }
}

fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty() && !name.contains('/') && !name.contains('\0') && !name.starts_with('.')
}

/// Splits a parent.config line into `key=value` pairs; double quotes group a value.
fn tokens(line: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(out);
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        if chars.next() != Some('=') {
            return Err(format!("`{key}` is not of the form key=value"));
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            let mut closed = false;
            for c in chars.by_ref() {
                if c == '"' {
                    closed = true;
                    break;
                }
                value.push(c);
            }
            if !closed {
                return Err(format!("unterminated quote in the value of `{key}`"));
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                value.push(c);
                chars.next();
            }
        }
        out.push((key, value));
    }
}

const PRIMARY: &[&str] = &["dest_domain", "dest_host", "dest_ip", "url_regex"];

/// Checks every non-comment line: exactly one primary matcher with a value, `parent=` or
/// `go_direct=`, a port on every parent, known values for `go_direct` and `round_robin`.
/// For ATS 9 it also refuses a `dest_ip` range that ends one address below an earlier
/// `dest_ip` range's start (the 9.2 loader hangs on it).
pub fn check_parent_config(text: &str, ats: AtsMajor) -> Vec<Problem> {
    let file = Some("parent.config");
    let mut problems = Vec::new();
    let mut ip_ranges: Vec<(usize, IpRange)> = Vec::new();
    let mut lines_with_rules = 0;
    for (index, raw) in text.lines().enumerate() {
        let n = index + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        lines_with_rules += 1;
        let pairs = match tokens(line) {
            Ok(p) => p,
            Err(e) => {
                problems.push(problem(file, Some(n), e));
                continue;
            }
        };
        let primaries: Vec<&(String, String)> = pairs
            .iter()
            .filter(|(k, _)| PRIMARY.contains(&k.as_str()))
            .collect();
        match primaries.as_slice() {
            [] => problems.push(problem(
                file,
                Some(n),
                format!("no primary matcher (one of {PRIMARY:?}): ATS would discard the line"),
            )),
            [(key, value)] if value.is_empty() => {
                problems.push(problem(file, Some(n), format!("`{key}=` has no value")))
            }
            [(key, value)] if key == "dest_ip" => match parse_ip_range(value) {
                Ok(range) => ip_ranges.push((n, range)),
                Err(e) => problems.push(problem(file, Some(n), format!("dest_ip={value}: {e}"))),
            },
            [_] => {}
            _ => problems.push(problem(
                file,
                Some(n),
                "more than one primary matcher on the line",
            )),
        }
        let has_parent = pairs.iter().any(|(k, _)| k == "parent");
        let has_direct = pairs.iter().any(|(k, _)| k == "go_direct");
        if !has_parent && !has_direct {
            problems.push(problem(
                file,
                Some(n),
                "neither parent= nor go_direct=: ATS would discard the line",
            ));
        }
        for (key, value) in &pairs {
            match key.as_str() {
                "parent" | "secondary_parent" => {
                    for entry in value.split([';', ',']).filter(|e| !e.trim().is_empty()) {
                        if let Err(e) = check_parent_entry(entry.trim()) {
                            problems.push(problem(file, Some(n), format!("{key}: {e}")));
                        }
                    }
                    if value.trim().is_empty() {
                        problems.push(problem(file, Some(n), format!("`{key}=` is empty")));
                    }
                }
                "go_direct" if !matches!(value.as_str(), "true" | "false") => {
                    problems.push(problem(
                        file,
                        Some(n),
                        format!("go_direct={value}: expected true or false"),
                    ))
                }
                "round_robin"
                    if !matches!(
                        value.as_str(),
                        "true" | "false" | "strict" | "latched" | "consistent_hash"
                    ) =>
                {
                    problems.push(problem(
                        file,
                        Some(n),
                        format!("round_robin={value}: not an ATS round_robin policy"),
                    ))
                }
                _ => {}
            }
        }
    }
    if lines_with_rules == 0 {
        problems.push(problem(
            file,
            None,
            "has no rule lines: every request would go DIRECT",
        ));
    }
    if ats == AtsMajor::V9 {
        for (j, (line_j, later)) in ip_ranges.iter().enumerate() {
            for (line_i, earlier) in &ip_ranges[..j] {
                if later.ends_just_below(earlier) {
                    problems.push(problem(
                        file,
                        Some(*line_j),
                        format!(
                            "dest_ip range ends one address below the range on line {line_i}: \
                             ATS 9.2's config loader hangs on this ordering"
                        ),
                    ));
                }
            }
        }
    }
    problems
}

fn check_parent_entry(entry: &str) -> Result<(), String> {
    // host:port, optionally |weight; IPv6 hosts come bracketed.
    let without_weight = entry.split('|').next().unwrap_or(entry);
    let Some((host, port)) = without_weight.rsplit_once(':') else {
        return Err(format!("\"{entry}\" has no port (ATS requires host:port)"));
    };
    if host.is_empty() || host.ends_with(':') && !host.starts_with('[') {
        return Err(format!("\"{entry}\" has no host"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(format!("\"{entry}\": port \"{port}\" is not 1-65535")),
    }
}

/// Checks every non-comment records.config line is `CONFIG|LOCAL name TYPE value` with a
/// value of its type (traffic_manager skips anything else with only a warning).
pub fn check_records_config(text: &str) -> Vec<Problem> {
    text.lines()
        .enumerate()
        .filter_map(|(i, l)| match records::parse_line(l) {
            Ok(_) => None,
            Err(e) => Some(problem(Some("records.config"), Some(i + 1), e)),
        })
        .collect()
}

/// The records a records.config text sets (last line wins, as in ATS).
pub fn records_of(text: &str) -> BTreeMap<String, RecordLine> {
    text.lines()
        .filter_map(|l| records::parse_line(l).ok().flatten())
        .map(|r| (r.name.clone(), r))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use apm_policy::{Policy, template};

    fn default_bundle(ats: AtsMajor) -> apm_policy::Bundle {
        let policy = Policy::from_toml_str(template::DEFAULT_POLICY_TOML).unwrap();
        apm_policy::render(&policy.validate().unwrap(), ats)
    }

    #[test]
    fn rendered_bundles_pass() {
        for ats in [AtsMajor::V9, AtsMajor::V10] {
            let b = default_bundle(ats);
            validate_bundle(ats, &b.files, &b.hash).unwrap();
        }
    }

    #[test]
    fn hash_mismatch_and_missing_files_are_refused() {
        let b = default_bundle(AtsMajor::V9);
        let mut files = b.files.clone();
        files.remove("ip_allow.yaml");
        let err = validate_bundle(AtsMajor::V9, &files, &b.hash).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("content hash mismatch"), "{text}");
        assert!(text.contains("ip_allow.yaml: missing"), "{text}");
        // An ATS 10 bundle is not an ATS 9 bundle.
        let v10 = default_bundle(AtsMajor::V10);
        let err = validate_bundle(AtsMajor::V9, &v10.files, &v10.hash).unwrap_err();
        assert!(err.to_string().contains("records.config: missing"), "{err}");
        assert!(
            err.to_string().contains("records.yaml: unexpected"),
            "{err}"
        );
    }

    #[test]
    fn file_names_must_be_plain() {
        let mut files = default_bundle(AtsMajor::V9).files;
        files.insert("../etc/passwd".into(), "x".into());
        let hash = ContentHash::of_files(&files);
        let err = validate_bundle(AtsMajor::V9, &files, &hash).unwrap_err();
        assert!(
            err.to_string()
                .contains("../etc/passwd: not a plain file name"),
            "{err}"
        );
    }

    fn parent_problems(text: &str) -> Vec<String> {
        check_parent_config(text, AtsMajor::V9)
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn parent_lines_need_a_matcher_an_action_and_ports() {
        let p = parent_problems(
            "# comment\n\
             dest_domain=. parent=\"10.0.0.1:3128;10.0.0.2:3128\" round_robin=false go_direct=false\n\
             go_direct=true\n\
             dest_domain=foo.com round_robin=false\n\
             dest_domain=bar.com parent=\"10.0.0.1\" go_direct=false\n\
             dest_host=x.com go_direct=maybe\n\
             dest_ip=10.0.0.0-10.0.0.300 go_direct=true\n\
             dest_domain=y.com parent=\"a:1\" round_robin=strictly\n\
             dest_domain=z.com dest_host=z.com go_direct=true\n\
             dest_domain=q.com parent=\"a:1\n",
        );
        let expect = [
            "parent.config:3: no primary matcher",
            "parent.config:4: neither parent= nor go_direct=",
            "parent.config:5: parent: \"10.0.0.1\" has no port",
            "parent.config:6: go_direct=maybe",
            "parent.config:7: dest_ip=10.0.0.0-10.0.0.300",
            "parent.config:8: round_robin=strictly",
            "parent.config:9: more than one primary matcher",
            "parent.config:10: unterminated quote",
        ];
        assert_eq!(p.len(), expect.len(), "{p:#?}");
        for (got, want) in p.iter().zip(expect) {
            assert!(got.starts_with(want), "{got:?} should start with {want:?}");
        }
    }

    #[test]
    fn empty_parent_config_is_refused() {
        let p = parent_problems("# nothing\n\n");
        assert_eq!(p.len(), 1);
        assert!(p[0].contains("no rule lines"));
    }

    #[test]
    fn the_ats_9_2_hang_ordering_is_refused_for_9_only() {
        let text = "dest_ip=127.0.1.8-127.0.1.10 go_direct=true\n\
                    dest_domain=a.com go_direct=true\n\
                    dest_ip=127.0.1.0/29 go_direct=true\n";
        let p = parent_problems(text);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].starts_with(
            "parent.config:3: dest_ip range ends one address below the range on line 1"
        ));
        assert!(check_parent_config(text, AtsMajor::V10).is_empty());
        // Ascending adjacency is fine.
        assert!(
            parent_problems(
                "dest_ip=127.0.1.0/29 go_direct=true\ndest_ip=127.0.1.8-127.0.1.10 go_direct=true\n"
            )
            .is_empty()
        );
    }

    #[test]
    fn bad_records_lines_are_located() {
        let p = check_records_config(
            "# c\nCONFIG proxy.config.a INT 1\ngarbage line\nCONFIG proxy.config.b INT abc\n",
        );
        let text: Vec<String> = p.iter().map(ToString::to_string).collect();
        assert_eq!(text.len(), 2, "{text:?}");
        assert!(text[0].starts_with("records.config:3:"));
        assert!(text[1].starts_with("records.config:4:"));
    }

    proptest::proptest! {
        #[test]
        fn tokenizer_never_panics(line in ".{0,80}") {
            let _ = tokens(&line);
            let _ = check_parent_config(&line, AtsMajor::V9);
        }
    }
}
