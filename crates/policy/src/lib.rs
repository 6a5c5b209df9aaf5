//! The routing policy of an ATS forward proxy: the model people write, its validation with
//! located errors, rendering to Apache Traffic Server 9.2 and 10.x files with a canonical
//! content hash, `explain` for a destination, and the client-side PAC / `NO_PROXY` forms.
//!
//! This crate is pure: no I/O, no async, no clock. Callers read files and pass text.
//!
//! ```
//! use apm_policy::{Policy, AtsMajor, template};
//! let policy = Policy::from_toml_str(template::DEFAULT_POLICY_TOML).unwrap();
//! let valid = policy.validate().unwrap();
//! let bundle = apm_policy::render(&valid, AtsMajor::V9);
//! assert!(bundle.files.contains_key("parent.config"));
//! println!("{}", bundle.hash);
//! ```

pub mod client;
pub mod explain;
pub mod hash;
pub mod model;
pub mod render;
pub mod template;
pub mod validate;

pub use explain::{Explanation, Target, explain};
pub use hash::ContentHash;
pub use model::{Action, FailoverPolicy, MatchKind, ParseError, Policy, RecordValue, Rule};
pub use render::{AtsMajor, Bundle, render};
pub use validate::{ValidPolicy, ValidationError, ValidationErrors};
