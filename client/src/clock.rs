//! NTP-style clock sync: each ping/pong gives a round trip and an offset
//! estimate `server_time − (t0 + t3)/2`; the samples with the lowest round
//! trip are the least disturbed by queueing, so the estimate uses the best
//! few of a sliding window.

use bandsync_nats::Micros;
use std::collections::VecDeque;

/// Samples kept (the window slides so drift is followed).
const WINDOW: usize = 32;
/// How many of the lowest-RTT samples are averaged.
const BEST: usize = 3;

#[derive(Debug, Clone, Default)]
pub struct ClockSync {
    samples: VecDeque<(Micros, Micros)>, // (rtt, offset)
}

impl ClockSync {
    /// `t0` local send time, `server` the server's time in the pong, `t3` local receive time.
    pub fn add_sample(&mut self, t0: Micros, server: Micros, t3: Micros) {
        let rtt = (t3 - t0).max(0);
        let offset = server - (t0 + t3) / 2;
        if self.samples.len() == WINDOW {
            self.samples.pop_front();
        }
        self.samples.push_back((rtt, offset));
    }

    /// Estimated server − local clock offset, in µs (0 before any sample).
    pub fn offset(&self) -> Micros {
        let mut best: Vec<_> = self.samples.iter().copied().collect();
        best.sort_unstable_by_key(|&(rtt, _)| rtt);
        let best = &best[..best.len().min(BEST)];
        if best.is_empty() {
            return 0;
        }
        best.iter().map(|&(_, o)| o).sum::<Micros>() / best.len() as Micros
    }

    /// Lowest round trip seen in the window, in µs.
    pub fn min_rtt(&self) -> Option<Micros> {
        self.samples.iter().map(|&(rtt, _)| rtt).min()
    }

    pub fn to_server(&self, local: Micros) -> Micros {
        local + self.offset()
    }

    pub fn samples(&self) -> usize {
        self.samples.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn low_rtt_samples_win_over_delayed_ones() {
        let mut c = ClockSync::default();
        // True offset 5_000 µs. Symmetric 1 ms trips estimate it exactly;
        // a trip delayed 40 ms on the way back skews its own estimate by 20 ms.
        c.add_sample(0, 5_000 + 500, 1_000);
        c.add_sample(10_000, 5_000 + 10_500, 11_000);
        c.add_sample(20_000, 5_000 + 20_500, 61_000);
        assert_eq!(
            c.offset(),
            5_000 - 6_666,
            "with only three samples the delayed one counts"
        );
        c.add_sample(30_000, 5_000 + 30_500, 31_000);
        assert_eq!(
            c.offset(),
            5_000,
            "the delayed sample is no longer among the best three"
        );
        assert_eq!(c.min_rtt(), Some(1_000));
        assert_eq!(c.to_server(100), 5_100);
    }

    #[test]
    fn window_slides() {
        let mut c = ClockSync::default();
        for i in 0..100 {
            c.add_sample(i * 10, i * 10 + 5 + 7, i * 10 + 10);
        }
        assert_eq!(c.samples(), WINDOW);
        assert_eq!(c.offset(), 7);
    }
}
