//! The stub store with an index by (method, exact path), so matching cost depends on the stubs
//! sharing a request's path, not on the total number of stubs.

use std::collections::HashMap;
use std::sync::Arc;

use crate::stub::{RequestView, Stub, UrlMatch};

/// One stored stub with its insertion sequence (later wins among equal priorities).
#[derive(Debug, Clone)]
pub struct Entry {
    /// The stub.
    pub stub: Arc<Stub>,
    /// Insertion sequence number.
    pub seq: u64,
}

/// All stubs, indexed.
#[derive(Default)]
pub struct Store {
    by_id: HashMap<String, Entry>,
    /// (method or "", path) → entries sorted best first.
    index: HashMap<(String, String), Vec<Entry>>,
    /// Stubs without an exact path (patterns, any URL), sorted best first.
    unindexed: Vec<Entry>,
    next_seq: u64,
}

fn rank(e: &Entry) -> (i64, std::cmp::Reverse<u64>) {
    (e.stub.priority, std::cmp::Reverse(e.seq))
}

fn insert_sorted(list: &mut Vec<Entry>, e: Entry) {
    let pos = list.partition_point(|x| rank(x) < rank(&e));
    list.insert(pos, e);
}

impl Store {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of stubs.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// True when there are no stubs.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    fn key(stub: &Stub) -> Option<(String, String)> {
        stub.url
            .exact_path()
            .map(|p| (stub.method.clone().unwrap_or_default(), p.to_string()))
    }

    /// Adds a stub, replacing one with the same id.
    pub fn insert(&mut self, stub: Stub) {
        self.remove(&stub.id.clone());
        let entry = Entry {
            stub: Arc::new(stub),
            seq: self.next_seq,
        };
        self.next_seq += 1;
        match Self::key(&entry.stub) {
            Some(k) => insert_sorted(self.index.entry(k).or_default(), entry.clone()),
            None => insert_sorted(&mut self.unindexed, entry.clone()),
        }
        self.by_id.insert(entry.stub.id.clone(), entry);
    }

    /// Removes a stub by id. Returns it if it existed.
    pub fn remove(&mut self, id: &str) -> Option<Arc<Stub>> {
        let entry = self.by_id.remove(id)?;
        match Self::key(&entry.stub) {
            Some(k) => {
                if let Some(list) = self.index.get_mut(&k) {
                    list.retain(|e| e.stub.id != id);
                    if list.is_empty() {
                        self.index.remove(&k);
                    }
                }
            }
            None => self.unindexed.retain(|e| e.stub.id != id),
        }
        Some(entry.stub)
    }

    /// Removes everything.
    pub fn clear(&mut self) {
        *self = Store {
            next_seq: self.next_seq,
            ..Store::default()
        };
    }

    /// A stub by id.
    pub fn get(&self, id: &str) -> Option<&Arc<Stub>> {
        self.by_id.get(id).map(|e| &e.stub)
    }

    /// All stubs, most recently added first (WireMock's listing order).
    pub fn all(&self) -> Vec<Arc<Stub>> {
        let mut v: Vec<&Entry> = self.by_id.values().collect();
        v.sort_by_key(|e| std::cmp::Reverse(e.seq));
        v.into_iter().map(|e| e.stub.clone()).collect()
    }

    /// The best matching stub. `state_ok` decides scenario states.
    pub fn find(
        &self,
        r: &RequestView<'_>,
        mut state_ok: impl FnMut(&Stub) -> bool,
    ) -> Option<Arc<Stub>> {
        let exact = self.index.get(&(r.method.to_string(), r.path.to_string()));
        let any_method = self.index.get(&(String::new(), r.path.to_string()));
        let lists = [exact, any_method, Some(&self.unindexed)];
        let mut best: Option<&Entry> = None;
        for list in lists.into_iter().flatten() {
            for e in list {
                if best.is_some_and(|b| rank(b) <= rank(e)) {
                    // Sorted best first: nothing later in this list can beat the current best.
                    break;
                }
                if e.stub.matches(r) && state_ok(&e.stub) {
                    best = Some(e);
                    break;
                }
            }
        }
        best.map(|e| e.stub.clone())
    }

    /// Up to `n` stubs closest to a request that matched none, for the 404 report.
    /// Linear over all stubs: only ever run on a miss.
    pub fn closest(&self, r: &RequestView<'_>, n: usize) -> Vec<(Arc<Stub>, usize)> {
        let mut scored: Vec<(usize, u64, &Entry)> = self
            .by_id
            .values()
            .map(|e| {
                let s = &e.stub;
                let mut d = 0;
                if s.method.as_deref().is_some_and(|m| m != r.method) {
                    d += 10;
                }
                d += match &s.url {
                    UrlMatch::Url(u) => distance(u.split('?').next().unwrap_or(u), r.path),
                    UrlMatch::UrlPath(p) => distance(p, r.path),
                    _ => 5,
                };
                (d, e.seq, e)
            })
            .collect();
        scored.sort_by_key(|(d, seq, _)| (*d, std::cmp::Reverse(*seq)));
        scored
            .into_iter()
            .take(n)
            .map(|(d, _, e)| (e.stub.clone(), d))
            .collect()
    }
}

/// Levenshtein distance over bytes, capped to keep misses cheap on long paths.
fn distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (a, b) = (&a[..a.len().min(128)], &b[..b.len().min(128)]);
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for i in 1..=a.len() {
        cur[0] = i;
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            cur[j] = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn stub(id: &str, v: serde_json::Value) -> Stub {
        let mut v = v;
        v["id"] = json!(id);
        Stub::parse(v, || unreachable!()).expect("stub")
    }

    fn view<'a>(
        method: &'a str,
        path: &'a str,
        q: &'a HashMap<String, Vec<String>>,
        h: &'a HashMap<String, Vec<String>>,
    ) -> RequestView<'a> {
        RequestView {
            method,
            path,
            raw_query: None,
            query: q,
            headers: h,
            body: b"",
        }
    }

    const A: &str = "00000000-0000-4000-8000-00000000000a";
    const B: &str = "00000000-0000-4000-8000-00000000000b";
    const C: &str = "00000000-0000-4000-8000-00000000000c";

    #[test]
    fn priority_then_most_recent_wins_across_index_and_patterns() {
        let mut s = Store::new();
        s.insert(stub(
            A,
            json!({"request": {"method": "GET", "url": "/x"}, "response": {"status": 200}}),
        ));
        s.insert(stub(B, json!({"request": {"method": "GET", "urlPathPattern": "/.*"}, "response": {"status": 201}})));
        let (q, h) = (HashMap::new(), HashMap::new());
        // Same priority: the more recent pattern stub wins, as in WireMock.
        assert_eq!(
            s.find(&view("GET", "/x", &q, &h), |_| true)
                .map(|x| x.id.clone())
                .as_deref(),
            Some(B)
        );
        s.insert(stub(C, json!({"priority": 1, "request": {"method": "ANY", "url": "/x"}, "response": {"status": 202}})));
        assert_eq!(
            s.find(&view("GET", "/x", &q, &h), |_| true)
                .map(|x| x.id.clone())
                .as_deref(),
            Some(C)
        );
        assert_eq!(
            s.find(&view("POST", "/y", &q, &h), |_| true)
                .map(|x| x.id.clone()),
            None
        );
        s.remove(C);
        s.remove(B);
        assert_eq!(
            s.find(&view("GET", "/x", &q, &h), |_| true)
                .map(|x| x.id.clone())
                .as_deref(),
            Some(A)
        );
        let close = s.closest(&view("GET", "/xy", &q, &h), 3);
        assert_eq!(close[0].0.id, A);
    }

    #[test]
    fn levenshtein() {
        assert_eq!(distance("/v1/orders", "/v1/order"), 1);
        assert_eq!(distance("", "abc"), 3);
    }
}
