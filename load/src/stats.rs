//! What the members record while a step is measured, and the summaries of it.
//! One mutex guards a window; members record a few hundred thousand values a
//! second at most, so a plain lock is cheaper than anything cleverer here.

use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Mutex;

/// Values kept per series; past it a reservoir keeps a uniform sample.
const MAX_SAMPLES: usize = 1_000_000;

/// A series of values (µs) kept for percentiles.
#[derive(Debug, Clone, Default)]
pub struct Samples {
    values: Vec<i64>,
    count: u64,
    max: i64,
    rng: u64,
}

impl Samples {
    pub fn push(&mut self, v: i64) {
        self.count += 1;
        self.max = if self.count == 1 { v } else { self.max.max(v) };
        if self.values.len() < MAX_SAMPLES {
            self.values.push(v);
            return;
        }
        // Reservoir sampling (Algorithm R) with a xorshift generator.
        if self.rng == 0 {
            self.rng = 0x2545_f491_4f6c_dd1d;
        }
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let j = self.rng % self.count;
        if let Some(slot) = self.values.get_mut(j as usize) {
            *slot = v;
        }
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// p50, p99 and max, in ms; `None` without values.
    pub fn summary(&self) -> Option<Summary> {
        if self.values.is_empty() {
            return None;
        }
        let mut sorted = self.values.clone();
        sorted.sort_unstable();
        let ms = |v: i64| v as f64 / 1000.0;
        Some(Summary {
            count: self.count,
            p50_ms: ms(percentile(&sorted, 0.50)),
            p99_ms: ms(percentile(&sorted, 0.99)),
            max_ms: ms(self.max),
        })
    }
}

/// Nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, serde::Deserialize)]
pub struct Summary {
    pub count: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// Everything recorded during one measured window.
#[derive(Debug, Default)]
pub struct Window {
    /// Every server → client message the members read (ticks, events, pongs,
    /// errors, tokens…, also those a client skips as stale): what the stack
    /// delivered. A message the gateway sent in fragments counts once.
    pub frames_delivered: u64,
    /// Local receive time − the tick's `server_time` (one machine, one clock).
    pub tick_latency: Samples,
    pub ticks_received: u64,
    /// Tick sequence numbers skipped between two received ticks.
    pub ticks_missed: u64,
    /// Ticks whose sequence number was not above the last one received.
    pub ticks_duplicate: u64,
    /// Per command: the slowest follower's receive time − the leader's send time.
    pub command_all: Samples,
    /// Per command and follower.
    pub command_each: Samples,
    pub command_to_owner: Samples,
    pub command_owner_to_all: Samples,
    pub commands_sent: u64,
    /// |follower's beat estimate − authoritative position| in time units.
    pub sync_error: Samples,
    /// Per session and sampling instant: latest − earliest member click.
    pub skew: Samples,
    /// Leadership requests by designated leaders that found themselves displaced.
    pub leader_reclaims: u64,
    /// Error messages from the gateway, by code, and client-side failures.
    pub errors: BTreeMap<String, u64>,
}

impl Window {
    pub fn error(&mut self, what: &str) {
        *self.errors.entry(what.to_owned()).or_default() += 1;
    }
}

/// The window being recorded; `take` closes it and opens the next.
#[derive(Debug, Default)]
pub struct Recorder {
    window: Mutex<Window>,
}

impl Recorder {
    pub fn with<R>(&self, f: impl FnOnce(&mut Window) -> R) -> R {
        let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut w)
    }

    pub fn take(&self) -> Window {
        self.with(std::mem::take)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_in_ms() {
        let mut s = Samples::default();
        assert!(s.summary().is_none());
        for v in 1..=1000 {
            s.push(v * 1000);
        }
        let sum = s.summary().expect("values");
        assert_eq!(sum.count, 1000);
        assert_eq!(sum.p50_ms, 501.0);
        assert_eq!(sum.p99_ms, 990.0);
        assert_eq!(sum.max_ms, 1000.0);
    }

    #[test]
    fn reservoir_keeps_the_bound_and_the_max() {
        let mut s = Samples {
            rng: 1,
            ..Default::default()
        };
        for v in 0..(MAX_SAMPLES as i64 + 10_000) {
            s.push(v);
        }
        assert_eq!(s.values.len(), MAX_SAMPLES);
        assert_eq!(s.count(), MAX_SAMPLES as u64 + 10_000);
        assert_eq!(
            s.summary().expect("values").max_ms,
            (MAX_SAMPLES as i64 + 9_999) as f64 / 1000.0
        );
    }

    #[test]
    fn take_resets() {
        let r = Recorder::default();
        r.with(|w| {
            w.ticks_received += 3;
            w.frames_delivered += 4;
            w.error("x");
        });
        let w = r.take();
        assert_eq!(w.ticks_received, 3);
        assert_eq!(w.errors.get("x"), Some(&1));
        assert_eq!(w.frames_delivered, 4);
        let next = r.take();
        assert_eq!((next.ticks_received, next.frames_delivered), (0, 0));
    }
}
