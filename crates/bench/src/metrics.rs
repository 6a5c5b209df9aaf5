//! Pure measurement helpers: percentiles over recorded durations and the propagation curve.

use serde::Serialize;

/// p50/p90/p99/max of a set of durations in milliseconds.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Default)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest value.
    pub max: f64,
    /// Number of values.
    pub count: usize,
}

/// The nearest-rank percentile `q` (0 < q ≤ 100) of sorted values; 0 for an empty set.
pub fn nearest_rank(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

impl Percentiles {
    /// Summarises values (any order). NaN values are ignored.
    pub fn of(values: &[f64]) -> Percentiles {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
        v.sort_by(f64::total_cmp);
        Percentiles {
            p50: round3(nearest_rank(&v, 50.0)),
            p90: round3(nearest_rank(&v, 90.0)),
            p99: round3(nearest_rank(&v, 99.0)),
            max: round3(v.last().copied().unwrap_or(0.0)),
            count: v.len(),
        }
    }
}

/// Rounds to 3 decimals (microsecond precision for milliseconds) so JSON stays readable.
pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The propagation curve: (milliseconds after approval, fraction of all agents that had the new
/// hash by then), one point per step of the cumulative distribution, thinned to at most
/// `max_points`. Agents that never received it keep the curve below 1.0.
pub fn propagation_curve(received_ms: &[f64], agents: usize, max_points: usize) -> Vec<(f64, f64)> {
    let mut v: Vec<f64> = received_ms.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() || agents == 0 {
        return vec![(0.0, 0.0)];
    }
    let step = (v.len() / max_points.max(2)).max(1);
    let mut out = vec![(0.0, 0.0)];
    for (i, t) in v.iter().enumerate() {
        if i % step == 0 || i + 1 == v.len() {
            out.push((round3(*t), (i + 1) as f64 / agents as f64));
        }
    }
    out
}

/// A log-scale-free fixed-size latency recorder: keeps every value up to `cap`, then a uniform
/// reservoir sample, so memory stays bounded at 100k agents while percentiles stay unbiased.
#[derive(Debug, Clone)]
pub struct Reservoir {
    values: Vec<f64>,
    seen: u64,
    cap: usize,
    rng: u64,
}

impl Reservoir {
    /// A reservoir of at most `cap` values.
    pub fn new(cap: usize) -> Self {
        Reservoir {
            values: Vec::with_capacity(cap.min(4096)),
            seen: 0,
            cap: cap.max(1),
            rng: 0x9E37_79B9_7F4A_7C15,
        }
    }

    /// Records a value.
    pub fn record(&mut self, x: f64) {
        self.seen += 1;
        if self.values.len() < self.cap {
            self.values.push(x);
            return;
        }
        // xorshift64: deterministic and cheap; statistical quality is plenty for sampling.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let j = self.rng % self.seen;
        if (j as usize) < self.cap {
            self.values[j as usize] = x;
        }
    }

    /// Merges another reservoir's sample (approximate when both overflowed).
    pub fn merge(&mut self, other: &Reservoir) {
        for x in &other.values {
            self.record(*x);
        }
        self.seen += other.seen.saturating_sub(other.values.len() as u64);
    }

    /// Values recorded in total (not only kept).
    pub fn seen(&self) -> u64 {
        self.seen
    }

    /// Percentiles of the kept sample.
    pub fn percentiles(&self) -> Percentiles {
        let mut p = Percentiles::of(&self.values);
        p.count = self.seen as usize;
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_matches_the_definition() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(nearest_rank(&v, 50.0), 50.0);
        assert_eq!(nearest_rank(&v, 90.0), 90.0);
        assert_eq!(nearest_rank(&v, 99.0), 99.0);
        assert_eq!(nearest_rank(&v, 100.0), 100.0);
        assert_eq!(nearest_rank(&[7.0], 50.0), 7.0);
        assert_eq!(nearest_rank(&[], 50.0), 0.0);
    }

    #[test]
    fn percentiles_ignore_order_and_nan() {
        let p = Percentiles::of(&[5.0, f64::NAN, 1.0, 3.0, 2.0, 4.0]);
        assert_eq!(p.count, 5);
        assert_eq!(p.p50, 3.0);
        assert_eq!(p.max, 5.0);
    }

    #[test]
    fn curve_reaches_the_received_fraction() {
        let c = propagation_curve(&[30.0, 10.0, 20.0], 4, 100);
        assert_eq!(c.first(), Some(&(0.0, 0.0)));
        assert_eq!(c.last(), Some(&(30.0, 0.75)));
        assert!(c.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1));
        let thin = propagation_curve(&(0..10_000).map(f64::from).collect::<Vec<_>>(), 10_000, 50);
        assert!(thin.len() <= 60, "{}", thin.len());
        assert_eq!(thin.last(), Some(&(9999.0, 1.0)));
    }

    #[test]
    fn reservoir_is_bounded_and_counts_everything() {
        let mut r = Reservoir::new(100);
        for i in 0..10_000 {
            r.record(f64::from(i));
        }
        assert_eq!(r.seen(), 10_000);
        assert_eq!(r.values.len(), 100);
        let p = r.percentiles();
        assert_eq!(p.count, 10_000);
        // A uniform sample of 0..10000 has its median well inside the middle half.
        assert!(p.p50 > 2500.0 && p.p50 < 7500.0, "{p:?}");
    }
}
