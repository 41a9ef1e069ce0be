//! NTP-style clock sync by interval intersection.
//!
//! A ping sent at local `t0`, stamped `server` by the gateway and received at
//! local `t3` proves, whatever the two one-way delays were (they are never
//! negative), that the server − local offset θ lies in
//! `[server − t3, server − t0]`: its centre is the classic estimate
//! `server − (t0 + t3)/2` and its half-width is RTT/2. Every sample's interval
//! holds θ, so θ lies in their intersection, and the estimate is the centre of
//! that. The intersection's lower end comes from the sample with the shortest
//! way back and its upper end from the one with the shortest way out, which
//! need not be the same sample: it converges on the delay floors much faster
//! than picking the single lowest-RTT sample (both legs must then be quiet at
//! once). Simulated under the load tool's jitter model
//! (`cargo run -p bandsync-load --example clock_sim`): docs/protocol.md §5 and
//! docs/benchmarks-history.md ("Sync error under jitter: the estimator").
//!
//! What no round-trip exchange can see: a constant difference between the
//! two legs' minimum delays. The estimate is off by half of it, always.
//!
//! Clocks drift, so each interval widens by `DRIFT_PPM` of its age in both
//! directions; old samples stop constraining the estimate by themselves. If a
//! new interval misses the intersection (the local clock was stepped, or
//! drifts faster than assumed, or the path moved), the estimate is rebuilt
//! from the recent samples that agree with the newest one.

use bandsync_protocol::Micros;
use std::collections::VecDeque;
use std::time::Duration;

/// Pings a client should send at `SETTLE_EVERY` after connecting, before it
/// falls back to its steady rate: spaced (not back to back) so each leg's
/// delay is drawn afresh, and 40 so the intersection is within ~1.5 ms of the
/// delay floors after 10 s on a 50 ± 25 ms path (clock_sim).
pub const SETTLE_PINGS: u64 = 40;
pub const SETTLE_EVERY: Duration = Duration::from_millis(250);

/// Recent samples kept to rebuild the estimate after a reset, and for
/// `min_rtt` (bounded: 32 × 24 bytes per connection).
const RECENT: usize = 32;
/// Assumed bound on the drift between the local and the server clock, in
/// parts per million: an interval widens by this much of its age each way.
/// Quartz clocks of phones and laptops are within ±20–30 ppm undisciplined
/// (an OS that keeps its clock NTP-disciplined drifts far less). Beyond the
/// bound the estimate lags the drift by up to half the shortest round trip
/// before a sample disagrees and resets it (clock_sim: with 15 ppm and a
/// 20 ppm device, p50 9.6 ms off after an hour; with 30 ppm, 0.5 ms).
const DRIFT_PPM: i64 = 30;

#[derive(Debug, Clone, Copy)]
struct Sample {
    /// Local send time.
    t0: Micros,
    rtt: Micros,
    offset: Micros,
}

#[derive(Debug, Clone, Default)]
pub struct ClockSync {
    recent: VecDeque<Sample>,
    /// Local time the ageing is measured from (the first sample's `t0`).
    epoch: Micros,
    /// max over samples of `offset − rtt/2 + drift·(t0 − epoch)`: the lower
    /// end of the intersection at local time t is this − drift·(t − epoch).
    lower: Micros,
    /// min over samples of `offset + rtt/2 − drift·(t0 − epoch)`.
    upper: Micros,
    /// Centre of the intersection; ageing widens both ends alike, so it only
    /// moves when a sample arrives.
    estimate: Micros,
    resets: u64,
    taken: u64,
}

/// How far the clocks may have drifted apart over `age` µs.
fn drift(age: Micros) -> Micros {
    age * DRIFT_PPM / 1_000_000
}

impl Sample {
    fn aged(&self, epoch: Micros) -> Micros {
        drift(self.t0 - epoch)
    }

    fn low(&self, epoch: Micros) -> Micros {
        self.offset - self.rtt / 2 + self.aged(epoch)
    }

    fn high(&self, epoch: Micros) -> Micros {
        self.offset + (self.rtt + 1) / 2 - self.aged(epoch)
    }
}

impl ClockSync {
    /// `t0` local send time, `server` the server's time in the pong, `t3` local receive time.
    pub fn add_sample(&mut self, t0: Micros, server: Micros, t3: Micros) {
        let rtt = (t3 - t0).max(0);
        self.taken += 1;
        let s = Sample {
            t0,
            rtt,
            offset: server - (t0 + t3) / 2,
        };
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(s);
        if self.recent.len() == 1 {
            self.epoch = t0;
            self.lower = s.low(t0);
            self.upper = s.high(t0);
        } else {
            let lower = self.lower.max(s.low(self.epoch));
            let upper = self.upper.min(s.high(self.epoch));
            // Both ends at the newest sample's time (widening cancels in the centre).
            let widen = 2 * s.aged(self.epoch);
            if lower - upper > widen {
                self.rebuild();
            } else {
                self.lower = lower;
                self.upper = upper;
            }
        }
        self.estimate = (self.lower + self.upper).div_euclid(2);
    }

    /// The newest sample disagrees with the intersection: keep the longest
    /// run of recent samples, newest first, that still intersect.
    fn rebuild(&mut self) {
        self.resets += 1;
        let newest = *self.recent.back().expect("rebuild follows a push");
        self.epoch = newest.t0;
        let (mut lower, mut upper) = (newest.low(self.epoch), newest.high(self.epoch));
        let mut keep = 1;
        for s in self.recent.iter().rev().skip(1) {
            let (l, u) = (lower.max(s.low(self.epoch)), upper.min(s.high(self.epoch)));
            // Ages are negative here (before the epoch); the newest is at 0.
            if l > u {
                break;
            }
            (lower, upper) = (l, u);
            keep += 1;
        }
        while self.recent.len() > keep {
            self.recent.pop_front();
        }
        self.lower = lower;
        self.upper = upper;
    }

    /// Estimated server − local clock offset, in µs (0 before any sample).
    pub fn offset(&self) -> Micros {
        self.estimate
    }

    /// Half-width of the interval the offset is known to lie in at local
    /// time `now`, in µs (the error bound, if drift stays within the assumed bound).
    pub fn uncertainty(&self, now: Micros) -> Option<Micros> {
        (!self.recent.is_empty())
            .then(|| ((self.upper - self.lower) / 2 + drift(now - self.epoch)).max(0))
    }

    /// Lowest round trip among the recent samples, in µs.
    pub fn min_rtt(&self) -> Option<Micros> {
        self.recent.iter().map(|s| s.rtt).min()
    }

    pub fn to_server(&self, local: Micros) -> Micros {
        local + self.offset()
    }

    /// Recent samples held (at most 32).
    pub fn samples(&self) -> usize {
        self.recent.len()
    }

    /// Samples taken since the start.
    pub fn taken(&self) -> u64 {
        self.taken
    }

    /// When to send the next ping: `SETTLE_EVERY` until `SETTLE_PINGS`
    /// samples are in, then `steady` (the estimate keeps tightening with
    /// every sample for as long as the connection lasts).
    pub fn ping_interval(&self, steady: Duration) -> Duration {
        if self.taken < SETTLE_PINGS {
            SETTLE_EVERY.min(steady)
        } else {
            steady
        }
    }

    /// Times the estimate was rebuilt because a sample disagreed with it.
    pub fn resets(&self) -> u64 {
        self.resets
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sample with the given one-way delays at true time `t`, true offset `theta`.
    fn sample(c: &mut ClockSync, t: Micros, theta: Micros, up: Micros, down: Micros) {
        let t0 = t - theta;
        c.add_sample(t0, t + up, t0 + up + down);
    }

    #[test]
    fn the_shortest_way_out_and_the_shortest_way_back_combine() {
        let mut c = ClockSync::default();
        let theta = 5_000;
        // Slow out, fast back: offset estimate 5_000 + (40 − 1)/2 ms.
        sample(&mut c, 0, theta, 40_000, 1_000);
        assert_eq!(c.offset(), theta + 19_500);
        // Fast out, slow back: each alone is 19.5 ms off; together exact
        // but for the first sample's ageing (30 ppm of 1 s on its bound).
        sample(&mut c, 1_000_000, theta, 1_000, 40_000);
        assert_eq!(c.offset(), theta - 15);
        assert_eq!(c.min_rtt(), Some(41_000));
        assert_eq!(c.to_server(100), theta - 15 + 100);
    }

    #[test]
    fn a_constant_asymmetry_of_the_floors_stays_invisible() {
        let mut c = ClockSync::default();
        // Out never faster than 25 ms, back never faster than 20 ms.
        for i in 0..50 {
            sample(
                &mut c,
                i * 1_000_000,
                0,
                25_000 + i % 7 * 1_000,
                20_000 + i % 5 * 500,
            );
        }
        // Half the difference of the floors, less a little ageing.
        assert!((c.offset() - 2_500).abs() < 100, "{}", c.offset());
        let bound = c.uncertainty(49_000_000).expect("samples");
        assert!((22_500..23_500).contains(&bound), "{bound}");
    }

    #[test]
    fn a_stepped_clock_resets_to_the_samples_that_agree() {
        let mut c = ClockSync::default();
        for i in 0..10 {
            sample(&mut c, i * 1_000_000, 0, 10_000, 10_000);
        }
        assert_eq!(c.offset(), 0);
        // The local clock steps back 1 s: the true offset is now +1 s.
        for i in 10..13 {
            sample(&mut c, i * 1_000_000, 1_000_000, 10_000, 10_000);
        }
        assert_eq!(c.offset(), 1_000_000);
        assert_eq!(c.resets(), 1);
        assert_eq!(c.samples(), 3);
    }

    #[test]
    fn drift_within_the_bound_is_followed_without_resets() {
        let mut c = ClockSync::default();
        // 20 ppm: the true offset moves 20 µs per second, for an hour.
        for i in 0..3_600 {
            let theta = i * 20;
            let jitter = (i * 7_919) % 30_000;
            sample(
                &mut c,
                i * 1_000_000,
                theta,
                20_000 + jitter,
                20_000 + (i * 104_729) % 10_000,
            );
        }
        assert_eq!(c.resets(), 0);
        assert!((c.offset() - 71_980).abs() < 1_000, "{}", c.offset());
        assert_eq!(c.samples(), RECENT);
    }
}
