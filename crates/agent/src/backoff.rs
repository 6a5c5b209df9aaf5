//! Exponential backoff for talking to the control plane: 30 → 60 → 120 → 180 s (cap), with
//! jitter, reset after a success. Every duration is configurable so tests can shorten them.

use std::time::Duration;

/// The shape of the backoff.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackoffPolicy {
    /// Delay after the first failure.
    pub initial: Duration,
    /// No delay is ever longer than this.
    pub max: Duration,
    /// Each failure multiplies the delay by this.
    pub factor: u32,
    /// Fraction (0.0–1.0) by which a delay may be shortened at random, so that a fleet of agents
    /// that lost the control plane at the same moment does not come back in lockstep.
    pub jitter: f64,
}

impl Default for BackoffPolicy {
    /// The seed's schedule: 30 s, doubling, capped at 180 s, up to 10 % jitter.
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(30),
            max: Duration::from_secs(180),
            factor: 2,
            jitter: 0.1,
        }
    }
}

/// Counts consecutive failures and says how long to wait before the next attempt.
#[derive(Debug, Clone)]
pub struct Backoff {
    policy: BackoffPolicy,
    failures: u32,
}

impl Backoff {
    /// A backoff with no failures yet.
    pub fn new(policy: BackoffPolicy) -> Self {
        Self {
            policy,
            failures: 0,
        }
    }

    /// Consecutive failures since the last success.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// The delay before the next attempt without jitter: `initial × factor^failures`, capped.
    pub fn base_delay(&self) -> Duration {
        let mut delay = self.policy.initial;
        for _ in 0..self.failures {
            delay = delay.saturating_mul(self.policy.factor.max(1));
            if delay >= self.policy.max {
                return self.policy.max;
            }
        }
        delay.min(self.policy.max)
    }

    /// Records a failure and returns how long to wait. `unit` is a random number in [0, 1)
    /// (passed in so the schedule is testable); the delay is shortened by up to
    /// `jitter × delay`, never lengthened, so the cap holds.
    pub fn fail(&mut self, unit: f64) -> Duration {
        let base = self.base_delay();
        self.failures = self.failures.saturating_add(1);
        let jitter = self.policy.jitter.clamp(0.0, 1.0) * unit.clamp(0.0, 1.0);
        base.mul_f64(1.0 - jitter)
    }

    /// Records a failure with a random jitter.
    pub fn fail_random(&mut self) -> Duration {
        self.fail(rand::random::<f64>())
    }

    /// Forgets the failures: the next failure waits `initial` again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn seed_schedule_without_jitter() {
        let mut b = Backoff::new(BackoffPolicy::default());
        let delays: Vec<u64> = (0..6).map(|_| b.fail(0.0).as_secs()).collect();
        assert_eq!(delays, [30, 60, 120, 180, 180, 180]);
        assert_eq!(b.failures(), 6);
    }

    #[test]
    fn reset_after_success_starts_over() {
        let mut b = Backoff::new(BackoffPolicy::default());
        b.fail(0.0);
        b.fail(0.0);
        b.reset();
        assert_eq!(b.fail(0.0), Duration::from_secs(30));
    }

    #[test]
    fn shortened_durations_for_tests() {
        let mut b = Backoff::new(BackoffPolicy {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(350),
            factor: 2,
            jitter: 0.0,
        });
        let delays: Vec<u128> = (0..4).map(|_| b.fail(0.7).as_millis()).collect();
        assert_eq!(delays, [100, 200, 350, 350]);
    }

    #[test]
    fn jitter_only_shortens() {
        let mut b = Backoff::new(BackoffPolicy::default());
        let d = b.fail(0.999);
        assert!(
            d <= Duration::from_secs(30) && d >= Duration::from_secs(27),
            "{d:?}"
        );
    }

    proptest! {
        #[test]
        fn delays_stay_within_bounds(units in proptest::collection::vec(0.0f64..1.0, 1..20)) {
            let policy = BackoffPolicy::default();
            let mut b = Backoff::new(policy);
            for u in units {
                let d = b.fail(u);
                prop_assert!(d <= policy.max);
                prop_assert!(d >= policy.initial.mul_f64(1.0 - policy.jitter) - Duration::from_millis(1));
            }
        }
    }
}
