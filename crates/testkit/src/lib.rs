//! Test harness for ATS Proxy Manager: real components on loopback, no mocks.
//!
//! - [`ats`]: a real Apache Traffic Server 9.2 (Debian's `trafficserver` package) in a temp
//!   runroot, started with caller-supplied config files, reloaded/restarted/stopped by the test,
//!   and always stopped by PID (process group) when dropped, also when a test panics.
//! - [`origin`]: HTTP origin servers that name themselves in a header and count requests.
//! - [`parent`]: forward proxies used as ATS parents (absolute-form and `CONNECT`), which can be
//!   stopped and restarted on the same address for failover tests.
//! - [`client`]: a raw blocking client that sends requests through a proxy.
//! - [`dns`]: a loopback DNS server answering from the test hosts table.
//! - [`net`]: free ports, loopback addresses, the private hosts table.
//! - [`postgres`]: a real PostgreSQL 15 cluster in a temp dir on a free loopback port.
//! - [`browser`], [`firefox`]: headless Chromium (DevTools) and Firefox (WebDriver BiDi) behind one
//!   [`browser::Tab`] API, for console end-to-end tests.
//!
//! Everything here is synchronous; servers run on a runtime owned by this crate, so the API is
//! usable from plain `#[test]` functions and from any tokio runtime alike.

pub mod ats;
pub mod browser;
pub mod client;
pub mod dns;
pub mod firefox;
pub mod net;
pub mod origin;
pub mod parent;
pub mod postgres;
mod serve;
