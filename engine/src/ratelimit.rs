//! A token bucket: `rate` tokens per second, holding at most one second's worth (the burst).
//! Time is an argument, so it is tested without clocks. Used to throttle a client's reads (bytes
//! and messages per second: the reader pauses, nothing is buffered) and a listener's accepts.

use std::time::{Duration, Instant};

/// A token bucket.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket of `rate` tokens per second (`rate` > 0).
    pub fn new(rate: u64, now: Instant) -> Self {
        let rate = rate.max(1) as f64;
        Self {
            rate,
            tokens: rate,
            last: now,
        }
    }

    /// A bucket, or `None` for a rate of 0 (no limit).
    pub fn optional(rate: u64, now: Instant) -> Option<Self> {
        (rate > 0).then(|| Self::new(rate, now))
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
    }

    /// Spends `amount` tokens (going into debt if needed) and returns how long the caller must
    /// wait before the debt is paid (zero when there was enough).
    pub fn spend(&mut self, amount: u64, now: Instant) -> Duration {
        self.refill(now);
        self.tokens -= amount as f64;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }

    /// Takes one token if there is one (no debt); returns whether it did.
    pub fn try_take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_one_second_then_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, t0);
        assert_eq!(
            b.spend(10, t0),
            Duration::ZERO,
            "one second's worth at once"
        );
        let wait = b.spend(5, t0);
        assert_eq!(wait, Duration::from_millis(500), "5 tokens in debt at 10/s");
        // After the wait the debt is paid and the bucket is empty.
        assert_eq!(b.spend(0, t0 + wait), Duration::ZERO);
        assert!(!b.try_take(t0 + wait));
        assert!(b.try_take(t0 + wait + Duration::from_millis(100)));
    }

    #[test]
    fn the_bucket_never_holds_more_than_a_second() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(4, t0);
        let later = t0 + Duration::from_secs(60);
        let taken = (0..10).filter(|_| b.try_take(later)).count();
        assert_eq!(taken, 4);
        assert!(TokenBucket::optional(0, t0).is_none());
    }
}
