//! The store's metrics, rendered as Prometheus text at `/metrics` by
//! `metrics-exporter-prometheus`, as the other services' are.
//!
//! Each `Metrics` has its own recorder, never installed as the global one:
//! tests run several stores in one process, and each must report only its own
//! figures. Every series is registered on it once, here, and the handles are
//! kept, so recording is an atomic add with no lookup by name.

use crate::decode::StreamKind;
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Label, Level, Metadata, Recorder};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

const LAG_BUCKETS_S: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
const BATCH_BUCKETS: &[f64] = &[
    1.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 10000.0,
];

const MESSAGES: &str = "bandsync_store_messages_total";
const INSERTED: &str = "bandsync_store_rows_inserted_total";
const DUPLICATES: &str = "bandsync_store_duplicates_total";
const DEAD: &str = "bandsync_store_dead_letters_total";
const BATCHES: &str = "bandsync_store_batches_total";
const WRITE_ERRORS: &str = "bandsync_store_write_errors_total";
const RESTARTS: &str = "bandsync_store_ingest_restarts_total";
const PENDING: &str = "bandsync_store_pending_messages";
const STALLED: &str = "bandsync_store_ingest_stalled_seconds";
const READY: &str = "bandsync_store_ingest_ready";
const RATE: &str = "bandsync_store_rows_per_second";
const LAG: &str = "bandsync_store_lag_seconds";
const BATCH_SIZE: &str = "bandsync_store_batch_size";
const DB_UP: &str = "bandsync_store_db_up";
const NATS_UP: &str = "bandsync_store_nats_up";

const COUNTERS: &[(&str, &str)] = &[
    (MESSAGES, "Messages received and committed"),
    (INSERTED, "Rows new to the log"),
    (DUPLICATES, "Redelivered messages already in the log"),
    (DEAD, "Messages written to dead_letters"),
    (BATCHES, "Batches committed"),
    (WRITE_ERRORS, "Failed batch writes (retried)"),
    (
        RESTARTS,
        "Ingest workers restarted after they ended or panicked",
    ),
];
const GAUGES: &[(&str, &str)] = &[
    (
        PENDING,
        "Messages of the stream the store has not committed and acked: the consumer's pending plus ack-pending, from consumer info",
    ),
    (
        STALLED,
        "Seconds since ingest last committed a batch while messages are pending (0 when none are)",
    ),
    (
        READY,
        "1 while the stream's ingest worker runs and is not stalled, as /readyz says",
    ),
    (RATE, "Rows inserted per second, over the last second"),
    (DB_UP, "1 when PostgreSQL answered the last check or write"),
    (NATS_UP, "1 when NATS is connected"),
];
const HISTOGRAMS: &[(&str, &str)] = &[
    (LAG, "Stream publish to commit in PostgreSQL"),
    (BATCH_SIZE, "Messages per committed batch"),
];

/// Rows per second over the last whole second or more.
#[derive(Debug)]
struct Rate {
    since: Instant,
    rows: u64,
}

/// One stream's series.
struct PerStream {
    messages: Counter,
    inserted: Counter,
    duplicates: Counter,
    dead: Counter,
    batches: Counter,
    write_errors: Counter,
    restarts: Counter,
    pending: Gauge,
    stalled: Gauge,
    ready: Gauge,
    per_second: Gauge,
    lag: Histogram,
    batch_size: Histogram,
    /// Rows inserted, readable (examples wait on it); the counter is write-only.
    inserted_so_far: AtomicU64,
    rate: Mutex<Rate>,
}

pub struct Metrics {
    prometheus: PrometheusHandle,
    streams: [PerStream; 2],
    db_up: Gauge,
    nats_up: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// What one committed batch did, for the metrics.
#[derive(Debug, Clone, Copy)]
pub struct BatchReport {
    pub messages: u64,
    pub inserted: u64,
    pub dead: u64,
}

/// Registers series on one recorder under one set of labels.
struct Registrar<'a> {
    recorder: &'a dyn Recorder,
    labels: Vec<Label>,
}

impl Registrar<'_> {
    fn key(&self, name: &'static str) -> Key {
        Key::from_parts(name, self.labels.clone())
    }

    fn counter(&self, name: &'static str) -> Counter {
        self.recorder.register_counter(&self.key(name), &METADATA)
    }

    fn gauge(&self, name: &'static str) -> Gauge {
        self.recorder.register_gauge(&self.key(name), &METADATA)
    }

    fn histogram(&self, name: &'static str) -> Histogram {
        self.recorder.register_histogram(&self.key(name), &METADATA)
    }
}

static METADATA: Metadata<'static> = Metadata::new(module_path!(), Level::INFO, None);

impl Metrics {
    pub fn new() -> Self {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(LAG.into()), LAG_BUCKETS_S)
            .and_then(|b| b.set_buckets_for_metric(Matcher::Full(BATCH_SIZE.into()), BATCH_BUCKETS))
            .expect("bucket lists are not empty")
            .build_recorder();
        for &(name, help) in COUNTERS {
            recorder.describe_counter(KeyName::from_const_str(name), None, help.into());
        }
        for &(name, help) in GAUGES {
            recorder.describe_gauge(KeyName::from_const_str(name), None, help.into());
        }
        for &(name, help) in HISTOGRAMS {
            recorder.describe_histogram(KeyName::from_const_str(name), None, help.into());
        }
        let per_stream = |kind: StreamKind| {
            let r = Registrar {
                recorder: &recorder,
                labels: vec![Label::new("stream", kind.as_str())],
            };
            PerStream {
                messages: r.counter(MESSAGES),
                inserted: r.counter(INSERTED),
                duplicates: r.counter(DUPLICATES),
                dead: r.counter(DEAD),
                batches: r.counter(BATCHES),
                write_errors: r.counter(WRITE_ERRORS),
                restarts: r.counter(RESTARTS),
                pending: r.gauge(PENDING),
                stalled: r.gauge(STALLED),
                ready: r.gauge(READY),
                per_second: r.gauge(RATE),
                lag: r.histogram(LAG),
                batch_size: r.histogram(BATCH_SIZE),
                inserted_so_far: AtomicU64::new(0),
                rate: Mutex::new(Rate {
                    since: Instant::now(),
                    rows: 0,
                }),
            }
        };
        let streams = [
            per_stream(StreamKind::Commands),
            per_stream(StreamKind::Events),
        ];
        let global = Registrar {
            recorder: &recorder,
            labels: Vec::new(),
        };
        let (db_up, nats_up) = (global.gauge(DB_UP), global.gauge(NATS_UP));
        Self {
            prometheus: recorder.handle(),
            streams,
            db_up,
            nats_up,
        }
    }

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
        s.messages.increment(report.messages);
        s.inserted.increment(report.inserted);
        s.inserted_so_far
            .fetch_add(report.inserted, Ordering::Relaxed);
        s.dead.increment(report.dead);
        s.duplicates.increment(
            report
                .messages
                .saturating_sub(report.inserted + report.dead),
        );
        s.batches.increment(1);
        s.batch_size.record(report.messages as f64);
        lags_s.for_each(|v| s.lag.record(v));
        let mut rate = s.rate.lock().unwrap_or_else(PoisonError::into_inner);
        rate.rows += report.inserted;
        let elapsed = rate.since.elapsed().as_secs_f64();
        if elapsed >= 1.0 {
            s.per_second.set(rate.rows as f64 / elapsed);
            rate.rows = 0;
            rate.since = Instant::now();
        }
        self.db_up.set(1.0);
    }

    pub fn write_failed(&self, kind: StreamKind) {
        self.stream(kind).write_errors.increment(1);
        self.db_up.set(0.0);
    }

    pub fn worker_restarted(&self, kind: StreamKind) {
        self.stream(kind).restarts.increment(1);
    }

    /// What the stream's ingest looks like now (see `health::Status`).
    pub fn set_ingest(&self, kind: StreamKind, pending: u64, stalled: Duration, ready: bool) {
        let s = self.stream(kind);
        s.pending.set(pending as f64);
        s.stalled.set(stalled.as_secs_f64());
        s.ready.set(f64::from(u8::from(ready)));
    }

    pub fn set_db_up(&self, up: bool) {
        self.db_up.set(f64::from(u8::from(up)));
    }

    pub fn set_nats_up(&self, up: bool) {
        self.nats_up.set(f64::from(u8::from(up)));
    }

    pub fn rows_inserted(&self, kind: StreamKind) -> u64 {
        self.stream(kind).inserted_so_far.load(Ordering::Relaxed)
    }

    /// Folds recorded histogram samples into their buckets. The exporter keeps
    /// every sample until then, so it runs on a timer as well as on a scrape
    /// (nobody may be scraping).
    pub fn upkeep(&self) {
        self.prometheus.run_upkeep();
    }

    pub fn render(&self) -> String {
        self.prometheus.render()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bandsync_testkit::metric;

    #[test]
    fn renders_prometheus_text_per_instance() {
        let m = Metrics::default();
        let other = Metrics::default();
        let report = BatchReport {
            messages: 10,
            inserted: 8,
            dead: 1,
        };
        m.batch_committed(StreamKind::Events, report, [0.003, 0.2].into_iter());
        m.set_ingest(StreamKind::Events, 5, Duration::from_millis(1500), false);
        let text = m.render();
        let read = |series: &str| metric(&text, series).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(
            read("bandsync_store_rows_inserted_total{stream=\"events\"}"),
            8.0
        );
        assert_eq!(
            read("bandsync_store_duplicates_total{stream=\"events\"}"),
            1.0
        );
        assert_eq!(
            read("bandsync_store_dead_letters_total{stream=\"events\"}"),
            1.0
        );
        assert_eq!(
            read("bandsync_store_messages_total{stream=\"commands\"}"),
            0.0
        );
        assert_eq!(
            read("bandsync_store_lag_seconds_bucket{stream=\"events\",le=\"0.005\"}"),
            1.0
        );
        assert_eq!(
            read("bandsync_store_lag_seconds_bucket{stream=\"events\",le=\"0.25\"}"),
            2.0
        );
        assert_eq!(
            read("bandsync_store_lag_seconds_count{stream=\"events\"}"),
            2.0
        );
        assert_eq!(
            read("bandsync_store_batch_size_bucket{stream=\"events\",le=\"10\"}"),
            1.0
        );
        assert_eq!(
            read("bandsync_store_pending_messages{stream=\"events\"}"),
            5.0
        );
        assert_eq!(
            read("bandsync_store_ingest_stalled_seconds{stream=\"events\"}"),
            1.5
        );
        assert_eq!(read("bandsync_store_ingest_ready{stream=\"events\"}"), 0.0);
        assert_eq!(
            read("bandsync_store_ingest_restarts_total{stream=\"events\"}"),
            0.0
        );
        assert_eq!(read("bandsync_store_db_up"), 1.0);
        assert_eq!(read("bandsync_store_nats_up"), 0.0);
        assert!(text.contains("# HELP bandsync_store_rows_inserted_total Rows new to the log"));
        assert!(text.contains("# TYPE bandsync_store_lag_seconds histogram"));
        assert_eq!(m.rows_inserted(StreamKind::Events), 8);

        let theirs = other.render();
        assert_eq!(
            metric(
                &theirs,
                "bandsync_store_rows_inserted_total{stream=\"events\"}"
            )
            .unwrap_or_else(|e| panic!("{e}\n{theirs}")),
            0.0,
            "another store in the same process reports its own figures"
        );
    }
}
