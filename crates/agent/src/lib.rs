//! The ATS Proxy Manager agent: runs beside one Apache Traffic Server, long-polls the control
//! plane for the config it should run, and applies it safely — validate, write atomically with
//! a journal, reload, confirm from ATS's own logs, roll back and NACK on any failure. It keeps
//! ATS untouched while the control plane is unreachable, samples metrics, and ships debug logs
//! during capture windows.
//!
//! Pure parts (unit-tested without ATS): [`backoff`], [`validate`], [`records`], [`confirm`],
//! [`metrics`], [`wire`], [`state`]. I/O edges: [`ats`] (traffic_ctl, log files), [`apply`]
//! (the config-dir transaction), [`client`] (HTTP), [`capture`], and [`agent`] (the loop).

pub mod agent;
pub mod apply;
pub mod ats;
pub mod backoff;
pub mod capture;
pub mod client;
pub mod config;
pub mod confirm;
pub mod fsutil;
pub mod logging;
pub mod metrics;
pub mod records;
pub mod state;
pub mod validate;
pub mod wire;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// `2026-11-21T22:12:08Z` for epoch milliseconds (UTC, second precision).
pub fn format_utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_formatting() {
        assert_eq!(super::format_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::format_utc(1_795_299_128_000), "2026-11-21T22:12:08Z");
        assert_eq!(super::format_utc(951_782_400_000), "2000-02-29T00:00:00Z");
    }
}
