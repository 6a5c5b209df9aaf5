//! The canonical content hash of a rendered bundle.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

/// SHA-256 identifying a set of rendered files. Shown as 64 lower-case hex characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContentHash([u8; 32]);

impl ContentHash {
    /// Hashes files by name and content. The encoding is unambiguous (lengths precede data),
    /// so no two different file sets share an input.
    pub fn of_files(files: &BTreeMap<String, String>) -> ContentHash {
        let mut hasher = Sha256::new();
        hasher.update(b"apm-bundle-v1\n");
        for (name, content) in files {
            hasher.update((name.len() as u64).to_be_bytes());
            hasher.update(name.as_bytes());
            hasher.update((content.len() as u64).to_be_bytes());
            hasher.update(content.as_bytes());
        }
        ContentHash(hasher.finalize().into())
    }

    /// The raw digest.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContentHash({self})")
    }
}

/// A string that is not 64 hex characters.
#[derive(Debug, thiserror::Error)]
#[error("\"{0}\" is not a content hash (expected 64 hexadecimal characters)")]
pub struct InvalidHash(String);

impl FromStr for ContentHash {
    type Err = InvalidHash;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut bytes = [0u8; 32];
        if text.len() != 64 {
            return Err(InvalidHash(text.chars().take(80).collect()));
        }
        hex::decode_to_slice(text.to_ascii_lowercase(), &mut bytes)
            .map_err(|_| InvalidHash(text.chars().take(80).collect()))?;
        Ok(ContentHash(bytes))
    }
}

impl Serialize for ContentHash {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ContentHash {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn files(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(n, c)| (n.to_string(), c.to_string()))
            .collect()
    }

    #[test]
    fn display_round_trips() {
        let hash = ContentHash::of_files(&files(&[("a", "1")]));
        let text = hash.to_string();
        assert_eq!(text.len(), 64);
        assert_eq!(text.parse::<ContentHash>().unwrap(), hash);
        assert!("xyz".parse::<ContentHash>().is_err());
        assert!("g".repeat(64).parse::<ContentHash>().is_err());
    }

    #[test]
    fn boundaries_between_names_and_contents_matter() {
        let a = ContentHash::of_files(&files(&[("ab", "c")]));
        let b = ContentHash::of_files(&files(&[("a", "bc")]));
        assert_ne!(a, b);
    }

    proptest! {
        #[test]
        fn different_file_sets_hash_differently(
            a in proptest::collection::btree_map("[a-z.]{1,8}", ".{0,20}", 1..4),
            b in proptest::collection::btree_map("[a-z.]{1,8}", ".{0,20}", 1..4),
        ) {
            prop_assert_eq!(ContentHash::of_files(&a) == ContentHash::of_files(&b), a == b);
        }
    }
}
