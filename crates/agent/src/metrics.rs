//! The ATS metrics the agent samples each cycle, and parsing `traffic_ctl metric get` output.

use std::collections::{BTreeMap, VecDeque};

/// Metrics sampled each cycle (ATS 9.2 names; all exist in 10.x too).
pub const METRICS: &[&str] = &[
    "proxy.process.http.current_client_connections",
    "proxy.process.http.total_client_connections",
    "proxy.process.http.current_active_client_connections",
    "proxy.process.http.current_server_connections",
    "proxy.process.http.current_parent_proxy_connections",
    "proxy.process.http.total_parent_proxy_connections",
    "proxy.process.http.incoming_requests",
    "proxy.process.http.completed_requests",
    "proxy.process.cache.ram_cache.hits",
    "proxy.process.cache.ram_cache.misses",
    "proxy.process.http.cache_hit_fresh",
    "proxy.process.http.cache_miss_cold",
    "proxy.process.http.err_connect_fail_count_stat",
    "proxy.process.http.4xx_responses",
    "proxy.process.http.5xx_responses",
];

/// Parses `name value` lines for the requested names; other lines (NOTEs, errors) are ignored,
/// as are values that are not numbers.
pub fn parse_metric_output(stdout: &str, wanted: &[&str]) -> BTreeMap<String, f64> {
    stdout
        .lines()
        .filter_map(|l| {
            let (name, value) = l.trim().split_once(char::is_whitespace)?;
            if !wanted.contains(&name) {
                return None;
            }
            let value: f64 = value.trim().parse().ok()?;
            value.is_finite().then(|| (name.to_owned(), value))
        })
        .collect()
}

/// The metric a failed multi-get stopped at: 9.2 prints
/// `Traffic Server: failed to fetch NAME: [11] Invalid parameters passed into function call.`
pub fn failed_metric(stderr: &str) -> Option<String> {
    stderr.lines().find_map(|l| {
        let rest = l.split("failed to fetch ").nth(1)?;
        Some(rest.split(':').next()?.trim().to_owned())
    })
}

/// One sample: when, and the values read.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Sample {
    /// Epoch milliseconds.
    pub ts_ms: i64,
    /// Metric name → value.
    pub values: BTreeMap<String, f64>,
}

/// Samples not yet delivered, oldest first, bounded: when full the oldest is dropped (the
/// newest data is the most useful after an outage).
#[derive(Debug, Clone)]
pub struct SampleBuffer {
    capacity: usize,
    samples: VecDeque<Sample>,
    dropped: u64,
}

impl SampleBuffer {
    /// A buffer holding at most `capacity` samples (at least 1).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            samples: VecDeque::new(),
            dropped: 0,
        }
    }

    /// Adds a sample, dropping the oldest when full.
    pub fn push(&mut self, sample: Sample) {
        if self.samples.len() == self.capacity {
            self.samples.pop_front();
            self.dropped += 1;
        }
        self.samples.push_back(sample);
    }

    /// The oldest sample, if any.
    pub fn front(&self) -> Option<&Sample> {
        self.samples.front()
    }

    /// Removes the oldest sample (after it was delivered).
    pub fn pop_front(&mut self) -> Option<Sample> {
        self.samples.pop_front()
    }

    /// Samples waiting.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Samples dropped because the buffer was full.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_values_and_ignores_noise() {
        let out = "proxy.process.http.incoming_requests 12\n\
                   proxy.process.http.completed_requests 11\n\
                   NOTE: using the environment variable TS_RUNROOT\n\
                   proxy.process.cache.ram_cache.hits abc\n\
                   proxy.other 5\n";
        let m = parse_metric_output(out, METRICS);
        assert_eq!(m.len(), 2);
        assert_eq!(m["proxy.process.http.incoming_requests"], 12.0);
    }

    #[test]
    fn finds_the_metric_a_get_failed_on() {
        let err = "NOTE: using the environment variable TS_RUNROOT\n\
                   Traffic Server: failed to fetch proxy.process.nonexistent.x: [11] Invalid parameters passed into function call.\n";
        assert_eq!(
            failed_metric(err).as_deref(),
            Some("proxy.process.nonexistent.x")
        );
        assert_eq!(failed_metric("nothing"), None);
    }

    #[test]
    fn buffer_is_bounded_and_drops_the_oldest() {
        let mut b = SampleBuffer::new(2);
        for ts in 0..5 {
            b.push(Sample {
                ts_ms: ts,
                values: BTreeMap::new(),
            });
        }
        assert_eq!(b.len(), 2);
        assert_eq!(b.dropped(), 3);
        assert_eq!(b.pop_front().unwrap().ts_ms, 3);
        assert_eq!(b.front().unwrap().ts_ms, 4);
    }

    proptest::proptest! {
        #[test]
        fn parser_never_panics(text in ".{0,200}") {
            let _ = parse_metric_output(&text, METRICS);
            let _ = failed_metric(&text);
        }
    }
}
