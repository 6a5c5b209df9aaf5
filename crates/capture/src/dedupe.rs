//! Deduplication: a SHA-256 key over method + path + sorted query + the first bytes of the
//! body, computed after sanitization, and a deterministic LRU of recently seen keys.

use std::collections::HashMap;
use std::fmt;

use sha2::{Digest, Sha256};

use crate::sanitize::{BodyContent, SanitizedExchange};

/// Default number of bytes of the (sanitized) body that enter the key.
pub const DEFAULT_BODY_PREFIX: usize = 1024;
/// Default LRU capacity.
pub const DEFAULT_CAPACITY: usize = 10_000;

/// A dedupe key: SHA-256 of the request's identity.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DedupeKey(pub [u8; 32]);

impl DedupeKey {
    /// Lower-case hex.
    pub fn hex(&self) -> String {
        hex_lower(&self.0)
    }

    /// Appends the lower-case hex to `out` (no string of its own).
    pub(crate) fn write_hex(&self, out: &mut Vec<u8>) {
        push_hex(out, &self.0);
    }

    /// A UUID-shaped id derived from the key (`n` distinguishes scenario states), stable
    /// across runs, so re-ingesting the same traffic overwrites rather than duplicates stubs.
    pub fn stub_id(&self, n: u32) -> String {
        let mut h = Sha256::new();
        h.update(self.0);
        h.update(n.to_be_bytes());
        let d = h.finalize();
        let mut b = [0u8; 16];
        b.copy_from_slice(&d[..16]);
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        // 8-4-4-4-12 hex digits, written into the id's own buffer.
        let mut id = Vec::with_capacity(36);
        for (i, part) in [&b[0..4], &b[4..6], &b[6..8], &b[8..10], &b[10..16]]
            .into_iter()
            .enumerate()
        {
            if i > 0 {
                id.push(b'-');
            }
            push_hex(&mut id, part);
        }
        String::from_utf8(id).unwrap_or_default()
    }
}

/// Lower-case hex of `bytes` (what `hex::encode` gives, without building it char by char).
fn hex_lower(bytes: &[u8]) -> String {
    let mut out = Vec::with_capacity(bytes.len() * 2);
    push_hex(&mut out, bytes);
    // Only ASCII hex digits were pushed.
    String::from_utf8(out).unwrap_or_default()
}

fn push_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    out.reserve(bytes.len() * 2);
    for &b in bytes {
        out.push(DIGITS[usize::from(b >> 4)]);
        out.push(DIGITS[usize::from(b & 15)]);
    }
}

impl fmt::Debug for DedupeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DedupeKey({})", self.hex())
    }
}

impl fmt::Display for DedupeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hex())
    }
}

fn field(h: &mut Sha256, bytes: &[u8]) {
    h.update((bytes.len() as u64).to_le_bytes());
    h.update(bytes);
}

/// The dedupe key of a sanitized exchange: SHA-256 over the method, the path, the query
/// parameters sorted, and the first `body_prefix` bytes of the body, all after sanitization.
/// Fields are length-prefixed so different splits of the same bytes never collide. A JSON
/// body enters as the sanitizer wrote it: compact (whitespace never changes the key), members
/// in the order the client sent them.
pub fn dedupe_key(ex: &SanitizedExchange, body_prefix: usize) -> DedupeKey {
    let mut h = Sha256::new();
    field(&mut h, ex.method().as_bytes());
    field(&mut h, ex.path().as_bytes());
    let mut query: Vec<&(String, String)> = ex.query().iter().collect();
    query.sort();
    h.update((query.len() as u64).to_le_bytes());
    for (k, v) in query {
        field(&mut h, k.as_bytes());
        field(&mut h, v.as_bytes());
    }
    let body: &[u8] = match &ex.request_body().content {
        BodyContent::Empty => b"",
        BodyContent::Json(j) => j.as_bytes(),
        BodyContent::Text(t) => t.as_bytes(),
        BodyContent::Binary(b) => b,
    };
    field(&mut h, &body[..body.len().min(body_prefix)]);
    DedupeKey(h.finalize().into())
}

const NIL: usize = usize::MAX;

struct Node {
    key: DedupeKey,
    prev: usize,
    next: usize,
}

/// A least-recently-used set of keys with a fixed capacity. Deterministic: the same sequence
/// of keys always gives the same answers.
pub struct Lru {
    capacity: usize,
    index: HashMap<DedupeKey, usize>,
    nodes: Vec<Node>,
    head: usize,
    tail: usize,
}

impl Lru {
    /// An empty set holding at most `capacity` keys (at least 1).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Lru {
            capacity,
            index: HashMap::with_capacity(capacity.min(1 << 16)),
            nodes: Vec::with_capacity(capacity.min(1 << 16)),
            head: NIL,
            tail: NIL,
        }
    }

    /// Number of keys held.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// True when no key is held.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Returns true if `key` was present (and marks it most recently used); otherwise inserts
    /// it, evicting the least recently used key when full, and returns false.
    pub fn seen(&mut self, key: DedupeKey) -> bool {
        if let Some(&i) = self.index.get(&key) {
            self.unlink(i);
            self.push_front(i);
            return true;
        }
        let i = if self.index.len() >= self.capacity {
            let victim = self.tail;
            self.unlink(victim);
            let old = self.nodes[victim].key;
            self.index.remove(&old);
            self.nodes[victim].key = key;
            victim
        } else {
            self.nodes.push(Node {
                key,
                prev: NIL,
                next: NIL,
            });
            self.nodes.len() - 1
        };
        self.index.insert(key, i);
        self.push_front(i);
        false
    }

    fn unlink(&mut self, i: usize) {
        let (prev, next) = (self.nodes[i].prev, self.nodes[i].next);
        if prev == NIL {
            self.head = next;
        } else {
            self.nodes[prev].next = next;
        }
        if next == NIL {
            self.tail = prev;
        } else {
            self.nodes[next].prev = prev;
        }
        self.nodes[i].prev = NIL;
        self.nodes[i].next = NIL;
    }

    fn push_front(&mut self, i: usize) {
        self.nodes[i].next = self.head;
        self.nodes[i].prev = NIL;
        if self.head != NIL {
            self.nodes[self.head].prev = i;
        }
        self.head = i;
        if self.tail == NIL {
            self.tail = i;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(n: u8) -> DedupeKey {
        DedupeKey([n; 32])
    }

    #[test]
    fn lru_evicts_least_recently_used() {
        let mut lru = Lru::new(2);
        assert!(!lru.seen(k(1)));
        assert!(!lru.seen(k(2)));
        assert!(lru.seen(k(1)), "1 is now most recent");
        assert!(!lru.seen(k(3)), "evicts 2");
        assert!(lru.seen(k(1)));
        assert!(!lru.seen(k(2)), "2 was evicted");
        assert_eq!(lru.len(), 2);
    }

    #[test]
    fn hex_equals_the_hex_crate() {
        for n in [0u8, 1, 7, 0x5a, 0xff] {
            let mut key = [0u8; 32];
            for (i, b) in key.iter_mut().enumerate() {
                *b = n.wrapping_mul(i as u8).wrapping_add(i as u8);
            }
            assert_eq!(DedupeKey(key).hex(), hex::encode(key));
        }
        let id = k(9).stub_id(3);
        let x = id.replace('-', "");
        assert_eq!(x.len(), 32);
        assert!(
            x.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
    }

    /// The id written group by group equals the form it replaced: the hex of the sixteen
    /// bytes, split 8-4-4-4-12.
    #[test]
    fn stub_id_equals_the_hex_split_form() {
        for n in 0u8..=255 {
            let key = DedupeKey(std::array::from_fn(|i| {
                n.wrapping_mul(31).wrapping_add(i as u8)
            }));
            for state in [0u32, 1, 7, u32::MAX] {
                let mut h = Sha256::new();
                h.update(key.0);
                h.update(state.to_be_bytes());
                let d = h.finalize();
                let mut b = [0u8; 16];
                b.copy_from_slice(&d[..16]);
                b[6] = (b[6] & 0x0f) | 0x40;
                b[8] = (b[8] & 0x3f) | 0x80;
                let x = hex::encode(b);
                let want = format!(
                    "{}-{}-{}-{}-{}",
                    &x[0..8],
                    &x[8..12],
                    &x[12..16],
                    &x[16..20],
                    &x[20..32]
                );
                assert_eq!(key.stub_id(state), want);
                let mut out = b"x".to_vec();
                key.write_hex(&mut out);
                assert_eq!(
                    out,
                    [b"x".as_slice(), hex::encode(key.0).as_bytes()].concat()
                );
            }
        }
    }

    #[test]
    fn stub_ids_are_uuid_shaped_and_stable() {
        let id = k(7).stub_id(0);
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert_eq!(id, k(7).stub_id(0));
        assert_ne!(id, k(7).stub_id(1));
    }
}
