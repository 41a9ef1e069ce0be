//! Which of a member's quality reports go on to the owner. A steady member's
//! report changes nothing there (`quality::moved_enough`, at most one per
//! `REPORT_EVERY_US`), yet each one is a command-stream write, a delivery to
//! the owner and a row in the store: the browser reports every 5 s, so a
//! thousand bands of six would send 1,200 a second, more than every other
//! command together. The gateway applies the owner's rule to what it last
//! forwarded and lets only news through, plus one report a minute so that
//! the owner's view can never stay behind for long.

use bandsync_nats::state::quality::{REPORT_EVERY_US, moved_enough};
use std::time::{Duration, Instant};

/// Past the owner's own interval, with room for the report's way to it.
const AFTER_FORWARDED: Duration = Duration::from_micros(REPORT_EVERY_US as u64 + 500_000);
/// A report goes on at least this often, moved or not.
const REFRESH: Duration = Duration::from_secs(60);

/// One connection's filter (a new connection starts afresh).
#[derive(Debug, Default)]
pub struct ReportGate {
    /// The last report forwarded, and when.
    forwarded: Option<(Instant, f64, f64)>,
}

impl ReportGate {
    /// Whether this report goes on to the owner (it is then the one compared with).
    pub fn pass(&mut self, now: Instant, rtt_ms: f64, clock_error_ms: f64) -> bool {
        let pass = match self.forwarded {
            None => true,
            Some((at, rtt, error)) => {
                let since = now.saturating_duration_since(at);
                since >= REFRESH
                    || (since >= AFTER_FORWARDED
                        && moved_enough(Some((rtt, error)), rtt_ms, clock_error_ms))
            }
        };
        if pass {
            self.forwarded = Some((now, rtt_ms, clock_error_ms));
        }
        pass
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_news_goes_on_and_a_refresh_once_a_minute() {
        let mut gate = ReportGate::default();
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert!(gate.pass(at(0), 40.0, 1.0), "the first report");
        assert!(!gate.pass(at(5), 42.0, 1.2), "jitter is not news");
        assert!(gate.pass(at(10), 90.0, 1.2), "a round trip that doubled");
        assert!(
            !gate.pass(at(15), 91.0, 1.0),
            "compared with the last forwarded, not the first"
        );
        assert!(gate.pass(at(20), 91.0, 3.0), "a clock error up 2 ms");
        assert!(
            gate.pass(at(80), 91.0, 3.0),
            "a minute on: once more, unchanged"
        );
    }

    #[test]
    fn news_within_the_owners_interval_waits_for_the_next_report() {
        // The owner would ignore it (one published report per REPORT_EVERY_US),
        // so forwarding it would leave the gateway comparing with a value the
        // band never saw.
        let mut gate = ReportGate::default();
        let t0 = Instant::now();
        assert!(gate.pass(t0, 40.0, 1.0));
        assert!(
            !gate.pass(t0 + Duration::from_secs(1), 90.0, 1.0),
            "too soon"
        );
        assert!(
            gate.pass(t0 + Duration::from_secs(3), 90.0, 1.0),
            "the next one goes"
        );
    }
}
