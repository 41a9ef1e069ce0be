//! A token bucket per connection: `rate` messages per second sustained, bursts
//! up to `burst`. Time is passed in so the logic is tested without sleeping.

use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct RateLimit {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimit {
    pub fn new(rate_per_sec: u32, now: Instant) -> Self {
        let rate = f64::from(rate_per_sec);
        Self {
            rate,
            burst: rate * 2.0,
            tokens: rate * 2.0,
            last: now,
        }
    }

    /// Takes one token if there is one.
    pub fn allow(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Tells a flooding client at most once per this interval.
pub const ERROR_INTERVAL: Duration = Duration::from_secs(1);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_then_sustained_rate() {
        let t0 = Instant::now();
        let mut rl = RateLimit::new(10, t0);
        assert_eq!(
            (0..30).filter(|_| rl.allow(t0)).count(),
            20,
            "burst of twice the rate"
        );
        assert!(!rl.allow(t0));
        assert!(
            rl.allow(t0 + Duration::from_millis(100)),
            "one token back after 1/rate seconds"
        );
        assert!(!rl.allow(t0 + Duration::from_millis(100)));
        let later = t0 + Duration::from_secs(60);
        assert_eq!(
            (0..30).filter(|_| rl.allow(later)).count(),
            20,
            "refill is capped at the burst"
        );
    }
}
