//! Input parsers: Envoy tap, HAR 1.2 and our JSONL shape.
//!
//! Parsers never fail as a whole: each returns the exchanges it could read and one
//! [`InputError`] (file + position + message) per malformed trace. Error messages name fields
//! and positions, never captured values.

use std::fmt;

pub mod envoy;
pub mod har;
pub(crate) mod json_stream;
pub mod jsonl;

pub use envoy::EnvoyStitcher;

use crate::model::{Exchange, InputFormat};

/// A malformed trace: where it is and what is wrong. Holds no captured values.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct InputError {
    /// File name as given by the caller.
    pub file: String,
    /// Position inside the file (`line L, column C`, `entry N`, …).
    pub position: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.file, self.position, self.message)
    }
}

/// What a parser read from one input.
#[derive(Default)]
pub struct Parsed {
    /// Exchanges read successfully, in input order.
    pub exchanges: Vec<Exchange>,
    /// Malformed traces, skipped.
    pub errors: Vec<InputError>,
}

impl Parsed {
    /// Appends another result.
    pub fn extend(&mut self, other: Parsed) {
        self.exchanges.extend(other.exchanges);
        self.errors.extend(other.errors);
    }
}

/// Reads several inputs of one format. Envoy streamed segments are stitched across all of them.
pub fn parse_all<'a>(
    format: InputFormat,
    inputs: impl IntoIterator<Item = (&'a str, &'a [u8])>,
) -> Parsed {
    let mut parsed = Parsed::default();
    let mut stitcher = EnvoyStitcher::new();
    for (file, bytes) in inputs {
        match format {
            InputFormat::EnvoyTap => parsed.extend(stitcher.feed(file, bytes)),
            InputFormat::Har => parsed.extend(har::parse(file, bytes)),
            InputFormat::Jsonl => parsed.extend(jsonl::parse(file, bytes)),
            InputFormat::Record => parsed.errors.push(InputError {
                file: file.to_string(),
                position: String::new(),
                message: "record is not a file format".into(),
            }),
        }
    }
    parsed.extend(stitcher.finish());
    parsed
}
