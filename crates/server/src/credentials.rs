//! In-memory cache of agent credentials: SHA-256 of the credential → the proxy row it opened.
//!
//! Every agent request (sync, ACK, stats, logs) authenticates; at fleet scale that lookup was
//! one database read per request, the largest share of the server's work while idle. The cache
//! keys entries by the token's hash (the raw token is never stored, in memory or elsewhere) and
//! only caches successful lookups of non-revoked credentials, so unknown tokens cannot fill it.
//!
//! An entry is valid while two counters have not moved since the read that filled it:
//! - the sync hub's `proxies` generation, bumped after every change to proxy rows that agents
//!   see (assignment, log capture) and whenever another replica changed anything (the replica
//!   poller's database generation check), and
//! - the cache's own epoch, bumped after every credential change on this replica
//!   (revocation, re-enrollment), which must not wake long-polls.
//!
//! Both are read *before* the database read and compared on use, so a change committed while a
//! read was in flight makes that entry stale at once. Every credential change also bumps the
//! database generation inside its transaction, so other replicas drop their entries within their
//! poll interval.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use apm_store::proxies::ProxyRow;

/// SHA-256 of a credential, the cache key.
pub type CredentialKey = [u8; 32];

const SHARDS: usize = 32;

/// Entries per shard before stale ones are dropped (bounds memory to about a million rows).
const SHARD_CAP: usize = 1 << 15;

struct Entry {
    proxy: Arc<ProxyRow>,
    proxies_generation: u64,
    epoch: u64,
}

/// The cache (one per server process).
pub struct CredentialCache {
    shards: Vec<Mutex<HashMap<CredentialKey, Entry>>>,
    epoch: AtomicU64,
}

impl Default for CredentialCache {
    fn default() -> Self {
        Self::new()
    }
}

/// Where a lookup stands: the counters to store a fresh read under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// The hub's proxies generation before the read.
    pub proxies_generation: u64,
    /// The cache epoch before the read.
    pub epoch: u64,
}

impl CredentialCache {
    /// An empty cache.
    pub fn new() -> Self {
        CredentialCache {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            epoch: AtomicU64::new(0),
        }
    }

    fn shard(&self, key: &CredentialKey) -> &Mutex<HashMap<CredentialKey, Entry>> {
        &self.shards[key[0] as usize % SHARDS]
    }

    /// The counters to pass to [`CredentialCache::insert`] after a database read started now.
    pub fn stamp(&self, proxies_generation: u64) -> Stamp {
        Stamp {
            proxies_generation,
            epoch: self.epoch.load(Ordering::Acquire),
        }
    }

    /// The cached proxy of a credential, if an entry exists and is still valid at
    /// `proxies_generation`.
    pub fn get(&self, key: &CredentialKey, proxies_generation: u64) -> Option<Arc<ProxyRow>> {
        let epoch = self.epoch.load(Ordering::Acquire);
        let map = self.shard(key).lock().unwrap_or_else(|p| p.into_inner());
        map.get(key)
            .filter(|e| e.proxies_generation == proxies_generation && e.epoch == epoch)
            .map(|e| e.proxy.clone())
    }

    /// Stores a row read under `stamp` (never a revoked one).
    pub fn insert(&self, key: CredentialKey, proxy: Arc<ProxyRow>, stamp: Stamp) {
        if proxy.revoked_at.is_some() {
            return;
        }
        let mut map = self.shard(&key).lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= SHARD_CAP {
            let epoch = self.epoch.load(Ordering::Acquire);
            map.retain(|_, e| e.epoch == epoch && e.proxies_generation == stamp.proxies_generation);
            if map.len() >= SHARD_CAP {
                map.clear();
            }
        }
        map.insert(
            key,
            Entry {
                proxy,
                proxies_generation: stamp.proxies_generation,
                epoch: stamp.epoch,
            },
        );
    }

    /// Applies a change this replica just wrote to a proxy's row (what a sync reported) to its
    /// cached entry, keeping the entry's validity as it was.
    pub fn update(&self, key: &CredentialKey, change: impl FnOnce(&mut ProxyRow)) {
        let mut map = self.shard(key).lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = map.get_mut(key) {
            change(Arc::make_mut(&mut e.proxy));
        }
    }

    /// A credential changed (revoked, replaced): every entry read before now is stale. Called
    /// after the change committed.
    pub fn invalidate_all(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// Entries held (stale ones included), for tests and metrics.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str) -> Arc<ProxyRow> {
        Arc::new(ProxyRow::enrolled(
            id.into(),
            format!("host-{id}"),
            "h".into(),
            0,
            None,
        ))
    }

    #[test]
    fn entries_are_valid_only_at_their_generation_and_epoch() {
        let c = CredentialCache::new();
        let key = [7u8; 32];
        let stamp = c.stamp(3);
        c.insert(key, row("a"), stamp);
        assert_eq!(c.get(&key, 3).map(|p| p.id.clone()), Some("a".into()));
        assert!(
            c.get(&key, 4).is_none(),
            "a proxy change was notified since"
        );
        assert!(
            c.get(&[8u8; 32], 3).is_none(),
            "other credentials are not hits"
        );
        c.invalidate_all();
        assert!(c.get(&key, 3).is_none(), "a credential changed since");
        // A read that started before the invalidation must not come back as valid.
        c.insert(key, row("a"), stamp);
        assert!(c.get(&key, 3).is_none());
        c.insert(key, row("b"), c.stamp(3));
        assert_eq!(c.get(&key, 3).map(|p| p.id.clone()), Some("b".into()));
    }

    #[test]
    fn revoked_rows_are_never_cached() {
        let c = CredentialCache::new();
        let mut r = (*row("a")).clone();
        r.revoked_at = Some(1);
        c.insert([1u8; 32], Arc::new(r), c.stamp(0));
        assert!(c.get(&[1u8; 32], 0).is_none());
        assert!(c.is_empty());
    }

    #[test]
    fn updates_change_the_row_but_not_its_validity() {
        let c = CredentialCache::new();
        let key = [2u8; 32];
        c.insert(key, row("a"), c.stamp(0));
        c.update(&key, |p| p.ats_version = Some("9.2.5".into()));
        assert_eq!(
            c.get(&key, 0)
                .and_then(|p| p.ats_version.clone())
                .as_deref(),
            Some("9.2.5")
        );
        c.invalidate_all();
        c.update(&key, |p| p.os = Some("linux".into()));
        assert!(c.get(&key, 0).is_none());
    }

    #[test]
    fn memory_is_bounded() {
        let c = CredentialCache::new();
        let stale = c.stamp(0);
        for i in 0..(SHARD_CAP * SHARDS + 10) as u32 {
            let mut key = [0u8; 32];
            key[..4].copy_from_slice(&i.to_le_bytes());
            c.insert(key, row("x"), stale);
        }
        assert!(c.len() <= SHARD_CAP * SHARDS);
    }
}
