//! Small helpers shared by the handlers: time formatting/parsing and input checks.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::error::{ApiError, ApiResult};

/// Epoch ms → RFC 3339 (UTC).
pub fn fmt_ms(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| ms.to_string())
}

/// Optional epoch ms → optional RFC 3339.
pub fn fmt_opt(ms: Option<i64>) -> Option<String> {
    ms.map(fmt_ms)
}

/// Parses a time query parameter: RFC 3339 or integer epoch seconds. Names the parameter.
pub fn parse_time(name: &str, value: &str) -> ApiResult<i64> {
    if let Ok(secs) = value.parse::<i64>() {
        return secs
            .checked_mul(1000)
            .ok_or_else(|| ApiError::bad_request(format!("{name}: {value} is out of range")));
    }
    OffsetDateTime::parse(value, &Rfc3339)
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
        .map_err(|e| {
            ApiError::bad_request(format!(
                "{name}: {value:?} is neither RFC 3339 (2026-01-31T12:00:00Z) nor epoch seconds ({e})"
            ))
        })
}

/// The `[since, until)` window of a series query in epoch ms: `until` defaults to now,
/// `since` to `default_span_ms` before `until`; both are clamped to the years 1970..=9999 so
/// bucket arithmetic stays far from overflow. Names the parameter that is wrong.
pub fn series_window(
    since: Option<&str>,
    until: Option<&str>,
    now: i64,
    default_span_ms: i64,
) -> ApiResult<(i64, i64)> {
    const LAST_MS: i64 = 253_402_300_799_999;
    let until = until
        .map(|v| parse_time("until", v))
        .transpose()?
        .unwrap_or(now + 1);
    let since = since
        .map(|v| parse_time("since", v))
        .transpose()?
        .unwrap_or(until.saturating_sub(default_span_ms));
    let (since, until) = (since.clamp(0, LAST_MS), until.clamp(0, LAST_MS));
    if since >= until {
        return Err(ApiError::bad_request("since: must be before until"));
    }
    Ok((since, until))
}

/// Checks a short identifier-like field (usernames, hostnames, metric names).
pub fn check_name(field: &str, value: &str, max: usize, extra: &str) -> ApiResult<()> {
    if value.is_empty() {
        return Err(ApiError::invalid(format!("{field}: must not be empty")));
    }
    if value.len() > max {
        return Err(ApiError::invalid(format!(
            "{field}: {} characters is longer than the maximum {max}",
            value.len()
        )));
    }
    if let Some(bad) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || extra.contains(*c)))
    {
        return Err(ApiError::invalid(format!(
            "{field}: {value:?} contains {bad:?}; allowed are letters, digits and {extra:?}"
        )));
    }
    Ok(())
}

/// Checks a free-text field's length.
pub fn check_len(field: &str, value: &str, max: usize) -> ApiResult<()> {
    if value.chars().count() > max {
        return Err(ApiError::invalid(format!(
            "{field}: longer than the maximum of {max} characters"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_roundtrip() {
        assert_eq!(fmt_ms(0), "1970-01-01T00:00:00Z");
        assert_eq!(parse_time("since", "60").expect("secs"), 60_000);
        assert_eq!(
            parse_time("since", "1970-01-01T00:01:00Z").expect("rfc3339"),
            60_000
        );
        let err = parse_time("since", "yesterday").expect_err("bad");
        assert!(format!("{err:?}").contains("since"));
    }

    #[test]
    fn names_are_checked_with_location() {
        assert!(check_name("username", "alice.b-1", 64, "._-@").is_ok());
        let e = check_name("username", "al ice", 64, "._-@").expect_err("space");
        assert!(format!("{e:?}").contains("username"));
        assert!(check_name("username", "", 64, "").is_err());
    }

    mod props {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn epoch_seconds_parse_exactly(secs in -1_000_000_000_000i64..1_000_000_000_000i64) {
                prop_assert_eq!(parse_time("t", &secs.to_string()).expect("secs"), secs * 1000);
            }

            #[test]
            fn formatted_times_parse_back(ms in 0i64..4_102_444_800_000i64) {
                prop_assert_eq!(parse_time("t", &fmt_ms(ms)).expect("rfc3339"), ms);
            }

            #[test]
            fn garbage_never_panics_and_names_the_parameter(text in "\\PC{0,40}") {
                if let Err(e) = parse_time("since", &text) {
                    let text = format!("{e:?}");
                    prop_assert!(text.contains("since"), "{}", text);
                }
            }

            #[test]
            fn names_accept_exactly_the_allowed_alphabet(name in "[a-zA-Z0-9._-]{1,64}", bad in "[^a-zA-Z0-9._-]") {
                prop_assert!(check_name("n", &name, 64, "._-").is_ok());
                let with_bad = format!("{name}{bad}");
                prop_assert!(check_name("n", &with_bad, 200, "._-").is_err());
            }
        }
    }
}
