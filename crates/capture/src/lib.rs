//! Capture → mocks: turns captured HTTP traffic into sanitized, deduplicated WireMock stubs.
//!
//! Flow: an input parser ([`input`]) yields raw [`model::Exchange`]s; the [`pipeline::Pipeline`]
//! filters ([`filter`]), sanitizes ([`sanitize`]), dedupes ([`dedupe`]) and finally renders
//! [`wiremock::MappingFile`]s. This crate does no I/O: callers pass bytes in and write the
//! mappings out. Raw exchanges have no `Debug`/`Serialize`, and the mapping generator only
//! accepts a [`sanitize::SanitizedExchange`], so unsanitized data has no path to a file or log.

pub mod dedupe;
pub mod filter;
pub mod input;
pub mod metrics;
pub mod model;
pub mod pipeline;
pub mod sanitize;
pub mod wiremock;

pub use dedupe::{DedupeKey, Lru, dedupe_key};
pub use filter::{FilterConfig, FilterReason, Glob};
pub use input::{InputError, Parsed, parse_all};
pub use model::{Body, Exchange, Header, InputFormat, Request, Response, SourceRef};
pub use pipeline::{Outcome, Pipeline, PipelineConfig, Report};
pub use sanitize::{
    BodyContent, BodyLimits, CustomPattern, PendingExchange, SanitizeStats, SanitizedBody,
    SanitizedExchange, Sanitizer, SanitizerConfig,
};
pub use wiremock::MappingFile;
