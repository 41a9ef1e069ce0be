//! A token bucket per connection: `rate` messages per second sustained, bursts
//! up to `burst`. Messages past it are dropped; a client that sends ten times
//! the rate within a second is flooding, and is disconnected: every frame costs
//! the gateway a read and a parse, allowed or not, so a flood it only dropped
//! would still slow everyone on it. Time is passed in so the logic is tested
//! without sleeping.

use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct RateLimit {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
    /// Messages dropped since `window_start` (a second at most).
    dropped: u32,
    window_start: Instant,
}

/// Dropped messages within a second, as a multiple of the rate, that make a flood.
const FLOOD_FACTOR: f64 = 10.0;

impl RateLimit {
    pub fn new(rate_per_sec: u32, now: Instant) -> Self {
        let rate = f64::from(rate_per_sec);
        Self {
            rate,
            burst: rate * 2.0,
            tokens: rate * 2.0,
            last: now,
            dropped: 0,
            window_start: now,
        }
    }

    /// Whether the client dropped more than ten times the rate within the
    /// second of its last drop: not a burst, a flood. Asked after a drop.
    pub fn flooding(&self) -> bool {
        f64::from(self.dropped) > self.rate * FLOOD_FACTOR
    }

    /// Takes one token if there is one.
    pub fn allow(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return true;
        }
        if now.saturating_duration_since(self.window_start) >= Duration::from_secs(1) {
            self.window_start = now;
            self.dropped = 0;
        }
        self.dropped += 1;
        false
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
        assert!(!rl.flooding(), "a burst over the limit is no flood");
        let later = t0 + Duration::from_secs(60);
        assert_eq!(
            (0..30).filter(|_| rl.allow(later)).count(),
            20,
            "refill is capped at the burst"
        );
    }

    #[test]
    fn ten_times_the_rate_within_a_second_is_a_flood() {
        let t0 = Instant::now();
        let mut rl = RateLimit::new(10, t0);
        // Twice the rate for a minute: half dropped, never a flood.
        for i in 0..1_200u64 {
            rl.allow(t0 + Duration::from_millis(i * 50));
            assert!(!rl.flooding(), "at {i}");
        }
        let t1 = t0 + Duration::from_secs(120);
        let dropped = (0..200).filter(|_| !rl.allow(t1)).count();
        assert_eq!(dropped, 180, "the burst passed");
        assert!(rl.flooding());
        // A second later the count starts afresh with the next drop.
        let t2 = t1 + Duration::from_secs(2);
        assert_eq!((0..21).filter(|_| rl.allow(t2)).count(), 20);
        assert!(!rl.flooding(), "one drop in a new second");
    }
}
