//! The capture pipeline: filter → sanitize → dedupe → group, then mapping generation.
//!
//! Raw exchanges enter [`Pipeline::process`] and are dropped there: only the sanitized form
//! is kept.

use std::collections::BTreeMap;

use serde::Serialize;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::dedupe::{DEFAULT_BODY_PREFIX, DEFAULT_CAPACITY, DedupeKey, Lru};
use crate::filter::{FilterConfig, FilterReason};
use crate::input::InputError;
use crate::metrics::{MetricKind, Registry};
use crate::model::Exchange;
use crate::sanitize::{BodyContent, BodyLimits, SanitizeStats, SanitizedExchange, Sanitizer};
use crate::wiremock::{MappingFile, ScenarioStep, mapping};

/// Pipeline settings.
#[derive(Clone, Debug)]
pub struct PipelineConfig {
    /// What to keep.
    pub filter: FilterConfig,
    /// Body size limit.
    pub limits: BodyLimits,
    /// LRU capacity of the dedupe set.
    pub dedupe_capacity: usize,
    /// Bytes of the sanitized body that enter the dedupe key.
    pub dedupe_body_prefix: usize,
    /// Keep repeats whose response differs as WireMock scenario states.
    pub scenarios: bool,
    /// Most distinct stubs held in memory (a long recording must not grow without bound);
    /// further new requests are counted as filtered (`stub_limit`).
    pub max_stubs: usize,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            filter: FilterConfig::default(),
            limits: BodyLimits::default(),
            dedupe_capacity: DEFAULT_CAPACITY,
            dedupe_body_prefix: DEFAULT_BODY_PREFIX,
            scenarios: false,
            max_stubs: 100_000,
        }
    }
}

/// What happened to one exchange.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Dropped by a filter.
    Filtered(FilterReason),
    /// First time this request was seen.
    New(DedupeKey),
    /// A repeat of a request seen before.
    Duplicate(DedupeKey),
}

/// Counts reported by `apm capture ingest` and `record`. Holds no captured values.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Report {
    /// Traces read successfully.
    pub ingested: u64,
    /// Malformed traces skipped.
    pub malformed: u64,
    /// Exchanges dropped by filters, by reason.
    pub filtered: BTreeMap<String, u64>,
    /// Replacements made, by type: in every request that passed the filters, and in the
    /// responses that were sanitized — a new request's, and in scenario mode every repeat's.
    /// The response of a repeated request is not sanitized (nor counted) otherwise: it is
    /// never written.
    pub sanitized: BTreeMap<String, u64>,
    /// Distinct requests.
    pub unique: u64,
    /// Repeats of a request already seen.
    pub duplicates: u64,
    /// Extra scenario states kept for repeats with a different response.
    pub scenario_states: u64,
    /// Mapping files written (set by the writer).
    pub written: u64,
    /// The malformed traces, with file and position.
    pub errors: Vec<InputError>,
}

struct Group {
    /// First exchange, then one per distinct response (scenario mode only).
    states: Vec<SanitizedExchange>,
    response_hashes: Vec<[u8; 32]>,
}

/// The stateful pipeline. Feed it exchanges, then take the mappings.
pub struct Pipeline {
    config: PipelineConfig,
    sanitizer: Sanitizer,
    lru: Lru,
    groups: BTreeMap<DedupeKey, Group>,
    stats: SanitizeStats,
    report: Report,
    /// (method, status) → count, for `collector_requests_total`.
    requests: BTreeMap<(&'static str, &'static str), u64>,
}

impl Pipeline {
    /// A pipeline with the given settings and sanitizer.
    pub fn new(config: PipelineConfig, sanitizer: Sanitizer) -> Self {
        Pipeline {
            lru: Lru::new(config.dedupe_capacity),
            config,
            sanitizer,
            groups: BTreeMap::new(),
            stats: SanitizeStats::default(),
            report: Report::default(),
            requests: BTreeMap::new(),
        }
    }

    /// The sanitizer in use.
    pub fn sanitizer(&self) -> &Sanitizer {
        &self.sanitizer
    }

    /// Records a malformed trace.
    pub fn malformed(&mut self, error: InputError) {
        self.report.malformed += 1;
        *self.requests.entry(("unknown", "error")).or_default() += 1;
        self.report.errors.push(error);
    }

    /// Filters, sanitizes and dedupes one exchange. The raw exchange is consumed.
    pub fn process(&mut self, ex: Exchange) -> Outcome {
        self.report.ingested += 1;
        let method = metric_method(&ex.request.method);
        if let Some(reason) = self.config.filter.check(&ex) {
            *self
                .report
                .filtered
                .entry(reason.as_str().into())
                .or_default() += 1;
            *self.requests.entry((method, "filtered")).or_default() += 1;
            return Outcome::Filtered(reason);
        }
        // The dedupe key depends only on the sanitized request: the response is sanitized
        // only when the exchange may be written (a new request, or a repeat in scenario
        // mode, whose response must be compared with the states kept). A repeat's raw
        // response is dropped unread, and nothing in it is counted.
        let pending = self
            .sanitizer
            .sanitize_request(ex, &self.config.limits, &mut self.stats);
        *self.requests.entry((method, "success")).or_default() += 1;
        let key = pending.dedupe_key(self.config.dedupe_body_prefix);
        if self.lru.seen(key) {
            self.report.duplicates += 1;
            if self.config.scenarios
                && let Some(group) = self.groups.get_mut(&key)
            {
                let clean = self
                    .sanitizer
                    .finish(pending, &self.config.limits, &mut self.stats);
                let h = response_hash(&clean);
                if !group.response_hashes.contains(&h) {
                    group.response_hashes.push(h);
                    group.states.push(clean);
                    self.report.scenario_states += 1;
                }
            }
            Outcome::Duplicate(key)
        } else if self.groups.len() >= self.config.max_stubs && !self.groups.contains_key(&key) {
            let reason = FilterReason::StubLimit;
            *self
                .report
                .filtered
                .entry(reason.as_str().into())
                .or_default() += 1;
            Outcome::Filtered(reason)
        } else {
            self.report.unique += 1;
            let clean = self
                .sanitizer
                .finish(pending, &self.config.limits, &mut self.stats);
            // A key evicted from the LRU and seen again replaces its earlier stub (same id).
            self.groups.insert(
                key,
                Group {
                    // Only scenario mode compares responses.
                    response_hashes: if self.config.scenarios {
                        vec![response_hash(&clean)]
                    } else {
                        Vec::new()
                    },
                    states: vec![clean],
                },
            );
            Outcome::New(key)
        }
    }

    /// Number of distinct stubs held.
    pub fn stub_count(&self) -> usize {
        self.groups.len()
    }

    /// The mappings for everything processed so far, ordered by dedupe key.
    pub fn mappings(&self, now: OffsetDateTime) -> Vec<MappingFile> {
        let mut out = Vec::with_capacity(self.groups.len());
        for (key, group) in &self.groups {
            if group.states.len() == 1 {
                out.push(mapping(&group.states[0], key, 0, None, now));
                continue;
            }
            let steps = scenario_steps(key, group.states.len());
            for (i, (ex, step)) in group.states.iter().zip(steps).enumerate() {
                out.push(mapping(ex, key, i as u32, Some(&step), now));
            }
        }
        out
    }

    /// The report so far, with sanitization counts by type.
    pub fn report(&self) -> Report {
        let mut r = self.report.clone();
        r.sanitized = self.stats.by_type(&self.sanitizer);
        r
    }

    /// Sets the number of files written (the writer knows it).
    pub fn set_written(&mut self, n: u64) {
        self.report.written = n;
    }

    /// The collector metrics (the seed's names), as a registry to render or extend.
    pub fn metrics(&self) -> Registry {
        let mut r = Registry::new();
        r.describe(
            "collector_requests_total",
            MetricKind::Counter,
            "Captured exchanges processed, by method and status (success, filtered, error).",
        );
        r.describe(
            "collector_sanitization_operations_total",
            MetricKind::Counter,
            "Sensitive values replaced, by type (in requests, and in the responses that may be written: not in a repeated request's response unless repeats are kept as scenarios).",
        );
        r.describe(
            "collector_deduplication_operations_total",
            MetricKind::Counter,
            "Dedupe decisions, by result (new, duplicate).",
        );
        r.describe(
            "collector_stubs",
            MetricKind::Gauge,
            "Distinct stubs held for writing.",
        );
        for ((method, status), n) in &self.requests {
            r.inc(
                "collector_requests_total",
                &[("method", method), ("status", status)],
                *n,
            );
        }
        for (kind, n) in self.stats.by_type(&self.sanitizer) {
            r.inc(
                "collector_sanitization_operations_total",
                &[("type", &kind)],
                n,
            );
        }
        r.inc(
            "collector_deduplication_operations_total",
            &[("result", "new")],
            self.report.unique,
        );
        r.inc(
            "collector_deduplication_operations_total",
            &[("result", "duplicate")],
            self.report.duplicates,
        );
        r.set("collector_stubs", &[], self.groups.len() as f64);
        r
    }
}

/// Like WireMock's repeatsAsScenarios: each state serves one recorded response and moves on;
/// the last state keeps serving the last response.
fn scenario_steps(key: &DedupeKey, n: usize) -> Vec<ScenarioStep> {
    let name = format!("apm-{}", &key.hex()[..16]);
    let state = |j: usize| {
        if j == 0 {
            "Started".to_string()
        } else {
            format!("{name}-{}", j + 1)
        }
    };
    (0..n)
        .map(|i| ScenarioStep {
            name: name.clone(),
            required_state: state(i),
            new_state: (i + 1 < n).then(|| state(i + 1)),
        })
        .collect()
}

/// Methods outside the standard set are folded into one label value, so a client sending
/// random methods cannot grow the metric's cardinality.
fn metric_method(m: &str) -> &'static str {
    match m {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        _ => "OTHER",
    }
}

fn response_hash(ex: &SanitizedExchange) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(ex.status().to_be_bytes());
    match &ex.response_body().content {
        BodyContent::Empty => {}
        BodyContent::Json(j) => h.update(j.as_bytes()),
        BodyContent::Text(t) => h.update(t.as_bytes()),
        BodyContent::Binary(b) => h.update(b),
    }
    h.finalize().into()
}
