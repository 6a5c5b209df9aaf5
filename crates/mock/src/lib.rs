//! The mock side of capture → mocks.
//!
//! - [`server`]: `apm mock serve`, a mock server for the WireMock mapping subset we generate,
//!   with indexed matching ([`store`]) and WireMock's admin API subset.
//! - [`record`]: `apm capture record`, a recording reverse proxy feeding an
//!   [`apm_capture::Pipeline`].
//! - [`load`]: `apm capture load`, bulk import into WireMock with backup, batches and retry.
//! - [`files`]: reading and atomically writing mapping directories.
//! - [`http`]: the small hyper server loop they share, and `/metrics`.

pub mod files;
pub mod http;
pub mod load;
pub mod record;
pub mod server;
pub mod store;
pub mod stub;
