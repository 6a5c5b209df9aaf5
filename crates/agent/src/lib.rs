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
