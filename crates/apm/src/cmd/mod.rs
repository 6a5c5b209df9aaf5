//! One module per top-level subcommand.

pub mod agent;
pub mod bench;
pub mod capture;
pub mod mock;
pub mod policy;
pub mod server;
