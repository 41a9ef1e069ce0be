//! The store's metrics, rendered as Prometheus text at `/metrics`.
//!
//! A small per-instance registry rather than the global `metrics` recorder: tests
//! run several stores in one process, and each must report only its own figures.

use crate::decode::StreamKind;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

const LAG_BUCKETS_S: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
const BATCH_BUCKETS: &[f64] = &[
    1.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 10000.0,
];

#[derive(Debug)]
struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    fn observe(&mut self, v: f64) {
        for (bound, count) in self.bounds.iter().zip(&mut self.counts) {
            if v <= *bound {
                *count += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {count}");
        }
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", self.sum);
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", self.count);
    }
}

/// Rows per second over the last whole second or more.
#[derive(Debug)]
struct Rate {
    since: Instant,
    rows: u64,
    per_second: f64,
}

/// Reads one counter of a stream, for rendering.
type CounterOf = fn(&PerStream) -> &AtomicU64;
/// Reads one histogram of a stream, for rendering.
type HistogramOf = fn(&PerStream) -> &Mutex<Histogram>;

#[derive(Debug)]
struct PerStream {
    received: AtomicU64,
    inserted: AtomicU64,
    duplicates: AtomicU64,
    dead: AtomicU64,
    batches: AtomicU64,
    write_errors: AtomicU64,
    pending: AtomicU64,
    lag: Mutex<Histogram>,
    batch_size: Mutex<Histogram>,
    rate: Mutex<Rate>,
}

impl PerStream {
    fn new() -> Self {
        Self {
            received: AtomicU64::new(0),
            inserted: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            dead: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            write_errors: AtomicU64::new(0),
            pending: AtomicU64::new(0),
            lag: Mutex::new(Histogram::new(LAG_BUCKETS_S)),
            batch_size: Mutex::new(Histogram::new(BATCH_BUCKETS)),
            rate: Mutex::new(Rate {
                since: Instant::now(),
                rows: 0,
                per_second: 0.0,
            }),
        }
    }
}

#[derive(Debug)]
pub struct Metrics {
    streams: [PerStream; 2],
    db_up: AtomicBool,
    nats_up: AtomicBool,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            streams: [PerStream::new(), PerStream::new()],
            db_up: AtomicBool::new(false),
            nats_up: AtomicBool::new(false),
        }
    }
}

/// What one committed batch did, for the metrics.
#[derive(Debug, Clone, Copy)]
pub struct BatchReport {
    pub messages: u64,
    pub inserted: u64,
    pub dead: u64,
    /// Messages the server still holds for the consumer, as of the batch's last message.
    pub pending: u64,
}

impl Metrics {
    fn stream(&self, kind: StreamKind) -> &PerStream {
        &self.streams[match kind {
            StreamKind::Commands => 0,
            StreamKind::Events => 1,
        }]
    }

    /// Records a committed batch and the stream→table lag of each of its messages.
    pub fn batch_committed(
        &self,
        kind: StreamKind,
        report: BatchReport,
        lags_s: impl Iterator<Item = f64>,
    ) {
        let s = self.stream(kind);
        s.received.fetch_add(report.messages, Ordering::Relaxed);
        s.inserted.fetch_add(report.inserted, Ordering::Relaxed);
        s.dead.fetch_add(report.dead, Ordering::Relaxed);
        let dup = report
            .messages
            .saturating_sub(report.inserted + report.dead);
        s.duplicates.fetch_add(dup, Ordering::Relaxed);
        s.batches.fetch_add(1, Ordering::Relaxed);
        s.pending.store(report.pending, Ordering::Relaxed);
        if let Ok(mut h) = s.batch_size.lock() {
            h.observe(report.messages as f64);
        }
        if let Ok(mut h) = s.lag.lock() {
            lags_s.for_each(|v| h.observe(v));
        }
        if let Ok(mut r) = s.rate.lock() {
            r.rows += report.inserted;
            let elapsed = r.since.elapsed().as_secs_f64();
            if elapsed >= 1.0 {
                r.per_second = r.rows as f64 / elapsed;
                r.rows = 0;
                r.since = Instant::now();
            }
        }
        self.db_up.store(true, Ordering::Relaxed);
    }

    pub fn write_failed(&self, kind: StreamKind) {
        self.stream(kind)
            .write_errors
            .fetch_add(1, Ordering::Relaxed);
        self.db_up.store(false, Ordering::Relaxed);
    }

    pub fn set_db_up(&self, up: bool) {
        self.db_up.store(up, Ordering::Relaxed);
    }

    pub fn set_nats_up(&self, up: bool) {
        self.nats_up.store(up, Ordering::Relaxed);
    }

    pub fn rows_inserted(&self, kind: StreamKind) -> u64 {
        self.stream(kind).inserted.load(Ordering::Relaxed)
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let counters: [(&str, &str, CounterOf); 7] = [
            (
                "bandsync_store_messages_total",
                "Messages received and committed",
                |s| &s.received,
            ),
            (
                "bandsync_store_rows_inserted_total",
                "Rows new to the log",
                |s| &s.inserted,
            ),
            (
                "bandsync_store_duplicates_total",
                "Redelivered messages already in the log",
                |s| &s.duplicates,
            ),
            (
                "bandsync_store_dead_letters_total",
                "Messages written to dead_letters",
                |s| &s.dead,
            ),
            ("bandsync_store_batches_total", "Batches committed", |s| {
                &s.batches
            }),
            (
                "bandsync_store_write_errors_total",
                "Failed batch writes (retried)",
                |s| &s.write_errors,
            ),
            (
                "bandsync_store_pending_messages",
                "Messages on the stream not yet delivered to the store",
                |s| &s.pending,
            ),
        ];
        for (name, help, get) in counters {
            let kind = if name.ends_with("_total") {
                "counter"
            } else {
                "gauge"
            };
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for k in [StreamKind::Commands, StreamKind::Events] {
                let _ = writeln!(
                    out,
                    "{name}{{stream=\"{}\"}} {}",
                    k.as_str(),
                    get(self.stream(k)).load(Ordering::Relaxed)
                );
            }
        }
        let name = "bandsync_store_rows_per_second";
        let _ = writeln!(
            out,
            "# HELP {name} Rows inserted per second, over the last second\n# TYPE {name} gauge"
        );
        for k in [StreamKind::Commands, StreamKind::Events] {
            let rate = self
                .stream(k)
                .rate
                .lock()
                .map(|r| r.per_second)
                .unwrap_or(0.0);
            let _ = writeln!(out, "{name}{{stream=\"{}\"}} {rate}", k.as_str());
        }
        let hists: [(&str, &str, HistogramOf); 2] = [
            (
                "bandsync_store_lag_seconds",
                "Stream publish to commit in PostgreSQL",
                |s| &s.lag,
            ),
            (
                "bandsync_store_batch_size",
                "Messages per committed batch",
                |s| &s.batch_size,
            ),
        ];
        for (name, help, get) in hists {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
            for k in [StreamKind::Commands, StreamKind::Events] {
                if let Ok(h) = get(self.stream(k)).lock() {
                    h.render(&mut out, name, &format!("stream=\"{}\"", k.as_str()));
                }
            }
        }
        for (name, up) in [
            ("bandsync_store_db_up", &self.db_up),
            ("bandsync_store_nats_up", &self.nats_up),
        ] {
            let _ = writeln!(
                out,
                "# TYPE {name} gauge\n{name} {}",
                u8::from(up.load(Ordering::Relaxed))
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        let report = BatchReport {
            messages: 10,
            inserted: 8,
            dead: 1,
            pending: 5,
        };
        m.batch_committed(StreamKind::Events, report, [0.003, 0.2].into_iter());
        let text = m.render();
        assert!(
            text.contains("bandsync_store_rows_inserted_total{stream=\"events\"} 8"),
            "{text}"
        );
        assert!(
            text.contains("bandsync_store_duplicates_total{stream=\"events\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("bandsync_store_lag_seconds_bucket{stream=\"events\",le=\"0.005\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("bandsync_store_lag_seconds_count{stream=\"events\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("bandsync_store_pending_messages{stream=\"events\"} 5"),
            "{text}"
        );
    }
}
